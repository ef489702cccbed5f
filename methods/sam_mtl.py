"""SAM-MTL: sharpness-aware multi-task learning, task-based flat regions on top of any aggregator
(Phan, Tran, Tran, Tran, Truong, Lei, Ho, Phung & Le, "Beyond Losses Reweighting: Empowering
Multi-Task Learning via the Generalization Perspective", ICCV 2025; arXiv 2211.13723, first titled
"Improving Multi-task Learning via Seeking Task-based Flat Regions").

Every task i has the shared parameters theta_sh and its own head theta_ns^i. Instead of the task
losses L^i alone, the method minimises each task's worst-case loss in a ball around the weights
(Eq. 2-4, bounded by Theorem 1, Eq. 3):

    Eq. 7   eps_ns^i = rho_ns g_ns^i / ||g_ns^i||,   g_ns^i = grad_{theta_ns^i} L^i     (worst head perturbation)
    Eq. 11  eps_sh^i = rho_sh g_sh^i / ||g_sh^i||,   g_sh^i = grad_{theta_sh}   L^i     (one per task: relaxation Eq. 10)
    Eq. 12-13  L^i(theta_sh + eps_sh^i, theta_ns^i + eps_ns^i) ~ L^i + rho_sh ||g_sh^i|| + rho_ns ||g_ns^i||
            = L^i_loss + L^i_flat: a low loss AND a small gradient norm (a flat region) for every task.
    Eq. 14  heads:  g_ns^{i,SAM} = grad_{theta_ns^i} L^i at the perturbed point;  theta_ns^i -= eta g_ns^{i,SAM}
    Eq. 15  shared: g_sh^{i,SAM} = grad_{theta_sh} L^i at the perturbed point,  g_sh^{i,loss} = g_sh^i,
            g_sh^{i,flat} = g_sh^{i,SAM} - g_sh^{i,loss}  (the gradient of L^i_flat without a Hessian)
    Sec 3.4.2  g^loss = Agg(g_sh^{1,loss} .. g_sh^{m,loss}),  g^flat = Agg(g_sh^{1,flat} .. g_sh^{m,flat}):
            two sub-MTL problems, each solved by the gradient aggregator (--aggregator: any rule of
            common/aggregators.py), then simply added:  g_sh^SAM = g^loss + g^flat;  theta_sh -= eta g_sh^SAM.

This is Algorithm 1, line by line, in `sam_gradients` (lines 1-6) and `combine` (lines 7-8); the
optimiser (Adam) does line 9. Variants of the paper's ablations (--mode):
    individual    Algorithm 1 (default; "Ours (individual)" of Table 5).
    direct        Table 5 "Ours (direct)": g_sh = Agg(g_sh^{1,SAM} .. g_sh^{m,SAM}), intra-task conflict ignored.
    second-aggre  Table 6: g_sh = Agg2(g^loss, g^flat), a second aggregation instead of the sum.
    each-aggre    Table 6: g_sh^i = Agg2(g_sh^{i,loss}, g_sh^{i,flat}) per task, then g_sh = Agg(g_sh^1 .. g_sh^m)
                  (m + 1 aggregations per step).
    ls            Table 7 "F-LS": "LS, casting MTL as a single objective, ... with SAM": plain SAM
                  (Foret et al. 2021) on L = sum_i L^i, ONE perturbation eps = rho g / ||g|| of all
                  parameters (shared and every head, one norm), g = grad L; the update is grad L at
                  theta + eps. The default mode of --aggregator ls. Algorithm 1 with the LS rule (a
                  perturbation per task, shared and head parts normalised separately, so a combined
                  radius rho sqrt 2 per task) stays available as --aggregator ls --mode individual.
    stl           Table 7 "F-STL": one single-task model per task, each trained with plain SAM on its
                  own loss (one perturbation of radius rho over all of its parameters).
The single-objective modes (ls, stl) use one radius, rho_sh = rho_ns (--rho). Agg2 is the same rule
instantiated for two objectives; the "losses" of a flat sub-problem are the
measured sharpness L^i(theta + eps^i) - L^i(theta) (Eq. 12-13), floored at 1e-8 for the rules that
take logarithms or ratios of losses.

Logged per epoch (log.csv) and plotted:
- conflict.png (Figure 3): the fraction of mini-batches with gradient conflict, i.e. some pair of
  tasks with g_sh^{i,loss} . g_sh^{j,loss} < 0 (also for the flat and the SAM gradients, and the
  intra-task conflict g_sh^{i,loss} . g_sh^{i,flat} < 0);
- grad_norms.png (Figure 2): ||g^loss||, ||g^flat||, ||g_sh|| of the update and the mean per-task
  ||g_sh^{i,loss}||, ||g_sh^{i,flat}||, next to the training losses.

Defaults (the DEFAULTS table of the runner half, printed by --help; sources: the official code
github VietHoang1512/FS-MTL):
    multimnist, multifashion, multifashion-mnist: ResNet-18, Adam 1e-3, batch 256, 200 epochs,
        rho 2 adaptive (multi-mnist/run.sh, the recorded runs of Table 1; train.py's own defaults are
        rho 0.05 non-adaptive and 100 epochs: pass --rho 0.05 --no-adaptive --epochs 100).
    celeba: ResNet-18 (the official MultiFaces ResNet), Adam 5e-4, batch 256, 100 epochs, lr x 0.85
        every 10 epochs, rho 2 adaptive, best epoch by validation (celeba/train.py).
    nyuv2: MTAN, Adam 1e-4, batch 2, 200 epochs, StepLR(100, 0.5), rho 2 adaptive (nyuv2/train.py).
    cityscapes: MTAN, Adam 2e-4, batch 2, 200 epochs, StepLR(100, 0.5), rho 2 adaptive (city2scape/
        train.py's defaults; the paper gives no batch size or learning rate for CityScapes. The
        standard protocol of the baselines it compares against is batch 8, lr 1e-4:
        --batch-size 8 --lr 1e-4).
    Scene datasets, F-MGDA (--unit-gradients): as the official city2scape / nyuv2 train.py, every
        g_sh^{i,loss} and g_sh^{i,flat} is divided by its norm before the min-norm solve and the
        update is built from these unit vectors (g^loss = sum_i w_i g^{i,loss} / ||g^{i,loss}||, the
        same for g^flat; their extra factor m only rescales Adam's step). Not in the paper.
    Scene datasets (cityscapes, nyuv2): the reported test metrics are the mean over the last 10
        epochs (section 4.2, "averaged over the last 10 epochs to align with previous work";
        --average-last N, 1 = the last epoch); elsewhere the last (or the best, celeba) epoch.
    multimnist-lite / multimnist3-lite (offline, LeNet) and the other datasets: the suite's per-dataset
        budget, as methods/baselines.py (e.g. 10 / 20 epochs, Adam 1e-3, batch 256 for the offline
        MultiMNIST), and plain SAM radii rho_sh = rho_ns = 0.05 (train.py's default).
--adaptive is ASAM (Kwon et al. 2021), as the official --adaptive: eps = rho T^2 g / ||T g||, T = |w|,
so ||T^{-1} eps|| = rho. Algorithm 1 itself is the non-adaptive rule.

Where this file differs from the official code (it follows the paper, or does better):
- Two radii rho_sh and rho_ns (the paper's symbols); the code has one --rho. --rho sets both.
- The MultiMNIST script normalises the shared and head perturbation together (one norm over
  [theta_sh, theta_ns^i]); Eq. 7 and 11 normalise them separately, as its scene / CelebA scripts do.
- The official code hard-codes 2 tasks and four rules (MGDA, PCGrad, CAGrad, IMTL) with separate
  copies of each; here the aggregation is any rule of common/aggregators.py for any number of tasks.
  The loss and the flat sub-problems get separate instances of the rule, so stateful rules (Nash-MTL's
  warm start, DWA's loss history, FAMO's logits, UW's variances) keep one state per sub-problem.
- The perturbed passes reuse the dropout masks of the first pass (the RNG state is replayed), so
  g^flat measures the change of the gradient under the weight perturbation only, not dropout noise;
  with rho = 0 the update is then exactly the plain aggregator's. BatchNorm layers use batch
  statistics in the perturbed passes but their running statistics move once per step (momentum 0,
  as the official disable_running_stats), and their step counters are restored too.
- The weights are restored by copying saved tensors back (bit-identical), not by subtracting eps.
- Heads always get their own SAM gradient (Eq. 14), whatever the rule's task weights (the
  official code does the same; methods/baselines.py scales head t by w_t instead).
- Every rule is applied to the given rows by common.aggregators.aggregate: Jacobian rules exactly;
  loss rules as w(losses) @ G; GradNorm measures its norms on these full shared-gradient rows (not
  the last shared layer) and MGDA-UB becomes MGDA on them (SAM needs the full shared gradients anyway).
- With FAMO the flat sub-problem's logits are not updated after the step (that would need m more
  perturbed passes per step); the loss sub-problem's are, as in methods/baselines.py.

Copy this one file into another project for the method half (torch only, above the "runner" banner):
sam_gradients(model, shared, heads, ...) on any nn.Module whose shared and head parameters the caller
names, combine(mode, rules_for(mode, T, make), g) with any rule `make(k)` gives (a callable
rule(G, losses) -> direction), apply_gradients(shared, heads, d, g). The runner half (command line,
training loop) imports the suite's common/ only when it runs.

    python methods/sam_mtl.py --aggregator pcgrad                 # F-PCGrad on multimnist-lite (offline)
    python methods/sam_mtl.py --aggregator mgda --mode direct     # Table 5's direct aggregation
    python methods/sam_mtl.py --aggregator cagrad --mode each-aggre
    python methods/sam_mtl.py --aggregator ls                     # F-LS (Table 7): plain SAM on the summed loss
    python methods/sam_mtl.py --mode stl                          # F-STL (Table 7)
    python methods/sam_mtl.py --aggregator imtl --dataset nyuv2   # MTAN, rho 2 adaptive
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import importlib.util
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

MODES = ("individual", "direct", "second-aggre", "each-aggre", "ls", "stl")
SINGLE_OBJECTIVE = ("ls", "stl")  # Table 7: plain SAM, one perturbation of all parameters


# --------------------------------------------------------------------------------------------
# Algorithm 1, lines 1-6: per-task loss gradients, worst-case perturbations, SAM and flat gradients
# --------------------------------------------------------------------------------------------
def _flat(grads, params, device=None) -> torch.Tensor:
    if len(params) == 0:  # e.g. parameter-free heads (the toy problem): empty, on the model's device
        return torch.zeros(0, device=device)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _unflat(vec: torch.Tensor, params) -> list[torch.Tensor]:
    out, i = [], 0
    for p in params:
        out.append(vec[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


def perturbation(g: torch.Tensor, w: torch.Tensor | None, rho: float, adaptive: bool = False) -> torch.Tensor:
    """The worst-case perturbation of a first-order loss model in the ball of radius rho:
    Eq. 7 / Eq. 11, eps = rho g / ||g|| (the dual-norm solution); with `adaptive` the ASAM ball
    ||T^{-1} eps|| <= rho, T = |w|, whose solution is eps = rho T^2 g / ||T g||. A zero gradient
    (or rho = 0) gives eps = 0."""
    if rho == 0:
        return torch.zeros_like(g)
    if adaptive:
        t = w.abs()
        norm, direction = (t * g).norm(), t * t * g
    else:
        norm, direction = g.norm(), g
    ok = (norm > 0) & torch.isfinite(norm)  # no Python branch on a device value: no host sync per task
    return torch.where(ok, direction * (rho / torch.where(ok, norm, torch.ones_like(norm))), torch.zeros_like(g))


class perturbed:
    """Context: theta <- theta + eps on `params` for the duration; on exit every parameter gets its
    saved value back by copy (bit-identical, whatever the rounding of theta + eps)."""

    def __init__(self, params, eps: torch.Tensor):
        self.params, self.eps = list(params), eps

    @torch.no_grad()
    def __enter__(self):
        self.saved = [p.detach().clone() for p in self.params]
        for p, e in zip(self.params, _unflat(self.eps, self.params)):
            p.add_(e.to(p.dtype))
        return self

    @torch.no_grad()
    def __exit__(self, *exc):
        for p, s in zip(self.params, self.saved):
            p.copy_(s)
        return False


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses computed under autocast (bf16 / fp16) are promoted to float32; others kept as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _rng_state(device: torch.device):
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(state, device: torch.device):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@dataclass
class SAMGrads:
    """Everything Algorithm 1 computes for one batch (shared gradients as rows of T x d matrices)."""
    losses: torch.Tensor       # L^i(theta), (T,)
    perturbed: torch.Tensor    # L^i(theta_sh + eps_sh^i, theta_ns^i + eps_ns^i), (T,)
    G_loss: torch.Tensor       # g_sh^{i,loss}, (T, d)
    G_sam: torch.Tensor        # g_sh^{i,SAM}, (T, d)
    head_loss: list            # g_ns^{i,loss}: per task, one tensor per head parameter
    head_sam: list             # g_ns^{i,SAM} (Eq. 14)
    eps_sh_norm: torch.Tensor  # ||eps_sh^i||, (T,)
    eps_ns_norm: torch.Tensor  # ||eps_ns^i||, (T,)

    @property
    def G_flat(self) -> torch.Tensor:  # Eq. 15 / Algorithm 1 line 5
        return self.G_sam - self.G_loss

    @property
    def sharpness(self) -> torch.Tensor:  # L^i_flat measured: L^i(theta + eps^i) - L^i(theta) (Eq. 12-13)
        return self.perturbed - self.losses


@contextmanager
def _running_stats_once(model: torch.nn.Module):
    """The perturbed passes use batch statistics in BatchNorm, but its running statistics and step
    counters stay as the first pass left them (momentum 0, counters put back): they move once per step,
    as the official disable_running_stats."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, count) in zip(bns, saved):
                m.momentum = momentum
                if count is not None:
                    m.num_batches_tracked.copy_(count)


def sam_gradients(model, shared, heads, x, ys, loss_fn, rho_sh: float, rho_ns: float, adaptive: bool = False,
                  autocast=None, joint: bool = False) -> SAMGrads:
    """Algorithm 1, lines 1-6, on one batch. `model(x)` -> the outputs, `loss_fn(outputs, ys)` -> the
    T task losses; `shared` are the parameters theta_sh, `heads[i]` those of task i's head theta_ns^i
    (T = len(heads); a head may have no parameters).

    One forward pass at theta (BatchNorm running statistics move here, once), the gradients of
    every L^i on theta_sh and theta_ns^i (line 2), then per task: the perturbations of Eq. 11 and 7
    (line 3), a forward/backward pass at the perturbed point (line 4; BatchNorm frozen, the same
    dropout masks) and the exact restore of the weights. Line 5 is SAMGrads.G_flat.

    joint=True is single-objective SAM (Foret et al. 2021) on the summed loss L = sum_i L^i, the
    "F-LS" and "F-STL" of Table 7 ("casting MTL as a single objective"): ONE perturbation of all
    parameters [theta_sh, theta_ns^1 .. theta_ns^m], eps = rho_sh g / ||g|| with g = grad L (one
    norm over everything; ASAM with `adaptive`), and one forward pass at theta + eps. The rows of
    G_sam / head_sam are the per-task gradients there (their sum is the SAM gradient of L; they are
    kept per task for the logged conflict statistics), eps_sh_norm / eps_ns_norm the norms of the
    shared part and of head i's part of that one eps (their root sum of squares over the shared
    part and all heads is rho_sh)."""
    autocast = autocast or nullcontext
    shared, heads = list(shared), [list(h) for h in heads]
    T = len(heads)
    device = shared[0].device
    rng_before = _rng_state(device)
    with autocast():
        losses = _full(loss_fn(model(x), ys))
    rng_after = _rng_state(device)

    # line 2: g_sh^{i,loss}, g_ns^{i,loss} = grad L^i(theta)
    G_loss, head_loss = [], []
    for i in range(T):
        grads = torch.autograd.grad(losses[i], shared + heads[i], retain_graph=i < T - 1, allow_unused=True)
        G_loss.append(_flat(grads[:len(shared)], shared))
        head_loss.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads[len(shared):], heads[i])])
    G_loss = torch.stack(G_loss)

    theta_sh = _flat([p.detach() for p in shared], shared) if adaptive else None
    G_sam, head_sam, pert, eps_sh_n, eps_ns_n = [], [], [], [], []
    with _running_stats_once(model):
        if joint:  # one perturbation of every parameter for L = sum_i L^i (single-objective SAM)
            params = shared + [p for h in heads for p in h]
            g_all = torch.cat([G_loss.sum(0)] + [_flat(head_loss[i], heads[i], device) for i in range(T)])
            theta = _flat([p.detach() for p in params], params) if adaptive else None
            eps = perturbation(g_all, theta, rho_sh, adaptive)
            sizes = [sum(p.numel() for p in shared)] + [sum(p.numel() for p in h) for h in heads]
            parts = torch.split(eps, sizes)
            eps_sh_n, eps_ns_n = [parts[0].norm()] * T, [e.norm() for e in parts[1:]]
            with perturbed(params, eps):
                _set_rng_state(rng_before, device)
                with autocast():
                    lp = _full(loss_fn(model(x), ys))
                for i in range(T):
                    grads = torch.autograd.grad(lp[i], shared + heads[i], retain_graph=i < T - 1, allow_unused=True)
                    G_sam.append(_flat(grads[:len(shared)], shared))
                    head_sam.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads[len(shared):], heads[i])])
            pert = list(lp.detach())
        for i in range(0 if joint else T):
            # line 3: worst-case perturbations, Eq. 11 (shared, one per task) and Eq. 7 (own head)
            g_ns = _flat(head_loss[i], heads[i], device)
            theta_ns = _flat([p.detach() for p in heads[i]], heads[i], device) if adaptive else None
            eps_sh = perturbation(G_loss[i], theta_sh, rho_sh, adaptive)
            eps_ns = perturbation(g_ns, theta_ns, rho_ns, adaptive)
            eps_sh_n.append(eps_sh.norm())
            eps_ns_n.append(eps_ns.norm())
            # line 4: g^{i,SAM} = grad L^i at (theta_sh + eps_sh^i, theta_ns^i + eps_ns^i)
            with perturbed(shared + heads[i], torch.cat([eps_sh, eps_ns])):
                _set_rng_state(rng_before, device)
                with autocast():
                    li = _full(loss_fn(model(x), ys)[i])
                grads = torch.autograd.grad(li, shared + heads[i], allow_unused=True)
            G_sam.append(_flat(grads[:len(shared)], shared))
            head_sam.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads[len(shared):], heads[i])])
            pert.append(li.detach())
    _set_rng_state(rng_after, device)
    return SAMGrads(losses.detach(), torch.stack(pert), G_loss, torch.stack(G_sam), head_loss, head_sam,
                    torch.stack(eps_sh_n), torch.stack(eps_ns_n))


# --------------------------------------------------------------------------------------------
# Algorithm 1, lines 7-8: aggregate the loss and the flat gradients, and the ablation variants
# --------------------------------------------------------------------------------------------
def rules_for(mode: str, num_tasks: int, make, apply=None) -> SimpleNamespace:
    """The aggregation rules of one mode's sub-problems, a fresh one from `make(k)` (a rule for k
    objectives) each, so that stateful rules keep one state per sub-problem: `loss` (Agg over the
    g_sh^{i,loss}; also the rule of direct / each-aggre), `flat` (Agg over the g_sh^{i,flat}),
    `second` (Agg2 over g^loss, g^flat) and `each` (per task Agg2 over g_sh^{i,loss}, g_sh^{i,flat}).
    A rule is turned into a direction by `apply(rule, G, losses)` (G: k x d rows, losses: k values);
    without `apply` a rule is itself a callable rule(G, losses) -> direction."""
    return SimpleNamespace(loss=make(num_tasks), flat=make(num_tasks) if mode in ("individual", "second-aggre") else None,
                           second=make(2) if mode == "second-aggre" else None,
                           each=[make(2) for _ in range(num_tasks)] if mode == "each-aggre" else [], apply=apply)


def all_aggregators(aggs) -> list:
    return [a for a in [aggs.loss, aggs.flat, aggs.second] + list(aggs.each) if a is not None]


def _objective(v: torch.Tensor) -> torch.Tensor:
    """Losses handed to a sub-problem's rule: floored at 1e-8 (log- and ratio-based rules)."""
    return v.detach().float().clamp_min(1e-8)


def unit_rows(g: SAMGrads) -> SAMGrads:
    """The same SAMGrads with every g_sh^{i,loss} and g_sh^{i,flat} divided by its norm (the official
    scene code's F-MGDA; zero rows stay zero)."""
    G_loss = g.G_loss / g.G_loss.norm(dim=1, keepdim=True).clamp_min(1e-12)
    G_flat = g.G_flat / g.G_flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return dataclasses.replace(g, G_loss=G_loss, G_sam=G_loss + G_flat)


def combine(mode: str, aggs, g: SAMGrads):
    """Algorithm 1 lines 7-8 (mode "individual") or an ablation of Tables 5-6, with the rules `aggs` of
    rules_for(mode, ...). Returns the shared update direction, a dict of the aggregated directions,
    and the (rule, losses) pairs used (the rules with learnable parameters, e.g. UW, are trained on
    exactly these losses)."""
    used = []
    apply = getattr(aggs, "apply", None) or (lambda rule, G, L: rule(G, L))

    def agg(rule, G, L):
        used.append((rule, L))
        return apply(rule, G, L)

    G_flat = g.G_flat
    has_flat = bool(G_flat.abs().max() > 0)  # rho = 0: no flat sub-problem (a zero Jacobian)
    sharp = _objective(g.sharpness)
    parts = {}
    if mode == "direct":  # Table 5: Agg(g^{1,SAM} .. g^{m,SAM})
        d = agg(aggs.loss, g.G_sam, _objective(g.perturbed))
        return d, parts, used
    if mode == "each-aggre":  # Table 6: per task Agg2(g^{i,loss}, g^{i,flat}), then Agg over tasks
        rows = []
        for i, rule in enumerate(aggs.each):
            if has_flat:
                rows.append(agg(rule, torch.stack([g.G_loss[i], G_flat[i]]), torch.stack([_objective(g.losses[i]), sharp[i]])))
            else:
                rows.append(g.G_loss[i])
        d = agg(aggs.loss, torch.stack(rows), _objective(g.losses))
        return d, parts, used
    # line 7: g^loss = Agg(g^{i,loss}), g^flat = Agg(g^{i,flat})
    d_loss = agg(aggs.loss, g.G_loss, _objective(g.losses))
    d_flat = agg(aggs.flat, G_flat, sharp) if has_flat else torch.zeros_like(d_loss)
    parts = {"loss": d_loss, "flat": d_flat}
    if mode == "second-aggre" and has_flat:  # Table 6: Agg2(g^loss, g^flat)
        d = agg(aggs.second, torch.stack([d_loss, d_flat]), torch.stack([_objective(g.losses.sum()), sharp.sum()]))
    else:  # line 8: g_sh^SAM = g^loss + g^flat
        d = d_loss + d_flat
    return d, parts, used


def apply_gradients(shared, heads, d: torch.Tensor, g: SAMGrads) -> None:
    """Write the update into .grad: the shared direction d (line 8) into `shared` and each head's own
    SAM gradient (Eq. 14) into heads[i]; the optimiser step is line 9."""
    shared = list(shared)
    for p, v in zip(shared, _unflat(d, shared)):
        p.grad = v.to(p.dtype).clone()  # own storage: in-place clipping must not touch d
    for head, grads in zip(heads, g.head_sam):
        for p, gi in zip(head, grads):
            p.grad = gi.detach().clone()


def conflict(G: torch.Tensor) -> torch.Tensor:
    """Gradient conflict in a batch (Figure 3): some pair of rows with a negative inner product (a bool
    tensor on G's device)."""
    return (torch.triu(G @ G.T, diagonal=1) < 0).any()


def step_statistics(g: SAMGrads, d: torch.Tensor, parts: dict) -> dict:
    """Per-batch quantities of Figures 2 and 3, as 0-dim tensors on the device (summed there, read once
    per epoch: logging costs no host sync per step)."""
    G_flat = g.G_flat
    return {"conflict_loss": conflict(g.G_loss).float(), "conflict_flat": conflict(G_flat).float(),
            "conflict_sam": conflict(g.G_sam).float(),
            "conflict_intra": ((g.G_loss * G_flat).sum(1) < 0).any().float(),
            "norm_update": d.detach().norm(),
            "norm_agg_loss": parts["loss"].detach().norm() if "loss" in parts else float("nan"),
            "norm_agg_flat": parts["flat"].detach().norm() if "flat" in parts else float("nan"),
            "norm_task_loss": g.G_loss.norm(dim=1).mean(), "norm_task_flat": G_flat.norm(dim=1).mean(),
            "sharpness": g.sharpness.detach().mean()}



# ============================ runner: command line and training loop (needs common/) ============================
def _common() -> None:
    """Put the suite's root on sys.path so that `common` (the harness) imports; only the runner calls it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


# --------------------------------------------------------------------------------------------
# arguments and defaults
# --------------------------------------------------------------------------------------------
def f_mgda_unit_gradients(args, data) -> bool:
    """on for F-MGDA (--aggregator mgda --mode individual), else off"""
    return args.mode == "individual" and args.aggregator == "mgda"


# The defaults of every flag left unset (--help prints them over the suite's per-dataset training
# settings; the sources are in the module docstring). A function value is a default computed from
# other flags: Run calls it, --help prints its docstring. --mode, --aggregator and --rho read each
# other and are settled before the table applies (validate_method_args; SETTLED_FIRST below).
_MNIST_FAMILY = dict(model="resnet18", epochs=200, batch_size=256, lr=1e-3, scheduler=None,
                     rho_sh=2.0, rho_ns=2.0, adaptive=True)
_SCENE = dict(model="mtan", epochs=200, scheduler=(100, 0.5), rho_sh=2.0, rho_ns=2.0, adaptive=True, average_last=10,
              unit_gradients=f_mgda_unit_gradients)
DEFAULTS = {
    "*": dict(rho_sh=0.05, rho_ns=0.05, adaptive=False, unit_gradients=False, average_last=1, eval_every=1),
    "multimnist": dict(_MNIST_FAMILY),
    "multifashion": dict(_MNIST_FAMILY),
    "multifashion-mnist": dict(_MNIST_FAMILY),
    "celeba": dict(model="resnet18", epochs=100, batch_size=256, lr=5e-4, scheduler=(10, 0.85), select="best",
                   rho_sh=2.0, rho_ns=2.0, adaptive=True),
    "nyuv2": dict(_SCENE, batch_size=2, lr=1e-4),
    "cityscapes": dict(_SCENE, batch_size=2, lr=2e-4),
}
SETTLED_FIRST = """settled before the table, as they read each other (validate_method_args):
  --mode        individual; ls with --aggregator ls
  --aggregator  pcgrad; ls with --mode ls, none with --mode stl
  --rho R       sets --rho-sh and --rho-ns where they are not given; with --mode ls / stl (one radius)
                a radius given alone sets both"""
TABLE = "(default: per dataset, see the table below)"


def make_aggregators(name: str, num_tasks: int, mode: str, dataset: str | None = None, **hyper) -> SimpleNamespace:
    """rules_for(mode) with the suite's rule `name` (common/aggregators.py), applied by its `aggregate`."""
    _common()
    from common.aggregators import aggregate, make_aggregator

    return rules_for(mode, num_tasks, lambda k: make_aggregator(name, k, dataset=dataset, **hyper), apply=aggregate)


def model_parts(model) -> tuple[list, list]:
    """The shared parameters and the per-task head parameters of one of the suite's models."""
    return model.shared_parameters(), [model.task_parameters(t) for t in range(model.num_tasks)]


def parse_args(argv=None):
    _common()
    from common.aggregators import AGGREGATORS, describe
    from common.train import base_parser, defaults_table

    p = base_parser("sam_mtl", __doc__ + "\nAggregation rules and their defaults:\n" + describe())
    p.epilog = defaults_table(DEFAULTS, title="SAM-MTL defaults") + "\n" + SETTLED_FIRST
    g = p.add_argument_group("SAM-MTL options")
    g.add_argument("--aggregator", default=None, choices=sorted(AGGREGATORS),
                   help="the gradient aggregation rule Agg of Algorithm 1 line 7 (default pcgrad -> F-PCGrad; "
                        "ls -> F-LS of Table 7, i.e. --mode ls)")
    g.add_argument("--mode", default=None, choices=MODES,
                   help="individual: Algorithm 1 (default, except with --aggregator ls); direct: Agg of the SAM "
                        "gradients (Table 5); second-aggre / each-aggre: Table 6; ls: F-LS, plain SAM on the summed "
                        "loss (Table 7; the default of --aggregator ls); stl: F-STL, one SAM-trained model per task (Table 7)")
    g.add_argument("--rho", type=float, default=None, help="set both radii rho_sh and rho_ns (those not given)")
    g.add_argument("--rho-sh", type=float, default=None, help=f"radius of the shared perturbation, Eq. 11 {TABLE}")
    g.add_argument("--rho-ns", type=float, default=None, help=f"radius of each head's perturbation, Eq. 7 {TABLE}")
    g.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                   help=f"ASAM perturbations eps = rho |w|^2 g / || |w| g || (as the official scripts) {TABLE}")
    g.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter of the aggregator, e.g. --hyper c=0.4 (repeatable; numbers are parsed)")
    g.add_argument("--eval-every", type=int, default=None, help="validate every N epochs (default 1)")
    g.add_argument("--unit-gradients", action=argparse.BooleanOptionalAction, default=None,
                   help="divide every task's loss and flat gradient by its norm before aggregating and update with "
                        "the unit vectors (default: on for F-MGDA, --mode individual, on cityscapes / nyuv2, as the "
                        "official code; off elsewhere)")
    g.add_argument("--average-last", type=int, default=None, metavar="N",
                   help="report the mean test metrics of the last N epochs (default 10 on cityscapes / nyuv2, section 4.2; "
                        "1 elsewhere = the last epoch; ignored with --select best)")
    return p.parse_args(argv)


def validate_method_args(args) -> None:
    """Bad values of this method's flags -> UsageError, before anything is written to --out. Then the
    flags that read each other are settled, before DEFAULTS fills the rest (SETTLED_FIRST): --mode,
    --aggregator, and the radii from --rho."""
    _common()
    from common.device import UsageError
    from common.train import parse_hyper

    for k in ("rho", "rho_sh", "rho_ns"):
        v = getattr(args, k)
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise UsageError(f"--{k.replace('_', '-')} must be a finite number >= 0 (got {v})")
    if args.eval_every is not None and args.eval_every < 1:
        raise UsageError(f"--eval-every must be a positive integer (got {args.eval_every})")
    if args.average_last is not None and args.average_last < 1:
        raise UsageError(f"--average-last must be a positive integer (got {args.average_last})")
    if args.mode is None:
        args.mode = "ls" if args.aggregator == "ls" else "individual"
    if args.mode == "stl" and args.aggregator is not None:
        raise UsageError("--aggregator has no effect with --mode stl (F-STL trains one single-task model per task)")
    if args.mode == "ls" and args.aggregator not in (None, "ls"):
        raise UsageError(f"--mode ls is F-LS (plain SAM on the summed loss); it takes no --aggregator {args.aggregator}")
    if args.mode in SINGLE_OBJECTIVE and args.hyper:
        raise UsageError(f"--hyper has no effect with --mode {args.mode} (no aggregator)")
    if args.mode in SINGLE_OBJECTIVE:
        args.aggregator = "ls" if args.mode == "ls" else None
    else:
        args.aggregator = args.aggregator or "pcgrad"
    if args.mode in SINGLE_OBJECTIVE and None not in (args.rho_sh, args.rho_ns) and args.rho_sh != args.rho_ns:
        raise UsageError(f"--mode {args.mode} perturbs all parameters with one radius: pass --rho "
                         f"(got --rho-sh {args.rho_sh}, --rho-ns {args.rho_ns})")
    parse_hyper(args.hyper)
    for k in ("rho_sh", "rho_ns"):  # --rho R: the radii not given
        if getattr(args, k) is None:
            setattr(args, k, args.rho)
    if args.mode in SINGLE_OBJECTIVE:  # one radius: a radius given alone sets both
        args.rho_sh = args.rho_ns if args.rho_sh is None else args.rho_sh
        args.rho_ns = args.rho_sh if args.rho_ns is None else args.rho_ns


# --------------------------------------------------------------------------------------------
# plots (Figures 2 and 3 of the paper, from log.csv so that resumed runs are complete)
# --------------------------------------------------------------------------------------------
def plot_training(log_path: str, out_dir: str, task_names) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return []

    def col(k):
        return np.array([float(r[k]) if r.get(k) not in (None, "", "None") else np.nan for r in rows])

    ep = col("epoch") + 1
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, label in (("conflict_loss", "loss gradients $g^{i,loss}$"), ("conflict_flat", "flat gradients $g^{i,flat}$"),
                     ("conflict_sam", "SAM gradients $g^{i,SAM}$"), ("conflict_intra", "intra-task: $g^{i,loss}\\cdot g^{i,flat}<0$")):
        ax.plot(ep, 100 * col(k), marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mini-batches with gradient conflict (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Gradient conflict per epoch (Figure 3)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "conflict.png"), dpi=120)
    plt.close(fig)
    written.append("conflict.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, label in (("norm_update", "$\\|g_{sh}\\|$ (update)"), ("norm_agg_loss", "$\\|g^{loss}\\|$ (aggregated)"),
                     ("norm_agg_flat", "$\\|g^{flat}\\|$ (aggregated)"), ("norm_task_loss", "mean $\\|g^{i,loss}\\|$"),
                     ("norm_task_flat", "mean $\\|g^{i,flat}\\|$")):
        v = col(k)
        if np.isfinite(v).any():
            axes[0].plot(ep, v, marker="o", ms=3, label=label)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("gradient norm (epoch mean)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Gradient norms (Figure 2)")
    for t in task_names:
        axes[1].plot(ep, col(f"train_loss_{t}"), marker="o", ms=3, label=t)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training loss")
    axes[1].set_title("Task losses")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "grad_norms.png"), dpi=120)
    plt.close(fig)
    written.append("grad_norms.png")
    return written


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    from common.device import synchronize
    from common.train import Best, Run, bn_frozen, flat_metrics

    validate_method_args(args)  # --mode, --aggregator and --rho, before the table fills the rest
    run = Run(args, "sam_mtl", DEFAULTS)
    data, T, dev = run.data, run.data.num_tasks, run.device
    stl, single = args.mode == "stl", args.mode in SINGLE_OBJECTIVE  # F-STL / F-LS: plain SAM, no aggregator
    models, aggs, rule_steps, opts = build(run)
    for k, (m, (opt, sched), step) in enumerate(zip(models, opts, rule_steps)):
        run.track(**{f"model{k}": m, f"opt{k}": opt, f"sched{k}": sched, f"rule{k}": step})
    bests = [run.best] + [Best(args.select) for _ in models[1:]]  # F-STL: each task's model is selected on its task
    run.track(**{f"best{k}": b for k, b in enumerate(bests) if k}, **sub_problem_rules(aggs))
    S = run.values(seconds_sam=0.0, tail=[])  # tail: (epoch, test metrics) of the last --average-last epochs
    averaging = args.select == "last" and args.average_last > 1
    loss_fns = [functools.partial(run.losses, task_ids=[k] if stl else None) for k in range(len(models))]

    def recompute(m, x, ys):
        with bn_frozen(m), run.autocast():  # BatchNorm statistics move once per step (no_grad: after_step)
            return run.losses(m(x), ys).float()

    for epoch in run.epochs():
        for m in models:
            m.train()
        sharp_sum, stats_sum, n = torch.zeros(T, device=dev), {}, 0  # summed on the device, read once per epoch
        for x, ys in run.progress(run.batches("train", epoch), f"sam_mtl epoch {epoch + 1}", run.num_batches()):
            t0 = time.perf_counter()
            batch_sharp, batch_stats = [], []
            for m, (opt, _), lf, step in zip(models, opts, loss_fns, rule_steps):
                opt.zero_grad(set_to_none=True)
                g = sam_gradients(m, step.shared, step.heads, x, ys, lf, args.rho_sh, args.rho_ns, args.adaptive,
                                  run.autocast, joint=single)  # Algorithm 1, lines 1-6
                if single:  # plain SAM on sum_i L^i (F-LS) or on the one task's loss (F-STL)
                    d, parts = g.G_sam.sum(0), {}
                else:  # lines 7-8
                    d, parts, used = combine(args.mode, aggs, unit_rows(g) if args.unit_gradients else g)
                    for rule, L in used:  # rules with learnable parameters (UW): train them on their losses
                        if rule.needs == "losses" and list(rule.parameters()):
                            rule.loss(L).backward()
                if not torch.isfinite(d).all():
                    raise run.diverged(f"the {args.aggregator} update is not finite at step {run.global_step + 1}",
                                       "smaller radii (--rho-sh / --rho-ns)")
                batch_stats.append(step_statistics(g, d, parts))
                apply_gradients(step.shared, step.heads, d, g)
                step.after_backward(g.losses)  # clipping; the losses for post_step and the epoch mean
                opt.step()  # line 9
                step.after_step(lambda: recompute(m, x, ys))  # FAMO: the losses of the same batch after the step
                batch_sharp.append(g.sharpness.detach())
            synchronize(dev)
            S["seconds_sam"] += time.perf_counter() - t0
            sharp_sum += torch.cat(batch_sharp)
            for s in batch_stats:  # F-STL: one model per task, no conflicts between tasks
                for key, v in s.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + v / len(batch_stats)
            n += 1
            if run.step():
                break
        for _, sc in opts:
            if sc is not None:
                sc.step()
        mean_losses, mean_sharp = end_epoch(aggs, rule_steps, sharp_sum, n)
        row = epoch_row(data.tasks, mean_losses, mean_sharp, stats_sum, n, None if single else aggs.loss)
        if run.eval_due(epoch):
            val = evaluate(run, models, "val", stl)
            row.update(flat_metrics("val", val))
            for k, (m, best) in enumerate(zip(models, bests)):
                names = [data.tasks[i].name for i in ([k] if stl else range(T))]
                best.offer(run.selection_score({t: val[t] for t in names}), m.state_dict(), epoch)
        if averaging and epoch >= args.epochs - args.average_last:  # section 4.2: mean of the last N epochs
            S["tail"].append((epoch, evaluate(run, models, "test", stl)))
        run.log_epoch(epoch, row)
        run.checkpoint(epoch)

    for m, best in zip(models, bests):
        best.restore(m.load_state_dict)
    # the window ends with the final epoch (a --resume with more --epochs moved it); none of it trained
    # (e.g. --max-steps): the final model
    S["tail"] = [(e, t) for e, t in S["tail"] if e >= args.epochs - args.average_last]
    test = mean_metrics([t for _, t in S["tail"]]) if S["tail"] else evaluate(run, models, "test", stl)
    return report(run, models, rule_steps, S, test)


def build(run):
    """The models, rules and optimisers: one multi-task model, or (F-STL) one single-task model per
    task; the rules of the mode's sub-problems (rules_for; none for F-LS / F-STL); per model a
    RuleStep of its loss sub-problem (F-LS / F-STL: LS), which clips the shared gradient (to the
    rule's official norm unless --clip-grad), runs FAMO's post_step and the per-epoch hook; per model
    Adam and its schedule, the rules' learnable parameters (UW) in the first."""
    from common.aggregators import RuleStep, make_aggregator
    from common.device import UsageError, move_tensors_
    from common.models import build_model
    from common.train import parse_hyper

    args, data, T, dev = run.args, run.data, run.data.num_tasks, run.device
    single = args.mode in SINGLE_OBJECTIVE
    models = [build_model(args.model, data, tasks=[t], pretrained=args.pretrained).to(dev) for t in range(T)] \
        if args.mode == "stl" else [build_model(args.model, data, pretrained=args.pretrained).to(dev)]
    aggs = None
    if not single:
        try:
            aggs = make_aggregators(args.aggregator, T, args.mode, dataset=args.dataset, **parse_hyper(args.hyper))
        except (TypeError, ValueError) as e:
            raise UsageError(f"--hyper: {e}")
        for a in all_aggregators(aggs):
            move_tensors_(a.parameters(), dev)
    rule_steps = [RuleStep(make_aggregator("ls", len(heads)) if single else aggs.loss, shared, heads, max_norm=args.clip_grad)
                  for shared, heads in map(model_parts, models)]
    agg_params = [] if single else [p for a in all_aggregators(aggs) for p in a.parameters()]
    opts = [run.make_optimizer(list(m.parameters()) + (agg_params if k == 0 else [])) for k, m in enumerate(models)]
    return models, aggs, rule_steps, opts


def sub_problem_rules(aggs) -> dict:
    """The rules of the flat, second and per-task sub-problems by name (the loss rule is its RuleStep's)."""
    if aggs is None:
        return {}
    return {"flat": aggs.flat, "second": aggs.second, **{f"each{i}": a for i, a in enumerate(aggs.each)}}


def end_epoch(aggs, rule_steps, sharp_sum: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's mean task losses and sharpness (one host read each), handed to every rule's
    epoch_end (DWA, GradNorm's warm-up): the loss rules by their RuleStep, the flat rule the
    sharpness, second-aggre's Agg2 the summed loss and sharpness, each-aggre's per task both."""
    mean_losses = torch.cat([step.end_epoch() for step in rule_steps])
    mean_sharp = sharp_sum.cpu() / max(n, 1)
    if aggs is not None:
        if aggs.flat is not None:
            aggs.flat.epoch_end(_objective(mean_sharp))
        if aggs.second is not None:
            aggs.second.epoch_end(_objective(torch.stack([mean_losses.sum(), mean_sharp.sum()])))
        for i, a in enumerate(aggs.each):
            a.epoch_end(_objective(torch.stack([mean_losses[i], mean_sharp[i]])))
    return mean_losses, mean_sharp


def epoch_row(tasks, mean_losses, mean_sharp, stats_sum: dict, n: int, loss_rule) -> dict:
    """log.csv's training columns of one epoch: mean task losses and sharpness, the epoch means of
    the Figure 2-3 statistics (step_statistics) and the loss rule's last task weights."""
    row = {f"train_loss_{t.name}": float(s) for t, s in zip(tasks, mean_losses)}
    row.update({f"sharpness_{t.name}": float(s) for t, s in zip(tasks, mean_sharp)})
    row.update({k: float(v) / max(n, 1) for k, v in stats_sum.items()})
    if loss_rule is not None and loss_rule.last_weights is not None:
        row.update({f"weight_{t.name}": float(v) for t, v in zip(tasks, loss_rule.last_weights.detach().float().cpu().reshape(-1))})
    return row


def report(run, models, rule_steps, S: dict, test: dict) -> dict:
    """metrics.json: the test metrics, the one model's point as the front and its hypervolume, the
    variant and its settings, the per-epoch conflict fractions (Figure 3), the last epoch's training
    sharpness, the seconds of the SAM steps, the plots (from log.csv) and the averaged test epochs.
    Every report step is guarded, so that a finished training always writes metrics.json."""
    from common.models import count_parameters

    args, data, log_csv = run.args, run.data, run.path("log.csv")
    plots = run.guarded("plots", plot_training, log_csv, run.out, data.task_names, default=[]) if os.path.isfile(log_csv) else []
    log = run.guarded("log.csv", _read_log, log_csv, default=[])
    hv, hv_note = run.guarded("hypervolume", single_point_hypervolume, test, data.tasks, default=(None, None))
    name = {"stl": "F-STL", "ls": "F-LS"}.get(args.mode) or (
        "F-" + args.aggregator + ("" if args.mode == "individual" and args.aggregator != "ls" else f" ({args.mode})"))
    return run.finish({
        "tasks": test, "hypervolume": hv,
        "front": [{"preference": None, "tasks": test}],  # one model: a single point
        "variant": name, "aggregator": args.aggregator, "mode": args.mode,
        "rho_sh": args.rho_sh, "rho_ns": args.rho_ns, "adaptive": args.adaptive,
        "unit_gradients": bool(args.unit_gradients),
        "clip_grad": rule_steps[0].max_norm,
        "conflict_fraction": {k: [float(r[k]) for r in log if r.get(k) not in (None, "")]
                              for k in ("conflict_loss", "conflict_flat", "conflict_sam", "conflict_intra")},
        "train_sharpness": run.guarded("train_sharpness", lambda: {t.name: float(log[-1][f"sharpness_{t.name}"]) for t in data.tasks})
        if log else None, "hypervolume_note": hv_note,
        "sam_seconds": round(S["seconds_sam"], 3), "plots": plots,
        "test_epochs_averaged": [e + 1 for e, _ in S["tail"]] or None,
        "parameters": sum(count_parameters(m.parameters()) for m in models)})


def single_point_hypervolume(test: dict, tasks) -> tuple[float | None, str | None]:
    """The hypervolume of the one model's point in its tasks' primary metrics, reference
    common.metrics.hv_reference: for accuracy-like metrics (reference 0) the product of the values,
    in any number of tasks (40 F1 scores on CelebA). A task at 0 makes it 0, and the note says which."""
    _common()
    from common.metrics import hv_reference, hypervolume

    P = [[test[t.name][t.primary] for t in tasks]]
    hv = hypervolume(P, hv_reference(tasks), maximize=[t.metrics[0][1] for t in tasks])
    ref = hv_reference(tasks)
    at_ref = [t.name for t, r, v in zip(tasks, ref, P[0]) if v == r]
    note = f"0 because {', '.join(at_ref)} {'is' if len(at_ref) == 1 else 'are'} at the reference point" if at_ref else None
    return hv, note


@torch.no_grad()
def evaluate(run, models, split: str, stl: bool = False) -> dict:
    """{task: {metric: value}} of the multi-task model, or of the F-STL models (model k = task k)."""
    out = {}
    for k, m in enumerate(models):
        m.eval()
        out.update(run.evaluate(m, split, task_ids=[k] if stl else None))
    return out


def mean_metrics(results: list[dict]) -> dict:
    """{task: {metric: mean over `results`}} of several {task: {metric: value}} evaluations."""
    return {t: {k: float(np.mean([r[t][k] for r in results])) for k in results[0][t]} for t in results[0]}


def _read_log(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


if __name__ == "__main__":
    _common()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import sam_mtl) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
