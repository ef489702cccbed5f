"""A run never corrupts or loses its --out folder, and divergence stops cleanly: NaN / overflow ->
exit status 3 with the last finite checkpoint kept; one writer per --out (lock, stale-lock takeover);
--resume refuses other settings without rewriting config.json; --overwrite keeps the old run until
the new one has a checkpoint; an unwritable --out is one line and exit 2; seconds over resumes."""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import baselines  # noqa: E402
import common.train as train  # noqa: E402
from common import rundir  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.diverge import EXIT_DIVERGED, Diverged, FiniteWatch  # noqa: E402
from reproduce.tiny_data import make_scene  # noqa: E402

FLAGS = ["--no-progress", "--quiet", "--data-root", os.path.join(ROOT, "data")]
SMALL = ["--method", "ls", "--batch-size", "1000"] + FLAGS  # multimnist-lite: 10 steps per epoch
SCRIPT = os.path.join(ROOT, "methods", "baselines.py")


def _cli(args, **kw):
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def _one_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _snapshot(out, names=("checkpoint.pt", "log.csv", "metrics.json", "config.json")):
    return {f: (out / f).read_bytes() for f in names if (out / f).exists()}


# ---- 1. divergence ---------------------------------------------------------------------------------
def test_nan_loss_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    real, calls = train.task_losses, [0]

    def poisoned(*a, **k):  # task "right" turns NaN from the 15th step on (epoch 2 of 3)
        L = real(*a, **k)
        calls[0] += 1
        return L * torch.tensor([1.0, float("nan")]) if calls[0] >= 15 else L
    monkeypatch.setattr(train, "task_losses", poisoned)
    out = tmp_path / "o"
    with pytest.raises(Diverged) as e:
        baselines.main(SMALL + ["--epochs", "3", "--out", str(out)])
    msg = str(e.value)
    assert "task right" in msg and "step 15" in msg and "--lr" in msg and "\n" not in msg
    assert "epoch 1 (step 10)" in msg
    blob = torch.load(out / "checkpoint.pt", weights_only=False)
    assert blob["epoch"] == 0 and blob["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in blob["state"]["tracked"]["model"].values() if v.is_floating_point())
    with open(out / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0"]  # no row for the diverged epoch
    assert not (out / "metrics.json").exists()


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    out = tmp_path / "o"
    run = train.Run(baselines.parse_args(SMALL + ["--out", str(out)]), "ls")
    run.global_step = 7
    run.save_checkpoint(0, {"model": {"w": torch.ones(3)}})
    good = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(Diverged, match=r"model\.w is not finite after step 7.*keeps epoch 1 \(step 7\)"):
        run.save_checkpoint(1, {"model": {"w": torch.tensor([1.0, float("inf"), 0.0])}, "opt": {}})
    assert (out / "checkpoint.pt").read_bytes() == good


def test_watch_reads_nothing_back_until_polled():
    w = FiniteWatch()
    w.observe(torch.tensor([1.0, 2.0, 3.0]), 1)
    w.observe(torch.tensor([1.0, float("inf"), float("nan")]), 2)
    w.observe(torch.tensor([float("nan"), 1.0, 1.0]), 3)  # later: the first bad step is kept
    w.observe(torch.tensor([float("nan")]), 4, task_ids=[0])
    assert w.first.tolist() == [2, 1]
    assert w.poll() == (2, 1)


@pytest.mark.parametrize("lr,needle", [("1e20", "is not finite at step"), ("1e300", "overflows")])
def test_divergence_is_one_line_and_its_own_exit_status(tmp_path, lr, needle):
    r = _cli(["--lr", lr, "--max-steps", "3", "--out", str(tmp_path / "o")] + SMALL)
    assert r.returncode == EXIT_DIVERGED == 3, r.stderr
    line = _one_line(r.stderr)
    assert "diverged" in line and needle in line and "step" in line
    assert not (tmp_path / "o" / "checkpoint.pt").exists() and not (tmp_path / "o" / "metrics.json").exists()


def test_help_documents_the_exit_statuses():
    r = _cli(["--help"])
    assert r.returncode == 0 and "exit status:" in r.stdout and "  3    training diverged" in r.stdout


# ---- 2. one writer per --out --------------------------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from common.rundir import OutLock; OutLock(sys.argv[2]).acquire(); print('held', flush=True); "
                               "time.sleep(120)", ROOT, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _cli(["--max-steps", "1", "--out", str(out)] + SMALL)
        assert r.returncode == 2, r.stderr
        line = _one_line(r.stderr)
        assert f"in use by process {holder.pid}" in line and str(out) in line
        assert not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the lock file behind: the next run takes it over and runs
    assert (out / ".lock").read_text().split()[0] == str(holder.pid)
    r = _cli(["--max-steps", "1", "--out", str(out)] + SMALL)
    assert r.returncode == 0, r.stderr
    assert f"took over the stale lock of process {holder.pid}" in r.stderr
    assert (out / "metrics.json").exists() and not (out / ".lock").exists()


def test_two_concurrent_writers_one_wins_the_other_exits_2(tmp_path):
    out = tmp_path / "o"
    procs = [subprocess.Popen([sys.executable, SCRIPT, "--seed", str(s), "--epochs", "2", "--out", str(out)] + SMALL,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(rc for rc, _ in results) == [0, 2], results
    loser = [err for rc, err in results if rc == 2][0]
    assert "in use by process" in loser or "already holds a run" in loser
    winner = [s for s, (rc, _) in zip((1, 2), results) if rc == 0][0]
    cfg, m = (json.loads((out / f).read_text()) for f in ("config.json", "metrics.json"))
    assert cfg["args"]["seed"] == m["seed"] == winner
    with open(out / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]


def test_lock_without_flock_uses_pid_and_host(tmp_path, monkeypatch):
    import fcntl
    import socket

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    lock = rundir.OutLock(str(tmp_path)).acquire()
    assert lock.took_over == (dead.pid, socket.gethostname())
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    lock.release()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{alive.pid} {socket.gethostname()}\n")
        with pytest.raises(UsageError, match=f"in use by process {alive.pid}"):
            rundir.OutLock(str(tmp_path)).acquire()
    finally:
        alive.kill()
        alive.wait()


# ---- 3. --resume with other settings -----------------------------------------------------------------
def test_resume_with_changed_flags_is_refused_and_config_kept(tmp_path):
    out = tmp_path / "o"
    base = ["--batch-size", "1000"] + FLAGS + ["--out", str(out)]
    baselines.main(["--method", "pcgrad", "--epochs", "1"] + base)
    before = _snapshot(out)
    with pytest.raises(UsageError) as e:
        baselines.main(["--method", "ls", "--lr", "0.01", "--epochs", "2", "--resume"] + base)
    msg = str(e.value)
    assert "--method pcgrad (now ls)" in msg and "--lr 0.001 (now 0.01)" in msg and "\n" not in msg
    assert "--epochs" not in msg  # extending a run is allowed
    assert _snapshot(out) == before  # config.json (and everything else) untouched
    # a resume whose checkpoint cannot be read does not rewrite config.json either
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = _snapshot(out)
    with pytest.raises(UsageError, match="cannot read checkpoint"):
        baselines.main(["--method", "pcgrad", "--epochs", "2", "--resume"] + base)
    assert _snapshot(out) == before


def test_resume_may_extend_epochs_except_under_a_poly_schedule(tmp_path):
    out = tmp_path / "o"
    baselines.main(SMALL + ["--scheduler", "poly", "--epochs", "1", "--out", str(out)])
    with pytest.raises(UsageError, match=r"--epochs 1 \(now 2\)"):  # poly's lr depends on the epoch count
        baselines.main(SMALL + ["--scheduler", "poly", "--epochs", "2", "--out", str(out), "--resume"])


def test_resume_cli_is_one_line_exit_2(tmp_path):
    out = tmp_path / "o"
    assert _cli(["--max-steps", "2", "--out", str(out)] + SMALL).returncode == 0
    r = _cli(["--max-steps", "2", "--out", str(out), "--resume", "--seed", "5"] + SMALL)
    assert r.returncode == 2 and "--seed 0 (now 5)" in _one_line(r.stderr)


def test_seconds_are_the_total_over_resumes(tmp_path):
    out = tmp_path / "o"
    baselines.main(SMALL + ["--epochs", "1", "--out", str(out)])
    first = torch.load(out / "checkpoint.pt", weights_only=False)["seconds"]
    time.sleep(0.05)
    baselines.main(SMALL + ["--epochs", "2", "--out", str(out), "--resume"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["seconds_since_resume"] > 0
    assert m["seconds"] == pytest.approx(first + m["seconds_since_resume"], abs=0.01)
    with open(out / "log.csv") as fh:
        secs = [float(r["seconds"]) for r in csv.DictReader(fh)]
    assert secs[1] > secs[0]


def test_resume_drops_log_rows_the_checkpoint_does_not_hold(tmp_path):
    out = tmp_path / "o"
    baselines.main(SMALL + ["--epochs", "1", "--out", str(out)])
    with open(out / "log.csv") as fh:
        text = fh.read()
    with open(out / "log.csv", "a") as fh:  # a row written just before a kill, without its checkpoint
        fh.write(text.splitlines()[1].replace("0,", "1,", 1) + "\n")
    baselines.main(SMALL + ["--epochs", "2", "--out", str(out), "--resume"])
    with open(out / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]


# ---- 4. --overwrite keeps the previous run until the new one has a checkpoint -------------------------
def test_overwrite_with_a_corrupt_training_file_keeps_the_old_run(tmp_path):
    root, out = tmp_path / "data", tmp_path / "o"
    make_scene(str(root), "cityscapes", n_train=4, n_val=2)
    flags = ["--dataset", "cityscapes", "--data-root", str(root), "--batch-size", "4", "--max-steps", "1",
             "--no-progress", "--quiet", "--out", str(out)]
    assert _cli(flags).returncode == 0
    before = _snapshot(out)
    assert set(before) == {"checkpoint.pt", "log.csv", "metrics.json", "config.json"}
    (root / "cityscapes" / "train" / "image" / "2.npy").write_bytes(b"\x93NUMPY garbage")  # found at the first batch
    r = _cli(flags + ["--overwrite"])
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert "2.npy" in line and "not a valid NumPy .npy" in line and "allow_pickle" not in line
    assert _snapshot(out) == before
    assert not (out / rundir.ASIDE_NAME).exists() and not (out / ".lock").exists()


def test_a_run_set_aside_by_a_killed_overwrite_is_restored(tmp_path):
    out = tmp_path / "o"
    baselines.main(SMALL + ["--max-steps", "2", "--out", str(out)])
    before = _snapshot(out)
    rundir.set_aside(str(out))  # what --overwrite does first; then the process is killed
    rundir._ASIDE.clear()
    (out / "config.json").write_text("{}")  # the new run's first file
    r = _cli(["--max-steps", "2", "--out", str(out), "--resume"] + SMALL)
    assert r.returncode == 0, r.stderr
    assert "interrupted --overwrite" in r.stderr
    assert _snapshot(out, ("log.csv", "checkpoint.pt")) == {k: before[k] for k in ("log.csv", "checkpoint.pt")}
    now, then = (json.loads(b)["run_args"] for b in ((out / "config.json").read_bytes(), before["config.json"]))
    assert {**now, "resume": False} == then  # the restored config.json was accepted, not the new run's "{}"


def test_overwrite_replaces_the_old_run_once_it_has_a_checkpoint(tmp_path):
    out = tmp_path / "o"
    baselines.main(SMALL + ["--max-steps", "2", "--out", str(out)])
    baselines.main(SMALL + ["--max-steps", "3", "--out", str(out), "--overwrite", "--seed", "4"])
    assert json.loads((out / "metrics.json").read_text())["seed"] == 4
    assert not (out / rundir.ASIDE_NAME).exists()


# ---- 5. an --out that cannot be written -----------------------------------------------------------------
@pytest.mark.parametrize("where", ["/proc/x", "FILE/sub"])
def test_unwritable_out_is_one_line_exit_2(tmp_path, where):
    (tmp_path / "FILE").write_text("a file, not a folder")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    r = _cli(["--max-steps", "1", "--out", out] + SMALL)
    assert r.returncode == 2, r.stderr
    assert f"--out {out} cannot be written" in _one_line(r.stderr)


def test_out_in_a_read_only_folder_is_one_line_exit_2(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _cli(["--max-steps", "1", "--out", str(ro / "o")] + SMALL)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2 and "cannot be written" in _one_line(r.stderr)


# ---- the console line of a many-task run ---------------------------------------------------------------
def test_many_task_console_line_is_a_summary(tmp_path):
    from common.data import TaskSpec

    names = [f"attr_{i}" for i in range(40)]
    run = train.Run.__new__(train.Run)
    run.out = str(tmp_path)

    class D:
        task_names = names
        tasks = [TaskSpec(n, "binary", 1, (("acc", True),)) for n in names]
    run.data = D()
    row = {"epoch": 0, "step": 5, "seconds": 1.5}
    row.update({f"train_loss_{n}": 0.1 + i / 100 for i, n in enumerate(names)})
    row.update({f"val_{n}_acc": 0.9 - i / 100 for i, n in enumerate(names)})
    text = run._console_row(row)
    assert len(text) < 300, text
    assert "train_loss mean" in text and "worst 0.49 (attr_39)" in text
    assert "val_acc mean" in text and "worst 0.51 (attr_39)" in text and "seconds=1.5" in text


# ---- --help of the scripts without a method table lists the per-dataset values ---------------------------
@pytest.mark.parametrize("script", ["baselines", "stl"])
def test_help_lists_the_per_dataset_defaults(script):
    mod = __import__(script)
    with pytest.raises(SystemExit):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            mod.parse_args(["--help"])
    text = buf.getvalue()
    assert "celeba               epochs 15, batch 256, Adam lr 0.0003, no schedule, select best" in text
    assert "cityscapes           epochs 200, batch 8, Adam lr 0.0001, StepLR(step 100, gamma 0.5)" in text
