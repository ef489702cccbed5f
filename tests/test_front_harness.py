"""common/train.py's pieces shared by the preference-conditioned front methods (PaLoRA, COSMOS / PHN):
the per-epoch front validation and its score, the centre preference, the test report, the front flags."""
import argparse
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import metrics  # noqa: E402
from common.data import task  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.train import (Best, add_front_arguments, check_front_arguments, front_caption, front_centre,  # noqa: E402
                          front_report, front_validation)

TASKS = [task("a", "class", 3), task("b", "class", 3)]


def fake_run(select="best"):
    """What the front functions use of a Run: its tasks, --select, the best tracker, the selection score."""
    run = SimpleNamespace(args=SimpleNamespace(select=select), data=SimpleNamespace(tasks=TASKS, num_tasks=2), warned=0)
    run.best = Best(select)
    run.selection_score = lambda m: m["a"]["acc"] - 1.0  # any monotone score
    run.warn_if_val_is_test = lambda: setattr(run, "warned", run.warned + 1)
    return run


def evaluator(acc_a, acc_b, calls):
    """evaluate(prefs, split): accuracy of task a grows with lambda_1, of b with lambda_2."""
    def evaluate(prefs, split):
        calls.append((split, [list(map(float, p)) for p in prefs]))
        return [{"preference": [round(float(v), 6) for v in p],
                 "tasks": {"a": {"acc": acc_a * float(p[0]), "loss": 1 - float(p[0])},
                           "b": {"acc": acc_b * float(p[1]), "loss": 1 - float(p[1])}}} for p in prefs]
    return evaluate


def test_validation_scores_by_hypervolume_and_keeps_the_best_epoch():
    run, history, calls = fake_run(), [], []
    model = torch.nn.Linear(2, 2)
    grid = metrics.evaluation_grid(2, 3)
    cols, front = front_validation(run, evaluator(0.8, 0.8, calls), grid, 0, history, model)
    assert cols["val_hypervolume"] == pytest.approx(metrics.front_summary(front, TASKS)["hypervolume"]) and cols["val_hypervolume"] > 0
    assert history == [(0, front)] and calls[0][0] == "val" and run.best.epoch == 0 and run.warned == 1
    front_validation(run, evaluator(0.5, 0.5, calls), grid, 1, history, model)  # a smaller front: not kept
    assert run.best.epoch == 0 and run.best.score == pytest.approx(cols["val_hypervolume"])
    front_validation(run, evaluator(0.9, 0.9, calls), grid, 2, history, model)
    assert run.best.epoch == 2 and [e for e, _ in history] == [0, 1, 2]
    last = fake_run("last")
    front_validation(last, evaluator(0.8, 0.8, []), grid, 0, [], model)
    assert last.best.state is None and last.warned == 0  # --select last: nothing kept, no warning


def test_without_a_hypervolume_the_score_is_the_mean_selection_score(monkeypatch):
    real = metrics.front_summary
    monkeypatch.setattr(metrics, "front_summary", lambda *a, **k: {**real(*a, **k), "hypervolume": None})  # past the work budget
    run = fake_run()
    front_validation(run, evaluator(0.8, 0.8, []), metrics.evaluation_grid(2, 3), 0, [], torch.nn.Linear(2, 2))
    assert run.best.score == pytest.approx(np.mean([0.8 * x - 1.0 for x in (1.0, 0.5, 0.0)]))


def test_centre_comes_from_the_grid_when_it_holds_it_else_it_is_evaluated():
    calls = []
    ev = evaluator(1.0, 1.0, calls)
    front = ev(metrics.evaluation_grid(2, 3), "test")
    assert front_centre(front, ev, "test") == front[1]["tasks"] and len(calls) == 1
    even = ev(metrics.evaluation_grid(2, 2), "test")  # (1, 0), (0, 1): no centre
    assert front_centre(even, ev, "val") == {"a": {"acc": 0.5, "loss": 0.5}, "b": {"acc": 0.5, "loss": 0.5}}
    assert calls[-1] == ("val", [[0.5, 0.5]])


def test_report_holds_the_front_its_summary_centre_and_best_per_task():
    rep = front_report(fake_run(), evaluator(0.8, 0.6, []), metrics.evaluation_grid(2, 3))
    assert [f["preference"] for f in rep["front"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert rep["tasks"] == rep["front"][1]["tasks"] and rep["centre_preference"] == [0.5, 0.5]
    assert rep["best_per_task"] == {"a": 0.8, "b": 0.6} and rep["hypervolume_split"] == metrics.HV_SPLIT
    assert rep["hypervolume"] == pytest.approx(0.4 * 0.3)  # (.8, 0), (.4, .3), (0, .6) against (0, 0): one box
    assert front_caption(rep) == f"HV {rep['hypervolume']:.4f}, Spearman {rep['spearman']:.4f}, non-dominated 3/3"


def test_front_flags_are_checked_in_one_line():
    p = argparse.ArgumentParser()
    add_front_arguments(p)
    data = SimpleNamespace(num_tasks=2, task_names=["a", "b"])
    args = p.parse_args(["--hv-ref", "0.5,1"])
    check_front_arguments(args, data)
    assert args.hv_ref_values == [0.5, 1.0] and args.grid_points == 11
    for argv, needle in ((["--grid-points", "1"], "--grid-points"), (["--eval-batches", "0"], "--eval-batches"),
                         (["--hv-ref", "x"], "comma-separated"), (["--hv-ref", "1,2,3"], "needs 2 values")):
        with pytest.raises(UsageError, match=needle):
            check_front_arguments(p.parse_args(argv), data)
