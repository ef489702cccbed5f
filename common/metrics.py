"""Task losses, task metrics and the multi-task summaries (Delta-m%, Mean Rank, hypervolume,
Spearman, non-dominated filtering).

Losses follow the MTAN / Nash-MTL benchmark code (see ../shared/REFERENCE_NOTES.md):
segmentation is NLL on log-softmax ignoring label -1, depth is L1 over valid pixels, normals are
1 - mean cosine over valid pixels (a pixel is invalid where its target sums to 0).

Metrics are accumulated over the whole split, never averaged per batch (the benchmark code averages
per-batch values, even the median normal error; pooling over every pixel is the correct figure):
- segmentation: one confusion matrix over the split -> mIoU (classes with a non-empty union) and
  pixel accuracy;
- depth: absolute and relative error over all valid pixels of the split;
- normals: angular error of every valid pixel, in a 0.01-degree histogram -> mean (exact), median
  (to 0.005 degree) and the fractions below 11.25, 22.5 and 30 degrees (exact);
- classification accuracy, binary F1 at threshold 0.5 (CelebA, as FAMO/FairGrad report it), and
  MAE / Huber for regression.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Which metrics enter Delta-m% for each task kind (binary tasks: F1 only, regression: MAE only).
DELTA_METRICS_BY_KIND = {
    "class": ("acc",),
    "binary": ("f1",),
    "huber": ("mae",),
    "seg": ("miou", "pixacc"),
    "depth": ("abs_err", "rel_err"),
    "normal": ("mean", "median", "11.25", "22.5", "30"),
    "toy": ("loss",),
}


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def _valid_mask(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float mask of pixels whose target is not all zeros."""
    return (target.sum(dim=1, keepdim=True) != 0).to(target.dtype)


def task_loss(spec, pred: torch.Tensor, target: torch.Tensor, info: Mapping | None = None, index: int = 0) -> torch.Tensor:
    """The training loss of one task (a scalar), by `spec.kind`."""
    kind = spec.kind
    if kind == "class":
        return F.cross_entropy(pred, target)
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(pred.reshape(target.shape), target.float())
    if kind == "huber":
        return F.huber_loss(pred.reshape(target.shape), target.float(), delta=1.0)
    if kind == "seg":
        return F.nll_loss(F.log_softmax(pred, dim=1), target, ignore_index=-1)
    if kind == "depth":
        mask = _valid_mask(target)
        return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)
    if kind == "normal":
        mask = _valid_mask(target)
        pred = F.normalize(pred, dim=1)
        return 1.0 - (pred * target * mask).sum() / mask.sum().clamp_min(1.0)
    if kind == "toy":
        from common.data import toy_losses

        c = (info or {}).get("c", 1.0)
        return toy_losses(pred[0], c)[index]
    raise ValueError(f"unknown task kind {kind!r}")


def task_losses(data, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], task_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Vector (T,) of task losses; `task_ids` maps output k to the dataset's task index."""
    ids = range(len(outputs)) if task_ids is None else task_ids
    return torch.stack([task_loss(data.tasks[i], o, targets[i], data.info, i) for o, i in zip(outputs, ids)])


# --------------------------------------------------------------------------------------------
# Meters: accumulate over a split, then compute()
# --------------------------------------------------------------------------------------------
class TaskMeter:
    """Accumulates one task's predictions over a split; `compute()` gives {metric: value}."""

    def __init__(self, spec, info: Mapping | None = None, index: int = 0):
        self.spec, self.info, self.index = spec, info or {}, index
        self.n = 0
        self.loss_sum = 0.0
        k = spec.kind
        if k == "seg":
            self.conf = None
        elif k == "normal":
            self.hist = torch.zeros(18001, dtype=torch.float64)
            self.angle_sum = 0.0
        self.s = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        k = self.spec.kind
        bs = target.shape[0] if target.dim() > 0 else 1
        self.loss_sum += float(task_loss(self.spec, pred, target, self.info, self.index)) * bs
        self.n += bs
        s = self.s
        if k == "class":
            s["a"] += float((pred.argmax(1) == target).sum())
        elif k == "binary":
            p = (pred.reshape(target.shape) > 0).float()
            t = target.float()
            s["a"] += float((p * t).sum())  # tp
            s["b"] += float((p * (1 - t)).sum())  # fp
            s["c"] += float(((1 - p) * t).sum())  # fn
            s["d"] += float((p == t).sum())  # correct
        elif k == "huber":
            e = pred.reshape(target.shape).float() - target.float()
            s["a"] += float(e.abs().sum())
        elif k == "seg":
            c = self.spec.out_dim
            p = pred.argmax(1).flatten()
            t = target.flatten()
            valid = t >= 0
            idx = t[valid] * c + p[valid]
            m = torch.bincount(idx, minlength=c * c).reshape(c, c).cpu().double()
            self.conf = m if self.conf is None else self.conf + m
        elif k == "depth":
            mask = _valid_mask(target).bool().expand_as(target)
            e = (pred - target)[mask].abs()
            s["a"] += float(e.sum())
            s["b"] += float((e / target[mask].abs()).sum())
            s["c"] += float(mask.sum())
        elif k == "normal":
            mask = _valid_mask(target).bool()[:, 0]
            cos = (F.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
            ang = torch.rad2deg(torch.acos(cos))[mask].double()
            self.angle_sum += float(ang.sum())
            self.hist += torch.bincount((ang * 100).floor().long().clamp(0, 18000), minlength=18001).cpu().double()

    def compute(self) -> dict[str, float]:
        k, s = self.spec.kind, self.s
        n = max(self.n, 1)
        if k == "class":
            return {"acc": s["a"] / n}
        if k == "binary":
            tp, fp, fn = s["a"], s["b"], s["c"]
            f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
            return {"f1": f1, "acc": s["d"] / n}
        if k == "huber":
            return {"mae": s["a"] / n, "huber": self.loss_sum / n}
        if k == "seg":
            return confusion_metrics(self.conf if self.conf is not None else torch.zeros(1, 1))
        if k == "depth":
            c = max(s["c"], 1.0)
            return {"abs_err": s["a"] / c, "rel_err": s["b"] / c}
        if k == "normal":
            return histogram_angle_metrics(self.hist, self.angle_sum)
        if k == "toy":
            return {"loss": self.loss_sum / n}
        raise ValueError(k)


def confusion_metrics(conf: torch.Tensor) -> dict[str, float]:
    """mIoU over classes with a non-empty union, and pixel accuracy, from a (C, C) matrix
    (rows = ground truth, columns = prediction)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
    total = conf.sum()
    return {"miou": miou, "pixacc": float(tp.sum() / total) if total > 0 else 0.0}


def histogram_angle_metrics(hist: torch.Tensor, angle_sum: float) -> dict[str, float]:
    """Normal metrics from a histogram of angles in 0.01-degree bins (bin i holds [i/100, (i+1)/100)
    degrees): the fractions "within t" count errors < t exactly (t is a multiple of 0.01), the median
    is the centre of its bin (within 0.005 degree)."""
    total = float(hist.sum())
    if total == 0:
        return {"mean": 0.0, "median": 0.0, "11.25": 0.0, "22.5": 0.0, "30": 0.0}
    cdf = torch.cumsum(hist, 0)
    median = (float(torch.searchsorted(cdf, torch.tensor(total / 2, dtype=cdf.dtype))) + 0.5) / 100.0
    within = lambda deg: float(hist[: int(round(deg * 100))].sum()) / total  # noqa: E731  (error < deg, as MTAN)
    return {"mean": angle_sum / total, "median": median, "11.25": within(11.25), "22.5": within(22.5), "30": within(30)}


# --------------------------------------------------------------------------------------------
# Multi-task summaries
# --------------------------------------------------------------------------------------------
def delta_m(metrics: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]], specs) -> float | None:
    """Delta-m% of EXTRA Eq. 8 (Maninis et al. 2019), averaged flatly over all K metrics:

        Delta-m% = 1/K sum_k (-1)^{delta_k} (M_m,k - M_b,k) / M_b,k * 100,

    delta_k = 1 when higher is better. Lower is better. The metrics are those of
    DELTA_METRICS_BY_KIND that the reference holds; None if it holds none.
    """
    terms = []
    for spec in specs:
        ref = reference.get(spec.name) if reference else None
        if not ref or spec.name not in metrics:
            continue
        higher = dict(spec.metrics)
        for m in DELTA_METRICS_BY_KIND[spec.kind]:
            if m in ref and m in metrics[spec.name] and ref[m] != 0:
                sign = -1.0 if higher[m] else 1.0
                terms.append(sign * (metrics[spec.name][m] - ref[m]) / abs(ref[m]) * 100.0)
    return float(np.mean(terms)) if terms else None


def mean_rank(results: Mapping[str, Mapping[str, Mapping[str, float]]], specs) -> dict[str, float]:
    """Mean Rank: for each metric (of DELTA_METRICS_BY_KIND) rank the methods (1 = best, ties get
    the average rank), then average each method's ranks over the metrics."""
    methods = list(results)
    ranks = {m: [] for m in methods}
    for spec in specs:
        higher = dict(spec.metrics)
        for metric in DELTA_METRICS_BY_KIND[spec.kind]:
            have = [m for m in methods if metric in results[m].get(spec.name, {})]
            if len(have) < 2:
                continue
            vals = np.array([results[m][spec.name][metric] for m in have], dtype=float)
            r = _rank(-vals if higher[metric] else vals)
            for m, v in zip(have, r):
                ranks[m].append(v)
    return {m: float(np.mean(r)) if r else float("nan") for m, r in ranks.items()}


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x ascending, ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the tie-averaged ranks)."""
    rx, ry = _rank(np.asarray(x, float)), _rank(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def non_dominated(points, maximize: bool | Sequence[bool] = False) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (n, m)."""
    P = np.asarray(points, dtype=float)
    sign = np.where(np.broadcast_to(np.asarray(maximize), (P.shape[1],)), -1.0, 1.0)
    Q = P * sign  # minimise everything
    keep = np.ones(len(Q), dtype=bool)
    for i in range(len(Q)):
        dominated_by = np.all(Q <= Q[i], axis=1) & np.any(Q < Q[i], axis=1)
        if dominated_by.any():
            keep[i] = False
    return keep


def hypervolume(points, ref, maximize: bool | Sequence[bool] = False) -> float:
    """Exact hypervolume dominated by `points` (n, m), m in {2, 3}, bounded by `ref`.

    With maximize=True (accuracies) the volume is that of the box between ref and each point, e.g.
    ref = (0, 0) for two accuracies. Points that do not strictly improve on ref in every objective
    add nothing.
    """
    P = np.asarray(points, dtype=float).reshape(-1, len(ref))
    r = np.asarray(ref, dtype=float)
    sign = np.where(np.broadcast_to(np.asarray(maximize), (P.shape[1],)), -1.0, 1.0)
    P, r = P * sign, r * sign  # now minimise, ref is the upper corner
    P = P[np.all(P < r, axis=1)]
    if len(P) == 0:
        return 0.0
    P = P[non_dominated(P)]
    if P.shape[1] == 2:
        return _hv2(P, r)
    if P.shape[1] == 3:
        # sweep over the third objective: slabs between consecutive z values
        P = P[np.argsort(P[:, 2])]
        zs = np.append(P[:, 2], r[2])
        vol = 0.0
        for i in range(len(P)):
            depth = zs[i + 1] - zs[i]
            if depth > 0:
                vol += _hv2(P[: i + 1, :2], r[:2]) * depth
        return float(vol)
    raise ValueError("hypervolume is implemented exactly for 2 and 3 objectives")


# Hypervolume reference per task kind on the primary metric: 0 for accuracy-like metrics (PaLoRA's
# official compute_hv), 1 for depth absolute error and 90 degrees for normals (its Pareto plots).
HV_REFERENCE = {"class": 0.0, "binary": 0.0, "seg": 0.0, "depth": 1.0, "normal": 90.0}


def hv_reference(specs, points, override: Sequence[float] | None = None) -> list[float]:
    """The reference point for the hypervolume of `points` (n, T) of the tasks' primary metrics:
    `override` if given, else HV_REFERENCE by task kind, else 10% beyond the worst point."""
    if override is not None:
        return [float(r) for r in override]
    P = np.asarray(points, dtype=float)
    ref = []
    for i, spec in enumerate(specs):
        r = HV_REFERENCE.get(spec.kind)
        if r is None:
            higher = spec.metrics[0][1]
            worst = P[:, i].min() if higher else P[:, i].max()
            r = float(worst - 0.1 * abs(worst)) if higher else float(worst + 0.1 * abs(worst))
        ref.append(float(r))
    return ref


def _hv2(P: np.ndarray, r: np.ndarray) -> float:
    P = P[np.argsort(P[:, 0])]
    vol, best_y = 0.0, r[1]
    for x, y in P:
        if y < best_y:
            vol += (r[0] - x) * (best_y - y)
            best_y = y
    return float(vol)


def simplex_grid(num_tasks: int, n: int = 11) -> np.ndarray:
    """Evenly spaced points on the simplex with spacing 1/(n-1): 11 points for 2 tasks (n = 11),
    66 for 3 tasks; rows sum to 1, the first coordinate decreasing."""
    k = n - 1

    def rec(t, left):
        if t == 1:
            yield (left,)
            return
        for i in range(left, -1, -1):
            for rest in rec(t - 1, left - i):
                yield (i,) + rest

    return np.array(list(rec(num_tasks, k)), dtype=float) / k
