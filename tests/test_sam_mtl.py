"""methods/sam_mtl.py: Algorithm 1 of SAM-MTL (perturbations, exact restore, flat gradients), the
aggregation variants of Tables 5-7, and end-to-end runs on multimnist-lite and a tiny Cityscapes."""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import sam_mtl  # noqa: E402
from common.aggregators import AGGREGATORS, RuleStep, make_aggregator  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.models import LeNetEncoder, MTLModel, lenet_head  # noqa: E402
from common.metrics import hypervolume  # noqa: E402
from sam_mtl import SAMGrads, combine, conflict, make_aggregators, model_parts, perturbation, sam_gradients  # noqa: E402

DATA_ROOT = os.path.join(ROOT, "data")


# --------------------------------------------------------------------------------------------
# small models
# --------------------------------------------------------------------------------------------
def lenet_mtl(T=2, seed=0):
    torch.manual_seed(seed)
    return MTLModel(LeNetEncoder(1), [lenet_head(10) for _ in range(T)], [f"t{i}" for i in range(T)])


def lenet_batch(T=2, n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), [torch.randint(0, 10, (n,), generator=g) for _ in range(T)]


def ce_losses(outs, ys):
    return torch.stack([F.cross_entropy(o, y) for o, y in zip(outs, ys)])


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 8), nn.Dropout(0.3))

    def forward(self, x):
        return self.net(x)


class QuadEncoder(nn.Module):
    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))

    def forward(self, x):
        return self.theta.expand(x.shape[0], -1)


class QuadHead(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = nn.Parameter(torch.tensor(v, dtype=torch.float64))

    def forward(self, z):
        return z, self.v


def quad_problem(kappa=0.0):
    """L_i = 1/2 th^T H_i th + b_i^T th + 1/2 v_i^T A_i v_i + c_i^T v_i + kappa sum th^3: known Hessians."""
    rng = np.random.default_rng(0)
    mats = []
    for _ in range(2):
        M = rng.normal(size=(3, 3))
        N = rng.normal(size=(2, 2))
        mats.append((torch.tensor(M @ M.T + np.eye(3)), torch.tensor(rng.normal(size=3)),
                     torch.tensor(N @ N.T + np.eye(2)), torch.tensor(rng.normal(size=2))))
    model = MTLModel(QuadEncoder([0.3, -0.2, 0.5]), [QuadHead([0.1, 0.4]), QuadHead([-0.3, 0.2])], ["a", "b"])

    def loss_fn(outs, ys):
        out = []
        for (z, v), (H, b, A, c) in zip(outs, mats):
            th = z[0]
            out.append(0.5 * th @ H @ th + b @ th + 0.5 * v @ A @ v + c @ v + kappa * (th ** 3).sum())
        return torch.stack(out)

    return model, loss_fn, mats


def mgda2(g1, g2):
    """Closed-form min-norm point of the segment [g1, g2] (2-task MGDA, Sener & Koltun Alg. 1)."""
    diff = float((g1 - g2) @ (g1 - g2))
    if diff == 0:
        return g1.clone()
    a = float(((g2 - g1) @ g2) / diff)
    a = min(max(a, 0.0), 1.0)
    return a * g1 + (1 - a) * g2


def fake_grads(G_loss, G_flat, losses=(1.0, 2.0), sharp=(0.1, 0.2)):
    G_loss, G_flat = torch.tensor(G_loss, dtype=torch.float32), torch.tensor(G_flat, dtype=torch.float32)
    L = torch.tensor(losses)
    T = len(L)
    return SAMGrads(L, L + torch.tensor(sharp), G_loss, G_loss + G_flat, [[]] * T, [[]] * T, torch.zeros(T), torch.zeros(T))


# --------------------------------------------------------------------------------------------
# Algorithm 1, lines 1-6
# --------------------------------------------------------------------------------------------
def test_perturbation_norms_and_directions():
    g = torch.tensor([3.0, -4.0, 0.0])
    e = perturbation(g, None, 0.5)
    assert torch.allclose(e, torch.tensor([0.3, -0.4, 0.0]))  # rho g / ||g|| (Eq. 7 / 11)
    assert perturbation(torch.zeros(3), None, 0.5).abs().sum() == 0  # zero gradient: no perturbation
    assert perturbation(g, None, 0.0).abs().sum() == 0
    w = torch.tensor([2.0, 0.5, -1.0])
    ea = perturbation(g, w, 2.0, adaptive=True)  # ASAM: ||e / |w| || = rho, e = rho w^2 g / ||w g||
    assert torch.allclose((ea / w.abs()).norm(), torch.tensor(2.0))
    assert torch.allclose(ea, 2.0 * w ** 2 * g / (w.abs() * g).norm())


def test_sam_gradients_perturbation_norms_shared_and_heads():
    model = lenet_mtl()
    x, ys = lenet_batch()
    g = sam_gradients(model, *model_parts(model), x, ys, ce_losses, rho_sh=0.07, rho_ns=0.3)
    assert torch.allclose(g.eps_sh_norm, torch.full((2,), 0.07), atol=1e-6)
    assert torch.allclose(g.eps_ns_norm, torch.full((2,), 0.3), atol=1e-6)
    assert g.G_loss.shape == g.G_sam.shape == (2, sum(p.numel() for p in model.shared_parameters()))
    assert (g.G_flat.norm(dim=1) > 0).all() and torch.isfinite(g.sharpness).all()


def test_restore_is_bit_identical_and_bn_moves_once():
    torch.manual_seed(0)
    model = MTLModel(BNNet(), [nn.Linear(8, 3), nn.Linear(8, 3)], ["a", "b"])
    x, ys = torch.randn(6, 1, 28, 28), [torch.randint(0, 3, (6,)) for _ in range(2)]
    ref = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    ref.train()
    ref(x)  # one plain forward: BatchNorm statistics move once
    rng_ref = torch.get_rng_state()
    torch.manual_seed(5)
    model.train()
    sam_gradients(model, *model_parts(model), x, ys, ce_losses, rho_sh=0.5, rho_ns=0.5, adaptive=True)
    assert torch.equal(torch.get_rng_state(), rng_ref)  # the perturbed passes leave the RNG where one forward would
    for (k, v), (_, r) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(v, r), k  # parameters bit-identical; BN running stats = after one forward
    for k, p in model.named_parameters():
        assert torch.equal(p, before[k]), k


def test_flat_gradient_on_quadratic_is_rho_H_g_over_norm():
    model, loss_fn, mats = quad_problem()
    x = torch.zeros(1, 1)
    rho_sh, rho_ns = 0.2, 0.1
    g = sam_gradients(model, *model_parts(model), x, None, loss_fn, rho_sh, rho_ns)
    th = model.encoder.theta.detach()
    for i, (H, b, A, c) in enumerate(mats):
        gi = H @ th + b
        assert torch.allclose(g.G_loss[i], gi)
        assert torch.allclose(g.G_flat[i], rho_sh * H @ gi / gi.norm(), atol=1e-10)  # Eq. 15 = rho H g/||g||
        v = model.heads[i].v.detach()
        gv = A @ v + c
        assert torch.allclose(g.head_sam[i][0], gv + rho_ns * A @ gv / gv.norm(), atol=1e-10)  # Eq. 14
        # Eq. 12-13: L(theta + eps) - L(theta) = rho_sh ||g_sh|| + rho_ns ||g_ns|| + O(rho^2)
        second = 0.5 * rho_sh ** 2 * gi @ H @ gi / gi.norm() ** 2 + 0.5 * rho_ns ** 2 * gv @ A @ gv / gv.norm() ** 2
        assert torch.allclose(g.sharpness[i], rho_sh * gi.norm() + rho_ns * gv.norm() + second, atol=1e-10)


def test_flat_gradient_first_order_on_non_quadratic():
    model, loss_fn, mats = quad_problem(kappa=0.7)
    x = torch.zeros(1, 1)
    th = model.encoder.theta.detach()
    errs = []
    for rho in (1e-1, 1e-2):
        g = sam_gradients(model, *model_parts(model), x, None, loss_fn, rho, rho)
        H, b = mats[0][0], mats[0][1]
        Hfull = H + torch.diag(6 * 0.7 * th)
        gi = H @ th + b + 3 * 0.7 * th ** 2
        errs.append(float((g.G_flat[0] - rho * Hfull @ gi / gi.norm()).norm()))
    assert errs[0] > 0 and errs[1] / errs[0] < 0.02  # the error is O(rho^2): first-order match


def test_f_ls_is_one_sam_perturbation_of_the_summed_loss_on_a_quadratic():
    # Table 7 F-LS: L = L_a + L_b on theta = [th (shared), v_a, v_b (heads)]; g = grad L, one eps =
    # rho g / ||g|| over all seven coordinates; the update is grad L at theta + eps, by hand
    model, loss_fn, mats = quad_problem()
    rho = 0.3
    g = sam_gradients(model, *model_parts(model), torch.zeros(1, 1), None, loss_fn, rho, rho, joint=True)
    th = model.encoder.theta.detach()
    vs = [h.v.detach() for h in model.heads]
    (Ha, ba, Aa, ca), (Hb, bb, Ab, cb) = mats
    g_th = (Ha + Hb) @ th + ba + bb
    g_v = [Aa @ vs[0] + ca, Ab @ vs[1] + cb]
    gall = torch.cat([g_th] + g_v)
    eps = rho * gall / gall.norm()
    e_th, e_a, e_b = eps[:3], eps[3:5], eps[5:]
    assert torch.allclose(g.G_sam.sum(0), (Ha + Hb) @ (th + e_th) + ba + bb, atol=1e-12)
    assert torch.allclose(g.head_sam[0][0], Aa @ (vs[0] + e_a) + ca, atol=1e-12)
    assert torch.allclose(g.head_sam[1][0], Ab @ (vs[1] + e_b) + cb, atol=1e-12)
    # one ball of radius rho over all parameters (Algorithm 1 has one per task and part: rho sqrt 2)
    total = (g.eps_sh_norm[0] ** 2 + (g.eps_ns_norm ** 2).sum()).sqrt()
    assert torch.allclose(total, torch.tensor(rho, dtype=total.dtype), atol=1e-12)
    assert torch.allclose(g.eps_sh_norm, torch.full((2,), float(e_th.norm()), dtype=torch.float64))
    # the perturbed losses are those at theta + eps, the model is restored
    La = 0.5 * (th + e_th) @ Ha @ (th + e_th) + ba @ (th + e_th) + 0.5 * (vs[0] + e_a) @ Aa @ (vs[0] + e_a) + ca @ (vs[0] + e_a)
    assert torch.allclose(g.perturbed[0], La, atol=1e-12)
    assert torch.equal(model.encoder.theta.detach(), th)
    # per-task Algorithm 1 with LS gives a different update (two perturbations)
    gi = sam_gradients(model, *model_parts(model), torch.zeros(1, 1), None, loss_fn, rho, rho)
    assert (gi.G_sam.sum(0) - g.G_sam.sum(0)).norm() > 1e-3


def test_f_stl_perturbs_shared_and_head_with_one_radius():
    torch.manual_seed(0)
    model = MTLModel(LeNetEncoder(1), [lenet_head(10)], ["t0"])
    x, ys = lenet_batch(T=1)
    g = sam_gradients(model, *model_parts(model), x, ys, ce_losses, 0.2, 0.2, joint=True)
    assert torch.allclose((g.eps_sh_norm ** 2 + g.eps_ns_norm ** 2).sqrt(), torch.tensor([0.2]), atol=1e-6)
    assert (g.eps_sh_norm > 0).all() and (g.eps_ns_norm > 0).all()


@pytest.mark.parametrize("rule", ["pcgrad", "mgda", "cagrad", "imtl", "ls"])
def test_rho_zero_equals_plain_aggregator(rule):
    x, ys = lenet_batch()
    plain, sam = lenet_mtl(), lenet_mtl()
    torch.manual_seed(3)
    plain.train()
    RuleStep.for_model(make_aggregator(rule, 2), plain, max_norm=0).backward(ce_losses(plain(x), ys))
    torch.manual_seed(3)
    sam.train()  # LeNet has dropout: the perturbed passes must replay the same masks
    g = sam_gradients(sam, *model_parts(sam), x, ys, ce_losses, 0.0, 0.0)
    assert torch.equal(g.G_flat, torch.zeros_like(g.G_flat))
    d, parts, _ = combine("individual", make_aggregators(rule, 2, "individual"), g)
    sam_mtl.apply_gradients(*model_parts(sam), d, g)
    for p, q in zip(plain.shared_parameters(), sam.shared_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5)
    if rule == "pcgrad":  # unweighted heads in both: identical
        for p, q in zip(plain.all_task_parameters(), sam.all_task_parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Algorithm 1, lines 7-8, and the ablations of Tables 5-6
# --------------------------------------------------------------------------------------------
G_LOSS = [[1.0, 0.0], [0.0, 1.0]]
G_FLAT = [[1.0, 0.0], [0.5, -0.5]]


def test_individual_vs_direct_mgda_hand_computed():
    g = fake_grads(G_LOSS, G_FLAT)
    gl, gf = torch.tensor(G_LOSS), torch.tensor(G_FLAT)
    d_ind, parts, _ = combine("individual", make_aggregators("mgda", 2, "individual"), g)
    expect_ind = mgda2(gl[0], gl[1]) + mgda2(gf[0], gf[1])  # Agg(g^loss) + Agg(g^flat)
    d_dir, _, _ = combine("direct", make_aggregators("mgda", 2, "direct"), g)
    expect_dir = mgda2(gl[0] + gf[0], gl[1] + gf[1])  # Agg(g^SAM)
    assert torch.allclose(d_ind, expect_ind, atol=1e-3) and torch.allclose(d_dir, expect_dir, atol=1e-3)
    assert torch.allclose(parts["loss"], torch.tensor([0.5, 0.5]), atol=1e-3)
    assert (d_ind - d_dir).norm() > 0.1  # a non-linear rule: the two strategies differ
    d_ls_ind, _, _ = combine("individual", make_aggregators("ls", 2, "individual"), g)
    d_ls_dir, _, _ = combine("direct", make_aggregators("ls", 2, "direct"), g)
    assert torch.allclose(d_ls_ind, d_ls_dir, atol=1e-6)  # linear scalarisation: identical (F-LS)


def test_second_and_each_aggregation_mgda_hand_computed():
    g = fake_grads(G_LOSS, G_FLAT)
    gl, gf = torch.tensor(G_LOSS), torch.tensor(G_FLAT)
    d2, _, _ = combine("second-aggre", make_aggregators("mgda", 2, "second-aggre"), g)
    assert torch.allclose(d2, mgda2(mgda2(gl[0], gl[1]), mgda2(gf[0], gf[1])), atol=1e-3)
    de, _, used = combine("each-aggre", make_aggregators("mgda", 2, "each-aggre"), g)
    rows = [mgda2(gl[i], gf[i]) for i in range(2)]
    assert torch.allclose(de, mgda2(rows[0], rows[1]), atol=1e-3)
    assert len(used) == 3  # m + 1 aggregations


@pytest.fixture(scope="module")
def lenet_sam_grads():
    model = lenet_mtl()
    x, ys = lenet_batch()
    return sam_gradients(model, *model_parts(model), x, ys, ce_losses, 0.05, 0.05)


@pytest.mark.parametrize("rule", sorted(AGGREGATORS))
def test_every_rule_works_in_every_mode(rule, lenet_sam_grads):
    g = lenet_sam_grads
    for mode in ("individual", "direct", "second-aggre", "each-aggre"):
        aggs = make_aggregators(rule, 2, mode)
        for _ in range(2):  # stateful rules (Nash-MTL warm start, GradNorm, DWA) called twice
            d, parts, used = combine(mode, aggs, g)
            assert d.shape == g.G_loss[0].shape and torch.isfinite(d).all() and d.norm() > 0, (rule, mode)
        if mode == "individual":
            assert torch.allclose(d, parts["loss"] + parts["flat"])  # line 8: g^loss + g^flat


def test_conflict_detection():
    assert conflict(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    assert not conflict(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert conflict(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]]))


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------
def run_main(tmp_path, name, *flags):
    out = tmp_path / name
    res = sam_mtl.main(["--out", str(out), "--data-root", DATA_ROOT, "--no-progress", "--quiet", "--batch-size", "64", *flags])
    return out, res


def check_outputs(out, T=2, metric="acc"):
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "conflict.png", "grad_norms.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["front"]) == 1 and len(m["tasks"]) == T
    for t in m["tasks"].values():
        assert np.isfinite(t[metric]) and np.isfinite(t["loss"])
        if metric == "acc":
            assert 0.0 <= t["acc"] <= 1.0
    assert all(0.0 <= v <= 1.0 for vs in m["conflict_fraction"].values() for v in vs)
    return m


def test_end_to_end_f_pcgrad_and_resume(tmp_path):
    out, _ = run_main(tmp_path, "pc", "--aggregator", "pcgrad", "--epochs", "1", "--max-steps", "2")
    m = check_outputs(out)
    assert m["steps"] == 2 and m["variant"] == "F-pcgrad" and m["rho_sh"] == 0.05 and m["model"] == "lenet"
    assert 0.0 < m["hypervolume"] <= 1.0
    _, res = run_main(tmp_path, "pc", "--aggregator", "pcgrad", "--epochs", "2", "--max-steps", "3", "--resume")
    assert res["steps"] == 3
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_end_to_end_f_mgda_direct(tmp_path):
    out, res = run_main(tmp_path, "mgda", "--aggregator", "mgda", "--mode", "direct", "--max-steps", "2", "--rho", "0.1", "--adaptive")
    check_outputs(out)
    assert res["variant"] == "F-mgda (direct)" and res["adaptive"] is True and res["rho_ns"] == 0.1


def test_end_to_end_f_stl_and_each_aggre_on_toy(tmp_path):
    out, res = run_main(tmp_path, "stl", "--dataset", "toy", "--mode", "stl", "--max-steps", "3")
    check_outputs(out, metric="loss")
    assert res["aggregator"] is None and res["parameters"] == 2 * 2  # one theta in R^2 per task
    out, res = run_main(tmp_path, "each", "--dataset", "toy", "--aggregator", "uw", "--mode", "each-aggre", "--max-steps", "3")
    check_outputs(out, metric="loss")
    # losses: the suite's one hypervolume rule, reference 1 per loss (common.metrics.HV_REFERENCE["toy"])
    losses = [[res["tasks"][t]["loss"] for t in ("l1", "l2")]]
    assert res["mode"] == "each-aggre" and res["hypervolume"] == pytest.approx(hypervolume(losses, [1.0, 1.0]))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)["state"]["tracked"]  # the rules' state_dicts: loss, each[0], each[1]
    rules = [ck["rule0"]["rule"], ck["each0"], ck["each1"]]
    assert all((a["log_vars"] != 0).any() for a in rules)  # UW's s is trained
    out, res = run_main(tmp_path, "famo", "--dataset", "toy", "--aggregator", "famo", "--max-steps", "3")
    ck = torch.load(out / "checkpoint.pt", weights_only=True)["state"]["tracked"]
    assert (ck["rule0"]["rule"]["logits"] != 0).any()  # FAMO's logits move after each step (post_step)


def test_end_to_end_f_ls_is_the_default_mode_of_ls(tmp_path):
    out, res = run_main(tmp_path, "fls", "--aggregator", "ls", "--max-steps", "2", "--rho", "0.1")
    check_outputs(out)
    assert res["mode"] == "ls" and res["variant"] == "F-LS" and res["rho_sh"] == res["rho_ns"] == 0.1
    _, res = run_main(tmp_path, "fls2", "--aggregator", "ls", "--mode", "individual", "--max-steps", "1")
    assert res["variant"] == "F-ls (individual)"
    for bad in (["--mode", "ls", "--aggregator", "pcgrad"], ["--mode", "ls", "--rho-sh", "0.1", "--rho-ns", "0.2"],
                ["--mode", "stl", "--aggregator", "mgda"]):
        with pytest.raises(UsageError):
            run_main(tmp_path, "bad", *bad)
    assert not (tmp_path / "bad").exists()


def test_bad_flag_exits_2_with_one_line(tmp_path):
    out = tmp_path / "bad"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "sam_mtl.py"), "--rho-sh", "-1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--rho-sh" in r.stderr
    assert not out.exists()  # rejected before --out is touched


def adult_row(i, test=False):
    """One line of the UCI Adult CSV (15 comma-separated fields; test labels end with '.')."""
    edu = ["Bachelors", "HS-grad", "Some-college", "Masters", "11th", "Doctorate"][i % 6]
    fields = [20 + (i * 7) % 50, ["Private", "State-gov", "?"][i % 3], 10000 + 37 * i, edu, 9 + i % 7,
              ["Never-married", "Divorced"][i % 2], "Sales", "Husband", "White", ["Male", "Female"][i % 2],
              100 * (i % 3), 0, 30 + i % 20, "United-States", (">50K" if i % 4 == 0 else "<=50K") + ("." if test else "")]
    return ", ".join(str(f) for f in fields)


def test_tiny_census_real_format_with_nashmtl(tmp_path):
    """The real-format loader path: UCI Adult files written in tmp_path (MLP backbone, cheap); a
    stateful rule with its official clipping (Nash-MTL, max_norm 1)."""
    folder = tmp_path / "census"
    folder.mkdir()
    (folder / "adult.data").write_text("\n".join(adult_row(i) for i in range(40)) + "\n")
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(adult_row(i, True) for i in range(10)) + "\n")
    out = tmp_path / "census_run"
    res = sam_mtl.main(["--dataset", "census", "--data-root", str(tmp_path), "--aggregator", "nashmtl", "--batch-size", "8",
                        "--epochs", "2", "--max-steps", "6", "--out", str(out), "--no-progress", "--quiet"])
    assert set(res["tasks"]) == {"age", "education"} and res["clip_grad"] == 1.0 and res["steps"] == 6
    assert res["model"] == "mlp" and np.isfinite(res["hypervolume"])
    check_outputs(out)


def test_celeba_tiny_files_write_metrics_json_with_40_objective_hypervolume(tmp_path, monkeypatch):
    """40 binary attributes: the single-point hypervolume is the product of the 40 F1 scores (it used
    to raise after the whole training and lose the run); a report step that fails is recorded, not fatal."""
    from common.metrics import hypervolume
    from reproduce.tiny_data import make_celeba

    make_celeba(str(tmp_path / "data"))

    def broken_plot(*a, **k):
        raise RuntimeError("no display")

    monkeypatch.setattr(sam_mtl, "plot_training", broken_plot)
    out = tmp_path / "celeba"
    res = sam_mtl.main(["--dataset", "celeba", "--data-root", str(tmp_path / "data"), "--model", "celeba_cnn",
                        "--aggregator", "ls", "--batch-size", "8", "--max-steps", "1", "--out", str(out),
                        "--no-progress", "--quiet"])
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["tasks"]) == 40 and m["tasks"] == res["tasks"]
    f1 = [m["tasks"][t]["f1"] for t in m["tasks"]]
    assert m["hypervolume"] == pytest.approx(float(np.prod(f1)))
    if min(f1) == 0:
        assert m["hypervolume"] == 0 and "at the reference point" in m["hypervolume_note"]
    assert hypervolume([[0.5] * 40], [0.0] * 40, maximize=True) == pytest.approx(0.5 ** 40)
    assert m["finish_errors"] == ["plots: RuntimeError: no display"] and m["plots"] == []


def test_help_prints_the_defaults_table_and_config_records_the_resolved_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sam_mtl.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "every dataset: rho_sh=0.05, rho_ns=0.05, adaptive=False, unit_gradients=False, average_last=1, eval_every=1" in text
    assert "  toy                  epochs 50, batch 1, Adam lr 0.002, no schedule, select last\n" in text
    assert ("  nyuv2                epochs 200, batch 2, Adam lr 0.0001, StepLR(step 100, gamma 0.5), select last, augment; "
            "model=mtan, rho_sh=2, rho_ns=2, adaptive=True, average_last=10, unit_gradients=on for F-MGDA") in text
    assert "--aggregator  pcgrad; ls with --mode ls, none with --mode stl" in text  # the flags settled before the table
    out, _ = run_main(tmp_path, "cfg", "--dataset", "toy", "--aggregator", "mgda", "--max-steps", "1")
    args = json.loads((out / "config.json").read_text())["args"]
    assert {k: args[k] for k in ("epochs", "lr", "select", "mode", "rho_sh", "rho_ns", "adaptive", "unit_gradients",
                                 "average_last", "eval_every")} == \
        {"epochs": 50, "lr": 0.002, "select": "last", "mode": "individual", "rho_sh": 0.05, "rho_ns": 0.05,
         "adaptive": False, "unit_gradients": False, "average_last": 1, "eval_every": 1}


@pytest.mark.parametrize("flags,radii", [([], (0.05, 0.05)), (["--dataset", "celeba"], (2.0, 2.0)),
                                         (["--rho", "0.3"], (0.3, 0.3)), (["--rho", "0.3", "--rho-ns", "0.1"], (0.3, 0.1)),
                                         (["--mode", "stl", "--rho-ns", "0.2"], (0.2, 0.2)),
                                         (["--aggregator", "ls", "--rho-sh", "0.4"], (0.4, 0.4)),
                                         (["--rho-sh", "0.4"], (0.4, 0.05))])
def test_radii_from_rho_the_mode_and_the_table(tmp_path, flags, radii):
    from common.train import Run

    args = sam_mtl.parse_args(flags + ["--out", str(tmp_path / "o"), "--quiet", "--no-progress"])
    sam_mtl.validate_method_args(args)
    Run(args, "sam_mtl", sam_mtl.DEFAULTS, load_data=False)
    assert (args.rho_sh, args.rho_ns) == radii


@pytest.mark.parametrize("flags", [["--aggregator", "dwa", "--mode", "second-aggre", "--average-last", "2"],
                                   ["--mode", "stl", "--select", "best"]])
def test_resume_equals_an_uninterrupted_run(tmp_path, flags):
    """DWA's loss histories (loss, flat and second sub-problems), F-STL's per-task best models and the
    averaged last epochs all come back from the checkpoint; a --resume with more --epochs moves the
    averaging window to the new last epochs."""
    common = ["--dataset", "toy", "--batch-size", "500", *flags]  # 2 steps per epoch
    _, a = run_main(tmp_path, "a", *common, "--epochs", "3")
    run_main(tmp_path, "b", *common, "--epochs", "2")
    _, b = run_main(tmp_path, "b", *common, "--epochs", "3", "--resume")
    assert b["steps"] == a["steps"] == 6 and b["tasks"] == a["tasks"]
    assert b["test_epochs_averaged"] == a["test_epochs_averaged"] == ([2, 3] if "--average-last" in flags else None)
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(tmp_path / d / "log.csv"))] for d in "ab"]
    assert rows[0] == rows[1]
