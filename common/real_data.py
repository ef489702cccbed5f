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

Options (all loaders accept and ignore unknown ones): `data_seed` (splits and composition, default 0),
`augment` (the scene loaders' training-split scale-crop + flip [6]; ignored elsewhere), and per loader:
`sizes` (MultiMNIST family, default (60000, 10000, 10000)), `age_threshold` / `education` (census),
`holdout` (scene loaders: a seeded hold-out of train/ as validation instead of val/),
`benchmark_depth_aug` (cityscapes). See each loader's docstring.

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

from common.data import (MNIST_MEAN, MNIST_STD, DataError, MTLData, Subset, TensorMTL, compose_multi,
                         data_error, register, task)
from common.device import UsageError


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
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise _fail(dataset, path, f"a NumPy .npy {what} array ({type(e).__name__}: {e})") from e


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
