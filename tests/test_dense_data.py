"""The dense-prediction loaders `nyud` and `pascal-context` (common/real_data.py) on tiny trees
written in the survey's exact on-disk layout (NYUD_MT/, PASCAL_MT/: JPEG / PNG images, .npy maps,
MATLAB .mat structs via scipy.io.savemat, split files), and their augmentation.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

from common.data import DataError, batches, load_dataset
from common.metrics import TaskMeter, task_losses
from common.real_data import (DENSE_FILL, IMAGENET_MEAN, IMAGENET_STD, NYUD_REFERENCE, PASCAL_CONTEXT_REFERENCE,
                              PASCAL_NORMAL_CLASSES, dense_transform, flip_dense, laplacian_edges, scale_crop_pad)
from common.device import UsageError
from reproduce.tiny_data import DENSE_TINY_DATASETS, make_all, write_pascal_part, write_png

HW = (8, 10)


def write_jpg(path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb.astype(np.uint8)).save(path, format="JPEG", quality=100)


# --------------------------------------------------------------------------------------------
# NYUD_MT writer: known contents per image
# --------------------------------------------------------------------------------------------
def nyud_item(k: int):
    seg = np.zeros(HW, dtype=np.uint8)
    seg[:, 5:] = 40
    seg[:4, :5] = 1 + k  # class 1 + k -> 0 + k
    depth = np.full(HW, 2.0 + k, dtype=np.float32)
    depth[0, 0] = 0.0  # invalid
    normals = np.zeros(HW + (3,), dtype=np.float32)
    normals[..., 2] = 2.0  # not unit length: re-normalised to (0, 0, 1)
    normals[:, 0] = (3.0, 0.0, 4.0)  # first column -> (0.6, 0, 0.8)
    normals[0, 0] = 0.0  # invalid
    edge = np.zeros(HW, dtype=np.float32)
    edge[:, 5] = 0.7  # >= 0.5 is an edge
    edge[:, 6] = 0.3
    return seg, depth, normals, edge


def make_nyud(root, n_train=3, n_val=2, skip=None):
    folder = root / "NYUD_MT"
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = {"train": [f"{i:04d}" for i in range(n_train)], "val": [f"{100 + i:04d}" for i in range(n_val)]}
    for split, names in ids.items():
        (folder / "gt_sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            seg, depth, normals, edge = nyud_item(k)
            write_jpg(folder / "images" / f"{name}.jpg", np.full(HW + (3,), 120 + k, dtype=np.uint8))
            write_png(str(folder / "segmentation" / f"{name}.png"), seg)
            np.save(folder / "depth" / f"{name}.npy", depth)
            np.save(folder / "normals" / f"{name}.npy", normals)
            np.save(folder / "edge" / f"{name}.npy", edge)
    return folder


def test_nyud_shapes_labels_and_splits(tmp_path):
    make_nyud(tmp_path)
    d = load_dataset("nyud", str(tmp_path), size=HW)
    assert d.task_names == ["semseg", "depth", "normals", "edge"]
    assert (len(d.train), len(d.val), len(d.test)) == (3, 2, 2) and d.info["val_is_test"]
    assert d.input_shape == (3,) + HW and d.default_model == "resnet18-dilated"
    assert d.reference == NYUD_REFERENCE and d.info["edge_max_dist"] == 0.011 and d.info["edge_thresholds"] == 99
    x, (seg, depth, normals, edge) = d.train[1]
    assert x.shape == (3,) + HW and x.dtype == torch.float32
    want = (121 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 3, 3], want, atol=0.03)  # ImageNet-normalised (JPEG rounding)
    assert seg.shape == HW and seg.dtype == torch.int64
    assert seg[0, 0] == 1 and seg[0, 9] == 39 and seg[7, 0] == -1  # 1 + k -> k; 40 -> 39; 0 (unlabelled) -> -1
    assert depth.shape == (1,) + HW and depth[0, 0, 0] == 0 and depth[0, 3, 3] == 3.0
    assert normals.shape == (3,) + HW and normals[:, 0, 0].abs().sum() == 0
    assert torch.allclose(normals[:, 3, 0], torch.tensor([0.6, 0.0, 0.8])) and torch.allclose(normals[:, 3, 3], torch.tensor([0.0, 0.0, 1.0]))
    assert edge.shape == (1,) + HW and edge[0, :, 5].eq(1).all() and edge[0, :, 6].eq(0).all()


def test_nyud_default_size_resize_and_holdout(tmp_path):
    make_nyud(tmp_path, n_train=10)
    d = load_dataset("nyud", str(tmp_path), size="16x20", holdout=0.2, data_seed=3)
    assert d.input_shape == (3, 16, 20) and (len(d.train), len(d.val), len(d.test)) == (8, 2, 2) and not d.info["val_is_test"]
    x, (seg, depth, normals, edge) = d.val[0]
    assert x.shape == (3, 16, 20) and seg.shape == (16, 20)
    assert set(depth.unique().tolist()) <= {0.0} | {2.0 + k for k in range(10)}  # nearest keeps depths exact
    norms = normals.norm(dim=0)
    assert torch.allclose(norms[norms > 0], torch.ones(int((norms > 0).sum())))
    assert load_dataset("nyud", str(tmp_path)).input_shape == (3, 448, 576)  # the paper's resolution
    with pytest.raises(UsageError):
        load_dataset("nyud", str(tmp_path), size="big")


def test_nyud_augmentation_batches_and_losses(tmp_path):
    make_nyud(tmp_path)
    d = load_dataset("nyud", str(tmp_path), size=HW, augment=True)
    torch.manual_seed(0)
    for x, ys in batches(d.train, 3, shuffle=True):
        assert x.shape == (3, 3) + HW and [tuple(y.shape) for y in ys] == [(3,) + HW, (3, 1) + HW, (3, 3) + HW, (3, 1) + HW]
        outs = [torch.randn(3, t.out_dim, *HW) for t in d.tasks]
        assert torch.isfinite(task_losses(d, outs, ys)).all()
    x, ys = d.test[0]  # the test split is never augmented
    assert torch.equal(ys[0], d.test[0][1][0])


# --------------------------------------------------------------------------------------------
# PASCAL_MT writer
# --------------------------------------------------------------------------------------------
def make_pascal(root, n_train=2, n_val=2):
    folder = root / "PASCAL_MT"
    subs = ["JPEGImages", "semseg/VOC12", "semseg/pascal-context", "human_parts", "normals_distill", "sal_distill",
            "pascal-context/trainval", "ImageSets/Context"]
    for sub in subs:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = {"train": [f"2008_{i:06d}" for i in range(n_train)], "val": [f"2010_{i:06d}" for i in range(n_val)]}
    for split, names in ids.items():
        (folder / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            write_jpg(folder / "JPEGImages" / f"{name}.jpg", np.full(HW + (3,), 90, dtype=np.uint8))
            seg = np.full(HW, 15, dtype=np.uint8)
            seg[0] = 255
            seg[:, :3] = 0
            write_png(str(folder / "semseg" / ("VOC12" if k == 0 else "pascal-context") / f"{name}.png"), seg)
            lm = np.full(HW, 4, dtype=np.uint16)  # context class 4 keeps its normals
            lm[:, 6:] = 5  # class 5 does not (not an NYU class)
            savemat(str(folder / "pascal-context" / "trainval" / f"{name}.mat"), {"LabelMap": lm})
            nrm = np.zeros(HW + (3,), dtype=np.uint8)
            nrm[...] = (128, 128, 255)  # ~ (0, 0, 1)
            write_png(str(folder / "normals_distill" / f"{name}.png"), nrm)
            sal = np.zeros(HW, dtype=np.uint8)
            sal[2:6, 2:6] = 200
            sal[6, :] = 100  # 100 / 255 < 0.5: background
            write_png(str(folder / "sal_distill" / f"{name}.png"), sal)
            person = np.zeros(HW, dtype=bool)
            person[1:7, 1:5] = True
            head, arm = np.zeros(HW, bool), np.zeros(HW, bool)
            head[1:3, 1:5] = True
            arm[3:7, 1:2] = True
            objects = [(8, np.ones(HW, bool), [])]  # a cat without parts
            if k == 0:
                objects.append((15, person, [("hair", head), ("llarm", arm)]))
            write_pascal_part(str(folder / "human_parts" / f"{name}.mat"), name, objects)
    return folder


def test_pascal_part_file_matches_the_survey_positional_access(tmp_path):
    path = str(tmp_path / "x.mat")
    m = np.zeros(HW, bool)
    write_pascal_part(path, "x", [(15, m, [("head", m), ("lfoot", m)]), (3, m, [])])
    objs = loadmat(path)["anno"][0][0][1][0]  # as data/pascal_context.py reads it
    assert objs[0][1][0][0] == 15 and len(objs[0][3]) != 0 and str(objs[0][3][0][1][0][0]) == "lfoot"
    assert objs[1][1][0][0] == 3 and len(objs[1][3]) == 0 and objs[0][2].shape == HW


def test_pascal_context_tasks_and_label_conventions(tmp_path):
    make_pascal(tmp_path)
    d = load_dataset("pascal-context", str(tmp_path), size=HW)
    assert d.task_names == ["semseg", "human_parts", "normals", "sal", "edge"]
    assert (len(d.train), len(d.test)) == (2, 2) and d.reference == PASCAL_CONTEXT_REFERENCE
    assert d.info["edge_max_dist"] == 0.0075 and d.input_shape == (3,) + HW
    for item, has_person in ((d.train[0], True), (d.train[1], False)):  # VOC12/ and pascal-context/ semseg
        x, (seg, parts, normals, sal, edge) = item
        assert seg.dtype == torch.int64 and seg[0, 3:].eq(-1).all() and seg[3, 0] == 0 and seg[3, 5] == 15
        if has_person:
            assert parts[1, 1] == 1 and parts[4, 1] == 4 and parts[4, 3] == 0 and parts[7, 9] == 0  # hair->head, llarm->larm
        else:
            assert parts.eq(-1).all()  # no person parts: all ignored
        assert torch.allclose(normals[:, 3, 2], torch.nn.functional.normalize(torch.tensor([1 / 255, 1 / 255, 1.0]), dim=0), atol=1e-6)
        assert normals[:, :, 6:].abs().sum() == 0  # class 5 is not in PASCAL_NORMAL_CLASSES
        assert sal[0, 3, 3] == 1 and sal[0, 6, 3] == 0 and sal.shape == (1,) + HW
        # the Laplacian marks columns 5 and 6; thinning keeps column 5 below its first row (as skimage)
        assert edge[0].sum() == HW[0] - 1 and edge[0, 1:, 5].eq(1).all()
    assert 4 in PASCAL_NORMAL_CLASSES and 5 not in PASCAL_NORMAL_CLASSES and len(PASCAL_NORMAL_CLASSES) == 170


def test_laplacian_edges():
    lm = np.zeros((6, 6), dtype=np.uint16)
    lm[:, 3:] = 7
    e = laplacian_edges(lm)
    # columns 2 and 3 have a non-zero Laplacian; OpenCV + skimage's thin leave column 2 without its top pixel
    assert e.dtype == np.float32 and e.sum() == 5 and e[1:, 2].all() and e[0].sum() == 0
    # as OpenCV's Laplacian: labels a - 1 | a | a + 1 in a row leave no edge at the middle column
    ramp = np.tile(np.array([1, 1, 2, 3, 3], dtype=np.uint16), (5, 1))
    assert laplacian_edges(ramp)[:, 2].sum() == 0


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------
def targets_for(h=4, w=6):
    return {"semseg": torch.arange(h * w).view(1, h, w), "depth": torch.full((1, h, w), 2.0),
            "normals": torch.tensor([0.6, 0.0, 0.8]).view(3, 1, 1).expand(3, h, w).clone(),
            "sal": torch.ones(1, h, w), "edge": torch.zeros(1, h, w)}


def test_flip_mirrors_every_map_and_negates_normal_x():
    image = torch.arange(24.0).view(1, 4, 6).expand(3, 4, 6)
    t = targets_for()
    img2, t2 = flip_dense(image, t)
    assert torch.equal(img2, image.flip(-1)) and torch.equal(t2["semseg"], t["semseg"].flip(-1))
    assert torch.allclose(t2["normals"][:, 0, 0], torch.tensor([-0.6, 0.0, 0.8]))


def test_scale_crop_pad_zoom_in_divides_depth_and_zoom_out_pads_with_ignore():
    image = torch.ones(3, 4, 6)
    img, t = scale_crop_pad(image, targets_for(), 2.0, 0.0, 0.0)
    assert img.shape == (3, 4, 6) and torch.equal(t["semseg"][0, :2, :3], torch.tensor([[0, 0, 1], [0, 0, 1]]))
    assert t["depth"].eq(1.0).all()  # zooming in by 2 halves the depth
    img, t = scale_crop_pad(image, targets_for(), 0.5, 0.0, 1.0)  # 2 x 3 placed top-right
    assert img[:, :2, 3:].eq(1).all() and img[:, 2:].eq(0).all() and img[:, :, :3].eq(0).all()
    for name in t:
        assert t[name][:, 2:].eq(DENSE_FILL[name]).all(), name
    assert t["depth"][0, :2, 3:].eq(4.0).all() and t["semseg"][0, :2, 3:].tolist() == [[0, 2, 4], [12, 14, 16]]


def test_dense_transform_is_reproducible_and_flips_sometimes():
    raw = {"image": np.random.default_rng(0).integers(0, 256, (8, 12, 3)).astype(np.uint8),
           "semseg": np.tile(np.arange(12), (8, 1)).astype(np.int64), "depth": np.ones((8, 12), np.float32),
           "normals": np.tile(np.array([0.6, 0.0, 0.8], np.float32), (8, 12, 1)), "edge": np.zeros((8, 12), np.float32)}
    names = ("semseg", "depth", "normals", "edge")
    a = dense_transform(raw, names, (8, 12), augment=True, generator=torch.Generator().manual_seed(5))
    b = dense_transform(raw, names, (8, 12), augment=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
    signs = set()
    for s in range(12):
        _, (seg, depth, normals, edge) = dense_transform(raw, names, (8, 12), augment=True, jitter=False,
                                                         generator=torch.Generator().manual_seed(s))
        valid = normals.norm(dim=0) > 0
        signs.add(round(float(normals[0][valid][0]), 4))
        assert set(seg.unique().tolist()) <= set(range(-1, 12)) and set(edge.unique().tolist()) <= {-1.0, 0.0}
    assert signs == {0.6, -0.6}  # flipped in some draws, the x component negated


# --------------------------------------------------------------------------------------------
# Errors: one line naming the file
# --------------------------------------------------------------------------------------------
def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_nyud_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("nyud", str(tmp_path))
    assert "NYUD_MT" in one_line(e)
    folder = make_nyud(tmp_path)
    os.remove(folder / "gt_sets" / "val.txt")
    with pytest.raises(DataError) as e:
        load_dataset("nyud", str(tmp_path), size=HW)
    assert "val.txt" in one_line(e)
    (folder / "gt_sets" / "val.txt").write_text("0100\n0101\n")
    os.remove(folder / "normals" / "0101.npy")
    with pytest.raises(DataError) as e:
        load_dataset("nyud", str(tmp_path), size=HW)
    assert "0101.npy" in one_line(e) and "normals" in one_line(e)
    np.save(folder / "normals" / "0101.npy", np.zeros(HW, np.float32))  # H x W, not H x W x 3
    d = load_dataset("nyud", str(tmp_path), size=HW)  # only the first item of each split is parsed up front
    with pytest.raises(DataError) as e:
        d.test[1]
    assert "0101.npy" in one_line(e) and "H x W x 3" in one_line(e)
    write_png(str(folder / "segmentation" / "0000.png"), np.full(HW, 41, np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset("nyud", str(tmp_path), size=HW)
    assert "0000.png" in one_line(e) and "0..40" in one_line(e)
    import shutil
    shutil.rmtree(folder / "edge")
    with pytest.raises(DataError) as e:
        load_dataset("nyud", str(tmp_path), size=HW)
    assert "edge" in one_line(e)


def test_pascal_context_errors(tmp_path):
    folder = make_pascal(tmp_path)
    (folder / "pascal-context" / "trainval" / "2008_000000.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError) as e:
        load_dataset("pascal-context", str(tmp_path), size=HW)
    assert "2008_000000.mat" in one_line(e)
    savemat(str(folder / "pascal-context" / "trainval" / "2008_000000.mat"), {"Other": np.zeros(HW)})
    with pytest.raises(DataError) as e:
        load_dataset("pascal-context", str(tmp_path), size=HW)
    assert "LabelMap" in one_line(e)
    savemat(str(folder / "pascal-context" / "trainval" / "2008_000000.mat"), {"LabelMap": np.full(HW, 4, np.uint16)})
    m = np.ones(HW, bool)
    write_pascal_part(str(folder / "human_parts" / "2008_000000.mat"), "x", [(15, m, [("tail", m)])])
    with pytest.raises(DataError) as e:
        load_dataset("pascal-context", str(tmp_path), size=HW)
    assert "human_parts" in one_line(e) and "tail" in one_line(e)
    write_pascal_part(str(folder / "human_parts" / "2008_000000.mat"), "x", [])
    os.remove(folder / "semseg" / "pascal-context" / "2010_000001.png")
    with pytest.raises(DataError) as e:
        load_dataset("pascal-context", str(tmp_path), size=HW)
    assert "2010_000001.png" in one_line(e)


# --------------------------------------------------------------------------------------------
# The smoke run's tiny trees (reproduce/tiny_data.py) go through the loaders, losses and meters
# --------------------------------------------------------------------------------------------
def test_tiny_dense_trees_load_train_and_evaluate(tmp_path):
    made = make_all(str(tmp_path), DENSE_TINY_DATASETS)
    assert os.path.isdir(made["nyud"]) and made["pascal-context"].endswith("PASCAL_MT")
    for name, n_tasks in (("nyud", 4), ("pascal-context", 5)):
        d = load_dataset(name, str(tmp_path), size=(24, 32), augment=True)
        assert d.num_tasks == n_tasks and len(d.train) == 6 and len(d.test) == 4
        info = dict(d.info, edge_thresholds=9)
        meters = [TaskMeter(t, info, i) for i, t in enumerate(d.tasks)]
        for x, ys in batches(d.test, 2):
            outs = [torch.randn(x.shape[0], t.out_dim, 24, 32) for t in d.tasks]
            assert torch.isfinite(task_losses(d, outs, ys)).all()
            for m, o, y in zip(meters, outs, ys):
                m.update(o, y)
        res = {t.name: m.compute() for t, m in zip(d.tasks, meters)}
        assert all(len(r) == 1 and np.isfinite(list(r.values())[0]) for r in res.values()), res
