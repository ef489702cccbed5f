"""Tests of methods/avgnorm.py: Eq. 6 on hand-made Jacobians, its invariances, the near-zero guard,
the backward pass, the grid driver, and end-to-end runs on multimnist-lite and nyuv2-format files."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import avgnorm  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.metrics import delta_m  # noqa: E402
import common.models  # noqa: E402
from common.models import MTLModel, build_model  # noqa: E402
from common.train import jacobian  # noqa: E402

FAST = ["--no-progress", "--quiet"]


# ---------------------------------------------------------------------------------------------
# Eq. 6 and the reciprocal variant
# ---------------------------------------------------------------------------------------------
def test_eq6_on_hand_made_jacobian():
    G = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])  # ||g_1|| = 5, ||g_2|| = 2, sum = (3, 4, 2)
    w, bad = avgnorm.avgnorm_weights(G)
    S = math.sqrt(29.0)
    assert torch.allclose(w, torch.tensor([S / 5, S / 2]))
    assert not bad.any()
    w, _ = avgnorm.avgnorm_weights(G, "reciprocal")
    assert torch.allclose(w, torch.tensor([0.2, 0.5]))


def test_weighted_task_gradients_all_have_norm_S():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(4, 50, generator=g) * torch.tensor([[0.01], [1.0], [30.0], [2.0]])
    w, _ = avgnorm.avgnorm_weights(G)
    S = G.sum(0).norm()
    assert torch.allclose((w[:, None] * G).norm(dim=1), S.expand(4), rtol=1e-5)
    rep = avgnorm.gradient_report(G, w)
    assert torch.allclose(rep["wgrad_norm"], S.expand(4), rtol=1e-5)
    assert torch.allclose(rep["S"], S) and torch.allclose(rep["grad_norm"], G.norm(dim=1))
    # the aggregated direction is S times the sum of the unit task gradients
    assert torch.allclose(w @ G, S * (G / G.norm(dim=1, keepdim=True)).sum(0), rtol=1e-4, atol=1e-5)


def test_gradient_report_cosines():
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rep = avgnorm.gradient_report(G, torch.tensor([1.0, 3.0]))  # d = (1, 3)
    assert torch.allclose(rep["cos"], torch.tensor([1.0, 3.0]) / math.sqrt(10.0))
    # two tasks with AvgNorm weights: d bisects them, both cosines are equal (Fig. 9 converges)
    G = torch.tensor([[2.0, 1.0, 0.0], [-1.0, 5.0, 3.0]])
    w, _ = avgnorm.avgnorm_weights(G)
    c = avgnorm.gradient_report(G, w)["cos"]
    assert abs(c[0] - c[1]) < 1e-6 and c[0] > 0
    # a zero aggregated gradient gives cosine 0, not NaN
    assert torch.equal(avgnorm.gradient_report(torch.zeros(2, 3), torch.ones(2))["cos"], torch.zeros(2))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
    return MTLModel(enc, [nn.Linear(6, 1), nn.Linear(6, 1)], ["a", "b"])


def _losses(model, x, y, scale=(1.0, 1.0)):
    out = model(x)
    return torch.stack([s * ((o.squeeze(1) - yy) ** 2).mean() for s, o, yy in zip(scale, out, y)])


def test_rescaling_one_loss_divides_its_weight():
    x, y = torch.randn(16, 5), [torch.randn(16), torch.randn(16)]
    model = _tiny_model()
    G1 = jacobian(_losses(model, x, y), model.last_shared_parameters())
    G10 = jacobian(_losses(model, x, y, (10.0, 1.0)), model.last_shared_parameters())
    r1, _ = avgnorm.avgnorm_weights(G1, "reciprocal")
    r10, _ = avgnorm.avgnorm_weights(G10, "reciprocal")
    assert torch.allclose(r10, torch.stack([r1[0] / 10, r1[1]]), rtol=1e-4)
    w1, _ = avgnorm.avgnorm_weights(G1)
    w10, _ = avgnorm.avgnorm_weights(G10)
    # Eq. 6: relative to the other task the weight falls by 10; the direction does not change
    assert torch.allclose(w10[0] / w10[1], w1[0] / w1[1] / 10, rtol=1e-4)
    d1, d10 = w1 @ G1, w10 @ G10
    assert torch.nn.functional.cosine_similarity(d1, d10, dim=0) > 1 - 1e-5
    assert torch.allclose((w10[:, None] * G10).norm(dim=1), G10.sum(0).norm().expand(2), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# The near-zero guard
# ---------------------------------------------------------------------------------------------
def test_near_zero_guard():
    G = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 1e-12]])
    w, bad = avgnorm.avgnorm_weights(G, eps=1e-8)
    assert bad.tolist() == [False, True, True]
    assert torch.isfinite(w).all()
    assert torch.allclose(w, torch.ones(3))                 # S = 5 = ||g_1||; the others take the mean (1)
    prev = torch.tensor([7.0, 2.0, 0.5])
    w, _ = avgnorm.avgnorm_weights(G, eps=1e-8, previous=prev)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 0.5]))  # guarded rows keep their previous weight
    w, bad = avgnorm.avgnorm_weights(torch.zeros(2, 4))
    assert bad.all() and torch.equal(w, torch.ones(2))      # nothing valid: weight 1
    w, bad = avgnorm.avgnorm_weights(torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [0.0, 2.0]]), "reciprocal")
    assert bad.tolist() == [False, True, False] and torch.allclose(w, torch.tensor([1.0, 0.75, 0.5]))
    w, _ = avgnorm.avgnorm_weights(torch.tensor([[1.0, 0.0], [float("inf"), 0.0], [0.0, 1.0]]))
    assert torch.isfinite(w).all() and torch.allclose(w[[0, 2]], torch.full((2,), math.sqrt(2.0)))
    # without the guard, Eq. 6 would give S / 1e-12: the threshold is what stops it
    w, bad = avgnorm.avgnorm_weights(torch.tensor([[3.0, 4.0], [0.0, 1e-12]]), eps=1e-15)
    assert not bad.any() and w[1] > 1e12


# ---------------------------------------------------------------------------------------------
# The backward pass equals the gradient of sum_t w_t L_t with detached weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grad_on", ["last", "all"])
def test_train_step_matches_weighted_loss_gradient(grad_on):
    x, y = torch.randn(16, 5), [torch.randn(16), torch.randn(16)]
    model = _tiny_model()
    losses = _losses(model, x, y)
    w, G = avgnorm.train_step(model, losses, None, lambda G: avgnorm.avgnorm_weights(G)[0], grad_on)
    target = avgnorm.shared_target(model, grad_on)
    assert G.shape == (2, sum(p.numel() for p in target))
    got = [p.grad.clone() for p in model.parameters()]
    ref = _tiny_model()
    (w.detach() * _losses(ref, x, y)).sum().backward()
    for a, p in zip(got, ref.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)
    # the weights are Eq. 6 on the gradients of the chosen parameters
    Gref = jacobian(_losses(ref, x, y), avgnorm.shared_target(ref, grad_on))
    assert torch.allclose(w, avgnorm.avgnorm_weights(Gref)[0], rtol=1e-5)


def test_train_step_without_recompute_reuses_weights():
    x, y = torch.randn(8, 5), [torch.randn(8), torch.randn(8)]
    model = _tiny_model()
    w0 = torch.tensor([0.3, 2.0])
    w, G = avgnorm.train_step(model, _losses(model, x, y), w0, None, "last")
    assert G is None and torch.equal(w, w0)


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
def test_grid_points(tmp_path):
    assert avgnorm.grid_points("1,2", 2) == [[1, 1], [1, 2], [2, 1]]          # (2, 2) = 2 x (1, 1)
    assert len(avgnorm.grid_points("1,2", 2, dedupe_scale=False)) == 4
    assert len(avgnorm.grid_points("1,2,5,10,50", 3, dedupe_scale=False)) == 125
    pts = avgnorm.grid_points("1,2,5,10,50", 2)
    ratios = {round(b / a, 9) for a, b in pts}
    # ratios w2/w1: 1, 2, 5, 10, 50, their inverses, 2.5, 25, 0.4, 0.04 (10/2 = 5 etc. repeat)
    assert len(pts) == len(ratios) == 13
    f = tmp_path / "grid.txt"
    f.write_text("# seg, depth\n1, 1\n1 50  # the paper's edge weight\n\n2,2\n")
    assert avgnorm.grid_points(str(f), 2) == [[1, 1], [1, 50]]
    f.write_text("1,2,3\n")
    with pytest.raises(UsageError, match="3 weights"):
        avgnorm.grid_points(str(f), 2)
    for bad in ("1,x", "0,1", "", "-1"):
        with pytest.raises(UsageError):
            avgnorm.grid_points(bad, 2)


def test_grid_driver_visits_every_point_and_picks_best_on_validation(tmp_path, monkeypatch):
    # a single-task reference under results/stl/ (--reference auto), so the criterion is the validation Delta-m%
    monkeypatch.chdir(tmp_path)
    ref = {"left": {"acc": 0.9}, "right": {"acc": 0.8}}
    os.makedirs(tmp_path / "results" / "stl" / "multimnist-lite" / "seed0")
    (tmp_path / "results" / "stl" / "multimnist-lite" / "seed0" / "metrics.json").write_text(
        json.dumps({"method": "stl", "dataset": "multimnist-lite", "model": "lenet", "tasks": ref}))
    out = tmp_path / "avgnorm-grid" / "multimnist-lite" / "seed0"
    m = avgnorm.main(["--grid", "1,4", "--epochs", "1", "--max-steps", "2", "--out", str(out)] + FAST)
    assert m["grid_size"] == 3 and len(m["grid"]) == 3 and len(m["front"]) == 3
    visited = sorted(tuple(p["weights"]) for p in m["grid"])
    assert visited == [(1, 1), (1, 4), (4, 1)]
    vals = []
    for p in m["grid"]:
        pm = json.load(open(os.path.join(p["out"], "metrics.json")))
        assert pm["steps"] == 2 and pm["static_weights"] == p["weights"]
        assert list(pm["mean_weights"].values()) == p["weights"]
        vals.append(delta_m(pm["val_tasks"], ref, _specs()))
        assert p["val_delta_m"] == pytest.approx(vals[-1])
    best = int(np.argmin(vals))
    assert list(m["best_weights"].values()) == m["grid"][best]["weights"]
    assert m["tasks"] == m["grid"][best]["tasks"]
    assert m["delta_m"] == pytest.approx(delta_m(m["tasks"], ref, _specs()))
    assert m["hypervolume"] > 0 and m["selection"].startswith("val Delta-m")
    for f in ("grid.png", "grid.csv", "metrics.json", "config.json"):
        assert (out / f).is_file()
    rows = list(csv.DictReader(open(out / "grid.csv")))
    assert len(rows) == 3 and {r["weight_left"] for r in rows} == {"1.0", "4.0"}


def _specs():
    from common.data import task

    return [task("left", "class", 10), task("right", "class", 10)]


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def test_end_to_end_multimnist_lite_and_resume(tmp_path):
    out = tmp_path / "a"
    args = ["--epochs", "2", "--out", str(out)] + FAST
    avgnorm.main(args + ["--max-steps", "2", "--epochs", "1"])
    assert (out / "checkpoint.pt").is_file()
    m = avgnorm.main(args + ["--max-steps", "4", "--resume"])  # epoch 2 continues from step 2
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "weights.png", "grad_cosine.png", "grad_norms.png"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert m["steps"] == 4 and m["front"] is None and m["hypervolume"] is None and m["variant"] == "avgnorm"
    assert set(m["tasks"]) == {"left", "right"} and all(0 <= v["acc"] <= 1 for v in m["tasks"].values())
    assert len(m["weights_per_epoch"]["left"]) == 2 and m["guard_hits"] == 0
    assert all(w > 0 and math.isfinite(w) for w in m["mean_weights"].values())
    for e in range(2):  # Eq. 6 during real training: every weighted task gradient has the norm S
        a, b = m["weighted_grad_norms"]["left"][e], m["weighted_grad_norms"]["right"][e]
        assert a == pytest.approx(b, rel=1e-4) and a == pytest.approx(m["S_per_epoch"][e], rel=1e-4)
        assert m["gradient_cosine"]["left"][e] == pytest.approx(m["gradient_cosine"]["right"][e], abs=1e-4)
    saved = json.load(open(out / "metrics.json"))
    assert saved["mean_weights"] == m["mean_weights"] and saved["method"] == "avgnorm"


def test_variants_static_reciprocal_all_every(tmp_path):
    m = avgnorm.main(["--variant", "static", "--weights", "1,3", "--max-steps", "2", "--out", str(tmp_path / "s")] + FAST)
    assert m["mean_weights"] == {"left": 1.0, "right": 3.0} and m["method"] == "avgnorm-static"
    wg, g = m["weighted_grad_norms"], m["grad_norms"]
    assert wg["right"][0] == pytest.approx(3 * g["right"][0], rel=1e-5)
    m = avgnorm.main(["--variant", "reciprocal", "--grad-on", "all", "--every", "2", "--max-steps", "3",
                      "--out", str(tmp_path / "r")] + FAST)
    # reciprocal: every weighted gradient has norm 1; steps 0 and 2 recompute, step 1 reuses
    assert m["weighted_grad_norms"]["left"][0] == pytest.approx(1.0, rel=1e-4)
    assert m["grad_on"] == "all" and m["every"] == 2 and m["steps"] == 3


def test_nyuv2_format_files(tmp_path, monkeypatch):
    hw = (32, 32)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        base = tmp_path / "nyuv2" / split
        for kind in ("image", "label", "depth", "normal"):
            (base / kind).mkdir(parents=True)
        for i in range(n):
            np.save(base / "image" / f"{i}.npy", rng.random(hw + (3,)).astype(np.float32))
            np.save(base / "label" / f"{i}.npy", rng.integers(-1, 13, hw).astype(np.float32))
            np.save(base / "depth" / f"{i}.npy", (rng.random(hw + (1,)) + 0.1).astype(np.float32))
            nrm = rng.normal(size=hw + (3,))
            np.save(base / "normal" / f"{i}.npy", (nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)).astype(np.float32))
    # the real SegNet architecture with narrow filters, so that the test stays fast on a CPU
    monkeypatch.setattr(common.models, "build_model", lambda name, data, **kw: build_model(name, data, filters=(4, 8, 8, 8, 8)))
    m = avgnorm.main(["--dataset", "nyuv2", "--data-root", str(tmp_path), "--batch-size", "2", "--epochs", "1",
                      "--out", str(tmp_path / "o")] + FAST)
    assert m["steps"] == 2 and set(m["mean_weights"]) == {"segmentation", "depth", "normal"}
    wg = [m["weighted_grad_norms"][t][0] for t in ("segmentation", "depth", "normal")]
    assert np.allclose(wg, m["S_per_epoch"][0], rtol=1e-4)
    assert math.isfinite(m["tasks"]["normal"]["mean"]) and m["delta_m"] is not None  # published reference


def test_bad_input_keeps_out_and_exits_2(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "note.txt").write_text("mine")
    with pytest.raises(UsageError, match="2 tasks"):
        avgnorm.main(["--variant", "static", "--weights", "1,2,3", "--out", str(out)] + FAST)
    with pytest.raises(UsageError, match="--variant static"):
        avgnorm.main(["--weights", "1,2", "--out", str(out)] + FAST)
    assert os.listdir(out) == ["note.txt"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "avgnorm.py"), "--every", "0", "--out", str(out)],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--every" in r.stderr
    assert os.listdir(out) == ["note.txt"]


def test_help_prints_the_defaults_table_and_config_records_the_resolved_values(tmp_path):
    import contextlib
    import io

    buf = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(buf):
        avgnorm.parse_args(["--help"])
    text = buf.getvalue()
    assert "every dataset: grad_on=last, every=1, eps=1e-08, clip_grad=0" in text
    assert "multimnist-lite      epochs 10, batch 256, Adam lr 0.001, no schedule, select last" in text
    assert ("nyud                 epochs 100, batch 6, Adam lr 0.0001, weight decay 0.0001, poly(power 0.9), "
            "select best, augment") in text
    from common.train import Run

    Run(avgnorm.parse_args(["--out", str(tmp_path / "o")] + FAST), "avgnorm", avgnorm.DEFAULTS)
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    want = dict(epochs=10, batch_size=256, lr=1e-3, grad_on="last", every=1, eps=1e-8, clip_grad=0.0)
    assert {k: cfg["args"][k] for k in want} == want and {k: cfg["defaults_used"][k] for k in want} == want
