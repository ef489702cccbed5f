"""Loss-weighting and gradient-aggregation rules for multi-task learning (the MTL baselines).

Needs only torch, numpy and scipy: copy this file alone into a project. ``RuleStep`` applies any
rule in a training loop (the model needs no particular class: you name its shared parameters and
each task's head parameters):

    rule = make_aggregator("famo", num_tasks=2)            # any name of AGGREGATORS
    step = RuleStep(rule, shared=list(net.trunk.parameters()),
                    heads=[list(h.parameters()) for h in net.heads])
    opt = torch.optim.Adam(list(net.parameters()) + step.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for x, ys in batches:
            opt.zero_grad()
            step.backward(task_losses(net(x), ys))        # .grad of trunk, heads (and rule), clipped
            opt.step()
            step.after_step(lambda: task_losses(net(x), ys))  # FAMO only: the same batch after the step
        mean_losses = step.end_epoch()                     # DWA, GradNorm: the per-epoch hook
    torch.save(step.state_dict(), "rule.pt")               # torch.load(..., weights_only=True) reads it

What a rule consumes is said by its ``needs`` (RuleStep.backward does each):

  "losses"          back-propagate ``agg.loss(losses)`` (LS, SI, RLW, DWA, UW, FAMO, IMTL-L)
  "jacobian"        the T x d Jacobian G of the task losses w.r.t. the shared parameters (row t =
                    grad of L_t); ``agg.direction(G, losses)`` returns the update d for the shared
                    parameters and the weights w for the task heads (heads get the gradient of
                    sum_t w_t L_t; w = None means all ones)
  "last_shared"     GradNorm: ``agg.weights(losses, G)`` with G = per-task gradients on the last
                    shared layer; then back-propagate sum_t w_t L_t through everything
  "representation"  MGDA-UB: same, with G = per-task gradients w.r.t. the shared representation
                    (flattened over batch and features; ``RuleStep.backward(losses, rep)``)

Conventions shared by all rules
  * No rule calls backward on the model (only RuleStep does). A few rules own tiny learnable
    tensors (UW and IMTL-L log-scales: returned by ``parameters()`` for the training loop's
    optimiser; GradNorm weights, FAMO logits, IMTL-hybrid scales: stepped inside the rule with
    closed-form gradients).
  * ``state_dict()`` / ``load_state_dict()`` hold a rule's whole state as tensors and plain Python
    values, so checkpoints load with ``torch.load(path, weights_only=True)``.
  * T x T problems (min-norm, Nash, FairGrad, CAGrad, IMTL) are solved on the Gram matrix G G^T in
    float64 on the CPU; only the final combination sum_t w_t g_t touches the d-dimensional rows.
  * ``solver_seconds`` accumulates the wall time (time.perf_counter) spent inside the rule; the
    caller synchronises CUDA before reading it. ``last_weights`` keeps the latest task weights (the
    effective coefficients on the task losses / gradients) for logging.
  * ``default_max_norm`` is the shared-gradient clipping norm that the rule's own official code
    applies (0 = none); every rule accepts ``max_norm=`` to override it. Note on the FAMO /
    FairGrad benchmark code (github Cranial-XIX/FAMO, OptMN-Lab/fairgrad): its base class calls
    ``clip_grad_norm_`` *before* ``loss.backward()``, so there clipping is a no-op for every
    loss-based rule (LS, UW, DWA, RLW, MGDA, IMTL-G, Nash-MTL, FAMO) and only acts for the rules that
    write the shared gradient themselves (PCGrad, CAGrad, GradDrop, FairGrad). Nash-MTL's own code
    (github AvivNavon/nash-mtl) clips only Nash-MTL, after backward.

Use ``make_aggregator(name, num_tasks, dataset, **overrides)``; ``describe()`` lists the rules;
``aggregate(agg, G, losses)`` turns any rule into a direction on a given Jacobian (SAM-MTL).
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.optimize
import torch


# --------------------------------------------------------------------------------------------
# small numerical helpers (all on T x T matrices)
# --------------------------------------------------------------------------------------------

def _gram(G: torch.Tensor) -> torch.Tensor:
    """G G^T as a float64 CPU matrix (computed in G's dtype and device, then cast)."""
    G = G.detach()
    return (G @ G.T).to(device="cpu", dtype=torch.float64)


def _combine(w: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """sum_t w_t g_t in G's dtype and device."""
    return w.to(device=G.device, dtype=G.dtype) @ G.detach()


def _min_norm_2(v11: float, v12: float, v22: float) -> float:
    """argmin_{gamma in [0,1]} ||gamma x1 + (1-gamma) x2||^2 given the three inner products
    (Sener & Koltun 2018, Algorithm 1). The official code returns 0.999 / 0.001 at the ends of the
    segment; this returns the exact clipped minimiser."""
    den = v11 + v22 - 2.0 * v12
    if den <= 1e-30 * max(v11 + v22, 1e-300):   # x1 == x2: any gamma
        return 1.0 if v11 <= v22 else 0.0
    return min(1.0, max(0.0, (v22 - v12) / den))


def min_norm_weights(M: torch.Tensor, max_iter: int = 250, tol: float = 1e-5) -> torch.Tensor:
    """Weights w on the simplex minimising w^T M w, i.e. the min-norm point of the convex hull of
    vectors whose Gram matrix is M (Sener & Koltun 2018, Eq. 3 / Algorithms 1-2).

    Start from the best pair (exact 2-vector solution over all pairs, as the official code does),
    which is already optimal for T = 2; for T > 2 run Frank-Wolfe with exact line search
    (Algorithm 2): the vertex with the smallest (M w)_t enters, the step is the 2-point closed form,
    stop when sum |w_new - w| < tol or after max_iter iterations. Frank-Wolfe converges sublinearly:
    after 250 iterations ||d||^2 can still be ~1% above the minimum for T >= 8 (see
    `min_norm_weights_exact`)."""
    M = M.to(torch.float64).numpy()
    T = M.shape[0]
    if T == 1:
        return torch.ones(1, dtype=torch.float64)
    diag = np.diag(M)
    i, j = np.triu_indices(T, 1)
    v11, v12, v22 = diag[i], M[i, j], diag[j]
    gam = np.clip((v22 - v12) / np.maximum(v11 + v22 - 2 * v12, 1e-300), 0.0, 1.0)
    cost = gam ** 2 * v11 + 2 * gam * (1 - gam) * v12 + (1 - gam) ** 2 * v22
    k = int(np.argmin(cost))
    w = np.zeros(T)
    g = _min_norm_2(v11[k], v12[k], v22[k])
    w[i[k]], w[j[k]] = g, 1.0 - g
    if T > 2:
        for _ in range(max_iter):
            Mw = M @ w
            t = int(np.argmin(Mw))
            g = _min_norm_2(float(w @ Mw), float(Mw[t]), float(M[t, t]))
            new = g * w
            new[t] += 1.0 - g
            done = float(np.abs(new - w).sum()) < tol
            w = new
            if done:
                break
    return torch.from_numpy(w)


def min_norm_weights_exact(M: torch.Tensor) -> torch.Tensor:
    """The exact min-norm weights through one non-negative least-squares problem (Lawson-Hanson,
    scipy.optimize.nnls, finite): for u >= 0, ||G^T u||^2 + (1 - 1^T u)^2 = u^T (M + 1 1^T) u - 2 1^T u + 1
    is minimised at u = w* / (1 + ||d*||^2) with w* the min-norm weights, so w* = u / sum(u).
    The quadratic is written as ||R u - c||^2 with R^T R = M + 1 1^T (eigen-decomposition)."""
    M = M.to(torch.float64).numpy()
    T = M.shape[0]
    lam, V = np.linalg.eigh(M + 1.0)
    keep = lam > lam.max() * 1e-13
    R = np.sqrt(lam[keep])[:, None] * V[:, keep].T
    c = (V[:, keep].T @ np.ones(T)) / np.sqrt(lam[keep])
    u = scipy.optimize.nnls(R, c)[0]
    return torch.from_numpy(u / u.sum()) if u.sum() > 0 else torch.full((T,), 1.0 / T, dtype=torch.float64)


def _ray_scale(K: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor | None:
    """The multiple c v minimising f(c v) (f of `solve_power_equation`), or None if v^T K v <= 0."""
    q = float(v @ K @ v)
    if not q > 0:
        return None
    return v * (float(v.pow(1 - p).sum()) / q) ** (1.0 / (1.0 + p))


def solve_power_equation(K: torch.Tensor, p: float, w0: torch.Tensor | None = None,
                         max_iter: int = 20, tol: float = 1e-8) -> tuple[torch.Tensor, int, float]:
    """Positive solution of K w = w^(-p) (element-wise power), K = G G^T positive semi-definite.

    p = 1 is Nash-MTL (G G^T alpha = 1/alpha), p = 1/alpha is FairGrad. The equation is the
    stationarity condition of the strictly convex function (on w > 0)
        f(w) = 1/2 w^T K w - sum_i h(w_i),   h'(w) = w^(-p)   (h = log for p = 1),
    whose Hessian K + p diag(w^(-p-1)) is positive definite, so the root is unique and is exactly
    the KKT point the papers characterise. We run Newton's method on f with a fraction-to-boundary
    rule (w stays > 0) and Armijo backtracking while the Newton decrement is large (self-concordant
    damped phase), full steps near the solution. Start: the best of ones, K_ii^(-1/(1+p)) (exact
    for orthogonal gradients, and exact for Nash-MTL with T = 2) and w0 (warm start), each scaled
    optimally along its ray. Stop when max_i |w_i^p (K w)_i - 1| < tol (a scale-free residual).
    If 0 is in the convex hull of the gradients f is unbounded below and no solution exists; the
    iterate after max_iter steps is returned (the caller sees the residual).
    Returns (w, iterations, residual)."""
    K = K.to(torch.float64)
    T = K.shape[0]

    def h(w):
        return torch.log(w) if p == 1 else w.pow(1 - p) / (1 - p)

    def f(w):
        return float(0.5 * w @ K @ w - h(w).sum())

    cands = [torch.ones(T, dtype=torch.float64), K.diagonal().clamp_min(1e-12).pow(-1.0 / (1 + p))]
    if w0 is not None and w0.numel() == T and bool(torch.all(w0 > 0)) and bool(torch.isfinite(w0).all()):
        cands.append(w0.to(torch.float64))
    w, fw = None, math.inf
    for v in cands:
        c = _ray_scale(K, v, p)
        if c is not None and f(c) < fw:
            w, fw = c, f(c)
    if w is None:
        w = torch.ones(T, dtype=torch.float64)
    it = 0
    for it in range(max_iter + 1):
        Kw = K @ w
        res = float((w.pow(p) * Kw - 1).abs().max())
        if res < tol or it == max_iter:
            return w, it, res
        r = Kw - w.pow(-p)
        H = K + torch.diag(p * w.pow(-p - 1))
        step = -torch.linalg.solve(H, r)
        t = 1.0
        neg = step < 0
        if bool(neg.any()):
            t = min(1.0, 0.99 * float((-w[neg] / step[neg]).min()))
        slope = float(r @ step)  # = -(Newton decrement)^2
        if -slope > 1e-2:
            f0 = f(w)
            while f(w + t * step) > f0 + 1e-4 * t * slope and t > 1e-12:
                t *= 0.5
        w = w + t * step
    return w, it, res


class _Adam:
    """Adam (Kingma & Ba 2015) with L2 weight decay, exactly torch.optim.Adam's update, for the
    rules' own tiny tensors (GradNorm weights, FAMO logits, IMTL-hybrid scales). Written out so the
    rules need no autograd or optimiser machinery; ``lr=..., betas=(0.9, 0.999), eps=1e-8``."""

    def __init__(self, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8,
                 sgd: bool = False):
        self.lr, self.wd, self.b1, self.b2, self.eps, self.sgd = lr, weight_decay, betas[0], betas[1], eps, sgd
        self.m = self.v = None
        self.t = 0

    def step(self, p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Returns the updated parameter (a new tensor)."""
        g = grad + self.wd * p
        if self.sgd:
            return p - self.lr * g
        if self.m is None:
            self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        denom = (self.v / (1 - self.b2 ** self.t)).sqrt() + self.eps
        return p - self.lr * (self.m / (1 - self.b1 ** self.t)) / denom


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------

class HyperparameterError(ValueError, TypeError):
    """Unknown rule, unknown hyperparameter or bad hyperparameter value (a ValueError, and a
    TypeError like the one Python raises for an unexpected keyword, so callers may catch either)."""


class RuleInputError(ValueError):
    """RuleStep was given what its rule cannot use (MGDA-UB without one shared representation tensor):
    a usage error of the caller, one line."""


class Aggregator:
    """Base class: see the module docstring for the contract. Subclasses set ``name``, ``needs``,
    ``paper`` and ``default_max_norm`` and take their hyperparameters as keyword-only arguments
    (their defaults are what ``describe()`` prints)."""

    name: str = "base"
    needs: str = "losses"
    paper: str = ""
    default_max_norm: float = 0.0

    def __init__(self, num_tasks: int, *, max_norm: float | None = None):
        if int(num_tasks) < 1:
            raise HyperparameterError(f"{self.name}: num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks = int(num_tasks)
        if max_norm is not None:
            if max_norm < 0:
                raise HyperparameterError(f"{self.name}: max_norm must be >= 0, got {max_norm}")
            self.default_max_norm = float(max_norm)
        self.last_weights: torch.Tensor | None = None
        self.solver_seconds: float = 0.0
        self._t0 = 0.0

    # timing: every public entry point brackets its work with _tic() / _toc()
    def _tic(self):
        self._t0 = time.perf_counter()

    def _toc(self):
        self.solver_seconds += time.perf_counter() - self._t0

    def _check(self, v: torch.Tensor, what: str):
        if v.shape[0] != self.num_tasks:
            raise ValueError(f"{self.name}: expected {self.num_tasks} tasks in {what}, got shape {tuple(v.shape)}")

    def parameters(self) -> list[torch.Tensor]:
        return []

    def weights(self, losses: torch.Tensor, G: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no per-task loss weights (needs={self.needs})")

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        """Differentiable scalar: sum_t w_t L_t with the (detached) current weights."""
        w = self.weights(losses)
        return (w.to(losses.dtype) * losses).sum()

    def direction(self, G: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError(f"{self.name} is not a Jacobian rule (needs={self.needs}); use aggregate()")

    def epoch_end(self, mean_losses: torch.Tensor) -> None:
        pass

    def post_step(self, losses_before: torch.Tensor, losses_after: torch.Tensor) -> None:
        pass

    # rule state: every instance attribute (hyperparameters included) except the timer
    _TRANSIENT = ("_t0",)

    def state_dict(self) -> dict:
        """The rule's whole state as tensors and plain Python values (ints, floats, bools, strings,
        None, lists / tuples / dicts of those), so ``torch.load(path, weights_only=True)`` reads it
        back: learnable tensors, GradNorm weights, FAMO logits, the `_Adam` moments and step counts,
        DWA's loss history, generator states (torch.Generator.get_state()), Nash-MTL's warm start and
        counter, solver_seconds, last_weights, and the hyperparameters. Tensors are copies."""
        sd = {k: _encode(v, f"{self.name}.{k}") for k, v in vars(self).items() if k not in self._TRANSIENT}
        return {"rule": self.name, **sd}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` of a rule of the same name and number of tasks. The rule's learnable
        tensors (``parameters()``) are overwritten in place (copy_), so an optimiser that already holds
        them keeps training them; every other tensor goes to the device of the attribute it replaces
        (the CPU when the attribute was None: rule state lives on the CPU, ``last_weights`` is only read
        for logging)."""
        state = dict(state)
        name = state.pop("rule", None)
        if name != self.name or state.get("num_tasks") != self.num_tasks:
            raise ValueError(f"{self.name} ({self.num_tasks} tasks): cannot load the state of rule {name!r} "
                             f"({state.get('num_tasks')} tasks)")
        learnable = {id(p) for p in self.parameters()}
        for k, v in state.items():
            now = getattr(self, k, None)
            if id(now) in learnable:
                with torch.no_grad():
                    now.copy_(v)
            else:
                setattr(self, k, _decode(v, now))


def _encode(v, where: str):
    """One attribute as tensors and plain Python values (generators, numpy arrays and the rules' Adam
    become tagged dicts)."""
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, torch.Generator):
        return {"__generator__": v.get_state(), "device": str(v.device)}
    if isinstance(v, np.ndarray):
        return {"__ndarray__": torch.from_numpy(v.copy())}
    if isinstance(v, _Adam):
        return {"__adam__": {k: _encode(x, f"{where}.{k}") for k, x in vars(v).items()}}
    if isinstance(v, (list, tuple)):
        return type(v)(_encode(x, f"{where}[{i}]") for i, x in enumerate(v))
    if isinstance(v, dict):
        return {k: _encode(x, f"{where}[{k!r}]") for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"state_dict: {where} is a {type(v).__name__}, which has no plain form")


def _decode(v, now):
    """The inverse of `_encode`; `now` is the attribute's current value (its device and objects are reused)."""
    if isinstance(v, dict) and "__generator__" in v:
        g = now if isinstance(now, torch.Generator) else torch.Generator(device=v["device"])
        g.set_state(v["__generator__"].cpu())
        return g
    if isinstance(v, dict) and "__ndarray__" in v:
        return v["__ndarray__"].cpu().numpy().copy()
    if isinstance(v, dict) and "__adam__" in v:
        opt = now if isinstance(now, _Adam) else _Adam.__new__(_Adam)
        for k, x in v["__adam__"].items():
            setattr(opt, k, _decode(x, getattr(opt, k, None)))
        return opt
    if isinstance(v, torch.Tensor):
        return v.detach().to(now.device if isinstance(now, torch.Tensor) else "cpu", copy=True)
    if isinstance(v, (list, tuple)):
        now = now if isinstance(now, (list, tuple)) and len(now) == len(v) else [None] * len(v)
        return type(v)(_decode(x, n) for x, n in zip(v, now))
    if isinstance(v, dict):
        return {k: _decode(x, (now or {}).get(k) if isinstance(now, dict) else None) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------
# loss-weighting rules
# --------------------------------------------------------------------------------------------

class LinearScalarization(Aggregator):
    """LS: L = sum_t L_t (equal weights 1).

    The benchmark codes (MTAN, Nash-MTL, FAMO, FairGrad) SUM the task losses; the mean only
    rescales the gradient by 1/T, which Adam undoes (up to its epsilon), so we follow the codes."""
    name, needs, paper = "ls", "losses", "linear scalarisation (sum of task losses)"

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        w = torch.ones(self.num_tasks, dtype=losses.dtype, device=losses.device)
        self.last_weights = w
        self._toc()
        return w


class ScaleInvariant(Aggregator):
    """SI: L = sum_t log L_t (Navon et al. 2022, the 'SI' baseline of Nash-MTL).

    grad = sum_t g_t / L_t, so multiplying any task loss by a constant c > 0 adds log c and leaves
    the gradient unchanged (scale invariance). Losses must be positive; they are clamped at 1e-12."""
    name, needs, paper = "si", "losses", "scale-invariant baseline, sum of log losses (Navon et al. 2022)"

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        w = 1.0 / losses.detach().clamp_min(1e-12)
        self.last_weights = w
        self._toc()
        return w

    def loss(self, losses):
        self._tic()
        self._check(losses, "losses")
        self.last_weights = 1.0 / losses.detach().clamp_min(1e-12)
        out = torch.log(losses.clamp_min(1e-12)).sum()
        self._toc()
        return out


class RLW(Aggregator):
    """RLW, random loss weighting (Lin et al. 2021, 'Reasonable effectiveness of random weighting'): at every call w = softmax(z), z ~ N(0, I_T); L = sum_t w_t L_t (weights sum to 1, as in
    the paper and the Nash-MTL / LibMTL codes). ``generator`` (a torch.Generator) makes it
    reproducible; the draw is made on the generator's device (CPU by default)."""
    name, needs, paper = "rlw", "losses", "random loss weighting (Lin et al. 2021)"

    def __init__(self, num_tasks, *, generator: torch.Generator | None = None, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        self.generator = generator

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        dev = self.generator.device if self.generator is not None else "cpu"
        z = torch.randn(self.num_tasks, generator=self.generator, device=dev, dtype=torch.float64)
        w = torch.softmax(z, 0).to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w
        self._toc()
        return w


class DWA(Aggregator):
    """DWA, dynamic weight average (Liu, Johns & Davison 2019, CVPR, MTAN):
        w_t(e) = T exp(r_t(e-1) / temp) / sum_i exp(r_i(e-1) / temp),  r_t(e-1) = L_t(e-1) / L_t(e-2),
    with L_t(e) the mean training loss of epoch e (delivered by ``epoch_end``), temp = 2, and w = 1
    for the first two epochs. L = sum_t w_t L_t (MTAN code sums).
    Nash-MTL's code uses 25-iteration windows instead of epochs; call ``epoch_end`` per window to
    get that variant."""
    name, needs, paper = "dwa", "losses", "dynamic weight average (Liu et al. 2019, MTAN)"

    def __init__(self, num_tasks, *, temp: float = 2.0, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if not temp > 0:
            raise HyperparameterError(f"dwa: temp must be > 0, got {temp}")
        self.temp = float(temp)
        self.history: list[torch.Tensor] = []

    def epoch_end(self, mean_losses):
        self._check(mean_losses, "mean_losses")
        self.history.append(torch.as_tensor(mean_losses).detach().to("cpu", torch.float64).clone())
        self.history = self.history[-2:]

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        if len(self.history) < 2:
            w = torch.ones(self.num_tasks, dtype=torch.float64)
        else:
            r = self.history[-1] / self.history[-2].clamp_min(1e-12)
            w = self.num_tasks * torch.softmax(r / self.temp, 0)
        w = w.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w
        self._toc()
        return w


class UW(Aggregator):
    """UW, uncertainty weighting (Kendall, Gal & Cipolla 2018, CVPR; Gaussian likelihood, s = log sigma^2):
        L = sum_t 1/2 (exp(-s_t) L_t + s_t),  s initialised to 0 and learned with the model.
    ``parameters()`` returns [s]: the training loop must add it to its optimiser (a public benchmark forgot
    this, which silently turns UW into LS). The paper uses 1/sigma^2 (no 1/2) for classification
    losses; like the Nash-MTL / FAMO codes we use the regression form for every task.
    ``weights`` = 1/2 exp(-s) (the effective weights; s is only updated by that optimiser)."""
    name, needs, paper = "uw", "losses", "uncertainty weighting (Kendall et al. 2018)"

    def __init__(self, num_tasks, *, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        self.log_vars = torch.zeros(num_tasks, requires_grad=True)

    def parameters(self):
        return [self.log_vars]

    def _s(self, losses):
        # s stays where parameters() put it (CPU): it is moved differentiably, so the tensor in the
        # training loop's optimiser is the one that learns
        return self.log_vars.to(device=losses.device, dtype=losses.dtype)

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        w = 0.5 * torch.exp(-self._s(losses).detach()).to(losses.dtype)
        self.last_weights = w
        self._toc()
        return w

    def loss(self, losses):
        self._tic()
        self._check(losses, "losses")
        s = self._s(losses)
        self.last_weights = 0.5 * torch.exp(-s.detach())
        out = 0.5 * (torch.exp(-s) * losses + s).sum()
        self._toc()
        return out


class GradNorm(Aggregator):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, ICML; Eq. 2 and Algorithm 1).

    Learnable weights w (init 1). With n_t = ||grad_W L_t|| on the last shared layer W (rows of G),
    G_W^(t) = w_t n_t, Gbar = mean_t G_W^(t), Ltilde_t = L_t / L_t(0), r_t = Ltilde_t / mean(Ltilde):
        L_grad = sum_t | w_t n_t - Gbar r_t^alpha |     (Gbar r^alpha held constant),
    whose gradient in w_t is sign(w_t n_t - target_t) n_t (closed form, no backward). Algorithm 1:
    the step's loss uses the current w(t); w is then moved one optimiser step on L_grad (Adam,
    lr 0.025 by default - the weight-parameter lr of the Nash-MTL / FAMO benchmark codes; 'sgd'
    also available), clamped at 1e-6 to stay positive, and renormalised to sum to T.
    alpha = 1.5 (the project's reference notes; LibMTL's default). L_t(0) is the loss at the first call (the
    paper's initial loss; LibMTL uses the mean loss of epoch 0). ``warmup_epochs`` (default 1, as
    LibMTL): equal weights and no updates until ``epoch_end`` has been called that many times."""
    name, needs, paper = "gradnorm", "last_shared", "GradNorm (Chen et al. 2018)"

    def __init__(self, num_tasks, *, alpha: float = 1.5, lr: float = 0.025, optimizer: str = "adam",
                 warmup_epochs: int = 1, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if optimizer not in ("adam", "sgd"):
            raise HyperparameterError(f"gradnorm: optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if not lr > 0:
            raise HyperparameterError(f"gradnorm: lr must be > 0, got {lr}")
        self.alpha, self.lr, self.warmup_epochs = float(alpha), float(lr), int(warmup_epochs)
        self.w = torch.ones(num_tasks, dtype=torch.float64)
        self.opt = _Adam(self.lr, sgd=optimizer == "sgd")
        self.initial_losses: torch.Tensor | None = None
        self.epochs_seen = 0

    def epoch_end(self, mean_losses):
        self.epochs_seen += 1

    def weights(self, losses, G=None):
        if G is None:
            raise ValueError("gradnorm: weights(losses, G) needs G = per-task gradients on the last shared layer")
        self._tic()
        self._check(losses, "losses")
        self._check(G, "G")
        L = losses.detach().to("cpu", torch.float64)
        if self.initial_losses is None:
            self.initial_losses = L.clone().clamp_min(1e-12)
        w_now = self.w.clone()
        if self.epochs_seen >= self.warmup_epochs:
            n = G.detach().norm(dim=1).to("cpu", torch.float64)
            gw = w_now * n
            ratio = L / self.initial_losses
            r = ratio / ratio.mean().clamp_min(1e-12)
            target = gw.mean() * r.pow(self.alpha)
            w = self.opt.step(self.w, torch.sign(gw - target) * n).clamp_min(1e-6)
            self.w = w * (self.num_tasks / w.sum())
        else:
            w_now = torch.ones(self.num_tasks, dtype=torch.float64)
        out = w_now.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = out
        self._toc()
        return out


class FAMO(Aggregator):
    """FAMO, fast adaptive multitask optimisation (Liu, Liu, Stone & Liu 2023, NeurIPS; Algorithm 1).

    Task logits xi (init 0), z = softmax(xi). With D_t = L_t - min_t + eps (min_t = ``min_losses``,
    0 by default, eps 1e-8) the step minimises
        L = sum_t z_t log D_t / c,   c = sum_t z_t / D_t  (detached),
    i.e. the shared gradient is sum_t (z_t / (c D_t)) g_t: a convex combination of the gradients of
    log D_t, normalised (these effective weights are ``weights``). After the model step the loop
    recomputes the same batch's losses and calls ``post_step(before, after)``:
        delta_t = log D_t(before) - log D_t(after),   grad_xi = J_softmax(xi)^T delta
                = z * (delta - z . delta),
    followed by one Adam(lr 0.025, weight_decay gamma) step on xi (so tasks whose log-loss fell
    faster lose weight). gamma = 1e-3 by default; the official run scripts use 1e-2 on Cityscapes and
    1e-3 on NYUv2 and CelebA (see DATASET_DEFAULTS). The official code's clipping call precedes
    backward (a no-op), hence default_max_norm 0. The official trainers recompute the losses in
    train mode (BatchNorm statistics move twice); the suite recomputes them with BatchNorm frozen
    (the ``recompute`` of RuleStep.after_step)."""
    name, needs, paper = "famo", "losses", "FAMO (Liu et al. 2023)"

    def __init__(self, num_tasks, *, gamma: float = 1e-3, lr: float = 0.025, eps: float = 1e-8,
                 min_losses: list[float] | None = None, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if gamma < 0 or not lr > 0:
            raise HyperparameterError(f"famo: need gamma >= 0 and lr > 0, got gamma={gamma}, lr={lr}")
        self.gamma, self.lr, self.eps = float(gamma), float(lr), float(eps)
        self.min_losses = torch.zeros(num_tasks, dtype=torch.float64) if min_losses is None else \
            torch.as_tensor(min_losses, dtype=torch.float64)
        self._check(self.min_losses, "min_losses")
        self.logits = torch.zeros(num_tasks, dtype=torch.float64)
        self.opt = _Adam(self.lr, weight_decay=self.gamma)

    def _D(self, losses):
        return losses - self.min_losses.to(device=losses.device, dtype=losses.dtype) + self.eps

    def _z(self, like):
        return torch.softmax(self.logits, 0).to(device=like.device, dtype=like.dtype)

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        D = self._D(losses.detach())
        z = self._z(losses)
        c = (z / D).sum()
        w = z / (c * D)
        self.last_weights = w
        self._toc()
        return w

    def loss(self, losses):
        self._tic()
        self._check(losses, "losses")
        D = self._D(losses)
        z = self._z(losses)
        c = (z / D).sum().detach()
        self.last_weights = (z / (c * D)).detach()
        out = (z * torch.log(D)).sum() / c
        self._toc()
        return out

    def post_step(self, losses_before, losses_after):
        self._tic()
        self._check(losses_before, "losses_before")
        self._check(losses_after, "losses_after")
        b, a = torch.stack([losses_before.detach().float(), losses_after.detach().float()]).to("cpu", torch.float64)  # one transfer
        delta = torch.log(self._D(b)) - torch.log(self._D(a))
        z = torch.softmax(self.logits, 0)
        self.logits = self.opt.step(self.logits, z * (delta - (z * delta).sum()))
        self._toc()


# --------------------------------------------------------------------------------------------
# gradient-aggregation rules (Jacobian, last-layer and representation rules)
# --------------------------------------------------------------------------------------------

def _normalisers(G: torch.Tensor, losses: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-task gradient normalisers of the official MGDA code (not in the paper)."""
    T = G.shape[0]
    if kind == "none":
        return torch.ones(T, dtype=torch.float64)
    norms = G.detach().norm(dim=1).to("cpu", torch.float64).clamp_min(1e-12)
    L = losses.detach().to("cpu", torch.float64).clamp_min(1e-12)
    return {"l2": norms, "loss": L, "loss+": L * norms}[kind]


class MGDA(Aggregator):
    """MGDA (Sener & Koltun 2018): the min-norm element of the convex hull of the task gradients,
        w = argmin_{w in simplex} ||sum_t w_t g_t||^2   (Eq. 3; Alg. 1 for T = 2, Alg. 2 Frank-Wolfe),
    solved on the Gram matrix. ``solver``: 'exact' (default; `min_norm_weights_exact`, an NNLS
    reformulation, exact in finitely many steps, so the rule returns the point Eq. 3 defines) or
    'frank-wolfe' (`min_norm_weights`: exact for T = 2, the paper's Algorithm 2 with 250 iterations /
    tolerance 1e-5 for T > 2). Frank-Wolfe converges sublinearly and stops early: on T = 5 random
    Jacobians it ends up to ~0.4% above the minimum squared norm (~1% for T >= 8), which is why it is
    not the default. The official code's default routine is a projected-gradient variant (its
    iteration counter is never incremented, so it stops only on the tolerance). Direction
    d = sum_t w_t g_t; the
    heads get sum_t w_t L_t (the official code scales every loss by w_t). Property (Desideri's MGDA
    theorem, restated in the paper): either d = 0 (Pareto stationary) or g_t . d >= ||d||^2 > 0 for
    every t, so -d decreases all task losses.

    ``normalization`` 'none' | 'l2' | 'loss' | 'loss+': the official code can normalise each g_t (by
    ||g_t||, L_t or L_t ||g_t||) before solving - 'not included in the paper' per its own comment;
    its sample config uses 'loss+', the Nash-MTL / FAMO benchmark codes default to 'none', which we
    follow. As in the official code the weights found on normalised gradients are applied to the raw
    gradients / losses. Weights sum to 1 as in the paper and the official code (the Nash-MTL / FAMO
    codes multiply them by T; with Adam this only rescales the step)."""
    name, needs, paper = "mgda", "jacobian", "MGDA min-norm point (Sener & Koltun 2018)"

    def __init__(self, num_tasks, *, normalization: str = "none", solver: str = "exact",
                 max_iter: int = 250, tol: float = 1e-5, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise HyperparameterError(f"{self.name}: normalization must be none|l2|loss|loss+, got {normalization!r}")
        if solver not in ("frank-wolfe", "exact"):
            raise HyperparameterError(f"{self.name}: solver must be frank-wolfe|exact, got {solver!r}")
        self.normalization, self.solver, self.max_iter, self.tol = normalization, solver, int(max_iter), float(tol)

    def _solve(self, G, losses):
        self._check(G, "G")
        gn = _normalisers(G, losses, self.normalization)
        M = _gram(G) / (gn[:, None] * gn[None, :])
        if self.solver == "exact":
            return min_norm_weights_exact(M)
        return min_norm_weights(M, self.max_iter, self.tol)

    def weights(self, losses, G=None):
        if G is None:
            raise ValueError(f"{self.name}: weights(losses, G) needs the per-task gradients G")
        self._tic()
        w = self._solve(G, losses).to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w
        self._toc()
        return w

    def direction(self, G, losses):
        self._tic()
        w = self._solve(G, losses)
        d = _combine(w, G)
        self.last_weights = w.to(dtype=G.dtype)
        self._toc()
        return d, w.to(device=losses.device, dtype=losses.dtype)


class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018, Theorem 1): the same min-norm problem on the
    gradients w.r.t. the shared representation z (an upper bound, one backward pass instead of T).
    RuleStep calls ``weights(losses, G)`` with G = dL_t/dz flattened over batch and features and
    back-propagates sum_t w_t L_t."""
    name, needs, paper = "mgda-ub", "representation", "MGDA-UB on the shared representation (Sener & Koltun 2018)"


class PCGrad(Aggregator):
    """PCGrad, gradient surgery (Yu et al. 2020, Algorithm 1). For each task i, in a random order of
    the other tasks j: if g_i' . g_j < 0, g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j, always
    projecting against the ORIGINAL g_j. Direction = sum_i g_i' (the paper and the official code sum;
    the Nash-MTL port has a 'mean' option). Heads get the summed loss (weights None). The PyTorch
    port used by the benchmarks shuffles all tasks, i included (projecting g_i' on its own original
    g_i is a no-op unless earlier projections turned it against g_i); we follow the paper (j != i).

    Every g_i' stays in the span of the g_j, so we track coefficients C (g_i' = C_i G) and use only
    the Gram matrix: the result is exactly sum_i g_i' = (sum_i C_i) G; ``last_weights`` holds these
    effective coefficients. ``generator`` makes the shuffles reproducible."""
    name, needs, paper = "pcgrad", "jacobian", "PCGrad gradient surgery (Yu et al. 2020)"

    def __init__(self, num_tasks, *, generator: torch.Generator | None = None, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        self.generator = generator
        self.last_coefficients: torch.Tensor | None = None

    def direction(self, G, losses):
        self._tic()
        self._check(G, "G")
        T = self.num_tasks
        K = _gram(G).numpy()
        C = np.eye(T)
        for i in range(T):
            order = [j for j in torch.randperm(T, generator=self.generator).tolist() if j != i]
            for j in order:
                dot = C[i] @ K[:, j]
                if dot < 0 and K[j, j] > 0:
                    C[i, j] -= dot / K[j, j]
        C = torch.from_numpy(C)
        w = C.sum(0)
        self.last_coefficients = C          # projected gradients: g_i' = C[i] @ G
        self.last_weights = w.to(dtype=G.dtype)
        d = _combine(w, G)
        self._toc()
        return d, None


class GradDrop(Aggregator):
    """GradDrop, gradient sign dropout (Chen et al. 2020, NeurIPS, 'Just pick a sign').
    Per coordinate the sign purity P = 1/2 (1 + sum_t g_t / sum_t |g_t|); one U ~ Uniform(0, 1) per
    coordinate; task t keeps its coordinate iff (P > U and g_t > 0) or (P < U and g_t < 0); with a
    leak l_t in [0, 1] the kept gradient is l_t g_t + (1 - l_t) M_t g_t (leak 0 by default).
    Direction = sum_t of the kept gradients (the FAMO / FairGrad code takes the mean times T).
    The paper applies GradDrop to the gradients of a shared activation (summed over the batch); the
    benchmark codes apply it to the Jacobian of the shared parameters, as done here. Heads get the
    summed loss. ``generator`` draws U on its own device (without one: the global RNG on G's device)."""
    name, needs, paper = "graddrop", "jacobian", "GradDrop sign dropout (Chen et al. 2020)"

    def __init__(self, num_tasks, *, leak: float | list[float] = 0.0,
                 generator: torch.Generator | None = None, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        self.leak = torch.as_tensor(leak, dtype=torch.float64).expand(num_tasks).clone()
        if bool(((self.leak < 0) | (self.leak > 1)).any()):
            raise HyperparameterError(f"graddrop: leak must lie in [0, 1], got {leak}")
        self.generator = generator

    def direction(self, G, losses):
        self._tic()
        self._check(G, "G")
        G = G.detach()
        P = 0.5 * (1.0 + G.sum(0) / (G.abs().sum(0) + 1e-8))
        dev = self.generator.device if self.generator is not None else G.device
        U = torch.rand(G.shape[1], generator=self.generator, device=dev).to(device=G.device, dtype=G.dtype)
        M = ((P > U) & (G > 0)) | ((P < U) & (G < 0))
        leak = self.leak.to(device=G.device, dtype=G.dtype)[:, None]
        d = (G * (leak + (1 - leak) * M.to(G.dtype))).sum(0)
        self.last_weights = None
        self._toc()
        return d, None


class CAGrad(Aggregator):
    """CAGrad, conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu 2021, NeurIPS; Algorithm 1).
    With g0 = mean_t g_t and phi = c^2 ||g0||^2, solve the dual over the simplex
        w* = argmin_w F(w) = g_w . g0 + sqrt(phi) ||g_w||,   g_w = sum_t w_t g_t,
    (a convex T-dim problem, written with the Gram matrix K: g_w . g0 = w^T K 1/T,
    ||g_w|| = sqrt(w^T K w); solved by SLSQP from the uniform point, as the official code, with
    analytic gradients, tighter tolerances and the Gram normalised by its norm - F is homogeneous in
    K, so the minimiser is unchanged), then
        d = (g0 + sqrt(phi) / ||g_w*|| g_w*) / (1 + c^2)     (rescale=1, the official default;
             rescale=0: no division, rescale=2: divide by 1 + c),
    which maximises min_t g_t . d over the ball ||d - g0|| <= c ||g0|| (before rescaling).
    c = 0.4 (the official NYUv2 / Cityscapes run scripts). At c = 0, d = g0. The official code multiplies the
    final update by T ('to match the sum loss'); this is off by default (the paper's update, and the
    project's reference notes) and available as ``scale_by_num_tasks=True``. Heads get the summed
    loss (weights None), as in the official code (each L_t is back-propagated unweighted). The
    CAGrad code does not clip (the FAMO / FairGrad benchmark clips at 1.0)."""
    name, needs, paper = "cagrad", "jacobian", "CAGrad conflict-averse gradient (Liu et al. 2021)"

    def __init__(self, num_tasks, *, c: float = 0.4, rescale: int = 1, scale_by_num_tasks: bool = False,
                 max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if c < 0 or rescale not in (0, 1, 2):
            raise HyperparameterError(f"cagrad: need c >= 0 and rescale in 0|1|2, got c={c}, rescale={rescale}")
        self.c, self.rescale, self.scale_by_num_tasks = float(c), int(rescale), bool(scale_by_num_tasks)
        self.last_dual: np.ndarray | None = None

    @staticmethod
    def solve_dual(K: np.ndarray, c: float) -> np.ndarray:
        """argmin over the simplex of w^T K b + c sqrt(b^T K b) sqrt(w^T K w), b = 1/T."""
        T = K.shape[0]
        b = np.full(T, 1.0 / T)
        s = np.linalg.norm(K)
        if T == 1 or s == 0:
            return b
        K = K / s
        Kb = K @ b
        sphi = c * math.sqrt(max(float(b @ Kb), 0.0))

        def fun(w):
            return float(w @ Kb + sphi * math.sqrt(max(float(w @ K @ w), 0.0) + 1e-16))

        def jac(w):
            return Kb + sphi * (K @ w) / math.sqrt(max(float(w @ K @ w), 0.0) + 1e-16)

        res = scipy.optimize.minimize(
            fun, b, jac=jac, method="SLSQP", bounds=[(0.0, 1.0)] * T,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
            options={"ftol": 1e-12, "maxiter": 500})
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum() if w.sum() > 0 else b
        return w if fun(w) <= fun(b) else b

    def direction(self, G, losses):
        self._tic()
        self._check(G, "G")
        T = self.num_tasks
        K = _gram(G)
        b = torch.full((T,), 1.0 / T, dtype=torch.float64)
        coef = b.clone()
        if self.c > 0:
            w = torch.from_numpy(self.solve_dual(K.numpy(), self.c))
            self.last_dual = w.numpy()
            g0_norm = math.sqrt(max(float(b @ K @ b), 0.0))
            gw_norm = math.sqrt(max(float(w @ K @ w), 0.0))
            lam = self.c * g0_norm / gw_norm if gw_norm > 0 else 0.0
            coef = coef + lam * w
        coef = coef / {0: 1.0, 1: 1.0 + self.c ** 2, 2: 1.0 + self.c}[self.rescale]
        if self.scale_by_num_tasks:
            coef = coef * T
        self.last_weights = coef.to(dtype=G.dtype)
        d = _combine(coef, G)
        self._toc()
        return d, None


class IMTL(Aggregator):
    """IMTL, impartial multi-task learning (Liu et al. 2021, ICLR). ``mode``:

    'grad' (IMTL-G): find d = sum_t alpha_t g_t, sum_t alpha_t = 1, whose projections on all
      unit gradients u_t = g_t / ||g_t|| are equal. With D = [g_1 - g_t]_{t>=2} and
      U = [u_1 - u_t]_{t>=2}: alpha_{2:T} = g_1 U^T (D U^T)^{-1}, alpha_1 = 1 - sum alpha_{2:T}
      (computed from the Gram matrix). The direction is invariant, up to scale, to positive scaling
      of any g_t. The paper computes the gradients w.r.t. the shared representation; the benchmark
      codes (and we) use the Jacobian of the shared parameters. Heads: the paper updates each head
      with its own loss (weights None); the Nash-MTL code weights them by alpha.
    'loss' (IMTL-L): learnable scales s (init 0), L = sum_t (e^{s_t} L_t - s_t); needs
      'losses' and ``parameters()`` returns [s] (the training loop's optimiser updates it).
    'hybrid' (IMTL, Algorithm 1): the scaled gradients e^{s_t} g_t go through IMTL-G; heads get
      sum_t e^{s_t} L_t. s is stepped inside the rule (Adam, ``scale_lr`` default 1e-4, the
      benchmark model lr) with the closed-form gradient d/ds_t (e^{s_t} L_t - s_t) = e^{s_t} L_t - 1."""
    name, needs, paper = "imtl", "jacobian", "IMTL-G / IMTL-L / hybrid (Liu et al. 2021)"

    def __init__(self, num_tasks, *, mode: str = "grad", scale_lr: float = 1e-4, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if mode not in ("grad", "loss", "hybrid"):
            raise HyperparameterError(f"imtl: mode must be grad|loss|hybrid, got {mode!r}")
        self.mode = mode
        self.needs = "losses" if mode == "loss" else "jacobian"
        self.log_scales = torch.zeros(num_tasks, requires_grad=(mode == "loss"))
        self._opt = _Adam(scale_lr)

    def parameters(self):
        return [self.log_scales] if self.mode == "loss" else []

    @staticmethod
    def imtl_g_weights(K: torch.Tensor) -> torch.Tensor:
        """alpha of IMTL-G from the Gram matrix K = G G^T (float64)."""
        T = K.shape[0]
        if T == 1:
            return torch.ones(1, dtype=torch.float64)
        n = K.diagonal().clamp_min(1e-300).sqrt()
        Ku = K / n[None, :]                      # Ku[i, j] = g_i . u_j
        a = Ku[0, 0] - Ku[0, 1:]                 # g_1 . (u_1 - u_j)
        DU = (Ku[0, 0] - Ku[0, 1:])[None, :] - (Ku[1:, 0:1] - Ku[1:, 1:])   # (g_1 - g_i) . (u_1 - u_j)
        try:
            rest = torch.linalg.solve(DU.T, a)
        except RuntimeError:                     # singular (e.g. two equal gradients)
            rest = torch.linalg.lstsq(DU.T, a[:, None]).solution[:, 0]
        return torch.cat([(1 - rest.sum()).reshape(1), rest])

    def _s(self, losses):
        return self.log_scales.to(device=losses.device, dtype=losses.dtype)  # differentiable move

    def _alpha(self, G):
        """IMTL-G coefficients on the raw gradients (scaled by e^s in hybrid mode) and the scales."""
        self._check(G, "G")
        K = _gram(G)
        if self.mode != "hybrid":
            return self.imtl_g_weights(K), None
        scale = torch.exp(self.log_scales.detach()).to("cpu", torch.float64)
        return self.imtl_g_weights(K * scale[:, None] * scale[None, :]) * scale, scale

    def weights(self, losses, G=None):
        self._tic()
        self._check(losses, "losses")
        if self.mode == "loss" or G is None:
            w = torch.exp(self._s(losses).detach())
        else:
            w = self._alpha(G)[0]
        w = w.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w
        self._toc()
        return w

    def loss(self, losses):
        self._tic()
        self._check(losses, "losses")
        s = self._s(losses)
        self.last_weights = torch.exp(s.detach())
        out = (torch.exp(s) * losses - s).sum()
        self._toc()
        return out

    def direction(self, G, losses):
        self._tic()
        alpha, scale = self._alpha(G)
        head_w = None
        if scale is not None:  # hybrid: heads get sum_t e^{s_t} L_t; one Adam step on s
            head_w = scale.to(device=losses.device, dtype=losses.dtype)
            L = losses.detach().to("cpu", torch.float64)
            s = self.log_scales.to(torch.float64)
            self.log_scales = self._opt.step(s, torch.exp(s) * L - 1.0).to(self.log_scales.dtype)
        self.last_weights = alpha.to(dtype=G.dtype)
        d = _combine(alpha, G)
        self._toc()
        return d, head_w


class NashMTL(Aggregator):
    """Nash-MTL (Navon et al. 2022, ICML): the Nash bargaining solution d = sum_t alpha_t g_t with
    alpha > 0 solving  G G^T alpha = 1/alpha  (here G is T x d, so the Gram is G G^T; every task gets
    g_t . d = 1/alpha_t, 'proportional fairness').

    Official code: the Gram is divided by its Frobenius norm s (numerics), and up to 20 iterations
    of a convex-concave procedure, each an ECOS solve through cvxpy (constraints
    alpha_t (G G^T alpha)_t >= 1 written as log(alpha_t s) + log((K alpha)_t) >= 0 with K = Gram / s),
    warm-started at the previous alpha; it stops early when ||K alpha - 1/alpha|| < 1e-3 - a test on
    the normalised Gram that the unnormalised fixed point does not satisfy unless s = 1, so in
    practice it stops when alpha changes by < 1e-6 or after 20 iterations.
    Here: the root beta of K beta = 1/beta (K = Gram / ||Gram||_F, unique, found by the exact
    damped-Newton solver of `solve_power_equation`, warm-started at the previous beta, max 20
    Newton steps, residual max_t |beta_t (K beta)_t - 1| < 1e-8), mapped back by
    alpha = beta / sqrt(s), which satisfies G G^T alpha = 1/alpha exactly - the point that the
    official constraints encode. (``last_beta`` keeps beta.) Heads get sum_t alpha_t L_t (the
    official weighted loss). ``update_weights_every`` k: solve every k-th call, reuse alpha between
    (official default 1). max_norm 1.0 (official, after backward). If 0 is in the convex hull of the
    gradients (rank-deficient conflicts) no solution exists; the last Newton iterate is used."""
    name, needs, paper = "nashmtl", "jacobian", "Nash-MTL bargaining solution (Navon et al. 2022)"
    default_max_norm = 1.0

    def __init__(self, num_tasks, *, update_weights_every: int = 1, max_iter: int = 20,
                 tol: float = 1e-8, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if int(update_weights_every) < 1:
            raise HyperparameterError(f"nashmtl: update_weights_every must be >= 1, got {update_weights_every}")
        self.update_weights_every, self.max_iter, self.tol = int(update_weights_every), int(max_iter), float(tol)
        self.step = 0
        self.alpha: torch.Tensor | None = None
        self.last_beta: torch.Tensor | None = None
        self.last_residual = math.nan
        self.last_iterations = 0

    def direction(self, G, losses):
        self._tic()
        self._check(G, "G")
        if self.alpha is None or self.step % self.update_weights_every == 0:
            Gram = _gram(G)
            s = float(torch.linalg.norm(Gram))
            if s > 0 and math.isfinite(s):
                beta, its, res = solve_power_equation(Gram / s, 1.0, self.last_beta, self.max_iter, self.tol)
                if bool(torch.isfinite(beta).all()):
                    self.last_beta, self.last_iterations, self.last_residual = beta, its, res
                    self.alpha = beta / math.sqrt(s)
            if self.alpha is None:
                self.alpha = torch.ones(self.num_tasks, dtype=torch.float64)
        self.step += 1
        d = _combine(self.alpha, G)
        self.last_weights = self.alpha.to(dtype=G.dtype)
        self._toc()
        return d, self.alpha.to(device=losses.device, dtype=losses.dtype)


class FairGrad(Aggregator):
    """FairGrad, alpha-fair resource allocation (Ban & Ji 2024, ICML): maximise
    sum_t (g_t . d)^(1-a) / (1-a); with d = sum_t w_t g_t the optimality condition is
        (G G^T) w = w^(-1/a),   w > 0,
    (a = 1 gives Nash-MTL). Official code: scipy.optimize.least_squares (bounds (0, inf), start 1/T,
    default tolerances) on the unnormalised Gram. Here: the same unique root found exactly by the
    convex Newton solver of `solve_power_equation` on K = Gram / s (s = ||Gram||_F) and mapped back
    by w = v s^(-1/(1+p)), p = 1/a (then (G G^T) w = w^-p holds exactly). ``last_solution`` keeps w.
    The official code multiplies the update by T ('to match the sum loss') and the reference notes
    make that the rule: d = T sum_t w_t g_t (``scale_by_num_tasks``, default True). a = 2.0 (every
    published run), max_norm 1.0 (official clip). Heads get the summed loss (weights None)."""
    name, needs, paper = "fairgrad", "jacobian", "FairGrad alpha-fairness (Ban & Ji 2024)"
    default_max_norm = 1.0

    def __init__(self, num_tasks, *, alpha: float = 2.0, scale_by_num_tasks: bool = True,
                 max_iter: int = 50, tol: float = 1e-8, max_norm=None):
        super().__init__(num_tasks, max_norm=max_norm)
        if not alpha > 0:
            raise HyperparameterError(f"fairgrad: alpha must be > 0, got {alpha}")
        self.alpha, self.scale_by_num_tasks = float(alpha), bool(scale_by_num_tasks)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.last_solution: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.last_residual = math.nan

    def direction(self, G, losses):
        self._tic()
        self._check(G, "G")
        p = 1.0 / self.alpha
        Gram = _gram(G)
        s = float(torch.linalg.norm(Gram))
        w = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64)
        if s > 0 and math.isfinite(s):
            v, _, res = solve_power_equation(Gram / s, p, self._v, self.max_iter, self.tol)
            if bool(torch.isfinite(v).all()):
                self._v, self.last_residual = v, res
                w = v * s ** (-1.0 / (1.0 + p))
        self.last_solution = w
        coef = w * self.num_tasks if self.scale_by_num_tasks else w
        self.last_weights = coef.to(dtype=G.dtype)
        d = _combine(coef, G)
        self._toc()
        return d, None


# --------------------------------------------------------------------------------------------
# applying a rule to a model: RuleStep (the drop-in for a training loop) and aggregate (on a given G)
# --------------------------------------------------------------------------------------------

def _fill_row(row: torch.Tensor, grads, params) -> None:
    """Copy a tuple of gradients of `params` (None = zero) into one row of the Jacobian buffer."""
    i = 0
    for g, p in zip(grads, params):
        n = p.numel()
        if g is not None:
            row[i:i + n].copy_(g.reshape(-1))
        i += n


def jacobian(losses: torch.Tensor, params, retain_graph: bool = False) -> torch.Tensor:
    """The T x d Jacobian of the task losses w.r.t. `params` (flattened and concatenated), one
    backward per task; the graph is kept for all but the last task unless `retain_graph`."""
    T = len(losses)
    G = losses.new_zeros(T, sum(p.numel() for p in params))  # one buffer, filled row by row
    for t in range(T):
        grads = torch.autograd.grad(losses[t], params, retain_graph=retain_graph or t < T - 1, allow_unused=True)
        _fill_row(G[t], grads, params)
    return G


def set_flat_grad(params, flat: torch.Tensor, accumulate: bool = False) -> None:
    """Write a flat vector into the .grad of `params` (in order)."""
    i = 0
    for p in params:
        n = p.numel()
        g = flat[i:i + n].view_as(p).to(p.dtype)
        if accumulate and p.grad is not None:
            p.grad.add_(g)
        else:
            p.grad = g.clone()  # own storage: in-place clipping must not touch the caller's vector
        i += n


class RuleStep:
    """One rule applied to one model: fills the gradients and runs the rule's per-step and per-epoch
    hooks, so that a training loop needs nothing else of the rule (see the module docstring).

    ``shared``: the shared parameters; ``heads``: one list of parameters per task of the rule (task
    t's own; may be empty; a subset of a model's tasks is a subset of its heads); ``last_shared``: the
    parameters of the last shared layer (GradNorm only); ``max_norm``: the norm the shared gradient
    is clipped to after backward (None: the rule's ``default_max_norm``; 0: no clipping).
    ``RuleStep.for_model(rule, model, tasks)`` takes them from a model with the suite's protocol."""

    def __init__(self, rule: Aggregator, shared, heads, last_shared=None, max_norm: float | None = None):
        self.rule = rule
        self.shared = list(shared)
        self.heads = [list(h) for h in heads]
        if len(self.heads) != rule.num_tasks:
            raise ValueError(f"{rule.name}: the rule has {rule.num_tasks} tasks but {len(self.heads)} lists of head parameters were given")
        self.last_shared = None if last_shared is None else list(last_shared)
        if rule.needs == "last_shared" and not self.last_shared:
            raise ValueError(f"{rule.name} needs last_shared= (the parameters of the last shared layer)")
        self.max_norm = float(rule.default_max_norm if max_norm is None else max_norm)
        if self.max_norm < 0:
            raise ValueError(f"{rule.name}: max_norm must be >= 0, got {max_norm}")
        self._sums: torch.Tensor | None = None  # the epoch's summed task losses, on their device
        self._n = 0
        self._losses: torch.Tensor | None = None  # the last step's losses, for after_step

    @classmethod
    def for_model(cls, rule: Aggregator, model, tasks=None, max_norm: float | None = None) -> "RuleStep":
        """From a model with shared_parameters(), task_parameters(t) and last_shared_parameters();
        ``tasks``: the model's task indices the rule sees (default all)."""
        tasks = range(rule.num_tasks) if tasks is None else tasks
        last = model.last_shared_parameters() if rule.needs == "last_shared" else None
        return cls(rule, model.shared_parameters(), [model.task_parameters(t) for t in tasks], last, max_norm)

    def parameters(self) -> list[torch.Tensor]:
        """The rule's own learnable tensors (UW, IMTL-L): put them in the training loop's optimiser."""
        return self.rule.parameters()

    def backward(self, losses: torch.Tensor, rep: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the .grad of the shared and head parameters (and of the rule's own parameters) from the
        T task losses as the rule says, clip the shared gradient to max_norm and keep the detached
        losses (after_step, end_epoch); returns the task weights used.

        - needs "losses" (LS, SI, RLW, DWA, UW, FAMO, IMTL-L): back-propagate rule.loss(losses).
        - needs "jacobian" (MGDA, PCGrad, CAGrad, IMTL, Nash-MTL, FairGrad, GradDrop): one backward per
          task gives task t's gradient on the shared parameters (a row of G) and on its own head at
          once; the shared gradient is rule.direction(G, L), head t gets w_t times its own gradient.
        - needs "last_shared" (GradNorm): G on the last shared layer only, then sum_t w_t L_t.
        - needs "representation" (MGDA-UB): G w.r.t. the shared representation `rep` (the tensor the
          heads read), then sum_t w_t L_t."""
        rule, T = self.rule, len(losses)
        if rule.needs == "losses":
            rule.loss(losses).backward()
            w = rule.last_weights
            w = w.detach() if isinstance(w, torch.Tensor) else torch.ones(T)
        elif rule.needs == "jacobian":
            shared, heads = self.shared, self.heads
            G = losses.new_zeros(T, sum(p.numel() for p in shared))  # one buffer, filled row by row
            head_grads = []
            for t in range(T):
                grads = torch.autograd.grad(losses[t], shared + heads[t], retain_graph=t < T - 1, allow_unused=True)
                _fill_row(G[t], grads[:len(shared)], shared)
                head_grads.append(grads[len(shared):])
            d, w = rule.direction(G, losses.detach())
            set_flat_grad(shared, d)
            w = torch.ones(T, device=G.device) if w is None else w.detach()
            for t in range(T):
                for p, g in zip(heads[t], head_grads[t]):
                    p.grad = (g * w[t]) if g is not None else torch.zeros_like(p)
        elif rule.needs in ("last_shared", "representation"):
            if rule.needs == "representation" and not isinstance(rep, torch.Tensor):
                got = "none" if rep is None else f"a {type(rep).__name__} (task-specific features)"
                raise RuleInputError(f"{rule.name} needs rep = the one shared representation tensor, got {got}; use mgda")
            G = jacobian(losses, self.last_shared if rule.needs == "last_shared" else [rep], retain_graph=True)
            w = rule.weights(losses.detach(), G).detach()
            (w.to(losses.dtype) * losses).sum().backward()
        else:
            raise ValueError(f"aggregator {rule.name!r} has unknown needs={rule.needs!r}")
        self.after_backward(losses)
        return w

    def after_backward(self, losses: torch.Tensor) -> None:
        """The rest of `backward` for a caller that wrote the .grad itself (SAM-MTL): clip the shared
        gradient to max_norm and keep the detached losses for after_step and the epoch mean (summed
        in float32 on their device: no host sync)."""
        if self.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.shared, self.max_norm)
        self._losses = losses.detach()
        if self._sums is None:
            self._sums = torch.zeros(len(losses), device=losses.device)
        self._sums += self._losses
        self._n += 1

    @property
    def needs_after_step(self) -> bool:
        """Whether the rule learns from the losses after the optimiser step (FAMO's post_step)."""
        return type(self.rule).post_step is not Aggregator.post_step

    def after_step(self, recompute) -> None:
        """Call after the optimiser step. Only for a rule that needs it (FAMO): ``recompute()`` (run
        under torch.no_grad) returns the task losses of the same batch at the new parameters, and
        the rule's post_step compares them with the losses of backward. Recompute with BatchNorm
        statistics frozen, or they move twice per step."""
        if not self.needs_after_step:
            return
        if self._losses is None:
            raise RuntimeError(f"{self.rule.name}: after_step() needs a backward() first")
        with torch.no_grad():
            after = recompute()
        self.rule.post_step(self._losses, after)

    def end_epoch(self) -> torch.Tensor:
        """The epoch's mean task losses (a CPU tensor: the epoch's one host read), handed to the rule's
        epoch_end (DWA, GradNorm's warm-up); the sums start afresh."""
        sums = self._sums.cpu() if self._sums is not None else torch.zeros(self.rule.num_tasks)
        mean = sums / max(self._n, 1)
        self.rule.epoch_end(mean)
        self._sums, self._n, self._losses = None, 0, None
        return mean

    def state_dict(self) -> dict:
        """The rule's state_dict and the epoch's running sums (weights_only-loadable)."""
        return {"rule": self.rule.state_dict(), "sums": None if self._sums is None else self._sums.clone(), "n": self._n}

    def load_state_dict(self, state: dict) -> None:
        self.rule.load_state_dict(state["rule"])
        self._sums, self._n, self._losses = state["sums"], int(state["n"]), None


def aggregate(agg: Aggregator, G: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Any rule as an update direction on a given Jacobian G (T x d), e.g. for SAM-MTL, which
    aggregates both the gradients and the SAM corrections.

    'jacobian' rules: agg.direction(G, losses)[0]. Other rules: agg.weights(losses, G) @ G, which is
    exact for LS, SI, RLW, DWA, MGDA-UB (then plain MGDA on G) and for the shared-parameter gradient
    of UW, IMTL-L and FAMO at their current parameters. Approximations: UW / IMTL-L scales and FAMO
    logits are not updated here (they move through the training loop's optimiser / post_step); GradNorm
    measures its gradient norms on the rows of this G (not on the last shared layer) and, being
    stateful, takes its weight step on every call. Stateful rules (GradNorm, RLW draws, Nash-MTL warm
    start and update counter) see every call, so calling aggregate twice per step advances them twice."""
    if agg.needs == "jacobian":
        return agg.direction(G, losses)[0]
    w = agg.weights(losses.detach(), G)
    return _combine(w, G)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls for cls in (LinearScalarization, ScaleInvariant, RLW, DWA, UW, GradNorm, FAMO,
                              MGDA, MGDAUB, PCGrad, GradDrop, CAGrad, IMTL, NashMTL, FairGrad)
}

# rule -> dataset -> hyperparameter overrides (from the official run scripts)
DATASET_DEFAULTS: dict[str, dict[str, dict]] = {
    "famo": {"cityscapes": {"gamma": 1e-2}, "nyuv2": {"gamma": 1e-3}, "celeba": {"gamma": 1e-3}},
}


def hyperparameters(cls: type[Aggregator]) -> dict:
    """The keyword-only hyperparameters of a rule and their defaults."""
    return dict(cls.__init__.__kwdefaults__ or {})


def make_aggregator(name: str, num_tasks: int, dataset: str | None = None, **overrides) -> Aggregator:
    """Build a rule by CLI name with its defaults, then the dataset defaults, then ``overrides``.
    Raises HyperparameterError (a ValueError and TypeError; one clear line) for an unknown rule,
    an unknown hyperparameter or a bad value."""
    if name not in AGGREGATORS:
        raise HyperparameterError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATORS)}")
    cls = AGGREGATORS[name]
    hyper = dict(DATASET_DEFAULTS.get(name, {}).get(dataset, {})) if dataset else {}
    hyper.update(overrides)
    valid = hyperparameters(cls)
    bad = [k for k in hyper if k not in valid]
    if bad:
        raise HyperparameterError(f"aggregator {name!r} has no hyperparameter {', '.join(bad)}; "
                         f"valid: {', '.join(valid) or '(none)'}")
    return cls(num_tasks, **hyper)


def describe() -> str:
    """One line per rule: name, needs, paper, default hyperparameters (for --help)."""
    lines = []
    for name, cls in AGGREGATORS.items():
        hp = {k: v for k, v in hyperparameters(cls).items() if v is not None}
        hp["max_norm"] = cls.default_max_norm
        extra = ", ".join(f"{k}={v}" for k, v in hp.items())
        lines.append(f"{name:9s} [{cls.needs}] {cls.paper}; {extra}")
    return "\n".join(lines)
