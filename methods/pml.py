"""Pareto Manifold Learning (PML): a continuous Pareto front from a weight-space ensemble.

Dimitriadis, Frossard & Fleuret, "Pareto Manifold Learning: Tackling multiple tasks via ensembles
of single-task models", ICML 2023 (text: ../shared/papers/pml.txt; official code: nik-dim/pamal).

m = T members of one backbone, initialised independently, span a simplex in weight space; member t
is the single-task model of task t (W = I in Eq. 2). Every point alpha of the simplex is a network

    theta(alpha) = alpha^T Theta = sum_t alpha_t theta_t                                   (Fig. 2)

built as a functional call (torch.func.functional_call) on the combined weights, so the gradient of
any loss at theta(alpha) reaches member t scaled by alpha_t. Training (Algorithm 1) minimises

    E_(x,y) E_(alpha ~ Dir(p 1_T)) [ alpha^T L(y, f(x; theta(alpha))) ]                     (Eq. 2)

with W samples alpha_1..alpha_W per batch (multi-forward, Sec. 4.2) and the regulariser of Eq. 3:

    L_total = sum_i alpha_i^T L(alpha_i)
              + lambda sum_t log( 1/|E_t| sum_{(a_i, a_j) in E_t} exp[ L_t(a_j) - L_t(a_i) ]_+ )   (Eq. 3)

on the lexicographic graph G_t^LEX: the W samples sorted by their t-th weight (ties broken by the
other weights in task order), one edge from each sample to the next, |E_t| = W - 1 (Sec. 4.2,
App. D, Figs. 15-16). An edge (a_i, a_j) has a_i,t < a_j,t: the model closer to member t must have
the lower task-t loss, so the term is zero exactly when every edge respects that ordering.
Balancing schemes (Sec. 4.2), --balancing:
  loss  L_t / Lbar_t,  Lbar_t(tau_0; W) = 1/W sum_{tau=1..W} L_t(tau_0 + 1 - tau)  (running mean over
        the last W steps, current one included, detached; fewer steps at the start). The paper
        gives this W no value; --balance-window defaults to the official code's 25 steps (with a
        1-step window, loss balancing recovered 0 of the 25 toy pairs at c = 0.1 in our runs);
  grad  the shared-parameter update alpha^T G~ with g~_t = g_t / ||g_t||_2, g_t the gradient of
        L_t(alpha_i) w.r.t. the shared (encoder) parameters of all members; the heads keep their
        plain alpha_t-weighted gradients (the paper applies it "on the shared parameters").
Evaluation (Sec. 5.1-5.2): the 11 evenly spaced points of the segment (2 tasks) or the 66-point grid
with n = 11 on the simplex (3 tasks; T > 3: the T members and the centre); every point is validated
and tested. Reported: the one network theta(alpha) best on validation (Run.selection_score) as "tasks"
and "delta_m"; the paper's best-of-subspace test oracle apart ("tasks_best_of_subspace_test"); the
hypervolume (App. E) of the test front ("hypervolume", the suite's one rule of common.metrics.hv_reference
for every front method) and of the validation front ("hypervolume_val", which --select best uses).

Details and where they come from
- Learning rate m-fold the baselines' (Sec. 5: back-propagation scales a member's gradient by alpha_t,
  1/m in expectation); per-dataset W, lambda, p, balancing, epochs in DEFAULTS, printed by --help (App. B, Sec.
  5, Tables 2-6; the official configs where the paper is silent).
- BatchNorm, as the official code: the affine weights are interpolated like every other parameter,
  the running statistics are ONE shared buffer per layer (member 1 holds it; the other members' BN
  buffers are the same tensors), updated by every training forward at whatever alpha was sampled
  and used for every alpha at evaluation. --bn recompute re-estimates them on training batches for
  each evaluated alpha instead (the mode-connectivity practice).
- --dataset toy: the illustrative example of App. C on all 25 pairs of the 5 initial points at once
  (Adam 2e-3, 50K steps, shortened with --steps), with coverage of the analytic front and Figs. 7-14.
- --select best picks the epoch with the highest validation hypervolume; --clip-grad (off by default,
  as in the official code) clips the members' shared gradient.

Where this differs from the official code (nik-dim/pamal), and why
- Regulariser sign: the code sorts the W losses by decreasing alpha_t and penalises relu of the
  successive differences L(lower alpha_t) - L(higher alpha_t), i.e. it penalises the ordering that
  Sec. 4.2 and Fig. 3 ask for (Eq. 3 as printed, with edges a_i,t < a_j,t and [L_t(a_i) - L_t(a_j)]_+,
  has the same slip). We penalise violations, as the text and Fig. 3 describe.
- The code adds lambda R only when lambda R < the loss; we always add it (Algorithm 1, line 12).
- Gradient balancing there is sum alpha_t L_t / (||g_t|| + 1e-3), which also rescales the heads; we
  normalise the shared gradient only, as the paper. Its "loss balancing" (rwa) weights tasks by
  1 - |Lbar_t| / sum |Lbar| over 25-step windows: for T = 2 the paper's L_t / Lbar_t up to a common
  factor, for T > 2 something else. We implement the paper's formula for any T (dividing by |Lbar_t|,
  so that the toy problem's negative losses keep their sign). None of the official configs uses it.
- Its configs use the baselines' learning rate; the paper says m-fold, which we use.
- Tables report the best of the subspace on test (paper); we report one network's test metrics, the
  alpha best on validation ("tasks", "delta_m"), and the paper's test oracle apart as
  "tasks_best_of_subspace_test" / "delta_m_best_of_subspace_test" (its metrics come from different
  networks, so its Delta-m% can beat every real network). Their hypervolume helper is never called and has a swapped branch;
  we use common.metrics.hypervolume (exact, tested).
- The code wraps Conv2d / Linear / BatchNorm2d layers; we ensemble every parameter of the backbone
  (the same set for LeNet, MLP, ResNet-18, SegNet; it also covers BatchNorm1d).

Layout: the method half (sections 1-5: WeightEnsemble, sample_alphas, multiforward_regulariser,
LossBalancer, grad_balanced_backward, train_step) imports only torch and numpy, so this one file can be
copied into another project; the runner half (after the banner: command line, training loop,
evaluation, toy problem) imports the suite's common/ on first use.

    python methods/pml.py                                     # multimnist-lite, offline, 11-point front
    python methods/pml.py --dataset multimnist3-lite          # 66-point grid, simplex heat maps
    python methods/pml.py --dataset toy --c 0.1 --balancing loss   # App. C, 25 pairs, 50K steps (--steps)
    python methods/pml.py --dataset cityscapes                # MTAN .npy files under data/cityscapes
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import importlib.util
import os
import sys
import time
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call


# ------------------------------------------------------------------------------------------------
# 1. The ensemble: Theta = [theta_1 .. theta_m]^T and theta(alpha) = alpha^T Theta (Sec. 4.1, Fig. 2)
# ------------------------------------------------------------------------------------------------
class WeightEnsemble(nn.Module):
    """m members of one architecture (any nn.Module); `forward(x, alpha)` runs the network at
    theta(alpha) = sum_k alpha_k theta_k through a functional call, so gradients reach every member
    (member k's gradient is alpha_k times the gradient at theta(alpha)). `shared(member)` and
    `heads(member, t)` name a member's shared (encoder) parameters and task t's head: gradient
    balancing and clipping act on them (they are not needed otherwise).

    BatchNorm running statistics are shared: after construction every member's BN buffers are the
    very tensors of member 1, which the functional call updates in place (official behaviour).
    Build on the target device first (`.to()` would untie them), or call `tie_buffers()` again.
    """

    def __init__(self, members: Sequence[nn.Module], shared: Callable[[nn.Module], Iterable[nn.Parameter]] | None = None,
                 heads: Callable[[nn.Module, int], Iterable[nn.Parameter]] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = [n for n, _ in self.members[0].named_parameters()]
        self._shared, self._heads = shared, heads  # member -> its shared parameters; (member, t) -> head t's
        self.tie_buffers()

    @property
    def m(self) -> int:
        return len(self.members)

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def tie_buffers(self) -> None:
        anchor = dict(self.members[0].named_modules())
        for member in self.members[1:]:
            for name, mod in member.named_modules():
                for b, buf in list(mod._buffers.items()):
                    if buf is not None:
                        mod._buffers[b] = anchor[name]._buffers[b]

    def params_at(self, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta(alpha) = sum_k alpha_k theta_k, parameter by parameter (exact at the vertices)."""
        per = [dict(member.named_parameters()) for member in self.members]
        return {n: sum(alpha[k] * per[k][n] for k in range(self.m)) for n in self.names}

    def forward(self, x: torch.Tensor, alpha: torch.Tensor):
        return functional_call(self.members[0], self.params_at(alpha.to(x.device)), (x,))

    @torch.no_grad()
    def materialize(self, alpha: torch.Tensor, net: nn.Module) -> nn.Module:
        """Write theta(alpha) and the shared BN statistics into `net` (a network of the same
        architecture), e.g. for evaluation or for saving one network of the subspace."""
        dev = next(net.parameters()).device
        params = self.params_at(torch.as_tensor(alpha, dtype=torch.float32, device=dev))
        for n, p in net.named_parameters():
            p.copy_(params[n])
        own = dict(self.members[0].named_buffers())
        for n, b in net.named_buffers():
            b.copy_(own[n])
        return net

    def _picked(self, pick, *t) -> list[nn.Parameter]:
        if pick is None:
            raise ValueError("name the shared parameters and the heads: WeightEnsemble(members, shared=lambda m: "
                             "m.trunk.parameters(), heads=lambda m, t: m.heads[t].parameters())")
        return [p for member in self.members for p in pick(member, *t)]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared (encoder) parameters of all members: where gradient balancing acts."""
        return self._picked(self._shared)

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        """Head t of every member (only L_t reaches them)."""
        return self._picked(self._heads, t)

    @torch.no_grad()
    def cosine_similarities(self) -> list[list[float]]:
        """cos(theta_i, theta_j) of the flattened members (App. H, Fig. 25)."""
        params = [list(member.parameters()) for member in self.members]
        dot = [[sum(float((a * b).sum()) for a, b in zip(pi, pj)) for pj in params] for pi in params]
        return [[dot[i][j] / math.sqrt(max(dot[i][i] * dot[j][j], 1e-300)) for j in range(self.m)] for i in range(self.m)]


# ------------------------------------------------------------------------------------------------
# 2. Sampling alpha ~ Dir(p 1_T) (Algorithm 1 line 5, Sec. 4.2 "The role of sampling", App. H)
# ------------------------------------------------------------------------------------------------
def sample_alphas(p: float, T: int, W: int, batch_shape: Sequence[int] = (), device="cpu") -> torch.Tensor:
    """W weightings from the symmetric Dirichlet Dir(p 1_T): shape (*batch_shape, W, T)."""
    conc = torch.full((T,), float(p), device=device)
    # validate_args=False: the argument check is a host sync per step, and conc > 0 by construction
    return torch.distributions.Dirichlet(conc, validate_args=False).sample((*batch_shape, W))

# ------------------------------------------------------------------------------------------------
# 3. Multi-forward regulariser on the lexicographic graphs (Eq. 3, Sec. 4.2, App. D)
# ------------------------------------------------------------------------------------------------
def lexicographic_order(alphas: torch.Tensor, t: int) -> torch.Tensor:
    """Indices sorting the W samples (dim -2) by alpha_t ascending, ties broken by the other
    tasks' weights in task order (t+1, ..., T, 1, ..., t-1): successive stable sorts."""
    T = alphas.shape[-1]
    if T == 2:  # the other weight is 1 - alpha_t: nothing left to break ties with
        return torch.argsort(alphas[..., t], dim=-1, stable=True)
    keys = [t] + [(t + k) % T for k in range(1, T)]
    order = torch.arange(alphas.shape[-2], device=alphas.device).expand(alphas.shape[:-1]).clone()
    for k in reversed(keys):
        vals = alphas[..., k].gather(-1, order)
        order = order.gather(-1, torch.argsort(vals, dim=-1, stable=True))
    return order


def multiforward_regulariser(alphas: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """R of Eq. 3 for samples `alphas` (..., W, T) with losses (..., W, T): for each task t, the
    chain G_t^LEX through the samples sorted by alpha_t, |E_t| = W - 1 edges (a_i -> a_j with
    a_i,t < a_j,t), penalty exp([L_t(a_j) - L_t(a_i)]_+) (the closer sample must not be worse), and
    R = sum_t log(mean over E_t of the penalties). Zero iff no edge is violated; 0 for W = 1."""
    W, T = alphas.shape[-2], alphas.shape[-1]
    if W < 2:
        return losses.new_zeros(losses.shape[:-2])
    R = losses.new_zeros(losses.shape[:-2])
    for t in range(T):
        order = lexicographic_order(alphas, t)
        L = losses[..., t].gather(-1, order)  # task-t losses, alpha_t ascending
        violation = torch.relu(L[..., 1:] - L[..., :-1])  # [L_t(a_j) - L_t(a_i)]_+ on each edge
        R = R + torch.logsumexp(violation, dim=-1) - math.log(W - 1)
    return R


# ------------------------------------------------------------------------------------------------
# 4. Balancing schemes (Sec. 4.2)
# ------------------------------------------------------------------------------------------------
class LossBalancer:
    """Loss balancing: L_t(tau_0) is divided by Lbar_t(tau_0; W) = 1/W sum_{tau=1..W} L_t(tau_0 + 1 - tau),
    the mean of the last W per-step losses (current step included; all available ones while
    tau_0 < W). The step loss of task t is its mean over the step's W samples. Any leading shape
    (the toy keeps one history per initialisation pair). The scale is |Lbar| (toy losses can be
    negative), at least `eps`."""

    def __init__(self, window: int, eps: float = 1e-8):
        self.window, self.eps = window, eps
        self.history: list[torch.Tensor] = []

    def update(self, step_losses: torch.Tensor) -> torch.Tensor:
        self.history.append(step_losses.detach().clone())
        self.history = self.history[-self.window:]
        return torch.stack(self.history).mean(0).abs().clamp_min(self.eps)

    def state_dict(self) -> dict:
        # one host transfer for the whole window (rows of one CPU tensor)
        return {"window": self.window, "history": list(torch.stack(self.history).cpu()) if self.history else []}

    def load_state_dict(self, s: dict) -> None:
        self.window, self.history = s["window"], list(s["history"])


def grad_balanced_backward(ens: WeightEnsemble, alphas: torch.Tensor, losses: torch.Tensor,
                           extra: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Gradient balancing: fill .grad with sum_i [ sum_t alpha_i,t g_i,t / ||g_i,t||_2 ] on the shared
    parameters (g_i,t: gradient of L_t(alpha_i) w.r.t. the encoder parameters of all members), plus
    sum_i alpha_i,t grad L_t(alpha_i) on head t, plus the gradient of `extra` (lambda R).
    One backward per (sample, task), W x T in all. Returns the norms ||g_i,t|| (W, T)."""
    shared = ens.shared_parameters()
    W, T = losses.shape
    everything = shared + [q for t in range(T) for q in ens.task_parameters(t)]
    acc = {p: torch.zeros_like(p) for p in everything}
    norms = torch.zeros(W, T, device=losses.device)  # on the device: no host sync per (sample, task)
    if extra is not None and extra.requires_grad:
        for p, g in zip(everything, torch.autograd.grad(extra, everything, retain_graph=True, allow_unused=True)):
            if g is not None:
                acc[p] += g
    jobs = [(i, t) for i in range(W) for t in range(T)]
    for n, (i, t) in enumerate(jobs):
        heads = ens.task_parameters(t)
        grads = torch.autograd.grad(losses[i, t], shared + heads, retain_graph=n < len(jobs) - 1, allow_unused=True)
        gs, hs = grads[:len(shared)], grads[len(shared):]
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in gs if g is not None))
        norms[i, t] = norm.detach()
        coef = alphas[i, t] / (norm + eps)  # alpha_i,t g~_i,t on the shared parameters
        for p, g in zip(shared, gs):
            if g is not None:
                acc[p] += coef * g
        for p, h in zip(heads, hs):  # heads: plain alpha_i,t grad L_t(alpha_i)
            if h is not None:
                acc[p] += alphas[i, t] * h
    for p, g in acc.items():
        p.grad = g.detach()
    return norms



# ------------------------------------------------------------------------------------------------
# 5. One training step (Algorithm 1, lines 3-14)
# ------------------------------------------------------------------------------------------------
def train_step(ens: WeightEnsemble, opt, x, task_losses: Callable, p: float, window: int, lam: float = 0.0,
               balancing: str = "none", balancer: LossBalancer | None = None, clip_grad: float | None = None,
               autocast: Callable = contextlib.nullcontext, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample W = `window` weightings alpha_i ~ Dir(p 1_T), forward at each theta(alpha_i), build L_total
    (Eq. 3; balancing "none", "loss" (needs `balancer`) or "grad" (needs the ensemble's shared / heads))
    and back-propagate it into the members, then step `opt`. `task_losses(outputs)` returns the (T,)
    task losses of the batch for the network's outputs on `x`. Returns (raw losses (W, T), R)."""
    alphas = sample_alphas(p, ens.m, window, device=ens.device if device is None else device)  # lines 4-6: m = T members
    rows = []
    for i in range(window):  # lines 7-8
        with autocast():
            rows.append(task_losses(ens(x, alphas[i])).float())
    L = torch.stack(rows)  # (W, T)
    R = multiforward_regulariser(alphas, L)  # lines 10-11
    reg = lam * R if (lam > 0 and window > 1) else None
    opt.zero_grad(set_to_none=True)
    if balancing == "grad":
        grad_balanced_backward(ens, alphas, L, reg)
    else:
        # loss balancing divides the objective's losses; R (Eq. 3) compares raw losses, as the official code
        scaled = L / balancer.update(L.mean(0)) if balancing == "loss" else L
        total = (alphas * scaled).sum()  # line 12: sum_i alpha_i^T L(alpha_i)
        if reg is not None:
            total = total + reg
        total.backward()  # line 13
    if clip_grad:
        torch.nn.utils.clip_grad_norm_(ens.shared_parameters(), clip_grad)
    opt.step()  # line 14
    return L.detach(), R.detach()


# ======================= runner: command line and training loop (needs common/) =======================
@functools.lru_cache(maxsize=None)
def _harness():
    """The suite's harness (common/), imported on first use; the method half above never needs it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:  # called by every runner function: put the suite's root on the path once
        sys.path.insert(0, root)
    from types import SimpleNamespace

    from common.data import TOY_INITS, TOY_STEPS_PER_EPOCH, toy_losses
    from common.device import UsageError
    from common.metrics import HV_SPLIT, evaluation_grid, hv_reference, hypervolume
    from common.models import build_model, count_parameters
    from common.train import (Run, base_parser, defaults_table, flat_metrics, main_guard, recompute_bn_stats,
                              resolved_defaults)
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("SimpleNamespace", "root")})


def m_fold_lr(args, data) -> float:
    """T x the dataset's lr (m-fold, Sec. 5)

    Back-propagation scales member t's gradient by alpha_t (1/m in expectation), so the members
    learn at m = T times the dataset's learning rate. (A default of the DEFAULTS table: Run calls
    it once the data is loaded; --help prints the first line.)"""
    lr = _harness().resolved_defaults(args.dataset)["lr"]
    return lr * data.num_tasks if data is not None else lr


# ------------------------------------------------------------------------------------------------
# The defaults, per dataset (--help prints them; Run resolves every flag left unset from them).
# lr = m x the baselines' lr (Sec. 5): the rows give it, other datasets get T x their lr (m_fold_lr).
#   multimnist  W 4, lambda 0 (Sec. 5.1, Table 2: best mean HV), p 1, none; 10 epochs, batch 256 (App. B)
#   multimnist3 W 3 (official config), lambda 0 (Table 5: "no balancing schemes and regularization";
#               the config has 2), p 1, none; 20 epochs (App. B)
#   census      W 2, lambda 5 (Table 3 and the config; Sec. 5.1's text says W 3, lambda 10), p 1, none
#   utkface     W 1 (Table 6: "no multi-forward"; the config has W 3, lambda 1), grad (Sec. 5.2),
#               p 2 (config), 100 epochs, batch 256, baseline lr 1e-3 (App. B)
#   cityscapes  W 3, lambda 1, grad, p 5 (Sec. 5.3 calls it p0 and motivates it by the warm-up; the
#               config has 7, constant), 100 epochs, Adam 1e-4 halved after 75 (App. B), batch 8
#   toy         Adam 2e-3 (App. C: the paper's value for PML), 50K steps, W 1, lambda 0, p 1 (App. C gives
#               no W, lambda, p; on c = 1, 30K steps, W 1 / lambda 0 recovered 19 of 25 pairs, W 2 / 0
#               19, W 3 / 1 18: the plain Algorithm 1 is as good and the cheapest)
# Other datasets: the dataset's benchmark settings with lr x T, W 3, lambda 1, p 1, no balancing.
# ------------------------------------------------------------------------------------------------
DEFAULTS: dict[str, dict] = {
    "*": dict(window=3, lam=1.0, p=1.0, balancing="none", balance_window=25, eval_every=1, lr=m_fold_lr),
    "toy": dict(epochs=50, batch_size=1, lr=2e-3, window=1, lam=0.0, p=1.0, balancing="none"),
    "multimnist-lite": dict(epochs=10, batch_size=256, lr=2e-3, window=4, lam=0.0, p=1.0, balancing="none"),
    "multimnist": dict(epochs=10, batch_size=256, lr=2e-3, window=4, lam=0.0, p=1.0, balancing="none"),
    "multimnist3-lite": dict(epochs=20, batch_size=256, lr=3e-3, window=3, lam=0.0, p=1.0, balancing="none"),
    "multimnist3": dict(epochs=20, batch_size=256, lr=3e-3, window=3, lam=0.0, p=1.0, balancing="none"),
    "census": dict(epochs=10, batch_size=256, lr=2e-3, window=2, lam=5.0, p=1.0, balancing="none"),
    "utkface": dict(epochs=100, batch_size=256, lr=3e-3, window=1, lam=0.0, p=2.0, balancing="grad", eval_every=20),
    "cityscapes": dict(epochs=100, batch_size=8, lr=2e-4, scheduler=(75, 0.5), window=3, lam=1.0, p=5.0,
                       balancing="grad", eval_every=20),
}
GRID_MAX_TASKS = 3  # simplex grids for T <= 3; beyond that the members and the centre
TABLE = "(default: per dataset, see the table below)"


def parse_args(argv=None):
    H = _harness()
    p = H.base_parser("pml", __doc__)
    p.epilog = H.defaults_table(DEFAULTS, title="PML defaults (lr is already m-fold)")
    g = p.add_argument_group("PML options")
    g.add_argument("--window", "-W", type=int, default=None,
                   help=f"W: alpha samples (forward passes) per batch, Algorithm 1 lines 4-9 {TABLE}")
    g.add_argument("--lam", type=float, default=None,
                   help=f"lambda: strength of the multi-forward regulariser of Eq. 3 (0 = off; needs W >= 2) {TABLE}")
    g.add_argument("--p", type=float, default=None,
                   help="concentration p of the symmetric Dirichlet Dir(p 1_T) that samples alpha (1 = uniform; "
                        f"the paper uses p >= 1, App. H discusses p < 1) {TABLE}")
    g.add_argument("--p0", type=float, default=None,
                   help="optional warm start: the concentration starts at p0 and moves linearly to --p over "
                        "--warmup-epochs epochs (default: no warm start, p constant)")
    g.add_argument("--warmup-epochs", type=int, default=0, help="epochs of the --p0 warm start (default 0)")
    g.add_argument("--balancing", choices=["none", "loss", "grad"], default=None,
                   help="Sec. 4.2: none, loss (L_t divided by its mean over the last W steps) or grad "
                        f"(unit-norm task gradients on the shared parameters) {TABLE}")
    g.add_argument("--balance-window", type=int, default=None,
                   help="steps in the loss-balancing running mean (default 25, the official code's window; the "
                        "paper calls it W without giving a value)")
    g.add_argument("--grid-n", type=int, default=11,
                   help="evaluation grid: n points per edge of the simplex (11: the 11-point segment for 2 tasks, "
                        "66 points for 3 tasks)")
    g.add_argument("--eval-every", type=int, default=None,
                   help="validate the whole grid every N epochs (default 1; 20 for utkface and cityscapes, as the official code)")
    g.add_argument("--bn", choices=["shared", "recompute"], default="shared",
                   help="BatchNorm running statistics at evaluation: shared (one set for all alpha, the official "
                        "code) or recompute (re-estimated on 50 training batches for each alpha)")
    g.add_argument("--hv-ref", default=None,
                   help="hypervolume reference point, one number per task in its primary metric, comma-separated "
                        "(default: the suite's rule for every front method, common.metrics.HV_REFERENCE: 0 for "
                        "accuracy-like metrics, the paper's (0, 0) for accuracies; 1 for losses and errors; 90 for normal angles)")
    t = p.add_argument_group("toy options (--dataset toy, App. C)")
    t.add_argument("--steps", type=int, default=None,
                   help="optimisation steps of the toy runs (default: epochs x 1000 = 50,000, the paper's; "
                        "e.g. --steps 5000 for a quick CPU run)")
    t.add_argument("--coverage-tol", type=float, default=0.02,
                   help="a point of the analytic front counts as recovered when the found subspace passes within "
                        "this distance of it, in objectives scaled by the front's range (default 0.02)")
    return p.parse_args(argv)


def check_flags(args) -> None:
    """The PML flags given on the command line, checked before anything is loaded or written (the
    ones left unset come from DEFAULTS)."""
    H = _harness()
    positive = (("window", "a positive integer"), ("balance_window", "a positive integer"), ("eval_every", "a positive integer"))
    for name, what in positive:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise H.UsageError(f"--{name.replace('_', '-')} must be {what} (got {getattr(args, name)})")
    if args.lam is not None and not (args.lam >= 0 and math.isfinite(args.lam)):
        raise H.UsageError(f"--lam must be a finite number >= 0 (got {args.lam})")
    for name in ("p", "p0"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise H.UsageError(f"--{name} must be a positive number, the Dirichlet concentration (got {v})")
    if args.warmup_epochs < 0:
        raise H.UsageError(f"--warmup-epochs must be >= 0 (got {args.warmup_epochs})")
    if (args.p0 is None) != (args.warmup_epochs == 0):
        raise H.UsageError("--p0 and --warmup-epochs go together: the concentration moves from --p0 to --p over "
                           "--warmup-epochs epochs (give both, or neither)")
    if args.grid_n < 2:
        raise H.UsageError(f"--grid-n must be >= 2 (got {args.grid_n})")
    if args.steps is not None:
        if args.dataset != "toy":
            raise H.UsageError("--steps is for --dataset toy; use --epochs or --max-steps for other datasets")
        if args.steps < 1:
            raise H.UsageError(f"--steps must be a positive integer (got {args.steps})")
    if not (args.coverage_tol > 0):
        raise H.UsageError(f"--coverage-tol must be > 0 (got {args.coverage_tol})")
    hv_ref_values(args)


def hv_ref_values(args) -> list[float] | None:
    """--hv-ref as numbers (None: the suite's rule, common.metrics.hv_reference)."""
    if args.hv_ref is None:
        return None
    try:
        return [float(v) for v in args.hv_ref.split(",")]
    except ValueError:
        raise _harness().UsageError(f"--hv-ref must be comma-separated numbers, one per task (got {args.hv_ref!r})") from None


def check_data(args, data) -> None:
    """The flags that depend on the tasks (Run's `check`: after loading, before --out is touched)."""
    H, T = _harness(), data.num_tasks
    if T < 2:
        raise H.UsageError(f"PML needs at least 2 tasks; {args.dataset} has {T}")
    ref = hv_ref_values(args)
    if args.dataset != "toy" and ref is not None and len(ref) != T:
        raise H.UsageError(f"--hv-ref needs {T} numbers ({', '.join(data.task_names)}), got {len(ref)}")


def make_run(args):
    """Run(args, "pml", DEFAULTS): every flag left unset from the table (the m-fold lr once the data
    is loaded); the checks that need the tasks run before --out is touched."""
    return _harness().Run(args, "pml", DEFAULTS, check=check_data)


def concentration(args, epoch: int) -> float:
    """p for this epoch: constant --p, or the optional linear warm start from --p0."""
    if args.p0 is None or args.warmup_epochs <= 0:
        return args.p
    frac = min(1.0, epoch / args.warmup_epochs)
    return args.p0 + (args.p - args.p0) * frac


def mtl_ensemble(members: Sequence[nn.Module]) -> WeightEnsemble:
    """The ensemble of the suite's MTLModel members: shared = the encoder, head t = task t's head."""
    return WeightEnsemble(members, shared=lambda m: m.shared_parameters(), heads=lambda m, t: m.task_parameters(t))


def pml_step(run, args, ens: WeightEnsemble, opt, x, ys, p: float, balancer: LossBalancer | None):
    """train_step with the run's losses, autocast and device and the flags of `args`."""
    return train_step(ens, opt, x, lambda out: run.losses(out, ys), p, args.window, args.lam, args.balancing,
                      balancer, args.clip_grad, run.autocast, run.device)


# ------------------------------------------------------------------------------------------------
# 6. Evaluation of the subspace (Sec. 5.1-5.2, App. E)
# ------------------------------------------------------------------------------------------------
def evaluate_subspace(run, args, ens: WeightEnsemble, net: nn.Module, grid: np.ndarray, split: str) -> list[dict]:
    """{task: {metric: value}} of theta(alpha) on `split` for every alpha of `grid`."""
    H = _harness()
    out = []
    for a in run.progress(grid, f"pml {split} grid", len(grid)):
        ens.materialize(a, net)
        if args.bn == "recompute":
            H.recompute_bn_stats(net, net, run.batches("train", 0))
        net.eval()
        out.append(run.evaluate(net, split))
    return out


def primary_points(data, results: list[dict]) -> tuple[np.ndarray, list[bool]]:
    """(n, T) primary metric values of the grid and the higher-is-better flags."""
    flags = [t.metrics[0][1] for t in data.tasks]
    pts = np.array([[r[t.name][t.primary] for t in data.tasks] for r in results], dtype=float)
    return pts, flags


def front_hypervolume(points: np.ndarray, ref: Sequence[float], flags: list[bool]) -> float | None:
    """The hypervolume of the grid's primary metrics (`primary_points`) against `ref`."""
    return _harness().hypervolume(points, ref, maximize=flags)


def select_network(run, val_res: list[dict]) -> int:
    """The index of the one network theta(alpha) of the grid that is reported: the best on validation
    by the suite's selection score (Run.selection_score: -Delta-m% against the reference, else its
    scale-free form). Its test metrics are metrics.json "tasks" and its Delta-m% "delta_m"."""
    scores = [run.selection_score(r) for r in val_res]
    return int(np.argmax(scores))


def best_of_subspace(data, test_res: list[dict]) -> dict:
    """The paper's best-of-subspace oracle: per task and metric, the best test value over the grid.
    Each value may come from a different network, so it is no network's result (and its Delta-m%
    can beat every real one); metrics.json reports it apart, labelled as such."""
    oracle = {}
    for t in data.tasks:
        oracle[t.name] = {metric: float(max(col) if hib else min(col))
                          for metric, hib in t.metrics for col in [[r[t.name][metric] for r in test_res]]}
    return oracle


# ------------------------------------------------------------------------------------------------
# 7. Plots
# ------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front_2d(path, data, grid, val_pts, test_pts, val_ref=None):
    """Objective-space front of the 11 points (primary metrics), validation and test (Fig. 4 style)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    for pts, name, style in ((val_pts, "validation", "--"), (test_pts, "test", "-")):
        ax.plot(pts[:, 0], pts[:, 1], style, color="0.5", lw=1, zorder=1)
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=grid[:, 0], cmap="coolwarm", vmin=0, vmax=1, s=36,
                        marker="o" if name == "test" else "s", edgecolor="k", lw=0.4, zorder=2, label=name)
    for k, lab, off, ha in ((0, f"member 1 ({data.tasks[0].name})", (-8, -4), "right"),
                            (-1, f"member 2 ({data.tasks[1].name})", (8, 4), "left")):
        ax.annotate(lab, test_pts[k], textcoords="offset points", xytext=off, ha=ha, fontsize=8)
    fig.colorbar(sc, ax=ax, label=r"$\alpha_1$ (weight of member 1)")
    t0, t1 = data.tasks[0], data.tasks[1]
    ax.set_xlabel(f"{t0.name} {t0.primary}" + (" (higher is better)" if t0.metrics[0][1] else " (lower is better)"))
    ax.set_ylabel(f"{t1.name} {t1.primary}" + (" (higher is better)" if t1.metrics[0][1] else " (lower is better)"))
    ax.set_title(f"PML subspace on {data.name}: {len(grid)} points")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def simplex_xy(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (a1, a2, a3) -> plane: member 1 at (0, 0), 2 at (1, 0), 3 at (1/2, sqrt(3)/2)."""
    return grid[:, 1] + 0.5 * grid[:, 2], grid[:, 2] * math.sqrt(3) / 2


def plot_simplex(path, data, grid, pts, n, split="test"):
    """Figure 5 style: one triangle per task coloured by its primary metric over the 66 points, and
    the 3-D front (the grid's triangulation mapped to objective space)."""
    plt = _plt()
    import matplotlib.tri as mtri

    x, y = simplex_xy(grid)
    tri = mtri.Triangulation(x, y)
    fig = plt.figure(figsize=(17, 4.4))
    for t, spec in enumerate(data.tasks):
        ax = fig.add_subplot(1, 4, t + 1)
        sc = ax.scatter(x, y, c=pts[:, t], cmap="viridis" if spec.metrics[0][1] else "viridis_r", marker="h",
                        s=(175 / (n - 1)) ** 2, edgecolor="none")  # hexagons about one grid step wide
        for v, (vx, vy) in enumerate(((0, 0), (1, 0), (0.5, math.sqrt(3) / 2))):
            ax.annotate(f"member {v + 1}", (vx, vy), textcoords="offset points", ha="center",
                        xytext=(0, -22 if vy == 0 else 14), fontsize=8)
        fig.colorbar(sc, ax=ax, shrink=0.8)
        ax.set_title(f"{spec.name} {spec.primary} ({split})", fontsize=10, pad=22)
        ax.set_xlim(-0.15, 1.15)
        ax.set_ylim(-0.2, 1.05)
        ax.set_aspect("equal")
        ax.axis("off")
    ax = fig.add_subplot(1, 4, 4, projection="3d")
    ax.plot_trisurf(pts[:, 0], pts[:, 1], pts[:, 2], triangles=tri.triangles, cmap="viridis", alpha=0.7, lw=0.2, edgecolor="k")
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=4, c="k")
    ax.set_xlabel(data.tasks[0].name, fontsize=8)
    ax.set_ylabel(data.tasks[1].name, fontsize=8)
    ax.set_zlabel(data.tasks[2].name, fontsize=8)
    ax.set_title("front in objective space", fontsize=10)
    fig.suptitle(f"PML on {data.name}: {len(grid)} points of the simplex")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path, history: list[dict], data):
    """Training losses per task, the regulariser and the validation hypervolume per epoch."""
    if not history:
        return
    plt = _plt()
    ep = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for t in data.tasks:
        axes[0].plot(ep, [h[f"train_loss_{t.name}"] for h in history], marker=".", label=t.name)
    axes[0].set_title("mean training loss over the W samples")
    axes[0].legend(fontsize=8)
    axes[1].plot(ep, [h["train_reg"] for h in history], marker=".", color="C3")
    axes[1].set_title("multi-forward regulariser R (Eq. 3)")
    hv = [(e, h["val_hypervolume"]) for e, h in zip(ep, history) if h.get("val_hypervolume") not in (None, "")]
    if hv:
        axes[2].plot(*zip(*hv), marker="o", color="C2")
    axes[2].set_title("validation hypervolume of the grid")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# 8. Training on a dataset
# ------------------------------------------------------------------------------------------------
def train_dataset(args, run):
    """Algorithm 1 on a dataset: the T members trained through sampled theta(alpha), the evaluation grid
    validated every --eval-every epochs; the subspace is reported (`dataset_report`)."""
    H = _harness()
    data, T, dev = run.data, run.data.num_tasks, run.device
    # Algorithm 1 line 1: m = T members, each initialised independently (fresh draws from the seeded RNG)
    ens = mtl_ensemble([H.build_model(args.model, data, pretrained=args.pretrained).to(dev) for _ in range(T)])
    net = copy.deepcopy(ens.members[0])  # holds theta(alpha) for evaluation; the centre in checkpoints
    opt, sched = run.make_optimizer(ens.parameters())
    balancer = LossBalancer(args.balance_window) if args.balancing == "loss" else None
    run.track(members=ens, model=net, opt=opt, sched=sched, balancer=balancer)
    S = run.values(history=[])
    grid = H.evaluation_grid(T, args.grid_n)
    hv_ref = H.hv_reference(data.tasks, hv_ref_values(args))  # the suite's one rule (common.metrics.HV_REFERENCE)

    val_res = None
    for epoch in run.epochs():
        ens.train()
        p_now = concentration(args, epoch)
        # logged sums stay on the device during the epoch and are read once at its end
        sums, reg_sum, n, t0 = torch.zeros(T, device=dev), torch.zeros((), device=dev), 0, time.time()
        for x, ys in run.progress(run.batches("train", epoch), f"pml epoch {epoch + 1}", run.num_batches()):
            L, R = pml_step(run, args, ens, opt, x, ys, p_now, balancer)
            sums += L.detach().mean(0)
            reg_sum += torch.as_tensor(R).detach().to(reg_sum)
            n += 1
            if run.step():
                break
        row = {f"train_loss_{t.name}": float(s) for t, s in zip(data.tasks, (sums / max(n, 1)).cpu())}
        row.update({"train_reg": float(reg_sum) / max(n, 1), "p": p_now, "train_seconds": round(time.time() - t0, 3)})
        if sched is not None:
            sched.step()
        row["val_hypervolume"] = None
        if run.eval_due(epoch):
            val_res = evaluate_subspace(run, args, ens, net, grid, "val")
            pts, flags = primary_points(data, val_res)
            hv = front_hypervolume(pts, hv_ref, flags)
            row["val_hypervolume"] = hv
            row.update(H.flat_metrics("val_centre", val_res[len(grid) // 2]))
            if args.select == "best":
                run.warn_if_val_is_test()  # the epoch is chosen on validation
            if hv is not None:
                run.best.offer(hv, ens.state_dict(), epoch)  # --select best: the highest validation hypervolume
        row["members_cosine_1_2"] = ens.cosine_similarities()[0][1]
        run.log_epoch(epoch, row)
        S["history"].append({"epoch": epoch, **row})
        ens.materialize(np.full(T, 1.0 / T), net)  # the checkpoint's "model": the centre, in MTLModel format
        run.checkpoint(epoch)

    selected_epoch = run.best.restore(ens.load_state_dict)
    if val_res is None or args.select == "best":
        val_res = evaluate_subspace(run, args, ens, net, grid, "val")
    test_res = val_res if data.val is data.test else evaluate_subspace(run, args, ens, net, grid, "test")
    return run.finish(dataset_report(run, args, ens, grid, val_res, test_res, hv_ref, S["history"], selected_epoch))


def dataset_report(run, args, ens: WeightEnsemble, grid: np.ndarray, val_res: list[dict], test_res: list[dict],
                   hv_ref, history: list[dict], selected_epoch: int | None) -> dict:
    """metrics.json of a dataset run: the network selected on validation, the best-of-subspace oracle
    apart, the hypervolumes and the front; the plots (front.png or simplex.png, curves.png)."""
    H = _harness()
    data, T = run.data, run.data.num_tasks
    val_pts, flags = primary_points(data, val_res)
    test_pts, _ = primary_points(data, test_res)
    pick = select_network(run, val_res)
    oracle = best_of_subspace(data, test_res)
    plots = []
    if T == 2:
        run.guarded("front.png", plot_front_2d, run.path("front.png"), data, grid, val_pts, test_pts)
        plots.append("front.png")
    elif T == 3 and len(grid) >= 3 and args.grid_n >= 3:
        run.guarded("simplex.png", plot_simplex, run.path("simplex.png"), data, grid, test_pts, args.grid_n, "test")
        plots.append("simplex.png")
    run.guarded("curves.png", plot_curves, run.path("curves.png"), history, data)
    if history:
        plots.append("curves.png")
    return {
        "tasks": test_res[pick],  # one network: theta(alpha) at the alpha selected on validation
        "delta_m": run.delta_m(test_res[pick]),
        "selected_preference": [round(float(v), 6) for v in grid[pick]],
        "tasks_best_of_subspace_test": oracle,
        "delta_m_best_of_subspace_test": run.delta_m(oracle),
        "best_of_subspace_note": "an oracle, not one network: each metric's best test value over the grid's networks",
        "hypervolume": front_hypervolume(test_pts, hv_ref, flags),  # the suite's one rule: test split, common.metrics.hv_reference
        "hypervolume_split": H.HV_SPLIT,
        "hypervolume_val": front_hypervolume(val_pts, hv_ref, flags),  # selects the epoch with --select best (as the paper)
        "hypervolume_ref": hv_ref,
        "hypervolume_metrics": [t.primary for t in data.tasks],
        "front": [{"preference": [round(float(v), 6) for v in a], "tasks": tr, "val": vr}
                  for a, tr, vr in zip(grid, test_res, val_res)],
        "val_is_test": data.val is data.test,
        "members_cosine": ens.cosine_similarities(),
        "selected_epoch": selected_epoch,
        "pml": {"members": T, "window": args.window, "lambda": args.lam, "p": args.p, "p0": args.p0,
                "warmup_epochs": args.warmup_epochs, "balancing": args.balancing, "lr": args.lr,
                "bn": args.bn, "grid_points": len(grid)},
        "parameters": H.count_parameters(ens.parameters()),
        "parameters_per_network": H.count_parameters(ens.members[0].parameters()),
        "plots": plots,
    }


# ------------------------------------------------------------------------------------------------
# 9. The illustrative example (App. C): 25 pairs of initial points, trained at once
# ------------------------------------------------------------------------------------------------
def toy_pairs() -> tuple[list[tuple[int, int]], torch.Tensor]:
    """All 5 x 5 = 25 ordered pairs (member 1 <- init i, member 2 <- init j): Theta (25, 2, 2)."""
    H = _harness()
    pairs = [(i, j) for i in range(len(H.TOY_INITS)) for j in range(len(H.TOY_INITS))]
    inits = torch.tensor(H.TOY_INITS, dtype=torch.float32)
    return pairs, torch.stack([torch.stack([inits[i], inits[j]]) for i, j in pairs])


def main_toy_pair(c: float) -> tuple[int, int]:
    """The pair of the main text: the two distinct initial points with the worst l_1 + l_2."""
    H = _harness()
    L = H.toy_losses(torch.tensor(H.TOY_INITS), c).sum(-1)
    i, j = torch.argsort(L, descending=True)[:2].tolist()
    return i, j


def toy_subspace_losses(Theta: torch.Tensor, c: float, n: int) -> torch.Tensor:
    """(P, n, 2) losses of theta(alpha) for alpha_1 = 1 .. 0 (n points) on every pair's segment."""
    H = _harness()
    a1 = torch.linspace(1.0, 0.0, n, dtype=Theta.dtype)
    alpha = torch.stack([a1, 1 - a1], -1)  # (n, 2)
    theta = torch.einsum("nk,pkd->pnd", alpha, Theta)
    return H.toy_losses(theta, c)


def toy_step(Theta: nn.Parameter, opt, args, balancer: LossBalancer | None, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 on every pair at once: the pairs share nothing (Adam is element-wise), so summing
    their objectives is the same as 25 independent runs. Gradient balancing uses the exact identity
    grad_{theta_k} L_t(alpha_i) = alpha_i,k grad_theta L_t(theta(alpha_i)), so ||g_i,t|| =
    ||alpha_i|| ||grad_theta L_t|| with T backward passes per step."""
    H = _harness()
    P = Theta.shape[0]
    alphas = sample_alphas(args.p_now, 2, args.window, (P,))  # (P, W, 2)
    theta = torch.einsum("pwk,pkd->pwd", alphas, Theta)  # theta(alpha_i) per pair
    L = H.toy_losses(theta, c)  # (P, W, T)
    R = multiforward_regulariser(alphas, L)  # (P,)
    use_reg = args.lam > 0 and args.window > 1
    Theta.grad = None
    if args.balancing == "grad":
        G = torch.stack([torch.autograd.grad(L[..., t].sum(), theta, retain_graph=True)[0] for t in range(2)], 2)  # (P, W, T, D)
        norm = alphas.norm(dim=-1, keepdim=True) * G.norm(dim=-1)  # (P, W, T)
        coef = alphas / (norm + 1e-8)
        grad = torch.einsum("pwt,pwk,pwtd->pkd", coef, alphas, G)
        if use_reg:
            grad = grad + torch.autograd.grad(args.lam * R.sum(), Theta)[0]
        Theta.grad = grad.detach()
    else:
        scaled = L / balancer.update(L.mean(1))[:, None, :] if args.balancing == "loss" else L
        total = (alphas * scaled).sum()
        if use_reg:
            total = total + args.lam * R.sum()
        total.backward()
    if args.clip_grad:  # per pair: the pairs are independent runs
        with torch.no_grad():
            n = Theta.grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            Theta.grad.mul_((args.clip_grad / n).clamp(max=1.0)[:, None, None])
    opt.step()
    return L.detach(), R.detach()


def _segment_distances(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of each of `points` (n, 2) to the polyline `poly` (k, 2)."""
    a, b = poly[:-1], poly[1:]
    ab = b - a
    ap = points[:, None, :] - a[None]
    denom = np.maximum((ab ** 2).sum(-1), 1e-300)
    s = np.clip((ap * ab[None]).sum(-1) / denom[None], 0.0, 1.0)
    proj = a[None] + s[..., None] * ab[None]
    return np.sqrt(((points[:, None, :] - proj) ** 2).sum(-1)).min(1)


def toy_coverage(images: np.ndarray, front: np.ndarray, tol: float) -> np.ndarray:
    """Per pair: the fraction of the analytic front within `tol` of the subspace's image (a
    polyline through its dense samples), both scaled by the front's range in each objective."""
    scale = np.maximum(front.max(0) - front.min(0), 1e-12)
    F = front / scale
    return np.array([(_segment_distances(F, img / scale) <= tol).mean() for img in images])


def toy_hypervolumes(images: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
    """HV (minimisation) of each pair's image and of the analytic front, reference point = the
    front's nadir + 10% of its range in each objective."""
    H = _harness()
    ref = front.max(0) + 0.1 * (front.max(0) - front.min(0))
    hv_front = H.hypervolume(front, ref)
    return np.array([H.hypervolume(img, ref) for img in images]), hv_front, ref.tolist()


def plot_toy(run, pairs, traj, init_images, final_images, front, coverage, c, label):
    """Figures 7-14 style: one panel per pair. toy_trajectories.png: each member's loss vector over
    training (member 1 blue, member 2 red, darker = later), initial dots, final crosses, initial
    and final subspace dashed; toy_subspaces.png: the final subspace against the analytic front."""
    H = _harness()
    plt = _plt()
    traj = np.asarray(traj)  # (S, P, 2 members, 2 losses)
    k = int(round(math.sqrt(len(pairs))))
    for name, with_traj in (("toy_trajectories.png", True), ("toy_subspaces.png", False)):
        fig, axes = plt.subplots(k, k, figsize=(3.0 * k, 2.8 * k), sharex=True, sharey=True)
        for q, ax in enumerate(axes.flat):
            ax.plot(front[:, 0], front[:, 1], color="#7fc8ff", lw=4, alpha=0.8, zorder=1)
            if with_traj:
                for member, cmap in ((0, "Blues"), (1, "Reds")):
                    ax.scatter(traj[:, q, member, 0], traj[:, q, member, 1], c=np.linspace(0.35, 1, len(traj)),
                               cmap=cmap, vmin=0, vmax=1, s=3, zorder=2)
                    ax.scatter(*traj[0, q, member], c="k", s=18, zorder=4)
                    ax.scatter(*traj[-1, q, member], marker="x", c="C0" if member == 0 else "C3", s=40, zorder=4)
                ax.plot(init_images[q][:, 0], init_images[q][:, 1], "--", color="0.5", lw=0.8, zorder=2)
            ax.plot(final_images[q][:, 0], final_images[q][:, 1], "--", color="k", lw=1.2, zorder=3)
            i, j = pairs[q]
            ax.set_title(f"inits {H.TOY_INITS[i]} / {H.TOY_INITS[j]}\ncoverage {coverage[q]:.0%}", fontsize=7)
            ax.tick_params(labelsize=6)
        lo = front.min(0) - 0.15 * (front.max(0) - front.min(0))
        hi = front.max(0) + 0.6 * (front.max(0) - front.min(0))
        axes.flat[0].set_xlim(lo[0], hi[0])
        axes.flat[0].set_ylim(lo[1], hi[1])
        fig.suptitle(f"PML{label} on the toy problem, c = {c}: "
                     + ("trajectories in objective space" if with_traj else "final subspaces vs the analytic front (light blue)"))
        fig.supxlabel(r"$\ell_1$")
        fig.supylabel(r"$\ell_2$")
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.05, top=0.92, wspace=0.08, hspace=0.35)
        fig.savefig(run.path(name), dpi=90)
        plt.close(fig)


def train_toy(args, run):
    """App. C: Algorithm 1 on the 25 pairs of initial points at once, in "epochs" of 1,000 steps; each
    epoch logs the coverage of the analytic front; the pairs are reported (`toy_report`)."""
    H = _harness()
    c, front = args.c, np.asarray(run.data.info["front"])
    pairs, Theta0 = toy_pairs()
    total = args.steps if args.steps is not None else args.epochs * H.TOY_STEPS_PER_EPOCH
    chunk = min(H.TOY_STEPS_PER_EPOCH, total)
    args.epochs = math.ceil(total / chunk)  # an "epoch" = 1,000 steps (or all of a shorter run)
    run.write_config({"toy_steps": total})
    record_every = max(1, total // 200)
    torch.set_num_threads(1)  # 25 x 2 x 2 parameters: threads only add overhead
    members = nn.ParameterDict({"Theta": nn.Parameter(Theta0.clone())})  # (pair, member, 2)
    Theta = members["Theta"]
    opt, _ = run.make_optimizer([Theta], foreach=False)  # Adam(--lr, --weight-decay); the toy has no schedule
    balancer = LossBalancer(args.balance_window) if args.balancing == "loss" else None
    run.track(members=members, opt=opt, balancer=balancer)
    # the members' losses over training, (P, 2 members, 2 losses) per recorded step, from their vertices
    S = run.values(traj_steps=[0], traj=[H.toy_losses(Theta0, c)], history=[])
    for epoch in run.epochs():
        args.p_now = concentration(args, epoch)
        steps_here = min(chunk, total - epoch * chunk)
        sums, reg, t0 = torch.zeros(2), 0.0, time.time()
        for _ in run.progress(range(steps_here), f"pml toy {epoch + 1}/{args.epochs}", steps_here):
            L, R = toy_step(Theta, opt, args, balancer, c)
            sums += L.mean((0, 1))
            reg += float(R.mean())
            stop = run.step()
            if run.global_step % record_every == 0:
                S["traj_steps"].append(run.global_step)
                S["traj"].append(H.toy_losses(Theta.detach(), c))
            if stop:
                break
        with torch.no_grad():
            cov = toy_coverage(toy_subspace_losses(Theta.detach().double(), c, TOY_DENSE).numpy(), front, args.coverage_tol)
        row = {"train_l1": float(sums[0] / steps_here), "train_l2": float(sums[1] / steps_here),
               "train_reg": reg / steps_here, "mean_coverage": float(cov.mean()),
               "recovered_pairs": int((cov >= 0.9).sum()), "seconds_chunk": round(time.time() - t0, 3)}
        run.log_epoch(epoch, row)
        S["history"].append({"epoch": epoch, **row})
        run.checkpoint(epoch)
    return run.finish(toy_report(run, args, pairs, Theta0, Theta.detach(), torch.stack(S["traj"]).numpy(), front, total))


TOY_DENSE = 201  # samples of a pair's segment for its image in objective space (coverage, hypervolume)


def toy_report(run, args, pairs, Theta0: torch.Tensor, Theta: torch.Tensor, traj: np.ndarray, front: np.ndarray,
               total: int) -> dict:
    """metrics.json of the toy run: coverage and hypervolume per pair, the main pair's 11-point front;
    the figures (`plot_toy`) and a one-line summary."""
    H = _harness()
    c = args.c
    with torch.no_grad():
        images = toy_subspace_losses(Theta.double(), c, TOY_DENSE).numpy()
        init_images = toy_subspace_losses(Theta0.double(), c, TOY_DENSE).numpy()
        eleven = toy_subspace_losses(Theta.double(), c, args.grid_n).numpy()
    cov = toy_coverage(images, front, args.coverage_tol)
    hv, hv_front, ref = toy_hypervolumes(images, front)
    main_i, main_j = main_toy_pair(c)
    q_main = pairs.index((main_i, main_j))
    a1 = np.linspace(1.0, 0.0, args.grid_n)
    front_json = [{"preference": [round(float(a), 6), round(float(1 - a), 6)],
                   "tasks": {"l1": {"loss": float(l[0])}, "l2": {"loss": float(l[1])}}}
                  for a, l in zip(a1, eleven[q_main])]
    label = {"none": "", "grad": "-gb", "loss": "-lb"}[args.balancing]
    plot_toy(run, pairs, traj, init_images, images, front, cov, c, label)
    recovered = int((cov >= 0.9).sum())
    if not args.quiet:
        print(f"[pml] toy c={c} balancing={args.balancing}: {recovered}/25 pairs recover >= 90% of the analytic front "
              f"(tolerance {args.coverage_tol}); mean coverage {cov.mean():.3f}; "
              f"hypervolume {hv.mean():.3f} (analytic front {hv_front:.3f})", flush=True)
    best_main = eleven[q_main].min(0)
    return {
        "tasks": {"l1": {"loss": float(best_main[0])}, "l2": {"loss": float(best_main[1])}},
        "delta_m": None,
        "hypervolume": float(hv.mean()),
        "hypervolume_analytic_front": float(hv_front),
        "hypervolume_reference": ref,
        "front": front_json,
        "main_pair": [list(H.TOY_INITS[main_i]), list(H.TOY_INITS[main_j])],
        "coverage": {"tolerance": args.coverage_tol, "recovered_threshold": 0.9, "recovered_pairs": recovered,
                     "pairs": len(pairs), "mean": float(cov.mean()), "main_pair": float(cov[q_main])},
        "pairs": [{"init": [list(H.TOY_INITS[i]), list(H.TOY_INITS[j])], "coverage": float(cv), "hypervolume": float(hv_q),
                   "members": Theta[q].tolist()} for (i, j), cv, hv_q, q in zip(pairs, cov, hv, range(len(pairs)))],
        "pml": {"c": c, "window": args.window, "lambda": args.lam, "p": args.p, "balancing": args.balancing,
                "lr": args.lr, "steps": total},
        "plots": ["toy_trajectories.png", "toy_subspaces.png"],
    }


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    check_flags(args)
    run = make_run(args)
    return train_toy(args, run) if args.dataset == "toy" else train_dataset(args, run)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the suite's root: common/
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import pml) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
