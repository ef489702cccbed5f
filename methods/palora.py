"""PaLoRA: Pareto Low-Rank Adapters (Dimitriadis, Frossard & Fleuret, "Pareto Low-Rank Adapters:
Efficient Multi-Task Learning with Preferences", ICLR 2025).

One network parameterises a whole Pareto front: every Conv2d and Linear layer of the backbone (the
shared encoder AND the task heads, as the official code does; BatchNorm stays shared) gets one
low-rank adapter per task, and a preference lambda on the simplex mixes them (section 4):

    Eq. 1   y' = (W + alpha/r * sum_t lambda_t A_t B_t) x,    A_t in R^{n x r}, B_t in R^{r x m}
            trained with the scalarised loss lambda^T L = sum_t lambda_t L_t (the same lambda), so
            adapter t learns what task t needs and W learns the features all tasks share.
            A_t = 0 and B_t ~ Kaiming-uniform: the model starts as the base model.
            Conv2d (out x in x k x k): the kernel is viewed as an (out*k) x (in*k) matrix and the
            adapter has rank r*k (loralib's convolution LoRA, as the official code), i.e.
            T r k^2 (in + out) adapter parameters per layer; k = 1 and Linear give T r (m + n).
    Sec 4.2 parameters of a layer: mn + T r (m + n)  -> Delta_p% = adapters / base model.
    Eq. 2   lambda_{tau,t}^(j) = (lambda_{0,t}^(j))^{tau/T_max} / sum_k (lambda_{0,k}^(j))^{tau/T_max}:
            M evenly spaced base preferences lambda_0^(j) (App. B: linspace for 2 tasks, the simplex
            lattice for 3 or more) annealed from the centre of the simplex (tau = 0) towards the base
            points; tau = training progress. Each batch makes M forward passes, one per preference,
            and the loss is sum_j lambda^(j)T L^(j) (section 4.1).
    App. C  ablation schedules (--schedule): "fixed" (Eq. 2 at tau = 1 throughout),
            "dirichlet-annealed" (M samples of Dirichlet(p (1 - tau) 1)), "dirichlet" (Dirichlet(p 1)).
    Sec 5.3 Pareto expansion (--init-ckpt): load a trained multi-task model theta_0 (e.g. LS from
            methods/baselines.py), freeze it and train only the adapters for a few epochs.
    Sec 5.4 pseudo-preferences (Figure 5): lambda in {(0,0), (1,-1), (-1,1), (-1,-1), (1,0), (0,1),
            (.5,.5)} -- outside the simplex the adapters' task-specific knowledge is removed.
    Scene datasets: "gradient balancing" as in PaMaL (App. A.2): each pass minimises
            sum_t lambda_t L_t / (||grad_shared L_t|| + 1e-3), norms detached (--balance grad).

Evaluation: the front on an evenly spaced preference grid (11 points for 2 tasks, the 66-point
lattice for 3), its hypervolume (primary metrics; accuracies / mIoU / F1 with reference 0, as the
official compute_hv), the number of non-dominated points, and the Spearman correlation that the
paper's ablation uses (official code: between the two tasks' losses across the grid; lower = a
more diverse, Pareto-aligned front), plus each task's Spearman between lambda_t and L_t. metrics.json
"tasks" holds the centre preference (1/T, ..., 1/T), the model Delta-m% is computed for.

Layout: the method half (palora_wrap, set_preference, the schedules of Eq. 2 / App. C, backward_pass)
imports only torch and numpy, so this one file can be copied into another project; the runner half
(after the banner: command line, training loop, evaluation, plots) imports common/ on first use.

    python methods/palora.py                                   # multimnist-lite, offline
    python methods/palora.py --dataset cityscapes              # rank 4, M = 5, grad balancing
    python methods/baselines.py --method ls --out /tmp/ls      # then Pareto expansion from it:
    python methods/palora.py --init-ckpt /tmp/ls/checkpoint.pt --out /tmp/expand
    python methods/palora.py --overhead-report                 # Delta_p% of LeNet / SegNet shapes

Where the official code (github nik-dim/palora) differs, this file follows the paper or does better:
- Eq. 2 is implemented as printed (exponent tau / T_max). The official sampler uses the exponent
  mul * tau with mul = 5, i.e. T_max = 0.2 here, which is our default; Figure 7's remark "higher
  temperatures lead to larger fronts" matches the code's multiplier, so its grid {1, 2, 5} reads
  as T_max in {1, 0.5, 0.2} here.
- Base preferences: the official code takes linspace(0.01, 0.99, M) for 2 tasks (App. B says
  linspace(0, 1, M): a 0 coordinate would jump to the vertex at the first step since 0^x = 0), so
  lambda_0 = eps + (1 - T eps) * lattice point with --epsilon 0.01 (same as theirs for 2 tasks).
  For 3 tasks the official code takes the first M points of a larger meshzoo lattice (on NYUv2 with
  M = 6 one task never gets weight); here M must be a lattice size (3, 6, 10, 15, ...) and the
  points cover the whole simplex. Their default M = 1 with an annealing sampler that asserts M > 1
  cannot run; our defaults are M = 5 (2 tasks, the paper's CityScapes setting) and 6 (3 tasks).
- The M passes are back-propagated one at a time (gradients accumulate): the same gradient as the
  official summed loss, with the memory of one pass instead of M.
- Pareto expansion keeps the whole base model bit-identical: base weights frozen AND BatchNorm
  running statistics frozen (BatchNorm in eval mode while the adapters train); the official code
  only excludes the weights from the update.
- Hypervolume and Spearman are computed with our own exact routines (common/metrics.py) instead of
  pymoo. Dirichlet concentrations get the official floor 1e-3 so p (1 - tau) stays valid at tau = 1,
  and the samples are drawn in log space: torch's Dirichlet at concentration 1e-3 underflows and
  returns the simplex centre for about 1 row in 8, where the schedule wants the vertices.
- Adapter learning rate = T x the base learning rate (official reweight_lr; the paper is silent).
"""
from __future__ import annotations

import functools
import math
import importlib.util
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEDULES = ("annealed", "fixed", "dirichlet-annealed", "dirichlet")
DIRICHLET_FLOOR = 1e-3  # official AnnealingDirichletSampler: p (1 - tau) + 0.001
GRAD_BALANCE_XI = 1e-3  # PaMaL / official PaLoRA_GB: L_t / (||g_t|| + 0.001)


# ----------------------------------------------------------------------------------------------
# Eq. 1: the low-rank adapter layers and the wrapper
# ----------------------------------------------------------------------------------------------
class Preference:
    """The preference lambda that every adapter layer of one model reads (set_preference)."""

    def __init__(self, num_tasks: int):
        self.value = torch.full((num_tasks,), 1.0 / num_tasks)


class _PaLoRA(nn.Module):
    """Shared part of the adapter layers: A (T, n, r_eff) zeros and B (T, r_eff, m) Kaiming-uniform,
    so that delta W(lambda) = alpha/r * sum_t lambda_t A_t B_t (n x m) is 0 at initialisation."""

    def _init_adapters(self, base: nn.Module, n: int, m: int, r_eff: int, num_tasks: int, rank: int,
                       scaling: float, pref: Preference):
        self.base = base
        self.num_tasks, self.rank, self.alpha = num_tasks, rank, scaling
        self.scale = scaling / rank  # alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.zeros(num_tasks, n, r_eff, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.empty(num_tasks, r_eff, m, dtype=w.dtype, device=w.device))
        for t in range(num_tasks):  # as nn.Linear's weights (bound 1/sqrt(m)); official: kaiming_uniform_(a=sqrt(5))
            nn.init.kaiming_uniform_(self.lora_B.data[t], a=math.sqrt(5))
        self.pref = pref

    def delta(self) -> torch.Tensor:
        """alpha/r * sum_t lambda_t A_t B_t, an n x m matrix (Eq. 1)."""
        T, n, r = self.lora_A.shape
        lam = self.pref.value
        if lam.device != self.lora_A.device or lam.dtype != self.lora_A.dtype:  # moved once, shared by all layers
            lam = self.pref.value = lam.to(device=self.lora_A.device, dtype=self.lora_A.dtype)
        # [lambda_1 A_1 | ... | lambda_T A_T] (n x Tr) @ [B_1; ...; B_T] (Tr x m): one matmul
        A = (self.lora_A * lam.view(T, 1, 1)).permute(1, 0, 2).reshape(n, T * r)
        return self.scale * (A @ self.lora_B.reshape(T * r, -1))

    def adapter_parameter_count(self) -> int:
        return self.lora_A.numel() + self.lora_B.numel()


class PaLoRALinear(_PaLoRA):
    """Eq. 1 for nn.Linear (W: n = out_features x m = in_features); the bias is the base layer's."""

    def __init__(self, base: nn.Linear, num_tasks: int, rank: int, scaling: float, pref: Preference):
        super().__init__()
        self._init_adapters(base, base.out_features, base.in_features, rank, num_tasks, rank, scaling, pref)

    def forward(self, x):
        return F.linear(x, self.base.weight + self.delta(), self.base.bias)


class PaLoRAConv2d(_PaLoRA):
    """Eq. 1 for nn.Conv2d (square k x k kernels, groups = 1): the out x in x k x k kernel is the
    (out*k) x (in*k) matrix W, adapters A_t ((out*k) x (r*k)), B_t ((r*k) x (in*k)), reshaped back
    with a plain view (loralib / official). Parameters: T r k^2 (in + out) on top of out in k^2."""

    def __init__(self, base: nn.Conv2d, num_tasks: int, rank: int, scaling: float, pref: Preference):
        super().__init__()
        kh, kw = base.kernel_size
        if kh != kw or base.groups != 1:
            raise ValueError(f"PaLoRA adapts square, ungrouped convolutions only (found kernel {base.kernel_size}, groups {base.groups})")
        k = kh
        self._init_adapters(base, base.out_channels * k, base.in_channels * k, rank * k, num_tasks, rank, scaling, pref)

    def forward(self, x):
        w = self.base.weight
        return self.base._conv_forward(x, w + self.delta().view_as(w), self.base.bias)


def palora_wrap(model: nn.Module, num_tasks: int, rank: int, scaling: float) -> nn.Module:
    """Replace every nn.Linear and nn.Conv2d of `model` (any nn.Module: encoder and heads) by
    its PaLoRA version, in place; BatchNorm and everything else stay shared. The base layers keep
    their weights (now under `<name>.base.`). The model gets a `preference` (set_preference)."""
    if rank < 1:
        raise ValueError(f"the adapter rank must be a positive integer (got {rank})")
    pref = Preference(num_tasks)
    count = 0

    def visit(module: nn.Module):
        nonlocal count
        for name, child in list(module.named_children()):
            if isinstance(child, _PaLoRA):
                continue
            if type(child) is nn.Linear:
                setattr(module, name, PaLoRALinear(child, num_tasks, rank, scaling, pref))
                count += 1
            elif type(child) is nn.Conv2d:
                setattr(module, name, PaLoRAConv2d(child, num_tasks, rank, scaling, pref))
                count += 1
            else:
                visit(child)

    visit(model)
    if count == 0:
        raise ValueError("this model has no Linear or Conv2d layer for PaLoRA to adapt")
    model.preference = pref
    return model


def set_preference(model: nn.Module, lam) -> None:
    """Every adapter layer of `model` now uses lambda = `lam` (any real vector of length T)."""
    lam = torch.as_tensor(lam, dtype=torch.float32).reshape(-1)
    if lam.numel() != model.preference.value.numel():
        raise ValueError(f"preference of length {lam.numel()} for {model.preference.value.numel()} tasks")
    model.preference.value = lam


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B")]


def base_parameters(model: nn.Module) -> list[nn.Parameter]:
    ids = {id(p) for p in adapter_parameters(model)}
    return [p for p in model.parameters() if id(p) not in ids]


def base_state_dict(model: nn.Module) -> dict:
    """The base model's state_dict (keys as the unwrapped model): weights, biases, BN buffers."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith(".lora_A") or k.endswith(".lora_B"):
            continue
        out[k.replace(".base.", ".")] = v
    return out


def parameter_overhead(model: nn.Module) -> dict:
    """Section 4.2: adapters versus the plain multi-task model, Delta_p% = 100 adapters / base."""
    base = sum(p.numel() for p in base_parameters(model))
    adapters = sum(p.numel() for p in adapter_parameters(model))
    return {"base": base, "adapters": adapters, "total": base + adapters, "delta_p_percent": 100.0 * adapters / base}


# ----------------------------------------------------------------------------------------------
# Eq. 2 and App. C: the preference schedules
# ----------------------------------------------------------------------------------------------
def simplex_lattice(num_tasks: int, divisions: int) -> torch.Tensor:
    """All points of the simplex whose coordinates are multiples of 1/divisions (rows sum to 1):
    C(divisions + T - 1, T - 1) points, e.g. 66 for T = 3 and 10 divisions; first coordinate
    increasing (2 tasks: [p, 1 - p], p = linspace(0, 1, divisions + 1))."""
    if divisions == 0:
        return torch.full((1, num_tasks), 1.0 / num_tasks, dtype=torch.float64)
    rows = []

    def rec(prefix, left, slots):
        if slots == 1:
            rows.append(prefix + [left])
            return
        for i in range(left + 1):
            rec(prefix + [i], left - i, slots - 1)

    rec([], divisions, num_tasks)
    pts = torch.tensor(rows, dtype=torch.float64) / divisions
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]))
    return pts[order]


def lattice_size(num_tasks: int, divisions: int) -> int:
    return math.comb(divisions + num_tasks - 1, num_tasks - 1)


def lattice_divisions(num_tasks: int, M: int) -> int | None:
    """The number of divisions whose lattice has exactly M points, or None."""
    if M == 1:
        return 0
    d = 1
    while lattice_size(num_tasks, d) < M:
        d += 1
    return d if lattice_size(num_tasks, d) == M else None


def base_preferences(num_tasks: int, M: int, epsilon: float = 0.01) -> torch.Tensor:
    """App. B: M evenly spaced preferences lambda_0 on the simplex (2 tasks: linspace; T >= 3: the
    simplex lattice with M points), pulled into the interior: eps + (1 - T eps) * point."""
    d = lattice_divisions(num_tasks, M)
    if d is None:
        sizes = ", ".join(str(lattice_size(num_tasks, k)) for k in range(1, 6))
        raise ValueError(f"with {num_tasks} tasks the evenly spaced preferences form a simplex lattice, "
                         f"so M must be one of {sizes}, ... (got M = {M})")
    return epsilon + (1.0 - num_tasks * epsilon) * simplex_lattice(num_tasks, d)


def anneal(base: torch.Tensor, tau: float, temperature: float) -> torch.Tensor:
    """Eq. 2: lambda_tau = lambda_0^(tau/T_max) / sum_k lambda_0,k^(tau/T_max), row-wise; the
    centre of the simplex at tau = 0, the base points themselves at tau = T_max."""
    powered = base ** (tau / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def sample_preferences(schedule: str, base: torch.Tensor, tau: float, temperature: float, p: float) -> torch.Tensor:
    """The M preferences of one batch at training progress tau in [0, 1] (float32, M x T).
    The Dirichlet schedules draw from torch's global generator (seeded, restored on --resume)."""
    if schedule == "annealed":  # Eq. 2
        lam = anneal(base, tau, temperature)
    elif schedule == "fixed":  # App. C (b): Eq. 2 with tau = 1 throughout
        lam = anneal(base, 1.0, temperature)
    else:  # App. C (c), (d): Dirichlet(p (1 - tau) 1) annealed, Dirichlet(p 1) fixed
        M, T = base.shape
        conc = p * (1.0 - tau) + DIRICHLET_FLOOR if schedule == "dirichlet-annealed" else p
        lam = dirichlet(float(conc), M, T)
    return lam.float()


def dirichlet(conc: float, M: int, T: int) -> torch.Tensor:
    """M samples of Dirichlet(conc 1) over T tasks, drawn in log space: log Gamma(a) =
    log Gamma(a + 1) + log(U) / a (Marsaglia & Tsang). At the tiny concentrations of the annealed
    schedule (1e-3 at tau = 1) every Gamma(a) sample of a row can underflow to 0, and
    torch.distributions.Dirichlet (the official sampler) then returns the centre of the simplex for
    that row (about 1 row in 8 at a = 1e-3), exactly where the schedule should be at the vertices."""
    log_g = torch.distributions.Gamma(torch.tensor(conc + 1.0, dtype=torch.float64), 1.0).sample((M, T)).log()
    log_g = log_g + torch.rand(M, T, dtype=torch.float64).clamp_min(1e-300).log() / conc
    return torch.softmax(log_g, dim=1)


# ----------------------------------------------------------------------------------------------
# One training step: M forward passes, sum_j lambda^(j)T L^(j) (or the gradient-balanced version)
# ----------------------------------------------------------------------------------------------
def backward_pass(losses: torch.Tensor, lam: torch.Tensor, balance: str, params, shared_ids) -> None:
    """Accumulate the gradient of this pass's scalarised loss into .grad.

    none: lambda^T L.  grad: sum_t lambda_t L_t / (||d L_t / d shared|| + xi), norms detached; each
    task's gradient over all trainable parameters comes from one backward, scaled and accumulated."""
    lam = lam.to(losses.device, losses.dtype)
    if balance == "none":
        (lam * losses).sum().backward()
        return
    T = len(losses)
    for t in range(T):
        grads = torch.autograd.grad(losses[t], params, retain_graph=t < T - 1, allow_unused=True)
        sq = [g.detach().float().pow(2).sum() for p, g in zip(params, grads) if g is not None and id(p) in shared_ids]
        norm = torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=losses.device)
        c = (lam[t] / (norm + GRAD_BALANCE_XI)).to(losses.dtype)  # a tensor: no device sync
        for p, g in zip(params, grads):
            if g is None:
                continue
            p.grad = c * g if p.grad is None else p.grad + c * g


def set_train_mode(model: nn.Module, freeze_base: bool) -> None:
    """model.train(); with a frozen base (Pareto expansion) BatchNorm stays in eval mode, so its
    running statistics are not moved either."""
    model.train()
    if freeze_base:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# ----------------------------------------------------------------------------------------------
# Section 5.4: pseudo-preferences
# ----------------------------------------------------------------------------------------------
def pseudo_preferences(num_tasks: int) -> list[tuple[str, list[float]]]:
    """Section 5.4 / Figure 5, for T tasks: base only (0), all adapters subtracted (-1), "forget t"
    (+1 everywhere, -1 at t), the vertices e_t and the centre. For T = 2: (0,0), (-1,-1), (-1,1),
    (1,-1), (1,0), (0,1), (.5,.5)."""
    T = num_tasks
    out = [("base only", [0.0] * T), ("all subtracted", [-1.0] * T)]
    for t in range(T):
        out.append((f"forget {t + 1}", [(-1.0 if s == t else 1.0) for s in range(T)]))
    for t in range(T):
        out.append((f"e{t + 1}", [(1.0 if s == t else 0.0) for s in range(T)]))
    out.append(("centre", [1.0 / T] * T))
    return out




# ======================= runner: command line and training loop (needs common/) =======================
@functools.lru_cache(maxsize=None)
def _harness():
    """common/ (the suite's harness), imported on first use: nothing above this banner needs it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:  # called by every runner function: put the suite's root on the path once
        sys.path.insert(0, root)

    from common.data import task
    from common.device import UsageError
    from common.metrics import evaluation_grid, hv_reference, hypervolume
    from common.models import build_model
    from common.train import (Derived, Run, add_front_arguments, base_parser, check_front_arguments, clip_shared, defaults_table,
                              flat_metrics, front_caption, front_centre, front_points, front_report, front_validation, main_guard)
    return SimpleNamespace(**locals())


def per_task(args, data) -> float:
    """T (the number of tasks; the official reweight_lr)"""
    return float(data.num_tasks) if data is not None else None  # a Run without data (load_data=False) leaves it unset


# ----------------------------------------------------------------------------------------------
# Defaults per dataset (sources: the paper's App. A and section 5, the official configs
# configs/experiment/<dataset>/{<dataset>.yaml,method/palora.yaml}, REFERENCE_NOTES.md). A function
# value is computed by Run from the run's data (its docstring is the --help text).
# ----------------------------------------------------------------------------------------------
DEFAULTS = {
    # paper App. A: rank 1, scaling alpha and T_max picked on validation; official lora_alpha 1, mul 5;
    # adapter learning rate = T x --lr (official reweight_lr; the paper is silent)
    "*": dict(rank=1, scaling=1.0, num_prefs=5, schedule="annealed", temperature=0.2, balance="none", eval_every=1,
              adapter_lr_mult=per_task),
    "multimnist-lite": dict(epochs=10, batch_size=256, lr=1e-3),
    "multimnist": dict(epochs=10, batch_size=256, lr=1e-3),
    "multifashion": dict(epochs=10, batch_size=256, lr=1e-3),
    "multifashion-mnist": dict(epochs=10, batch_size=256, lr=1e-3),
    "multimnist3-lite": dict(epochs=20, batch_size=256, lr=1e-3, num_prefs=6),
    "multimnist3": dict(epochs=20, batch_size=256, lr=1e-3, num_prefs=6),
    "census": dict(epochs=10, batch_size=256, lr=1e-3),  # PaMaL's census setting (not in the PaLoRA paper)
    # official utkface config: rank 4, Adam 1e-3, 100 epochs, batch 128 (it anneals a Dirichlet; we keep Eq. 2)
    "utkface": dict(epochs=100, batch_size=128, lr=1e-3, rank=4, num_prefs=6, eval_every=20),
    # official celeba config: rank 1, lr 1e-3, 100 epochs, one annealed-Dirichlet preference per step
    "celeba": dict(epochs=100, batch_size=256, lr=1e-3, num_prefs=1, schedule="dirichlet-annealed", eval_every=5),
    # paper section 5.2 / Table 1: SegNet, rank 4, m = 5, 100 epochs, Adam 1e-4 halved after 75; grad balancing
    # App. A: validation = 500 of the 2975 training images (CityScapes), 95 of 795 (NYUv2), held out
    "cityscapes": dict(epochs=100, batch_size=8, lr=1e-4, scheduler=(75, 0.5), rank=4, num_prefs=5,
                       balance="grad", eval_every=20, holdout=500 / 2975),
    # official nyuv2 config: rank 4, num 6, 200 epochs, Adam 1e-4 halved after 100, batch 2; grad balancing
    "nyuv2": dict(epochs=200, batch_size=2, lr=1e-4, scheduler=(100, 0.5), rank=4, num_prefs=6,
                  balance="grad", eval_every=10, holdout=95 / 795),
}

# Pareto expansion (--init-ckpt; section 5.3, App. A.3), on top of DEFAULTS: same settings, only the
# epochs change (MultiMNIST 4, CityScapes 5) and the learning rate is the one of the final training
# iteration (official resume config: 5e-5 on CityScapes = 1e-4 halved once); no scheduler within these few epochs.
EXPANSION_DEFAULTS = {
    "*": dict(epochs=4, scheduler=None),
    "cityscapes": dict(epochs=5, lr=5e-5, scheduler=None),
    "nyuv2": dict(epochs=5, lr=5e-5, scheduler=None),
    "utkface": dict(epochs=5, scheduler=None),
    "celeba": dict(epochs=5, scheduler=None),
}

# Delta_p% reported in the paper (sections 5.1-5.2), keyed by (dataset family, backbone, rank).
PAPER_DELTA_P = {("multimnist", "lenet", 1): 12.5, ("cityscapes", "segnet", 4): 4.2, ("nyuv2", "segnet", 4): 6.3}
# the settings a run records in config.json ("resolved") once the tables are applied
RESOLVED = ("rank", "scaling", "num_prefs", "schedule", "temperature", "balance", "adapter_lr_mult", "eval_every")


def method_defaults(expansion: bool = False) -> dict:
    """The table a run resolves its unset flags from: DEFAULTS, or for a Pareto expansion DEFAULTS with
    EXPANSION_DEFAULTS on top, dataset by dataset (a function value is computed by Run from the data;
    its docstring is the --help text)."""
    table = {ds: dict(row) for ds, row in DEFAULTS.items()}
    if expansion:
        for ds in set(DEFAULTS) | set(EXPANSION_DEFAULTS):
            table[ds] = {**table.get(ds, {}), **EXPANSION_DEFAULTS["*"], **EXPANSION_DEFAULTS.get(ds, {})}
    return table


def parse_args(argv=None):
    H = _harness()
    p = H.base_parser("palora", __doc__)
    p.epilog = (H.defaults_table(method_defaults(), title="defaults of a full training")
                + "\n\n" + H.defaults_table(method_defaults(expansion=True), title="defaults of a Pareto expansion (--init-ckpt)"))
    g = p.add_argument_group("PaLoRA options")
    g.add_argument("--rank", type=int, default=None, help="adapter rank r of Eq. 1 (default: per dataset, see the table below)")
    g.add_argument("--scaling", type=float, default=None, help="scaling alpha of Eq. 1; the adapters enter as alpha/r (default 1, official lora_alpha)")
    g.add_argument("--num-prefs", type=int, default=None,
                   help="M: preferences per batch = forward passes per batch (default: per dataset, see the table below; "
                        "with 3+ tasks and a deterministic schedule M must be a simplex-lattice size: 3, 6, 10, 15, ...)")
    g.add_argument("--temperature", type=float, default=None, help="T_max of Eq. 2: exponent tau/T_max (default 0.2 = the official "
                   "exponent 5 tau; 1 ends exactly at the base points)")
    g.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="preference schedule (default: per dataset, see the table below): annealed (Eq. 2), fixed (Eq. 2 at "
                        "tau = 1), dirichlet-annealed (Dirichlet(p(1-tau))), dirichlet (Dirichlet(p)) -- App. C")
    g.add_argument("--epsilon", type=float, default=0.01,
                   help="base preferences are eps + (1 - T eps) * lattice point, keeping every coordinate > 0 (default 0.01, official)")
    g.add_argument("--concentration", type=float, default=1.0, help="p of the Dirichlet schedules (default 1)")
    g.add_argument("--balance", choices=["none", "grad"], default=None,
                   help="none: loss lambda^T L; grad: sum_t lambda_t L_t / (||grad_shared L_t|| + 1e-3) "
                        "(PaMaL) (default: per dataset, see the table below)")
    g.add_argument("--adapter-lr-mult", type=float, default=None,
                   help="adapter learning rate = this x --lr (default T, the number of tasks: the official reweight_lr)")
    g.add_argument("--init-ckpt", default=None,
                   help="Pareto expansion: a trained multi-task checkpoint (methods/baselines.py checkpoint.pt or a state_dict); "
                        "its weights are frozen and only the adapters train (section 5.3)")
    H.add_front_arguments(g)  # --grid-points, --hv-ref, --eval-batches
    g.add_argument("--eval-every", type=int, default=None, help="validate the front every N epochs (default: per dataset, see the table below)")
    g.add_argument("--overhead-report", action="store_true",
                   help="print the adapter overhead Delta_p%% of LeNet (MultiMNIST) and SegNet (Cityscapes, NYUv2 shapes) "
                        "next to the paper's, then exit")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The model and the preferences of a run
# ----------------------------------------------------------------------------------------------
def build(args, run, expansion: bool) -> tuple[nn.Module, dict]:
    """The base backbone (theta_0 of an expansion, frozen: section 5.3) with the Eq. 1 adapters, on
    the run's device, and its parameter overhead next to the paper's Delta_p%."""
    H = _harness()
    model = H.build_model(args.model, run.data, pretrained=args.pretrained)
    if expansion:
        load_init_checkpoint(args.init_ckpt, model)
    try:
        palora_wrap(model, run.data.num_tasks, args.rank, args.scaling)
    except ValueError as e:  # e.g. --dataset toy: nothing to adapt
        raise H.UsageError(f"--model {run.model_name}: {e}; pick another --model") from None
    model.to(run.device)
    if expansion:
        for p in base_parameters(model):
            p.requires_grad_(False)
    overhead = parameter_overhead(model)
    family = "multimnist" if args.dataset.startswith("multimnist") and run.data.num_tasks == 2 else args.dataset
    overhead["paper_delta_p_percent"] = PAPER_DELTA_P.get((family, run.model_name, args.rank))
    return model, overhead


def schedule_base(args, num_tasks: int) -> torch.Tensor | None:
    """The base preferences lambda_0 of a deterministic schedule (Eq. 2); None for the Dirichlet ones."""
    if args.schedule not in ("annealed", "fixed"):
        return None
    try:
        return base_preferences(num_tasks, args.num_prefs, args.epsilon)
    except ValueError as e:
        raise _harness().UsageError(f"--num-prefs {args.num_prefs}: {e}") from None


def train_row(run, sums: torch.Tensor, n: int, steps_total: int, prefs: torch.Tensor | None) -> dict:
    """An epoch's log columns: the mean training losses, tau, and how far the last batch's preferences spread."""
    row = {f"train_loss_{t.name}": float(s / max(n, 1)) for t, s in zip(run.data.tasks, sums.cpu())}
    row["tau"] = min(1.0, run.global_step / steps_total)
    if prefs is not None:
        row["pref_min_task1"], row["pref_max_task1"] = float(prefs[:, 0].min()), float(prefs[:, 0].max())
    return row


# ----------------------------------------------------------------------------------------------
# Evaluation at preferences (the front: common.train.front_validation / front_report)
# ----------------------------------------------------------------------------------------------
def evaluate_at(run, model: nn.Module, prefs, split: str) -> list[dict]:
    model.eval()
    res = []
    for lam in prefs:
        lam = [float(v) for v in lam]
        set_preference(model, lam)
        res.append({"preference": [round(v, 6) for v in lam],
                    "tasks": run.evaluate(model, split, max_batches=run.args.eval_batches)})
    return res


# ----------------------------------------------------------------------------------------------
# Pareto expansion: loading theta_0
# ----------------------------------------------------------------------------------------------
def load_init_checkpoint(path: str, model: nn.Module) -> None:
    """Load a multi-task checkpoint into the (unwrapped) base model: a checkpoint.pt of
    methods/baselines.py (its model under ["state"]["tracked"]["model"], or ["state"]["model"] as
    written before the harness named its state, when checkpoints still pickled the rule objects), or
    a bare state_dict."""
    H = _harness()
    try:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a checkpoint of the older layout pickles objects: the file the user named, as before
            if "eights only load" not in str(e):
                raise
            blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise H.UsageError(f"--init-ckpt {path}: cannot read it ({type(e).__name__}); give a checkpoint.pt of methods/baselines.py")
    sd = blob
    if isinstance(blob, dict) and isinstance(blob.get("state"), dict):
        state = blob["state"]
        sd = state["tracked"].get("model") if isinstance(state.get("tracked"), dict) else state.get("model")
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise H.UsageError(f"--init-ckpt {path}: no model state_dict in it (expected ['state']['tracked']['model'] "
                           "as methods/baselines.py writes)")
    if any(k.endswith("lora_A") for k in sd):
        raise H.UsageError(f"--init-ckpt {path}: this is a PaLoRA checkpoint; expansion starts from a plain multi-task model "
                         "(use --resume to continue a PaLoRA run)")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(s.strip() for s in first[:2])[:300]
        raise H.UsageError(f"--init-ckpt {path}: it does not fit this --dataset/--model backbone ({detail})")


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ternary(lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (.., 3) -> 2-D triangle coordinates (vertices e1 (0,0), e2 (1,0), e3 (.5,.87))."""
    return lam[:, 1] + 0.5 * lam[:, 2], lam[:, 2] * math.sqrt(3) / 2


def plot_front(path: str, front: list[dict], tasks, centre: dict | None = None, init: dict | None = None,
               title: str = "") -> None:
    plt, T = _plt(), len(tasks)
    P, lam = _harness().front_points(front, tasks)
    if T == 2:
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        ax.plot(P[:, 0], P[:, 1], "-", color="0.6", lw=1, zorder=1)
        sc = ax.scatter(P[:, 0], P[:, 1], c=lam[:, 0], cmap="viridis", vmin=0, vmax=1, zorder=2, edgecolor="k", lw=0.4)
        fig.colorbar(sc, ax=ax, label=f"lambda_1 ({tasks[0].name})")
        if init is not None:
            ax.scatter([init[tasks[0].name][tasks[0].primary]], [init[tasks[1].name][tasks[1].primary]], marker="o",
                       s=90, facecolor="none", edgecolor="red", lw=1.5, zorder=3, label="theta_0 (init checkpoint)")
        if centre is not None:
            ax.scatter([centre[tasks[0].name][tasks[0].primary]], [centre[tasks[1].name][tasks[1].primary]], marker="*",
                       s=140, color="orange", edgecolor="k", zorder=4, label="lambda = (.5, .5)")
        ax.set_xlabel(f"{tasks[0].name} {tasks[0].primary}")
        ax.set_ylabel(f"{tasks[1].name} {tasks[1].primary}")
        ax.legend(loc="best", fontsize=8)
    else:
        if T != 3:
            return
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        x, y = _ternary(lam)
        for i, (ax, t) in enumerate(zip(axes, tasks)):
            sc = ax.scatter(x, y, c=P[:, i], cmap="viridis", s=60)
            ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], "k-", lw=0.8)
            for (vx, vy), name in zip([(0, 0), (1, 0), (0.5, math.sqrt(3) / 2)], [t_.name for t_ in tasks]):
                ax.annotate(name, (vx, vy), ha="center", va="top" if vy == 0 else "bottom", fontsize=8)
            ax.set_title(f"{t.name} {t.primary}")
            ax.set_aspect("equal")
            ax.axis("off")
            fig.colorbar(sc, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_schedule(path: str, schedule: str, base: torch.Tensor, temperature: float, p: float) -> None:
    """Figure 2 (2 tasks: lambda_1 of each preference over tau) / Figure 9 (3 tasks: snapshots)."""
    plt = _plt()
    taus = np.linspace(0, 1, 101)
    with torch.random.fork_rng(devices=[]):  # the Dirichlet samples drawn here leave training's RNG alone
        torch.manual_seed(0)
        _plot_schedule(plt, path, schedule, base, temperature, p, taus)


def _plot_schedule(plt, path, schedule, base, temperature, p, taus):
    T = base.shape[1]
    if T == 2:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        if schedule in ("annealed", "fixed"):
            lam = np.stack([sample_preferences(schedule, base, float(t), temperature, p).numpy()[:, 0] for t in taus])
            ax.plot(taus, lam, lw=1.5)
        else:
            for t in taus[::2]:
                lam = sample_preferences(schedule, base, float(t), temperature, p).numpy()[:, 0]
                ax.scatter(np.full(len(lam), t), lam, s=6, color="C0")
        ax.set_xlabel("training progress tau")
        ax.set_ylabel("lambda_1")
        ax.set_ylim(-0.02, 1.02)
        knob = f", p = {p:g}" if "dirichlet" in schedule else f", T_max = {temperature:g}"
        ax.set_title(f"{schedule} schedule, M = {base.shape[0]}{knob}", fontsize=9)
    elif T == 3:
        snaps = [0.0, 0.1, 0.25, 0.5, 1.0]
        fig, axes = plt.subplots(1, len(snaps), figsize=(3 * len(snaps), 3.2))
        for ax, t in zip(axes, snaps):
            lam = sample_preferences(schedule, base, t, temperature, p).numpy()
            x, y = _ternary(lam)
            ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], "k-", lw=0.8)
            ax.scatter(x, y, s=20)
            ax.set_title(f"tau = {t:g}", fontsize=9)
            ax.set_aspect("equal")
            ax.axis("off")
    else:
        return
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pseudo(path: str, pseudo: list[dict], tasks) -> None:
    """Figure 5: each task's primary metric at the pseudo-preferences."""
    plt = _plt()
    labels = [f"{e['label']}\n{tuple(round(v, 2) for v in e['preference'])}" if len(tasks) <= 3 else e["label"] for e in pseudo]
    x = np.arange(len(pseudo))
    w = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(pseudo)), 3.8))
    for i, t in enumerate(tasks):
        ax.bar(x + (i - (len(tasks) - 1) / 2) * w, [e["tasks"][t.name][t.primary] for e in pseudo], w, label=f"{t.name} {t.primary}")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title("pseudo-preferences (section 5.4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_val_fronts(path: str, history: list[tuple[int, list[dict]]], tasks) -> None:
    """Validation fronts epoch by epoch (Figure 4, middle)."""
    if len(tasks) != 2 or not history:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    cmap = plt.get_cmap("plasma")
    for k, (epoch, front) in enumerate(history):
        P = _harness().front_points(front, tasks)[0]
        ax.plot(P[:, 0], P[:, 1], "o-", ms=3, lw=1, color=cmap(k / max(len(history) - 1, 1)), label=f"epoch {epoch + 1}")
    ax.set_xlabel(f"{tasks[0].name} {tasks[0].primary} (val)")
    ax.set_ylabel(f"{tasks[1].name} {tasks[1].primary} (val)")
    if len(history) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Parameter overhead of the paper's backbones (no data needed)
# ----------------------------------------------------------------------------------------------
def overhead_report() -> list[dict]:
    """Delta_p% of PaLoRA on LeNet (MultiMNIST, r = 1), SegNet on Cityscapes (2 tasks, r = 4) and
    NYUv2 (3 tasks, r = 4) shapes, next to the paper's 12.5%, 4.2% and 6.3%."""
    H = _harness()
    cases = [("multimnist", "lenet", 1, (1, 28, 28), [H.task("left", "class", 10), H.task("right", "class", 10)]),
             ("cityscapes", "segnet", 4, (3, 128, 256), [H.task("segmentation", "seg", 7), H.task("depth", "depth", 1)]),
             ("nyuv2", "segnet", 4, (3, 288, 384), [H.task("segmentation", "seg", 13), H.task("depth", "depth", 1),
                                                    H.task("normal", "normal", 3)])]
    rows = []
    for ds, name, r, shape, tasks in cases:
        data = SimpleNamespace(tasks=tasks, num_tasks=len(tasks), input_shape=shape, default_model=name)
        model = palora_wrap(H.build_model(name, data), len(tasks), r, 1.0)
        o = parameter_overhead(model)
        rows.append({"dataset": ds, "model": name, "rank": r, "tasks": len(tasks), **o,
                     "paper_delta_p_percent": PAPER_DELTA_P[(ds, name, r)]})
        del model
    return rows


def print_overhead_report() -> list[dict]:
    """--overhead-report: the rows of overhead_report as a table."""
    rows = overhead_report()
    print(f"{'dataset':<11} {'model':<7} {'r':>2} {'T':>2} {'base':>11} {'adapters':>10} {'Delta_p%':>9} {'paper':>6}")
    for r in rows:
        print(f"{r['dataset']:<11} {r['model']:<7} {r['rank']:>2} {r['tasks']:>2} {r['base']:>11,} {r['adapters']:>10,} "
              f"{r['delta_p_percent']:>8.2f}% {r['paper_delta_p_percent']:>5.1f}%")
    return rows


# ----------------------------------------------------------------------------------------------
# Flag checks, the test-time report, main
# ----------------------------------------------------------------------------------------------
def _validate(args) -> None:
    H = _harness()
    if args.rank is not None and args.rank < 1:
        raise H.UsageError(f"--rank must be a positive integer (got {args.rank})")
    if args.scaling is not None and not (args.scaling > 0 and math.isfinite(args.scaling)):
        raise H.UsageError(f"--scaling must be a positive number (got {args.scaling})")
    if args.num_prefs is not None and args.num_prefs < 1:
        raise H.UsageError(f"--num-prefs must be a positive integer (got {args.num_prefs})")
    if args.temperature is not None and not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise H.UsageError(f"--temperature must be a positive number (got {args.temperature})")
    if not (args.concentration > 0 and math.isfinite(args.concentration)):
        raise H.UsageError(f"--concentration must be a positive number (got {args.concentration})")
    if not (0 <= args.epsilon < 0.5):
        raise H.UsageError(f"--epsilon must be in [0, 1/T) (got {args.epsilon})")
    if args.adapter_lr_mult is not None and not (args.adapter_lr_mult > 0 and math.isfinite(args.adapter_lr_mult)):
        raise H.UsageError(f"--adapter-lr-mult must be a positive number (got {args.adapter_lr_mult})")
    if args.eval_every is not None and args.eval_every < 1:
        raise H.UsageError(f"--eval-every must be a positive integer (got {args.eval_every})")
    if args.init_ckpt is not None and not os.path.isfile(args.init_ckpt):
        raise H.UsageError(f"--init-ckpt {args.init_ckpt}: no such file (train one first, e.g. python methods/baselines.py --method ls)")


def _check(args, data) -> None:
    """The flags that depend on the tasks (Run calls it before --out is touched)."""
    H, T = _harness(), data.num_tasks
    H.check_front_arguments(args, data)
    if args.epsilon * T >= 1:
        raise H.UsageError(f"--epsilon must be below 1/T = {1 / T:.3g} for {T} tasks (got {args.epsilon})")
    schedule_base(args, T)  # --num-prefs must be a lattice size for a deterministic schedule


def report(run, model: nn.Module, evaluate, grid, S: dict, overhead: dict, base_prefs: torch.Tensor | None) -> dict:
    """Test: the model selected on validation (--select best), the grid front and its centre, the
    pseudo-preferences (section 5.4, Figure 5), theta_0 of an expansion; the plots; metrics.json."""
    H, args, tasks = _harness(), run.args, run.data.tasks
    selected_epoch = run.best.restore(model.load_state_dict)
    rep = H.front_report(run, evaluate, grid, args.hv_ref_values)
    labels, pseudo_prefs = zip(*pseudo_preferences(len(tasks)))
    pseudo = [{"label": lbl, **e} for lbl, e in zip(labels, evaluate(pseudo_prefs, "test"))]
    init, expansion = S["init_metrics"], None
    if args.init_ckpt is not None:  # theta_0's own point, under the front's hypervolume reference
        P0 = np.array([[init[t.name][t.primary] for t in tasks]])
        hv0 = H.hypervolume(P0, H.hv_reference(tasks, args.hv_ref_values), maximize=[t.metrics[0][1] for t in tasks])
        expansion = {"init_ckpt": os.path.abspath(args.init_ckpt), "init": {"tasks": init, "hypervolume": hv0}}
    title = f"PaLoRA {args.dataset} seed {args.seed} (test)\n" + H.front_caption(rep)
    run.guarded("front.png", plot_front, run.path("front.png"), rep["front"], tasks, centre=rep["tasks"], init=init, title=title)
    run.guarded("pseudo_preferences.png", plot_pseudo, run.path("pseudo_preferences.png"), pseudo, tasks)
    run.guarded("val_fronts.png", plot_val_fronts, run.path("val_fronts.png"), S["history"], tasks)
    out = run.finish({**rep, "pseudo_preferences": pseudo, "parameters": overhead, "delta_p_percent": overhead["delta_p_percent"],
                      "selected_epoch": selected_epoch,
                      "schedule": {"name": args.schedule, "num_prefs": args.num_prefs, "temperature": args.temperature,
                                   "epsilon": args.epsilon, "concentration": args.concentration,
                                   "base_preferences": base_prefs.tolist() if base_prefs is not None else None},
                      "rank": args.rank, "scaling": args.scaling, "balance": args.balance, "model": run.model_name,
                      "expansion": expansion})
    if not args.quiet:
        paper = overhead["paper_delta_p_percent"]
        print(f"[palora] front: {len(rep['front'])} points, hypervolume={_fmt(out['hypervolume'])}, non-dominated={out['non_dominated']}, "
              f"spearman={_fmt(out['spearman'])}, Delta_p={overhead['delta_p_percent']:.2f}%"
              + (f" (paper: {paper}%)" if paper is not None else ""), flush=True)
    return out


def main(argv=None):
    H = _harness()
    args = parse_args(argv)
    if args.overhead_report:
        return print_overhead_report()
    _validate(args)
    expansion = args.init_ckpt is not None
    run = H.Run(args, "palora", method_defaults(expansion), check=_check)
    data, T, dev = run.data, run.data.num_tasks, run.device
    base = schedule_base(args, T)  # lambda_0 of Eq. 2; a Dirichlet schedule uses only the shape (M, T)
    base_prefs = base if base is not None else torch.full((args.num_prefs, T), 1.0 / T, dtype=torch.float64)
    run.write_config({"resolved": {k: getattr(args, k) for k in RESOLVED},
                      "base_preferences": base.tolist() if base is not None else None})
    model, overhead = build(args, run, expansion)
    trainable = [p for p in model.parameters() if p.requires_grad]
    shared_ids = {id(p) for p in model.shared_parameters()}
    groups = [{"params": adapter_parameters(model), "lr": args.lr * args.adapter_lr_mult}]
    if not expansion:  # an expansion trains only the adapters (section 5.3)
        groups.insert(0, {"params": base_parameters(model)})
    opt, sched = run.make_optimizer(groups)
    run.track(model=model, opt=opt, sched=sched)
    S = run.values(history=[], init_metrics=None)
    evaluate = functools.partial(evaluate_at, run, model)
    if expansion and S["init_metrics"] is None:  # theta_0 itself (the adapters are zero, so any lambda gives the base model)
        S["init_metrics"] = evaluate([[1.0 / T] * T], "test")[0]["tasks"]
    if not run.finished_before:
        plot_schedule(run.path("schedule.png"), args.schedule, base_prefs, args.temperature, args.concentration)

    steps_total = args.epochs * run.num_batches("train")  # tau = (step + 1) / steps_total (official)
    grid = H.evaluation_grid(T, args.grid_points)
    for epoch in run.epochs():
        set_train_mode(model, expansion)
        sums, n, prefs = torch.zeros(T, device=dev), 0, None
        for x, ys in run.progress(run.batches("train", epoch), f"palora epoch {epoch + 1}", run.num_batches()):
            tau = min(1.0, (run.global_step + 1) / steps_total)
            prefs = sample_preferences(args.schedule, base_prefs, tau, args.temperature, args.concentration)
            opt.zero_grad(set_to_none=True)
            for lam in prefs:  # M forward passes, one per preference (section 4.1)
                set_preference(model, lam)
                with run.autocast():
                    losses = run.losses(model(x), ys).float()
                backward_pass(losses, lam, args.balance, trainable, shared_ids)
                sums += losses.detach() / len(prefs)
            H.clip_shared(model, args.clip_grad)
            opt.step()
            n += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        row = train_row(run, sums, n, steps_total, prefs)
        if run.eval_due(epoch):  # the front on validation, its centre; --select best keeps the best front score
            cols, val_front = H.front_validation(run, evaluate, grid, epoch, S["history"], model, args.hv_ref_values)
            row.update(cols)
            row.update(H.flat_metrics("val_centre", H.front_centre(val_front, evaluate, "val")))
        run.log_epoch(epoch, row)
        run.checkpoint(epoch, finished=epoch + 1 == args.epochs)
    return report(run, model, evaluate, grid, S, overhead, base)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the suite's root: common/
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import palora) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
