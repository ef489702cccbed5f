"""methods/pfl.py: COSMOS conditioning and penalty, the PHN hypernetwork, the EPO LP, end to end."""
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "methods"))
sys.path.insert(0, ROOT)

import pfl  # noqa: E402
from common.data import load_dataset, task  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.models import build_model  # noqa: E402


# ---------------------------------------------------------------------------------------------
# COSMOS
# ---------------------------------------------------------------------------------------------
TASKS = [task("left", "class", 10), task("right", "class", 10)]


def _data(shape, model):
    return SimpleNamespace(input_shape=shape, tasks=TASKS, num_tasks=2, default_model=model)


def _lenet(K=2):
    return build_model("lenet", _data((1 + K, 28, 28), "lenet"))


def test_cosmos_constant_channels_hold_the_preference():
    m = pfl.COSMOSModel(_lenet(), 2, (1, 28, 28), "constant")
    m.set_ray([0.3, 0.7])
    x = torch.randn(4, 1, 28, 28)
    z = m.condition(x)
    assert z.shape == (4, 3, 28, 28)
    assert torch.equal(z[:, :1], x)
    assert torch.allclose(z[:, 1], torch.full((4, 28, 28), 0.3)) and torch.allclose(z[:, 2], torch.full((4, 28, 28), 0.7))
    out = m(x)
    assert [o.shape for o in out] == [(4, 10), (4, 10)]


def test_cosmos_upsampler_shapes_and_dependence_on_the_ray():
    torch.manual_seed(0)
    m = pfl.COSMOSModel(_lenet(), 2, (1, 28, 28), "upsample")
    x = torch.randn(3, 1, 28, 28)
    m.set_ray([0.9, 0.1])
    a = m.condition(x)
    m.set_ray([0.1, 0.9])
    b = m.condition(x)
    assert a.shape == b.shape == (3, 3, 28, 28)
    assert torch.equal(a[:, :1], x) and not torch.allclose(a[:, 1:], b[:, 1:])
    assert torch.equal(a[0, 1:], a[2, 1:])  # one preference for the whole batch
    # official layout: 1x1 -> 4x4 -> 10x10 before the resize; no bias, so r = 0 gives zero channels
    m.set_ray([0.0, 0.0])
    assert torch.count_nonzero(m.condition(x)[:, 1:]) == 0


def test_cosmos_tabular_appends_the_preference():
    backbone = build_model("mlp", _data((7,), "mlp"))
    m = pfl.COSMOSModel(backbone, 2, (5,), "upsample")
    m.set_ray([0.25, 0.75])
    z = m.condition(torch.ones(6, 5))
    assert z.shape == (6, 7) and torch.allclose(z[:, 5:], torch.tensor([[0.25, 0.75]]).expand(6, 2))
    assert m.upsampler is None


def test_cosmos_loss_on_hand_values():
    L = torch.tensor([1.0, 2.0])
    r = torch.tensor([0.5, 0.5])
    loss, cos = pfl.cosmos_loss(L, r, lamda=2.0)
    assert math.isclose(float(cos), 1.5 / (math.sqrt(5) * math.sqrt(0.5)), rel_tol=1e-6)  # 0.948683
    assert math.isclose(float(loss), 1.5 - 2.0 * 0.9486833, rel_tol=1e-5)
    # lambda = 0 is linear scalarisation; a loss vector parallel to r has cosine 1
    assert math.isclose(float(pfl.cosmos_loss(L, r, 0.0)[0]), 1.5, rel_tol=1e-7)
    assert math.isclose(float(pfl.cosmos_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.25, 0.75]), 1.0)[1]), 1.0, rel_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# PHN
# ---------------------------------------------------------------------------------------------
def test_hypernetwork_generates_exactly_the_target_shapes_and_forward_matches():
    torch.manual_seed(0)
    data = load_dataset("multimnist-lite", os.path.join(ROOT, "data"))
    target = build_model("lenet", data)
    hnet = pfl.HyperNetwork(target, 2, hidden=16)
    w = hnet(torch.tensor([0.4, 0.6]))
    assert list(w) == [n for n, _ in target.named_parameters()]
    assert all(w[n].shape == p.shape for n, p in target.named_parameters())
    assert pfl.HyperNetwork.size(target, 2, 16) == sum(p.numel() for p in hnet.parameters())
    x = data.test[0][0].unsqueeze(0).repeat(3, 1, 1, 1)
    plain = build_model("lenet", data)
    plain.load_state_dict({n: v.detach() for n, v in w.items()})
    target.eval(), plain.eval()
    for a, b in zip(pfl.target_forward(target, w, x), plain(x)):
        assert torch.allclose(a, b, atol=1e-6)
    # gradients reach the hypernetwork through the generated weights, and depend on the ray
    sum(o.sum() for o in pfl.target_forward(target, w, x)).backward()
    assert all(p.grad is not None for p in hnet.heads.parameters())
    w2 = hnet(torch.tensor([0.9, 0.1]))
    assert not torch.allclose(w["encoder.conv1.weight"], w2["encoder.conv1.weight"])


def test_phn_refuses_an_oversized_hypernetwork(tmp_path):
    with pytest.raises(UsageError, match="hypernetwork"):
        pfl.main(["--method", "phn-ls", "--max-hyper-params", "1000", "--out", str(tmp_path / "r"), "--no-progress", "--quiet"])
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# EPO
# ---------------------------------------------------------------------------------------------
def test_epo_adjustments_by_hand():
    rl, mu, a = pfl.epo_adjustments(np.array([2.0, 1.0]), np.array([1.0, 1.0]))
    lh = np.array([2 / 3, 1 / 3])
    mu_hand = float(np.sum(lh * np.log(2 * lh)))  # KL(l_hat || 1/2) = 0.05663
    assert math.isclose(mu, mu_hand, rel_tol=1e-12) and math.isclose(mu, 0.0566330, rel_tol=1e-5)
    assert np.allclose(a, np.log(2 * lh) - mu_hand)
    assert np.allclose(rl, [2.0, 1.0])


def test_epo_balance_step_with_orthogonal_gradients_descends_the_worse_task():
    # l = (2, 1), r = (1, 1), C = I: C a = a = (0.2311, -0.4621); the constraint of task 1 (j* = argmax r l)
    # is beta_1 >= 0, task 2's is beta_2 >= -0.4621; max beta^T a on the simplex -> beta = (1, 0)
    beta, move = pfl.epo_weights([2.0, 1.0], np.eye(2), [1.0, 1.0])
    assert move == "balance" and np.allclose(beta, [1.0, 0.0], atol=1e-9)


def test_epo_balance_step_with_conflicting_gradients_by_hand():
    # C = [[1, -.8], [-.8, 1]], a as above: C a = (a1 - .8 a2, -.8 a1 + a2) = (0.6008, -0.6470).
    # Constraints: (C beta)_1 = b1 - .8 b2 >= 0 (j*), (C beta)_2 = -.8 b1 + b2 >= (C a)_2.
    # The objective decreases in b2, so b2 is the smallest value that satisfies the second:
    # -.8 (1 - b2) + b2 = (C a)_2  ->  b2 = ((C a)_2 + .8) / 1.8 = 0.0850
    C = np.array([[1.0, -0.8], [-0.8, 1.0]])
    _, _, a = pfl.epo_adjustments(np.array([2.0, 1.0]), np.array([1.0, 1.0]))
    Ca = C @ a
    b2 = (Ca[1] + 0.8) / 1.8
    beta, move = pfl.epo_weights([2.0, 1.0], C, [1.0, 1.0])
    assert move == "balance"
    assert np.allclose(beta, [1 - b2, b2], atol=1e-7) and math.isclose(b2, 0.08499, abs_tol=1e-4)


def test_epo_descent_step_on_the_ray_by_hand():
    # l = (1, 1) on the ray r = (1, 1): mu = 0, a = 0 -> descent: max beta^T C 1 = 4 b1 + b2 -> (1, 0)
    beta, move = pfl.epo_weights([1.0, 1.0], np.diag([4.0, 1.0]), [1.0, 1.0])
    assert move == "descent" and np.allclose(beta, [1.0, 0.0], atol=1e-9)
    # with a gradient pair in conflict the restriction C beta >= 0 binds: C = [[1, -2], [-2, 5]]:
    # b1 - 2 b2 >= 0 and -2 b1 + 5 b2 >= 0 -> b2 in [2/7, 1/3]; objective (C 1) = (-1, 3) -> b2 = 1/3
    beta, _ = pfl.epo_weights([1.0, 1.0], np.array([[1.0, -2.0], [-2.0, 5.0]]), [1.0, 1.0])
    assert np.allclose(beta, [2 / 3, 1 / 3], atol=1e-8)


def test_epo_refuses_negative_losses():
    with pytest.raises(ValueError, match="epo-offset"):  # the method half: no harness, a plain ValueError
        pfl.epo_weights([-1.0, 2.0], np.eye(2), [0.5, 0.5])


def test_phn_epo_weights_from_the_jacobian_with_an_offset():
    # G G^T = [[1, -.8], [-.8, 1]] (the conflicting pair above) and l + offset = (1.5, .5) + .5 = (2, 1):
    # the same LP as above, and the update weights are K beta
    G = torch.tensor([[1.0, 0.0], [-0.8, 0.6]], dtype=torch.float64)
    w, move, fell_back = pfl.phn_epo_weights(G, torch.tensor([1.5, 0.5]), torch.tensor([1.0, 1.0]), offset=0.5)
    beta, _ = pfl.epo_weights([2.0, 1.0], G.numpy() @ G.numpy().T, [1.0, 1.0])
    assert move == "balance" and not fell_back and w.dtype == G.dtype
    assert np.allclose(w.numpy(), 2 * beta, atol=1e-9)


def test_phn_epo_negative_losses_are_a_usage_error_of_the_runner(tmp_path):
    # the method half raises ValueError; the runner turns it into one line and exit status 2
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "pfl.py"), "--dataset", "toy", "--method", "phn-epo",
                        "--epo-offset", "-100", "--max-steps", "1", "--out", str(tmp_path / "x"), "--no-progress", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "non-negative task losses" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------
def _run(tmp_path, name, *flags):
    out = tmp_path / name
    res = pfl.main(list(flags) + ["--out", str(out), "--no-progress", "--quiet"])
    return out, res


@pytest.mark.parametrize("method", ["cosmos", "phn-ls", "phn-epo"])
def test_end_to_end_multimnist_lite(tmp_path, method):
    out, res = _run(tmp_path, method, "--method", method, "--max-steps", "3", "--eval-batches", "1", "--grid-points", "3")
    m = json.load(open(out / "metrics.json"))
    assert m["method"] == method and len(m["front"]) == 3
    assert [f["preference"] for f in m["front"]][1] == [0.5, 0.5]
    assert 0 <= m["hypervolume"] <= 1 and math.isfinite(m["hypervolume"])
    assert m["tasks"] == m["front"][1]["tasks"]  # the centre preference
    assert (out / "front.png").stat().st_size > 0 and (out / "checkpoint.pt").exists()
    p = m["parameters"]
    if method == "cosmos":
        assert p["conditioning"] == 2 * 2 * 16 + 2 * 2 * 36  # two bias-free transposed convolutions
        # LeNet 27,450 + 2 preference channels in conv1 (2 x 10 x 5 x 5) + the upsampler
        assert p["base_model"] == 27450 and p["trainable"] == 27450 + 500 + 208
        assert math.isclose(m["delta_p_percent"], 100 * 708 / 27450)
    else:
        assert p["target"] == 27450 and p["hypernetwork"] > 100 * p["target"]  # the PML paper's point
    if method == "phn-epo":
        assert sum(m["epo_moves"][k] for k in ("balance", "descent")) == 3


@pytest.mark.parametrize("method", ["cosmos", "phn-ls"])
def test_toy_front_spreads_along_the_preferences(tmp_path, method):
    out, res = _run(tmp_path, method, "--method", method, "--dataset", "toy", "--epochs", "1", "--max-steps", "400",
                    "--grid-points", "5")
    L = np.array([[f["tasks"]["l1"]["loss"], f["tasks"]["l2"]["loss"]] for f in res["front"]])
    # r_1 decreases along the grid, so l_1 must increase and l_2 decrease (a preference-aligned front)
    assert L[-1, 0] - L[0, 0] > 1.0 and L[0, 1] - L[-1, 1] > 1.0, L
    assert res["spearman_alignment"]["l1"] < -0.5  # more weight on l_1, lower l_1


def test_resume_equals_an_uninterrupted_run(tmp_path):
    flags = ["--method", "cosmos", "--batch-size", "1024", "--eval-batches", "1", "--grid-points", "3"]
    _, full = _run(tmp_path, "full", *flags, "--epochs", "2")
    _run(tmp_path, "part", *flags, "--epochs", "1")
    _, resumed = _run(tmp_path, "part", *flags, "--epochs", "2", "--resume")
    assert resumed["front"] == full["front"]


def test_setting_two_and_scheduler_defaults(tmp_path):
    out, _ = _run(tmp_path, "s2", "--method", "cosmos", "--setting", "2", "--max-steps", "1", "--eval-batches", "1",
                  "--grid-points", "2")
    cfg = json.load(open(out / "config.json"))
    assert cfg["args"]["epochs"] == 100 and cfg["defaults_used"]["scheduler"] == ["multistep", [20, 40, 80, 90], 0.1]
    assert pfl.method_defaults("phn-epo", 2)["*"]["epochs"] == 150 and pfl.method_defaults("phn-epo", 2)["*"]["scheduler"] is None


def test_bad_flag_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "pfl.py"), "--alpha", "-1", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--alpha" in r.stderr
    assert not (tmp_path / "x").exists()


def test_help_prints_each_familys_table_and_config_records_the_resolved_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pfl.parse_args(["--help"])
    text = capsys.readouterr().out
    cosmos, phn = text.split("COSMOS (--method cosmos), setting I")[1].split("PHN (--method phn-ls, phn-epo), setting I")
    row = lambda table, ds: next(ln for ln in table.splitlines() if ln.strip().startswith(ds + " "))  # noqa: E731
    assert "every dataset: alpha=1.2, lamda=2, eval_every=1" in cosmos
    assert "lamda=0.01" in row(cosmos, "census") and "alpha=0.5" in row(cosmos, "census")
    assert "epochs 30, batch 32, Adam lr 0.0005" in row(cosmos, "celeba") and "eval_every=5" in row(cosmos, "celeba")
    assert "every dataset: alpha=0.2, ray_hidden=100, eval_every=1, epo_offset=0" in phn
    assert "Adam lr 0.0001" in row(phn, "multimnist-lite") and "epo_offset=20" in row(phn, "toy")
    assert "--setting 2 changes" in text and "cosmos: epochs 100, MultiStepLR(milestones [20, 40, 80, 90], gamma 0.1)" in text
    # a run records what the table resolves to
    out, _ = _run(tmp_path, "epo", "--method", "phn-epo", "--dataset", "toy", "--max-steps", "2", "--grid-points", "2")
    cfg = json.load(open(out / "config.json"))
    assert cfg["args"]["epochs"] == 50 and cfg["args"]["lr"] == 2e-3 and cfg["args"]["alpha"] == 0.2
    assert cfg["resolved"]["epo_offset"] == 20.0 and cfg["resolved"]["ray_hidden"] == 100 and cfg["resolved"]["eval_every"] == 10
    assert cfg["resolved"]["lamda"] is None  # a COSMOS flag: PHN leaves it unset
    out, _ = _run(tmp_path, "cos", "--method", "cosmos", "--max-steps", "1", "--eval-batches", "1", "--grid-points", "2")
    cfg = json.load(open(out / "config.json"))
    assert cfg["resolved"]["alpha"] == 1.2 and cfg["resolved"]["lamda"] == 2.0 and cfg["resolved"]["ray_hidden"] is None


def test_select_best_restores_the_best_validation_front_across_a_resume(tmp_path):
    flags = ["--method", "cosmos", "--dataset", "toy", "--batch-size", "100", "--epochs", "3", "--eval-every", "1",
             "--grid-points", "3", "--hv-ref", "30,30", "--select", "best"]  # 10 steps per epoch, the front validated after each
    _, full = _run(tmp_path, "full", *flags)
    hv = [h["hypervolume"] for h in full["val_history"]]
    assert len(hv) == 3 and min(hv) > 0 and full["selected_epoch"] == int(np.argmax(hv))  # the front score: the validation hypervolume
    _run(tmp_path, "part", *flags, "--max-steps", "10")  # stopped after the first epoch
    _, resumed = _run(tmp_path, "part", *flags, "--resume")
    assert resumed["selected_epoch"] == full["selected_epoch"] and resumed["front"] == full["front"]
    assert resumed["val_history"] == full["val_history"]


def test_hv_ref_of_the_wrong_length_is_refused_before_out_is_touched(tmp_path):
    with pytest.raises(UsageError, match="--hv-ref needs 2 values"):
        pfl.main(["--method", "cosmos", "--hv-ref", "1,2,3", "--out", str(tmp_path / "o"), "--quiet"])
    assert not (tmp_path / "o").exists()
