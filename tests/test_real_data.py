"""Real-format loaders (common/real_data.py) on tiny files written in the exact on-disk layouts.

Every test writes its own miniature copy of a dataset into tmp_path (IDX binaries, UCI Adult CSV,
JPEGs, MTAN .npy folders), loads it through `common.data.load_dataset` and checks shapes, dtypes,
labels, split sizes, reference vectors and batching; broken layouts must raise one-line DataErrors.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from common.data import DataError, batches, load_dataset
from common.real_data import (EDUCATION_RULES, hflip, parse_utk_name, random_scene_augment, read_idx,
                              scale_crop, split_pools)

SMALL = (40, 12, 10)  # composed train / val / test images for the MultiMNIST family


# --------------------------------------------------------------------------------------------
# writers of the on-disk formats
# --------------------------------------------------------------------------------------------
def write_idx(path, array: np.ndarray, magic: int, gz: bool = False) -> None:
    """IDX: big-endian magic, one big-endian uint32 per dimension, then uint8 data."""
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
    else:
        with open(path, "wb") as fh:
            fh.write(raw)


def make_mnist(root, folder="MNIST", n_train=24, n_test=12, gz=False, offset=0):
    """Random 28x28 'digits' with labels (i + offset) % 10, in torchvision's raw/ layout."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(folder) + n_train)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) + offset) % 10, 2049, gz)
    return raw


def write_jpg(path, seed=0, size=(20, 24)):
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")


ADULT_EDU = ["Bachelors", "HS-grad", "Some-college", "Masters", "11th", "Doctorate", "Assoc-voc", "Prof-school"]


def adult_row(i, test=False):
    age = 20 + (i * 7) % 50
    edu = ADULT_EDU[i % len(ADULT_EDU)]
    work = "?" if i % 9 == 0 else ["Private", "State-gov", "Self-emp-inc"][i % 3]
    income = (">50K" if i % 4 == 0 else "<=50K") + ("." if test else "")
    fields = [age, work, 10000 + 37 * i, edu, 9 + i % 7, ["Never-married", "Divorced"][i % 2], "Sales",
              "Husband", "White", ["Male", "Female"][i % 2], 100 * (i % 3), 0, 30 + i % 20,
              "United-States" if i % 5 else "?", income]
    return ", ".join(str(f) for f in fields)


def make_census(root, n_train=30, n_test=8):
    folder = root / "census"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adult.data").write_text("\n".join(adult_row(i) for i in range(n_train)) + "\n\n")
    test_rows = "\n".join(adult_row(i, test=True) for i in range(n_test))
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + test_rows + "\n")
    return folder


def make_utkface(root, n=10):
    folder = root / "utkface"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_jpg(folder / f"{10 + 5 * i}_{i % 2}_{i % 5}_2017011{i}174525125.jpg.chip.jpg", seed=i)
    write_jpg(folder / "39_1_20170116174525125.jpg.chip.jpg", seed=99)  # race missing: skipped
    write_jpg(folder / "53__0_20170116184028385.jpg", seed=98)  # empty gender: skipped
    (folder / "readme.txt").write_text("not an image")
    return folder


CELEB_ATTRS = [f"Attr_{k}" for k in range(40)]


def make_celeba(root, parts=(0, 0, 0, 1, 1, 2)):
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    lines = [str(len(parts)), " ".join(CELEB_ATTRS)]
    for i in range(len(parts)):
        write_jpg(folder / "img_align_celeba" / f"{i + 1:06d}.jpg", seed=i, size=(18, 22))
        vals = ["1" if (i + k) % 3 == 0 else "-1" for k in range(40)]
        lines.append(f"{i + 1:06d}.jpg " + "  ".join(vals))  # double spaces, as in the real file
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts)))
    return folder


def make_scene(root, name, n_train=4, n_val=2, hw=(16, 32), classes=7):
    label_dir = "label_7" if name == "cityscapes" else "label"
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ["image", label_dir, "depth"] + (["normal"] if name == "nyuv2" else []):
            (root / name / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = root / name / split
            np.save(base / "image" / f"{i}.npy", rng.random(hw + (3,)))
            label = rng.integers(-1, classes, hw).astype(np.float64)
            np.save(base / label_dir / f"{i}.npy", label)
            np.save(base / "depth" / f"{i}.npy", rng.random(hw + (1,)).astype(np.float32))
            if name == "nyuv2":
                nrm = rng.normal(size=hw + (3,))
                np.save(base / "normal" / f"{i}.npy", nrm / np.linalg.norm(nrm, axis=-1, keepdims=True))
    return root / name


def check_batch(ds, n_tasks):
    x, ys = next(iter(batches(ds, 4)))
    assert x.dtype == torch.float32 and len(ys) == n_tasks and len(x) == min(4, len(ds))
    return x, ys


# --------------------------------------------------------------------------------------------
# 1-2. MultiMNIST family
# --------------------------------------------------------------------------------------------
def test_read_idx_roundtrip_and_bad_magic(tmp_path):
    a = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / "x", a, 2051)
    assert (read_idx(str(tmp_path / "x"), 2051) == a).all()
    with pytest.raises(ValueError, match="magic"):
        read_idx(str(tmp_path / "x"), 2049)


def test_split_pools_disjoint():
    tr, va = split_pools(60, torch.Generator().manual_seed(0))
    assert len(va) == 10 and len(tr) == 50 and not set(tr.tolist()) & set(va.tolist())


def test_multimnist_shapes_labels_and_cache(tmp_path):
    make_mnist(tmp_path)
    d = load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    assert d.task_names == ["left", "right"] and d.default_model == "lenet" and d.input_shape == (1, 28, 28)
    assert [len(d.train), len(d.val), len(d.test)] == list(SMALL)
    x, ys = d.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert all(y.dtype == torch.int64 and y.dim() == 0 and 0 <= int(y) <= 9 for y in ys)
    assert all(t.kind == "class" and t.out_dim == 10 for t in d.tasks)
    check_batch(d.train, 2)
    cache = d.info["cache"]
    assert cache and os.path.isfile(cache) and os.path.dirname(cache) == str(tmp_path / "multimnist")
    stamp = os.stat(cache).st_mtime_ns
    again = load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    assert os.stat(cache).st_mtime_ns == stamp  # read back, not rebuilt
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.test.ys[1], d.test.ys[1])
    with open(cache, "wb") as fh:  # a corrupt cache is rebuilt, identically
        fh.write(b"garbage")
    rebuilt = load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    assert torch.equal(rebuilt.val.x, d.val.x)
    other = load_dataset("multimnist", str(tmp_path), sizes=SMALL, data_seed=1)
    assert not torch.equal(other.train.x, d.train.x)


def test_multimnist_test_split_uses_t10k_digits(tmp_path):
    make_mnist(tmp_path, n_train=24, n_test=12, offset=0)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "t10k-labels-idx1-ubyte", np.full(12, 7), 2049)  # every test digit is a 7
    d = load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    assert all((y == 7).all() for y in d.test.ys)
    assert not all((y == 7).all() for y in d.train.ys)


def test_multimnist3_from_gz_and_unwritable_root(tmp_path):
    make_mnist(tmp_path, gz=True)
    (tmp_path / "multimnist3").write_text("a file where the cache folder should go")
    d = load_dataset("multimnist3", str(tmp_path), sizes=SMALL)
    assert d.num_tasks == 3 and d.task_names == ["top_left", "top_right", "bottom"]
    assert d.info["cache"] is None and len(d.train) == SMALL[0]
    check_batch(d.test, 3)


def test_multifashion_and_mixed(tmp_path):
    make_mnist(tmp_path, "MNIST", offset=0)
    make_mnist(tmp_path, "FashionMNIST", n_train=30, offset=3)
    f = load_dataset("multifashion", str(tmp_path), sizes=SMALL)
    assert f.task_names == ["left", "right"] and f.info["sources"] == ["FashionMNIST"]
    m = load_dataset("multifashion-mnist", str(tmp_path), sizes=SMALL)
    assert m.task_names == ["digit", "fashion"] and m.input_shape == (1, 28, 28)
    x, ys = check_batch(m.train, 2)
    assert x.shape == (4, 1, 28, 28) and all(y.dtype == torch.int64 for y in ys)


def test_multimnist_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("multimnist", str(tmp_path))
    msg = str(e.value)
    assert "multimnist" in msg and str(tmp_path / "MNIST" / "raw") in msg and "\n" not in msg
    assert "train-images-idx3-ubyte" in msg and "data/README.md" in msg
    raw = make_mnist(tmp_path)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((24, 28, 28)), 1234)  # bad magic
    with pytest.raises(DataError, match="magic"):
        load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((23, 28, 28)), 2051)  # 23 images, 24 labels
    with pytest.raises(DataError, match="as many labels as images"):
        load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    with open(raw / "train-images-idx3-ubyte", "r+b") as fh:  # truncated body
        fh.truncate(100)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    os.remove(raw / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("multimnist", str(tmp_path), sizes=SMALL)
    make_mnist(tmp_path, "MNIST")
    with pytest.raises(DataError, match="FashionMNIST"):
        load_dataset("multifashion-mnist", str(tmp_path), sizes=SMALL)


# --------------------------------------------------------------------------------------------
# 3. Census
# --------------------------------------------------------------------------------------------
def test_census(tmp_path):
    make_census(tmp_path, n_train=30, n_test=8)
    d = load_dataset("census", str(tmp_path))
    assert d.task_names == ["age", "education"] and d.default_model == "mlp"
    assert all(t.kind == "class" and t.out_dim == 2 for t in d.tasks)
    assert [len(d.train), len(d.val), len(d.test)] == [27, 3, 8]
    names = d.info["feature_names"]
    assert d.input_shape == (len(names),) and d.train.x.shape == (27, len(names))
    assert not any(n.startswith(("age", "education")) for n in names)  # targets and education-num left out
    assert "workclass=?" in names and "income=>50K" in names and "income=>50K." not in names
    numeric = d.train.x[:, :4]
    assert torch.allclose(numeric.mean(0), torch.zeros(4), atol=1e-5)
    onehot = d.test.x[:, 4:]
    assert set(onehot.unique().tolist()) <= {0.0, 1.0} and (onehot.sum(1) == 8).all()  # 8 categorical columns
    # test labels follow the documented rules: age >= 40, post-secondary education
    for i in range(8):
        age = 20 + (i * 7) % 50
        edu = ADULT_EDU[i % len(ADULT_EDU)]
        assert int(d.test.ys[0][i]) == int(age >= 40)
        assert int(d.test.ys[1][i]) == int(edu in EDUCATION_RULES["postsecondary"])
    assert all(y.dtype == torch.int64 for y in d.train.ys)
    check_batch(d.train, 2)
    strict = load_dataset("census", str(tmp_path), education="degree", age_threshold=30)
    assert int(strict.test.ys[1][2]) == 0 and int(strict.test.ys[0][2]) == 1  # Some-college, age 34


def test_census_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("census", str(tmp_path))
    assert "census" in str(e.value) and str(tmp_path / "census") in str(e.value)
    folder = make_census(tmp_path)
    os.remove(folder / "adult.test")
    with pytest.raises(DataError, match="adult.test"):
        load_dataset("census", str(tmp_path))
    make_census(tmp_path)
    with open(folder / "adult.data", "a") as fh:
        fh.write("39, State-gov, 77516, Bachelors, 13\n")  # 5 columns
    with pytest.raises(DataError, match="columns"):
        load_dataset("census", str(tmp_path))


# --------------------------------------------------------------------------------------------
# 4. UTKFace
# --------------------------------------------------------------------------------------------
def test_parse_utk_name():
    assert parse_utk_name("26_1_2_20170116174525125.jpg.chip.jpg") == (26, 1, 2)
    assert parse_utk_name("39_1_20170116174525125.jpg.chip.jpg") is None
    assert parse_utk_name("53__0_20170116184028385.jpg") is None
    assert parse_utk_name("20_0_7_20170116184028385.jpg") is None


def test_utkface(tmp_path):
    make_utkface(tmp_path, n=10)
    d = load_dataset("utkface", str(tmp_path))
    assert d.task_names == ["age", "gender", "ethnicity"] and d.default_model == "resnet18"
    assert [t.kind for t in d.tasks] == ["huber", "class", "class"] and [t.out_dim for t in d.tasks] == [1, 2, 5]
    assert d.info["skipped"] == 2 and d.info["num_images"] == 10
    assert [len(d.train), len(d.val), len(d.test)] == [7, 1, 2]
    x, (age, gender, eth) = d.train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and d.input_shape == (3, 64, 64)
    assert age.dtype == torch.float32 and age.dim() == 0
    assert gender.dtype == torch.int64 and int(gender) in (0, 1) and 0 <= int(eth) <= 4
    train_ages = torch.stack([d.train[i][1][0] for i in range(len(d.train))])
    assert abs(float(train_ages.mean())) < 1e-5  # normalised with the training split's statistics
    raw = train_ages * d.info["age_std"] + d.info["age_mean"]
    assert torch.allclose(raw, raw.round(), atol=1e-3) and set(raw.round().int().tolist()) <= set(range(10, 60, 5))
    xb, ys = check_batch(d.train, 3)
    assert xb.shape == (4, 3, 64, 64) and ys[0].shape == (4,) and ys[1].dtype == torch.int64


def test_utkface_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("utkface", str(tmp_path))
    assert "utkface" in str(e.value) and str(tmp_path / "utkface") in str(e.value)
    (tmp_path / "utkface").mkdir()
    with pytest.raises(DataError, match="found 0 well-named"):
        load_dataset("utkface", str(tmp_path))
    make_utkface(tmp_path, n=4)
    first = sorted(p for p in os.listdir(tmp_path / "utkface") if parse_utk_name(p))[0]
    (tmp_path / "utkface" / first).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="readable RGB image"):
        load_dataset("utkface", str(tmp_path))


# --------------------------------------------------------------------------------------------
# 5. CelebA
# --------------------------------------------------------------------------------------------
def test_celeba(tmp_path):
    make_celeba(tmp_path)
    d = load_dataset("celeba", str(tmp_path))
    assert d.num_tasks == 40 and d.task_names == CELEB_ATTRS and d.default_model == "celeba_cnn"
    assert all(t.kind == "binary" and t.out_dim == 1 for t in d.tasks)
    assert [len(d.train), len(d.val), len(d.test)] == [3, 2, 1]
    x, ys = d.train[1]
    assert x.shape == (3, 64, 64) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert len(ys) == 40 and all(y.dtype == torch.float32 and y.dim() == 0 for y in ys)
    assert [float(y) for y in ys[:3]] == [0.0, 0.0, 1.0]  # image 2: attribute k is 1 iff (1 + k) % 3 == 0
    xb, yb = check_batch(d.train, 40)
    assert xb.shape == (3, 3, 64, 64) and yb[0].shape == (3,)


def test_celeba_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("celeba", str(tmp_path))
    assert "celeba" in str(e.value) and str(tmp_path / "celeba") in str(e.value)
    folder = make_celeba(tmp_path)
    attr = folder / "list_attr_celeba.txt"
    good = attr.read_text()
    lines = good.splitlines()
    attr.write_text("\n".join(lines[:3] + [lines[3].rsplit(" ", 1)[0]] + lines[4:]) + "\n")  # 40 columns
    with pytest.raises(DataError, match="columns"):
        load_dataset("celeba", str(tmp_path))
    attr.write_text("7\n" + "\n".join(lines[1:]) + "\n")  # count says 7, 6 rows
    with pytest.raises(DataError, match="announces 7"):
        load_dataset("celeba", str(tmp_path))
    attr.write_text(good)
    os.remove(folder / "img_align_celeba" / "000004.jpg")
    with pytest.raises(DataError, match="000004.jpg"):
        load_dataset("celeba", str(tmp_path))


# --------------------------------------------------------------------------------------------
# 6-7. Scene understanding
# --------------------------------------------------------------------------------------------
def test_cityscapes(tmp_path):
    make_scene(tmp_path, "cityscapes", hw=(16, 32), classes=7)
    d = load_dataset("cityscapes", str(tmp_path))
    assert d.task_names == ["segmentation", "depth"] and d.default_model == "segnet"
    assert [(t.kind, t.out_dim) for t in d.tasks] == [("seg", 7), ("depth", 1)]
    assert d.input_shape == (3, 16, 32) and [len(d.train), len(d.val), len(d.test)] == [4, 2, 2]
    assert d.val is d.test and d.info["val_is_test"]
    assert d.reference == {"segmentation": {"miou": 0.7401, "pixacc": 0.9316},
                           "depth": {"abs_err": 0.0125, "rel_err": 27.77}}
    x, (seg, depth) = d.train[0]
    assert x.shape == (3, 16, 32) and x.dtype == torch.float32
    assert seg.shape == (16, 32) and seg.dtype == torch.int64 and seg.min() >= -1 and seg.max() <= 6
    assert (seg == -1).any() and depth.shape == (1, 16, 32) and depth.dtype == torch.float32
    raw = np.load(tmp_path / "cityscapes" / "train" / "label_7" / "0.npy")
    assert (seg.numpy() == raw.astype(np.int64)).all()
    xb, (sb, db) = check_batch(d.train, 2)
    assert xb.shape == (4, 3, 16, 32) and sb.shape == (4, 16, 32) and db.shape == (4, 1, 16, 32)
    aug = load_dataset("cityscapes", str(tmp_path), augment=True, holdout=0.25)
    assert [len(aug.train), len(aug.val), len(aug.test)] == [3, 1, 2] and not aug.info["val_is_test"]
    xa, (sa, da) = aug.train[0]
    assert xa.shape == (3, 16, 32) and sa.dtype == torch.int64 and da.shape == (1, 16, 32)
    check_batch(aug.train, 2)


def test_nyuv2(tmp_path):
    make_scene(tmp_path, "nyuv2", n_train=3, n_val=2, hw=(12, 16), classes=13)
    d = load_dataset("nyuv2", str(tmp_path), augment=True)
    assert d.task_names == ["segmentation", "depth", "normal"]
    assert [(t.kind, t.out_dim) for t in d.tasks] == [("seg", 13), ("depth", 1), ("normal", 3)]
    assert d.input_shape == (3, 12, 16) and [len(d.train), len(d.val), len(d.test)] == [3, 2, 2]
    assert d.reference["normal"] == {"mean": 25.01, "median": 19.21, "11.25": 0.3014, "22.5": 0.5720, "30": 0.6915}
    assert d.reference["segmentation"]["miou"] == 0.3830 and d.reference["depth"]["rel_err"] == 0.2780
    x, (seg, depth, normal) = d.test[1]
    assert normal.shape == (3, 12, 16) and normal.dtype == torch.float32
    assert torch.allclose(normal.norm(dim=0), torch.ones(12, 16), atol=1e-5)
    stored = np.load(tmp_path / "nyuv2" / "val" / "normal" / "1.npy")
    assert torch.allclose(normal, torch.from_numpy(np.moveaxis(stored, -1, 0)).float())
    torch.manual_seed(0)
    for i in range(3):  # augmented training items keep their shapes and unit normals
        xa, (sa, da, na) = d.train[i]
        assert xa.shape == (3, 12, 16) and sa.shape == (12, 16) and da.shape == (1, 12, 16)
        assert torch.allclose(na.norm(dim=0), torch.ones(12, 16), atol=1e-5)
    check_batch(d.train, 3)


def test_scene_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cityscapes", str(tmp_path))
    assert "cityscapes" in str(e.value) and str(tmp_path / "cityscapes") in str(e.value)
    folder = make_scene(tmp_path, "cityscapes")
    with open(folder / "train" / "image" / "0.npy", "r+b") as fh:  # truncated .npy
        fh.truncate(200)
    with pytest.raises(DataError, match=r"0\.npy"):
        load_dataset("cityscapes", str(tmp_path))
    make_scene(tmp_path, "cityscapes")
    os.remove(folder / "val" / "depth" / "1.npy")
    with pytest.raises(DataError, match="depth"):
        load_dataset("cityscapes", str(tmp_path))
    make_scene(tmp_path, "nyuv2")
    import shutil

    shutil.rmtree(tmp_path / "nyuv2" / "train" / "normal")
    with pytest.raises(DataError) as e:
        load_dataset("nyuv2", str(tmp_path))
    assert str(tmp_path / "nyuv2" / "train" / "normal") in str(e.value) and "\n" not in str(e.value)
    make_scene(tmp_path, "nyuv2", classes=13)
    np.save(tmp_path / "nyuv2" / "val" / "label" / "0.npy", np.full((16, 32), 255.0))  # out of range
    with pytest.raises(DataError, match=r"labels in -1\.\.12"):
        load_dataset("nyuv2", str(tmp_path))


# --------------------------------------------------------------------------------------------
# Scene augmentation (pure functions)
# --------------------------------------------------------------------------------------------
def scene_sample(h=12, w=16):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=g)
    label = torch.randint(-1, 13, (h, w), generator=g)
    depth = torch.rand(1, h, w, generator=g) + 0.5
    normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    return image, label, depth, normal


def test_scale_one_without_flip_is_identity():
    sample = scene_sample()
    out = scale_crop(*sample, scale=1.0, top=0, left=0)
    assert all(torch.equal(a, b) for a, b in zip(out, sample))
    out = random_scene_augment(*sample, generator=torch.Generator().manual_seed(0), scales=(1.0,))
    flipped = all(torch.equal(a, b) for a, b in zip(out, hflip(*sample)))
    assert flipped or all(torch.equal(a, b) for a, b in zip(out, sample))


def test_flip_mirrors_and_negates_normal_x():
    image, label, depth, normal = scene_sample()
    fi, fl, fd, fn = hflip(image, label, depth, normal)
    assert torch.equal(fi[:, :, 0], image[:, :, -1]) and torch.equal(fl[:, 3], label[:, -4])
    assert torch.equal(fd[..., 5], depth[..., -6])
    assert torch.equal(fn[0], -normal[0].flip(-1)) and torch.equal(fn[1:], normal[1:].flip(-1))
    assert all(torch.equal(a, b) for a, b in zip(hflip(fi, fl, fd, fn), (image, label, depth, normal)))


def test_scale_crop_divides_depth_and_resizes_back():
    image, label, depth, normal = scene_sample(12, 16)
    ci, cl, cd, cn = scale_crop(image, label, depth, normal, scale=1.5, top=2, left=3)  # 8 x 10 window
    assert ci.shape == image.shape and cl.shape == label.shape and cd.shape == depth.shape and cn.shape == normal.shape
    assert cl.dtype == torch.int64 and set(cl.unique().tolist()) <= set(label[2:10, 3:13].unique().tolist())
    window = depth[:, 2:10, 3:13]
    assert torch.allclose(cd[:, 0, 0], window[:, 0, 0] / 1.5) and torch.allclose(cd[:, -1, -1], window[:, -1, -1] / 1.5)
    nearest_gap = ((cd * 1.5).flatten()[:, None] - window.flatten()[None, :]).abs().min(1).values
    assert float(nearest_gap.max()) < 1e-6  # nearest resampling: every value comes from the window
    # bilinear with align_corners=True: the corners of the output are the corners of the window
    assert torch.allclose(ci[:, 0, 0], image[:, 2, 3]) and torch.allclose(ci[:, -1, -1], image[:, 9, 12])
    assert torch.allclose(cn.norm(dim=0), torch.ones(12, 16), atol=1e-5)
    _, _, inv, _ = scale_crop(image, label, depth, normal, scale=1.2, top=0, left=0, inverse_depth=True)
    assert torch.allclose(inv[:, 0, 0], depth[:, 0, 0] * 1.2)
    with pytest.raises(ValueError):
        scale_crop(image, label, depth, normal, scale=1.5, top=5, left=0)


def test_random_augment_is_reproducible_with_generator():
    sample = scene_sample()
    a = random_scene_augment(*sample, generator=torch.Generator().manual_seed(3))
    b = random_scene_augment(*sample, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
