"""Every rule of common/aggregators.py runs end to end through methods/baselines.py, on
multimnist-lite and on toy, and writes a sensible metrics.json."""
import csv
import json
import math
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import baselines  # noqa: E402
from common.aggregators import AGGREGATORS  # noqa: E402

FLAGS = ["--no-progress", "--quiet", "--data-root", os.path.join(ROOT, "data")]


@pytest.mark.parametrize("dataset", ["multimnist-lite", "toy"])
@pytest.mark.parametrize("method", sorted(AGGREGATORS))
def test_every_method_runs(tmp_path, method, dataset):
    out = tmp_path / method
    baselines.main(["--method", method, "--dataset", dataset, "--max-steps", "3", "--out", str(out)] + FLAGS)
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == method and m["steps"] == 3
    assert len(m["mean_weights"]) == 2 and all(math.isfinite(w) for w in m["mean_weights"])
    for task in m["tasks"].values():
        assert all(math.isfinite(v) for v in task.values())
    assert m["aggregation_seconds"] >= 0 and m["clip_grad"] == AGGREGATORS[method](2).default_max_norm


def test_hyper_override_and_bad_hyper(tmp_path):
    from common.device import UsageError

    out = tmp_path / "cagrad"
    baselines.main(["--method", "cagrad", "--hyper", "c=0.2", "--max-steps", "2", "--out", str(out)] + FLAGS)
    with pytest.raises(UsageError):
        baselines.main(["--method", "cagrad", "--hyper", "nonsense", "--max-steps", "2", "--out", str(tmp_path / "x")] + FLAGS)
    with pytest.raises(UsageError):
        baselines.main(["--method", "cagrad", "--hyper", "no_such_knob=1", "--max-steps", "2", "--out", str(tmp_path / "y")] + FLAGS)


def test_log_grads_cosine_and_norms_by_hand():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([1.0, 1.0])  # the aggregated gradient d
    G = torch.tensor([[3.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    cos, norms = baselines.cosine_and_norms(G, [p])
    assert torch.allclose(cos, torch.tensor([2 ** -0.5, -(2 ** -0.5), 0.0])) and torch.allclose(norms, torch.tensor([3.0, 2.0, 0.0]))


def test_log_grads_writes_the_avgnorm_diagnostics(tmp_path):
    out = tmp_path / "diag"
    baselines.main(["--method", "ls", "--log-grads", "1", "--max-steps", "1", "--out", str(out), "--no-progress", "--quiet"])
    row = next(csv.DictReader(open(out / "log.csv")))
    for t in ("left", "right"):
        assert -1.0 <= float(row[f"cos_{t}"]) <= 1.0 and float(row[f"grad_norm_{t}"]) > 0
    # LS: d = g_1 + g_2 on the last layer, so g_1.d + g_2.d = ||d||^2 > 0: at least one task pulls along d (one step)
    assert max(float(row["cos_left"]), float(row["cos_right"])) > 0


def test_help_prints_the_defaults_table_and_config_records_the_resolved_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        baselines.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "every dataset: eval_every=1, log_grads=0" in text
    assert "  toy                  epochs 50, batch 1, Adam lr 0.002, no schedule, select last\n" in text
    assert "  celeba               epochs 15, batch 256, Adam lr 0.0003, no schedule, select best\n" in text
    assert "famo: cityscapes gamma=0.01; nyuv2 gamma=0.001; celeba gamma=0.001" in text  # the rules' dataset settings
    out = tmp_path / "dwa"
    baselines.main(["--method", "dwa", "--dataset", "toy", "--max-steps", "2", "--out", str(out)] + FLAGS)
    args = json.loads((out / "config.json").read_text())["args"]
    assert (args["epochs"], args["batch_size"], args["lr"], args["select"], args["eval_every"], args["log_grads"]) == \
        (50, 1, 0.002, "last", 1, 0)


@pytest.mark.parametrize("flags", [["--eval-every", "0"], ["--log-grads", "-1"]])
def test_bad_eval_every_and_log_grads_exit_2(flags):
    with pytest.raises(SystemExit) as e:
        baselines.parse_args(flags)
    assert e.value.code == 2
