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
    NYUD_MT/{images,segmentation,depth,normals,edge}/<id>.*,
            gt_sets/{train,val}.txt                            the dense-prediction survey's NYUD (nyud)
    PASCAL_MT/{JPEGImages,semseg/VOC12,semseg/pascal-context,human_parts,normals_distill,sal_distill,
              pascal-context/trainval}/<id>.*, ImageSets/Context/{train,val}.txt
                                                               the survey's PASCAL-Context (pascal-context)

Numbers trained on these files mean nothing; they only prove that the pipeline runs end to end.
The MultiMNIST family is replaced by the offline multimnist-lite datasets in smoke runs (the IDX
loader composes 80,000 images whatever the source size, too slow for a smoke run).
The dense datasets are resized to the paper's resolution (448x576, 512x512) by their loaders unless
the run asks for a smaller `size`; their tiny files are small either way.
"""
from __future__ import annotations

import os

import numpy as np

# The AvgNorm dense suite (nyud, pascal-context) lives in the survey's folders NYUD_MT / PASCAL_MT
DENSE_TINY_DATASETS = ("nyud", "pascal-context")
TINY_DATASETS = ("census", "utkface", "celeba", "cityscapes", "nyuv2") + DENSE_TINY_DATASETS
DENSE_FOLDERS = {"nyud": "NYUD_MT", "pascal-context": "PASCAL_MT"}

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


# --------------------------------------------------------------------------------------------
# The dense-prediction survey's NYUD_MT and PASCAL_MT layouts (common/real_data.py, nyud / pascal-context)
# --------------------------------------------------------------------------------------------
def write_png(path: str, array: np.ndarray) -> None:
    """uint8 H x W (grey) or H x W x 3 (RGB) as a PNG."""
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format="PNG")


def write_pascal_part(path: str, imname: str, objects) -> None:
    """A PASCAL-Part annotation .mat: struct anno with fields imname, objects; objects a 1 x n struct
    array with fields class, class_ind, mask, parts; parts a 1 x k struct array with fields part_name,
    mask, or an empty matrix. `objects`: [(class_ind, mask, [(part_name, mask), ...]), ...]."""
    from scipy.io import savemat

    objs = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for k, (class_ind, mask, parts) in enumerate(objects):
        objs[0, k]["class"] = "person" if class_ind == 15 else "object"
        objs[0, k]["class_ind"] = np.array([[class_ind]], dtype=np.uint8)
        objs[0, k]["mask"] = np.asarray(mask, dtype=np.uint8)
        if parts:
            table = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
            for j, (name, part_mask) in enumerate(parts):
                table[0, j]["part_name"] = name
                table[0, j]["mask"] = np.asarray(part_mask, dtype=np.uint8)
            objs[0, k]["parts"] = table
        else:
            objs[0, k]["parts"] = np.zeros((0, 0))
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0]["imname"] = imname
    anno[0, 0]["objects"] = objs
    savemat(path, {"anno": anno})


def _blocks(rng: np.random.Generator, hw: tuple[int, int], values: int, block: int = 6) -> np.ndarray:
    """A piecewise-constant label map (blocks of `block` pixels), so that edges and parts look like edges and parts."""
    coarse = rng.integers(0, values, (hw[0] // block + 1, hw[1] // block + 1))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[: hw[0], : hw[1]]


def _write_rgb_jpg(path: str, rng: np.random.Generator, hw: tuple[int, int]) -> None:
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(path, format="JPEG")


def make_nyud(root: str, n_train: int = 6, n_val: int = 4, hw: tuple[int, int] = (24, 32), seed: int = 0) -> str:
    """NYUD_MT: images/<id>.jpg, segmentation/<id>.png (0 = unlabelled, 1..40), depth/<id>.npy
    (metres, 0 = invalid), normals/<id>.npy (H x W x 3 unit vectors, 0 = invalid), edge/<id>.npy
    (0 / 1), gt_sets/{train,val}.txt."""
    folder = os.path.join(root, "NYUD_MT")
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = {"train": [f"{i:06d}" for i in range(n_train)], "val": [f"{n_train + i:06d}" for i in range(n_val)]}
    for split, names in ids.items():
        with open(os.path.join(folder, "gt_sets", f"{split}.txt"), "w") as fh:
            fh.write("\n".join(names) + "\n")
        for name in names:
            _write_rgb_jpg(os.path.join(folder, "images", f"{name}.jpg"), rng, hw)
            seg = _blocks(rng, hw, 41)
            write_png(os.path.join(folder, "segmentation", f"{name}.png"), seg)
            depth = (rng.random(hw) * 4 + 0.5).astype(np.float32)
            depth[rng.random(hw) < 0.1] = 0.0
            np.save(os.path.join(folder, "depth", f"{name}.npy"), depth)
            nrm = rng.normal(size=hw + (3,))
            nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
            nrm[depth == 0] = 0.0
            np.save(os.path.join(folder, "normals", f"{name}.npy"), nrm.astype(np.float32))
            edge = np.zeros(hw, dtype=np.float32)
            edge[:, 1:] = seg[:, 1:] != seg[:, :-1]
            np.save(os.path.join(folder, "edge", f"{name}.npy"), edge)
    return folder


def make_pascal_context(root: str, n_train: int = 6, n_val: int = 4, hw: tuple[int, int] = (24, 32), seed: int = 0) -> str:
    """PASCAL_MT: JPEGImages/<id>.jpg, semseg/VOC12/<id>.png (0..20, 255 = void; odd images under
    semseg/pascal-context/ instead), human_parts/<id>.mat (PASCAL-Part structs; every other image
    without a person), normals_distill/<id>.png (RGB), sal_distill/<id>.png (grey),
    pascal-context/trainval/<id>.mat ('LabelMap', classes 1..459), ImageSets/Context/{train,val}.txt."""
    from scipy.io import savemat

    folder = os.path.join(root, "PASCAL_MT")
    subs = ("JPEGImages", os.path.join("semseg", "VOC12"), os.path.join("semseg", "pascal-context"), "human_parts",
            "normals_distill", "sal_distill", os.path.join("pascal-context", "trainval"), os.path.join("ImageSets", "Context"))
    for sub in subs:
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = {"train": [f"2008_{i:06d}" for i in range(n_train)], "val": [f"2009_{i:06d}" for i in range(n_val)]}
    for split, names in ids.items():
        with open(os.path.join(folder, "ImageSets", "Context", f"{split}.txt"), "w") as fh:
            fh.write("\n".join(names) + "\n")
        for k, name in enumerate(names):
            _write_rgb_jpg(os.path.join(folder, "JPEGImages", f"{name}.jpg"), rng, hw)
            seg = _blocks(rng, hw, 21)
            seg[0, :] = 255
            write_png(os.path.join(folder, "semseg", "VOC12" if k % 2 == 0 else "pascal-context", f"{name}.png"), seg)
            label_map = _blocks(rng, hw, 4) * 100 + 4  # context classes 4, 104, 204, 304 (4, 104 keep normals)
            savemat(os.path.join(folder, "pascal-context", "trainval", f"{name}.mat"), {"LabelMap": label_map.astype(np.uint16)})
            nrm = rng.normal(size=hw + (3,))
            nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
            write_png(os.path.join(folder, "normals_distill", f"{name}.png"), np.round((nrm + 1) * 127.5))
            write_png(os.path.join(folder, "sal_distill", f"{name}.png"), np.where(_blocks(rng, hw, 2) > 0, 255, 0))
            objects = []
            if k % 2 == 0:
                person = np.zeros(hw, dtype=bool)
                person[2:hw[0] - 2, 3:hw[1] // 2] = True
                head, torso = person.copy(), person.copy()
                head[hw[0] // 3:] = False
                torso[: hw[0] // 3] = False
                objects.append((15, person, [("head", head), ("torso", torso)]))
            objects.append((8, _blocks(rng, hw, 2) > 0, []))
            write_pascal_part(os.path.join(folder, "human_parts", f"{name}.mat"), name, objects)
    return folder


def make_all(root: str, names=TINY_DATASETS) -> dict[str, str]:
    """Write every tiny dataset of `names` under `root` (idempotent: an existing folder is kept).
    nyud and pascal-context (DENSE_TINY_DATASETS) live in the survey's folders NYUD_MT / PASCAL_MT."""
    made = {}
    for name in names:
        folder = DENSE_FOLDERS.get(name, name)
        if os.path.isdir(os.path.join(root, folder)):
            made[name] = os.path.join(root, folder)
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
        elif name == "nyud":
            make_nyud(tmp_root)
        elif name == "pascal-context":
            make_pascal_context(tmp_root)
        else:
            raise ValueError(f"no tiny generator for dataset {name!r}")
        os.replace(os.path.join(tmp_root, folder), os.path.join(root, folder))  # a folder appears whole or not at all
        os.rmdir(tmp_root)
        made[name] = os.path.join(root, folder)
    return made
