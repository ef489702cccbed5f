"""The runner behind `bash run_all.sh`: plan every run of the registry, skip the finished ones, run the
rest N at a time (spread over the visible GPUs), or write a SLURM job-array script; then aggregate.

    python -m reproduce                       # = bash run_all.sh
    python -m reproduce --smoke --jobs 2      # every table's pipeline on tiny offline data, CPU
    python -m reproduce --only pml_table4,pml_figure4 --seeds 0,1,2
    python -m reproduce --slurm               # writes results/slurm/{waveK.sbatch, submit.sh}, submits nothing
    python -m reproduce --list                # the plan, without running anything

A run is `python methods/<script>.py <block flags> <row flags> --dataset D --seed S --out
<results>/runs/<slug>/<D>/seed<S> --resume`; it is finished when its metrics.json exists, so an
interrupted reproduction continues where it stopped (unfinished runs resume from their checkpoint).
The same (script, flags, dataset, seed) shared by several tables runs once.

Datasets: toy and the -lite MultiMNIST datasets are offline. Where a table's dataset is absent from
--data-root, a block with an offline stand-in (MultiMNIST -> multimnist-lite) runs on it and its
table says so (--no-standins skips it instead); the other blocks are skipped, and the end of the
output lists which data under --data-root would enable them. --smoke replaces every dataset by an
offline one: the tiny real-format files of reproduce/tiny_data.py (Cityscapes, NYUv2, CelebA,
UTKFace, Census) or multimnist-lite, with --max-steps and one epoch, on the CPU, one seed, and the
fewest rows per table that still exercise its pipeline (results under results/smoke/).

SLURM (--slurm): one job-array script per dependency wave, each task one run named by its key, run
by the interpreter that wrote the scripts exactly as the local runner would run it (smoke settings,
timeout, checkpoint pruning); submit.sh submits the waves in order and records the job ids, and
run_all.sh never starts a run that SLURM has queued or running (see write_slurm, slurm_owned).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from reproduce import registry as reg  # noqa: E402
from reproduce.registry import Block, CheckpointOf, Entry, Method, Row  # noqa: E402

OFFLINE = ("toy", "multimnist-lite", "multimnist3-lite")
# What must exist under --data-root for each dataset (data/README.md has where to get it)
DATA_NEEDS = {
    "multimnist": ("MNIST/raw/", "the MNIST IDX files train-images-idx3-ubyte ... t10k-labels-idx1-ubyte (or .gz)"),
    "multimnist3": ("MNIST/raw/", "MNIST IDX files"),
    "multifashion": ("FashionMNIST/raw/", "Fashion-MNIST IDX files"),
    "multifashion-mnist": ("MNIST/raw/ and FashionMNIST/raw/", "MNIST and Fashion-MNIST IDX files"),
    "census": ("census/", "UCI Adult adult.data and adult.test"),
    "utkface": ("utkface/", "UTKFace <age>_<gender>_<race>_<date>.jpg images"),
    "celeba": ("celeba/", "CelebA img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt"),
    "cityscapes": ("cityscapes/", "MTAN-preprocessed CityScapes {train,val}/{image,label_7,depth}/<i>.npy"),
    "nyuv2": ("nyuv2/", "MTAN-preprocessed NYUv2 {train,val}/{image,label,depth,normal}/<i>.npy"),
    "nyud": ("NYUD_MT/", "the dense-prediction survey's NYUD_MT: images/, segmentation/, depth/, normals/, edge/, gt_sets/{train,val}.txt"),
    "pascal-context": ("PASCAL_MT/", "the dense-prediction survey's PASCAL_MT: JPEGImages/, semseg/, human_parts/, "
                                     "normals_distill/, sal_distill/, pascal-context/, ImageSets/Context/{train,val}.txt"),
}
SMOKE_STANDIN = {"multimnist": "multimnist-lite", "multimnist3": "multimnist3-lite", "multifashion": "multimnist-lite",
                 "multifashion-mnist": "multimnist-lite"}
SMOKE_MAX_STEPS = 2
# Flags that only set the training budget: a smoke run drops them (it trains 1 epoch of --max-steps
# steps anyway), so that tables sharing a pipeline share their smoke runs
BUDGET_FLAGS = ("--epochs", "--batch-size", "--lr", "--weight-decay")
SMOKE_KEEP_CKPT_MB = 20  # a finished run's checkpoint larger than this is deleted (--smoke, --prune-checkpoints)
# Smoke runs build the scene backbones (SegNet, MTAN: 25-44M parameters, ~1 GB checkpoints) at 1/8
# width through common.models.register_model, so a scene smoke run takes seconds, not minutes
SMOKE_SCENE_FILTERS = (8, 16, 32, 64, 64)
SMOKE_ASPP_WIDTH = 16
SMOKE_TIMEOUT = 420
# Extra flags a smoke run passes to a script (on a dataset, * = any) when its --help offers them:
# shorter toy runs and evaluation sweeps
SMOKE_EXTRA = [("pml", "toy", ("--steps", "40")), ("palora", "*", ("--eval-batches", "2")),
               ("extra_nurbs", "*", ("--grid", "5")), ("extra_nurbs", "*", ("--bn-batches", "2")),
               ("extra_nurbs", "*", ("--eval-batches", "2"))] + [
    # the dense suite's tiny files at a tiny size and a 9-threshold odsF, for every script
    ("*", ds, flags) for ds in ("nyud", "pascal-context") for flags in (("--image-size", "32x32"), ("--edge-thresholds", "9"))]
# Modules the CPU launcher imports once; each run is then forked from it (saves the ~3-4 s of
# importing torch per run, which dominates a smoke run)
PRELOAD = ["numpy", "torch", "torchvision", "matplotlib", "matplotlib.pyplot", "scipy.optimize", "common.data",
           "common.real_data", "common.models", "common.metrics", "common.train", "common.aggregators"]


# --------------------------------------------------------------------------------------------
# Data availability
# --------------------------------------------------------------------------------------------
def _idx_present(raw: str) -> bool:
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all(os.path.isfile(os.path.join(raw, s)) or os.path.isfile(os.path.join(raw, s + ".gz")) for s in stems)


def dataset_present(name: str, root: str) -> bool:
    """A cheap check that `name`'s files are where its loader looks (the loader checks the rest)."""
    if name in OFFLINE:
        return True
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    if name in ("multimnist", "multimnist3"):
        return _idx_present(j("MNIST", "raw"))
    if name == "multifashion":
        return _idx_present(j("FashionMNIST", "raw"))
    if name == "multifashion-mnist":
        return _idx_present(j("MNIST", "raw")) and _idx_present(j("FashionMNIST", "raw"))
    if name == "census":
        return os.path.isfile(j("census", "adult.data")) and os.path.isfile(j("census", "adult.test"))
    if name == "utkface":
        return os.path.isdir(j("utkface")) and any(f.lower().endswith(".jpg") for f in os.listdir(j("utkface")))
    if name == "celeba":
        return os.path.isfile(j("celeba", "list_attr_celeba.txt")) and os.path.isdir(j("celeba", "img_align_celeba"))
    if name in ("cityscapes", "nyuv2"):
        return all(os.path.isdir(j(name, s, "image")) for s in ("train", "val"))
    if name == "nyud":
        return os.path.isfile(j("NYUD_MT", "gt_sets", "val.txt"))
    if name == "pascal-context":
        return os.path.isfile(j("PASCAL_MT", "ImageSets", "Context", "val.txt"))
    return False


def data_hint(name: str, root: str) -> str:
    """What would enable dataset `name`: '<root>/<folder>: <files> (see data/README.md)'."""
    where, what = DATA_NEEDS.get(name, ("", "no loader in common/data.py"))
    return f"{os.path.join(root, where)}: {what} (see data/README.md)" if where else what


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclass
class Job:
    key: str
    script: str
    flags: list
    dataset: str
    seed: int
    out: str
    data_root: str
    deps: list = field(default_factory=list)
    status: str = "todo"  # finished | todo | skipped | done | failed
    reason: str = ""
    log: str = ""
    seconds: float | None = None

    def argv(self, python: str, extra=()) -> list[str]:
        return [python, os.path.join("methods", f"{self.script}.py"), *self.flags, "--dataset", self.dataset,
                "--data-root", self.data_root, "--seed", str(self.seed), "--out", self.out, "--resume", *extra]


@dataclass
class RowPlan:
    row: Row
    jobs: dict  # seed -> Job
    skipped: str = ""


@dataclass
class BlockPlan:
    block: Block
    dataset: str | None
    data_root: str
    status: str  # run | standin | absent | unsupported
    reason: str
    rows: list


@dataclass
class EntryPlan:
    entry: Entry
    blocks: list


@dataclass
class Options:
    results: str = "results"
    data_root: str = "data"
    smoke: bool = False
    seeds: tuple | None = None
    device: str = "auto"
    max_steps: int | None = None
    standins: bool = True
    python: str = sys.executable
    quiet_runs: bool = True
    prune_checkpoints: bool = False

    @property
    def runs_root(self) -> str:
        return os.path.join(self.results, "runs")

    @property
    def smoke_data(self) -> str:
        return os.path.join(self.results, "data")


def slug(script: str, flags) -> str:
    """A readable folder name for (script, flags): baselines_method-ls_model-mtan_augment."""
    parts, i, flags = [script], 0, list(flags)
    while i < len(flags):
        tok = str(flags[i])
        if tok.startswith("--") and i + 1 < len(flags) and not str(flags[i + 1]).startswith("--"):
            parts.append(f"{tok[2:]}-{flags[i + 1]}")
            i += 2
        else:
            parts.append(tok.lstrip("-"))
            i += 1
    s = re.sub(r"[^A-Za-z0-9._,=+-]+", "-", "_".join(parts)).strip("-_")
    if len(s) > 96:
        s = s[:80] + "-" + hashlib.sha1(s.encode()).hexdigest()[:10]
    return s


_HELP_CACHE: dict[str, set | None] = {}


def script_flags(script: str, python: str = sys.executable) -> set | None:
    """Every --flag that methods/<script>.py --help mentions; None if the script is missing or broken.
    The help text is produced in-process (the script's parse_args(["--help"])), which costs no new
    interpreter; a script without parse_args is asked in a subprocess."""
    if script in _HELP_CACHE:
        return _HELP_CACHE[script]
    path = os.path.join(REPO, "methods", f"{script}.py")
    text = None
    if os.path.isfile(path):
        text = _help_in_process(script, path)
        if text is None:
            try:
                out = subprocess.run([python, path, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300,
                                     env={**os.environ, "MPLBACKEND": "Agg"})
                text = out.stdout if out.returncode == 0 else None
            except (OSError, subprocess.SubprocessError):
                text = None
    flags = set(re.findall(r"(--[A-Za-z0-9][A-Za-z0-9-]*)", text)) if text else None
    _HELP_CACHE[script] = flags
    return flags


def _help_in_process(script: str, path: str) -> str | None:
    import contextlib
    import importlib.util
    import io

    try:
        spec = importlib.util.spec_from_file_location(f"_reproduce_method_{script}", path)
        mod = importlib.util.module_from_spec(spec)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            spec.loader.exec_module(mod)
        if not hasattr(mod, "parse_args"):
            return None
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            try:
                mod.parse_args(["--help"])
            except SystemExit as e:
                if e.code not in (0, None):
                    return None
        return buf.getvalue() or None
    except Exception:  # a broken script: the subprocess fallback reports it the same way the run would
        return None


def script_problem(script: str, python: str = sys.executable) -> str:
    path = os.path.join(REPO, "methods", f"{script}.py")
    if not os.path.isfile(path):
        return f"method not available yet (methods/{script}.py does not exist)"
    if script_flags(script, python) is None:
        return f"methods/{script}.py --help fails (the method cannot start; run it by hand to see why)"
    return ""


def smoke_selection(entry: Entry, block: Block) -> list[Row]:
    """The fewest rows that exercise a block's pipeline: its single-task reference where Delta-m%
    needs it, `entry.smoke_rows` baselines, the paper's own method, and one row of every other
    method script the block uses."""
    runnable = [r for r in block.rows if r.method is not None and r.smoke]
    # CelebA's single-task reference is 40 networks: too slow for a smoke run (Delta-m% shows n/a there)
    needs_stl = (any(c.metric == "delta_m" for c in block.columns) and block.reference in ("stl", "auto")
                 and block.dataset != "celeba")
    chosen = [r for r in runnable if r.role == "stl"][:1] if needs_stl else []
    others = [r for r in runnable if r.role != "stl"]
    base = [r for r in others if r.role != "ours"][:entry.smoke_rows]
    ours = [r for r in others if r.role == "ours"][:1]
    if not base and not ours:
        base = others[:entry.smoke_rows]
    for r in base + ours:
        if r not in chosen:
            chosen.append(r)
    for r in others:  # and every other script of the block once (e.g. the PFL baselines of a front figure)
        if r.method.script not in {c.method.script for c in chosen}:
            chosen.append(r)
    return chosen


def strip_flags(tokens: list, names) -> list:
    """`tokens` without the flags `names` and their values."""
    out, i = [], 0
    while i < len(tokens):
        if isinstance(tokens[i], str) and tokens[i] in names:
            i += 2
            continue
        out.append(tokens[i])
        i += 1
    return out


class Planner:
    def __init__(self, opts: Options):
        self.opts = opts
        self.jobs: "OrderedDict[str, Job]" = OrderedDict()

    def resolve_dataset(self, block: Block) -> tuple[str | None, str, str, str]:
        """(dataset to run, data root, status, reason)."""
        o = self.opts
        if block.unsupported:
            return None, o.data_root, "unsupported", block.unsupported
        d = block.dataset
        if o.smoke:
            from reproduce.tiny_data import TINY_DATASETS

            if d in TINY_DATASETS:
                return d, o.smoke_data, "run", f"tiny {d} files in the real format (reproduce/tiny_data.py)"
            if d in SMOKE_STANDIN:
                return SMOKE_STANDIN[d], o.data_root, "standin", f"{SMOKE_STANDIN[d]} stands in for {d} in the smoke run"
            return d, o.data_root, "run", ""
        if dataset_present(d, o.data_root):
            return d, o.data_root, "run", ""
        if block.standin and o.standins:
            return (block.standin, o.data_root, "standin",
                    f"{d} is absent, so it ran on the offline stand-in {block.standin}; the real {d} needs "
                    f"{data_hint(d, o.data_root)}")
        return None, o.data_root, "absent", f"needs {d} under {data_hint(d, o.data_root)}"

    def job_for(self, method: Method, block: Block, dataset: str, data_root: str, seed: int) -> Job:
        flags, deps = [], []
        toks = list(reg.with_flags(method, block.flags).flags)
        if self.opts.smoke:
            toks = strip_flags(toks, BUDGET_FLAGS)
        for tok in toks:
            if isinstance(tok, CheckpointOf):
                dep = self.job_for(tok.method, block, dataset, data_root, tok.seed)
                deps.append(dep.key)
                flags.append(os.path.join(dep.out, tok.file))
            else:
                flags.append(str(tok))
        name = slug(method.script, [("ckpt:" + os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(f)))))
                                     if f.endswith(".pt") else f for f in flags])
        out = os.path.join(self.opts.runs_root, name, dataset, f"seed{seed}")
        key = f"{name}/{dataset}/seed{seed}"
        if key not in self.jobs:
            job = Job(key, method.script, flags, dataset, seed, out, data_root, deps)
            problem = script_problem(method.script, self.opts.python)
            if not problem:
                known = script_flags(method.script, self.opts.python) or set()
                bad = [f for f in flags if f.startswith("--") and f not in known]
                if bad:
                    problem = f"methods/{method.script}.py does not accept {' '.join(bad)} (see its --help)"
            for d in deps:
                if self.jobs[d].status == "skipped":
                    problem = problem or f"depends on {d}, which cannot run ({self.jobs[d].reason})"
            if problem:
                job.status, job.reason = "skipped", problem
            elif os.path.isfile(os.path.join(out, "metrics.json")):
                job.status = "finished"
            self.jobs[key] = job
        return self.jobs[key]

    def plan(self, entries: list[Entry]) -> list[EntryPlan]:
        o = self.opts
        plans = []
        for e in entries:
            bps = []
            for b in e.blocks:
                dataset, root, status, reason = self.resolve_dataset(b)
                chosen = smoke_selection(e, b) if o.smoke else b.rows
                rps = []
                for r in b.rows:
                    if r.method is None:
                        rps.append(RowPlan(r, {}, r.note or "not implemented in this suite"))
                        continue
                    if dataset is None:
                        rps.append(RowPlan(r, {}, reason))
                        continue
                    if r not in chosen:
                        rps.append(RowPlan(r, {}, "not part of the smoke plan"))
                        continue
                    wanted = list(r.seeds or e.seeds)
                    seeds = [s for s in wanted if s in o.seeds] if o.seeds is not None else (wanted[:1] if o.smoke else wanted)
                    jobs = {s: self.job_for(r.method, b, dataset, root, s) for s in seeds}
                    skipped = next((j.reason for j in jobs.values() if j.status == "skipped"), "")
                    if not seeds:
                        skipped = f"its seed(s) {', '.join(map(str, wanted))} are not among --seeds"
                    rps.append(RowPlan(r, jobs, skipped))
                bps.append(BlockPlan(b, dataset, root, status, reason, rps))
            plans.append(EntryPlan(e, bps))
        return plans


def plan(entries: list[Entry], opts: Options) -> tuple[list[EntryPlan], "OrderedDict[str, Job]"]:
    p = Planner(opts)
    plans = p.plan(entries)
    return plans, p.jobs


def waves(jobs: "OrderedDict[str, Job]") -> list[list[Job]]:
    """Runnable jobs grouped so that every job comes after the jobs it depends on."""
    todo = [j for j in jobs.values() if j.status == "todo"]
    done = {k for k, j in jobs.items() if j.status == "finished"}
    out = []
    while todo:
        pending = {t.key for t in todo}
        ready = [j for j in todo if all(d in done or d not in pending for d in j.deps)]
        if not ready:  # a cycle cannot happen (dependencies point to plain runs), but never loop forever
            ready = todo
        out.append(ready)
        done |= {j.key for j in ready}
        todo = [j for j in todo if j.key not in done]
    return out


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]
    except (OSError, subprocess.SubprocessError):
        return []


def cpus_available() -> int:
    """CPUs this process may use: SLURM's allocation inside a SLURM task, else every CPU."""
    try:
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def job_env(slot: int, gpus: list[str], n_jobs: int, device: str) -> dict:
    """Environment of the run in job slot `slot`: GPU gpus[slot mod len(gpus)] when there are GPUs
    (the run's --device auto / cuda then sees that one GPU as cuda:0), else an even share of the CPU
    threads. An explicit --device cuda:N keeps every GPU visible."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if gpus and device in ("auto", "cuda"):
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    else:
        threads = str(max(1, cpus_available() // max(1, n_jobs)))
        env.setdefault("OMP_NUM_THREADS", threads)
        env.setdefault("MKL_NUM_THREADS", threads)
    return env


def extra_flags(job: Job, opts: Options) -> list[str]:
    extra = ["--device", opts.device, "--no-progress"]
    if opts.quiet_runs:
        extra.append("--quiet")
    if opts.smoke or opts.max_steps:
        extra += ["--max-steps", str(opts.max_steps or SMOKE_MAX_STEPS)]
    if opts.smoke:
        extra += ["--epochs", "1"]
        known = script_flags(job.script, opts.python) or set()
        for script, ds, flags in SMOKE_EXTRA:
            if script in ("*", job.script) and ds in ("*", job.dataset) and flags[0] in known:
                extra += list(flags)
    return extra


def small_scene_backbones(filters=SMOKE_SCENE_FILTERS) -> None:
    """Re-register the segnet and mtan builders with narrower `filters` (smoke runs only)."""
    import functools

    from common import models

    for name in ("segnet", "mtan"):
        build = getattr(models, f"_build_{name}", None)
        if build is not None:
            models.register_model(name)(functools.partial(build, filters=filters))
    # the dense suite's ASPP heads (4.7M parameters each at width 256) at width 16
    for name in ("resnet18-dilated", "resnet50-dilated", "mtan-resnet18", "mtan-resnet50"):
        build = models._BUILDERS.get(name)
        if build is not None and not isinstance(build, functools.partial):
            models.register_model(name)(functools.partial(build, aspp_width=SMOKE_ASPP_WIDTH))


def _forked_run(argv: list, log: str, env: dict, threads: int, small: bool = False) -> None:
    """Child of the CPU launcher: run one method script as __main__ with its output in `log`."""
    import runpy
    import traceback

    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = 0
    try:
        import torch

        torch.set_num_threads(threads)
        if small:
            small_scene_backbones()
            print(f"[run_all] smoke: segnet / mtan built with filters {SMOKE_SCENE_FILTERS}, dense ASPP heads of width "
                  f"{SMOKE_ASPP_WIDTH}", flush=True)
        os.chdir(REPO)
        sys.argv = list(argv[1:])
        runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: B902 - report anything the script raised, then exit non-zero
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_LAUNCHER = None


def cpu_launcher():
    """A forkserver that imported torch and common/ once; None where fork is unavailable."""
    global _LAUNCHER
    if _LAUNCHER is None:
        import multiprocessing as mp

        try:
            ctx = mp.get_context("forkserver")
        except ValueError:
            return None
        os.environ.setdefault("MPLBACKEND", "Agg")
        ctx.set_forkserver_preload(PRELOAD)
        _LAUNCHER = ctx
    return _LAUNCHER


def execute(job_waves: list[list[Job]], opts: Options, n_jobs: int, timeout: float | None, say=print,
            keep=()) -> None:
    """Run every job, `n_jobs` at a time; job slot k uses GPU k mod (number of visible GPUs).
    CPU runs are forked from a launcher that has imported torch once; GPU runs are plain
    subprocesses with CUDA_VISIBLE_DEVICES set. `keep`: keys whose checkpoint a later run starts
    from (never pruned), besides the dependencies among `job_waves`."""
    gpus = visible_gpus() if opts.device in ("auto", "cuda") else []
    launcher = cpu_launcher() if opts.device == "cpu" or (opts.device == "auto" and not gpus) else None
    total = sum(len(w) for w in job_waves)
    counter = {"n": 0}
    lock = threading.Lock()
    slots = list(range(max(1, n_jobs)))
    free = list(slots)
    cpu = cpus_available()
    needed = {d for w in job_waves for j in w for d in j.deps} | set(keep)  # checkpoints other runs start from

    def one(job: Job):
        with lock:
            slot = free.pop(0)
        try:
            env = job_env(slot, gpus, n_jobs, opts.device)
            os.makedirs(os.path.dirname(job.log), exist_ok=True)
            argv = job.argv(opts.python, extra_flags(job, opts))
            t0 = time.time()
            with open(job.log, "w") as fh:
                fh.write("$ " + " ".join(shlex.quote(a) for a in argv) + "\n")
            if launcher is not None:
                proc = launcher.Process(target=_forked_run, args=(argv, job.log, {k: env[k] for k in ("MPLBACKEND",)},
                                                                  max(1, cpu // max(1, n_jobs)), opts.smoke))
                proc.start()
                proc.join(timeout)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                    rc = "timeout"
                else:
                    rc = proc.exitcode
            else:
                with open(job.log, "a") as fh:
                    try:
                        rc = subprocess.run(argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                            timeout=timeout).returncode
                    except subprocess.TimeoutExpired:
                        rc = "timeout"
            job.seconds = round(time.time() - t0, 1)
            ok = rc == 0 and os.path.isfile(os.path.join(job.out, "metrics.json"))
            job.status = "done" if ok else "failed"
            if not ok:
                job.reason = f"exit status {rc}: " + last_line(job.log)
            elif (opts.smoke or opts.prune_checkpoints) and job.key not in needed:
                prune_checkpoint(job.out)
            with lock:
                counter["n"] += 1
                say(f"[run_all] {counter['n']}/{total} {'ok  ' if ok else 'FAIL'} {job.seconds:7.1f}s  {job.key}"
                    + ("" if ok else f"  ({job.reason}; log {job.log})"))
        finally:
            with lock:
                free.append(slot)

    for w in job_waves:
        for j in w:
            j.log = os.path.join(opts.results, "logs", j.key.replace("/", "__") + ".log")
        blocked = [j for j in w if any(_dep_failed(d, job_waves) for d in j.deps)]
        for j in blocked:
            j.status, j.reason = "failed", "a run it depends on failed"
        with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
            list(pool.map(one, [j for j in w if j not in blocked]))


def prune_checkpoint(out: str, limit_mb: float = SMOKE_KEEP_CKPT_MB) -> None:
    """Delete a finished smoke run's large checkpoint.pt (metrics.json marks it finished)."""
    path = os.path.join(out, "checkpoint.pt")
    try:
        if os.path.getsize(path) > limit_mb * 2**20:
            os.remove(path)
    except OSError:
        pass


def _dep_failed(key: str, job_waves) -> bool:
    for w in job_waves:
        for j in w:
            if j.key == key:
                return j.status == "failed"
    return False


def last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
        return lines[-1][:300] if lines else "(no output)"
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------
# SLURM
# --------------------------------------------------------------------------------------------
# `--slurm` writes <results>/slurm/: one job-array script per dependency wave (waveK.sbatch, one
# array task per run, each run named by its key inside the script, which sbatch copies at
# submission, so a later regeneration cannot shift what a submitted task runs), the task files
# tasks/<key>.json (what the local runner would run, with its smoke settings, timeout and checkpoint
# pruning), and submit.sh, which submits the waves in order and records the job ids in
# submitted.tsv; run_all.sh never starts a run that SLURM has queued or running there.
SLURM_DEP_EXIT = 3  # a task whose input run did not finish stops at once with this status
SLURM_DEFAULTS = {"smoke": {"cpus": 1, "mem": "4G"}, "full": {"cpus": 4, "mem": "32G", "time": "24:00:00"}}
SLURM_TIME_MARGIN = 300  # s added to --timeout for the default --time of a task
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$")
_SLURM_MEM = re.compile(r"^\d+[KMGT]?$")
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.,:=+-]+$")


@dataclass
class SlurmResources:
    cpus: int
    mem: str
    time: str
    partition: str | None
    gres: str | None
    extra: list  # #SBATCH lines from --sbatch-args
    why: dict  # resource -> where its value comes from (written into the header)


def safe_key(key: str) -> str:
    return key.replace("/", "__")


def task_spec_path(results: str, key: str) -> str:
    return os.path.join(results, "slurm", "tasks", safe_key(key) + ".json")


def cluster_gpus() -> bool | None:
    """Whether a node of this SLURM cluster offers a GPU (sinfo's GRES column); None if sinfo cannot tell."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return any("gpu" in ln.lower() for ln in out.stdout.split())


def sbatch_lines(text: str) -> list[str]:
    """--sbatch-args '--account=me --qos high' -> ['--account=me', '--qos high'] (one #SBATCH line each)."""
    lines = []
    for tok in shlex.split(text):
        if tok.startswith("-"):
            lines.append(tok)
        elif lines:
            lines[-1] += " " + shlex.quote(tok)
        else:
            raise ValueError(f"--sbatch-args must start with an sbatch option (got {tok!r})")
    return lines


def slurm_resources(a) -> SlurmResources:
    kind = "smoke" if a.smoke else "full"
    d = SLURM_DEFAULTS[kind]
    why = {"cpus": "--slurm-cpus" if a.slurm_cpus else f"--slurm-cpus; default {d['cpus']} for {'--smoke' if a.smoke else 'full runs'}",
           "mem": "--slurm-mem" if a.slurm_mem else f"--slurm-mem; default {d['mem']} for {'--smoke' if a.smoke else 'full runs'}"}
    if a.slurm_time:
        time_limit, why["time"] = a.slurm_time, "--slurm-time"
    elif a.timeout:
        minutes = -(-int(a.timeout + SLURM_TIME_MARGIN) // 60)
        time_limit = f"{minutes // 60:02d}:{minutes % 60:02d}:00"
        why["time"] = f"--slurm-time; default --timeout {a.timeout:g} s + {SLURM_TIME_MARGIN // 60} min"
    else:
        time_limit, why["time"] = SLURM_DEFAULTS["full"]["time"], "--slurm-time; default for full runs"
    if a.slurm_gres:
        gres = None if a.slurm_gres.lower() == "none" else a.slurm_gres
        why["gres"] = "--slurm-gres"
    elif a.device.startswith("cuda"):
        gres, why["gres"] = "gpu:1", f"--slurm-gres; default gpu:1 as the runs use --device {a.device}"
    elif a.device != "auto":
        gres, why["gres"] = None, f"--slurm-gres; default none as the runs use --device {a.device}"
    else:
        has = cluster_gpus()
        if has is None:
            gres, why["gres"] = "gpu:1", ("--slurm-gres; default gpu:1 for --device auto, as sinfo could not tell whether this "
                                          "cluster has GPUs (--slurm-gres none on a cluster without)")
        elif has:
            gres, why["gres"] = "gpu:1", "--slurm-gres; default gpu:1 for --device auto, as sinfo lists GPUs"
        else:
            gres, why["gres"] = None, "--slurm-gres; default none for --device auto, as sinfo lists no GPU (the runs use the CPU)"
    why["partition"] = "--slurm-partition" if a.slurm_partition else "--slurm-partition; default: the cluster's default partition"
    return SlurmResources(a.slurm_cpus or d["cpus"], a.slurm_mem or d["mem"], time_limit, a.slurm_partition, gres,
                          sbatch_lines(a.sbatch_args or ""), why)


def _write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_slurm(job_waves: list[list[Job]], jobs: "OrderedDict[str, Job]", opts: Options, res: SlurmResources,
                timeout: float | None, command: str, again: str) -> str:
    """Write <results>/slurm/{waveK.sbatch, waveK.keys, tasks/<key>.json, tasks.txt, submit.sh}
    (submits nothing) and return the path of submit.sh. `opts.results` must be absolute."""
    import glob
    import json
    from dataclasses import asdict

    q = shlex.quote
    folder = os.path.join(opts.results, "slurm")
    logs = os.path.join(folder, "logs")
    os.makedirs(os.path.join(folder, "tasks"), exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    # a previous generation's scripts (submitted jobs run sbatch's own copy of theirs); task files stay,
    # as a queued task of an older generation still reads its run's file (the same key is the same run)
    for old in glob.glob(os.path.join(folder, "wave*.sbatch")) + glob.glob(os.path.join(folder, "wave*.keys")) + \
            [os.path.join(folder, f) for f in ("run_all.sbatch", "tasks.txt", "submit.sh")]:
        if os.path.exists(old):
            os.remove(old)
    gen = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    py = os.path.abspath(opts.python)
    task_opts = {**asdict(opts), "python": py}
    needed = {d for w in job_waves for j in w for d in j.deps}
    submit = os.path.join(folder, "submit.sh")
    run_log = lambda key: os.path.join(opts.results, "logs", safe_key(key) + ".log")  # noqa: E731
    listing, submit_lines = [], []
    for k, w in enumerate(job_waves):
        for j in w:
            spec = {"key": j.key, "script": j.script, "flags": j.flags, "dataset": j.dataset, "seed": j.seed, "out": j.out,
                    "data_root": j.data_root, "deps": [{"key": d, "out": jobs[d].out, "log": run_log(d)} for d in j.deps],
                    "keep_checkpoint": j.key in needed, "timeout": timeout, "options": task_opts,
                    "argv": j.argv(py, extra_flags(j, opts)), "generation": gen}
            _write_atomic(task_spec_path(opts.results, j.key), json.dumps(spec, indent=1) + "\n")
            listing.append(f"wave{k}\t{j.key}\t" + " ".join(q(x) for x in spec["argv"]))
        _write_atomic(os.path.join(folder, f"wave{k}.keys"), "".join(j.key + "\n" for j in w))
        sbatch = os.path.join(folder, f"wave{k}.sbatch")
        inputs = ("its runs use no checkpoint of another run" if k == 0 else
                  f"its runs start from checkpoints of earlier waves, so submit.sh submits it with "
                  f"--dependency=afterany:<wave {k - 1}>")
        header = [
            "#!/bin/bash",
            f"# Wave {k} (of waves 0-{len(job_waves) - 1}), written by `{command}` (reproduce/run.py), generation {gen}:",
            f"# {len(w)} run(s), one array task each; {inputs}. Submit every wave with",
            f"#   bash {submit}",
            f"# and write the tables afterwards with (runs SLURM has queued or running are never started by run_all.sh)",
            f"#   {again}",
            "# Resources: set them with the run_all.sh flag named beside each and regenerate, or override them",
            "# at submission (bash submit.sh --time=2:00:00 --partition=gpu passes its arguments to every sbatch):",
            f"#   --cpus-per-task={res.cpus}  [{res.why['cpus']}]",
            f"#   --mem={res.mem}  [{res.why['mem']}]",
            f"#   --time={res.time}  [{res.why['time']}]",
            (f"#   --gres={res.gres}" if res.gres else "#   no --gres") + f"  [{res.why['gres']}]",
            (f"#   --partition={res.partition}" if res.partition else "#   no --partition") + f"  [{res.why['partition']}]",
            *([f"#   {x}  [--sbatch-args]" for x in res.extra]),
            f"# A task runs the run its key names (the command: {os.path.join(folder, 'tasks', '<key>.json')}) with",
            f"# {py} (the interpreter that wrote this script), in {REPO};",
            f"# its output: {logs}/<key>.out, the run's own log: {os.path.join(opts.results, 'logs', '<key>.log')}",
            "# (<key> with / written as __). Exit status of a task: 0 the run finished (now or before), 1 it failed,",
            f"# 2 setup error, {SLURM_DEP_EXIT} not started because a run it starts from did not finish.",
            f"#SBATCH --job-name=mtl-wave{k}",
            f"#SBATCH --array=0-{len(w) - 1}",
            f"#SBATCH --cpus-per-task={res.cpus}",
            f"#SBATCH --mem={res.mem}",
            f"#SBATCH --time={res.time}",
            *([f"#SBATCH --gres={res.gres}"] if res.gres else []),
            *([f"#SBATCH --partition={res.partition}"] if res.partition else []),
            *(f"#SBATCH {x}" for x in res.extra),
            f"#SBATCH --output={os.path.join(logs, f'wave{k}_%A_%a.out')}",
        ]
        body = f"""set -euo pipefail
KEYS=(
{chr(10).join('  ' + q(j.key) for j in w)}
)
i=${{SLURM_ARRAY_TASK_ID:-}}
if ! [[ "$i" =~ ^[0-9]+$ ]] || [ "$i" -ge ${{#KEYS[@]}} ]; then
  echo "wave{k}.sbatch: array task '$i' is not one of its ${{#KEYS[@]}} task(s); submit it with: bash {q(submit)}" >&2
  exit 2
fi
KEY=${{KEYS[$i]}}
OUT={q(logs)}/${{KEY//\\//__}}.out
PY={q(py)}
echo "array task ${{SLURM_ARRAY_JOB_ID:-?}}_$i on $(hostname): run $KEY; output in $OUT"
if [ ! -x "$PY" ]; then
  echo "$PY (the interpreter that wrote this script) is not on $(hostname); regenerate with PYTHON=<python with torch> {command}" | tee -a "$OUT" >&2
  exit 2
fi
cd {q(REPO)}
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
exec "$PY" -m reproduce --slurm-task "$KEY" --results {q(opts.results)} >>"$OUT" 2>&1
"""
        _write_atomic(sbatch, "\n".join(header) + "\n" + body, 0o755)
        dep = "" if k == 0 else ' --dependency=afterany:"$jid"'
        submit_lines.append(f'jid=$(sbatch --parsable{dep} "$@" "$D/wave{k}.sbatch"); jid=${{jid%%;*}}; record "$jid" {k}; '
                            f'echo "wave {k}: job $jid, {len(w)} run(s)"')
    _write_atomic(os.path.join(folder, "tasks.txt"), "".join(ln + "\n" for ln in listing))
    n = sum(len(w) for w in job_waves)
    text = f"""#!/bin/bash
# Submits the {len(job_waves)} wave(s) ({n} run(s)) written by `{command}` (reproduce/run.py), generation {gen}.
# Its arguments go to every sbatch and override the scripts' #SBATCH lines, e.g. bash submit.sh --partition=gpu --account=me
# Wave k+1 waits for wave k to end (--dependency=afterany); a run whose input run did not finish then stops at once
# (exit status {SLURM_DEP_EXIT}, one line naming that input in its output), so no dependant waits forever.
# The job ids go to {os.path.join(folder, 'submitted.tsv')}: run_all.sh never starts a run SLURM has queued or running.
# Afterwards: {again}
set -euo pipefail
D={q(folder)}
GEN={gen}
if [ -f "$D/submitted.tsv" ] && grep -q "^$GEN"$'\\t' "$D/submitted.tsv"; then
  echo "submit.sh: generation $GEN was submitted already (see $D/submitted.tsv); write new scripts with: {command}" >&2
  exit 2
fi
record() {{ awk -v g="$GEN" -v j="$1" '{{print g "\\t" j "\\t" NR-1 "\\t" $0}}' "$D/wave$2.keys" >>"$D/submitted.tsv"; }}
{chr(10).join(submit_lines) if submit_lines else 'echo "nothing to submit: every run is finished"'}
"""
    _write_atomic(submit, text, 0o755)
    return submit


def slurm_owned(opts: Options, jobs: "OrderedDict[str, Job]") -> tuple[dict, str]:
    """Unfinished runs that submit.sh submitted and SLURM still has queued or running, as
    {key: 'job J_i'}, and a note when squeue cannot tell (then every submitted unfinished run
    counts as SLURM's: a run is never started twice)."""
    path = os.path.join(opts.results, "slurm", "submitted.tsv")
    try:
        with open(path) as fh:
            rows = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
    except OSError:
        return {}, ""
    subs: dict[str, list] = {}
    for r in rows:
        if len(r) == 4 and r[3] in jobs and jobs[r[3]].status == "todo":
            subs.setdefault(r[3], []).append((r[1], r[2]))
    if not subs:
        return {}, ""
    ids = sorted({j for v in subs.values() for j, _ in v})
    note = ""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%F %K", "-j", ",".join(ids)], capture_output=True, text=True,
                             timeout=60)
        if out.returncode == 0:
            live = {tuple(ln.split()[:2]) for ln in out.stdout.splitlines() if len(ln.split()) >= 2}
        elif "invalid job id" in out.stderr.lower():  # every one of them has left the queue
            live = set()
        else:
            err = (out.stderr.strip().splitlines() or ["no output"])[-1]
            note = f"squeue failed ({err})"
    except (OSError, subprocess.SubprocessError) as e:
        note = f"squeue is not available here ({e.__class__.__name__}: {e})"
    if note:
        return ({k: f"job {v[-1][0]}_{v[-1][1]}, state unknown" for k, v in subs.items()},
                f"{note}, so the {len(subs)} unfinished run(s) submitted to SLURM (listed in {path}) count as queued "
                f"or running and are not started here; delete that file once those jobs are gone")
    return {k: f"job {j}_{i}" for k, v in subs.items() for j, i in v if (j, i) in live}, ""


def claim_slurm_owned(opts: Options, jobs: "OrderedDict[str, Job]") -> tuple[int, str]:
    """Mark the runs SLURM has queued or running (and the runs that start from them) 'slurm', so
    that nothing here starts them; returns their number and slurm_owned's note."""
    owned, note = slurm_owned(opts, jobs)
    for key, where in owned.items():
        jobs[key].status, jobs[key].reason = "slurm", f"queued or running under SLURM ({where})"
    for j in jobs.values():  # dependencies come before their dependants
        if j.status == "todo" and any(jobs[d].status == "slurm" for d in j.deps if d in jobs):
            j.status = "slurm"
            j.reason = "starts from " + ", ".join(d for d in j.deps if jobs[d].status == "slurm") + \
                       ", which SLURM has queued or running"
    return sum(1 for j in jobs.values() if j.status == "slurm"), note


def run_slurm_task(key: str, results: str) -> int:
    """One SLURM array task: run `key` exactly as the local runner would (its task file holds the
    command, smoke settings, timeout and whether its checkpoint is kept)."""
    import json

    path = task_spec_path(results, key)
    try:
        with open(path) as fh:
            spec = json.load(fh)
    except (OSError, ValueError) as e:
        print(f"run_all.sh: error: cannot read the task file of {key}: {path} ({e.__class__.__name__}); "
              f"regenerate with bash run_all.sh --slurm", file=sys.stderr)
        return 2
    opts = Options(**spec["options"])
    job = Job(spec["key"], spec["script"], spec["flags"], spec["dataset"], spec["seed"], spec["out"], spec["data_root"],
              [d["key"] for d in spec["deps"]])
    host = os.uname().nodename
    print(f"[run_all] SLURM job {os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')} "
          f"on {host} at {time.strftime('%Y-%m-%d %H:%M:%S')}: {key}", flush=True)
    if os.path.isfile(os.path.join(job.out, "metrics.json")):
        print(f"[run_all] {key} is finished already ({job.out}/metrics.json); nothing to do", flush=True)
        return 0
    for d in spec["deps"]:
        if not os.path.isfile(os.path.join(d["out"], "metrics.json")):
            print(f"[run_all] {key}: not started: it starts from {d['key']}, which did not finish (its log: {d['log']}); "
                  f"fix that run, then regenerate and resubmit both with bash run_all.sh --slurm", flush=True)
            return SLURM_DEP_EXIT
    execute([[job]], opts, 1, spec["timeout"], keep={job.key} if spec["keep_checkpoint"] else ())
    return 0 if job.status == "done" else 1


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"run_all.sh: error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog="run_all.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="every table's pipeline on offline data (toy, multimnist-lite, tiny real-format files), "
                        f"--max-steps {SMOKE_MAX_STEPS}, 1 epoch, CPU, seed 0, the fewest rows per table, scene "
                        "backbones at 1/8 width; results under results/smoke/ (minutes on 2 cores)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these tables / figures: an id (pml_table4), a paper (pml, extra, palora, sam_mtl, "
                        "avgnorm) or a pattern ('pml_figure*'); repeatable or comma-separated. The tables are still "
                        "all rewritten from whatever runs exist")
    p.add_argument("--device", default=None,
                   help="device of every run: auto | cpu | cuda | cuda:N | mps (default auto; cpu with --smoke)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds instead of each table's (the papers use 0,1,2)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (default 1); with GPUs, job slot k uses GPU k mod (visible GPUs) via CUDA_VISIBLE_DEVICES")
    p.add_argument("--slurm", action="store_true",
                   help="write <results>/slurm/: one job-array script per dependency wave (waveK.sbatch, one task per "
                        "unfinished run) and submit.sh, which submits them in order; submits nothing. The tasks run what "
                        "the local runner would (smoke settings included) with this interpreter")
    p.add_argument("--slurm-cpus", type=int, default=None, metavar="N",
                   help=f"--cpus-per-task of a SLURM task (default {SLURM_DEFAULTS['full']['cpus']}; "
                        f"{SLURM_DEFAULTS['smoke']['cpus']} with --smoke)")
    p.add_argument("--slurm-mem", default=None, metavar="MEM",
                   help=f"--mem of a SLURM task (default {SLURM_DEFAULTS['full']['mem']}; {SLURM_DEFAULTS['smoke']['mem']} with --smoke)")
    p.add_argument("--slurm-time", default=None, metavar="TIME",
                   help=f"--time of a SLURM task (default {SLURM_DEFAULTS['full']['time']}, or --timeout + "
                        f"{SLURM_TIME_MARGIN // 60} min when --timeout is set, as with --smoke)")
    p.add_argument("--slurm-partition", default=None, metavar="NAME", help="--partition of the SLURM tasks (default: the cluster's)")
    p.add_argument("--slurm-gres", default=None, metavar="GRES",
                   help="--gres of a SLURM task, or none (default gpu:1 when the runs use a GPU: --device cuda, or --device "
                        "auto where sinfo lists GPUs; none otherwise, e.g. with --smoke)")
    p.add_argument("--sbatch-args", default=None, metavar="ARGS",
                   help="more #SBATCH options for every task, e.g. '--account=me --qos=high'")
    p.add_argument("--slurm-task", default=None, help=argparse.SUPPRESS)  # what a SLURM array task runs: one run, by key
    p.add_argument("--results", default=None, help="results folder (default results/, or results/smoke/ with --smoke)")
    p.add_argument("--data-root", default="data", help="where the datasets live (default data/)")
    p.add_argument("--max-steps", type=int, default=None,
                   help=f"pass --max-steps to every run (default: none; {SMOKE_MAX_STEPS} with --smoke)")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds before a run is stopped and reported as failed (default: none; {SMOKE_TIMEOUT} with --smoke)")
    p.add_argument("--no-standins", action="store_true",
                   help="skip a block whose dataset is absent instead of running its offline stand-in (multimnist-lite for MultiMNIST)")
    p.add_argument("--no-run", action="store_true", help="only aggregate the runs that exist (tables, figures, README)")
    p.add_argument("--prune-checkpoints", action="store_true",
                   help=f"delete a finished run's checkpoint.pt when larger than {SMOKE_KEEP_CKPT_MB} MB and no other run "
                        "starts from it (scene checkpoints are ~0.5-1 GB each; always on with --smoke)")
    p.add_argument("--list", action="store_true",
                   help="print the plan and exit: every run, its state and the tables / figures that use it, then the "
                        "tables that cannot run here with the data that would enable them")
    p.add_argument("--verbose-runs", action="store_true", help="let runs print their per-epoch lines into their logs")
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1 (got {a.jobs})")
    if a.max_steps is not None and a.max_steps < 1:
        p.error(f"--max-steps must be >= 1 (got {a.max_steps})")
    if a.seeds is not None:
        try:
            a.seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
        except ValueError:
            p.error(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got {a.seeds!r})")
        if not a.seeds:
            p.error("--seeds is empty")
    try:
        a.entries = reg.select(a.only)
    except ValueError as e:
        p.error(str(e))
    if a.device is None:
        a.device = "cpu" if a.smoke else "auto"
    _check_slurm_flags(p, a)
    if not (a.slurm or a.slurm_task):  # a cluster's GPUs need not be on the machine that writes its scripts
        from common.device import UsageError, resolve_device

        try:  # a device that is not there fails here once, not in every run
            resolve_device(a.device)
        except UsageError as e:
            p.error(str(e))
    if a.results is None:
        a.results = os.path.join("results", "smoke") if a.smoke else "results"
    if a.timeout is None and a.smoke:
        a.timeout = SMOKE_TIMEOUT
    return a


def _check_slurm_flags(p, a) -> None:
    given = [f for f, v in (("--slurm-cpus", a.slurm_cpus), ("--slurm-mem", a.slurm_mem), ("--slurm-time", a.slurm_time),
                            ("--slurm-partition", a.slurm_partition), ("--slurm-gres", a.slurm_gres),
                            ("--sbatch-args", a.sbatch_args)) if v is not None]
    if given and not a.slurm:
        p.error(f"{given[0]} needs --slurm")
    if a.slurm and (a.list or a.no_run):
        p.error(f"--slurm cannot be combined with {'--list' if a.list else '--no-run'}")
    if a.slurm_cpus is not None and a.slurm_cpus < 1:
        p.error(f"--slurm-cpus must be >= 1 (got {a.slurm_cpus})")
    if a.slurm_mem is not None and not _SLURM_MEM.match(a.slurm_mem):
        p.error(f"--slurm-mem must be a size such as 8G or 16000M (got {a.slurm_mem!r})")
    if a.slurm_time is not None and not _SLURM_TIME.match(a.slurm_time):
        p.error(f"--slurm-time must be a SLURM time such as 90, 4:00:00 or 1-12:00:00 (got {a.slurm_time!r})")
    for flag, v in (("--slurm-partition", a.slurm_partition), ("--slurm-gres", a.slurm_gres)):
        if v is not None and not _SLURM_WORD.match(v):
            p.error(f"{flag} must be one word such as gpu or gpu:a100:1 (got {v!r})")
    if a.sbatch_args is not None:
        try:
            sbatch_lines(a.sbatch_args)
        except ValueError as e:
            p.error(str(e))


def options_from(a) -> Options:
    return Options(results=a.results, data_root=a.data_root, smoke=a.smoke, seeds=a.seeds, device=a.device,
                   max_steps=a.max_steps, standins=not a.no_standins, quiet_runs=not a.verbose_runs,
                   prune_checkpoints=a.prune_checkpoints)


def main(argv=None) -> int:
    a = parse_args(argv)
    cwd = os.getcwd()
    os.chdir(REPO)  # relative --results / --data-root are relative to the repository, as run_all.sh runs there
    try:
        return _main(a)
    finally:
        os.chdir(cwd)


SLURM_ONLY_FLAGS = ("--slurm-cpus", "--slurm-mem", "--slurm-time", "--slurm-partition", "--slurm-gres", "--sbatch-args")


def without_slurm_flags(argv: list) -> list:
    """run_all.sh's arguments less --slurm and the --slurm-* flags (the aggregation command)."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--slurm" or tok.split("=", 1)[0] in SLURM_ONLY_FLAGS:
            i += 1 if (tok == "--slurm" or "=" in tok) else 2
            continue
        out.append(tok)
        i += 1
    return out


def print_plan(plans: list[EntryPlan], jobs: "OrderedDict[str, Job]") -> None:
    """--list: every run with its state and the tables / figures that use it, then the blocks that
    cannot run here and the data that would enable them."""
    users: dict[str, list] = {}

    def use(key, eid):
        if eid not in users.setdefault(key, []):
            users[key].append(eid)
            for d in jobs[key].deps:
                use(d, eid)

    absent, standin = [], []
    for ep in plans:
        for bp in ep.blocks:
            for rp in bp.rows:
                for j in rp.jobs.values():
                    use(j.key, ep.entry.id)
            name = f"{ep.entry.id} ({bp.block.dataset})"
            if bp.status in ("absent", "unsupported"):
                absent.append(f"  {name}: {bp.reason}")
            elif bp.status == "standin":
                standin.append(f"  {name}: {bp.reason}")
    for j in jobs.values():
        print(f"  {j.status:9s} {j.key}  [{', '.join(users.get(j.key, []))}]" + (f"  -- {j.reason}" if j.reason else ""))
    if absent:
        print(f"[run_all] {len(absent)} table block(s) cannot run here (no runs planned); what would enable them:")
        print("\n".join(absent))
    if standin:
        print(f"[run_all] {len(standin)} table block(s) run on an offline stand-in dataset:")
        print("\n".join(standin))


def _main(a) -> int:
    if a.slurm_task:
        return run_slurm_task(a.slurm_task, os.path.abspath(a.results))
    opts = options_from(a)
    if a.slurm:  # the tasks run elsewhere: absolute paths, and one GPU per task is cuda:0 there
        opts.results, opts.data_root = os.path.abspath(opts.results), os.path.abspath(opts.data_root)
        opts.python = os.path.abspath(opts.python)
        if opts.device.startswith("cuda"):
            opts.device = "cuda"
    t0 = time.time()
    if opts.smoke:
        from reproduce.tiny_data import make_all

        make_all(opts.smoke_data)
    plans, jobs = plan(a.entries, opts)
    n_slurm, slurm_note = claim_slurm_owned(opts, jobs)
    job_waves = waves(jobs)
    todo = sum(len(w) for w in job_waves)
    finished = sum(1 for j in jobs.values() if j.status == "finished")
    skipped = [j for j in jobs.values() if j.status == "skipped"]
    print(f"[run_all] {len(a.entries)} table(s)/figure(s) selected; {len(jobs)} distinct run(s): {finished} finished, "
          f"{todo} to run, {len(skipped)} cannot run" + (f", {n_slurm} queued or running under SLURM" if n_slurm else "")
          + (" [smoke]" if opts.smoke else ""), flush=True)
    if slurm_note:
        print(f"[run_all] {slurm_note}", flush=True)
    if a.list:
        try:
            print_plan(plans, jobs)
        except BrokenPipeError:  # `--list | head`
            sys.stderr.close()
        return 0
    if a.slurm:
        rest = without_slurm_flags(a.argv)
        command = " ".join(["bash run_all.sh"] + [shlex.quote(x) for x in a.argv])
        again = " ".join(["bash run_all.sh"] + [shlex.quote(x) for x in rest] + ["--no-run"])
        res = slurm_resources(a)
        path = write_slurm(job_waves, jobs, opts, res, a.timeout, command, again)
        print(f"[run_all] wrote {len(job_waves)} wave script(s) with {todo} array task(s) in {os.path.dirname(path)} "
              f"(not submitted); submit them with: bash {path}", flush=True)
        return 0
    if todo and not a.no_run:
        execute(job_waves, opts, a.jobs, a.timeout)
    from reproduce import aggregate

    # the tables always cover the whole registry, from whatever runs exist
    all_plans, _ = plan(reg.ENTRIES, opts) if len(a.entries) != len(reg.ENTRIES) else (plans, jobs)
    written = aggregate.write_all(all_plans, opts)
    summary = aggregate.summary(plans, jobs)
    print(summary, flush=True)
    if n_slurm:
        print(f"[run_all] {n_slurm} run(s) left to SLURM (queued or running; not started here):", flush=True)
        for j in jobs.values():
            if j.status == "slurm":
                print(f"  {j.key}: {j.reason}")
    print(f"[run_all] wrote {written['tables']} table file(s), {written['figures']} figure(s) and "
          f"{os.path.join(opts.results, 'README.md')} in {time.time() - t0:.0f}s", flush=True)
    failed = [j for j in jobs.values() if j.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
