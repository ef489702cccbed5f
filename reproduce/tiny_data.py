"""Tiny datasets in the exact on-disk formats of the real ones, for `run_all.sh --smoke`.

The real datasets (Cityscapes, NYUv2, CelebA, UTKFace, Census) cannot be downloaded on the project's
machines. The smoke run still pushes every table's pipeline through the real loaders of
common/real_data.py: `make_all(root)` writes a miniature copy of each dataset under `root`, laid out
exactly as data/README.md describes (and as common/real_data.py reads it):

    census/adult.data, census/adult.test                       UCI Adult CSV, 15 columns
    utkface/<age>_<gender>_<race>_<date>.jpg.chip.jpg          JPEG faces (random pixels here)
    celeba/img_align_celeba/*.jpg, list_attr_celeba.txt,
           list_eval_partition.txt                             torchvision's CelebA layout
    cityscapes/{train,val}/{image,label_7,depth}/<i>.npy       MTAN preprocessed, H x W = 32 x 64
    nyuv2/{train,val}/{image,label,depth,normal}/<i>.npy       MTAN preprocessed, H x W = 32 x 32

Numbers trained on these files mean nothing; they only prove that the pipeline runs end to end.
The MultiMNIST family is replaced by the offline multimnist-lite datasets in smoke runs (the IDX
loader composes 80,000 images whatever the source size, too slow for a smoke run).
"""
from __future__ import annotations

import os

import numpy as np

TINY_DATASETS = ("census", "utkface", "celeba", "cityscapes", "nyuv2")

_EDUCATION = ["Bachelors", "HS-grad", "Some-college", "Masters", "11th", "Doctorate", "Assoc-voc", "Prof-school"]
_WORK = ["Private", "State-gov", "Self-emp-inc", "?"]
_MARITAL = ["Never-married", "Divorced", "Married-civ-spouse"]


def _adult_line(rng: np.random.Generator, test: bool) -> str:
    age = int(rng.integers(18, 80))
    fields = [age, _WORK[rng.integers(len(_WORK))], int(rng.integers(20000, 400000)),
              _EDUCATION[rng.integers(len(_EDUCATION))], int(rng.integers(1, 17)), _MARITAL[rng.integers(3)],
              "Sales", "Husband", "White", ["Male", "Female"][rng.integers(2)], int(rng.integers(0, 5000)),
              0, int(rng.integers(10, 60)), "United-States", (">50K" if rng.random() < 0.25 else "<=50K") + ("." if test else "")]
    return ", ".join(str(f) for f in fields)


def make_census(root: str, n_train: int = 160, n_test: int = 60, seed: int = 0) -> str:
    folder = os.path.join(root, "census")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(os.path.join(folder, "adult.data"), "w") as fh:
        fh.write("\n".join(_adult_line(rng, False) for _ in range(n_train)) + "\n")
    with open(os.path.join(folder, "adult.test"), "w") as fh:
        fh.write("|1x3 Cross validator\n" + "\n".join(_adult_line(rng, True) for _ in range(n_test)) + "\n")
    return folder


def _write_jpg(path: str, rng: np.random.Generator, size: int = 32) -> None:
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format="JPEG")


def make_utkface(root: str, n: int = 40, seed: int = 0) -> str:
    folder = os.path.join(root, "utkface")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = f"{int(rng.integers(1, 90))}_{i % 2}_{i % 5}_2017011{i:04d}174525125.jpg.chip.jpg"
        _write_jpg(os.path.join(folder, name), rng)
    return folder


def make_celeba(root: str, n: int = 48, seed: int = 0) -> str:
    folder = os.path.join(root, "celeba")
    os.makedirs(os.path.join(folder, "img_align_celeba"), exist_ok=True)
    rng = np.random.default_rng(seed)
    attrs = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
             "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
             "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
             "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
             "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
             "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young"]
    lines = [str(n), " ".join(attrs)]
    parts = []
    for i in range(n):
        fname = f"{i + 1:06d}.jpg"
        _write_jpg(os.path.join(folder, "img_align_celeba", fname), rng)
        lines.append(fname + " " + " ".join("1" if v else "-1" for v in rng.random(40) < 0.4))
        parts.append(f"{fname} {0 if i < n * 0.6 else (1 if i < n * 0.8 else 2)}")
    with open(os.path.join(folder, "list_attr_celeba.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "list_eval_partition.txt"), "w") as fh:
        fh.write("\n".join(parts) + "\n")
    return folder


def make_scene(root: str, name: str, n_train: int = 8, n_val: int = 4, hw: tuple[int, int] | None = None,
               seed: int = 0) -> str:
    """MTAN-preprocessed scene folders: image H x W x 3, label H x W (-1 = ignore), depth H x W x 1
    (0 = invalid), and for NYUv2 unit normals H x W x 3 (zero where invalid)."""
    if name not in ("cityscapes", "nyuv2"):
        raise ValueError(name)
    nyu = name == "nyuv2"
    hw = hw or ((32, 32) if nyu else (32, 64))
    classes = 13 if nyu else 7
    label_dir = "label" if nyu else "label_7"
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        base = os.path.join(root, name, split)
        for kind in ["image", label_dir, "depth"] + (["normal"] if nyu else []):
            os.makedirs(os.path.join(base, kind), exist_ok=True)
        for i in range(n):
            np.save(os.path.join(base, "image", f"{i}.npy"), rng.random(hw + (3,)).astype(np.float32))
            np.save(os.path.join(base, label_dir, f"{i}.npy"), rng.integers(-1, classes, hw).astype(np.float32))
            depth = rng.random(hw + (1,)).astype(np.float32) * (3.0 if nyu else 0.3) + 0.05
            depth[rng.random(hw) < 0.1] = 0.0
            np.save(os.path.join(base, "depth", f"{i}.npy"), depth)
            if nyu:
                nrm = rng.normal(size=hw + (3,))
                nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
                nrm[depth[..., 0] == 0] = 0.0
                np.save(os.path.join(base, "normal", f"{i}.npy"), nrm.astype(np.float32))
    return os.path.join(root, name)


def make_all(root: str, names=TINY_DATASETS) -> dict[str, str]:
    """Write every tiny dataset of `names` under `root` (idempotent: an existing folder is kept)."""
    made = {}
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            made[name] = os.path.join(root, name)
            continue
        tmp_root = os.path.join(root, f".tmp-{name}-{os.getpid()}")
        if name == "census":
            make_census(tmp_root)
        elif name == "utkface":
            make_utkface(tmp_root)
        elif name == "celeba":
            make_celeba(tmp_root)
        elif name in ("cityscapes", "nyuv2"):
            make_scene(tmp_root, name)
        else:
            raise ValueError(f"no tiny generator for dataset {name!r}")
        os.replace(os.path.join(tmp_root, name), os.path.join(root, name))  # a folder appears whole or not at all
        os.rmdir(tmp_root)
        made[name] = os.path.join(root, name)
    return made
