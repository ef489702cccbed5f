"""`bash run_all.sh --slurm` on a real single-node SLURM: munged, slurmctld and slurmd (Debian's
slurm-wlm and munge, which .ci/run installs) start on localhost with a minimal slurm.conf under a
temporary folder; the generated smoke scripts of one table with two dependency waves are submitted
from another folder, an aggregation while they are queued starts none of them, one injected failure
stops its dependant at once (no hang), regeneration lists only the unfinished runs, and after the
resubmission the tables come from the SLURM runs. Skips, saying why, where the daemons cannot be
installed or started (not root, packages absent, a daemon exits)."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(REPO, "run_all.sh")
TABLE = "palora_figure4"  # 4 smoke runs in 2 waves: two LS checkpoints, then the PaLoRA expansions that start from them
FAILING = "baselines_method-ls/multimnist-lite/seed0"
DEPENDANT = "palora_rank-1_init-ckpt-ckpt-baselines_method-ls_scaling-1/multimnist-lite/seed0"
SCENE = "baselines_method-ls/cityscapes/seed0"
WAIT_S = 240  # for one submission to leave the queue

pytestmark = pytest.mark.slurm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: str, n: int = 5) -> str:
    try:
        with open(path, errors="replace") as fh:
            return " | ".join(ln.strip() for ln in fh.read().splitlines()[-n:] if ln.strip())
    except OSError:
        return "(no log)"


class Cluster:
    def __init__(self, root: str):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=os.path.join(root, "slurm.conf"), PYTHON=sys.executable)
        self.env.pop("SLURM_JOB_ID", None)

    def run(self, *argv, check=True, timeout=120, cwd=None) -> subprocess.CompletedProcess:
        p = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=timeout, cwd=cwd or self.root)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def daemon(self, name: str, argv: list, log: str) -> None:
        fh = open(os.path.join(self.root, f"{name}.console"), "w")
        self.procs[name] = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
                                            start_new_session=True)
        self.procs[name].log = log

    def dead(self) -> str:
        for name, p in self.procs.items():
            if p.poll() is not None:
                return (f"{name} exited with status {p.returncode}: {_tail(p.log)} "
                        f"{_tail(os.path.join(self.root, name + '.console'))}")
        return ""

    def wait_until(self, what: str, ok, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if ok():
                return
            why = self.dead()
            if why:
                raise RuntimeError(f"{what}: {why}")
            time.sleep(0.5)
        raise RuntimeError(f"{what}: not after {timeout:.0f} s ({self.dead() or 'daemons alive'}; slurmctld: "
                           f"{_tail(os.path.join(self.root, 'slurmctld.log'))}; slurmd: {_tail(os.path.join(self.root, 'slurmd.log'))})")

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--quiet", f"--user={pwd.getpwuid(os.geteuid()).pw_name}"], env=self.env, capture_output=True, timeout=30)
            t0 = time.time()
            while time.time() - t0 < 30:
                q = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True, timeout=30)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):  # by pid, in the reverse order of their start
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def _start(c: Cluster) -> None:
    root = c.root
    host = socket.gethostname().split(".")[0]
    for d in ("munge", "state", "spool"):
        os.makedirs(os.path.join(root, d))
    os.chmod(root, 0o755)
    os.chmod(os.path.join(root, "munge"), 0o755)
    key = os.path.join(root, "munge", "munge.key")
    with open(key, "wb") as fh:
        fh.write(os.urandom(1024))
    os.chmod(key, 0o400)
    sock = os.path.join(root, "munge", "munge.sock")
    c.daemon("munged", ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                        f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                        f"--seed-file={root}/munge/munged.seed"], os.path.join(root, "munge", "munged.log"))
    c.wait_until("munged did not create its socket", lambda: os.path.exists(sock), 20)
    with open("/proc/meminfo") as fh:
        mem_mb = next(int(ln.split()[1]) // 1024 for ln in fh if ln.startswith("MemTotal:"))
    conf = f"""ClusterName=mtltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={max(1, mem_mb - 256)} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    with open(c.env["SLURM_CONF"], "w") as fh:
        fh.write(conf)
    c.daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", c.env["SLURM_CONF"]], os.path.join(root, "slurmctld.log"))
    c.daemon("slurmd", ["slurmd", "-D", "-f", c.env["SLURM_CONF"], "-N", host], os.path.join(root, "slurmd.log"))

    def idle():
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], env=c.env, capture_output=True, text=True, timeout=30)
        return p.returncode == 0 and p.stdout.strip() in ("idle", "mixed")

    c.wait_until("the node did not become idle", idle, 90)


@pytest.fixture(scope="module")
def cluster():
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
               if shutil.which(b) is None]
    if missing:
        pytest.skip(f"real-SLURM test: {', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("real-SLURM test: needs root to start slurmd (SlurmdUser=root)")
    root = tempfile.mkdtemp(prefix="mtl-slurm-", dir="/tmp")  # short: the munge socket path is limited to 108 bytes
    c = Cluster(root)
    try:
        _start(c)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"real-SLURM test: the daemons could not start here: {e}")
    yield c
    c.stop()
    shutil.rmtree(root, ignore_errors=True)


def _submit(c: Cluster, submit: str, *args, cwd: str) -> list[str]:
    p = c.run("bash", submit, *args, cwd=cwd)
    ids = [ln.split("job ")[1].split(",")[0] for ln in p.stdout.splitlines() if ln.startswith("wave ")]
    assert len(ids) == 2, p.stdout
    return ids


def _wait_gone(c: Cluster, ids: list[str]) -> float:
    t0 = time.time()
    while time.time() - t0 < WAIT_S:
        q = c.run("squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r", check=False)
        if not q.stdout.strip():
            return time.time() - t0
        assert not c.dead(), c.dead()
        time.sleep(2)
    raise AssertionError(f"jobs {ids} still queued after {WAIT_S} s:\n{q.stdout}")


def _out(res: str, key: str) -> str:
    with open(os.path.join(res, "slurm", "logs", key.replace("/", "__") + ".out")) as fh:
        return fh.read()


def test_smoke_table_through_real_slurm(cluster, tmp_path):
    c = cluster
    res = str(tmp_path / "smoke")
    elsewhere = str(tmp_path / "elsewhere")  # submit from a folder that is not the repository
    os.makedirs(elsewhere)
    generate = ["bash", RUN_ALL, "--smoke", "--only", TABLE, "--results", res, "--slurm"]
    aggregate = ["bash", RUN_ALL, "--smoke", "--only", TABLE, "--results", res]

    p = c.run(*generate, timeout=300)
    assert "2 wave script(s) with 4 array task(s)" in p.stdout, p.stdout
    folder = os.path.join(res, "slurm")
    submit = os.path.join(folder, "submit.sh")
    for k in (0, 1):
        script = open(os.path.join(folder, f"wave{k}.sbatch")).read()
        assert "#SBATCH --gres" not in script and "#SBATCH --cpus-per-task=1" in script  # --smoke runs on the CPU
        assert f"PY={sys.executable}\n" in script or f"PY='{sys.executable}'\n" in script
        assert f"#SBATCH --output={folder}/logs/wave{k}_%A_%a.out" in script

    # one wave-0 run fails: a corrupt checkpoint that its --resume cannot read
    bad = os.path.join(res, "runs", *FAILING.split("/"))
    os.makedirs(bad)
    with open(os.path.join(bad, "checkpoint.pt"), "w") as fh:
        fh.write("not a checkpoint")

    ids = _submit(c, submit, "--hold", cwd=elsewhere)
    # aggregation while every task is queued: starts none of them, writes the tables
    p = c.run(*aggregate, timeout=300)
    assert "4 queued or running under SLURM" in p.stdout and "4 run(s) left to SLURM" in p.stdout, p.stdout
    assert not os.path.exists(os.path.join(res, "logs")), "the aggregation started a run that SLURM owns"
    c.run("scontrol", "release", *ids)
    took = _wait_gone(c, ids)  # the dependant of the failed run does not wait forever
    print(f"first submission left the queue in {took:.0f} s")

    assert "FAIL" in _out(res, FAILING) and "cannot read checkpoint" in _out(res, FAILING)
    assert f"not started: it starts from {FAILING}, which did not finish" in _out(res, DEPENDANT)
    for key in (SCENE, "palora_rank-4_num-prefs-5_balance-grad_init-ckpt-ckpt-baselines_method-ls/cityscapes/seed0"):
        assert "1/1 ok" in _out(res, key), _out(res, key)
    # the scene run is the local runner's smoke run: 1/8-width backbone, small checkpoint
    scene = os.path.join(res, "runs", *SCENE.split("/"))
    assert json.load(open(os.path.join(scene, "metrics.json")))["parameters"] < 1_000_000
    assert os.path.getsize(os.path.join(scene, "checkpoint.pt")) < 20 * 2**20
    assert "smoke: segnet / mtan built with filters (8, 16, 32, 64, 64)" in \
        open(os.path.join(res, "logs", SCENE.replace("/", "__") + ".log")).read()

    # regeneration lists only the unfinished runs: the failed one and its dependant
    p = c.run(*generate, timeout=300)
    assert "2 finished, 2 to run" in p.stdout and "2 wave script(s) with 2 array task(s)" in p.stdout, p.stdout
    listed = [ln.split("\t")[1] for ln in open(os.path.join(folder, "tasks.txt")).read().splitlines()]
    assert listed == [FAILING, DEPENDANT]

    os.remove(os.path.join(bad, "checkpoint.pt"))
    ids2 = _submit(c, submit, cwd=elsewhere)
    took = _wait_gone(c, ids2)
    print(f"second submission left the queue in {took:.0f} s")
    p = c.run(*aggregate, "--no-run", timeout=300)
    assert "runs: 4 finished, 0 failed" in p.stdout, p.stdout

    # every run of the table ran under SLURM, in the job that submitted.tsv records for it
    submitted = {}
    for ln in open(os.path.join(folder, "submitted.tsv")).read().splitlines():
        _, job, idx, key = ln.split("\t")
        submitted[key] = f"{job}_{idx}"
    assert len(submitted) == 4
    for key, job in submitted.items():
        assert f"SLURM job {job} on " in _out(res, key) and "1/1 ok" in _out(res, key), (key, _out(res, key))
    md = open(os.path.join(res, "tables", f"{TABLE}.md")).read()
    for row in ("| LS checkpoint θ0 (seed 0) | 1/1 |", "| PaLoRA expansion, α = 1 | 1/1 |"):
        assert row in md, md
