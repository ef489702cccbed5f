"""EXTRA: mode connectivity with NURBS curves for multi-task learning.

Zhou, Meng, Wu, Zhao, Miao, "Exploring Tradeoffs through Mode Connectivity for Multi-Task
Learning" (EXTRA; official code github.com/zzpustc/EXTRA, scene-understanding part only).

Two stages (section 3.3):
  1. Endpoints Theta_1, Theta_2: two networks trained either as single-task models (--endpoints stl,
     the paper's section 3.3) or with an MTL rule of common/aggregators.py (--endpoints ls: EXTRA-L,
     --endpoints ls fairgrad: EXTRA-F, --endpoints ls cagrad: EXTRA-C; one name trains both
     endpoints with it from two seeds), or loaded from checkpoints (--endpoint-ckpt A B).
  2. A curve C(t; theta), t in [0, 1], with C(0) = Theta_1 and C(1) = Theta_2 fixed and K - 2
     trainable interior control points (initialised evenly on the segment Theta_1 -> Theta_2):
       Eq. 4  NURBS  C(t) = sum_i N_{i,p}(t) w_i theta_i / sum_j N_{j,p}(t) w_j
       Eq. 5  B-spline basis N_{i,p} by the Cox-de Boor recursion (vectorised over t)
     trained on
       Eq. 1  L_T = E_{t~U[0,1]} [ mean task loss at C(t) + lambda R_reg ],  R_reg = ||C(t)||^2 / 2
       Eq. 2  R_o = 1/2 [ exp((L_1(t1) - L_1(t2)) (t2 - t1)) + exp((L_2(t1) - L_2(t2)) (t1 - t2)) ]
       Eq. 3  J = L_T + alpha R_o                                    (alpha = 0.5, --alpha)
     and, with more than two tasks (section 5.3), three task clusters E1, E2, E3: the endpoints are
     tailored to E1 and E2, L_1 / L_2 of Eq. 2 are the mean losses of E1 / E2, and E3 is aligned at
     the centre of the curve by
       Eq. 6  R_align = exp(-|t - 1/2|) L_r                          (L_r: mean loss of E3)
       Eq. 7  J = L_T + alpha R_o + R_align
     For K = 3 tasks the clusters are the tasks themselves; for more tasks an e-epoch warm-up (LS on
     all tasks) collects the mean cosine similarity A_ij of the task gradients on the shared
     parameters and spectral clustering (Ng et al. 2001, scikit-learn) splits the tasks in 3
     (--grouping kmeans|random for the paper's Figure 7).
Every sampled point is a functional call of the backbone with the parameters C(t), so gradients reach
every trainable control point and weight and nothing else. Evaluation sweeps a grid of t (front,
Figure 4 e-h style plots) and reports t = 1/2 on cityscapes / nyuv2 (appendix A.1) and the
validation-selected t elsewhere (celeba, the MultiMNIST family).

Decisions where the paper is silent or the official code differs (REFERENCE_NOTES.md):
- Knots: clamped, uniform interior knots, degree p = 3 as the official code ([0,0,0,0,.5,1,1,1,1]
  for 5 points), so C(0) and C(1) are exactly the endpoints. The official basis is 0 everywhere at
  t = 1 (half-open spans): here the last non-empty span is closed, so C(1) = Theta_2. With K <= p
  control points a degree-p clamped spline does not exist; the degree is lowered to K - 1 (a rational
  Bezier curve: K = 3 is a rational quadratic), where the official code silently drops basis functions.
- Weights: w_i = softplus(rho_i) > 0, initialised to 1 (the plain B-spline). The official weights
  start U(0, 1) and are unconstrained, so they can turn negative and the denominator of Eq. 4 can
  vanish.
- Interior control points start on the segment between the endpoints (Garipov et al.); the official
  script leaves that initialisation commented out (random interior points).
- L_T: the mean task loss of each of the two samples t1, t2 of Eq. 2 (each is an unbiased sample of
  Eq. 1; reusing them costs no extra forward pass). The official Cityscapes script instead weights
  depth x10, multiplies R_o by the mean of exp(-|t - 1/2|) instead of alpha and never adds its L2
  term; here Eq. 1-3 as written. The L2 weight lambda of Eq. 1 defaults to 0, the official code's
  behaviour (the paper gives no value and the code never adds the term): over all 41.2M parameters
  of a freshly initialised Cityscapes MTAN, Garipov et al.'s 5e-4 adds 5e-4 ||theta||^2 / 2 = 10.4
  to task losses of about 1 (--l2 sets it).
- Many tasks: L_T averages the tasks of E1 and E2, so E3's only weight along the curve is
  exp(-|t - 1/2|) and its loss is lowest at the centre (Eq. 6's stated purpose); with
  --align-weight 0 (the ablation without R_align) E3 joins L_T instead so that no task is dropped.
  The cosine matrix A in [-1, 1] becomes the non-negative affinity W = (1 + A) / 2 (monotone: keeps
  the order of all pairs, conflicting ones included, where max(A, 0) would merge every conflict into
  0); E1, E2 are the two clusters with the lowest mean affinity between them (most conflicting), E3
  the third. "kmeans" clusters the warm-up gradients themselves: kernel k-means with the Gram matrix
  A of the unit-normalised per-batch gradients, no d-dimensional vectors stored.
- BatchNorm: a point C(t) has no running statistics of its own; before evaluating any t they are
  re-estimated over the whole training set (cumulative average), as in Garipov et al. and the
  official code's evaluation; --bn-batches N uses only N shuffled training batches (smoke runs).
- --max-steps N is the total of the run (DESIGN.md), shared by its training phases (warm-up, each
  endpoint, the curve): each phase, when it starts, gets the steps left divided by the phases left
  (the last one the remainder), and at least one step, so that a smoke run goes through all of
  them (N below the number of phases: one step each); --select best keeps each endpoint's best validation epoch (the curve
  keeps its last epoch: the choice of t replaces model selection there).

    python methods/extra_nurbs.py                                # EXTRA-L on multimnist-lite, offline
    python methods/extra_nurbs.py --endpoints ls fairgrad        # EXTRA-F
    python methods/extra_nurbs.py --endpoints stl --curve bezier # section 3.3 / Figure 4 ablation
    python methods/extra_nurbs.py --dataset cityscapes --endpoint-ckpt ls_a.pt ls_b.pt

The file has two halves. The method half (torch and numpy; scikit-learn only for spectral_groups) is
everything above the "runner" banner: the basis functions and the Curve (Eq. 4-5), FlatParams and
model_at (a network at C(t)), extra_objective (Eq. 1-3, 6-7) and the task grouping (section 5.3). It
works on any nn.Module, so this one file can be copied into another project: the curve spans all of
the module's parameters (shared trunk and heads), the grouping takes the shared parameters the caller
names. The runner half below the banner is this suite's command line and training loop; it imports the
suite's common/ package only when it runs.
"""
from __future__ import annotations

import copy
import importlib.util
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call


# ----------------------------------------------------------------------------------------------
# The curve: Eq. 4-5 (NURBS), Bezier and polygonal chain (Garipov et al. 2018)
# ----------------------------------------------------------------------------------------------
def clamped_knots(num_points: int, degree: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Clamped knot vector with uniform interior knots: p + 1 zeros, K - p - 1 knots j / (K - p),
    p + 1 ones (K + p + 1 knots; [0,0,0,0,.5,1,1,1,1] for K = 5, p = 3). The Curve builds it in the
    dtype and on the device of its control points (no float64 on an accelerator: MPS has none)."""
    inner = [j / (num_points - degree) for j in range(1, num_points - degree)]
    return torch.tensor([0.0] * (degree + 1) + inner + [1.0] * (degree + 1), dtype=dtype, device=device)


def bspline_basis(t: torch.Tensor, knots: torch.Tensor, degree: int) -> torch.Tensor:
    """Eq. 5, the Cox-de Boor recursion for all basis functions and all t at once: (n,) -> (n, K).

    The paper's N_{i,1} (order 1) is the degree-0 indicator of [u_i, u_{i+1}); 0/0 terms are 0. At
    t = u_max the last non-empty span is closed on the right, so the basis is a partition of unity
    on the whole of [0, 1] and a clamped curve ends exactly at its last control point.
    Computed in the dtype and on the device of `knots`, with no host round-trip."""
    u = knots
    t = torch.as_tensor(t).reshape(-1, 1).to(device=u.device, dtype=u.dtype)
    N = ((u[:-1] <= t) & (t < u[1:])).to(u.dtype)  # degree 0, (n, m - 1)
    nonempty = u[:-1] < u[1:]
    last = nonempty & (nonempty.flip(0).cumsum(0).flip(0) == 1)  # the last non-empty span, as a mask
    N = torch.where(last & (t >= u[-1]), torch.ones_like(N), N)
    for k in range(1, degree + 1):
        i = torch.arange(N.shape[1] - 1, device=u.device)
        d1, d2 = u[i + k] - u[i], u[i + k + 1] - u[i + 1]
        a = torch.where(d1 > 0, (t - u[i]) / torch.where(d1 > 0, d1, torch.ones_like(d1)), torch.zeros_like(t - u[i]))
        b = torch.where(d2 > 0, (u[i + k + 1] - t) / torch.where(d2 > 0, d2, torch.ones_like(d2)), torch.zeros_like(t - u[i]))
        N = a * N[:, :-1] + b * N[:, 1:]
    return N


def nurbs_coefficients(t: torch.Tensor, knots: torch.Tensor, degree: int, w: torch.Tensor) -> torch.Tensor:
    """Eq. 4: R_i(t) = N_{i,p}(t) w_i / sum_j N_{j,p}(t) w_j, (n, K); differentiable in w."""
    N = bspline_basis(t, knots.to(device=w.device, dtype=w.dtype), degree)
    num = N * w
    return num / num.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def _curve_t(t: torch.Tensor) -> torch.Tensor:
    """t as an (n, 1) floating column, on its own device and in its own (floating) dtype."""
    t = torch.as_tensor(t)
    return t.reshape(-1, 1).to(t.dtype if t.is_floating_point() else torch.get_default_dtype())


def bezier_coefficients(t: torch.Tensor, num_points: int) -> torch.Tensor:
    """Bernstein polynomials binom(K-1, i) t^i (1 - t)^(K-1-i), (n, K), in the dtype and on the device of t."""
    n = num_points - 1
    t = _curve_t(t)
    i = torch.arange(num_points, dtype=t.dtype, device=t.device)
    binom = torch.tensor([math.comb(n, k) for k in range(num_points)], dtype=t.dtype, device=t.device)
    return binom * t ** i * (1 - t) ** (n - i)


def polychain_coefficients(t: torch.Tensor, num_points: int) -> torch.Tensor:
    """Piecewise-linear hat functions centred on t = i / (K - 1), (n, K), in the dtype and on the device of t."""
    t = _curve_t(t)
    i = torch.arange(num_points, dtype=t.dtype, device=t.device)
    return (1 - (t * (num_points - 1) - i).abs()).clamp_min(0)


class Curve(nn.Module):
    """A curve in the flat parameter space of a backbone between two fixed endpoints.

    Control points theta_1 = `start` and theta_K = `end` are buffers; theta_2..theta_{K-1} (`inner`,
    (K - 2, d)) are trainable and start evenly spaced on the segment; NURBS weights w = softplus(rho)."""

    def __init__(self, start: torch.Tensor, end: torch.Tensor, kind: str = "nurbs", num_points: int = 3, degree: int = 3):
        super().__init__()
        if num_points < 3:
            raise ValueError("a curve needs at least 3 control points")
        self.kind, self.num_points = kind, num_points
        self.degree = min(degree, num_points - 1)
        self.register_buffer("start", start.detach().clone())
        self.register_buffer("end", end.detach().clone())
        frac = (torch.arange(1, num_points - 1, dtype=start.dtype, device=start.device) / (num_points - 1))[:, None]
        self.inner = nn.Parameter((1 - frac) * self.start + frac * self.end)
        if kind == "nurbs":
            self.register_buffer("knots", clamped_knots(num_points, self.degree, start.dtype, start.device))
            self.rho = nn.Parameter(torch.full((num_points,), math.log(math.e - 1.0), dtype=start.dtype, device=start.device))

    def weights(self) -> torch.Tensor | None:
        return F.softplus(self.rho) if self.kind == "nurbs" else None

    def coefficients(self, t) -> torch.Tensor:
        """(n, K) coefficients of the control points at the n values of t, computed on the device and in
        the dtype of the curve's parameters (t given as numbers or a tensor on any device)."""
        t = torch.as_tensor(t, dtype=self.inner.dtype, device=self.inner.device).reshape(-1)
        if self.kind == "nurbs":
            return nurbs_coefficients(t, self.knots, self.degree, self.weights())
        return bezier_coefficients(t, self.num_points) if self.kind == "bezier" else polychain_coefficients(t, self.num_points)

    def point(self, t) -> torch.Tensor:
        """C(t) as a flat parameter vector (d,)."""
        c = self.coefficients(t)[0]
        return c[0] * self.start + c[-1] * self.end + c[1:-1] @ self.inner


class FlatParams:
    """Flat vector <-> named parameters of a backbone (the order of named_parameters())."""

    def __init__(self, model: nn.Module):
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]

    def flatten(self, model: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: v.view(s) for n, v, s in zip(self.names, torch.split(vec, self.sizes), self.shapes)}

    def call(self, model: nn.Module, vec: torch.Tensor, *inputs):
        """model(*inputs) with its parameters replaced by the flat vector `vec` (its buffers are the
        model's own); differentiable in `vec`, so gradients of the losses at C(t) reach the curve."""
        return functional_call(model, self.unflatten(vec), inputs)


@torch.no_grad()
def model_at(template: nn.Module, curve: Curve, t: float) -> nn.Module:
    """A copy of `template` whose parameters are C(t). Its BatchNorm running statistics are still the
    template's: a point of the curve has none of its own, so re-estimate them at C(t) on training
    data before evaluating (Garipov et al.; the runner below does it over the training set)."""
    model = copy.deepcopy(template)
    torch.nn.utils.vector_to_parameters(curve.point(t).to(next(model.parameters()).dtype), model.parameters())
    return model


# ----------------------------------------------------------------------------------------------
# The objectives: Eq. 1-3, 6-7
# ----------------------------------------------------------------------------------------------
def order_regularizer(l1_t1, l1_t2, l2_t1, l2_t2, t1, t2) -> torch.Tensor:
    """Eq. 2: below 1 when L_1 grows and L_2 shrinks from t1 to t2 (the endpoint at t = 0 is the
    task-1 end), above 1 when the order is reversed."""
    return 0.5 * (torch.exp((l1_t1 - l1_t2) * (t2 - t1)) + torch.exp((l2_t1 - l2_t2) * (t1 - t2)))


def align_regularizer(t, l_r) -> torch.Tensor:
    """Eq. 6: R_align = exp(-|t - 1/2|) L_r."""
    return math.exp(-abs(float(t) - 0.5)) * l_r


def extra_objective(losses1, losses2, t1: float, t2: float, groups, alpha: float = 0.5, align_weight: float = 1.0,
                    l2: float = 0.0, sq1=0.0, sq2=0.0) -> tuple[torch.Tensor, dict]:
    """J of Eq. 3 / Eq. 7 from the task losses (T,) at C(t1) and C(t2) and ||C(t)||^2.

    groups = (E1, E2, E3) lists of task indices; L_T averages E1 + E2 (+ E3 when align_weight = 0)
    over both samples, L_1 / L_2 of Eq. 2 are the mean losses of E1 / E2, L_r of Eq. 6 that of E3."""
    e1, e2, e3 = (list(g) for g in groups)
    lt_tasks = e1 + e2 + (e3 if align_weight == 0 else [])
    L_T = 0.5 * (losses1[lt_tasks].mean() + losses2[lt_tasks].mean()) + l2 * 0.25 * (sq1 + sq2)  # Eq. 1
    R_o = order_regularizer(losses1[e1].mean(), losses2[e1].mean(), losses1[e2].mean(), losses2[e2].mean(), t1, t2)  # Eq. 2
    J = L_T + alpha * R_o  # Eq. 3
    R_align = torch.zeros((), device=losses1.device)
    if e3 and align_weight > 0:
        R_align = 0.5 * (align_regularizer(t1, losses1[e3].mean()) + align_regularizer(t2, losses2[e3].mean()))  # Eq. 6
        J = J + align_weight * R_align  # Eq. 7
    # detached 0-dim tensors on the losses' device: the training loop sums them there and reads them once per epoch
    return J, {"L_T": L_T.detach(), "R_o": R_o.detach(), "R_align": R_align.detach()}


# ----------------------------------------------------------------------------------------------
# Task grouping for many tasks (section 5.3, appendix B.2)
# ----------------------------------------------------------------------------------------------
def cosine_matrix(G: torch.Tensor) -> torch.Tensor:
    """A_ij = g_i^T g_j / (|g_i| |g_j|) for the rows of G (T, d)."""
    U = G / G.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return U @ U.T


def gradient_cosines(losses: torch.Tensor, shared) -> torch.Tensor:
    """One batch's term of the affinity A of section 5.3: the cosine matrix (T, T) of the task gradients
    on the `shared` parameters (the caller names them; an unused one counts as a zero gradient). The
    graph is kept, so the caller's own backward of the same losses can follow."""
    shared = list(shared)
    rows = []
    for loss in losses:  # one backward per task
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(q)).reshape(-1) for g, q in zip(grads, shared)]))
    return cosine_matrix(torch.stack(rows).detach().float())


def spectral_groups(A: np.ndarray, k: int = 3, seed: int = 0) -> np.ndarray:
    """Spectral clustering (Ng, Jordan, Weiss 2001) of the task graph with affinity (1 + A) / 2."""
    from sklearn.cluster import SpectralClustering

    W = (1.0 + np.asarray(A, dtype=float)) / 2.0
    W = np.clip((W + W.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(W, 1.0)
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed, n_init=10,
                              assign_labels="kmeans").fit_predict(W)


def kmeans_groups(A: np.ndarray, k: int = 3, seed: int = 0, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """K-means of the unit-normalised warm-up gradients, run as kernel k-means on their Gram matrix
    A (A is their mean cosine similarity, i.e. the Gram matrix of the per-batch unit gradients
    concatenated and scaled by 1/sqrt(#batches))."""
    K = np.asarray(A, dtype=float)
    n = len(K)
    rng = np.random.default_rng(seed)
    diag = np.diag(K)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = [int(rng.integers(n))]  # k-means++ seeding in feature space
        for _ in range(1, k):
            d = np.min([diag - 2 * K[:, c] + K[c, c] for c in centres], axis=0).clip(min=0)
            centres.append(int(rng.choice(n, p=d / d.sum())) if d.sum() > 0 else int(rng.integers(n)))
        labels = np.argmin(np.stack([diag - 2 * K[:, c] + K[c, c] for c in centres], 1), 1)
        for _ in range(iters):
            dist = np.full((n, k), np.inf)
            for c in range(k):
                m = labels == c
                if m.any():
                    dist[:, c] = diag - 2 * K[:, m].mean(1) + K[np.ix_(m, m)].mean()
            new = np.argmin(dist, 1)
            if np.array_equal(new, labels):
                break
            labels = new
        inertia = float(dist[np.arange(n), labels].sum())
        if inertia < best_inertia:
            best, best_inertia = labels.copy(), inertia
    return best


def random_groups(num_tasks: int, k: int = 3, seed: int = 0) -> np.ndarray:
    """Uniform division of a random permutation of the tasks into k near-equal groups."""
    perm = np.random.default_rng(seed).permutation(num_tasks)
    labels = np.empty(num_tasks, dtype=int)
    for c, part in enumerate(np.array_split(perm, k)):
        labels[part] = c
    return labels


def order_groups(labels: np.ndarray, A: np.ndarray | None) -> tuple[list[int], list[int], list[int]]:
    """(E1, E2, E3) from cluster labels: E1 and E2 are the two clusters whose tasks agree least
    (lowest mean cosine similarity between them), E3 the rest; ties by smallest task index."""
    clusters = sorted([sorted(np.nonzero(labels == c)[0].tolist()) for c in np.unique(labels)], key=lambda g: g[0])
    if len(clusters) == 1:  # degenerate clustering: split the single cluster in two
        g = clusters[0]
        clusters = [g[: len(g) // 2], g[len(g) // 2:]]
    best, pair = np.inf, (0, 1)
    for i in range(len(clusters)):
        for j in range(i + 1, len(clusters)):
            s = float(np.asarray(A)[np.ix_(clusters[i], clusters[j])].mean()) if A is not None else 0.0
            if s < best - 1e-12:
                best, pair = s, (i, j)
    e1, e2 = clusters[pair[0]], clusters[pair[1]]
    e3 = sorted(t for c, g in enumerate(clusters) if c not in pair for t in g)
    return e1, e2, e3


# ======================= runner: command line and training loop (needs common/) =======================
# Everything below is this suite's script: it reads the harness (data, models, aggregation rules, run
# folders) from common/, imported when a runner function is called, never when the module is imported.


def _curve_epochs(args, data):
    """--epochs"""
    return args.epochs


def _dataset_backbone(args, data):
    """the dataset's backbone"""
    return data.default_model if data is not None else None


# What every flag left unset resolves to (common.train.resolved_defaults: the harness's per-dataset
# training settings, then the "*" row, then the dataset's row); --help prints it.
# Appendix A.2. Cityscapes / NYUv2: MTAN, Adam 1e-4 halved after 100 epochs, 200 epochs, batch 8 / 2,
# 4 / 5 control points (2 / 3 trainable; the official Cityscapes script used 5), t = 1/2 (A.1).
# CelebA: 9-layer CNN, Adam 3e-4, 15 epochs, batch 256, 3 control points; MultiMNIST (PaMaL protocol):
# LeNet, Adam 1e-3, batch 256, 10 epochs, 3 control points; both select t on the validation split.
# grid: points of the t sweep (the official code sweeps 60; fewer on the expensive datasets);
# warmup_epochs: e of section 5.3 (not given in the paper); endpoint_epochs: each endpoint trains as
# long as the curve; model: the dataset's backbone unless named.
DEFAULTS = {
    "*": dict(control_points=3, grid=21, eval_t="val", warmup_epochs=1, select="last",
              endpoint_epochs=_curve_epochs, model=_dataset_backbone),
    "multimnist-lite": dict(epochs=10, batch_size=256, lr=1e-3),
    "multimnist": dict(epochs=10, batch_size=256, lr=1e-3),
    "multifashion": dict(epochs=10, batch_size=256, lr=1e-3),
    "multifashion-mnist": dict(epochs=10, batch_size=256, lr=1e-3),
    "celeba": dict(epochs=15, batch_size=256, lr=3e-4, control_points=3, grid=11, warmup_epochs=1),
    "cityscapes": dict(epochs=200, batch_size=8, lr=1e-4, scheduler=(100, 0.5), control_points=4, grid=11,
                       eval_t="0.5", model="mtan"),
    "nyuv2": dict(epochs=200, batch_size=2, lr=1e-4, scheduler=(100, 0.5), control_points=5, grid=11,
                  eval_t="0.5", model="mtan"),
}


def _harness() -> None:
    """Put the suite's root (the folder above methods/) on sys.path, where the runner imports common/ from."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    if importlib.util.find_spec("common") is None:  # this file was copied out of the suite
        print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package, found next to "
              "the methods/ folder; the method half (import extra_nurbs) works without it", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    _harness()
    from common.train import base_parser, defaults_table

    p = base_parser("extra_nurbs", __doc__)
    p.epilog = defaults_table(DEFAULTS)
    table = "(default: per dataset, see the table below)"
    g = p.add_argument_group("EXTRA: stage 1, the endpoints")
    g.add_argument("--endpoints", nargs="+", default=["ls"], metavar="RULE",
                   help="how the endpoints are trained: 'stl' (each on its own task / cluster) or an MTL rule of "
                        "common/aggregators.py; one name trains both endpoints (two seeds), two names one each "
                        "(default ls = EXTRA-L; 'ls fairgrad' = EXTRA-F; 'ls cagrad' = EXTRA-C)")
    g.add_argument("--endpoint-tasks", choices=["auto", "all", "groups"], default="auto",
                   help="tasks each endpoint trains on: all tasks, or endpoint 1 on cluster E1 and endpoint 2 on E2 "
                        "(default auto: groups for stl and for more than 3 tasks, section 5.3; all otherwise)")
    g.add_argument("--endpoint-ckpt", nargs=2, default=None, metavar=("A", "B"),
                   help="load the endpoints instead of training them: checkpoint.pt files of methods/baselines.py or "
                        "stl-style runs (['state']['tracked']['model'] or ['state']['model']) or plain state_dicts of "
                        "the same backbone")
    g.add_argument("--endpoint-epochs", type=int, default=None, help="epochs of each endpoint (default: --epochs)")
    g.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter of the endpoint rule, e.g. --hyper alpha=2 (repeatable)")
    g = p.add_argument_group("EXTRA: stage 2, the curve")
    g.add_argument("--curve", choices=["nurbs", "bezier", "polychain"], default="nurbs",
                   help="curve family: NURBS (Eq. 4-5), Bezier or polygonal chain (Garipov et al.; Figure 4 ablation)")
    g.add_argument("--control-points", type=int, default=None,
                   help="K control points including the two fixed endpoints, K - 2 trainable " + table)
    g.add_argument("--degree", type=int, default=3, help="NURBS degree p (default 3; lowered to K - 1 when K <= p)")
    g.add_argument("--alpha", type=float, default=0.5, help="weight of the order-aware term R_o, Eq. 3 (default 0.5, B.6)")
    g.add_argument("--align-weight", type=float, default=1.0,
                   help="weight of R_align in Eq. 7 for the third cluster (default 1 as Eq. 7; 0 = ablation, E3 joins L_T)")
    g.add_argument("--l2", type=float, default=0.0,
                   help="lambda of the L2 term of Eq. 1, lambda ||C(t)||^2 / 2 (default 0, as the official code; the paper gives none)")
    g.add_argument("--grouping", choices=["spectral", "kmeans", "random"], default="spectral",
                   help="task clustering when there are more than 3 tasks (default spectral, section 5.3; Figure 7)")
    g.add_argument("--warmup-epochs", type=int, default=None, help="epochs of the gradient warm-up before clustering (default 1)")
    g = p.add_argument_group("EXTRA: evaluation")
    g.add_argument("--grid", type=int, default=None, help="points of the t sweep in [0, 1] " + table)
    g.add_argument("--eval-t", default=None,
                   help="the reported point: 'val' (the t of the grid best on validation by the suite's selection score: -Delta-m%% "
                        "against the reference, else its scale-free log form) or a number in [0, 1] " + table)
    g.add_argument("--bn-batches", type=int, default=None,
                   help="training batches used to re-estimate BatchNorm statistics at each evaluated t "
                        "(default: the whole training set, as the official code)")
    g.add_argument("--eval-every", type=int, default=1, help="validate every N epochs during training (default 1)")
    g.add_argument("--eval-batches", type=int, default=None,
                   help="evaluate at most N batches of each split per t (default: the whole split; smoke runs)")
    return p.parse_args(argv)


def parse_eval_t(value) -> float | str:
    _harness()
    from common.device import UsageError

    if str(value).strip().lower() == "val":
        return "val"
    try:
        t = float(value)
    except ValueError:
        t = float("nan")
    if not 0.0 <= t <= 1.0:
        raise UsageError(f"--eval-t must be 'val' or a number in [0, 1] (got {value!r})")
    return t


def validate(args) -> None:
    """Method flags that can be checked before anything is written to --out."""
    _harness()
    from common.aggregators import AGGREGATORS, make_aggregator
    from common.device import UsageError
    from common.train import parse_hyper

    for name in ("alpha", "align_weight", "l2"):
        v = getattr(args, name)
        if not (v >= 0 and math.isfinite(v)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {v})")
    if args.control_points is not None and args.control_points < 3:
        raise UsageError(f"--control-points must be >= 3 (two fixed endpoints and at least one trainable point; got {args.control_points})")
    if args.degree < 1:
        raise UsageError(f"--degree must be >= 1 (got {args.degree})")
    for name in ("grid", "warmup_epochs", "endpoint_epochs"):
        v = getattr(args, name)
        if v is not None and v < (2 if name == "grid" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {2 if name == 'grid' else 1} (got {v})")
    if (args.bn_batches is not None and args.bn_batches < 1) or args.eval_every < 1 or (
            args.eval_batches is not None and args.eval_batches < 1):
        raise UsageError("--bn-batches, --eval-every and --eval-batches must be positive integers")
    if args.eval_t is not None:
        parse_eval_t(args.eval_t)
    if not 1 <= len(args.endpoints) <= 2:
        raise UsageError(f"--endpoints takes one or two rules (got {len(args.endpoints)})")
    known = ["stl"] + sorted(AGGREGATORS)
    for r in args.endpoints:
        if r not in known:
            raise UsageError(f"--endpoints: unknown rule {r!r}; choose stl or one of: {', '.join(known[1:])}")
    if args.endpoint_ckpt:
        for path in args.endpoint_ckpt:
            if not os.path.isfile(path):
                raise UsageError(f"--endpoint-ckpt: no file {path!r}")
    hyper = parse_hyper(args.hyper)
    for r in set(args.endpoints):
        try:
            make_aggregator("ls" if r == "stl" else r, 2, **hyper)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--hyper for --endpoints {r}: {e}")


# ----------------------------------------------------------------------------------------------
# The run and its state
# ----------------------------------------------------------------------------------------------
def staged_run(args):
    """The harness's Run (common.train) for EXTRA's phases: inside a phase only the phase's own
    share of --max-steps counts, so every phase keeps at least one step when --max-steps is below
    the number of phases (the module docstring)."""
    from common.train import Run

    return Run(args, "extra_nurbs", DEFAULTS)


def load_endpoint(path: str, model: nn.Module) -> dict:
    _harness()
    from common.device import UsageError

    try:
        try:  # the suite's checkpoints hold tensors and plain values only
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file of older code that pickles objects: the user named it, so read it as before
            if "eights only load" not in str(e):
                raise
            blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UsageError(f"--endpoint-ckpt: cannot read {path} ({type(e).__name__})")
    sd = blob
    if isinstance(blob, dict) and "state" in blob and isinstance(blob["state"], dict):
        state = blob["state"]
        sd = state["tracked"].get("model", state) if isinstance(state.get("tracked"), dict) else state.get("model", state)
    if not isinstance(sd, dict):
        raise UsageError(f"--endpoint-ckpt: {path} holds no model state_dict")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "mismatch"
        raise UsageError(f"--endpoint-ckpt: {path} does not fit the {type(model.encoder).__name__} backbone "
                         f"of this dataset ({first[:160]}); pass --model to match it")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def stage_plan(run) -> tuple:
    """What the flags ask of the two stages: the reported t (a number or "val"), the endpoints' rules
    (one name: both endpoints, two seeds), the tasks they train on, and the phases of the run."""
    args, T = run.args, run.data.num_tasks
    eval_t = parse_eval_t(args.eval_t)
    args.eval_t = str(eval_t)
    rules = list(args.endpoints) * (2 if len(args.endpoints) == 1 else 1)
    endpoint_tasks = args.endpoint_tasks
    if endpoint_tasks == "auto":
        endpoint_tasks = "groups" if ("stl" in rules or T > 3) else "all"
    phases = ["warmup"] if T > 3 and args.grouping != "random" else []
    phases += ([] if args.endpoint_ckpt else ["endpoint1", "endpoint2"]) + ["curve"]
    run.write_config({"resolved": {"model": args.model, "control_points": args.control_points, "grid": args.grid,
                                   "eval_t": eval_t, "endpoint_rules": rules, "endpoint_tasks": endpoint_tasks}})
    return eval_t, rules, endpoint_tasks, phases


def fixed_groups(args, T: int):
    """E1, E2, E3 where no warm-up decides them: one task each for 2 or 3 tasks ("K = 3 is a special
    case where grouping is not required"), a random partition under --grouping random (Figure 7)."""
    if T <= 3:
        return [[t] for t in range(T)] + [[] for _ in range(3 - T)]
    if args.grouping == "random":
        return [[int(t) for t in g] for g in order_groups(random_groups(T, 3, args.seed), None)]
    return None


# ----------------------------------------------------------------------------------------------
# Training phases: one epoch loop, three kinds of step
# ----------------------------------------------------------------------------------------------
def train_epochs(run, epochs: int, offset: int, desc: str, module: nn.Module, opt, sched, step, end_epoch) -> None:
    """The epoch loop of every phase (warm-up, each endpoint, the curve), from the resume point.
    `step(x, ys)`: one optimisation step (gradients zeroed before); returns the T task losses to log
    (detached) and a tensor to sum over the epoch on the device, or None. After the schedule's step,
    `end_epoch(epoch, loss sums on the host, number of batches, that epoch sum)` returns the log row's
    own columns and the validation metrics (or None); then log.csv gets the row and a checkpoint."""
    for epoch in run.epochs(epochs):
        module.train()
        sums, aux_sum, n = torch.zeros(run.data.num_tasks, device=run.device), None, 0  # summed on the device
        for x, ys in run.progress(run.batches("train", epoch + offset), f"{desc} {epoch + 1}", run.num_batches()):
            opt.zero_grad(set_to_none=True)
            losses, aux = step(x, ys)
            sums += losses
            aux_sum = aux if aux_sum is None or aux is None else aux_sum + aux
            n += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        sums = sums.cpu()  # the epoch's one read of the training losses
        extra, val = end_epoch(epoch, sums, n, aux_sum)
        run.log_epoch(epoch, _row(run, sums, n, extra, val))
        run.checkpoint(epoch)


def _row(run, sums, n, extra=None, val=None):
    """A log.csv row: mean training loss per task, the curve's objective terms, validation."""
    data = run.data
    row = {f"train_loss_{t.name}": float(s / max(n, 1)) for t, s in zip(data.tasks, sums)}
    row.update({"objective": None, "R_o": None, "R_align": None})
    row.update(extra or {})
    row["val_score"] = run.selection_score(val) if val else None
    row.update({f"val_{t.name}_{t.primary}": (val[t.name][t.primary] if val else None) for t in data.tasks})
    return row


def warm_up(run, model: nn.Module) -> tuple[list, list]:
    """Section 5.3: e epochs of linear scalarisation that record the cosine similarity of the task
    gradients on the shared parameters; their mean A is clustered into E1, E2 (the endpoints'
    clusters, the most conflicting) and E3. Returns A (lists) and the groups."""
    args, T = run.args, run.data.num_tasks
    opt, sched = run.make_optimizer(model.parameters())
    run.track(model=model, opt=opt, sched=sched)
    W = run.values(A_sum=torch.zeros(T, T, dtype=torch.float64), n_A=0)
    shared = model.shared_parameters()

    def step(x, ys):
        with run.autocast():
            losses = run.losses(model(x), ys).float()
        A = gradient_cosines(losses, shared)  # task gradients on the shared parameters
        losses.mean().backward()  # LS warm-up
        opt.step()
        return losses.detach(), A

    def end_epoch(epoch, sums, n, A_epoch):
        W["A_sum"] += A_epoch.cpu().double()  # one host transfer per epoch; the running sum in float64 on the host
        W["n_A"] += n
        return {}, None

    train_epochs(run, args.warmup_epochs, 5000, "warm-up", model, opt, sched, step, end_epoch)
    A = (W["A_sum"] / max(W["n_A"], 1)).numpy()
    labels = spectral_groups(A, 3, args.seed) if args.grouping == "spectral" else kmeans_groups(A, 3, args.seed)
    return A.tolist(), [[int(t) for t in g] for g in order_groups(labels, A)]


def train_endpoint(run, model: nn.Module, k: int, rule: str, tasks: list[int]) -> dict:
    """Stage 1 (section 4.1): endpoint k trained on `tasks` by an MTL rule of common/aggregators.py
    ('stl': linear scalarisation of its cluster). Returns its weights: the last epoch's, or under
    --select best the best on validation (the suite's selection score on its tasks)."""
    from common.aggregators import RuleStep, make_aggregator
    from common.device import UsageError, move_tensors_
    from common.train import bn_frozen, parse_hyper

    args, data, dev = run.args, run.data, run.device
    try:
        agg = make_aggregator("ls" if rule == "stl" else rule, len(tasks), dataset=args.dataset, **parse_hyper(args.hyper))
    except (TypeError, ValueError) as e:
        raise UsageError(f"--hyper: {e}")
    move_tensors_(agg.parameters(), dev)
    rule_step = RuleStep.for_model(agg, model, tasks, max_norm=args.clip_grad)  # the rule on the endpoint's tasks
    opt, sched = run.make_optimizer(list(model.parameters()) + rule_step.parameters())
    run.track(model=model, rule=rule_step, opt=opt, sched=sched)
    idx = torch.tensor(tasks, device=dev)

    def recompute(x, ys):
        with bn_frozen(model), run.autocast():  # BatchNorm statistics move once per step (no_grad: after_step)
            return run.losses(model(x), ys).float()[idx]

    def step(x, ys):
        with run.autocast():
            rep = model.encoder(x)
            all_losses = run.losses(model.decode(rep), ys).float()
        rule_step.backward(all_losses[idx], rep)  # the rule's gradients, clipped
        opt.step()
        rule_step.after_step(lambda: recompute(x, ys))  # FAMO: the losses of the same batch after the step
        return all_losses.detach(), None

    def end_epoch(epoch, sums, n, _):
        rule_step.end_epoch()  # the rule's epoch_end on the mean losses of its tasks
        if not run.eval_due(epoch):
            return {}, None
        model.eval()
        val = run.evaluate(model, "val", max_batches=args.eval_batches)
        score = run.selection_score({data.tasks[t].name: val[data.tasks[t].name] for t in tasks})
        run.best.offer(score, model.state_dict(), epoch)
        return {}, val

    train_epochs(run, args.endpoint_epochs, 1000 * (k + 1), f"endpoint{k + 1} ({rule})", model, opt, sched, step, end_epoch)
    run.best.restore(model.load_state_dict)
    return {name: v.detach().clone() for name, v in model.state_dict().items()}


def curve_between(run, endpoints, build) -> tuple:
    """Stage 2's network: the backbone whose parameters are C(t) (frozen; its buffers those of
    endpoint 1), the map between it and a flat vector, and the curve from endpoint 1 to endpoint 2."""
    template = build()
    flat = FlatParams(template)
    ends = []
    for sd in endpoints:
        m = build()
        m.load_state_dict(sd)
        ends.append(flat.flatten(m))
    template.load_state_dict(endpoints[0])
    for p in template.parameters():
        p.requires_grad_(False)
    args = run.args
    return template, flat, Curve(ends[0], ends[1], args.curve, args.control_points, args.degree).to(run.device)


def train_curve(run, template: nn.Module, flat: FlatParams, curve: Curve, groups, eval_t) -> None:
    """Stage 2 (Eq. 1-3, 6-7): the control points and weights, two t ~ U[0, 1] per batch (Eq. 2)."""
    args = run.args
    opt, sched = run.make_optimizer(curve.parameters())
    run.track(curve=curve, opt=opt, sched=sched)

    def step(x, ys):
        t1, t2 = torch.rand(2).tolist()  # t ~ U[0, 1], two samples for Eq. 2
        outs = []
        for t in (t1, t2):
            theta = curve.point(t)  # Eq. 4
            with run.autocast():
                out = flat.call(template, theta, x)
                outs.append((run.losses(out, ys).float(), (theta.float() ** 2).sum()))
        J, parts = extra_objective(outs[0][0], outs[1][0], t1, t2, groups, args.alpha, args.align_weight,
                                   args.l2, outs[0][1], outs[1][1])
        J.backward()
        if args.clip_grad:
            nn.utils.clip_grad_norm_(curve.parameters(), args.clip_grad)
        opt.step()
        return 0.5 * (outs[0][0] + outs[1][0]).detach(), torch.stack([J.detach(), parts["R_o"], parts["R_align"]])

    def end_epoch(epoch, sums, n, parts_sum):
        val = None
        if run.eval_due(epoch):
            val = evaluate_point(run, template, curve, 0.5 if eval_t == "val" else eval_t, ["val"])["val"]
        return dict(zip(("objective", "R_o", "R_align"), (parts_sum.cpu() / max(n, 1)).tolist())), val

    train_epochs(run, args.epochs, 0, "curve epoch", template, opt, sched, step, end_epoch)


@torch.no_grad()
def evaluate_point(run, template: nn.Module, curve: Curve, t: float, splits) -> dict:
    """Metrics of the network at C(t) on `splits`, BatchNorm statistics re-estimated at C(t) first."""
    _harness()
    from common.train import recompute_bn_stats

    model = model_at(template, curve, t)
    recompute_bn_stats(model, model, run.batches("train", 10 ** 6, shuffle=True), run.args.bn_batches)
    model.eval()
    return {s: run.evaluate(model, s, max_batches=run.args.eval_batches) for s in splits}


# ----------------------------------------------------------------------------------------------
# Reporting: the sweep over t, the front, the plots, metrics.json and the headline
# ----------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_along_t(path, front, groups, data, selected_t, curve: Curve) -> None:
    """Figure 4 (e-h) style: task losses along t, Delta-m% (or primary metrics) along t, and the
    curve's coefficient functions R_i(t)."""
    plt = _plt()
    ts = np.array([f["t"] for f in front])
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    many = data.num_tasks > 3
    series = ([(f"E{i + 1} (mean)", g) for i, g in enumerate(groups) if g] if many
              else [(data.tasks[t].name, [t]) for t in range(data.num_tasks)])
    for label, g in series:
        ax[0].plot(ts, [np.mean([f["tasks"][data.tasks[t].name]["loss"] for t in g]) for f in front], "o-", ms=3, label=label)
    ax[0].set(xlabel="t", ylabel="test loss", title="task losses along the curve")
    ax[0].legend(fontsize=8)
    dms = [f.get("delta_m") for f in front]
    if all(d is not None for d in dms):
        ax[1].plot(ts, dms, "o-", ms=3, color="C3")
        ax[1].set(ylabel="Delta-m% (lower is better)", title="Delta-m% along the curve")
    else:
        for label, g in series:
            ax[1].plot(ts, [np.mean([f["tasks"][data.tasks[t].name][data.tasks[t].primary] for t in g]) for f in front],
                       "o-", ms=3, label=label)
        ax[1].set(ylabel="primary test metric", title="metrics along the curve (no STL reference)")
    ax[1].axvline(selected_t, color="k", ls="--", lw=1, label=f"reported t = {selected_t:.2f}")
    ax[1].set_xlabel("t")
    ax[1].legend(fontsize=8)  # after the dashed line, so that it has its entry
    dense = torch.linspace(0, 1, 201)
    with torch.no_grad():
        C = curve.coefficients(dense).cpu().numpy()
    for i in range(C.shape[1]):
        ax[2].plot(dense.numpy(), C[:, i], label=f"theta_{i + 1}" + (" (fixed)" if i in (0, C.shape[1] - 1) else ""))
    ax[2].set(xlabel="t", ylabel="coefficient", title=f"{curve.kind} coefficients (K={curve.num_points})")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def front_axis_label(data, group, name: str, key: str | None) -> str:
    """An axis of front.png: the task (or the group's mean), the quantity, and which way is better."""
    who = data.tasks[group[0]].name if len(group) == 1 else f"{name} (mean of {len(group)} tasks)"
    if key == "loss":
        return f"{who}: test loss (lower is better)"
    prims = {data.tasks[t].primary for t in group}
    ups = {data.tasks[t].metrics[0][1] for t in group}
    what = prims.pop() if len(prims) == 1 else "primary metric"
    better = "" if len(ups) != 1 else (" (higher is better)" if ups.pop() else " (lower is better)")
    return f"{who}: test {what}{better}"


def plot_front(path, front, groups, data, selected_t) -> None:
    """Objective-space front traced by t: mean loss of E1 vs E2 and mean primary metric of E1 vs E2."""
    plt = _plt()
    ts = np.array([f["t"] for f in front])
    e1, e2 = groups[0], groups[1]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for a, key, title in ((ax[0], "loss", "test losses"), (ax[1], None, "primary test metrics")):
        def val(f, g):
            return np.mean([f["tasks"][data.tasks[t].name][key or data.tasks[t].primary] for t in g])
        x = np.array([val(f, e1) for f in front])
        y = np.array([val(f, e2) for f in front])
        a.plot(x, y, "-", color="0.6", lw=1, zorder=1)
        sc = a.scatter(x, y, c=ts, cmap="viridis", s=22, zorder=2)
        a.scatter(x[[0, -1]], y[[0, -1]], marker="s", s=60, facecolors="none", edgecolors="k", zorder=3, label="endpoints")
        k = int(np.argmin(np.abs(ts - selected_t)))
        a.scatter([x[k]], [y[k]], marker="*", s=150, color="C3", zorder=4, label=f"reported t = {selected_t:.2f}")
        a.set(xlabel=front_axis_label(data, e1, "E1", key), ylabel=front_axis_label(data, e2, "E2", key), title=title)
        a.legend(fontsize=8)
    fig.colorbar(sc, ax=ax, label="t")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_affinity(path, A, groups, data) -> None:
    plt = _plt()
    order = [t for g in groups for t in g]
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(np.asarray(A)[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    edges = np.cumsum([len(g) for g in groups])[:-1] - 0.5
    for e in edges:
        ax.axhline(e, color="k", lw=1)
        ax.axvline(e, color="k", lw=1)
    names = [data.tasks[t].name for t in order]
    ax.set_xticks(range(len(order)), names, rotation=90, fontsize=5)
    ax.set_yticks(range(len(order)), names, fontsize=5)
    ax.set_title("warm-up gradient cosine similarity (clusters E1 | E2 | E3)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(run, template: nn.Module, curve: Curve, eval_t) -> tuple[list, int]:
    """The front: test metrics (and the validation score) at every t of the grid, plus a fixed
    --eval-t off the grid; and the index of the reported point: the given t, or the grid's best on
    validation (ties: the t nearest 1/2)."""
    ts = [float(t) for t in np.linspace(0.0, 1.0, run.args.grid)]
    if eval_t != "val" and not any(abs(t - eval_t) < 1e-9 for t in ts):
        ts = sorted(ts + [float(eval_t)])
    val_is_test = bool(run.data.info.get("val_is_test"))
    front = []
    for t in run.progress(ts, "sweep over t"):
        res = evaluate_point(run, template, curve, t, ["test"] if val_is_test else ["val", "test"])
        val = res["test"] if val_is_test else res["val"]
        front.append({"t": round(t, 6), "tasks": res["test"], "delta_m": run.delta_m(res["test"]),
                      "val_score": run.selection_score(val) if eval_t == "val" else None})
    if eval_t == "val":
        scores = np.array([f["val_score"] for f in front])
        best = np.flatnonzero(scores >= scores.max() - 1e-12)
        return front, int(best[np.argmin(np.abs(np.array(ts)[best] - 0.5))])
    return front, int(np.argmin(np.abs(np.array(ts) - eval_t)))


def plot_all(run, front, chosen, groups, affinity, curve: Curve) -> None:
    data = run.data
    run.guarded("along_t.png", plot_along_t, run.path("along_t.png"), front, groups, data, chosen["t"], curve)
    run.guarded("front.png", plot_front, run.path("front.png"), front, groups, data, chosen["t"])
    if affinity is not None:
        run.guarded("affinity.png", plot_affinity, run.path("affinity.png"), affinity, groups, data)


def stage_costs(run) -> dict:
    """Seconds and peak memory of stage 1 (both endpoints), stage 2 (the curve) and the warm-up."""
    def peak(*phases):
        mbs = [run.phase_peak_mb(p) for p in phases if run.phase_peak_mb(p) is not None]
        return max(mbs) if mbs else None

    return {"peak_memory_mb_stage1": peak("endpoint1", "endpoint2"), "peak_memory_mb_stage2": peak("curve"),
            "peak_memory_mb_warmup": peak("warmup"),
            "seconds_stage1": round(run.phase_seconds("endpoint1") + run.phase_seconds("endpoint2"), 3),
            "seconds_stage2": round(run.phase_seconds("curve"), 3), "seconds_warmup": round(run.phase_seconds("warmup"), 3)}


def result_fields(run, front, k, curve: Curve, template: nn.Module, S, rules, endpoint_tasks, eval_t) -> dict:
    """metrics.json beyond the harness's fields: the reported point, the front and its hypervolume
    (the suite's one rule, on the test split), both endpoints, the oracle t, the groups and the curve."""
    from common.metrics import HV_SPLIT, hv_reference, hypervolume, non_dominated
    from common.models import count_parameters

    args, data, tasks, chosen = run.args, run.data, run.data.tasks, front[k]
    dms = [f["delta_m"] for f in front]
    oracle = int(np.nanargmin([np.inf if v is None else v for v in dms])) if any(v is not None for v in dms) else None
    P = np.array([[f["tasks"][s.name][s.primary] for s in tasks] for f in front], dtype=float)
    higher = [s.metrics[0][1] for s in tasks]
    ref = hv_reference(tasks)
    w = curve.weights()
    return {
        "tasks": chosen["tasks"], "delta_m": chosen["delta_m"], "t": chosen["t"],
        "t_selection": "validation" if eval_t == "val" else "fixed",
        "hypervolume": hypervolume(P, ref, maximize=higher), "hypervolume_split": HV_SPLIT, "hypervolume_ref": ref,
        "hypervolume_metrics": [s.primary for s in tasks],
        "non_dominated": int(non_dominated(P, maximize=higher).sum()), "front": front,
        "endpoints": {"t=0": {"tasks": front[0]["tasks"], "delta_m": front[0]["delta_m"]},
                      "t=1": {"tasks": front[-1]["tasks"], "delta_m": front[-1]["delta_m"]}},
        "best_test_t": front[oracle]["t"] if oracle is not None else None,
        "best_test_delta_m": dms[oracle] if oracle is not None else None,
        "endpoint_rules": rules if not args.endpoint_ckpt else None, "endpoint_ckpt": args.endpoint_ckpt,
        "endpoint_tasks": endpoint_tasks, "groups": {f"E{i + 1}": [tasks[t].name for t in g] for i, g in enumerate(S["groups"])},
        "grouping": args.grouping if data.num_tasks > 3 else None, "task_affinity": S["affinity"],
        "curve": {"kind": curve.kind, "control_points": curve.num_points, "trainable_points": curve.num_points - 2,
                  "degree": curve.degree if curve.kind == "nurbs" else None,
                  "knots": clamped_knots(curve.num_points, curve.degree).tolist() if curve.kind == "nurbs" else None,
                  "weights": w.detach().cpu().tolist() if w is not None else None},
        "alpha": args.alpha, "align_weight": args.align_weight, "l2": args.l2, **stage_costs(run),
        "parameters": {"model": count_parameters(template.parameters()),
                       "curve_trainable": count_parameters(curve.parameters())},
    }


def headline(result: dict) -> None:
    """The reported point against both endpoints, in Delta-m% (lower is better)."""
    def dm(v):
        return "n/a" if v is None else f"{v:.2f}"

    ref, ends = result.get("reference") or {}, result["endpoints"]
    print(f"[extra_nurbs] Delta-m% (lower is better; reference: {ref.get('source', 'none')}): "
          f"t = {result['t']:g} ({result['t_selection']}) {dm(result['delta_m'])}; "
          f"endpoints t = 0 {dm(ends['t=0']['delta_m'])}, t = 1 {dm(ends['t=1']['delta_m'])}", flush=True)


# ----------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    validate(args)
    from common.device import UsageError
    from common.models import build_model

    run = staged_run(args)
    data, T = run.data, run.data.num_tasks
    eval_t, rules, endpoint_tasks, phases = stage_plan(run)

    def build():
        with torch.random.fork_rng(devices=[]):  # building never moves the training RNG stream (--resume)
            return build_model(args.model, data, pretrained=args.pretrained).to(run.device)

    run.phases(phases)
    S = run.values(groups=fixed_groups(args, T), affinity=None, endpoints=[None, None], curve=None)

    # ---- section 5.3: warm-up with LS, then the task clusters E1, E2, E3 ----------------------
    if "warmup" in phases and run.enter("warmup", seed=args.seed + 7919):
        S["affinity"], S["groups"] = warm_up(run, build())
        run.leave()
    groups = S["groups"]
    if not groups[0] or not groups[1]:
        raise UsageError("task grouping left an endpoint cluster empty; try --grouping random")

    # ---- stage 1: the two endpoints (or the given checkpoints) ---------------------------------
    if args.endpoint_ckpt and S["endpoints"][0] is None:
        S["endpoints"] = [load_endpoint(p, build()) for p in args.endpoint_ckpt]
    for k in (0, 1):
        # two seeds when both endpoints use the same rule
        if not args.endpoint_ckpt and run.enter(f"endpoint{k + 1}", seed=args.seed + 10007 * k):
            tasks = groups[k] if endpoint_tasks == "groups" else list(range(T))
            S["endpoints"][k] = train_endpoint(run, build(), k, rules[k], tasks)
            run.leave()

    # ---- stage 2: the curve between them --------------------------------------------------------
    template, flat, curve = curve_between(run, S["endpoints"], build)
    if run.enter("curve", seed=args.seed + 31337):
        train_curve(run, template, flat, curve, groups, eval_t)
        S["curve"] = curve.state_dict()
        run.leave()
    curve.load_state_dict(S["curve"])

    # ---- the sweep over t, the reported point ----------------------------------------------------
    front, k = sweep(run, template, curve, eval_t)
    plot_all(run, front, front[k], groups, S["affinity"], curve)
    run.checkpoint(-1, finished=True)
    result = run.finish(result_fields(run, front, k, curve, template, S, rules, endpoint_tasks, eval_t))
    if not args.quiet:
        headline(result)
    return result


if __name__ == "__main__":
    _harness()
    from common.train import main_guard

    main_guard(main)
