"""Real-format dataset loaders; importing this module registers them in `common.data`'s registry.

Every loader reads the files exactly as their public sources ship them (data/README.md says where to
get each one and where to put it under `--data-root`) and returns an `MTLData` whose splits yield
`(x, (y_1, ..., y_T))`. Each loader checks the layout cheaply before anything else (folders exist,
file counts agree, the first file of each kind parses), so bad data fails fast with one `DataError`
line naming the dataset, the path and the files expected; errors met later while reading a file
lazily are converted the same way, never leaked as a numpy / PIL traceback.

| name                 | source under root                                   | tasks                          |
| -------------------- | --------------------------------------------------- | ------------------------------ |
| multimnist(3)        | MNIST/raw/ IDX files                                | 2 (3) digit classes      [1]   |
| multifashion         | FashionMNIST/raw/ IDX files                         | 2 item classes           [2]   |
| multifashion-mnist   | MNIST/raw/ + FashionMNIST/raw/                      | digit, fashion           [2]   |
| census               | census/adult.data, census/adult.test (UCI Adult)    | age, education (2-way)   [3]   |
| utkface              | utkface/<age>_<gender>_<race>_<date>.jpg            | age (Huber), gender, ethnicity [4] |
| celeba               | celeba/ in torchvision's CelebA layout              | 40 binary attributes     [5]   |
| cityscapes           | cityscapes/{train,val}/{image,label_7,depth}/<i>.npy | segmentation (7), depth [6]   |
| nyuv2                | nyuv2/{train,val}/{image,label,depth,normal}/<i>.npy | segmentation (13), depth, normal [6] |
| nyud                 | NYUD_MT/ (the survey's layout: images/, segmentation/, depth/, normals/, edge/, gt_sets/) | semseg (40), depth, normals, edge [8] |
| pascal-context       | PASCAL_MT/ (JPEGImages/, semseg/, human_parts/, normals_distill/, sal_distill/, pascal-context/trainval/, ImageSets/Context/) | semseg (21), human_parts (7), normals, sal, edge [8] |

Options (all loaders accept and ignore unknown ones): `data_seed` (splits and composition, default 0),
`augment` (the scene loaders' training-split scale-crop + flip [6]; ignored elsewhere), and per loader:
`sizes` (MultiMNIST family, default (60000, 10000, 10000)), `age_threshold` / `education` (census),
`holdout` (scene and dense loaders: a seeded hold-out of the training split as validation),
`benchmark_depth_aug` (cityscapes), `size`, `jitter`, `edge_thresholds` (nyud, pascal-context).
See each loader's docstring.

References
 [1] Sabour, Frosst & Hinton 2017 (MultiMNIST); Sener & Koltun 2018; Dimitriadis et al. 2023 (PML),
     appendix B: 60,000 / 10,000 / 10,000 composed images, 36x36 grid resized to 28x28.
 [2] Lin et al. 2019 (Pareto MTL) and Ma, Du & Matusik 2020: MultiFashion and MultiFashion+MNIST.
 [3] Kohavi 1996 (UCI Adult); tasks age and education as in Ma et al. 2020 / PML section 5.1, appendix B.
 [4] Zhang, Song & Qi 2017 (UTKFace); PML appendix B: 64x64 images, normalised age, 80/20 split.
 [5] Liu et al. 2015 (CelebA); FAMO (Liu et al. 2023) / FairGrad code: Resize 64x64 + ToTensor.
 [6] Liu, Johns & Davison 2019 (MTAN) preprocessed NYUv2 / Cityscapes and their augmentation;
     single-task reference vectors from CAGrad (Liu et al. 2021), as used by Nash-MTL, FAMO, FairGrad.
 [7] LeCun et al. 1998, the IDX file format (http://yann.lecun.com/exdb/mnist/).
 [8] The dense-prediction suite of the AvgNorm paper (Sec. IV, appendix "Experimental setups"):
     NYUD-v2 (Silberman et al. 2012; 795 / 654 images, 40 classes, Gupta et al.'s edges) and
     PASCAL-Context (Mottaghi et al. 2014; 4,998 / 5,105 images; human parts from PASCAL-Part, Chen
     et al. 2014; normals and saliency distilled by Maninis et al. 2019, ASTMT), read in the layout of
     the multi-task dense-prediction survey code (Vandenhende et al. 2021, github
     SimonVandenhende/Multi-Task-Learning-PyTorch: data/nyud.py, data/pascal_context.py,
     data/custom_transforms.py); augmentation and resolution of ATRC / InvPT (Ye & Xu 2022).
"""
from __future__ import annotations

import copy
import gzip
import itertools
import os
import struct
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from common.data import (DATA_README, MNIST_MEAN, MNIST_STD, DataError, MTLData, Subset, TensorMTL, compose_multi,
                         data_error, register, task)
from common.device import UsageError
from common.metrics import EDGE_MAX_DIST, EDGE_MAX_DIST_NYUD, thin


def _fail(dataset: str, path: str, expected: str) -> DataError:
    """`data_error` with `expected` squeezed onto one line (it may quote an exception message)."""
    return data_error(dataset, path, " ".join(str(expected).split()))


def _require_dir(dataset: str, path: str, expected: str) -> None:
    if not os.path.isdir(path):
        raise _fail(dataset, path, expected)


def _split_counts(n: int, fraction: float) -> int:
    """Size of a seeded hold-out: round(fraction * n), at least 1 and leaving at least 1."""
    return min(max(1, int(round(fraction * n))), n - 1)


# --------------------------------------------------------------------------------------------
# 1-2. MultiMNIST, MultiMNIST-3, MultiFashion, MultiFashion+MNIST from IDX files [1, 2, 7]
# --------------------------------------------------------------------------------------------
IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers: 0x0000, type 0x08 (ubyte), ndim 3 / 1
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_EXPECTED = ("IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte (or the same names with .gz)")
MULTI_SIZES = (60000, 10000, 10000)  # composed train / val / test images [1]
MULTI_VAL_POOL = 1 / 6  # 10,000 of the 60,000 training digits form the validation pool


def read_idx(path: str, magic: int) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a uint8 array [7].

    Layout: a big-endian uint32 magic (two zero bytes, type code 0x08 = unsigned byte, number of
    dimensions), one big-endian uint32 per dimension, then the data in C order. Raises ValueError
    (or an OS / gzip error) when the file does not have exactly that layout.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{len(raw)} bytes, shorter than the 4-byte IDX header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise ValueError(f"magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError("truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise ValueError(f"{len(raw) - header} data bytes where the header promises {count}")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(dims)


def idx_paths(dataset: str, raw_dir: str) -> dict[str, str]:
    """The four IDX files of an MNIST-style `raw/` folder (plain name preferred over `.gz`)."""
    _require_dir(dataset, raw_dir, IDX_EXPECTED)
    paths = {}
    for stem in IDX_FILES["train"] + IDX_FILES["test"]:
        found = [os.path.join(raw_dir, n) for n in (stem, stem + ".gz") if os.path.isfile(os.path.join(raw_dir, n))]
        if not found:
            raise _fail(dataset, raw_dir, f"{stem} (or {stem}.gz), one of the {IDX_EXPECTED}")
        paths[stem] = found[0]
    return paths


def read_idx_split(dataset: str, paths: dict[str, str], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 in 0..9 of the 'train' or 't10k' IDX pair."""
    image_stem, label_stem = IDX_FILES[split]
    try:
        images = read_idx(paths[image_stem], IDX_IMAGES)
    except Exception as e:
        raise _fail(dataset, paths[image_stem], f"an IDX image file (magic 2051, N x 28 x 28 bytes; {e})") from e
    try:
        labels = read_idx(paths[label_stem], IDX_LABELS)
    except Exception as e:
        raise _fail(dataset, paths[label_stem], f"an IDX label file (magic 2049, N bytes; {e})") from e
    if images.shape[1:] != (28, 28):
        raise _fail(dataset, paths[image_stem], f"28 x 28 images (found {images.shape[1]} x {images.shape[2]})")
    if len(images) != len(labels) or len(images) < 2:
        raise _fail(dataset, os.path.dirname(paths[image_stem]),
                    f"as many labels as images, at least 2 (found {len(images)} images in {image_stem}, "
                    f"{len(labels)} labels in {label_stem})")
    if labels.max() > 9:
        raise _fail(dataset, paths[label_stem], f"labels 0..9 (found {int(labels.max())})")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split_pools(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index pools of n training digits: a seeded 5/6 vs 1/6 split (50k / 10k)."""
    perm = torch.randperm(n, generator=generator)
    n_val = _split_counts(n, MULTI_VAL_POOL)
    return perm[n_val:], perm[:n_val]


def compose_two_sources(first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor],
                        n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """MultiFashion+MNIST composition [2]: `first` top-left, `second` bottom-right on a 36x36 grid.

    Same recipe as `common.data.compose_multi` with 2 positions (pixel-wise max where they overlap,
    antialiased bilinear resize to 28x28, sampling with replacement), except that each position
    draws from its own source. Returns x (n, 1, 28, 28) in [0, 1] and the two label tensors.
    """
    (a, a_labels), (b, b_labels) = first, second
    ia = torch.randint(len(a), (n,), generator=generator)
    ib = torch.randint(len(b), (n,), generator=generator)
    out = torch.empty(n, 1, 28, 28)
    for s in range(0, n, 2048):
        ja, jb = ia[s:s + 2048], ib[s:s + 2048]
        canvas = torch.zeros(len(ja), 1, 36, 36)
        canvas[:, 0, :28, :28] = a[ja].float() / 255.0
        canvas[:, 0, 8:, 8:] = torch.maximum(canvas[:, 0, 8:, 8:], b[jb].float() / 255.0)
        out[s:s + 2048] = F.interpolate(canvas, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    return out, [a_labels[ia].long(), b_labels[ib].long()]


def _source_fingerprint(paths: Sequence[str]) -> list[list]:
    """(file name, byte size, whole-second mtime) of every source file: a cache built from other
    files is rebuilt (copying the data elsewhere may cost one rebuild)."""
    return [[os.path.basename(p), int(os.stat(p).st_size), int(os.stat(p).st_mtime)] for p in sorted(paths)]


def _load_cache(path: str, fingerprint: list, sizes: Sequence[int], num_tasks: int) -> dict | None:
    """The cached composed splits, or None when absent, unreadable, stale or of the wrong shape."""
    if not os.path.isfile(path):
        return None
    try:
        blob = torch.load(path, weights_only=True)
        ok = blob["source"] == fingerprint and all(
            blob[s]["x"].dtype == torch.uint8 and tuple(blob[s]["x"].shape) == (n, 1, 28, 28)
            and tuple(blob[s]["ys"].shape) == (n, num_tasks)
            for s, n in zip(("train", "val", "test"), sizes))
    except Exception:
        return None  # a corrupt cache is rebuilt
    return blob if ok else None


def _save_cache(path: str, blob: dict) -> bool:
    """Write atomically (temp file + os.replace); an unwritable root only costs the cache."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        return False


def _check_sizes(sizes) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in sizes)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise UsageError(f"sizes must be three positive integers (train, val, test), got {sizes!r}")
    return out  # type: ignore[return-value]


def _multi_loader(name: str, sources: Sequence[str], num_digits: int, task_names: Sequence[str]):
    """Build the loader of one MultiMNIST-family dataset [1, 2].

    `sources` names the folders under root holding `raw/` IDX files: one folder (every position
    draws from it, `compose_multi`) or two (position k draws from source k, `compose_two_sources`).
    """

    def load(root: str, seed: int, data_seed: int = 0, sizes: Sequence[int] = MULTI_SIZES, **_) -> MTLData:
        """1. Check the IDX files of every source. 2. Reuse `root/<name>/` cache if it matches.
        3. Otherwise split each source's 60k training digits into disjoint 50k / 10k train / val
        pools (seeded by `data_seed`), compose `sizes` = (train, val, test) images from the train
        pool, the val pool and the 10k t10k digits, and cache them as uint8. 4. Normalise with the
        MNIST mean / std (also for FashionMNIST: a fixed affine map, kept identical across the
        family). `augment` is ignored (no augmentation in [1, 2])."""
        sizes = _check_sizes(sizes)
        paths = [idx_paths(name, os.path.join(root, src, "raw")) for src in sources]
        fingerprint = _source_fingerprint([p for d in paths for p in d.values()])
        cache = os.path.join(root, name, f"{name}_dataseed{data_seed}_{sizes[0]}-{sizes[1]}-{sizes[2]}.pt")
        blob = _load_cache(cache, fingerprint, sizes, num_digits)
        cached = blob is not None
        if blob is None:
            g = torch.Generator().manual_seed(int(data_seed))
            pools = {"train": [], "val": [], "test": []}
            for src_paths in paths:
                images, labels = read_idx_split(name, src_paths, "train")
                test_images, test_labels = read_idx_split(name, src_paths, "test")
                tr, va = split_pools(len(images), g)
                pools["train"].append((images[tr], labels[tr]))
                pools["val"].append((images[va], labels[va]))
                pools["test"].append((test_images, test_labels))
            blob = {"source": fingerprint}
            for split, n in zip(("train", "val", "test"), sizes):
                if len(sources) == 1:
                    x, ys = compose_multi(*pools[split][0], n, num_digits, g)
                else:
                    x, ys = compose_two_sources(pools[split][0], pools[split][1], n, g)
                blob[split] = {"x": (x * 255).round().to(torch.uint8), "ys": torch.stack(ys, 1)}
            cached = _save_cache(cache, blob)
        splits = {}
        for split in ("train", "val", "test"):
            x = (blob[split]["x"].float() / 255.0 - MNIST_MEAN) / MNIST_STD
            ys = blob[split]["ys"]
            splits[split] = TensorMTL(x, [ys[:, k].long() for k in range(num_digits)])
        return MTLData(name, [task(t, "class", 10) for t in task_names], splits["train"], splits["val"],
                       splits["test"], (1, 28, 28), "lenet",
                       info={"data_seed": data_seed, "sizes": list(sizes), "sources": list(sources),
                             "cache": cache if cached else None})

    return load


# --------------------------------------------------------------------------------------------
# 3. Census (UCI Adult) with PML's task pair age / education [3]
# --------------------------------------------------------------------------------------------
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
                 "native-country", "income")
ADULT_INTEGER = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
ADULT_NUMERIC_FEATURES = ("fnlwgt", "capital-gain", "capital-loss", "hours-per-week")
ADULT_CATEGORICAL_FEATURES = ("workclass", "marital-status", "occupation", "relationship", "race", "sex",
                              "native-country", "income")
EDUCATION_RULES = {
    # PML's code (nik-dim/pamal, census.py) labels education 1 for any post-secondary schooling:
    # Bachelors, Some college, Masters (misspelt "Maters" there, so Masters falls to 0: a bug we do
    # not copy), Associates, Doctorate, Prof school. On Adult's values that is:
    "postsecondary": frozenset({"Some-college", "Assoc-acdm", "Assoc-voc", "Bachelors", "Masters",
                                "Prof-school", "Doctorate"}),
    # A stricter alternative: a completed degree of at least a bachelor's.
    "degree": frozenset({"Bachelors", "Masters", "Prof-school", "Doctorate"}),
}
CENSUS_VAL_FRACTION = 0.1
CENSUS_EXPECTED = "adult.data and adult.test (UCI Adult CSV, 15 comma-separated columns, no header)"


def read_adult(dataset: str, path: str) -> list[list]:
    """Rows of a UCI Adult file: 15 fields, ", "-separated; integers parsed, '?' kept as a category.

    Blank lines and lines starting with '|' (adult.test's first line) are skipped; the trailing
    '.' of adult.test's income labels is removed.
    """
    if not os.path.isfile(path):
        raise _fail(dataset, os.path.dirname(path), f"{os.path.basename(path)}, one of {CENSUS_EXPECTED}")
    rows = []
    int_cols = [ADULT_COLUMNS.index(c) for c in ADULT_INTEGER]
    try:
        with open(path, encoding="latin-1") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("|"):
                    continue
                fields = [f.strip() for f in line.split(",")]
                if len(fields) != len(ADULT_COLUMNS):
                    raise ValueError(f"line {lineno} has {len(fields)} columns")
                for c in int_cols:
                    try:
                        fields[c] = int(fields[c])
                    except ValueError:
                        raise ValueError(f"line {lineno}: {ADULT_COLUMNS[c]} {fields[c]!r} is not an integer") from None
                fields[-1] = fields[-1].rstrip(".")
                rows.append(fields)
    except (OSError, ValueError) as e:
        raise _fail(dataset, path, f"UCI Adult CSV with 15 comma-separated columns ({e})") from e
    if len(rows) < 2:
        raise _fail(dataset, path, f"UCI Adult CSV with at least 2 data rows (found {len(rows)})")
    return rows


def _census(root: str, seed: int, data_seed: int = 0, age_threshold: int = 40, education: str = "postsecondary",
            **_) -> MTLData:
    """UCI Adult with two binary tasks, each a 2-way classification (PML: two heads of 2 outputs) [3].

    1. Tasks: "age" = 1 if age >= `age_threshold` (40: PML's code, `task_age`, on the KDD
       census-income data); "education" = 1 if the education value is in EDUCATION_RULES[`education`]
       ("postsecondary", PML's rule, default; or "degree"). PML's code reads the 42-column KDD
       census-income files; DESIGN.md asks for UCI Adult, so the rules are mapped onto Adult's values.
    2. Features (12 columns): the target columns age and education are dropped, and so is
       education-num (it encodes education one-to-one). fnlwgt, capital-gain, capital-loss and
       hours-per-week are standardised with the mean / std of the training split; workclass,
       marital-status, occupation, relationship, race, sex, native-country and income are one-hot
       encoded ('?' is its own category; income is an input here, as the unused target column is in
       PML's code). The category vocabulary is read from adult.data (inputs only, no labels), so the
       feature count does not change with `data_seed`; values unseen there encode as all zeros.
    3. Splits: val = a seeded 10% of adult.data (`data_seed`), train = the rest, test = adult.test.
    """
    if education not in EDUCATION_RULES:
        raise UsageError(f"census: education rule must be one of {sorted(EDUCATION_RULES)}, got {education!r}")
    folder = os.path.join(root, "census")
    _require_dir("census", folder, CENSUS_EXPECTED)
    train_rows = read_adult("census", os.path.join(folder, "adult.data"))
    test_rows = read_adult("census", os.path.join(folder, "adult.test"))

    cat_idx = [ADULT_COLUMNS.index(c) for c in ADULT_CATEGORICAL_FEATURES]
    num_idx = [ADULT_COLUMNS.index(c) for c in ADULT_NUMERIC_FEATURES]
    vocab = [sorted({r[c] for r in train_rows}) for c in cat_idx]
    lookup = [{v: i for i, v in enumerate(vs)} for vs in vocab]
    offsets = np.cumsum([len(ADULT_NUMERIC_FEATURES)] + [len(v) for v in vocab])
    n_features = int(offsets[-1])
    positive = EDUCATION_RULES[education]
    age_col, edu_col = ADULT_COLUMNS.index("age"), ADULT_COLUMNS.index("education")

    def encode(rows):
        x = np.zeros((len(rows), n_features), dtype=np.float32)
        x[:, :len(num_idx)] = np.array([[r[c] for c in num_idx] for r in rows], dtype=np.float64)
        for k, c in enumerate(cat_idx):
            cols = np.array([lookup[k].get(r[c], -1) for r in rows])
            seen = cols >= 0
            x[np.nonzero(seen)[0], offsets[k] + cols[seen]] = 1.0
        age = torch.tensor([int(r[age_col] >= age_threshold) for r in rows], dtype=torch.long)
        edu = torch.tensor([int(r[edu_col] in positive) for r in rows], dtype=torch.long)
        return x, age, edu

    x_all, age_all, edu_all = encode(train_rows)
    x_test, age_test, edu_test = encode(test_rows)
    g = torch.Generator().manual_seed(int(data_seed))
    perm = torch.randperm(len(train_rows), generator=g)
    n_val = _split_counts(len(train_rows), CENSUS_VAL_FRACTION)
    val_idx, train_idx = perm[:n_val].numpy(), perm[n_val:].numpy()
    k = len(num_idx)
    mean = x_all[train_idx, :k].mean(0)
    std = x_all[train_idx, :k].std(0)
    std[std == 0] = 1.0
    for x in (x_all, x_test):
        x[:, :k] = (x[:, :k] - mean) / std

    def split(x, age, edu, idx=None):
        if idx is not None:
            x, age, edu = x[idx], age[idx], edu[idx]
        return TensorMTL(torch.from_numpy(np.ascontiguousarray(x)), [age, edu])

    names = list(ADULT_NUMERIC_FEATURES) + [f"{c}={v}" for c, vs in zip(ADULT_CATEGORICAL_FEATURES, vocab) for v in vs]
    return MTLData("census", [task("age", "class", 2), task("education", "class", 2)],
                   split(x_all, age_all, edu_all, train_idx), split(x_all, age_all, edu_all, val_idx),
                   split(x_test, age_test, edu_test), (n_features,), "mlp",
                   info={"data_seed": data_seed, "age_threshold": age_threshold, "education_rule": education,
                         "education_positive": sorted(positive), "feature_names": names,
                         "numeric_mean": mean.tolist(), "numeric_std": std.tolist()})


# --------------------------------------------------------------------------------------------
# Images read lazily with PIL (UTKFace [4], CelebA [5])
# --------------------------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SIZE = 64


def load_image(dataset: str, path: str, size: int = IMAGE_SIZE, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> torch.Tensor:
    """RGB image -> (3, size, size) float in [0, 1], optionally normalised.

    Equivalent to torchvision's Resize((size, size)) + ToTensor (+ Normalize) on PIL images (PIL
    bilinear resampling, which antialiases when shrinking). Any read error becomes a DataError.
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is in requirements.txt
        raise DataError(f"dataset '{dataset}' needs Pillow to read images (pip install Pillow)") from e
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except Exception as e:
        raise _fail(dataset, path, f"a readable RGB image ({type(e).__name__}: {e})") from e
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    if mean is not None:
        x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x


class ImageFilesMTL(Dataset):
    """Images read from `paths` on access (nothing large is cached) with per-task targets `ys`."""

    def __init__(self, dataset: str, paths: Sequence[str], ys: Sequence[torch.Tensor],
                 size: int = IMAGE_SIZE, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        assert all(len(y) == len(paths) for y in ys)
        self.dataset, self.paths, self.ys = dataset, list(paths), tuple(ys)
        self.size, self.mean, self.std = size, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        x = load_image(self.dataset, self.paths[i], self.size, self.mean, self.std)
        return x, tuple(y[i] for y in self.ys)


# --------------------------------------------------------------------------------------------
# 4. UTKFace [4]
# --------------------------------------------------------------------------------------------
UTK_EXPECTED = "UTKFace images <age>_<gender>_<race>_<date&time>.jpg (at least 3)"
UTK_TEST_FRACTION, UTK_VAL_FRACTION = 0.2, 0.1


def parse_utk_name(filename: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from `<age>_<gender>_<race>_<date&time>.jpg[.chip.jpg]`, None if malformed.

    gender 0 male / 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others [4]. A few files of
    the public release lack a field (e.g. `39_1_20170116174525125.jpg.chip.jpg`): those give None.
    """
    parts = filename.split("_")
    if len(parts) < 4 or not parts[3]:
        return None
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if not (0 <= age <= 150 and gender in (0, 1) and 0 <= race <= 4):
        return None
    return age, gender, race


def _utkface(root: str, seed: int, data_seed: int = 0, **_) -> MTLData:
    """UTKFace: age (Huber regression on the normalised age), gender (2), ethnicity (5) [4].

    1. Every `*.jpg` directly in `root/utkface/` whose name parses (`parse_utk_name`); the others are
       skipped and counted in info["skipped"] (a handful in the public release).
    2. Images: RGB, resized to 64x64 (PML), ToTensor, normalised with the ImageNet mean / std (the
       encoder is a ResNet-18), read lazily.
    3. Splits (seeded by `data_seed`, files sorted first): 20% test, and 10% of the remaining 80% as
       validation (72 / 8 / 20 overall). PML's code uses 70 / 10 / 20 with a fixed seed 42.
    4. Age target (age - mean) / std with mean / std of the training split (in info); PML's code
       uses the whole dataset's statistics. `augment` is ignored (PML uses none).
    """
    folder = os.path.join(root, "utkface")
    _require_dir("utkface", folder, UTK_EXPECTED)
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
    parsed = [(n, parse_utk_name(n)) for n in names]
    good = [(n, p) for n, p in parsed if p is not None]
    if len(good) < 3:
        raise _fail("utkface", folder, f"{UTK_EXPECTED}; found {len(good)} well-named of {len(names)} .jpg files")
    paths = [os.path.join(folder, n) for n, _ in good]
    load_image("utkface", paths[0])  # fail fast on unreadable files
    ages = torch.tensor([p[0] for _, p in good], dtype=torch.float32)
    genders = torch.tensor([p[1] for _, p in good], dtype=torch.long)
    races = torch.tensor([p[2] for _, p in good], dtype=torch.long)

    g = torch.Generator().manual_seed(int(data_seed))
    perm = torch.randperm(len(good), generator=g).tolist()
    n_test = _split_counts(len(good), UTK_TEST_FRACTION)
    test_idx, rest = perm[:n_test], perm[n_test:]
    n_val = _split_counts(len(rest), UTK_VAL_FRACTION) if len(rest) > 1 else 0
    val_idx, train_idx = rest[:n_val], rest[n_val:]
    age_mean = float(ages[train_idx].mean())
    age_std = float(ages[train_idx].std()) if len(train_idx) > 1 else 1.0
    age_std = age_std if age_std > 0 else 1.0
    base = ImageFilesMTL("utkface", paths, [(ages - age_mean) / age_std, genders, races],
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return MTLData("utkface", [task("age", "huber"), task("gender", "class", 2), task("ethnicity", "class", 5)],
                   Subset(base, train_idx), Subset(base, val_idx), Subset(base, test_idx),
                   (3, IMAGE_SIZE, IMAGE_SIZE), "resnet18",
                   info={"data_seed": data_seed, "age_mean": age_mean, "age_std": age_std,
                         "skipped": len(names) - len(good), "num_images": len(good)})


# --------------------------------------------------------------------------------------------
# 5. CelebA [5]
# --------------------------------------------------------------------------------------------
CELEBA_EXPECTED = ("img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt "
                   "(torchvision's CelebA layout)")


def read_celeba_attributes(dataset: str, path: str) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt: line 1 the image count, line 2 the 40 attribute names, then one line
    `<file> <40 values of 1 / -1>` per image. Returns names, files and an (N, 40) int8 array."""
    expected = "list_attr_celeba.txt (count line, 40 attribute names, then '<file> <40 values of 1/-1>' lines)"
    if not os.path.isfile(path):
        raise _fail(dataset, os.path.dirname(path), f"{expected}, part of {CELEBA_EXPECTED}")
    try:
        with open(path, encoding="latin-1") as fh:
            lines = [ln.split() for ln in fh if ln.strip()]
        if len(lines) < 3:
            raise ValueError(f"{len(lines)} non-empty lines")
        count, names = int(lines[0][0]), lines[1]
        if len(names) != 40:
            raise ValueError(f"{len(names)} attribute names on line 2, expected 40")
        rows = lines[2:]
        bad = next((k for k, r in enumerate(rows) if len(r) != 41), None)
        if bad is not None:
            raise ValueError(f"line {bad + 3} has {len(rows[bad])} columns, expected 41")
        if len(rows) != count:
            raise ValueError(f"line 1 announces {count} images, the file lists {len(rows)}")
        tokens = list(itertools.chain.from_iterable(r[1:] for r in rows))
        odd = set(tokens) - {"1", "-1"}
        if odd:
            raise ValueError(f"attribute values other than 1 / -1 (e.g. {sorted(odd)[0]!r})")
        values = np.where(np.array(tokens) == "1", 1, -1).astype(np.int8).reshape(len(rows), 40)
    except (OSError, ValueError, IndexError) as e:
        raise _fail(dataset, path, f"{expected} ({e})") from e
    return names, [r[0] for r in rows], values


def read_celeba_partition(dataset: str, path: str) -> dict[str, int]:
    """list_eval_partition.txt: `<file> <0|1|2>` (train / val / test) per line."""
    expected = "list_eval_partition.txt ('<file> <0|1|2>' lines)"
    if not os.path.isfile(path):
        raise _fail(dataset, os.path.dirname(path), f"{expected}, part of {CELEBA_EXPECTED}")
    out = {}
    try:
        with open(path, encoding="latin-1") as fh:
            for lineno, line in enumerate(fh, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                    raise ValueError(f"line {lineno} is {line.strip()!r}")
                out[fields[0]] = int(fields[1])
    except (OSError, ValueError) as e:
        raise _fail(dataset, path, f"{expected} ({e})") from e
    return out


def _celeba(root: str, seed: int, **_) -> MTLData:
    """CelebA: 40 binary attributes (targets 0 / 1 float), standard partition [5].

    1. Parse list_attr_celeba.txt and list_eval_partition.txt ourselves (torchvision's layout,
       no download); every attribute row needs a partition entry and an image in img_align_celeba/.
    2. Images Resize((64, 64)) + ToTensor as in the FAMO / FairGrad code (no normalisation), read
       lazily. `augment` is ignored (none in those codes).
    """
    folder = os.path.join(root, "celeba")
    _require_dir("celeba", folder, CELEBA_EXPECTED)
    img_dir = os.path.join(folder, "img_align_celeba")
    _require_dir("celeba", img_dir, CELEBA_EXPECTED)
    names, files, values = read_celeba_attributes("celeba", os.path.join(folder, "list_attr_celeba.txt"))
    partition = read_celeba_partition("celeba", os.path.join(folder, "list_eval_partition.txt"))
    missing = [f for f in files if f not in partition]
    if missing:
        raise _fail("celeba", os.path.join(folder, "list_eval_partition.txt"),
                    f"a partition entry for every image of list_attr_celeba.txt ({len(missing)} missing, "
                    f"e.g. {missing[0]})")
    present = set(os.listdir(img_dir))
    missing = [f for f in files if f not in present]
    if missing:
        raise _fail("celeba", img_dir, f"every image listed in list_attr_celeba.txt ({len(missing)} missing, "
                    f"e.g. {missing[0]})")
    paths = [os.path.join(img_dir, f) for f in files]
    load_image("celeba", paths[0])  # fail fast on unreadable images
    targets = torch.from_numpy((values.astype(np.float32) + 1.0) / 2.0).T.contiguous()  # (40, N)
    base = ImageFilesMTL("celeba", paths, list(targets))
    part = np.array([partition[f] for f in files])
    splits = [Subset(base, np.nonzero(part == k)[0].tolist()) for k in (0, 1, 2)]
    return MTLData("celeba", [task(n, "binary") for n in names], *splits, (3, IMAGE_SIZE, IMAGE_SIZE), "celeba_cnn",
                   info={"split_sizes": [len(s) for s in splits]})


# --------------------------------------------------------------------------------------------
# 6-7. Scene understanding: MTAN-preprocessed Cityscapes and NYUv2 [6]
# --------------------------------------------------------------------------------------------
SCENE_SCALES = (1.0, 1.2, 1.5)


def scale_crop(image: torch.Tensor, label: torch.Tensor, depth: torch.Tensor, normal: torch.Tensor | None,
               scale: float, top: int, left: int, inverse_depth: bool = False):
    """Crop the (int(H / scale), int(W / scale)) window at (top, left) and resize it back to H x W [6].

    image (3, H, W) bilinear (align_corners=True, as MTAN); label (H, W) int64, depth (1, H, W) and
    normal (3, H, W) nearest. Zooming in by `scale` brings the scene closer: depth is divided by it
    (MTAN), or multiplied when `inverse_depth` (disparity, Cityscapes). MTAN resizes normals
    bilinearly, which blends valid pixels with invalid (zero) ones and shortens unit vectors; nearest
    keeps both exact. Returns (image, label, depth, normal).
    """
    H, W = image.shape[-2:]
    h, w = int(H / scale), int(W / scale)
    if not (0 <= top <= H - h and 0 <= left <= W - w):
        raise ValueError(f"crop ({top}, {left}) of size {h}x{w} outside {H}x{W}")
    factor = scale if inverse_depth else 1.0 / scale
    if (h, w) == (H, W):
        return image.clone(), label.clone(), depth * factor, None if normal is None else normal.clone()

    def crop(t):
        return t[..., top:top + h, left:left + w].unsqueeze(0)

    image = F.interpolate(crop(image), size=(H, W), mode="bilinear", align_corners=True)[0]
    label = F.interpolate(crop(label.unsqueeze(0).float()), size=(H, W), mode="nearest")[0, 0].round().long()
    depth = F.interpolate(crop(depth), size=(H, W), mode="nearest")[0] * factor
    if normal is not None:
        normal = F.interpolate(crop(normal), size=(H, W), mode="nearest")[0]
    return image, label, depth, normal


def hflip(image: torch.Tensor, label: torch.Tensor, depth: torch.Tensor, normal: torch.Tensor | None):
    """Mirror left-right; the normal's x component changes sign [6]."""
    image, label, depth = image.flip(-1), label.flip(-1), depth.flip(-1)
    if normal is not None:
        normal = normal.flip(-1).clone()
        normal[0] = -normal[0]
    return image, label, depth, normal


def random_scene_augment(image: torch.Tensor, label: torch.Tensor, depth: torch.Tensor,
                         normal: torch.Tensor | None = None, generator: torch.Generator | None = None,
                         scales: Sequence[float] = SCENE_SCALES, inverse_depth: bool = False):
    """MTAN's training augmentation [6]: a scale s drawn from `scales`, a random crop position
    (`scale_crop`), then a horizontal flip with probability 0.5 (`hflip`). Pure: all randomness comes
    from `generator` (torch's global generator when None, which DataLoader workers seed)."""
    H, W = image.shape[-2:]
    s = float(scales[int(torch.randint(len(scales), (1,), generator=generator))])
    h, w = int(H / s), int(W / s)
    top = int(torch.randint(H - h + 1, (1,), generator=generator))
    left = int(torch.randint(W - w + 1, (1,), generator=generator))
    out = scale_crop(image, label, depth, normal, s, top, left, inverse_depth)
    if float(torch.rand(1, generator=generator)) < 0.5:
        out = hflip(*out)
    return out


def _load_npy(dataset: str, path: str, what: str) -> np.ndarray:
    """One .npy array; a file that is not one (a damaged header reads to numpy as "pickled data",
    whose message advises allow_pickle) is reported as not a valid array, with its path."""
    try:
        return np.load(path, allow_pickle=False)
    except OSError as e:
        raise _fail(dataset, path, f"a readable NumPy .npy {what} array ({e.strerror or type(e).__name__})") from e
    except Exception as e:
        why = "it is truncated" if "EOF" in str(e) or "cannot reshape" in str(e) else "its header is damaged or it was not written by numpy.save"
        raise DataError(f"dataset '{dataset}': {path} is not a valid NumPy .npy {what} array ({why}); "
                        f"re-create it (see {DATA_README})") from e


class SceneMTL(Dataset):
    """One split folder of MTAN's preprocessed data: `{image,<label_dir>,depth[,normal]}/<i>.npy` [6].

    Items: image (3, H, W) float, segmentation (H, W) int64 with -1 = ignore, depth (1, H, W) float
    (0 = invalid), and with `with_normal` the normal (3, H, W) float. Files are read on access.
    """

    def __init__(self, dataset: str, folder: str, label_dir: str, num_classes: int, with_normal: bool,
                 augment: bool = False, inverse_depth: bool = False):
        self.dataset, self.folder, self.label_dir = dataset, folder, label_dir
        self.num_classes, self.with_normal = num_classes, with_normal
        self.augment, self.inverse_depth = augment, inverse_depth
        self.kinds = ["image", label_dir, "depth"] + (["normal"] if with_normal else [])
        self.n = self._scan()
        self.shape: tuple[int, int] | None = None
        self.shape = tuple(self.read(0)[0].shape[-2:])  # fail fast: the first file of every kind parses

    def _scan(self) -> int:
        """Count image/<i>.npy and check that every other kind has exactly the same files."""
        expected = f"{'/, '.join(self.kinds)}/ folders of <i>.npy files, i = 0..N-1 (MTAN preprocessed)"
        _require_dir(self.dataset, self.folder, expected)
        listing = {}
        for kind in self.kinds:
            path = os.path.join(self.folder, kind)
            _require_dir(self.dataset, path, expected)
            listing[kind] = {f for f in os.listdir(path) if f.endswith(".npy")}
        n = len(listing["image"])
        want = {f"{i}.npy" for i in range(n)}
        if n == 0 or listing["image"] != want:
            raise _fail(self.dataset, os.path.join(self.folder, "image"),
                        f"files 0.npy .. N-1.npy (found {n} .npy files"
                        f"{'' if n == 0 else ', not numbered 0..' + str(n - 1)})")
        for kind in self.kinds[1:]:
            if listing[kind] != want:
                raise _fail(self.dataset, os.path.join(self.folder, kind),
                            f"the same {n} files 0.npy .. {n - 1}.npy as image/ (found {len(listing[kind])})")
        return n

    def __len__(self) -> int:
        return self.n

    def _read(self, kind: str, i: int) -> np.ndarray:
        return _load_npy(self.dataset, os.path.join(self.folder, kind, f"{i}.npy"), kind)

    def _bad(self, kind: str, i: int, what: str) -> DataError:
        return _fail(self.dataset, os.path.join(self.folder, kind, f"{i}.npy"), what)

    def read(self, i: int):
        """Item i as stored (no augmentation), every array checked against the expected shapes."""
        image = self._read("image", i)
        if image.ndim != 3 or image.shape[2] != 3:
            raise self._bad("image", i, f"an H x W x 3 image array (found shape {image.shape})")
        hw = image.shape[:2]
        if self.shape is not None and hw != self.shape:
            raise self._bad("image", i, f"H x W = {self.shape[0]} x {self.shape[1]} like the first file (found {hw})")
        label = self._read(self.label_dir, i)
        if label.shape != hw:
            raise self._bad(self.label_dir, i, f"an H x W label array of shape {hw} (found {label.shape})")
        if label.size and (label.min() < -1 or label.max() > self.num_classes - 1):
            raise self._bad(self.label_dir, i,
                            f"labels in -1..{self.num_classes - 1} (found {label.min()}..{label.max()})")
        depth = self._read("depth", i)
        if depth.shape not in (hw, hw + (1,)):
            raise self._bad("depth", i, f"an H x W x 1 depth array of shape {hw + (1,)} (found {depth.shape})")
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))
        seg = torch.from_numpy(np.rint(label).astype(np.int64))
        dep = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32).reshape(1, *hw))
        nor = None
        if self.with_normal:
            normal = self._read("normal", i)
            if normal.shape != hw + (3,):
                raise self._bad("normal", i, f"an H x W x 3 normal array of shape {hw + (3,)} (found {normal.shape})")
            nor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normal, -1, 0), dtype=np.float32))
        return x, seg, dep, nor

    def __getitem__(self, i):
        x, seg, dep, nor = self.read(i)
        if self.augment:
            x, seg, dep, nor = random_scene_augment(x, seg, dep, nor, inverse_depth=self.inverse_depth)
        return x, (seg, dep) if nor is None else (seg, dep, nor)


SCENE_NOTE = ("test = the benchmark's val/ split (as MTAN, Nash-MTL, FAMO, FairGrad); val = the same "
              "files unless holdout > 0, since those codes select nothing on a validation split")


def _scene_loader(name: str, label_dir: str, num_classes: int, with_normal: bool, reference: dict):
    """Build the loader of one MTAN-preprocessed scene dataset [6]."""

    def load(root: str, seed: int, augment: bool = False, data_seed: int = 0, holdout: float = 0.0,
             benchmark_depth_aug: bool = False, **_) -> MTLData:
        """1. Check `root/<name>/{train,val}/...` (folders, equal file counts, first file of each kind).
        2. test = val/ (the benchmark's test set). val = val/ as well by default: the benchmark codes
           report the last epoch and select nothing; with `holdout` in (0, 1) a seeded fraction of
           train/ (by `data_seed`, never augmented) is the validation split instead.
        3. `augment`: `random_scene_augment` on the training split only. Cityscapes' "depth" is
           disparity, which grows when zooming in, so it is multiplied by the scale; the benchmark
           code divides it as for metric depth: `benchmark_depth_aug=True` does that.
        H and W come from the files (128x256 Cityscapes, 288x384 NYUv2 in the public release)."""
        if not 0 <= holdout < 1:
            raise UsageError(f"{name}: holdout must be a fraction in [0, 1), got {holdout!r}")
        inverse_depth = name == "cityscapes" and not benchmark_depth_aug
        folder = os.path.join(root, name)
        _require_dir(name, folder, "train/ and val/ folders of MTAN-preprocessed .npy files")

        def split(sub: str, aug: bool = False) -> SceneMTL:
            return SceneMTL(name, os.path.join(folder, sub), label_dir, num_classes, with_normal,
                            augment=aug, inverse_depth=inverse_depth)

        train_plain, test = split("train"), split("val")
        if test.shape != train_plain.shape:
            raise _fail(name, os.path.join(folder, "val", "image"),
                        f"images of the size of train/ ({train_plain.shape}, found {test.shape})")
        train = split("train", aug=True) if augment else train_plain
        if 0 < holdout < 1 and len(train) > 1:
            g = torch.Generator().manual_seed(int(data_seed))
            perm = torch.randperm(len(train), generator=g).tolist()
            n_val = _split_counts(len(train), holdout)
            val, train = Subset(train_plain, perm[:n_val]), Subset(train, perm[n_val:])
            note = f"test = val/; val = a seeded {holdout:.0%} of train/ (data_seed {data_seed})"
        else:
            val, note = test, SCENE_NOTE
        tasks = [task("segmentation", "seg", num_classes), task("depth", "depth", 1)]
        if with_normal:
            tasks.append(task("normal", "normal", 3))
        return MTLData(name, tasks, train, val, test, (3,) + tuple(train_plain.shape), "segnet",
                       reference=copy.deepcopy(reference),
                       info={"note": note, "val_is_test": val is test, "augment": bool(augment),
                             "inverse_depth_aug": inverse_depth, "num_train": len(train_plain),
                             "num_test": len(test)})

    return load


CITYSCAPES_REFERENCE = {"segmentation": {"miou": 0.7401, "pixacc": 0.9316},
                        "depth": {"abs_err": 0.0125, "rel_err": 27.77}}
NYUV2_REFERENCE = {"segmentation": {"miou": 0.3830, "pixacc": 0.6376},
                   "depth": {"abs_err": 0.6754, "rel_err": 0.2780},
                   "normal": {"mean": 25.01, "median": 19.21, "11.25": 0.3014, "22.5": 0.5720, "30": 0.6915}}


# --------------------------------------------------------------------------------------------
# 8-9. Dense prediction: NYUD-v2 and PASCAL-Context in the survey's on-disk layout [8]
# --------------------------------------------------------------------------------------------
NYUD_SIZE, PASCAL_SIZE = (448, 576), (512, 512)  # AvgNorm appendix: "resized to 448x576" / "512x512"
DENSE_SCALES = (0.5, 2.0)  # AvgNorm appendix: random scaling with a factor between 0.5 and 2.0
# The tasks, in the order the run_all registry expects, each with the one metric of AvgNorm Table II.
NYUD_TASKS = [task("semseg", "seg", 40, metrics=("miou",)), task("depth", "depth", 1, metrics=("rmse",)),
              task("normals", "normal_l1", 3, metrics=("mean",)), task("edge", "edge", 1)]
PASCAL_TASKS = [task("semseg", "seg", 21, metrics=("miou",)), task("human_parts", "seg", 7, metrics=("miou",)),
                task("normals", "normal_l1", 3, metrics=("mean",)), task("sal", "saliency", 1), task("edge", "edge", 1)]
# Single-task references for Delta-m%: AvgNorm Table II, ResNet-18 "Single-task" row, in the units of
# common/metrics.py (mIoU, maxF and odsF as fractions; RMSE in metres; mean angle in degrees).
NYUD_REFERENCE = {"semseg": {"miou": 0.3938}, "depth": {"rmse": 0.6111}, "normals": {"mean": 21.94},
                  "edge": {"odsF": 0.7240}}
PASCAL_CONTEXT_REFERENCE = {"semseg": {"miou": 0.6659}, "human_parts": {"miou": 0.6129}, "normals": {"mean": 13.67},
                            "sal": {"maxF": 0.8477}, "edge": {"odsF": 0.6690}}
# Six human parts (the survey's HUMAN_PART[6] grouping of the PASCAL-Part person parts; 0 = background).
HUMAN_PART_GROUPS = {1: ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"),
                     2: ("neck", "torso"), 3: ("luarm", "ruarm"), 4: ("lhand", "llarm", "rhand", "rlarm"),
                     5: ("luleg", "ruleg"), 6: ("lfoot", "llleg", "rfoot", "rlleg")}
HUMAN_PART_IDS = {name: k for k, names in HUMAN_PART_GROUPS.items() for name in names}
PASCAL_PERSON = 15  # VOC class index of 'person' in the PASCAL-Part annotations
# PASCAL-Context classes (LabelMap values, 1..459) whose distilled normals are kept: the classes whose
# name is also an NYUv2 class name (but not 'unknown'), plus 'tvmonitor' (survey, data/pascal_context.py,
# from data/db_info/{nyu,context}_classes.json); elsewhere the normal target is invalid (zero).
PASCAL_NORMAL_CLASSES = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55, 56,
    59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122,
    124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199,
    202, 213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260,
    261, 263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310,
    314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380,
    383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441,
    442, 443, 444, 446, 454, 457))
# Fill value of each target where the augmentation pads (ignored by its loss and metric).
DENSE_FILL = {"semseg": -1, "human_parts": -1, "depth": 0.0, "normals": 0.0, "sal": -1.0, "edge": -1.0}


def _read_rgb(dataset: str, path: str) -> np.ndarray:
    """An image file as an H x W x 3 uint8 array (PIL, converted to RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise _fail(dataset, path, f"a readable RGB image ({type(e).__name__}: {e})") from e


def _read_png(dataset: str, path: str, what: str, channels: int = 1) -> np.ndarray:
    """A PNG as stored (palette indices for 'P' images): H x W, or H x W x `channels`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im).copy()
    except Exception as e:
        raise _fail(dataset, path, f"a readable PNG {what} ({type(e).__name__}: {e})") from e
    want = 2 if channels == 1 else 3
    if arr.ndim != want or (channels > 1 and arr.shape[2] < channels):
        raise _fail(dataset, path, f"a {'single-channel' if channels == 1 else 'RGB'} PNG {what} (found shape {arr.shape})")
    return arr if channels == 1 else arr[..., :channels]


def _read_dense_npy(dataset: str, path: str, what: str, channels: int) -> np.ndarray:
    """A NumPy map: H x W (channels 1; H x W x 1 accepted) or H x W x `channels`, as float32."""
    arr = _load_npy(dataset, path, what)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    ok = arr.ndim == 2 if channels == 1 else (arr.ndim == 3 and arr.shape[2] == channels)
    if not ok or arr.size == 0:
        shape = "H x W" if channels == 1 else f"H x W x {channels}"
        raise _fail(dataset, path, f"an {shape} {what} array (found shape {arr.shape})")
    return np.asarray(arr, dtype=np.float32)


def _unit_normals(n: np.ndarray) -> np.ndarray:
    """Normals divided by their length (the survey's FixedResize re-normalises them); zero stays zero."""
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0, n / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


def laplacian_edges(label_map: np.ndarray) -> np.ndarray:
    """PASCAL-Context edge target of the survey (data/pascal_context.py, _load_edge): the pixels
    where the 4-neighbour Laplacian of the label map is non-zero (OpenCV's Laplacian, ksize 1, with
    its reflect-101 border), thinned (skimage's thin = `common.metrics.thin`). H x W float32 0 / 1.

    Like the survey's, this misses a boundary between labels a - 1 and a + 1 on either side of a
    pixel of label a, where the Laplacian vanishes."""
    L = np.asarray(label_map, dtype=np.float64)
    P = np.pad(L, 1, mode="reflect")
    lap = P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4.0 * L
    return thin(torch.from_numpy(lap != 0)).numpy().astype(np.float32)


def _resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, h, w) -> (C, H, W): 'nearest' (OpenCV's INTER_NEAREST rule, floor(dst * src / dst), the
    survey's for every label map) keeps labels, depths and unit normals exact; 'bilinear' for images."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    if mode == "nearest":
        return F.interpolate(t.unsqueeze(0).float(), size=size, mode="nearest")[0].to(t.dtype)
    return F.interpolate(t.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def colour_jitter(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random colour jittering of a (3, H, W) image in [0, 255] (AvgNorm appendix; the ATRC / InvPT
    PhotoMetricDistortion without its hue shift): brightness + U(-32, 32), contrast x U(0.5, 1.5) and
    saturation (blend with the grey image) x U(0.5, 1.5), each with probability 0.5, then clamped."""
    def coin() -> bool:
        return float(torch.rand(1, generator=generator)) < 0.5

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(1, generator=generator))

    if coin():
        image = image + uniform(-32.0, 32.0)
    if coin():
        image = image * uniform(0.5, 1.5)
    if coin():
        grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).unsqueeze(0)
        image = grey + (image - grey) * uniform(0.5, 1.5)
    return image.clamp(0.0, 255.0)


def scale_crop_pad(image: torch.Tensor, targets: dict, scale: float, top: float, left: float) -> tuple:
    """Zoom the (3, H, W) image and its targets by `scale`, then cut an H x W window back out.

    The image is resized bilinearly to (round(H scale), round(W scale)), the targets with nearest,
    depth divided by the scale (the scene comes closer: the survey's ScaleNRotate and InvPT's
    RandomScaling do the same). Where the zoomed map is larger, a window is cropped at the fractions
    (`top`, `left`) in [0, 1] of the slack; where smaller, it is placed at those fractions of an
    H x W canvas padded with DENSE_FILL (0 for the normalised image, i.e. the mean colour).
    """
    H, W = image.shape[-2:]
    h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    dy, dx = int(round(top * abs(h - H))), int(round(left * abs(w - W)))
    src_y, dst_y = (slice(dy, dy + H), slice(0, H)) if h >= H else (slice(0, h), slice(dy, dy + h))
    src_x, dst_x = (slice(dx, dx + W), slice(0, W)) if w >= W else (slice(0, w), slice(dx, dx + w))

    def fit(t: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
        t = _resize(t, (h, w), mode)
        out = torch.full((t.shape[0], H, W), fill, dtype=t.dtype)
        out[:, dst_y, dst_x] = t[:, src_y, src_x]
        return out

    image = fit(image, "bilinear", 0.0)
    out = {}
    for name, t in targets.items():
        t = fit(t, "nearest", DENSE_FILL[name])
        out[name] = t / scale if name == "depth" else t
    return image, out


def flip_dense(image: torch.Tensor, targets: dict) -> tuple:
    """Mirror the image and every target left-right; the normals' x component changes sign (the
    survey's RandomHorizontalFlip)."""
    targets = {k: v.flip(-1) for k, v in targets.items()}
    if "normals" in targets:
        targets["normals"][0] = -targets["normals"][0]
    return image.flip(-1), targets


def dense_transform(raw: dict, task_names: Sequence[str], size: tuple[int, int], augment: bool = False,
                    jitter: bool = True, generator: torch.Generator | None = None):
    """Raw arrays of one item -> (image (3, H, W) float, targets in `task_names` order) [8].

    1. Resize to `size` (AvgNorm: 448x576 NYUD, 512x512 PASCAL): the image bilinearly, every target
       with nearest (the survey's FixedResize flag for every label; normals nearest instead of its
       cubic, which would mix valid and invalid pixels and shorten unit vectors).
    2. `augment` (training split): colour jitter (`jitter`), normalisation, a random scale in
       DENSE_SCALES with a random crop / pad (`scale_crop_pad`), and a horizontal flip with p = 0.5
       that negates the normals' x component (the survey's RandomHorizontalFlip). InvPT instead crops
       and pads the unresized image; here every map is first brought to `size` so that train and test
       see the same geometry. Its crop's "at most 75% of one class" retry rule is not applied.
    3. Normalisation with the ImageNet mean / std; human parts with no part pixel left become all
       ignore (-1), as the survey's AddIgnoreRegions.
    Targets: semseg / human_parts (H, W) int64 with -1 = ignore; depth (1, H, W) metres, 0 =
    invalid; normals (3, H, W) unit vectors, 0 = invalid; sal / edge (1, H, W) 0 / 1, -1 = ignore.
    """
    image = _resize(torch.from_numpy(raw["image"]).permute(2, 0, 1).float(), size, "bilinear")
    targets = {}
    for name in task_names:
        t = torch.from_numpy(np.ascontiguousarray(raw[name]))
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        targets[name] = _resize(t, size, "nearest")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255.0
    if augment and jitter:
        image = colour_jitter(image, generator)
    image = (image - mean) / std
    if augment:
        lo, hi = DENSE_SCALES
        u = torch.rand(3, generator=generator).tolist()
        image, targets = scale_crop_pad(image, targets, lo + (hi - lo) * u[0], u[1], u[2])
        if float(torch.rand(1, generator=generator)) < 0.5:
            image, targets = flip_dense(image, targets)
    if "human_parts" in targets and not bool((targets["human_parts"] > 0).any()):
        targets["human_parts"] = torch.full_like(targets["human_parts"], -1)
    out = []
    for name in task_names:
        t = targets[name]
        out.append(t[0] if name in ("semseg", "human_parts") else t.float())
    return image.contiguous(), tuple(out)


def read_split_ids(dataset: str, path: str) -> list[str]:
    """Image ids of a split file, one per line (blank lines skipped)."""
    if not os.path.isfile(path):
        raise _fail(dataset, os.path.dirname(path), f"the split file {os.path.basename(path)} (one image id per line)")
    try:
        with open(path, encoding="utf-8") as fh:
            ids = [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(dataset, path, f"a text split file with one image id per line ({e})") from e
    if not ids:
        raise _fail(dataset, path, "a split file with at least one image id (found none)")
    return ids


def _check_files(dataset: str, folder: str, ids: Sequence[str], ext: str, split_file: str) -> None:
    """Every id of the split has `folder/<id><ext>` (one directory listing, not one stat per file)."""
    _require_dir(dataset, folder, f"a folder of <id>{ext} files for every id in {split_file}")
    present = set(os.listdir(folder))
    missing = [i for i in ids if i + ext not in present]
    if missing:
        raise _fail(dataset, folder, f"<id>{ext} for every id in {split_file} ({len(missing)} missing, "
                                     f"e.g. {missing[0]}{ext})")


class DenseMTL(Dataset):
    """One split of a dense-prediction dataset: items read from disk on access and prepared by
    `dense_transform`. Subclasses define `read(i)`: the raw arrays of item i at file resolution."""

    task_names: tuple[str, ...] = ()

    def __init__(self, dataset: str, root: str, ids: Sequence[str], size: tuple[int, int], augment: bool = False,
                 jitter: bool = True):
        self.dataset, self.root, self.ids = dataset, root, list(ids)
        self.size, self.augment, self.jitter = tuple(size), augment, jitter

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, folder: str, i: int, ext: str) -> str:
        return os.path.join(self.root, folder, self.ids[i] + ext)

    def read(self, i: int) -> dict:
        """Item i from disk as raw arrays; each dataset's subclass (NYUDFiles, PascalContextFiles) defines it."""
        raise NotImplementedError(f"{type(self).__name__} is a base class: use NYUDFiles or PascalContextFiles")

    def with_augment(self, augment: bool) -> "DenseMTL":
        other = copy.copy(self)
        other.augment = augment
        return other

    def __getitem__(self, i):
        return dense_transform(self.read(i), self.task_names, self.size, self.augment, self.jitter)


class NYUDFiles(DenseMTL):
    """NYUD-v2 in the survey's NYUD_MT layout (data/nyud.py) [8]: images/<id>.jpg, segmentation/<id>.png
    (0 = unlabelled, 1..40 the classes), depth/<id>.npy (metres, 0 = invalid), normals/<id>.npy
    (H x W x 3, zero = invalid), edge/<id>.npy (>= 0.5 = edge)."""

    task_names = ("semseg", "depth", "normals", "edge")
    FILES = (("images", ".jpg"), ("segmentation", ".png"), ("depth", ".npy"), ("normals", ".npy"), ("edge", ".npy"))

    def read(self, i: int) -> dict:
        d = self.dataset
        image = _read_rgb(d, self.path("images", i, ".jpg"))
        seg_path = self.path("segmentation", i, ".png")
        seg = _read_png(d, seg_path, "label map").astype(np.int64)
        if seg.size and (seg.min() < 0 or seg.max() > 40):
            raise _fail(d, seg_path, f"labels 0..40 (0 = unlabelled; found {seg.min()}..{seg.max()})")
        # the survey maps 0 (unlabelled) to its ignore value 255 and class k to k - 1; ours is -1
        seg -= 1
        depth = _read_dense_npy(d, self.path("depth", i, ".npy"), "depth", 1)
        normals = _unit_normals(_read_dense_npy(d, self.path("normals", i, ".npy"), "normal", 3))
        edge = (_read_dense_npy(d, self.path("edge", i, ".npy"), "edge", 1) >= 0.5).astype(np.float32)
        return {"image": image, "semseg": seg, "depth": depth, "normals": normals, "edge": edge}


class PascalContextFiles(DenseMTL):
    """PASCAL-Context in the survey's PASCAL_MT layout (data/pascal_context.py) [8].

    - semseg: semseg/VOC12/<id>.png, else semseg/pascal-context/<id>.png; 0 = background, 1..20 the
      VOC classes, 255 = void (-> -1).
    - human_parts: human_parts/<id>.mat, PASCAL-Part's struct anno (fields imname, objects; each
      object class, class_ind, mask, parts; each part part_name, mask), read by position like the
      survey. Person objects (class_ind 15) paint their parts with HUMAN_PART_IDS; 0 elsewhere. An
      image without person parts is all ignore (-1), as the survey's AddIgnoreRegions.
    - normals: normals_distill/<id>.png, RGB -> 2 v / 255 - 1, kept only on PASCAL_NORMAL_CLASSES
      of the context label map, re-normalised (zero elsewhere = invalid).
    - sal: sal_distill/<id>.png / 255 > 0.5.
    - edge: `laplacian_edges` of pascal-context/trainval/<id>.mat 'LabelMap' (459 context classes).
      The survey's edge metric (SEISM) takes the label map's seg2bmap boundaries at full resolution
      as ground truth; ours evaluates against this training target at `size`.
    """

    task_names = ("semseg", "human_parts", "normals", "sal", "edge")
    FILES = (("JPEGImages", ".jpg"), ("human_parts", ".mat"), ("normals_distill", ".png"), ("sal_distill", ".png"),
             (os.path.join("pascal-context", "trainval"), ".mat"))

    def semseg_path(self, i: int) -> str:
        voc = self.path(os.path.join("semseg", "VOC12"), i, ".png")
        return voc if os.path.isfile(voc) else self.path(os.path.join("semseg", "pascal-context"), i, ".png")

    def _load_mat(self, path: str, what: str) -> dict:
        try:
            from scipy.io import loadmat

            return loadmat(path)
        except Exception as e:
            raise _fail(self.dataset, path, f"a MATLAB .mat file with {what} ({type(e).__name__}: {e})") from e

    def label_map(self, i: int) -> np.ndarray:
        path = self.path(os.path.join("pascal-context", "trainval"), i, ".mat")
        mat = self._load_mat(path, "the variable LabelMap")
        lm = mat.get("LabelMap")
        if lm is None or np.asarray(lm).ndim != 2 or not np.issubdtype(np.asarray(lm).dtype, np.number):
            raise _fail(self.dataset, path, "a .mat file with an H x W numeric 'LabelMap' (the 459-class context labels)")
        return np.asarray(lm)

    def human_parts(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        path = self.path("human_parts", i, ".mat")
        mat = self._load_mat(path, "the PASCAL-Part struct 'anno'")
        target = None
        try:
            for obj in np.asarray(mat["anno"][0][0][1]).ravel():
                if int(np.asarray(obj[1]).ravel()[0]) != PASCAL_PERSON:
                    continue
                for part in np.asarray(obj[3]).ravel():
                    name = str(np.asarray(part[0]).ravel()[0])
                    mask = np.asarray(part[1]).astype(bool)
                    if target is None:
                        target = np.zeros(mask.shape, dtype=np.int64)
                    if name not in HUMAN_PART_IDS:
                        raise ValueError(f"unknown person part {name!r}")
                    if mask.shape != target.shape:
                        raise ValueError(f"part masks of shapes {target.shape} and {mask.shape}")
                    target[mask] = HUMAN_PART_IDS[name]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise _fail(self.dataset, path, "PASCAL-Part's anno struct (objects with class, class_ind, mask, "
                                            f"parts of part_name and mask; {type(e).__name__}: {e})") from e
        return np.zeros(shape, dtype=np.int64) if target is None else target

    def read(self, i: int) -> dict:
        d = self.dataset
        image = _read_rgb(d, self.path("JPEGImages", i, ".jpg"))
        seg_path = self.semseg_path(i)
        seg = _read_png(d, seg_path, "label map").astype(np.int64)
        bad = (seg > 20) & (seg != 255)
        if bad.any() or (seg < 0).any():
            raise _fail(d, seg_path, f"labels 0..20 or 255 (void; found {int(seg[bad | (seg < 0)][0])})")
        seg[seg == 255] = -1
        label_map = self.label_map(i)
        nrm_path = self.path("normals_distill", i, ".png")
        normals = 2.0 * _read_png(d, nrm_path, "normal map", channels=3).astype(np.float32) / 255.0 - 1.0
        if normals.shape[:2] != label_map.shape:
            raise _fail(d, nrm_path, f"the size of its LabelMap {label_map.shape} (found {normals.shape[:2]})")
        normals[~np.isin(label_map, list(PASCAL_NORMAL_CLASSES))] = 0.0
        sal = (_read_png(d, self.path("sal_distill", i, ".png"), "saliency map").astype(np.float32) / 255.0 > 0.5)
        return {"image": image, "semseg": seg, "human_parts": self.human_parts(i, image.shape[:2]),
                "normals": _unit_normals(normals), "sal": sal.astype(np.float32), "edge": laplacian_edges(label_map)}


def _parse_size(name: str, size) -> tuple[int, int]:
    """`size` as an int (square), a pair (H, W) or a string "HxW" / "H,W"."""
    try:
        if isinstance(size, str):
            parts = size.lower().replace("x", ",").split(",")
            out = tuple(int(p) for p in parts)
        elif isinstance(size, (int, np.integer)):
            out = (int(size), int(size))
        else:
            out = tuple(int(p) for p in size)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 2 or min(out) < 1:
        raise UsageError(f"{name}: size must be H,W (two positive integers) or one integer, got {size!r}")
    return out  # type: ignore[return-value]


def _dense_loader(name: str, folder_name: str, files_cls, split_dir: str, size_default: tuple[int, int],
                  reference: dict, edge_max_dist: float):
    """Build the loader of one dense-prediction dataset [8]."""

    def load(root: str, seed: int, augment: bool = False, data_seed: int = 0, holdout: float = 0.0,
             size=size_default, jitter: bool = True, edge_thresholds: int = 99, **_) -> MTLData:
        """1. Check `root/<folder>/`: the split files (train.txt, val.txt), one file per listed id in
           every folder, and that the first item of each split parses (fail fast, one DataError).
        2. test = the val split (the survey and its successors have no other; 654 NYUD / 5,105 PASCAL
           images). val = the same images by default (info["val_is_test"]); with `holdout` in (0, 1) a
           seeded fraction (`data_seed`) of the training split, never augmented.
        3. Items are read lazily and prepared by `dense_transform` at `size` (default: the paper's);
           `augment` applies its training augmentation to the training split, `jitter` the colour
           jitter within it. `edge_thresholds` (default 99) is the number of odsF thresholds.
        """
        if not 0 <= holdout < 1:
            raise UsageError(f"{name}: holdout must be a fraction in [0, 1), got {holdout!r}")
        if int(edge_thresholds) < 1:
            raise UsageError(f"{name}: edge_thresholds must be a positive integer, got {edge_thresholds!r}")
        hw = _parse_size(name, size)
        folder = os.path.join(root, folder_name)
        expected = (f"the {folder_name} folder of the multi-task dense-prediction survey "
                    f"({', '.join(f for f, _ in files_cls.FILES)}, {split_dir}/train.txt and val.txt)")
        _require_dir(name, folder, expected)
        splits = {}
        for split in ("train", "val"):
            split_file = os.path.join(folder, split_dir, f"{split}.txt")
            ids = read_split_ids(name, split_file)
            for sub, ext in files_cls.FILES:
                _check_files(name, os.path.join(folder, sub), ids, ext, os.path.join(split_dir, f"{split}.txt"))
            if files_cls is PascalContextFiles:
                voc = os.path.join(folder, "semseg", "VOC12")
                ctx = os.path.join(folder, "semseg", "pascal-context")
                have = set(os.listdir(voc)) if os.path.isdir(voc) else set()
                have |= set(os.listdir(ctx)) if os.path.isdir(ctx) else set()
                missing = [i for i in ids if i + ".png" not in have]
                if missing:
                    raise _fail(name, os.path.join(folder, "semseg"),
                                f"VOC12/<id>.png or pascal-context/<id>.png for every id in {split_dir}/{split}.txt "
                                f"({len(missing)} missing, e.g. {missing[0]}.png)")
            splits[split] = files_cls(name, folder, ids, hw, augment=False, jitter=jitter)
            splits[split].read(0)  # fail fast: every file kind of the first item parses
        train_plain, test = splits["train"], splits["val"]
        train = train_plain.with_augment(True) if augment else train_plain
        if 0 < holdout < 1 and len(train_plain) > 1:
            g = torch.Generator().manual_seed(int(data_seed))
            perm = torch.randperm(len(train_plain), generator=g).tolist()
            n_val = _split_counts(len(train_plain), holdout)
            val, train = Subset(train_plain, perm[:n_val]), Subset(train, perm[n_val:])
            note = f"test = {split_dir}/val.txt; val = a seeded {holdout:.0%} of train.txt (data_seed {data_seed})"
        else:
            val, note = test, (f"test = {split_dir}/val.txt (the survey's test split); val = the same images "
                               "unless holdout > 0")
        tasks = NYUD_TASKS if files_cls is NYUDFiles else PASCAL_TASKS
        return MTLData(name, list(tasks), train, val, test, (3,) + hw, "resnet18-dilated",
                       reference=copy.deepcopy(reference),
                       info={"note": note, "val_is_test": val is test, "augment": bool(augment), "size": list(hw),
                             "num_train": len(train_plain), "num_test": len(test),
                             "edge_max_dist": edge_max_dist, "edge_thresholds": int(edge_thresholds)})

    return load


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
register("multimnist", _multi_loader("multimnist", ["MNIST"], 2, ["left", "right"]))
register("multimnist3", _multi_loader("multimnist3", ["MNIST"], 3, ["top_left", "top_right", "bottom"]))
register("multifashion", _multi_loader("multifashion", ["FashionMNIST"], 2, ["left", "right"]))
register("multifashion-mnist", _multi_loader("multifashion-mnist", ["MNIST", "FashionMNIST"], 2, ["digit", "fashion"]))
register("census", _census)
register("utkface", _utkface)
register("celeba", _celeba)
register("cityscapes", _scene_loader("cityscapes", "label_7", 7, False, CITYSCAPES_REFERENCE))
register("nyuv2", _scene_loader("nyuv2", "label", 13, True, NYUV2_REFERENCE))
register("nyud", _dense_loader("nyud", "NYUD_MT", NYUDFiles, "gt_sets", NYUD_SIZE, NYUD_REFERENCE, EDGE_MAX_DIST_NYUD))
register("pascal-context", _dense_loader("pascal-context", "PASCAL_MT", PascalContextFiles, os.path.join("ImageSets", "Context"),
                                         PASCAL_SIZE, PASCAL_CONTEXT_REFERENCE, EDGE_MAX_DIST))
