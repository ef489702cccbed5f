"""Every method script, rule, curve, mode and balancing on a device other than the CPU, on a CPU-only
machine: each test runs the method's own main() with `--device fakegpu` (reproduce/fake_device.py)
for one training step (--max-steps 1: every phase of EXTRA) and its evaluation. The fake device
rejects a CPU/device mix in any op as CUDA does, and any float64 tensor created on the device (MPS has
none); values are real, so host-side solvers and metrics run unchanged and the results can be compared
with a CPU run. `python -m pytest -m device` runs this layer alone (marker registered in conftest.py).
"""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import avgnorm  # noqa: E402
import baselines  # noqa: E402
import extra_nurbs  # noqa: E402
import palora  # noqa: E402
import pfl  # noqa: E402
import pml  # noqa: E402
import sam_mtl  # noqa: E402
import stl  # noqa: E402
from common.aggregators import AGGREGATORS  # noqa: E402
from common.device import move_tensors_, resolve_device  # noqa: E402
from reproduce.fake_device import (NAME, DeviceMixError, DeviceTensor, Float64OnDevice, fake_device,  # noqa: E402
                                   register_tiny_datasets)

pytestmark = pytest.mark.device

TINY2, TINY4 = register_tiny_datasets()
DATA = os.path.join(ROOT, "data")
QUIET = ["--no-progress", "--quiet", "--data-root", DATA]
SMALL = ["--dataset", TINY2, "--batch-size", "16", "--eval-batch-size", "32"]


def on_device(main, argv, out):
    """main(argv) with the model and the batches on the fake accelerator; returns (metrics.json, mode)."""
    with fake_device() as mode:
        main(argv + ["--device", NAME, "--out", str(out)] + QUIET)
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    return metrics, mode


def assert_trained_on_device(mode, conv=True):
    """Forward and backward ran on the device (not only the metrics), and some value came back."""
    names = mode.op_names
    assert names["addmm"] + names["mm"] + names["linear"] > 0, names
    if conv:
        assert names["convolution"] > 0 and names["convolution_backward"] > 0, names
    assert mode.host_syncs > 0


def finite_tasks(tasks):
    for metrics in tasks.values():
        for v in metrics.values():
            assert v is None or math.isfinite(v)


# ----------------------------------------------------------------------------------------------
# The tool itself: what it rejects, what it counts, and that its values are the CPU's.
# ----------------------------------------------------------------------------------------------
def test_the_fake_device_rejects_a_cpu_mix_and_float64_and_counts_host_syncs():
    with fake_device() as m:
        dev = m.device
        assert resolve_device(NAME) == torch.device(NAME)
        x = torch.arange(4.0, device=dev)
        assert isinstance(x, DeviceTensor) and x.device.type == NAME
        with pytest.raises(DeviceMixError, match="same device"):
            x + torch.ones(4)  # a CPU tensor in a device op: CUDA raises the same
        with pytest.raises(DeviceMixError):
            torch.cat([x, torch.zeros(0)])  # even an empty one (the sam_mtl toy bug)
        y = x + torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar on CUDA too
        assert x[torch.tensor([3, 0])].cpu().tolist() == [3.0, 0.0]  # CPU index tensors are fine on CUDA
        with pytest.raises(Float64OnDevice):
            x.double()
        with pytest.raises(Float64OnDevice):
            torch.zeros(2, dtype=torch.float64, device=dev)
        with pytest.raises(TypeError, match="numpy"):
            np.asarray(x)  # as on CUDA: .cpu() first
        before = m.host_syncs
        assert y.sum().item() == 14.0  # item
        if y.max() > 3:  # Python branching on a device value
            pass
        y.cpu()
        y.tolist()
        assert m.host_syncs - before == 4 and m.syncs["item"] >= 2 and m.syncs["tolist"] == 1
        torch.zeros(3, dtype=torch.float64).double()  # float64 on the host stays allowed


def test_a_training_step_on_the_fake_device_equals_the_cpu_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    import copy
    results = []
    for device in ("cpu", NAME):
        with fake_device() as m:
            model = copy.deepcopy(net).to(device)
            opt = torch.optim.Adam(model.parameters(), 1e-2)
            for _ in range(3):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
                opt.step()
            results.append([p.detach().cpu() for p in model.state_dict().values()])
            assert (m.ops > 0) == (device == NAME)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_move_tensors_keeps_identity_on_the_device():
    p = torch.zeros(3, requires_grad=True)
    held = [p]
    with fake_device() as m:
        move_tensors_(held, m.device)
        assert held[0] is p and p.device.type == NAME and p.requires_grad and p.is_leaf
        (p * 2).sum().backward()
        assert p.grad.device.type == NAME


def test_device_marker_is_registered(pytestconfig):
    assert any(line.startswith("device:") for line in pytestconfig.getini("markers"))


def test_host_values_equal_the_cpu_run(tmp_path):
    """The same seed on the CPU and on the fake device gives the same metrics: the tool changes the
    placement, not the computation."""
    argv = ["--method", "ls", "--max-steps", "3"] + SMALL
    baselines.main(argv + ["--device", "cpu", "--out", str(tmp_path / "cpu")] + QUIET)
    with open(tmp_path / "cpu" / "metrics.json") as fh:
        cpu = json.load(fh)
    dev, mode = on_device(baselines.main, argv, tmp_path / "dev")
    assert dev["tasks"] == cpu["tasks"]
    assert_trained_on_device(mode)


# ----------------------------------------------------------------------------------------------
# Every script on the device: one step and the evaluation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", sorted(AGGREGATORS))
def test_baselines_every_rule(tmp_path, rule):
    m, mode = on_device(baselines.main, ["--method", rule, "--max-steps", "1"] + SMALL, tmp_path / rule)
    assert m["method"] == rule and m["steps"] == 1
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


@pytest.mark.parametrize("method", pfl.METHODS)
def test_pfl_every_method(tmp_path, method):
    m, mode = on_device(pfl.main, ["--method", method, "--max-steps", "1", "--grid-points", "3"] + SMALL, tmp_path / method)
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


@pytest.mark.parametrize("curve", ["nurbs", "bezier", "polychain"])
def test_extra_every_curve_both_stages(tmp_path, curve):
    m, mode = on_device(extra_nurbs.main, ["--curve", curve, "--control-points", "4", "--epochs", "1", "--max-steps", "1",
                                           "--grid", "3", "--bn-batches", "1"] + SMALL, tmp_path / curve)
    assert m["curve"]["kind"] == curve and len(m["front"]) == 3
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


@pytest.mark.parametrize("grouping", ["spectral", "kmeans"])
def test_extra_task_grouping_on_four_tasks(tmp_path, grouping):
    argv = ["--dataset", TINY4, "--batch-size", "16", "--eval-batch-size", "32", "--grouping", grouping, "--epochs", "1",
            "--max-steps", "1", "--grid", "2", "--eval-t", "0.5", "--bn-batches", "1"]
    m, mode = on_device(extra_nurbs.main, argv, tmp_path / grouping)
    assert sorted(sum(m["groups"].values(), [])) == [f"task{i}" for i in range(4)]  # E1, E2, E3 cover the tasks
    assert m["task_affinity"] is not None
    assert_trained_on_device(mode)


@pytest.mark.parametrize("mode_", sam_mtl.MODES)
def test_sam_mtl_every_mode(tmp_path, mode_):
    m, mode = on_device(sam_mtl.main, ["--mode", mode_, "--max-steps", "1"] + SMALL, tmp_path / mode_)
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


def test_sam_mtl_parameter_free_heads(tmp_path):
    """The toy problem's heads have no parameters: their empty flat gradient must live on the device."""
    m, mode = on_device(sam_mtl.main, ["--mode", "individual", "--dataset", "toy", "--max-steps", "1"], tmp_path / "toy")
    assert mode.ops > 0


@pytest.mark.parametrize("balancing", ["none", "loss", "grad"])
def test_pml_every_balancing(tmp_path, balancing):
    m, mode = on_device(pml.main, ["--balancing", balancing, "--max-steps", "1", "--grid-n", "3"] + SMALL, tmp_path / balancing)
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


def test_palora_training_and_pareto_expansion(tmp_path):
    m, mode = on_device(palora.main, ["--max-steps", "1", "--num-prefs", "2", "--grid-points", "3"] + SMALL, tmp_path / "train")
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)
    on_device(baselines.main, ["--method", "ls", "--max-steps", "1"] + SMALL, tmp_path / "ls")  # theta_0, saved from the device
    m, mode = on_device(palora.main, ["--init-ckpt", str(tmp_path / "ls" / "checkpoint.pt"), "--max-steps", "1",
                                      "--num-prefs", "2", "--grid-points", "3"] + SMALL, tmp_path / "expand")
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


@pytest.mark.parametrize("grad_on", ["last", "all"])
def test_avgnorm_last_layer_and_all_shared(tmp_path, grad_on):
    m, mode = on_device(avgnorm.main, ["--grad-on", grad_on, "--max-steps", "1"] + SMALL, tmp_path / grad_on)
    finite_tasks(m["tasks"])
    assert_trained_on_device(mode)


def test_stl(tmp_path):
    m, mode = on_device(stl.main, ["--max-steps", "1"] + SMALL, tmp_path / "stl")
    assert_trained_on_device(mode)


# ----------------------------------------------------------------------------------------------
# Host round-trips per training step (python -m reproduce.benchmark --host-syncs)
# ----------------------------------------------------------------------------------------------
def test_benchmark_host_sync_counts(tmp_path):
    """Logging reads its sums once per epoch: a plain LS step and a gradient-balanced PML step make no
    host round-trip at all; the rules with a host solver make one (the T x T Gram), SAM-MTL keeps its
    two algorithmic branches (flat sub-problem present, divergence guard), AvgNorm its two guards."""
    from reproduce import benchmark as B

    rows = ["baselines ls", "baselines mgda", "pml grad", "sam_mtl direct", "avgnorm last"]
    report = B.main(["--host-syncs", "--methods", ",".join(rows), "--out", str(tmp_path), "--data-root", DATA, "--quiet"])
    per = {r["method"]: r["per_step"] for r in report["host_syncs"]}
    assert sorted(per) == sorted(rows)
    assert per["baselines ls"] == 0 and per["pml grad"] == 0, per
    assert per["baselines mgda"] == 1 and per["sam_mtl direct"] <= 3 and per["avgnorm last"] <= 2, per
    md = (tmp_path / "host_syncs.md").read_text()
    assert "| baselines ls | 0 |" in md and (tmp_path / "host_syncs.json").exists()


def test_benchmark_host_sync_flags_are_checked(tmp_path):
    from common.device import UsageError
    from reproduce import benchmark as B

    for flags in (["--host-sync-steps", "6,2"], ["--host-sync-steps", "2,40"], ["--methods", "no-such-script"]):
        with pytest.raises(UsageError):
            B.main(["--host-syncs", "--out", str(tmp_path), "--quiet"] + flags)
