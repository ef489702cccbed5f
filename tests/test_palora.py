"""PaLoRA (methods/palora.py): the adapter layers of Eq. 1 against hand computations, the parameter
count of section 4.2 and the paper's Delta_p%, the preference schedules of Eq. 2 and App. C, the
simplex lattice, gradient balancing, the front summaries, and end-to-end runs (multimnist-lite,
multimnist3-lite, tiny census and cityscapes files in the real layouts, --resume, Pareto expansion,
one-line errors with exit status 2)."""
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
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import palora  # noqa: E402
from common import models as common_models  # noqa: E402
from common.data import MTLData, TensorMTL, task  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.metrics import evaluation_grid, front_summary, simplex_grid  # noqa: E402
from common.models import build_model  # noqa: E402

torch.set_num_threads(1)
DATA = os.path.join(ROOT, "data")
# fast evaluation for the smoke runs: one batch of 128 per preference
FAST = ["--no-progress", "--quiet", "--eval-batches", "1", "--eval-batch-size", "128"]


def read_json(p):
    with open(p) as fh:
        return json.load(fh)


def randomise_adapters(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g))
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))


def wrap_one(layer, T=3, r=2, alpha=1.5):
    """A wrapped single layer (palora_wrap works on containers)."""
    holder = nn.Sequential(layer)
    palora.palora_wrap(holder, T, r, alpha)
    return holder, holder[0]


# ----------------------------------------------------------------------------------------------
# Eq. 1: the adapter layers
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_zero_adapters_equal_the_base_layer(kind):
    torch.manual_seed(0)
    base = nn.Linear(7, 5) if kind == "linear" else nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(3, 7) if kind == "linear" else torch.randn(2, 4, 9, 9)
    expected = base(x).detach()
    holder, layer = wrap_one(base)
    assert torch.count_nonzero(layer.lora_A) == 0 and torch.count_nonzero(layer.lora_B) > 0  # A = 0, B Kaiming
    for lam in ([1 / 3] * 3, [1.0, 0.0, 0.0], [0.2, -1.0, 3.0]):
        palora.set_preference(holder, lam)
        assert torch.equal(holder(x), expected)
    with torch.no_grad():  # all adapters zero (B too): still the base layer
        layer.lora_B.zero_()
    palora.set_preference(holder, [0.5, 0.3, 0.2])
    assert torch.equal(holder(x), expected)


def test_linear_matches_eq1_by_hand():
    torch.manual_seed(1)
    base = nn.Linear(7, 5)
    W, b = base.weight.detach().clone(), base.bias.detach().clone()
    holder, layer = wrap_one(base, T=3, r=2, alpha=1.5)
    randomise_adapters(layer)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()  # A_t: n x r (5 x 2), B_t: r x m (2 x 7)
    assert A.shape == (3, 5, 2) and B.shape == (3, 2, 7)
    x = torch.randn(4, 7)
    lam = torch.tensor([0.2, 0.5, 0.3])
    palora.set_preference(holder, lam)
    Wp = W + 1.5 / 2 * sum(lam[t] * A[t] @ B[t] for t in range(3))
    torch.testing.assert_close(holder(x), x @ Wp.T + b)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_at_a_vertex_only_that_tasks_adapter_contributes(kind):
    torch.manual_seed(2)
    base = nn.Linear(6, 4) if kind == "linear" else nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 6) if kind == "linear" else torch.randn(2, 3, 7, 7)
    W = base.weight.detach().clone()
    holder, layer = wrap_one(base, T=3, r=1, alpha=2.0)
    randomise_adapters(layer, seed=3)
    for t in range(3):
        palora.set_preference(holder, torch.eye(3)[t])
        out = holder(x).detach()
        delta = 2.0 / 1 * (layer.lora_A[t] @ layer.lora_B[t]).detach()
        Wt = W + delta.view_as(W)
        ref = F.linear(x, Wt, base.bias) if kind == "linear" else F.conv2d(x, Wt, base.bias, padding=1)
        torch.testing.assert_close(out, ref)
        with torch.no_grad():  # scrambling the other tasks' adapters changes nothing
            for s in range(3):
                if s != t:
                    layer.lora_A[s].normal_()
                    layer.lora_B[s].normal_()
        torch.testing.assert_close(holder(x).detach(), out)


def test_parameter_count_of_wrapped_layers():
    T, r = 3, 2
    # Linear W in R^{n x m}: mn + T r (m + n) (+ n bias)
    m, n = 7, 5
    _, lin = wrap_one(nn.Linear(m, n), T=T, r=r)
    assert sum(p.numel() for p in lin.parameters()) == m * n + n + T * r * (m + n)
    assert lin.adapter_parameter_count() == T * r * (m + n)
    # Conv2d out x in x k x k: the (out k) x (in k) matrix with rank r k adapters:
    # out in k^2 + T (r k)(out k + in k) = out in k^2 + T r k^2 (in + out) (+ out bias)
    cin, cout, k = 4, 6, 3
    _, conv = wrap_one(nn.Conv2d(cin, cout, k), T=T, r=r)
    assert sum(p.numel() for p in conv.parameters()) == cout * cin * k * k + cout + T * r * k * k * (cin + cout)
    _, conv1 = wrap_one(nn.Conv2d(cin, cout, 1, bias=False), T=T, r=r)  # 1x1: plain LoRA
    assert sum(p.numel() for p in conv1.parameters()) == cin * cout + T * r * (cin + cout)


def fake_data(tasks, shape):
    ds = TensorMTL(torch.zeros(2, *shape), [torch.zeros(2) for _ in tasks])
    return MTLData("fake", list(tasks), ds, ds, ds, tuple(shape), "lenet")


def test_lenet_overhead_is_the_papers_12_5_percent():
    data = fake_data([task("left", "class", 10), task("right", "class", 10)], (1, 28, 28))
    model = palora.palora_wrap(build_model("lenet", data), 2, 1, 1.0)
    o = palora.parameter_overhead(model)
    # convs 2*25*(1+10) + 2*25*(10+20), fc 2*(320+50), heads 2*(2*(50+50) + 2*(50+10))
    assert o["adapters"] == 550 + 1500 + 740 + 640 == 3430
    assert o["base"] == 21330 + 2 * 3060
    assert round(o["delta_p_percent"], 1) == 12.5
    # every Linear and Conv2d (encoder and heads) is adapted, nothing else
    wrapped = [m for m in model.modules() if isinstance(m, palora._PaLoRA)]
    assert [type(m).__name__ for m in wrapped].count("PaLoRAConv2d") == 2 and len(wrapped) == 7
    plain = [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    assert len(plain) == 7 and all(any(m is w.base for w in wrapped) for m in plain)


def test_segnet_overheads_next_to_the_paper():
    rows = {r["dataset"]: r for r in palora.overhead_report()}
    assert rows["cityscapes"]["delta_p_percent"] == pytest.approx(4.2, abs=0.05)
    assert rows["nyuv2"]["delta_p_percent"] == pytest.approx(6.3, abs=0.05)
    # 3 tasks cost exactly 3/2 of the 2-task adapters on the same trunk (heads differ slightly)
    assert rows["nyuv2"]["adapters"] / rows["cityscapes"]["adapters"] == pytest.approx(1.5, rel=0.01)


CLASS_TASKS = [task("a", "class", 3), task("b", "class", 3)]
SCENE_TASKS = [task("segmentation", "seg", 7), task("depth", "depth", 1)]
NARROW = {"filters": (8, 8, 16, 16, 16)}


@pytest.mark.parametrize("name,tasks,shape,kw", [
    ("lenet", CLASS_TASKS, (1, 28, 28), {}), ("mlp", CLASS_TASKS, (1, 28, 28), {}),
    ("resnet18", CLASS_TASKS, (1, 28, 28), {}), ("celeba_cnn", CLASS_TASKS, (3, 32, 32), {}),
    ("segnet", SCENE_TASKS, (3, 32, 64), NARROW), ("mtan", SCENE_TASKS, (3, 32, 64), NARROW)])
def test_wrap_any_backbone_starts_as_the_base_model(name, tasks, shape, kw):
    data = fake_data(tasks, shape)
    torch.manual_seed(0)
    model = build_model(name, data, **kw).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        ref = [o.clone() for o in model(x)]
    n_layers = sum(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules())
    palora.palora_wrap(model, 2, 2, 1.0)
    assert sum(isinstance(m, palora._PaLoRA) for m in model.modules()) == n_layers  # every Linear / Conv2d
    palora.set_preference(model, [0.3, 0.7])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), ref))
        for p in palora.adapter_parameters(model):  # and the adapters do change it once A != 0
            p.normal_(std=0.05)
        assert not all(torch.allclose(a, b) for a, b in zip(model(x), ref))


def test_wrap_refuses_a_model_without_layers():
    from common.models import toy_model

    with pytest.raises(ValueError, match="no Linear or Conv2d"):  # the method half raises plain errors
        palora.palora_wrap(toy_model(), 2, 1, 1.0)
    with pytest.raises(ValueError, match="rank"):
        palora.palora_wrap(nn.Sequential(nn.Linear(2, 2)), 2, 0, 1.0)


def test_runner_reports_the_method_halfs_errors_as_usage_errors(tmp_path):
    """palora_wrap raises ValueError (it knows no flags); main() turns it into a one-line UsageError (exit 2)."""
    with pytest.raises(UsageError, match="--model toy: this model has no Linear or Conv2d layer"):
        palora.main(["--dataset", "toy", "--max-steps", "1", "--out", str(tmp_path / "toy")] + FAST)


# ----------------------------------------------------------------------------------------------
# Eq. 2, App. B and C: schedules and lattices
# ----------------------------------------------------------------------------------------------
def test_lattice_counts_and_spacing():
    for T, d in ((2, 10), (3, 10), (3, 2), (4, 3)):
        L = palora.simplex_lattice(T, d)
        assert len(L) == math.comb(d + T - 1, T - 1) == palora.lattice_size(T, d)
        assert torch.allclose(L.sum(1), torch.ones(len(L), dtype=L.dtype))
        assert torch.allclose(L * d, (L * d).round(), atol=1e-9) and (L >= 0).all()  # multiples of 1/d
        assert len({tuple(row) for row in (L * d).round().long().tolist()}) == len(L)  # distinct
    assert len(palora.simplex_lattice(3, 10)) == 66
    assert len(palora.simplex_lattice(2, 10)) == 11
    torch.testing.assert_close(palora.simplex_lattice(2, 4)[:, 0], torch.linspace(0, 1, 5, dtype=torch.float64))
    # the same point set as common.metrics.simplex_grid (the evaluation grid)
    ours = {tuple(np.round(r, 9)) for r in palora.simplex_lattice(3, 10).numpy()}
    theirs = {tuple(np.round(r, 9)) for r in simplex_grid(3, 11)}
    assert ours == theirs
    # nearest-neighbour spacing is 1/d everywhere (evenly spaced)
    L = palora.simplex_lattice(3, 5).numpy()
    D = np.abs(L[:, None] - L[None]).max(-1)
    np.fill_diagonal(D, np.inf)
    assert np.allclose(D.min(1), 1 / 5)


def test_base_preferences():
    b2 = palora.base_preferences(2, 5, 0.01)
    torch.testing.assert_close(b2[:, 0], torch.linspace(0.01, 0.99, 5, dtype=torch.float64))  # official linspace
    b3 = palora.base_preferences(3, 6, 0.01)
    assert b3.shape == (6, 3) and torch.allclose(b3.sum(1), torch.ones(6, dtype=b3.dtype)) and (b3 > 0).all()
    assert sorted(b3.argmax(1).tolist()).count(0) >= 1 and set(b3.argmax(1).tolist()) == {0, 1, 2}  # all tasks served
    assert palora.base_preferences(3, 10, 0.0)[:, 0].tolist().count(1.0) == 1  # 10 points: the d = 3 lattice
    with pytest.raises(ValueError, match="3, 6, 10, 15"):
        palora.base_preferences(3, 7)
    torch.testing.assert_close(palora.base_preferences(2, 1), torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def test_eq2_by_hand():
    base = torch.tensor([[0.2, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(palora.anneal(base, 0.5, 0.5), base)  # exponent 1
    torch.testing.assert_close(palora.anneal(base, 0.25, 0.5), torch.tensor([[1 / 3, 2 / 3]], dtype=torch.float64))  # sqrt
    torch.testing.assert_close(palora.anneal(base, 1.0, 0.5), torch.tensor([[0.04 / 0.68, 0.64 / 0.68]], dtype=torch.float64))


@pytest.mark.parametrize("T,M", [(2, 5), (3, 10)])
def test_annealed_schedule_on_simplex_from_centre_to_base_points(T, M):
    base = palora.base_preferences(T, M, 0.01)
    centre = torch.full((M, T), 1.0 / T)
    spread = []
    for tau in np.linspace(0, 1, 21):
        lam = palora.sample_preferences("annealed", base, float(tau), 1.0, 1.0)
        assert lam.shape == (M, T) and (lam >= 0).all()
        torch.testing.assert_close(lam.sum(1), torch.ones(M))
        spread.append(float((lam - centre).abs().max()))
    torch.testing.assert_close(palora.sample_preferences("annealed", base, 0.0, 1.0, 1.0), centre)
    torch.testing.assert_close(palora.sample_preferences("annealed", base, 1.0, 1.0, 1.0), base.float())
    assert all(b >= a - 1e-7 for a, b in zip(spread, spread[1:])) and spread[-1] > 0.4  # monotone annealing
    # a lower T_max goes further (official default T_max = 0.2 = exponent 5 tau)
    assert float(palora.sample_preferences("annealed", base, 1.0, 0.2, 1.0).max()) > float(base.max())
    # "fixed": Eq. 2 at tau = 1 from the first step on
    torch.testing.assert_close(palora.sample_preferences("fixed", base, 0.0, 1.0, 1.0), base.float())


def test_dirichlet_schedules():
    torch.manual_seed(0)
    base = torch.zeros(2000, 3)
    for name in ("dirichlet", "dirichlet-annealed"):
        lam = palora.sample_preferences(name, base, 0.3, 1.0, 2.0)
        assert lam.shape == (2000, 3) and (lam >= 0).all()
        torch.testing.assert_close(lam.sum(1), torch.ones(2000))
    # Dirichlet(p 1) is centred with E[lambda] = 1/T; annealing to tau -> 1 pushes samples to the vertices
    early = palora.sample_preferences("dirichlet-annealed", base, 0.0, 1.0, 5.0)
    late = palora.sample_preferences("dirichlet-annealed", base, 1.0, 1.0, 5.0)
    torch.testing.assert_close(early.mean(0), torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    assert float(early.max(1).values.mean()) < 0.6 < 0.95 < float(late.max(1).values.mean())
    # at concentration 1e-3 (tau = 1) no row may collapse to the centre (torch's Dirichlet underflows there)
    assert float(late.max(1).values.min()) > 0.5
    # log-space sampler: mean and variance of Dirichlet(a 1) are 1/T and (T - 1) / (T^2 (T a + 1))
    lam = palora.dirichlet(0.5, 20000, 3)
    torch.testing.assert_close(lam.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(lam.var(0), torch.full((3,), 2 / (9 * 2.5), dtype=torch.float64), atol=0.005, rtol=0)


def test_evaluation_grid_and_pseudo_preferences():
    assert evaluation_grid(2).shape == (11, 2) and evaluation_grid(3).shape == (66, 3)
    assert np.allclose(evaluation_grid(2)[:, 0], np.linspace(1, 0, 11))  # common.metrics.evaluation_grid
    assert evaluation_grid(5).shape == (6, 5)  # vertices + centre
    pseudo = {tuple(v) for _, v in palora.pseudo_preferences(2)}
    assert pseudo == {(0.0, 0.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}


# ----------------------------------------------------------------------------------------------
# gradient balancing and the front summaries
# ----------------------------------------------------------------------------------------------
def test_grad_balanced_backward_matches_the_formula():
    torch.manual_seed(0)
    data = fake_data([task("a", "class", 3), task("b", "class", 3)], (5,))
    model = palora.palora_wrap(build_model("mlp", data, hidden=8), 2, 1, 1.0)
    with torch.no_grad():
        for p in palora.adapter_parameters(model):
            p.normal_()
    x, ys = torch.randn(6, 5), [torch.randint(3, (6,)), torch.randint(3, (6,))]
    lam = torch.tensor([0.3, 0.7])
    palora.set_preference(model, lam)
    params = [p for p in model.parameters() if p.requires_grad]
    shared = model.shared_parameters()

    def losses():
        out = model(x)
        return torch.stack([F.cross_entropy(o, y) for o, y in zip(out, ys)])

    L = losses()
    norms = []
    for t in range(2):
        g = torch.autograd.grad(L[t], shared, retain_graph=True)
        norms.append(float(torch.cat([v.reshape(-1) for v in g]).norm()))
    target = sum(lam[t] * L[t] / (norms[t] + 1e-3) for t in range(2))
    expected = torch.autograd.grad(target, params)
    palora.backward_pass(losses(), lam, "grad", params, {id(p) for p in shared})
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e)
    for p in params:  # "none" is lambda^T L
        p.grad = None
    palora.backward_pass(losses(), lam, "none", params, set())
    expected = torch.autograd.grad((lam * losses()).sum(), params)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e)


def test_front_summary_by_hand():
    tasks = [task("a", "class", 10), task("b", "class", 10)]
    pts = [(0.9, 0.5, 0.2, 1.0), (0.7, 0.7, 0.5, 0.6), (0.5, 0.9, 0.9, 0.3), (0.6, 0.6, 0.8, 0.9)]
    front = [{"preference": [1 - i / 3, i / 3], "tasks": {"a": {"acc": a, "loss": la}, "b": {"acc": b, "loss": lb}}}
             for i, (a, b, la, lb) in enumerate(pts)]
    s = front_summary(front, tasks)
    assert s["hypervolume"] == pytest.approx(0.9 * 0.5 + 0.7 * 0.2 + 0.5 * 0.2)  # union of boxes to (0, 0)
    assert s["hypervolume_ref"] == [0.0, 0.0] and s["non_dominated"] == 3 and s["front_size"] == 4
    # ranks of loss a: 1 2 4 3, loss b: 4 2 1 3 -> d^2 = 9 + 0 + 9 + 0, rho = 1 - 6 * 18 / (4 * 15) = -0.8
    assert s["spearman"] == pytest.approx(-0.8)
    # lambda_a ranks 4 3 2 1 against loss a 1 2 4 3 -> d^2 = 9 + 1 + 4 + 4 -> -0.8;
    # lambda_b ranks 1 2 3 4 against loss b 4 2 1 3 -> d^2 = 9 + 0 + 4 + 1 -> 1 - 84 / 60 = -0.4
    assert s["spearman_alignment"]["a"] == pytest.approx(-0.8) and s["spearman_alignment"]["b"] == pytest.approx(-0.4)
    s2 = front_summary(front, tasks, hv_ref=[0.5, 0.5])
    assert s2["hypervolume"] == pytest.approx(0.2 * 0.2)  # only (0.7, 0.7) beats (0.5, 0.5) in both tasks


# ----------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------
def test_multimnist_lite_end_to_end(tmp_path):
    out = tmp_path / "run"
    m = palora.main(["--max-steps", "2", "--num-prefs", "3", "--out", str(out), "--data-root", DATA] + FAST)
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "front.png", "schedule.png",
              "pseudo_preferences.png", "val_fronts.png"):
        assert (out / f).is_file(), f
    j = read_json(out / "metrics.json")
    assert j == json.loads(json.dumps(m))
    assert j["method"] == "palora" and j["steps"] == 2 and set(j["tasks"]) == {"left", "right"}
    assert len(j["front"]) == 11 and j["front_size"] == 11
    assert [f["preference"][0] for f in j["front"]] == pytest.approx([1 - i / 10 for i in range(11)])  # common.metrics.evaluation_grid
    for f in j["front"]:
        assert all(0 <= f["tasks"][t]["acc"] <= 1 and math.isfinite(f["tasks"][t]["loss"]) for t in ("left", "right"))
    assert 0 < j["hypervolume"] <= 1 and j["hypervolume_ref"] == [0.0, 0.0]
    assert j["spearman"] is not None and -1 <= j["spearman"] <= 1 and 1 <= j["non_dominated"] <= 11
    assert j["tasks"] == j["front"][5]["tasks"]  # the centre preference (0.5, 0.5)
    assert len(j["pseudo_preferences"]) == 7
    assert j["parameters"]["adapters"] == 3430 and j["parameters"]["paper_delta_p_percent"] == 12.5
    assert j["delta_p_percent"] == pytest.approx(12.495, abs=1e-3) and j["expansion"] is None
    cfg = read_json(out / "config.json")
    assert cfg["resolved"]["rank"] == 1 and cfg["resolved"]["num_prefs"] == 3 and cfg["args"]["lr"] == 1e-3
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and float(rows[0]["train_loss_left"]) > 0 and float(rows[0]["val_hypervolume"]) > 0
    assert float(rows[0]["tau"]) == pytest.approx(2 / (10 * 40))  # tau = step / (epochs x batches)
    # the run directory is protected
    with pytest.raises(UsageError, match="already holds a run"):
        palora.main(["--max-steps", "1", "--out", str(out), "--data-root", DATA] + FAST)


def test_three_tasks_lattice_and_bad_num_prefs(tmp_path):
    out = tmp_path / "mm3"
    m = palora.main(["--dataset", "multimnist3-lite", "--max-steps", "1", "--grid-points", "3", "--out", str(out),
                     "--data-root", DATA] + FAST)
    assert len(m["front"]) == 6 and m["schedule"]["num_prefs"] == 6 and len(m["schedule"]["base_preferences"]) == 6
    assert m["hypervolume"] > 0 and len(m["hypervolume_ref"]) == 3 and len(m["pseudo_preferences"]) == 9
    assert m["parameters"]["paper_delta_p_percent"] is None
    with pytest.raises(UsageError, match="simplex lattice"):
        palora.main(["--dataset", "multimnist3-lite", "--num-prefs", "4", "--max-steps", "1",
                     "--out", str(tmp_path / "bad"), "--data-root", DATA] + FAST)


ADULT_EDU = ["Bachelors", "HS-grad", "Masters", "11th", "Some-college", "Doctorate"]


def write_census(root, n_train=40, n_test=10):
    """Tiny UCI Adult files (adult.data / adult.test) in the layout common/real_data.py reads."""
    def row(i, test):
        income = (">50K" if i % 3 == 0 else "<=50K") + ("." if test else "")
        fields = [18 + (i * 11) % 60, ["Private", "State-gov", "?"][i % 3], 20000 + 101 * i, ADULT_EDU[i % 6],
                  8 + i % 8, ["Married-civ-spouse", "Never-married"][i % 2], ["Sales", "Tech-support"][i % 2],
                  ["Husband", "Wife", "Own-child"][i % 3], "White", ["Male", "Female"][(i // 2) % 2],
                  50 * (i % 4), 0, 20 + i % 30, "United-States", income]
        return ", ".join(str(f) for f in fields)

    folder = root / "census"
    folder.mkdir(parents=True)
    (folder / "adult.data").write_text("\n".join(row(i, False) for i in range(n_train)) + "\n")
    (folder / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(row(i, True) for i in range(n_test)) + "\n")
    return root


def census_flags(root):
    return ["--dataset", "census", "--data-root", str(root), "--batch-size", "12", "--num-prefs", "3",
            "--grid-points", "3"] + FAST


def test_resume_equals_uninterrupted_run(tmp_path):
    root = write_census(tmp_path / "data")
    a, b = tmp_path / "a", tmp_path / "b"
    flags = census_flags(root) + ["--epochs", "3"]  # 36 training rows -> 3 steps per epoch
    palora.main(flags + ["--out", str(a)])
    palora.main(flags + ["--out", str(b), "--max-steps", "3"])  # interrupted after epoch 1
    assert read_json(b / "metrics.json")["steps"] == 3
    palora.main(flags + ["--out", str(b), "--resume"])
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert ma["steps"] == mb["steps"] == 9
    assert ma["front"] == mb["front"] and ma["tasks"] == mb["tasks"]
    with open(b / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1", "2"]
    sa = torch.load(a / "checkpoint.pt", weights_only=True)["state"]["tracked"]["model"]
    sb = torch.load(b / "checkpoint.pt", weights_only=True)["state"]["tracked"]["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_select_best_restores_the_epoch_of_the_best_validation_front_after_a_resume(tmp_path):
    root = write_census(tmp_path / "data")
    a, b = tmp_path / "a", tmp_path / "b"
    flags = census_flags(root) + ["--epochs", "3", "--select", "best"]
    ma = palora.main(flags + ["--out", str(a)])
    with open(a / "log.csv") as fh:
        hv = [float(r["val_hypervolume"]) for r in csv.DictReader(fh)]
    assert ma["selected_epoch"] == int(np.argmax(hv))  # the front score: the validation hypervolume
    palora.main(flags + ["--out", str(b), "--max-steps", "3"])
    mb = palora.main(flags + ["--out", str(b), "--resume"])  # the kept best model survives the checkpoint
    assert mb["selected_epoch"] == ma["selected_epoch"] and mb["front"] == ma["front"]


def save_ls_checkpoint(path, model, layout="tracked"):
    """A checkpoint in the layout methods/baselines.py writes (Run.checkpoint: the model under
    state.tracked.model), or the older one (state.model), or a bare state_dict."""
    sd = model.state_dict()
    state = {"tracked": {"model": sd, "opt": {}}, "values": {}, "best": {}, "phases": None} if layout == "tracked" else {"model": sd}
    torch.save(sd if layout == "bare" else {"epoch": 0, "global_step": 1, "finished": True, "rng": {}, "state": state}, path)


def checkpoint_model(path):
    """The model state_dict of a checkpoint.pt of either layout."""
    state = torch.load(path, weights_only=False)["state"]
    return state["tracked"]["model"] if "tracked" in state else state["model"]


def test_pareto_expansion_from_an_ls_checkpoint_keeps_the_base_bit_identical(tmp_path):
    import baselines
    from common.data import load_dataset

    root = write_census(tmp_path / "data")
    ls = tmp_path / "ls"
    baselines.main(["--method", "ls", "--dataset", "census", "--data-root", str(root), "--batch-size", "12",
                    "--epochs", "2", "--out", str(ls), "--no-progress", "--quiet"])
    theta0 = checkpoint_model(ls / "checkpoint.pt")
    out = tmp_path / "expand"
    m = palora.main(census_flags(root) + ["--init-ckpt", str(ls / "checkpoint.pt"), "--out", str(out)])
    assert m["steps"] == 4 * 3  # expansion default: 4 epochs (MultiMNIST setting of App. A.3)
    data = load_dataset("census", str(root))
    model = palora.palora_wrap(build_model(None, data), 2, 1, 1.0)
    model.load_state_dict(checkpoint_model(out / "checkpoint.pt"))
    base = palora.base_state_dict(model)
    assert set(base) == set(theta0) and all(torch.equal(base[k], theta0[k]) for k in theta0)  # bit-identical
    assert any(torch.count_nonzero(p) > 0 for n, p in model.named_parameters() if n.endswith("lora_A"))  # adapters trained
    # theta_0's own test metrics are reported (the adapters start at zero: any lambda gives theta_0)
    ls_test = read_json(ls / "metrics.json")["tasks"]
    init = m["expansion"]["init"]
    assert all(init["tasks"][t]["acc"] == pytest.approx(ls_test[t]["acc"]) for t in ("age", "education"))
    assert init["hypervolume"] == pytest.approx(ls_test["age"]["acc"] * ls_test["education"]["acc"])
    cfg = read_json(out / "config.json")
    assert cfg["args"]["epochs"] == 4 and cfg["defaults_used"]["scheduler"] is None
    # a checkpoint of another backbone is refused in one line
    save_ls_checkpoint(tmp_path / "other.pt", build_model("lenet", fake_data(data.tasks, (1, 28, 28))))
    with pytest.raises(UsageError, match="does not fit"):
        palora.main(census_flags(root) + ["--init-ckpt", str(tmp_path / "other.pt"), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("layout", ["tracked", "model", "bare"])
def test_init_ckpt_reads_every_checkpoint_layout(tmp_path, layout):
    """--init-ckpt takes baselines.py's checkpoint.pt (state.tracked.model; state.model before the harness
    named its state) or a bare state_dict, and the expansion starts from exactly those weights."""
    from common.data import load_dataset

    root = write_census(tmp_path / "data")
    torch.manual_seed(5)
    theta0 = build_model(None, load_dataset("census", str(root)))
    save_ls_checkpoint(tmp_path / "theta0.pt", theta0, layout)
    out = tmp_path / "expand"
    palora.main(census_flags(root) + ["--init-ckpt", str(tmp_path / "theta0.pt"), "--max-steps", "1", "--out", str(out)])
    model = palora.palora_wrap(build_model(None, load_dataset("census", str(root))), 2, 1, 1.0)
    model.load_state_dict(checkpoint_model(out / "checkpoint.pt"))
    base, want = palora.base_state_dict(model), theta0.state_dict()
    assert set(base) == set(want) and all(torch.equal(base[k], want[k]) for k in want)


def test_init_ckpt_without_a_model_is_one_line(tmp_path):
    root = write_census(tmp_path / "data")
    torch.save({"state": {"tracked": {"opt": {}}}}, tmp_path / "nomodel.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name, needle in (("nomodel.pt", "no model state_dict"), ("junk.pt", "cannot read it")):
        with pytest.raises(UsageError, match=needle):
            palora.main(census_flags(root) + ["--init-ckpt", str(tmp_path / name), "--out", str(tmp_path / "x")])


def write_cityscapes(root, n_train=3, n_val=2, hw=(32, 64)):
    """Tiny MTAN-preprocessed Cityscapes: {train,val}/{image,label_7,depth}/<i>.npy."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ("image", "label_7", "depth"):
            (root / "cityscapes" / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            d = root / "cityscapes" / split
            np.save(d / "image" / f"{i}.npy", rng.random(hw + (3,)).astype(np.float32))
            np.save(d / "label_7" / f"{i}.npy", rng.integers(-1, 7, hw).astype(np.float32))
            np.save(d / "depth" / f"{i}.npy", (0.5 * rng.random(hw + (1,))).astype(np.float32))
    return root


def test_cityscapes_real_format_with_segnet_and_grad_balancing(tmp_path, monkeypatch):
    root = write_cityscapes(tmp_path / "data")
    original = common_models._BUILDERS["segnet"]
    monkeypatch.setitem(common_models._BUILDERS, "segnet",
                        lambda data, tasks, **kw: original(data, tasks, **NARROW))  # a narrow SegNet
    out = tmp_path / "city"
    m = palora.main(["--dataset", "cityscapes", "--data-root", str(root), "--max-steps", "2", "--num-prefs", "2",
                     "--grid-points", "3", "--out", str(out), "--no-progress", "--quiet"])
    assert m["balance"] == "grad" and m["rank"] == 4 and m["model"] == "segnet"
    assert len(m["front"]) == 3 and set(m["tasks"]) == {"segmentation", "depth"}
    assert m["hypervolume_metrics"] == ["miou", "abs_err"] and m["hypervolume_ref"] == [0.0, 1.0]
    assert m["hypervolume"] >= 0 and m["delta_m"] is not None and math.isfinite(m["delta_m"])
    cfg = read_json(out / "config.json")
    assert cfg["args"]["batch_size"] == 8 and cfg["defaults_used"]["scheduler"] == [75, 0.5]


def test_bad_flags_exit_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "palora.py"), "--rank", "0",
                        "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--rank" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    for flags, needle in ((["--temperature", "0"], "--temperature"), (["--init-ckpt", str(tmp_path / "nope.pt")], "no such file"),
                          (["--hv-ref", "a,b"], "--hv-ref"), (["--epsilon", "0.7"], "--epsilon")):
        with pytest.raises(UsageError, match=needle):
            palora.main(flags + ["--out", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_help_prints_both_defaults_tables_and_config_records_the_resolved_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        palora.parse_args(["--help"])
    text = capsys.readouterr().out
    full, expansion = text.split("defaults of a full training")[1].split("defaults of a Pareto expansion")
    row = lambda table, ds: next(ln for ln in table.splitlines() if ln.strip().startswith(ds + " "))  # noqa: E731
    assert "adapter_lr_mult=T (the number of tasks" in full
    assert "epochs 100" in row(full, "cityscapes") and "rank=4" in row(full, "cityscapes") and "balance=grad" in row(full, "cityscapes")
    assert "StepLR(step 75, gamma 0.5)" in row(full, "cityscapes")
    assert "epochs 20" in row(full, "multimnist3-lite") and "num_prefs=6" in row(full, "multimnist3-lite")
    assert "epochs 5" in row(expansion, "cityscapes") and "Adam lr 5e-05, no schedule" in row(expansion, "cityscapes")
    assert "epochs 4" in row(expansion, "multimnist3-lite")
    # a run records what the table resolves to; adapter_lr_mult is derived from the data: T = 3 here
    out = tmp_path / "mm3"
    palora.main(["--dataset", "multimnist3-lite", "--max-steps", "1", "--grid-points", "2", "--out", str(out),
                 "--data-root", DATA] + FAST)
    cfg = read_json(out / "config.json")
    assert cfg["args"]["epochs"] == 20 and cfg["args"]["num_prefs"] == 6 and cfg["args"]["rank"] == 1
    assert cfg["resolved"]["adapter_lr_mult"] == 3.0 and cfg["defaults_used"]["adapter_lr_mult"] == 3.0
    assert cfg["resolved"]["eval_every"] == 1 and cfg["resolved"]["schedule"] == "annealed"
    ck = torch.load(out / "checkpoint.pt", weights_only=True)["state"]["tracked"]["opt"]
    assert [g["lr"] for g in ck["param_groups"]] == [1e-3, 3e-3]  # base, adapters = T x --lr


def test_flags_that_depend_on_the_tasks_are_refused_before_out_is_touched(tmp_path):
    for flags, needle in ((["--epsilon", "0.4"], "below 1/T"), (["--num-prefs", "4"], "simplex lattice"),
                          (["--hv-ref", "0,0"], "needs 3 values")):
        with pytest.raises(UsageError, match=needle):
            palora.main(["--dataset", "multimnist3-lite", "--data-root", DATA, "--out", str(tmp_path / "o")] + flags + FAST)
        assert not (tmp_path / "o").exists()
