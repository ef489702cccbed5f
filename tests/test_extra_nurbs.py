"""EXTRA (methods/extra_nurbs.py): the NURBS basis of Eq. 4-5 (partition of unity, clamped ends,
the Bezier special case, local support), the curves' endpoints, Eq. 2 / 6 / 7 by hand, gradients
reaching only the control points and weights, the task grouping of section 5.3 on planted clusters,
and end-to-end runs (tiny MultiMNIST slice, a 4-task problem with grouping, cityscapes-format files,
--resume equal to an uninterrupted run, one-line errors with exit status 2)."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import extra_nurbs as ex  # noqa: E402
from common.data import MTLData, TensorMTL, load_dataset, register, task  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.metrics import hypervolume  # noqa: E402
from common import models as common_models  # noqa: E402
from common.models import build_model  # noqa: E402

torch.set_num_threads(1)
DATA = os.path.join(ROOT, "data")
FAST = ["--no-progress", "--quiet", "--data-root", DATA, "--batch-size", "32", "--eval-batch-size", "64"]


def read_json(p):
    with open(p) as fh:
        return json.load(fh)


# A 96 / 64 / 64 slice of multimnist-lite (real digits), and a 4-task variant for the grouping path.
def _tiny(num_tasks):
    def load(root, seed, **kw):
        d = load_dataset("multimnist-lite", root, seed, data_seed=kw.get("data_seed", 0))
        def cut(ds, n):
            ys = [ds.ys[i % 2][:n] for i in range(num_tasks)]
            return TensorMTL(ds.x[:n], ys)
        names = ["left", "right"] if num_tasks == 2 else [f"task{i}" for i in range(num_tasks)]
        return MTLData(f"tiny{num_tasks}", [task(n, "class", 10) for n in names], cut(d.train, 96), cut(d.val, 64),
                       cut(d.test, 64), (1, 28, 28), "lenet")
    return load


register("tiny2", _tiny(2))
register("tiny4", _tiny(4))


# ---------------------------------------------------------------------------------------------
# Eq. 4-5: basis and curves
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,p", [(3, 2), (4, 3), (5, 3), (7, 3), (6, 1), (8, 2)])
def test_basis_is_a_nonnegative_partition_of_unity(K, p):
    t = torch.cat([torch.linspace(0, 1, 257), torch.tensor([0.0, 0.5, 1.0, 1 - 1e-9])])
    N = ex.bspline_basis(t, ex.clamped_knots(K, p), p)
    assert N.shape == (len(t), K)
    assert (N >= 0).all()
    assert torch.allclose(N.sum(1), torch.ones(len(t), dtype=N.dtype), atol=1e-12)
    # clamped: only the first basis function at t = 0, only the last at t = 1 (closed last span)
    assert torch.allclose(ex.bspline_basis(torch.tensor([0.0, 1.0]), ex.clamped_knots(K, p), p),
                          torch.eye(K, dtype=torch.float64)[[0, K - 1]])


def test_knots_match_the_official_layout():
    assert ex.clamped_knots(5, 3).tolist() == [0, 0, 0, 0, 0.5, 1, 1, 1, 1]
    assert ex.clamped_knots(4, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_cox_de_boor_by_hand():
    # K = 5, p = 3, knots [0,0,0,0,.5,1,1,1,1]: at t = 0.5 the basis is (0, 1/4, 1/2, 1/4, 0)
    N = ex.bspline_basis(torch.tensor([0.5]), ex.clamped_knots(5, 3), 3)[0]
    assert torch.allclose(N, torch.tensor([0, 0.25, 0.5, 0.25, 0], dtype=torch.float64))
    # at t = 0.25: N_0 = (1 - 2t)^3 = 1/8
    N = ex.bspline_basis(torch.tensor([0.25]), ex.clamped_knots(5, 3), 3)[0]
    assert N[0].item() == pytest.approx(0.125)


@pytest.mark.parametrize("kind", ["nurbs", "bezier", "polychain"])
@pytest.mark.parametrize("K", [3, 4, 5])
def test_curve_hits_both_endpoints(kind, K):
    g = torch.Generator().manual_seed(K)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    c = ex.Curve(a, b, kind, K, 3)
    with torch.no_grad():
        c.inner.add_(torch.randn(c.inner.shape, generator=g))  # a bent curve
        if kind == "nurbs":
            c.rho.copy_(torch.randn(K, generator=g))  # unequal weights
    assert torch.allclose(c.point(0.0), a, atol=1e-6) and torch.allclose(c.point(1.0), b, atol=1e-6)
    assert not torch.allclose(c.point(0.5), 0.5 * (a + b), atol=1e-3)


def test_curve_starts_on_the_segment():
    a, b = torch.zeros(3), torch.tensor([3.0, 6.0, 9.0])
    c = ex.Curve(a, b, "nurbs", 4, 3)
    assert torch.allclose(c.inner.detach(), torch.stack([b / 3, 2 * b / 3]))
    assert torch.allclose(c.weights(), torch.ones(4))
    # collinear, evenly spaced control points + equal weights: a cubic B-spline with these knots is linear
    for t in (0.1, 0.37, 0.8):
        assert torch.allclose(c.point(t), t * b, atol=1e-5)


@pytest.mark.parametrize("K", [3, 4])
def test_single_segment_nurbs_with_equal_weights_is_bezier(K):
    t = torch.linspace(0, 1, 41, dtype=torch.float64)  # the coefficient functions compute in t's dtype
    w = torch.ones(K, dtype=torch.float64)
    deg = K - 1  # one segment: the clamped knot vector has no interior knot
    R = ex.nurbs_coefficients(t, ex.clamped_knots(K, deg), deg, w)
    assert torch.allclose(R, ex.bezier_coefficients(t, K), atol=1e-12)
    # and the Curve lowers degree 3 to K - 1 = 2 for K = 3 (a rational quadratic Bezier)
    c = ex.Curve(torch.zeros(2), torch.ones(2), "nurbs", K, 3)
    assert c.degree == K - 1
    # unequal weights make it a different (rational) curve
    w2 = torch.tensor([1.0] + [3.0] * (K - 2) + [1.0], dtype=torch.float64)
    assert not torch.allclose(ex.nurbs_coefficients(t, ex.clamped_knots(K, deg), deg, w2), ex.bezier_coefficients(t, K))


# Coefficients at t = 0, .13, .5, .77, 1 printed by the curve code before the device fix (it computed
# in float64 on the CPU and cast): the fix computes in the parameters' dtype and device, same values.
T_OLD = [0.0, 0.13, 0.5, 0.77, 1.0]
RHO_OLD = [0.3, -1.0, 0.7, 2.0, -0.2]
OLD_COEFFICIENTS = {
    ("nurbs", 4): [[1, 0, 0, 0], [0.79417676, 0.1305363, 0.06869054, 0.00659635], [0.11815786, 0.12997285, 0.45771387, 0.29415545],
                   [0.00706657, 0.02602325, 0.30680743, 0.66010278], [0, 0, 0, 1]],
    ("nurbs", 5): [[1, 0, 0, 0, 0], [0.57062763, 0.26155052, 0.152418, 0.01540394, 0], [0, 0.06741796, 0.47483972, 0.45774236, 0],
                   [0, 0.00471488, 0.15015778, 0.78687227, 0.05825502], [0, 0, 0, 0, 1]],
    ("bezier", 4): [[1, 0, 0, 0], [0.658503, 0.29519099, 0.044109, 0.002197], [0.125, 0.375, 0.375, 0.125],
                    [0.012167, 0.122199, 0.40910101, 0.45653301], [0, 0, 0, 1]],
    ("bezier", 5): [[1, 0, 0, 0, 0], [0.57289761, 0.34242156, 0.07674966, 0.00764556, 0.00028561], [0.0625, 0.25, 0.375, 0.25, 0.0625],
                    [0.00279841, 0.03747436, 0.18818647, 0.42001036, 0.3515304], [0, 0, 0, 0, 1]],
    ("polychain", 4): [[1, 0, 0, 0], [0.61, 0.39, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.69, 0.31], [0, 0, 0, 1]],
    ("polychain", 5): [[1, 0, 0, 0, 0], [0.48, 0.52, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0.92, 0.08], [0, 0, 0, 0, 1]],
}


def _old_curve(kind, K, device="cpu"):
    c = ex.Curve(torch.zeros(3), torch.ones(3), kind, K, 3)
    if kind == "nurbs":
        with torch.no_grad():
            c.rho.copy_(torch.tensor(RHO_OLD[:K]))
    return c.to(device)


@pytest.mark.parametrize("kind,K", sorted(OLD_COEFFICIENTS))
def test_curve_coefficients_on_cpu_unchanged_by_the_device_fix(kind, K):
    c = _old_curve(kind, K)
    C = c.coefficients(T_OLD)
    assert C.dtype == torch.float32 and C.device.type == "cpu"
    assert torch.allclose(C, torch.tensor(OLD_COEFFICIENTS[kind, K]), atol=2e-7)
    if kind == "nurbs":
        assert c.knots.dtype == torch.float32  # the parameters' dtype: no float64 buffer to move to MPS


@pytest.mark.parametrize("kind", ["nurbs", "bezier", "polychain"])
def test_curve_moved_to_another_device_computes_there(kind):
    # The bug: a NURBS curve built on the CPU and moved to the device kept t on the CPU against its
    # knots buffer on the device ("Tensor on device cpu is not on the expected device meta!" here, a
    # device mismatch at the first stage-2 step on CUDA). The meta device rejects every CPU mix.
    c = _old_curve(kind, 5, "meta")
    for t in (0.3, [0.0, 0.5, 1.0], torch.linspace(0, 1, 7)):  # a number, a list, a CPU tensor (plot_along_t)
        C = c.coefficients(t)
        assert C.device.type == "meta" and C.dtype == torch.float32 and C.shape[1] == 5
    p = c.point(0.3)
    assert p.device.type == "meta" and p.shape == (3,)
    (p.sum() + c.coefficients([0.2, 0.9]).sum()).backward()  # a stage-2 step reaches the control points on the device
    assert c.inner.grad is not None and c.inner.grad.device.type == "meta"


def test_local_support_of_a_control_point():
    # K = 7, p = 3: knots [0,0,0,0,.25,.5,.75,1,1,1,1]; theta_2 (index 1) lives on [0, .5), theta_6 on [.5, 1]
    g = torch.Generator().manual_seed(0)
    c = ex.Curve(torch.randn(20, generator=g), torch.randn(20, generator=g), "nurbs", 7, 3)
    with torch.no_grad():
        c.rho.copy_(torch.randn(7, generator=g))
    ts = torch.linspace(0, 1, 101).tolist()
    before = torch.stack([c.point(t) for t in ts]).detach()
    with torch.no_grad():
        c.inner[0] += 5.0  # control point index 1
    after = torch.stack([c.point(t) for t in ts]).detach()
    moved = (after - before).abs().amax(1) > 1e-6
    tt = torch.tensor(ts)
    assert not moved[tt >= 0.5].any() and moved[(tt > 0) & (tt < 0.5)].all()
    with torch.no_grad():
        c.inner[0] -= 5.0
        c.inner[4] += 5.0  # control point index 5
    after = torch.stack([c.point(t) for t in ts]).detach()
    moved = (after - before).abs().amax(1) > 1e-6
    assert not moved[tt <= 0.5].any() and moved[(tt > 0.5) & (tt < 1)].all()
    # a Bezier curve has no local support: the same move shifts every interior point
    b = ex.Curve(torch.zeros(4), torch.ones(4), "bezier", 7)
    p0 = b.point(0.9).detach()
    with torch.no_grad():
        b.inner[0] += 5.0
    assert not torch.allclose(b.point(0.9), p0)


def test_polychain_passes_through_its_control_points():
    c = ex.Curve(torch.zeros(2), torch.ones(2), "polychain", 4)
    with torch.no_grad():
        c.inner.copy_(torch.tensor([[5.0, -1.0], [2.0, 7.0]]))
    assert torch.allclose(c.point(1 / 3), torch.tensor([5.0, -1.0]), atol=1e-6)
    assert torch.allclose(c.point(0.5), torch.tensor([3.5, 3.0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Eq. 2, 3, 6, 7
# ---------------------------------------------------------------------------------------------
def test_order_regularizer_by_hand_and_its_direction():
    T = torch.tensor
    # L1 grows from t1 = .2 to t2 = .7 (1 -> 2), L2 shrinks (2 -> 1): right order, both exponents -0.5
    r = ex.order_regularizer(T(1.0), T(2.0), T(2.0), T(1.0), 0.2, 0.7)
    assert r.item() == pytest.approx(math.exp(-0.5)) and r.item() < 1
    # reversed order: above 1
    r = ex.order_regularizer(T(2.0), T(1.0), T(1.0), T(2.0), 0.2, 0.7)
    assert r.item() == pytest.approx(math.exp(0.5)) and r.item() > 1
    # symmetric in the labelling of the two samples
    assert ex.order_regularizer(T(2.0), T(1.0), T(1.0), T(2.0), 0.7, 0.2).item() == pytest.approx(math.exp(-0.5))
    # flat losses: exactly 1
    assert ex.order_regularizer(T(1.0), T(1.0), T(3.0), T(3.0), 0.1, 0.9).item() == pytest.approx(1.0)


def test_objective_eq7_by_hand():
    l1 = torch.tensor([1.0, 3.0, 2.0, 5.0])  # losses at t1
    l2 = torch.tensor([2.0, 1.0, 4.0, 5.0])  # losses at t2
    groups = ([0], [1], [2, 3])
    t1, t2, alpha = 0.25, 0.75, 0.5
    J, parts = ex.extra_objective(l1, l2, t1, t2, groups, alpha, 1.0, l2=0.1, sq1=10.0, sq2=30.0)
    L_T = 0.5 * (2.0 + 1.5) + 0.1 * 0.25 * 40.0
    R_o = 0.5 * (math.exp((1 - 2) * 0.5) + math.exp((3 - 1) * (-0.5)))
    R_al = 0.5 * (math.exp(-0.25) * 3.5 + math.exp(-0.25) * 4.5)
    assert float(parts["L_T"]) == pytest.approx(L_T) and float(parts["R_o"]) == pytest.approx(R_o)
    assert float(parts["R_align"]) == pytest.approx(R_al)
    assert J.item() == pytest.approx(L_T + alpha * R_o + R_al)
    # without R_align the third cluster joins L_T
    J0, parts0 = ex.extra_objective(l1, l2, t1, t2, groups, alpha, 0.0)
    assert float(parts0["L_T"]) == pytest.approx(0.5 * (l1.mean() + l2.mean()).item()) and float(parts0["R_align"]) == 0
    # R_align is largest at the centre of the curve
    assert ex.align_regularizer(0.5, 1.0) == pytest.approx(1.0)
    assert ex.align_regularizer(0.0, 1.0) == ex.align_regularizer(1.0, 1.0) == pytest.approx(math.exp(-0.5))


def _lenet_data():
    x = torch.randn(16, 1, 28, 28)
    ys = [torch.randint(0, 10, (16,)), torch.randint(0, 10, (16,))]
    ds = TensorMTL(x, ys)
    return MTLData("t", [task("a", "class", 10), task("b", "class", 10)], ds, ds, ds, (1, 28, 28), "lenet")


def test_only_control_points_and_weights_receive_gradients():
    data = _lenet_data()
    torch.manual_seed(0)
    a, b = build_model("lenet", data), build_model("lenet", data)
    flat = ex.FlatParams(a)
    template = build_model("lenet", data)
    for p in template.parameters():
        p.requires_grad_(False)
    curve = ex.Curve(flat.flatten(a), flat.flatten(b), "nurbs", 4, 3)
    assert [n for n, _ in curve.named_parameters()] == ["inner", "rho"]
    start0, end0 = curve.start.clone(), curve.end.clone()
    opt = torch.optim.Adam(curve.parameters(), lr=1e-2)
    x, ys = data.train.x, data.train.ys
    outs = []
    for t in (0.3, 0.8):
        theta = curve.point(t)
        out = torch.func.functional_call(template, flat.unflatten(theta), (x,))
        outs.append((torch.stack([torch.nn.functional.cross_entropy(o, y) for o, y in zip(out, ys)]), (theta ** 2).sum()))
    J, _ = ex.extra_objective(outs[0][0], outs[1][0], 0.3, 0.8, ([0], [1], []), 0.5, 1.0, 5e-4, outs[0][1], outs[1][1])
    J.backward()
    assert curve.inner.grad is not None and curve.inner.grad.abs().sum() > 0
    assert curve.rho.grad is not None and curve.rho.grad.abs().sum() > 0
    assert all(p.grad is None for p in template.parameters())
    opt.step()
    assert torch.equal(curve.start, start0) and torch.equal(curve.end, end0)
    assert torch.allclose(curve.point(0.0), start0) and torch.allclose(curve.point(1.0), end0)
    assert (curve.weights() > 0).all()
    # the flat vector maps back onto the backbone exactly
    assert all(torch.equal(flat.unflatten(flat.flatten(a))[n], p) for n, p in a.named_parameters())


# ---------------------------------------------------------------------------------------------
# Section 5.3: grouping
# ---------------------------------------------------------------------------------------------
def planted(sizes=(6, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    cross = np.array([[0.8, -0.1, -0.6], [-0.1, 0.8, -0.1], [-0.6, -0.1, 0.8]])
    A = cross[labels][:, labels] + rng.normal(0, 0.05, (len(labels), len(labels)))
    A = np.clip((A + A.T) / 2, -1, 1)
    np.fill_diagonal(A, 1.0)
    return A, labels


def same_partition(a, b):
    return all((a[i] == a[j]) == (b[i] == b[j]) for i in range(len(a)) for j in range(len(a)))


@pytest.mark.parametrize("fn", [ex.spectral_groups, ex.kmeans_groups])
def test_grouping_recovers_planted_clusters(fn):
    A, labels = planted()
    got = fn(A, 3, seed=0)
    assert same_partition(got, labels)
    e1, e2, e3 = ex.order_groups(got, A)
    # blocks 0 and 2 conflict most (-0.6): they become the endpoint clusters, block 1 is aligned at t = 1/2
    assert sorted([e1, e2]) == [list(range(0, 6)), list(range(11, 15))] and e3 == list(range(6, 11))


def test_random_groups_and_cosine_matrix():
    lab = ex.random_groups(40, 3, seed=1)
    assert sorted(np.bincount(lab).tolist()) == [13, 13, 14]
    assert not np.array_equal(lab, ex.random_groups(40, 3, seed=2))
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert torch.allclose(ex.cosine_matrix(G), torch.tensor([[1.0, 0, -1], [0, 1, 0], [-1, 0, 1]]))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def fake_stl(tmp_path, dataset, tasks, model="lenet"):
    """An STL run of `model` where --reference auto looks: results/stl/<dataset>/ of the current folder."""
    d = tmp_path / "results" / "stl" / dataset / "seed0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"method": "stl", "dataset": dataset, "model": model, "tasks": tasks}))


def test_end_to_end_both_stages_front_and_delta_m(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_stl(tmp_path, "tiny2", {"left": {"acc": 0.9}, "right": {"acc": 0.85}})
    out = tmp_path / "extra_nurbs" / "tiny2" / "seed0"
    res = ex.main(["--dataset", "tiny2", "--out", str(out), "--epochs", "1", "--grid", "5"] + FAST)
    m = read_json(out / "metrics.json")
    assert m["method"] == "extra_nurbs" and m["dataset"] == "tiny2" and res["t"] == m["t"]
    assert [f["t"] for f in m["front"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(math.isfinite(f["delta_m"]) for f in m["front"])
    chosen = [f for f in m["front"] if f["t"] == m["t"]][0]
    assert m["tasks"] == chosen["tasks"] and m["delta_m"] == pytest.approx(chosen["delta_m"])
    # the reported t maximises the validation score over the grid
    assert chosen["val_score"] == max(f["val_score"] for f in m["front"])
    acc = m["tasks"]["left"]["acc"], m["tasks"]["right"]["acc"]
    assert m["delta_m"] == pytest.approx(-50 * ((acc[0] - 0.9) / 0.9 + (acc[1] - 0.85) / 0.85))
    assert m["endpoints"]["t=0"]["tasks"] == m["front"][0]["tasks"] and m["hypervolume"] > 0
    assert m["curve"]["kind"] == "nurbs" and m["curve"]["control_points"] == 3 and len(m["curve"]["weights"]) == 3
    assert m["groups"] == {"E1": ["left"], "E2": ["right"], "E3": []} and m["endpoint_rules"] == ["ls", "ls"]
    assert m["steps"] == 9  # 3 steps (96 / 32) for each endpoint and for the curve
    for f in ("config.json", "log.csv", "checkpoint.pt", "along_t.png", "front.png"):
        assert (out / f).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["phase"] for r in rows] == ["endpoint1", "endpoint2", "curve"]
    assert float(rows[-1]["objective"]) > 0 and float(rows[-1]["R_o"]) > 0


def _full_then_interrupted_and_resumed(flags, tmp_path, monkeypatch, stop_at_call: int):
    """Run `flags` whole (into full/), then again into cut/ stopped by Ctrl-C at the `stop_at_call`-th
    evaluation of the curve objective, then --resume it; returns both metrics.json."""
    ex.main(flags + ["--out", str(tmp_path / "full")])
    calls = {"n": 0}
    real = ex.extra_objective

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == stop_at_call:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ex, "extra_objective", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.main(flags + ["--out", str(tmp_path / "cut")])
    monkeypatch.setattr(ex, "extra_objective", real)
    ex.main(flags + ["--out", str(tmp_path / "cut"), "--resume"])
    return read_json(tmp_path / "full" / "metrics.json"), read_json(tmp_path / "cut" / "metrics.json")


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    flags = ["--dataset", "tiny2", "--epochs", "2", "--endpoint-epochs", "1", "--endpoints", "stl", "--curve", "bezier", "--grid", "3"] + FAST
    # stopped at the second step of the curve's second epoch
    a, b = _full_then_interrupted_and_resumed(flags, tmp_path, monkeypatch, stop_at_call=5)
    assert a["front"] == b["front"] and a["steps"] == b["steps"] == 12
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [r["phase"] for r in rows] == ["endpoint1", "endpoint2", "curve", "curve"]
    # a finished run is reported again, not retrained
    ex.main(flags + ["--out", str(tmp_path / "cut"), "--resume"])
    assert read_json(tmp_path / "cut" / "metrics.json")["front"] == a["front"]


def test_resume_at_a_phase_boundary_equals_uninterrupted_run(tmp_path, monkeypatch):
    # Stopped at the curve's first step, the last checkpoint is the one written as endpoint 2 ended: the
    # resumed curve must start from its own seed (the bug: the harness restored the random streams saved
    # at the end of endpoint 2 when the curve's first epoch began, so t1, t2 differed)
    flags = ["--dataset", "tiny2", "--epochs", "1", "--curve", "bezier", "--grid", "3"] + FAST
    a, b = _full_then_interrupted_and_resumed(flags, tmp_path, monkeypatch, stop_at_call=1)
    assert a["front"] == b["front"] and a["steps"] == b["steps"] == 9


def test_resume_inside_an_endpoint_keeps_the_rule_state(tmp_path, monkeypatch):
    # DWA (loss history) and FAMO (logits, its own Adam, the epoch's losses) carry state from epoch to
    # epoch: stopped after endpoint 2's first epoch, the resumed run gets it back from the checkpoint,
    # which loads with weights_only=True (no pickled rule)
    from common.train import Run

    flags = ["--dataset", "tiny2", "--epochs", "2", "--endpoints", "dwa", "famo", "--grid", "3"] + FAST
    ex.main(flags + ["--out", str(tmp_path / "full")])
    real, calls = Run.checkpoint, {"n": 0}

    def stop_after_endpoint2_epoch0(self, epoch, finished=False):
        real(self, epoch, finished)
        calls["n"] += 1
        if self.phase == "endpoint2" and epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(Run, "checkpoint", stop_after_endpoint2_epoch0)
    with pytest.raises(KeyboardInterrupt):
        ex.main(flags + ["--out", str(tmp_path / "cut")])
    monkeypatch.setattr(Run, "checkpoint", real)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state"]["tracked"]
    assert set(saved) == {"model", "rule", "opt"}
    ex.main(flags + ["--out", str(tmp_path / "cut"), "--resume"])
    a, b = read_json(tmp_path / "full" / "metrics.json"), read_json(tmp_path / "cut" / "metrics.json")
    assert a["front"] == b["front"] and a["steps"] == b["steps"]


def test_many_tasks_grouping_alignment_and_endpoint_checkpoints(tmp_path):
    out = tmp_path / "g"
    ex.main(["--dataset", "tiny4", "--out", str(out), "--epochs", "1", "--max-steps", "2", "--eval-t", "0.5",
             "--grouping", "kmeans", "--grid", "3"] + FAST)
    m = read_json(out / "metrics.json")
    groups = m["groups"]
    assert sorted(sum(groups.values(), [])) == ["task0", "task1", "task2", "task3"] and groups["E1"] and groups["E2"]
    assert m["endpoint_tasks"] == "groups" and m["grouping"] == "kmeans" and m["t"] == 0.5
    assert np.allclose(np.diag(m["task_affinity"]), 1.0) and (out / "affinity.png").exists()
    # four accuracies: the exact hypervolume of the front (reference 0), no longer limited to 2-3 tasks
    P = [[f["tasks"][f"task{i}"]["acc"] for i in range(4)] for f in m["front"]]
    assert m["hypervolume"] == pytest.approx(hypervolume(P, [0.0] * 4, maximize=True)) and m["hypervolume_ref"] == [0.0] * 4
    assert m["steps"] == 4  # warm-up, two endpoints, curve: one step each (--max-steps is the total)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["phase"] for r in rows] == ["warmup", "endpoint1", "endpoint2", "curve"]
    # stage 2 alone from the endpoint checkpoints of another run (the harness's checkpoint format)
    ck = tmp_path / "ep.pt"
    sd = build_model("lenet", load_dataset("tiny2", DATA)).state_dict()
    torch.save({"state": {"model": sd}}, ck)
    ex.main(["--dataset", "tiny2", "--out", str(tmp_path / "ck"), "--epochs", "1", "--endpoint-ckpt", str(ck), str(ck),
             "--max-steps", "1", "--grid", "3"] + FAST)
    m = read_json(tmp_path / "ck" / "metrics.json")
    assert m["endpoint_ckpt"] == [str(ck)] * 2 and m["steps"] == 1
    assert m["front"][0]["tasks"] == m["front"][-1]["tasks"]  # identical endpoints


def test_max_steps_is_the_total_of_the_run(tmp_path):
    # DESIGN.md: --max-steps N stops after N optimisation steps in total; the phases share them
    # (endpoint1 5 // 3 = 1, endpoint2 4 // 2 = 2, the curve the remaining 2)
    out = tmp_path / "cap"
    ex.main(["--dataset", "tiny2", "--out", str(out), "--epochs", "3", "--max-steps", "5", "--grid", "3"] + FAST)
    assert read_json(out / "metrics.json")["steps"] == 5
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["phase"] for r in rows] == ["endpoint1", "endpoint2", "curve"]


def test_cityscapes_real_format_with_mtan(tmp_path, monkeypatch):
    original = common_models._BUILDERS["mtan"]
    monkeypatch.setitem(common_models._BUILDERS, "mtan",
                        lambda data, tasks, **kw: original(data, tasks, filters=(8, 8, 16, 16, 16)))  # narrow MTAN
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        base = tmp_path / "cityscapes" / split
        for kind in ("image", "label_7", "depth"):
            (base / kind).mkdir(parents=True)
        for i in range(n):
            np.save(base / "image" / f"{i}.npy", rng.random((32, 64, 3)))
            np.save(base / "label_7" / f"{i}.npy", rng.integers(-1, 7, (32, 64)).astype(np.float64))
            np.save(base / "depth" / f"{i}.npy", rng.random((32, 64, 1)).astype(np.float32))
    out = tmp_path / "cs"
    ex.main(["--dataset", "cityscapes", "--data-root", str(tmp_path), "--out", str(out),
             "--epochs", "1", "--batch-size", "2", "--max-steps", "1", "--grid", "2", "--bn-batches", "1",
             "--no-progress", "--quiet"])
    m = read_json(out / "metrics.json")
    assert m["t"] == 0.5 and m["t_selection"] == "fixed" and [f["t"] for f in m["front"]] == [0.0, 0.5, 1.0]
    assert m["curve"]["control_points"] == 4 and m["curve"]["knots"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert set(m["tasks"]) == {"segmentation", "depth"} and math.isfinite(m["delta_m"])  # published reference
    assert read_json(out / "config.json")["resolved"]["model"] == "mtan"  # appendix A.2


@pytest.mark.parametrize("flags,needle", [
    (["--control-points", "2"], "--control-points"),
    (["--endpoints", "nope"], "unknown rule"),
    (["--eval-t", "2"], "--eval-t"),
    (["--hyper", "zzz=1"], "--hyper"),
    (["--endpoint-ckpt", "a.pt", "b.pt"], "no file"),
    (["--endpoints", "ls", "ls", "ls"], "one or two"),
])
def test_bad_values_are_usage_errors_before_anything_is_written(tmp_path, flags, needle):
    out = tmp_path / "o"
    with pytest.raises(UsageError, match=needle.replace("-", "\\-")):
        ex.main(["--out", str(out)] + flags)
    assert not out.exists()


def test_help_prints_the_defaults_table_and_a_run_records_those_values(tmp_path):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        ex.parse_args(["--help"])
    help_text = " ".join(buf.getvalue().split())
    assert "every dataset: control_points=3, grid=21, eval_t=val, warmup_epochs=1, endpoint_epochs=--epochs" in help_text
    assert "cityscapes epochs 200, batch 8, Adam lr 0.0001" in help_text
    assert "control_points=4, grid=11, eval_t=0.5, model=mtan" in help_text
    assert "nyuv2 epochs 200, batch 2" in help_text and "control_points=5" in help_text
    assert "celeba epochs 15, batch 256, Adam lr 0.0003" in help_text and "select last" in help_text
    out = tmp_path / "d"
    ex.main(["--dataset", "tiny2", "--out", str(out), "--epochs", "2", "--max-steps", "3", "--grid", "2"] + FAST)
    cfg = read_json(out / "config.json")
    assert {k: cfg["args"][k] for k in ("control_points", "grid", "eval_t", "warmup_epochs", "endpoint_epochs", "model",
                                        "select")} == {"control_points": 3, "grid": 2, "eval_t": "val",
                                                       "warmup_epochs": 1, "endpoint_epochs": 2, "model": "lenet",
                                                       "select": "last"}
    assert cfg["resolved"]["control_points"] == 3 and cfg["defaults_used"]["endpoint_epochs"] == 2


def test_endpoint_checkpoint_in_the_harness_layout(tmp_path):
    # a checkpoint.pt of the skeleton (methods/baselines.py, stl.py): the model under ["state"]["tracked"]
    data = load_dataset("tiny2", DATA)
    sd = build_model("lenet", data).state_dict()
    ck = tmp_path / "ep.pt"
    torch.save({"epoch": 0, "state": {"tracked": {"model": sd, "opt": {}}, "values": {}}}, ck)
    got = ex.load_endpoint(str(ck), build_model("lenet", data))
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_unknown_choice_is_an_argparse_error():
    with pytest.raises(SystemExit) as e:
        ex.parse_args(["--curve", "spline"])
    assert e.value.code == 2


@pytest.mark.parametrize("flags,needle", [(["--alpha", "-1"], "--alpha")])
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, needle):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "extra_nurbs.py"), "--out", str(out)] + flags,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written before the flags were checked


def test_headline_line_prints_delta_m_of_the_point_and_both_endpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_stl(tmp_path, "tiny2", {"left": {"acc": 0.9}, "right": {"acc": 0.85}})
    flags = [f for f in FAST if f != "--quiet"]
    m = ex.main(["--dataset", "tiny2", "--out", str(tmp_path / "h"), "--epochs", "1", "--grid", "3"] + flags)
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[extra_nurbs] Delta-m%")]
    assert len(line) == 1 and "our single-task runs" in line[0]
    f = {p["t"]: p["delta_m"] for p in m["front"]}
    assert f"t = {m['t']:g} (validation) {m['delta_m']:.2f}; endpoints t = 0 {f[0.0]:.2f}, t = 1 {f[1.0]:.2f}" in line[0]
