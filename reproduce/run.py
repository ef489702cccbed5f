"""The runner behind `bash run_all.sh`: plan every run of the registry, skip the finished ones, run the
rest N at a time (spread over the visible GPUs), or write a SLURM job-array script; then aggregate.

    python -m reproduce                       # = bash run_all.sh
    python -m reproduce --smoke --jobs 2      # every table's pipeline on tiny offline data, CPU
    python -m reproduce --only pml_table4,pml_figure4 --seeds 0,1,2
    python -m reproduce --slurm               # writes results/slurm/run_all.sbatch, submits nothing
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


def job_env(slot: int, gpus: list[str], n_jobs: int, device: str) -> dict:
    """Environment of the run in job slot `slot`: GPU gpus[slot mod len(gpus)] when there are GPUs
    (the run's --device auto / cuda then sees that one GPU as cuda:0), else an even share of the CPU
    threads. An explicit --device cuda:N keeps every GPU visible."""
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if gpus and device in ("auto", "cuda"):
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    else:
        threads = str(max(1, (os.cpu_count() or 1) // max(1, n_jobs)))
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


def execute(job_waves: list[list[Job]], opts: Options, n_jobs: int, timeout: float | None, say=print) -> None:
    """Run every job, `n_jobs` at a time; job slot k uses GPU k mod (number of visible GPUs).
    CPU runs are forked from a launcher that has imported torch once; GPU runs are plain
    subprocesses with CUDA_VISIBLE_DEVICES set."""
    gpus = visible_gpus() if opts.device in ("auto", "cuda") else []
    launcher = cpu_launcher() if opts.device == "cpu" or (opts.device == "auto" and not gpus) else None
    total = sum(len(w) for w in job_waves)
    counter = {"n": 0}
    lock = threading.Lock()
    slots = list(range(max(1, n_jobs)))
    free = list(slots)
    cpu = os.cpu_count() or 1
    needed = {d for w in job_waves for j in w for d in j.deps}  # checkpoints other runs start from

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
def write_slurm(job_waves: list[list[Job]], opts: Options, path: str | None = None, time_limit: str = "24:00:00",
                again: str = "bash run_all.sh") -> str:
    """A job-array script with one array task per unfinished run (not submitted). Tasks are ordered
    by dependency wave; a wave's tasks may start once the previous waves have finished."""
    folder = os.path.join(opts.results, "slurm")
    os.makedirs(folder, exist_ok=True)
    path = path or os.path.join(folder, "run_all.sbatch")
    tasks = os.path.join(folder, "tasks.txt")
    lines, ranges, k = [], [], 0
    for w in job_waves:
        start = k
        for j in w:
            j.log = os.path.join(opts.results, "logs", j.key.replace("/", "__") + ".log")
            # the array task gets one GPU from SLURM (--gres), which --device auto picks up
            lines.append(" ".join(shlex.quote(a) for a in j.argv("python3", extra_flags(j, opts))))
            k += 1
        ranges.append((start, k - 1))
    with open(tasks, "w") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    n = len(lines)
    submit = []
    if ranges:
        submit.append(f"jid=$(sbatch --parsable --array={ranges[0][0]}-{ranges[0][1]} {path})")
        for a, b in ranges[1:]:
            submit.append(f"jid=$(sbatch --parsable --dependency=afterok:$jid --array={a}-{b} {path})")
    script = f"""#!/bin/bash
# Written by `bash run_all.sh --slurm` (reproduce/run.py); NOT submitted. One array task per unfinished
# run of the registry: {n} task(s), listed one command per line in {tasks}.
# Submit (tasks of a later wave use checkpoints written by an earlier one):
{chr(10).join('#   ' + s for s in submit) if submit else '#   (nothing to run: every run is finished)'}
# Afterwards the aggregation is the same command as on one machine, without --slurm:
#   {again}
# (every run is finished by then, so it only writes {opts.results}/tables, figures and README.md).
#SBATCH --job-name=mtl-reproduce
#SBATCH --array=0-{max(n - 1, 0)}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time={time_limit}
#SBATCH --output={os.path.join(opts.results, 'slurm', '%A_%a.out')}
set -euo pipefail
cd {shlex.quote(REPO)}
export MPLBACKEND=Agg
line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(os.path.abspath(tasks))})
if [ -z "$line" ]; then echo "no task $SLURM_ARRAY_TASK_ID in {tasks}" >&2; exit 1; fi
echo "$line"
eval "$line"
"""
    with open(path, "w") as fh:
        fh.write(script)
    os.chmod(path, 0o755)
    return path


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
                   help="write <results>/slurm/run_all.sbatch (one array task per unfinished run) and tasks.txt; submit nothing")
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
    p.add_argument("--list", action="store_true", help="print the plan (every run and its state) and exit")
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


def _main(a) -> int:
    opts = options_from(a)
    t0 = time.time()
    if opts.smoke:
        from reproduce.tiny_data import make_all

        make_all(opts.smoke_data)
    plans, jobs = plan(a.entries, opts)
    job_waves = waves(jobs)
    todo = sum(len(w) for w in job_waves)
    finished = sum(1 for j in jobs.values() if j.status == "finished")
    skipped = [j for j in jobs.values() if j.status == "skipped"]
    print(f"[run_all] {len(a.entries)} table(s)/figure(s) selected; {len(jobs)} distinct run(s): {finished} finished, "
          f"{todo} to run, {len(skipped)} cannot run" + (" [smoke]" if opts.smoke else ""), flush=True)
    if a.list:
        try:
            for j in jobs.values():
                print(f"  {j.status:9s} {j.key}" + (f"  -- {j.reason}" if j.reason else ""))
        except BrokenPipeError:  # `--list | head`
            sys.stderr.close()
        return 0
    if a.slurm:
        again = " ".join(["bash run_all.sh"] + [shlex.quote(x) for x in a.argv if x != "--slurm"])
        path = write_slurm(job_waves, opts, again=again)
        print(f"[run_all] wrote {path} with {todo} array task(s) (not submitted); see its header for the sbatch commands")
        return 0
    if todo and not a.no_run:
        execute(job_waves, opts, a.jobs, a.timeout)
    from reproduce import aggregate

    # the tables always cover the whole registry, from whatever runs exist
    all_plans, _ = plan(reg.ENTRIES, opts) if len(a.entries) != len(reg.ENTRIES) else (plans, jobs)
    written = aggregate.write_all(all_plans, opts)
    summary = aggregate.summary(plans, jobs)
    print(summary, flush=True)
    print(f"[run_all] wrote {written['tables']} table file(s), {written['figures']} figure(s) and "
          f"{os.path.join(opts.results, 'README.md')} in {time.time() - t0:.0f}s", flush=True)
    failed = [j for j in jobs.values() if j.status == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
