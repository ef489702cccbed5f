"""The shared harness end to end: stl.py and baselines.py on multimnist-lite and toy, the output
contract, --resume, Delta-m% against our own STL run, and one-line errors with exit status 2."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import baselines  # noqa: E402
import stl  # noqa: E402
from common.metrics import delta_m  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.aggregators import RuleStep  # noqa: E402
from common.train import jacobian  # noqa: E402

FLAGS = ["--no-progress", "--quiet", "--data-root", os.path.join(ROOT, "data")]


def read_json(p):
    with open(p) as fh:
        return json.load(fh)


def test_stl_and_ls_end_to_end_with_delta_m(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # --reference auto reads results/stl/<dataset>/ of the current folder
    res = tmp_path / "results"
    stl.main(["--max-steps", "15", "--out", str(res / "stl" / "multimnist-lite" / "seed0")] + FLAGS)
    out = tmp_path / "elsewhere" / "ls"  # a custom --out does not change the reference
    baselines.main(["--method", "ls", "--max-steps", "20", "--out", str(out)] + FLAGS)
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt"):
        assert (out / f).is_file(), f
    m = read_json(out / "metrics.json")
    assert m["method"] == "ls" and m["dataset"] == "multimnist-lite" and m["seed"] == 0
    assert set(m["tasks"]) == {"left", "right"}
    for t in m["tasks"].values():
        assert 0.0 <= t["acc"] <= 1.0 and t["loss"] > 0
    assert m["steps"] == 20 and m["seconds"] > 0
    for key in ("hypervolume", "front", "peak_memory_mb", "delta_m"):
        assert key in m
    # Delta-m% uses our STL run as the reference (Eq. 8 of EXTRA, flat average)
    ref = read_json(res / "stl" / "multimnist-lite" / "seed0" / "metrics.json")["tasks"]
    data = load_dataset("multimnist-lite", os.path.join(ROOT, "data"))
    assert m["delta_m"] == pytest.approx(delta_m(m["tasks"], ref, data.tasks))
    assert m["reference"]["kind"] == "stl-runs" and "results/stl/multimnist-lite/seed0/metrics.json" in m["reference"]["source"]
    assert m["model"] == "lenet" and m["validation_is_test"] is False
    cfg = read_json(out / "config.json")
    assert cfg["args"]["method"] == "ls" and "torch" in cfg["versions"] and cfg["args"]["batch_size"] == 256
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and float(rows[0]["train_loss_left"]) > 0


def test_resume_equals_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--method", "ls", "--batch-size", "1000"] + FLAGS  # 10 steps per epoch
    baselines.main(common + ["--epochs", "2", "--out", str(a)])
    baselines.main(common + ["--epochs", "1", "--out", str(b)])
    baselines.main(common + ["--epochs", "2", "--out", str(b), "--resume"])
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert mb["steps"] == ma["steps"] == 20
    assert mb["tasks"] == ma["tasks"]
    with open(b / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]


def test_toy_runs(tmp_path):
    m = baselines.main(["--method", "ls", "--dataset", "toy", "--max-steps", "50", "--out", str(tmp_path / "toy")] + FLAGS)
    assert set(m) == {"l1", "l2"} and all(torch.isfinite(torch.tensor(v["loss"])) for v in m.values())


def _cli(args, cwd):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "-1"], "--lr"),
    (["--dataset", "nope"], "unknown --dataset"),
    (["--device", "cuda:7"], "cuda"),
    (["--dataset", "cityscapes", "--data-root", "EMPTY"], "cityscapes"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, flags, needle):
    if "cuda:7" in flags and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    flags = [str(tmp_path) if f == "EMPTY" else f for f in flags]
    r = _cli([os.path.join(ROOT, "methods", "baselines.py"), "--out", str(tmp_path / "o"), "--no-progress"] + flags, ROOT)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_existing_run_is_not_destroyed(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.json").write_text('{"keep": 1}')
    r = _cli([os.path.join(ROOT, "methods", "stl.py"), "--out", str(out), "--max-steps", "1", "--no-progress"], ROOT)
    assert r.returncode == 2 and "--resume" in r.stderr
    assert (out / "metrics.json").read_text() == '{"keep": 1}'


def test_jacobian_rows_are_task_gradients():
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    v = torch.randn(2, requires_grad=True)
    losses = torch.stack([(w ** 2).sum() + v[0], (w * v[1]).sum()])
    G = jacobian(losses, [w, v])
    expect0 = torch.cat([2 * w, torch.tensor([1.0, 0.0])])
    expect1 = torch.cat([v[1].expand(3), torch.tensor([0.0, w.sum().item()])])
    assert torch.allclose(G[0], expect0.detach()) and torch.allclose(G[1], expect1.detach())


class _HalfFirst:
    """A fake 'jacobian' rule: direction = mean row, head weights (0.5, 2)."""
    name, needs, num_tasks, default_max_norm = "fake", "jacobian", 2, 0.0

    def direction(self, G, losses):
        self.G = G
        return G.mean(0), torch.tensor([0.5, 2.0])


def test_rule_step_jacobian_rule_sets_shared_and_head_grads():
    from common.models import MTLModel

    torch.manual_seed(0)
    model = MTLModel(torch.nn.Linear(3, 4), [torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)], ["a", "b"])
    x = torch.randn(5, 3)
    outs = model(x)
    losses = torch.stack([o.pow(2).mean() for o in outs])
    agg = _HalfFirst()
    RuleStep.for_model(agg, model).backward(losses)
    # reference gradients, one task at a time
    ref = []
    for t in range(2):
        model.zero_grad()
        model(x)[t].pow(2).mean().backward()
        ref.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    outs = model(x)
    losses = torch.stack([o.pow(2).mean() for o in outs])
    model.zero_grad()
    RuleStep.for_model(agg, model).backward(losses)
    for n, p in model.encoder.named_parameters():
        assert torch.allclose(p.grad, (ref[0]["encoder." + n] + ref[1]["encoder." + n]) / 2, atol=1e-6)
    for t, wt in enumerate((0.5, 2.0)):
        for n, p in model.heads[t].named_parameters():
            assert torch.allclose(p.grad, wt * ref[t][f"heads.{t}." + n], atol=1e-6)


def test_scheduler_flag_parses_every_form_and_refuses_bad_text():
    from common.train import make_scheduler, parse_scheduler

    assert parse_scheduler("none") is None
    assert parse_scheduler("step:75,0.5") == (75, 0.5)
    assert parse_scheduler("multistep:20/40/80/90,0.1") == ("multistep", (20, 40, 80, 90), 0.1)
    assert parse_scheduler("poly") == ("poly", 0.9) and parse_scheduler("poly:2") == ("poly", 2.0)
    for bad in ("step:0,0.5", "multistep:40/20,0.1", "poly:-1", "cosine", "step:75"):
        with pytest.raises(UsageError, match="--scheduler"):
            parse_scheduler(bad)
    # poly: lr_e = lr (1 - e / E)^p, stepped per epoch; multistep: x gamma at each milestone
    lrs = {}
    for spec in (("poly", 2.0), ("multistep", (2, 3), 0.1), (2, 0.5)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(opt, spec, epochs=4)
        seen = []
        for _ in range(4):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs[spec[0]] = seen
    assert np.allclose(lrs["poly"], [1.0, 0.5625, 0.25, 0.0625])
    assert np.allclose(lrs["multistep"], [1.0, 1.0, 0.1, 0.01])
    assert np.allclose(lrs[2], [1.0, 1.0, 0.5, 0.5])


def test_scheduler_flag_overrides_the_dataset_default(tmp_path):
    import baselines

    out = tmp_path / "run"
    baselines.main(["--method", "ls", "--scheduler", "step:1,0.5", "--epochs", "2", "--batch-size", "2048",
                    "--out", str(out), "--no-progress", "--quiet"])
    cfg = json.load(open(out / "config.json"))
    assert cfg["args"]["scheduler"] == "step:1,0.5"
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 2
    opt = torch.load(out / "checkpoint.pt", weights_only=True)["state"]["tracked"]["opt"]
    assert np.isclose(opt["param_groups"][0]["lr"], 1e-3 * 0.25)  # halved after each of the 2 epochs


def test_pretrained_flag_missing_file_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "baselines.py"), "--pretrained", str(tmp_path / "none.pth"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--pretrained" in r.stderr
    assert not (tmp_path / "o").exists()


def test_dataset_option_flags_reach_the_loader_or_are_refused(tmp_path):
    from reproduce.tiny_data import make_all

    make_all(str(tmp_path / "data"), ("nyud",))
    out = tmp_path / "r"
    test = baselines.main(["--dataset", "nyud", "--data-root", str(tmp_path / "data"), "--image-size", "16x24",
                           "--edge-thresholds", "3", "--holdout", "0.5", "--max-steps", "1", "--batch-size", "2",
                           "--out", str(out), "--no-progress", "--quiet"])
    assert set(test) == {"semseg", "depth", "normals", "edge"} and set(test["edge"]) == {"odsF", "loss"}
    cfg = json.load(open(out / "config.json"))
    assert cfg["args"]["image_size"] == "16x24" and cfg["args"]["holdout"] == 0.5
    from common.train import Run

    run = Run(baselines.parse_args(["--dataset", "nyud", "--data-root", str(tmp_path / "data"), "--image-size", "16x24",
                                    "--holdout", "0.5", "--out", str(tmp_path / "r2")]), "ls")
    assert run.data.train[0][0].shape == (3, 16, 24) and len(run.data.val) != len(run.data.test)
    for flags, msg in ((["--image-size", "32x32"], "does not apply"), (["--dataset", "nyud", "--data-root", str(tmp_path / "data"),
                                                                        "--image-size", "0x4"], "HxW"),
                       (["--dataset", "nyud", "--data-root", str(tmp_path / "data"), "--holdout", "1.5"], "fraction")):
        with pytest.raises(UsageError, match=msg):
            baselines.main(flags + ["--out", str(tmp_path / "bad"), "--no-progress", "--quiet"])
    assert not (tmp_path / "bad").exists()
