"""Numbers you can trust (issue 20): one scale-free selection rule, the explicit Delta-m% reference
matched on dataset and model, strict JSON, hypervolume in any number of objectives, the warning when
validation is the test split."""
import itertools
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

from common.device import UsageError  # noqa: E402
from common.metrics import delta_m, hypervolume, selection_score  # noqa: E402
from common.real_data import NYUD_REFERENCE, NYUD_TASKS  # noqa: E402
from common.reference import resolve_reference  # noqa: E402
from common.train import write_json  # noqa: E402

FLAGS = ["--no-progress", "--quiet"]


def _scaled(ref, factors):
    return {t: {m: v * factors[t] for m, v in ms.items()} for t, ms in ref.items()}


# epoch A: every metric 0.5% worse than single-task (Delta-m 0.50); epoch B: normals 10% better, the
# other three 22.68% worse (Delta-m 14.51), and the raw mean of (mIoU, -RMSE, -mErr deg, odsF) is higher for B
EPOCH_A = _scaled(NYUD_REFERENCE, {"semseg": 0.995, "depth": 1.005, "normals": 1.005, "edge": 0.995})
EPOCH_B = _scaled(NYUD_REFERENCE, {"semseg": 1 - 0.2268, "depth": 1.2268, "normals": 0.9, "edge": 1 - 0.2268})


def _raw_mean(metrics):  # the old Run.primary_score
    return np.mean([metrics[t.name][t.metrics[0][0]] * (1 if t.metrics[0][1] else -1) for t in NYUD_TASKS])


def test_selection_by_delta_m_not_raw_units():
    assert delta_m(EPOCH_A, NYUD_REFERENCE, NYUD_TASKS) == pytest.approx(0.50)
    assert delta_m(EPOCH_B, NYUD_REFERENCE, NYUD_TASKS) == pytest.approx(14.51)
    assert _raw_mean(EPOCH_B) > _raw_mean(EPOCH_A)  # what the old rule picked
    assert selection_score(EPOCH_A, NYUD_TASKS, NYUD_REFERENCE) > selection_score(EPOCH_B, NYUD_TASKS, NYUD_REFERENCE)
    assert selection_score(EPOCH_A, NYUD_TASKS, NYUD_REFERENCE) == pytest.approx(-0.50)
    # without a reference: the scale-free log form picks A too, and a change of unit changes nothing
    assert selection_score(EPOCH_A, NYUD_TASKS) > selection_score(EPOCH_B, NYUD_TASKS)
    rad = {k: _scaled(v, {"semseg": 1, "depth": 100, "normals": np.pi / 180, "edge": 1}) for k, v in
           (("a", EPOCH_A), ("b", EPOCH_B))}
    gap = selection_score(EPOCH_A, NYUD_TASKS) - selection_score(EPOCH_B, NYUD_TASKS)
    assert selection_score(rad["a"], NYUD_TASKS) - selection_score(rad["b"], NYUD_TASKS) == pytest.approx(gap)


def test_every_method_selects_with_the_one_rule():
    for f in os.listdir(os.path.join(ROOT, "methods")):
        with open(os.path.join(ROOT, "methods", f)) as fh:
            assert "primary_score" not in fh.read(), f


def _fake_run(folder, dataset, model, tasks, method="stl"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as fh:
        json.dump({"method": method, "dataset": dataset, "model": model, "tasks": tasks}, fh)


def test_reference_matched_on_dataset_and_model(tmp_path):
    root = str(tmp_path / "results")
    r18 = {t: {m: v * 0.9 for m, v in ms.items()} for t, ms in NYUD_REFERENCE.items()}
    _fake_run(os.path.join(root, "stl", "nyud", "seed0"), "nyud", "resnet18-dilated", r18)
    got = resolve_reference("auto", "nyud", "resnet18-dilated", root=root)
    assert got.kind == "stl-runs" and got.values["semseg"]["miou"] == pytest.approx(0.9 * 0.3938)
    # ResNet-50 is not compared with the ResNet-18 single-task runs: AvgNorm Table III's own row
    got = resolve_reference("auto", "nyud", "resnet50-dilated", root=root)
    assert got.kind == "published" and got.values["semseg"]["miou"] == pytest.approx(0.4294) and "Table III" in got.source
    # MTAN rows: the paper's reference is the ResNet-18 single-task row
    assert resolve_reference("published", "nyud", "mtan-resnet18", root=root).values == NYUD_REFERENCE
    none = resolve_reference("auto", "nyud", "mtan-resnet50", root=root)
    assert none.values is None and "python methods/stl.py --dataset nyud --model mtan-resnet50" in none.source
    # an explicit PATH of another model or dataset is refused
    with pytest.raises(UsageError, match="model resnet18-dilated"):
        resolve_reference(os.path.join(root, "stl", "nyud", "seed0", "metrics.json"), "nyud", "resnet50-dilated")
    with pytest.raises(UsageError, match="dataset nyud"):
        resolve_reference(os.path.join(root, "stl", "nyud", "seed0"), "pascal-context", "resnet18-dilated")
    with pytest.raises(UsageError):
        resolve_reference(str(tmp_path / "missing.json"), "nyud", "resnet18-dilated")
    # a plain {task: {metric: value}} file
    p = tmp_path / "ref.json"
    p.write_text(json.dumps(r18))
    assert resolve_reference(str(p), "nyud", "resnet50-dilated").kind == "file"


def test_offline_reference_is_shipped_with_its_command(tmp_path):
    got = resolve_reference("auto", "multimnist-lite", "lenet", root=str(tmp_path))
    assert got.kind == "shipped" and "python methods/stl.py" in got.source
    assert set(got.values) == {"left", "right"} and 0.5 < got.values["left"]["acc"] < 1
    assert resolve_reference("auto", "multimnist-lite", "lenet", data_seed=1, root=str(tmp_path)).values is None


def test_custom_out_and_model_on_the_command_line(tmp_path, monkeypatch):
    """End to end: --out far from results/ still finds results/stl/<dataset>/; a run of another model
    there is not used; metrics.json says which reference was used."""
    import baselines

    monkeypatch.chdir(tmp_path)
    acc = {"left": {"acc": 0.5}, "right": {"acc": 0.5}}
    _fake_run(str(tmp_path / "results" / "stl" / "multimnist-lite" / "mlp-seed0"), "multimnist-lite", "mlp", acc)
    _fake_run(str(tmp_path / "results" / "stl" / "multimnist-lite" / "seed0"), "multimnist-lite", "lenet",
              {"left": {"acc": 0.25}, "right": {"acc": 0.25}})
    flags = ["--method", "ls", "--max-steps", "2", "--data-root", os.path.join(ROOT, "data")] + FLAGS
    baselines.main(flags + ["--out", str(tmp_path / "a" / "b")])
    with open(tmp_path / "a" / "b" / "metrics.json") as fh:
        m = json.load(fh)
    assert m["reference"]["kind"] == "stl-runs" and m["reference"]["values"]["left"]["acc"] == 0.25
    assert "seed0/metrics.json" in m["reference"]["source"] and "mlp" not in m["reference"]["source"]
    assert m["delta_m"] == pytest.approx(-np.mean([(m["tasks"][t]["acc"] - 0.25) / 0.25 * 100 for t in ("left", "right")]))
    baselines.main(flags + ["--out", str(tmp_path / "c"), "--reference", "published"])
    with open(tmp_path / "c" / "metrics.json") as fh:
        assert json.load(fh)["reference"]["kind"] == "shipped"
    with pytest.raises(UsageError, match="model mlp"):
        baselines.main(flags + ["--out", str(tmp_path / "d"), "--reference",
                                str(tmp_path / "results" / "stl" / "multimnist-lite" / "mlp-seed0")])
    assert not (tmp_path / "d").exists()


def test_metrics_json_is_strict_json_with_nan(tmp_path):
    p = str(tmp_path / "m.json")
    write_json(p, {"tasks": {"left": {"acc": float("nan"), "loss": np.float32("inf")}, "right": {"acc": 0.5}},
                   "front": [{"t": 0.0, "delta_m": -float("inf")}]})

    def refuse(token):
        raise ValueError(f"invalid JSON token {token}")

    with open(p) as fh:
        m = json.loads(fh.read(), parse_constant=refuse)
    assert m["tasks"]["left"] == {"acc": None, "loss": None} and m["tasks"]["right"]["acc"] == 0.5
    assert m["nonfinite_as_null"] == ["tasks.left.acc", "tasks.left.loss", "front[0].delta_m"]


# ---- hypervolume in any number of objectives ------------------------------------------------
def test_hypervolume_one_point_is_a_product_in_40_objectives():
    p = np.linspace(0.5, 0.9, 40)
    assert hypervolume([p], [0.0] * 40, maximize=True) == pytest.approx(float(np.prod(p)))
    p[3] = 0.0  # an F1 of 0 against the reference 0: no box
    assert hypervolume([p], [0.0] * 40, maximize=True) == 0.0


def _inclusion_exclusion(P, r):
    """Hypervolume (minimisation) by inclusion-exclusion over the boxes [p, r]."""
    vol = 0.0
    for k in range(1, len(P) + 1):
        for sub in itertools.combinations(P, k):
            corner = np.max(sub, axis=0)
            vol += (-1) ** (k + 1) * np.prod(np.clip(r - corner, 0, None))
    return vol


def test_hypervolume_4d_hand_values_and_monte_carlo():
    r = np.ones(4)
    # two boxes [0,1]^2 x [0.5,1]^2 (0.25) and [0.5,1]^2 x [0,1]^2 (0.25), overlap [0.5,1]^4 (0.0625)
    P = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 0, 0]])
    assert hypervolume(P, r) == pytest.approx(0.4375)
    rng = np.random.default_rng(0)
    for m in (4, 5):
        P = rng.random((6, m))
        exact = hypervolume(P, np.ones(m))
        assert exact == pytest.approx(_inclusion_exclusion(P, np.ones(m)), rel=1e-12)
        X = rng.random((200_000, m))
        mc = np.mean(np.any(np.all(X[:, None, :] >= P[None], axis=2), axis=1))
        assert exact == pytest.approx(mc, abs=4e-3)
    # maximisation with a nonzero reference agrees with the mirrored minimisation
    Q = rng.random((5, 4))
    assert hypervolume(Q, [-0.1] * 4, maximize=True) == pytest.approx(_inclusion_exclusion(-Q, np.full(4, 0.1)))


def test_hypervolume_too_costly_is_none_not_a_crash():
    # members + centre with a dominant centre: the slices collapse, the value is exact
    P = np.vstack([np.eye(40) * 0.5 + 0.25, np.full((1, 40), 0.5)])
    assert hypervolume(P, [0.0] * 40, maximize=True) == pytest.approx(0.5 ** 40, rel=1e-9)
    # 41 random points on the simplex in 40 objectives: past the work budget, None (in seconds)
    P = np.random.default_rng(0).random((41, 40))
    assert hypervolume(P / P.sum(1, keepdims=True), [0.0] * 40, maximize=True) is None


def test_one_evaluation_grid_and_one_hv_rule_for_every_front_method():
    import palora
    import pfl
    import pml
    from common import metrics

    for mod in (pml, palora, pfl):
        assert getattr(mod, "evaluation_grid", metrics.evaluation_grid) is metrics.evaluation_grid  # lifted files import it lazily
    g = metrics.evaluation_grid(2)
    assert np.allclose(g[:, 0], np.linspace(1, 0, 11))  # one ordering: [1, 0], [0.9, 0.1], ...
    assert metrics.evaluation_grid(5).shape == (6, 5)
    for f in ("pml.py", "palora.py", "pfl.py", "extra_nurbs.py", "avgnorm.py"):
        with open(os.path.join(ROOT, "methods", f)) as fh:
            src = fh.read()
        assert "hv_reference(" in src or "front_summary(" in src, f  # the common rule, no private one
        assert "def hv_reference" not in src and "def evaluation_grid" not in src, f


def test_selection_on_validation_that_is_test_warns_once_and_is_recorded(tmp_path, capsys):
    import baselines
    from reproduce.tiny_data import make_scene

    make_scene(str(tmp_path / "data"), "cityscapes", n_train=8, n_val=4)
    flags = ["--method", "ls", "--dataset", "cityscapes", "--data-root", str(tmp_path / "data"), "--batch-size", "4",
             "--epochs", "2", "--select", "best", "--no-progress"]
    baselines.main(flags + ["--out", str(tmp_path / "a")])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "validation is the test split" in ln]
    assert len(lines) == 1  # two epochs selected on validation, one line
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["validation_is_test"] is True
    baselines.main(flags + ["--out", str(tmp_path / "b"), "--holdout", "0.25"])
    assert "validation is the test split" not in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["validation_is_test"] is False
