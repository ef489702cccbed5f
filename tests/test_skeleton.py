"""The training-loop skeleton of common/train.py that every method's main() uses: named state
(`Run.track` / `Run.values` / `Run.checkpoint`, loaded with weights_only=True), best-epoch tracking
(`Best`), the evaluation cadence (`Run.eval_due`), phases with their share of --max-steps and a
--resume inside a phase, and the one defaults table (`resolved_defaults`, `Derived`, `defaults_table`)."""
import csv
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import stl  # noqa: E402
import common.train as train  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.train import Best, Derived, Run, base_parser, defaults_table, resolved_defaults  # noqa: E402

FLAGS = ["--no-progress", "--quiet", "--data-root", os.path.join(ROOT, "data"), "--batch-size", "1000"]


def _args(out, *extra):
    p = base_parser("skeleton")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--knob", type=float, default=None)
    return p.parse_args(FLAGS + ["--out", str(out)] + list(extra))


# ---- Best ------------------------------------------------------------------------------------------
def test_best_keeps_a_copy_of_the_best_state_only_under_select_best():
    b = Best("best")
    w = torch.zeros(2)
    assert b.offer(1.0, {"w": w}, epoch=0)
    w += 5  # the kept copy does not move with the live tensor
    assert not b.offer(0.5, {"w": w}, epoch=1)  # worse
    assert not b.offer(float("nan"), {"w": w}, epoch=2)  # NaN never wins
    assert b.offer(2.0, [{"w": w}], epoch=3)
    got = []
    assert b.restore(got.append) == 3 and torch.equal(got[0][0]["w"], torch.full((2,), 5.0))
    last = Best("last")
    assert not last.offer(9.0, {"w": w}, 0) and last.restore(got.append) is None and len(got) == 1


def test_best_state_dict_round_trip_through_weights_only_load(tmp_path):
    b = Best("best")
    b.offer(0.25, {"w": torch.arange(3.0)}, 4)
    torch.save(b.state_dict(), tmp_path / "b.pt")
    c = Best("best")
    c.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True))
    assert (c.score, c.epoch) == (0.25, 4) and torch.equal(c.state["w"], torch.arange(3.0))
    assert not c.offer(0.2, {"w": torch.zeros(3)}, 5)


# ---- eval cadence ------------------------------------------------------------------------------------
def test_eval_due_every_n_epochs_and_at_the_last(tmp_path):
    run = Run(_args(tmp_path / "o", "--epochs", "7", "--eval-every", "3"), "skeleton")
    assert [e for e in run.epochs() if run.eval_due(e)] == [2, 5, 6]
    run = Run(_args(tmp_path / "p", "--epochs", "4"), "skeleton")  # no --eval-every: every epoch
    assert [e for e in range(4) if run.eval_due(e)] == [0, 1, 2, 3]


# ---- named state and --resume ------------------------------------------------------------------------
def _train(out, epochs, resume=False, stop_after=None):
    """A tiny loop in the skeleton's shape: a linear model on random data, Adam, best tracking."""
    args = _args(out, "--epochs", str(epochs), *(["--resume"] if resume else []))
    run = Run(args, "skeleton", load_data=False)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt, sched = run.make_optimizer(model.parameters())
    run.track(model=model, opt=opt)
    S = run.values(losses=[], noise=torch.zeros(()))
    for epoch in run.epochs():
        x = torch.randn(8, 3)  # the RNG stream continues across a resume
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.step()
        S["losses"].append(float(loss.detach()))
        S["noise"] += float(np.random.rand())  # the numpy stream too
        if run.eval_due(epoch):
            run.best.offer(-float(loss), model.state_dict(), epoch)
        run.checkpoint(epoch)
        if stop_after is not None and epoch == stop_after:
            return None
    return model, S, run.best.epoch


def test_track_and_values_resume_equals_an_uninterrupted_run(tmp_path):
    whole, S, _ = _train(tmp_path / "a", 6)
    assert _train(tmp_path / "b", 6, stop_after=2) is None
    blob = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert set(blob["state"]["tracked"]) == {"model", "opt"} and len(blob["state"]["values"]["losses"]) == 3
    resumed, S2, _ = _train(tmp_path / "b", 6, resume=True)
    assert S2["losses"] == S["losses"] and torch.equal(S2["noise"], S["noise"])
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_a_pickled_object_checkpoint_is_refused_in_one_line(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    torch.save({"epoch": 0, "global_step": 1, "state": {"rule": Best("best")}}, out / "checkpoint.pt")
    run = Run(_args(out, "--resume"), "skeleton", load_data=False)
    with pytest.raises(UsageError, match="holds Python objects") as e:
        run.track(model=torch.nn.Linear(1, 1))
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)


def test_a_tracked_object_that_does_not_fit_is_refused(tmp_path):
    _train(tmp_path / "o", 2)
    run = Run(_args(tmp_path / "o", "--epochs", "3", "--resume"), "skeleton", load_data=False)
    with pytest.raises(UsageError, match="saved model does not fit"):
        run.track(model=torch.nn.Linear(4, 1))


# ---- phases --------------------------------------------------------------------------------------------
def _staged(out, max_steps, resume=False, crash_in=None, crash_after=None):
    """Three phases of 3 epochs x 4 steps; `crash_in` = (phase, epoch) raises there, `crash_after` =
    phase raises right after that phase's leave() (a checkpoint at the phase boundary)."""
    args = _args(out, "--epochs", "3", "--max-steps", str(max_steps), *(["--resume"] if resume else []))
    run = Run(args, "skeleton", load_data=False)
    run.phases(["a", "b", "c"])
    S = run.values(trace=[])
    for i, name in enumerate("abc"):
        if not run.enter(name, seed=100 + i):
            continue
        w = torch.nn.Parameter(torch.zeros(2))
        run.track(w=torch.nn.ParameterList([w]))
        for epoch in run.epochs(3):
            for _ in range(4):
                with torch.no_grad():
                    w += torch.rand(2)
                if run.step():
                    break
            S["trace"].append((name, epoch, run.global_step, round(float(w.sum()), 6)))
            run.log_epoch(epoch, {"w": float(w.sum())})
            run.checkpoint(epoch)
            if crash_in == (name, epoch):
                raise KeyboardInterrupt
        run.leave()
        if crash_after == name:
            raise KeyboardInterrupt
    return run, S["trace"]


def test_phases_share_max_steps_and_resume_inside_a_phase(tmp_path):
    run, trace = _staged(tmp_path / "a", 30)
    # --max-steps 30 over 3 phases: a gets 30 // 3 = 10 (epochs of 4, 4, 2), b gets 20 // 2 = 10, c the last 10
    assert [t[:3] for t in trace] == [("a", 0, 4), ("a", 1, 8), ("a", 2, 10), ("b", 0, 14), ("b", 1, 18),
                                      ("b", 2, 20), ("c", 0, 24), ("c", 1, 28), ("c", 2, 30)]
    assert set(run._ph["done"]) == {"a", "b", "c"} and run.phase_seconds("b") >= 0
    with pytest.raises(KeyboardInterrupt):
        _staged(tmp_path / "b", 30, crash_in=("b", 0))
    _, resumed = _staged(tmp_path / "b", 30, resume=True)
    assert resumed == trace  # the same steps and the same random numbers as without the interruption
    with open(tmp_path / "b" / "log.csv") as fh:
        rows = [(r["phase"], r["epoch"]) for r in csv.DictReader(fh)]
    assert rows == [(t[0], str(t[1])) for t in trace]  # one row per phase epoch, none twice


def test_a_resume_at_a_phase_boundary_starts_the_next_phase_from_its_own_seed(tmp_path):
    _, trace = _staged(tmp_path / "a", 30)
    with pytest.raises(KeyboardInterrupt):
        _staged(tmp_path / "b", 30, crash_after="a")
    _, resumed = _staged(tmp_path / "b", 30, resume=True)
    assert resumed == trace


def test_each_phase_keeps_a_step_when_max_steps_is_below_the_number_of_phases(tmp_path):
    _, trace = _staged(tmp_path / "a", 2)
    assert [t[:3] for t in trace] == [("a", 0, 1), ("b", 0, 2), ("c", 0, 3)]


def test_a_resume_drops_log_rows_past_the_checkpoint_within_its_phase(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _staged(tmp_path / "o", 30, crash_in=("b", 1))
    blob = torch.load(tmp_path / "o" / "checkpoint.pt", weights_only=True)
    blob["epoch"] = 0  # as if the session had stopped between b's second log row and its checkpoint
    torch.save(blob, tmp_path / "o" / "checkpoint.pt")
    run = Run(_args(tmp_path / "o", "--epochs", "3", "--max-steps", "30", "--resume"), "skeleton", load_data=False)
    run.phases(["a", "b", "c"])
    with open(tmp_path / "o" / "log.csv") as fh:
        assert [(r["phase"], r["epoch"]) for r in csv.DictReader(fh)] == [("a", "0"), ("a", "1"), ("a", "2"), ("b", "0")]


def test_resume_with_other_phases_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _staged(tmp_path / "o", 30, crash_in=("b", 0))
    run = Run(_args(tmp_path / "o", "--epochs", "3", "--max-steps", "30", "--resume"), "skeleton", load_data=False)
    with pytest.raises(UsageError, match="other stage flags"):
        run.phases(["a", "c"])


# ---- the defaults table ------------------------------------------------------------------------------------
TABLE = {"*": {"knob": 0.5, "lr": 3e-3},
         "cityscapes": {"knob": 2.0, "epochs": 7},
         "multimnist-lite": {"knob": Derived("2 T", lambda args, data: 2.0 * data.num_tasks)}}


def test_resolution_order_global_dataset_method_method_dataset():
    d = resolved_defaults("cityscapes", TABLE)
    assert (d["knob"], d["epochs"], d["lr"], d["batch_size"]) == (2.0, 7, 3e-3, 8)
    assert resolved_defaults("nyuv2", TABLE)["knob"] == 0.5 and resolved_defaults("nyuv2")["lr"] == 1e-4


def test_run_fills_every_unset_flag_from_the_table_and_derived_after_the_data(tmp_path):
    run = Run(_args(tmp_path / "o", "--epochs", "1"), "skeleton", TABLE)
    assert run.args.knob == 4.0  # multimnist-lite has 2 tasks: 2 T
    assert run.args.lr == 3e-3 and run.args.epochs == 1  # a given flag wins
    run = Run(_args(tmp_path / "p", "--knob", "9"), "skeleton", TABLE)
    assert run.args.knob == 9.0


def m_fold(args, data):
    """T x the dataset's lr"""
    return 1e-3 * data.num_tasks


def test_a_plain_function_in_a_table_is_derived_and_a_derived_lr_is_checked_once_resolved(tmp_path):
    run = Run(_args(tmp_path / "o", "--epochs", "1"), "skeleton", {"*": {"lr": m_fold}})
    assert run.args.lr == 2e-3 and run.defaults["lr"] == 2e-3
    assert "Adam lr T x the dataset's lr" in defaults_table({"*": {"lr": m_fold}})
    with pytest.raises(UsageError, match="--lr must be a positive number"):
        Run(_args(tmp_path / "p", "--epochs", "1"), "skeleton", {"*": {"lr": lambda a, d: -1.0}})


def test_defaults_table_prints_every_resolved_value():
    text = defaults_table(TABLE)
    assert "every dataset: knob=0.5" in text
    city = next(ln for ln in text.splitlines() if ln.strip().startswith("cityscapes"))
    assert "epochs 7" in city and "knob=2" in city and "Adam lr 0.003" in city and "augment" in city
    mm = next(ln for ln in text.splitlines() if ln.strip().startswith("multimnist-lite"))
    assert "knob=2 T" in mm


def test_stl_help_prints_the_table(capsys):
    with pytest.raises(SystemExit):
        stl.parse_args(["--help"])
    assert "cityscapes" in capsys.readouterr().out
