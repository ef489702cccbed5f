"""Task losses, task metrics and the multi-task summaries (Delta-m%, Mean Rank, hypervolume,
Spearman, non-dominated filtering).

Losses follow the MTAN / Nash-MTL benchmark code (see ../shared/REFERENCE_NOTES.md):
segmentation is NLL on log-softmax ignoring label -1, depth is L1 over valid pixels, normals are
1 - mean cosine over valid pixels (a pixel is invalid where its target sums to 0).

The dense-prediction suite of the AvgNorm paper (nyud, pascal-context; appendix "Loss functions")
follows the multi-task dense-prediction survey code (Vandenhende et al., losses/loss_functions.py)
and its successors ATRC / InvPT, which add ignore regions:
- segmentation and human parts: the `seg` kind (cross-entropy, ignore label -1, which the loaders
  map from the survey's 255);
- depth: the `depth` kind (L1 over valid pixels, as the survey's DepthLoss);
- normals (`normal_l1`): L1 between the L2-normalised prediction and the target, summed over the
  valid elements and divided by their number (3 per valid pixel), as the survey's NormalsLoss;
- saliency: balanced BCE, positive weight w = fraction of negative pixels in the batch,
  loss = (w sum_pos BCE + (1 - w) sum_neg BCE) / #pixels (BalancedCrossEntropyLoss);
- edges: the same with the fixed w = 0.95 (BalancedCrossEntropyLoss(pos_weight=0.95)).

Metrics are accumulated over the whole split, never averaged per batch (the benchmark code averages
per-batch values, even the median normal error; pooling over every pixel is the correct figure):
- segmentation: one confusion matrix over the split -> mIoU (classes with a non-empty union) and
  pixel accuracy;
- depth: absolute and relative error over all valid pixels of the split;
- normals: angular error of every valid pixel, in a 0.01-degree histogram -> mean (exact), median
  (to 0.005 degree) and the fractions below 11.25, 22.5 and 30 degrees (exact);
- classification accuracy, binary F1 at threshold 0.5 (CelebA, as FAMO/FairGrad report it), and
  MAE / Huber for regression;
- depth RMSE (dense suite): sqrt of the mean squared error over every valid pixel of the split, as
  the survey's DepthMeter / eval_depth (both pool pixels; predictions clamped at 0 like theirs);
- saliency maxF and edge odsF: see `SAL_THRESHOLDS` and `edge_counts` below.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Task kinds: one registry, TASK_KINDS[kind name] -> TaskKind
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskKind:
    """Everything the suite needs to know about one kind of task (a TaskSpec names it by `name`).

    loss(pred, target, info, index) -> scalar tensor: the training loss of one batch (`info` is the
        dataset's info dict, `index` the task's position among the dataset's tasks).
    metrics: ((name, higher_is_better), ...), the primary metric first; a task reports these unless
        it asks for others (`common.data.task(..., metrics=...)`) from these and `optional_metrics`.
    hv_reference: the fixed hypervolume reference value of the primary metric (the suite's rule, at
        "The suite's task kinds" below: 0 for accuracy-like metrics, 1 for losses and errors, ...).
    update(meter, pred, target): add one batch to the meter's running state (TaskMeter has already
        counted the batch in `meter.n` and its loss in `meter.loss_sum`); the state lives in
        `meter.sums` (floats, start at 0) or in attributes that `start(meter)` creates.
    compute(meter) -> {metric: value}: every metric, optional ones included, over the whole split.
    delta_metrics: the metrics that enter Delta-m%, Mean Rank and the selection score (default:
        every metric, optional ones included).
    """

    name: str
    loss: Callable[..., torch.Tensor]
    metrics: tuple[tuple[str, bool], ...]
    hv_reference: float
    update: Callable[..., None]
    compute: Callable[..., dict]
    start: Callable[..., None] | None = None
    optional_metrics: tuple[tuple[str, bool], ...] = ()
    delta_metrics: tuple[str, ...] | None = None

    def __post_init__(self):
        names = [m for m, _ in self.metrics + self.optional_metrics]
        if not self.metrics or len(set(names)) != len(names):
            raise ValueError(f"task kind {self.name!r}: metrics must be non-empty and unique, got {names}")
        unknown = [m for m in self.delta_metrics or () if m not in names]
        if unknown:
            raise ValueError(f"task kind {self.name!r}: delta metrics {unknown} are not among its metrics {names}")
        if not math.isfinite(float(self.hv_reference)):
            raise ValueError(f"task kind {self.name!r}: hv_reference must be a finite number")
        if self.delta_metrics is None:
            object.__setattr__(self, "delta_metrics", tuple(names))


TASK_KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind, replace: bool = False) -> TaskKind:
    """Add `kind` to TASK_KINDS, so that tasks of that kind train, are measured, enter Delta-m% and
    the hypervolume like the suite's own. A name already registered is an error unless `replace`."""
    if kind.name in TASK_KINDS and not replace:
        raise ValueError(f"task kind {kind.name!r} is already registered; pass replace=True to redefine it")
    TASK_KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> TaskKind:
    """The registered TaskKind called `name`; a one-line ValueError naming the known kinds otherwise."""
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; registered kinds: {', '.join(sorted(TASK_KINDS))} "
                         f"(add one with common.metrics.register_kind)") from None


def delta_metrics(spec) -> list[str]:
    """The metrics of task `spec` that enter Delta-m% and Mean Rank: its kind's `delta_metrics` that
    the task reports. A task that reports fewer (the dense suite's one metric per task,
    `task(..., metrics=...)`) is compared on exactly those."""
    reported = {m for m, _ in spec.metrics}
    return [m for m in kind_of(spec.kind).delta_metrics if m in reported]


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def _valid_mask(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float mask of pixels whose target is not all zeros."""
    return (target.sum(dim=1, keepdim=True) != 0).to(target.dtype)


def _nonzero_vector_mask(target: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool mask of pixels whose target vector has a non-zero component (the survey's
    normal validity rule: ignore where the norm is 0)."""
    return (target != 0).any(dim=1, keepdim=True)


# Edge loss weight of the positive (edge) pixels: AvgNorm appendix and the survey's configs (edge_w).
EDGE_POS_WEIGHT = 0.95


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """The survey's BalancedCrossEntropyLoss (size_average=True) with ignore regions.

    Pixels with target >= 0.5 are positive, target < 0 is ignored (padding of the augmentation).
    loss = (w * sum_pos BCE + (1 - w) * sum_neg BCE) / #valid pixels, with w = `pos_weight` (edges:
    0.95) or, when None, the fraction of negative pixels among the valid pixels of the batch
    (saliency, HED-style). Without ignored pixels this is the survey's value; with them it is the
    ATRC / InvPT variant (BalancedBinaryCrossEntropyLoss, ignore_index): statistics and the mean
    over valid pixels only. 0 when nothing is valid.
    """
    target = target.reshape(logits.shape)
    valid = target >= 0
    label = (target >= 0.5) & valid
    bce = F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype), reduction="none")
    n = valid.sum().clamp_min(1)
    if pos_weight is None:
        w = (valid & ~label).sum() / n
    else:
        w = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    pos = (bce * label).sum()
    neg = (bce * (valid & ~label)).sum()
    return (w * pos + (1 - w) * neg) / n


def normals_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The survey's NormalsLoss(normalize=True, norm=1): the prediction is L2-normalised per pixel
    (F.normalize; the survey divides by norm + 1e-12), the L1 difference to the target is summed
    over the valid elements (target vector non-zero; the survey marks invalid normals 255 in all
    three channels) and divided by their number, 3 per valid pixel. 0 when nothing is valid."""
    mask = _nonzero_vector_mask(target).to(pred.dtype)
    diff = (F.normalize(pred, dim=1) - target).abs() * mask
    return diff.sum() / (3.0 * mask.sum()).clamp_min(1.0)


def task_loss(spec, pred: torch.Tensor, target: torch.Tensor, info: Mapping | None = None, index: int = 0) -> torch.Tensor:
    """The training loss of one task (a scalar): the loss of its kind (`kind_of(spec.kind).loss`)."""
    return kind_of(spec.kind).loss(pred, target, info or {}, index)


def task_losses(data, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], task_ids: Sequence[int] | None = None) -> torch.Tensor:
    """Vector (T,) of task losses; `task_ids` maps output k to the dataset's task index."""
    ids = range(len(outputs)) if task_ids is None else task_ids
    return torch.stack([task_loss(data.tasks[i], o, targets[i], data.info, i) for o, i in zip(outputs, ids)])


# --------------------------------------------------------------------------------------------
# Meters: accumulate over a split, then compute()
# --------------------------------------------------------------------------------------------
class TaskMeter:
    """Accumulates one task's predictions over a split; `compute()` gives {metric: value} for
    exactly the metrics of the task's spec. What it accumulates is the task kind's (`TaskKind.start`,
    `update`, `compute`); the meter itself counts the samples (`n`) and sums the batch losses
    weighted by the batch size (`loss_sum`).

    Memory stays bounded whatever the split size: counts, a confusion matrix, an angle histogram,
    or per-threshold counts (saliency, edges); no prediction map is kept. Options read from the
    dataset's `info`: "edge_thresholds" (default 99), "edge_max_dist" (default 0.0075, BSDS /
    PASCAL; the nyud loader sets 0.011), "sal_thresholds", "sal_beta2", "edge_pos_weight".
    """

    def __init__(self, spec, info: Mapping | None = None, index: int = 0):
        self.spec, self.info, self.index = spec, info or {}, index
        self.kind = kind_of(spec.kind)
        self.n = 0
        self.loss_sum = 0.0
        self.sums: dict[str, float] = collections.defaultdict(float)
        if self.kind.start is not None:
            self.kind.start(self)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        bs = target.shape[0] if target.dim() > 0 else 1
        self.loss_sum += float(self.kind.loss(pred, target, self.info, self.index)) * bs
        self.n += bs
        self.kind.update(self, pred, target)

    def compute(self) -> dict[str, float]:
        out = self.kind.compute(self)
        return {m: out[m] for m, _ in self.spec.metrics}


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
# Saliency maxF (AvgNorm Sec. IV "Evaluation Metrics": maxF; ATRC / InvPT SaliencyMeter)
# --------------------------------------------------------------------------------------------
SAL_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
SAL_BETA2 = 0.3


def saliency_counts(prob: torch.Tensor, target: torch.Tensor, thresholds) -> torch.Tensor:
    """(3, K) float64 counts over the valid pixels (target >= 0) of a batch, one column per threshold
    t: true positives (prob >= t and target >= 0.5), predicted positives (prob >= t), actual
    positives (target >= 0.5). Summed over the split, they give `max_f`."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64, device=prob.device)
    valid = target >= 0
    p = prob.double()[valid]
    gt = target[valid] >= 0.5
    out = torch.zeros(3, len(thresholds), dtype=torch.float64)
    for j, t in enumerate(thresholds):
        pos = p >= t
        out[0, j] = float((pos & gt).sum())
        out[1, j] = float(pos.sum())
    out[2] = float(gt.sum())
    return out


def max_f(tp, predicted, actual, beta2: float = SAL_BETA2) -> float:
    """maxF = max over thresholds of F_beta = (1 + beta^2) P R / (beta^2 P + R), with P = tp /
    predicted and R = tp / actual pooled over the whole split (a threshold with an undefined P, R or
    F counts as 0).

    This is the ATRC / InvPT SaliencyMeter (beta^2 = 0.3, thresholds 0.05:0.05:0.95, prob >= t,
    counts pooled over every pixel of the split), the protocol of the works the AvgNorm paper follows
    ([14] InvPT). The survey's eval_sal.py / SaliencyMeter differs: precision and recall per image
    (prob > t at 15 thresholds linspace(0.2, 0.9, 15)), averaged over the images, then F1 of the
    averages (beta^2 = 1), max over thresholds; info["sal_beta2"] = 1 and info["sal_thresholds"]
    give its beta and thresholds, not its per-image averaging.
    """
    tp, predicted, actual = (torch.as_tensor(v, dtype=torch.float64) for v in (tp, predicted, actual))
    prec, rec = tp / predicted, tp / actual  # 0 / 0 -> nan
    f = torch.nan_to_num((1 + beta2) * prec * rec / (beta2 * prec + rec), nan=0.0, posinf=0.0, neginf=0.0)
    return float(f.max()) if f.numel() else 0.0


# --------------------------------------------------------------------------------------------
# Edge odsF (BSDS / SEISM protocol: Martin et al. 2004; Pont-Tuset & Marques; Dollar's edgesEvalImg)
# --------------------------------------------------------------------------------------------
EDGE_NUM_THRESHOLDS = 99  # edgesEvalImg 'thrs', 99; the survey's eval_edge.py: 0.01, 0.02, ..., 0.99
EDGE_MAX_DIST = 0.0075  # tolerance as a fraction of the image diagonal: BSDS and SEISM's PASCALContext
EDGE_MAX_DIST_NYUD = 0.011  # NYUD (Gupta et al.'s benchmark; ATRC / InvPT evaluate NYUD edges with it)


def edge_thresholds(k: int = EDGE_NUM_THRESHOLDS) -> torch.Tensor:
    """The K thresholds t_k = k / (K + 1), k = 1..K (edgesEvalImg: linspace(1/(K+1), 1-1/(K+1), K))."""
    if k < 1:
        raise ValueError(f"need at least one edge threshold, got {k}")
    return torch.arange(1, k + 1, dtype=torch.float64) / (k + 1)


def _thinning_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion tables of the two sub-iterations of the thinning of Guo & Hall (1989) as given by
    Lam, Lee & Suen (1992, p. 879), the algorithm of MATLAB's bwmorph(BW, 'thin') and of
    skimage.morphology.thin. Index: the neighbour code sum_i 2^(i-1) x_i of a pixel's 8 neighbours
    x_1 = E, x_2 = NE, x_3 = N, x_4 = NW, x_5 = W, x_6 = SW, x_7 = S, x_8 = SE (x_9 = x_1).

    A foreground pixel is deleted when
      G1: the crossing number X_H = #{i in 1..4: x_{2i-1} = 0 and (x_{2i} = 1 or x_{2i+1} = 1)} is 1;
      G2: 2 <= min(n1, n2) <= 3 with n1 = sum_k (x_{2k-1} or x_{2k}), n2 = sum_k (x_{2k} or x_{2k+1});
      G3 (first sub-iteration): (x_2 or x_3 or not x_8) and x_1 is false;
      G3' (second sub-iteration): (x_6 or x_7 or not x_4) and x_5 is false.
    """
    first = torch.zeros(256, dtype=torch.bool)
    second = torch.zeros(256, dtype=torch.bool)
    for code in range(256):
        bit = [(code >> i) & 1 for i in range(8)]

        def x(i: int) -> int:  # 1-based and cyclic
            return bit[(i - 1) % 8]

        crossing = sum(1 for i in range(1, 5) if not x(2 * i - 1) and (x(2 * i) or x(2 * i + 1)))
        n1 = sum(1 for k in range(1, 5) if x(2 * k - 1) or x(2 * k))
        n2 = sum(1 for k in range(1, 5) if x(2 * k) or x(2 * k + 1))
        g12 = crossing == 1 and 2 <= min(n1, n2) <= 3
        first[code] = g12 and not ((x(2) or x(3) or not x(8)) and x(1))
        second[code] = g12 and not ((x(6) or x(7) or not x(4)) and x(5))
    return first, second


_THIN_TABLES = _thinning_tables()
# (row, column) offset of neighbour x_i and its weight 2^(i-1) in the neighbour code
_NEIGHBOURS = ((0, 1, 1), (-1, 1, 2), (-1, 0, 4), (-1, -1, 8), (0, -1, 16), (1, -1, 32), (1, 0, 64), (1, 1, 128))


def thin(mask: torch.Tensor) -> torch.Tensor:
    """Morphological thinning to 1-pixel-wide, 8-connected curves: MATLAB's bwmorph(BW, 'thin', Inf)
    and skimage.morphology.thin (see `_thinning_tables`; checked equal to skimage's on random maps).

    The two sub-iterations alternate until two in a row delete nothing. Each decides on all its
    candidates from the map as it was before it (parallel deletion). The first two look at every
    foreground pixel with a background 4-neighbour (G1 keeps the others); later ones only at the
    foreground neighbours of the pixels deleted by the previous two (no other pixel's neighbourhood
    has changed since the same table last saw it), so the cost follows the number of deletions, not
    iterations x pixels. Every map of a batch (..., H, W) is thinned independently; returns a bool
    tensor of the input's shape.
    """
    shape = mask.shape
    H, W = shape[-2:]
    x = F.pad((mask != 0).reshape(-1, H, W).to(torch.uint8), (1, 1, 1, 1)).contiguous()  # zero border
    flat = x.view(-1)
    device = flat.device
    steps = [(dy * (W + 2) + dx, weight) for dy, dx, weight in _NEIGHBOURS]  # flat offset, code weight
    offsets = torch.tensor([o for o, _ in steps], device=device)
    tables = [t.to(device) for t in _THIN_TABLES]
    stamp = None  # scratch for de-duplicating candidates
    last = [offsets[:0], offsets[:0]]  # pixels deleted by the previous two sub-iterations
    step, idle = 0, 0
    while idle < 2:
        if step < 2:  # every foreground pixel with a background 4-neighbour (G1 spares the others)
            exposed = (x[:, :-2, 1:-1] & x[:, 2:, 1:-1] & x[:, 1:-1, :-2] & x[:, 1:-1, 2:]) == 0
            border = torch.zeros_like(x)
            border[:, 1:-1, 1:-1] = x[:, 1:-1, 1:-1] & exposed
            cand = torch.nonzero(border.view(-1)).squeeze(1)
        else:
            near = (torch.cat(last).unsqueeze(0) + offsets.unsqueeze(1)).reshape(-1)
            near = near[flat.index_select(0, near) != 0]
            # de-duplicate without sorting: of the copies of one index, the one whose position
            # survives the scatter is kept (index_select / index_copy_ are the fast paths on CPU)
            if stamp is None:
                stamp = torch.zeros(flat.numel(), dtype=torch.long, device=device)
            order = torch.arange(near.numel(), device=device)
            stamp.index_copy_(0, near, order)
            cand = near[stamp.index_select(0, near) == order]
        code = torch.zeros(cand.shape, dtype=torch.uint8, device=device)
        for offset, weight in steps:
            code += flat.index_select(0, cand + offset) * weight
        deleted = cand[tables[step % 2].index_select(0, code.int())]
        flat.index_fill_(0, deleted, 0)
        last = [last[1], deleted]
        idle = idle + 1 if deleted.numel() == 0 else 0
        step += 1
    return x[:, 1:-1, 1:-1].bool().reshape(shape)


def disk_offsets(radius: float) -> list[tuple[int, int]]:
    """Every (dy, dx) with dy^2 + dx^2 <= radius^2, nearest first (ties by dy, then dx)."""
    r = int(np.floor(radius))
    offsets = [(dy * dy + dx * dx, dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
               if dy * dy + dx * dx <= radius * radius]
    return [(dy, dx) for _, dy, dx in sorted(offsets)]


def match_edges(pred: torch.Tensor, gt: torch.Tensor, radius: float) -> torch.Tensor:
    """Maximum one-to-one matching of edge pixels within `radius` pixels.

    pred (K, H, W) bool: K predicted edge maps; gt (H, W) bool: the ground truth. For each map, the
    bipartite graph joins every ground-truth pixel to every predicted pixel at most `radius` away
    (`disk_offsets`); the result is the size of a maximum matching of that graph, i.e. the largest
    number of pixels that can be paired one-to-one within the tolerance. Exact and deterministic:
    the matching is the maximum flow from a source through the ground-truth pixels and the
    predicted pixels to a sink, all capacities 1 (Dinic's algorithm, scipy.sparse.csgraph.
    maximum_flow; on unit-capacity bipartite graphs it is Hopcroft-Karp, and scipy's own
    maximum_bipartite_matching was up to 100x slower on near-perfect matchings of noisy maps).
    Returns the matched pairs per map (K,), int64, on pred's device.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    K, H, W = pred.shape
    offsets = disk_offsets(radius)
    R = int(np.floor(radius))
    Hp, Wp = H + 2 * R, W + 2 * R
    gy, gx = np.nonzero(gt.detach().to("cpu", torch.bool).numpy())
    n_gt = gy.size
    shifts = np.array([dy * Wp + dx for dy, dx in offsets], dtype=np.int64)
    around = ((gy + R) * Wp + (gx + R))[:, None] + shifts[None, :]   # (ground-truth pixel, offset) -> position
    p = pred.detach().to("cpu", torch.bool).numpy()
    matched = np.zeros(K, dtype=np.int64)
    pid = np.full(Hp * Wp, -1, dtype=np.int32)                      # predicted pixel ids, -1 elsewhere
    for k in range(K if n_gt else 0):
        py, px = np.nonzero(p[k])
        if py.size == 0:
            continue
        pos = (py + R) * Wp + (px + R)
        pid[pos] = np.arange(py.size, dtype=np.int32)
        nbr = pid[around]                                            # (gt pixel, offset): predicted id or -1
        pid[pos] = -1
        has = nbr >= 0
        # nodes: ground truth 0..n_gt-1, predicted n_gt.., source, sink; arcs source -> gt -> pred -> sink
        n_pred, src, snk = py.size, n_gt + py.size, n_gt + py.size + 1
        # (CSR rows in node order: gt rows hold their neighbours, predicted rows the sink, the source all gt)
        heads = np.concatenate([n_gt + nbr[has], np.full(n_pred, snk), np.arange(n_gt)]).astype(np.int32)
        indptr = np.concatenate([[0], np.cumsum(has.sum(1)), heads.size - n_gt - n_pred + np.arange(1, n_pred + 1),
                                 [heads.size, heads.size]]).astype(np.int32)
        graph = csr_matrix((np.ones(heads.size, dtype=np.int32), heads, indptr), shape=(snk + 1, snk + 1))
        matched[k] = maximum_flow(graph, src, snk, method="dinic").flow_value
    return torch.from_numpy(matched).to(pred.device)


def edge_counts(prob: torch.Tensor, target: torch.Tensor, thresholds: torch.Tensor,
                max_dist: float = EDGE_MAX_DIST) -> torch.Tensor:
    """(4, K) float64 counts of one image: cntR (matched GT pixels), sumR (GT pixels), cntP (matched
    predicted pixels), sumP (predicted pixels), one column per threshold, as SEISM's eval_cont /
    edgesEvalImg (one ground truth per image).

    prob (H, W): edge probabilities; target (H, W): 1 on edges, 0 elsewhere, -1 ignored (the
    prediction there is dropped). For each threshold t: E = thin(prob >= t) (edgesEvalImg thins the
    prediction); the ground truth is target >= 0.5 as given, NOT thinned (edgesEvalImg passes the
    ground-truth boundary map to correspondPixels unchanged); E and the ground truth are matched
    one-to-one within r = max_dist * sqrt(H^2 + W^2) pixels by a maximum bipartite matching
    (`match_edges`).

    Difference from the MATLAB reference: correspondPixels solves a minimum-cost assignment with
    outlier costs by a randomised approximate solver, meant to give a maximum-cardinality matching
    within r but not always reaching it; ours is the exact maximum matching and deterministic, so
    its counts are greater than or equal to the reference's on the same maps. r is measured on the
    evaluated map (the resized image); SEISM works at the original image size with the same
    fraction of its diagonal.
    """
    H, W = prob.shape
    valid = target >= 0
    gt = (target >= 0.5) & valid
    thresholds = thresholds.to(device=prob.device, dtype=torch.float64)
    pred = (prob.double().unsqueeze(0) >= thresholds.view(-1, 1, 1)) & valid
    pred = thin(pred)
    matched = match_edges(pred, gt, max_dist * float(np.hypot(H, W))).double().cpu()
    n_pred = pred.sum(dim=(1, 2)).double().cpu()
    n_gt = torch.full_like(matched, float(gt.sum()))
    return torch.stack([matched, n_gt, matched, n_pred])


def ods_f(cnt_r, sum_r, cnt_p, sum_p) -> tuple[float, int]:
    """Optimal-dataset-scale F-measure from per-threshold counts summed over the split (SEISM's
    gather_measure + general_ods): R = cntR / sumR, P = cntP / sumP, F = 2 P R / (P + R), and the
    maximum over thresholds. A threshold without any match has F = 0 (SEISM sets R = 1, P = 0 when
    there is neither ground truth nor prediction, R = 0, P = 1 when there is no prediction, R = P =
    0 otherwise). Returns (odsF, index of the best threshold)."""
    cnt_r, sum_r, cnt_p, sum_p = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (cnt_r, sum_r, cnt_p, sum_p))
    matched = (sum_p > 0) & (cnt_r > 0)  # then sum_r > 0 as well
    rec = np.where(matched, cnt_r / np.where(matched, sum_r, 1.0), 0.0)
    prec = np.where(matched, cnt_p / np.where(matched, sum_p, 1.0), 0.0)
    f = np.where(matched, 2 * prec * rec / np.where(matched, prec + rec, 1.0), 0.0)
    if f.size == 0:
        return 0.0, -1
    best = int(np.argmax(f))
    return float(f[best]), best


# --------------------------------------------------------------------------------------------
# The suite's task kinds (TaskSpec.kind): loss, metrics, meter, Delta-m% metrics, hypervolume reference
# --------------------------------------------------------------------------------------------
#   class      multi-class cross-entropy on logits (out_dim classes); metric acc
#   binary     binary cross-entropy on one logit; metrics f1 (at threshold 0.5), acc; Delta-m%: f1
#   huber      Huber (smooth L1, delta 1) regression; metrics mae, huber (the mean loss); Delta-m%: mae
#   mse        squared-error regression; metrics mse (the mean squared error), mae, both pooled over
#              every element of the split
#   seg        per-pixel NLL on log-softmax, ignore label -1; metrics miou, pixacc
#   depth      L1 over valid pixels (target != 0); metrics abs_err, rel_err (optional: rmse)
#   normal     1 - cosine of the L2-normalised prediction, valid pixels; metrics mean, median, 11.25,
#              22.5, 30 (degrees)
#   normal_l1  L1 between the L2-normalised prediction and the target over valid pixels (target
#              vector != 0; the dense-prediction survey's NormalsLoss); the same five angle metrics
#   saliency   balanced BCE on one logit (positive weight = fraction of negatives), target 0 / 1,
#              -1 = ignore; metric maxF (F-beta, beta^2 = 0.3, max over thresholds)
#   edge       weighted BCE on one logit (0.95 on edge pixels, 0.05 elsewhere), target 0 / 1,
#              -1 = ignore; metric odsF (optimal-dataset-scale F-measure with thinning + matching)
#   toy        the toy objective itself is the loss; metric loss
# The hypervolume reference (TaskKind.hv_reference) is ONE rule for every front method of the suite
# (PML, EXTRA, PaLoRA, the PFL baselines, AvgNorm's grid), one fixed value per task kind on its
# primary metric, never a value taken from the points (that would change with the run and make
# hypervolumes incomparable):
#   accuracy-like (accuracy, F1, mIoU, maxF, odsF): 0 -- PML Table 4 (acc_1 x acc_2 for one point) and
#       PaLoRA's official compute_hv;
#   losses and errors (toy losses, the Huber / MAE of normalised UTKFace age, depth absolute error, the
#       mse kind's mean squared error): 1 -- PML Fig. 19 and PaLoRA's hypervolume of losses use (1, 1);
#       PaLoRA's depth plots use 1;
#   normal mean angle: 90 degrees -- PaLoRA's Pareto plots.
ANGLE_METRICS = (("mean", False), ("median", False), ("11.25", True), ("22.5", True), ("30", True))


def _class_update(m, pred, target):
    m.sums["correct"] += float((pred.argmax(1) == target).sum())


def _binary_update(m, pred, target):
    p = (pred.reshape(target.shape) > 0).float()
    t = target.float()
    m.sums["tp"] += float((p * t).sum())
    m.sums["fp"] += float((p * (1 - t)).sum())
    m.sums["fn"] += float(((1 - p) * t).sum())
    m.sums["correct"] += float((p == t).sum())


def _binary_compute(m):
    tp, fp, fn = m.sums["tp"], m.sums["fp"], m.sums["fn"]
    return {"f1": 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0, "acc": m.sums["correct"] / max(m.n, 1)}


def _abs_error_update(m, pred, target):
    m.sums["abs"] += float((pred.reshape(target.shape).float() - target.float()).abs().sum())


def _mse_update(m, pred, target):
    e = pred.reshape(target.shape).double() - target.double()
    m.sums["sq"] += float((e ** 2).sum())
    m.sums["abs"] += float(e.abs().sum())
    m.sums["count"] += e.numel()


def _seg_loss(pred, target, info, index):
    # mean over the labelled pixels (= F.nll_loss(..., ignore_index=-1)), but 0 instead of NaN
    # for a batch without any (e.g. human parts on images without people)
    total = F.nll_loss(F.log_softmax(pred, dim=1), target, ignore_index=-1, reduction="sum")
    return total / (target >= 0).sum().clamp_min(1)


def _seg_start(m):
    m.conf = None


def _seg_update(m, pred, target):
    c = m.spec.out_dim
    p = pred.argmax(1).flatten()
    t = target.flatten()
    valid = t >= 0
    idx = t[valid] * c + p[valid]
    conf = torch.bincount(idx, minlength=c * c).reshape(c, c).cpu().double()
    m.conf = conf if m.conf is None else m.conf + conf


def _depth_loss(pred, target, info, index):
    mask = _valid_mask(target)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def _depth_update(m, pred, target):
    mask = _valid_mask(target).bool().expand_as(target)
    e = (pred - target)[mask].abs()
    m.sums["abs"] += float(e.sum())
    m.sums["rel"] += float((e / target[mask].abs()).sum())
    m.sums["count"] += float(mask.sum())
    # RMSE as the survey's DepthMeter: predictions clamped at 0 (depth is positive)
    m.sums["sq"] += float(((pred.clamp_min(0) - target)[mask].double() ** 2).sum())


def _depth_compute(m):
    c = max(m.sums["count"], 1.0)
    return {"abs_err": m.sums["abs"] / c, "rel_err": m.sums["rel"] / c, "rmse": float(np.sqrt(m.sums["sq"] / c))}


def _normal_loss(pred, target, info, index):
    mask = _valid_mask(target)
    pred = F.normalize(pred, dim=1)
    return 1.0 - (pred * target * mask).sum() / mask.sum().clamp_min(1.0)


def _angle_start(m):
    m.hist = torch.zeros(18001, dtype=torch.float64)
    m.angle_sum = 0.0


def _angle_update(m, pred, target, survey: bool):
    if not survey:
        mask = _valid_mask(target).bool()[:, 0]
    else:  # the survey's eval_normals: valid where the target's norm is non-zero, both normalised
        mask = _nonzero_vector_mask(target)[:, 0]
        target = F.normalize(target, dim=1)
    cos = (F.normalize(pred, dim=1) * target).sum(1).clamp(-1, 1)
    ang = torch.rad2deg(torch.acos(cos))[mask].double()
    m.angle_sum += float(ang.sum())
    m.hist += torch.bincount((ang * 100).floor().long().clamp(0, 18000), minlength=18001).cpu().double()


def _saliency_start(m):
    m.sal_thresholds = torch.as_tensor(m.info.get("sal_thresholds", SAL_THRESHOLDS), dtype=torch.float64)
    m.sal_counts = torch.zeros(3, len(m.sal_thresholds), dtype=torch.float64)  # tp, predicted, actual


def _saliency_update(m, pred, target):
    m.sal_counts += saliency_counts(torch.sigmoid(pred.float()).reshape(target.shape), target, m.sal_thresholds)


def _edge_start(m):
    m.edge_thresholds = edge_thresholds(int(m.info.get("edge_thresholds", EDGE_NUM_THRESHOLDS)))
    m.edge_max_dist = float(m.info.get("edge_max_dist", EDGE_MAX_DIST))
    m.edge_counts = torch.zeros(4, len(m.edge_thresholds), dtype=torch.float64)  # cntR, sumR, cntP, sumP


def _edge_update(m, pred, target):
    prob = torch.sigmoid(pred.float()).reshape(target.shape)
    for b in range(target.shape[0]):
        m.edge_counts += edge_counts(prob[b].reshape(prob.shape[-2:]), target[b].reshape(target.shape[-2:]),
                                     m.edge_thresholds, m.edge_max_dist)


def _toy_loss(pred, target, info, index):
    from common.data import toy_losses

    return toy_losses(pred[0], info.get("c", 1.0))[index]


def _nothing(m, pred, target):
    """Meters whose metrics come from the loss alone (TaskMeter sums it)."""


def _mean_loss(m):
    return m.loss_sum / max(m.n, 1)


for _kind in (
    TaskKind("class", lambda pred, target, info, index: F.cross_entropy(pred, target), (("acc", True),), 0.0,
             _class_update, lambda m: {"acc": m.sums["correct"] / max(m.n, 1)}),
    TaskKind("binary", lambda pred, target, info, index: F.binary_cross_entropy_with_logits(
                 pred.reshape(target.shape), target.float()),
             (("f1", True), ("acc", True)), 0.0, _binary_update, _binary_compute, delta_metrics=("f1",)),
    TaskKind("huber", lambda pred, target, info, index: F.huber_loss(pred.reshape(target.shape), target.float(),
                                                                     delta=1.0),
             (("mae", False), ("huber", False)), 1.0, _abs_error_update,
             lambda m: {"mae": m.sums["abs"] / max(m.n, 1), "huber": _mean_loss(m)}, delta_metrics=("mae",)),
    TaskKind("mse", lambda pred, target, info, index: F.mse_loss(pred.reshape(target.shape), target.float()),
             (("mse", False), ("mae", False)), 1.0, _mse_update,
             lambda m: {"mse": m.sums["sq"] / max(m.sums["count"], 1), "mae": m.sums["abs"] / max(m.sums["count"], 1)}),
    TaskKind("seg", _seg_loss, (("miou", True), ("pixacc", True)), 0.0, _seg_update,
             lambda m: confusion_metrics(m.conf if m.conf is not None else torch.zeros(1, 1)), start=_seg_start),
    TaskKind("depth", _depth_loss, (("abs_err", False), ("rel_err", False)), 1.0, _depth_update, _depth_compute,
             optional_metrics=(("rmse", False),)),  # rmse: over every valid pixel of the split (dense suite)
    TaskKind("normal", _normal_loss, ANGLE_METRICS, 90.0, lambda m, p, t: _angle_update(m, p, t, survey=False),
             lambda m: histogram_angle_metrics(m.hist, m.angle_sum), start=_angle_start),
    TaskKind("normal_l1", lambda pred, target, info, index: normals_l1_loss(pred, target), ANGLE_METRICS, 90.0,
             lambda m, p, t: _angle_update(m, p, t, survey=True),
             lambda m: histogram_angle_metrics(m.hist, m.angle_sum), start=_angle_start),
    TaskKind("saliency", lambda pred, target, info, index: balanced_bce(pred, target, None), (("maxF", True),), 0.0,
             _saliency_update, lambda m: {"maxF": max_f(*m.sal_counts, beta2=float(m.info.get("sal_beta2", SAL_BETA2)))},
             start=_saliency_start),
    TaskKind("edge", lambda pred, target, info, index: balanced_bce(pred, target, info.get("edge_pos_weight", EDGE_POS_WEIGHT)),
             (("odsF", True),), 0.0, _edge_update, lambda m: {"odsF": ods_f(*m.edge_counts)[0]}, start=_edge_start),
    TaskKind("toy", _toy_loss, (("loss", False),), 1.0, _nothing, lambda m: {"loss": _mean_loss(m)}),
):
    register_kind(_kind)


# --------------------------------------------------------------------------------------------
# Multi-task summaries
# --------------------------------------------------------------------------------------------
def delta_m(metrics: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]], specs) -> float | None:
    """Delta-m% of EXTRA Eq. 8 (Maninis et al. 2019), averaged flatly over all K metrics:

        Delta-m% = 1/K sum_k (-1)^{delta_k} (M_m,k - M_b,k) / M_b,k * 100,

    delta_k = 1 when higher is better. Lower is better. The metrics are the task's `delta_metrics`
    that the reference holds; None if it holds none. With one metric per task (the dense suite)
    this is -100 x the AvgNorm paper's Eq. 5, Delta_m = 1/T sum_i (-1)^{l_i} (M_m,i - M_b,i) / M_b,i
    (l_i = 1 when lower is better), which is higher-is-better.
    """
    terms = []
    for spec in specs:
        ref = reference.get(spec.name) if reference else None
        if not ref or spec.name not in metrics:
            continue
        higher = dict(spec.metrics)
        for m in delta_metrics(spec):
            if m in ref and m in metrics[spec.name] and ref[m] != 0:
                sign = -1.0 if higher[m] else 1.0
                terms.append(sign * (metrics[spec.name][m] - ref[m]) / abs(ref[m]) * 100.0)
    return float(np.mean(terms)) if terms else None


def selection_score(metrics: Mapping[str, Mapping[str, float]], specs, reference: Mapping | None = None) -> float:
    """The one model-selection score of the suite (best epoch, a point or t chosen on validation, a
    grid point); higher is better, and it never mixes units:

    - with a reference that covers the tasks: -Delta-m% against it (`delta_m`);
    - otherwise the scale-free log-ratio form of Delta-m%,
          score = 100/K sum_k s_k log M_k,   s_k = +1 if higher is better, else -1,
      over the same K metrics (`delta_metrics`). Comparing two candidates compares
      100/K sum_k s_k log(M_k / M'_k): the log-ratio Delta-m% of one against the other, unchanged when
      a metric's unit changes (degrees vs radians, % vs fraction). Every metric of common/metrics.py is
      >= 0; a value <= 0 counts as 1e-12 (the worst for higher-is-better, the best otherwise).
    Only the tasks present in `metrics` count (per-task selection passes one task)."""
    specs = [s for s in specs if s.name in metrics]
    if reference:
        dm = delta_m(metrics, reference, specs)
        if dm is not None and all(s.name in reference for s in specs):
            return -dm
    terms = []
    for spec in specs:
        higher = dict(spec.metrics)
        for m in delta_metrics(spec):
            v = metrics[spec.name].get(m)
            if v is None or not math.isfinite(v):
                continue
            terms.append((1.0 if higher[m] else -1.0) * math.log(max(float(v), 1e-12)) * 100.0)
    return float(np.mean(terms)) if terms else float("-inf")


def mean_rank(results: Mapping[str, Mapping[str, Mapping[str, float]]], specs) -> dict[str, float]:
    """Mean Rank: for each metric (the tasks' `delta_metrics`) rank the methods (1 = best, ties get
    the average rank), then average each method's ranks over the metrics."""
    methods = list(results)
    ranks = {m: [] for m in methods}
    for spec in specs:
        higher = dict(spec.metrics)
        for metric in delta_metrics(spec):
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


HV_MAX_WORK = 50_000  # slice evaluations an exact hypervolume may spend (a few seconds) before it returns None


def hypervolume(points, ref, maximize: bool | Sequence[bool] = False) -> float | None:
    """Exact hypervolume dominated by `points` (n, m) and bounded by `ref`, any m >= 1.

    With maximize=True (accuracies) the volume is that of the union of the boxes between ref and
    each point, e.g. ref = (0, 0) for two accuracies. Points that do not strictly improve on ref in
    every objective add nothing (an F1 of 0 against a reference of 0 gives a box of volume 0).

    m = 1: the best improvement; m = 2: a sweep; m >= 3: slicing along the last objective (HSO,
    While et al. 2006): between consecutive values of the last objective the slab's volume is the
    (m-1)-dimensional hypervolume of the points already swept, times its depth. One point is the
    product of its improvements, whatever m. The slicing costs up to O(n^(m-1)); past HV_MAX_WORK
    slice evaluations (e.g. 41 points in 40 objectives) it gives up and returns None rather than a
    wrong or never-ending value.
    """
    r = np.asarray(ref, dtype=float).reshape(-1)
    P = np.asarray(points, dtype=float).reshape(-1, len(r))
    sign = np.where(np.broadcast_to(np.asarray(maximize), (P.shape[1],)), -1.0, 1.0)
    P, r = P * sign, r * sign  # now minimise, ref is the upper corner
    P = P[np.all(P < r, axis=1)]  # NaN rows fail the test and drop out
    if len(P) == 0:
        return 0.0
    if len(P) == 1:
        return float(np.prod(r - P[0]))
    P = P[non_dominated(P)]
    budget = [HV_MAX_WORK]
    try:
        return float(_hv_slice(P, r, budget))
    except _HVBudget:
        return None


class _HVBudget(Exception):
    pass


def _hv_slice(P: np.ndarray, r: np.ndarray, budget: list) -> float:
    budget[0] -= 1
    if budget[0] < 0:
        raise _HVBudget
    m = P.shape[1]
    if len(P) == 1:
        return float(np.prod(r - P[0]))
    if m == 1:
        return float(r[0] - P[:, 0].min())
    if m == 2:
        return _hv2(P, r)
    P = P[np.argsort(P[:, -1], kind="stable")]
    zs = np.append(P[:, -1], r[-1])
    vol = 0.0
    for i in range(len(P)):
        depth = zs[i + 1] - zs[i]
        if depth > 0:
            S = P[: i + 1, :-1]
            vol += _hv_slice(S[non_dominated(S)], r[:-1], budget) * depth
    return vol


class _HvReferences(Mapping):
    """HV_REFERENCE[kind]: the hypervolume reference of each registered kind (TaskKind.hv_reference,
    the suite's one rule, see "The suite's task kinds" above), read live from TASK_KINDS."""

    def __getitem__(self, kind: str) -> float:
        return float(kind_of(kind).hv_reference)

    def __iter__(self) -> Iterator[str]:
        return iter(TASK_KINDS)

    def __len__(self) -> int:
        return len(TASK_KINDS)


# Every front method reports "hypervolume" on the test split with this reference (PML also reports
# its validation hypervolume, which selects its epoch as the paper, as "hypervolume_val").
HV_REFERENCE: Mapping[str, float] = _HvReferences()
HV_SPLIT = "test"


def hv_reference(specs, override: Sequence[float] | None = None) -> list[float]:
    """The hypervolume reference point of the tasks' primary metrics: `override` (a method's --hv-ref)
    if given, else HV_REFERENCE of each task's kind (the suite's one rule, see above)."""
    if override is not None:
        return [float(r) for r in override]
    return [float(HV_REFERENCE[s.kind]) for s in specs]


def evaluation_grid(num_tasks: int, points: int = 11) -> np.ndarray:
    """The preferences / alphas at which every front method is evaluated (PML, PaLoRA, the PFL
    baselines): for 2-3 tasks the simplex lattice with spacing 1/(points - 1) (simplex_grid: 11 points
    for 2 tasks, 66 for 3, first coordinate decreasing: [1, 0], [0.9, 0.1], ...); for more tasks the
    T vertices and the centre (a lattice would have C(points + T - 2, T - 1) points)."""
    if num_tasks <= 3:
        return simplex_grid(num_tasks, points)
    return np.vstack([np.eye(num_tasks), np.full((1, num_tasks), 1.0 / num_tasks)])


def front_summary(front: list[dict], tasks, hv_ref: Sequence[float] | None = None) -> dict:
    """Summary of a preference-indexed front (PaLoRA, COSMOS / PHN): `front` is a list of
    {"preference": [lambda_1..lambda_T], "tasks": {task: {metric: value, "loss": ...}}}.

    hypervolume of the primary metrics (reference `hv_reference`; None past its work budget), the number of
    non-dominated points, the mean Spearman correlation between the tasks' losses across the front
    (PaLoRA's ablation: lower = a more diverse front) and, per task, the Spearman correlation between
    lambda_t and L_t (negative = Pareto-aligned: more weight, lower loss)."""
    from itertools import combinations

    names = [t.name for t in tasks]
    higher = [t.metrics[0][1] for t in tasks]
    P = np.array([[f["tasks"][t.name][t.primary] for t in tasks] for f in front], dtype=float)
    L = np.array([[f["tasks"][n]["loss"] for n in names] for f in front], dtype=float)
    lam = np.array([f["preference"] for f in front], dtype=float)
    T = len(tasks)
    ref = hv_reference(tasks, hv_ref)
    rho = [spearman(L[:, i], L[:, j]) for i, j in combinations(range(T), 2)]
    rho = [r for r in rho if np.isfinite(r)]
    align = {n: spearman(lam[:, i], L[:, i]) for i, n in enumerate(names)}
    return {"hypervolume": hypervolume(P, ref, maximize=higher), "hypervolume_ref": ref,
            "hypervolume_metrics": [t.primary for t in tasks], "non_dominated": int(non_dominated(P, maximize=higher).sum()),
            "front_size": len(front), "spearman": float(np.mean(rho)) if rho else None,
            "spearman_alignment": {k: (float(v) if np.isfinite(v) else None) for k, v in align.items()}}

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
