"""The small shared harness: arguments and their defaults, the run directory, per-task losses and
Jacobians, evaluation, log.csv / metrics.json, atomic checkpoints with --resume, progress bars,
--max-steps, and the skeleton every method's training loop shares.

A method script reads top to bottom like its paper and uses these pieces:

    parser = base_parser("pml", __doc__)          # the common flags of DESIGN.md
    parser.epilog = defaults_table(DEFAULTS)      # --help shows the values every flag resolves to
    ...method flags (default None: the table decides)...
    args = parser.parse_args(argv)
    run = Run(args, "pml", DEFAULTS)              # resolves defaults, validates, loads data, seeds
    model, (opt, sched) = ..., run.make_optimizer(model.parameters())
    run.track(model=model, opt=opt, sched=sched)  # named state: saved by run.checkpoint, loaded on --resume
    S = run.values(history=[])                    # plain values saved with it (update the dict in place)
    for epoch in run.epochs():                    # resumes where a checkpoint left off
        for x, ys in run.progress(run.batches("train", epoch), "train"):
            ...
            if run.step():                        # counts steps; True once --max-steps is reached
                break
        if run.eval_due(epoch):                   # every --eval-every epochs, and at the last one
            run.best.offer(run.selection_score(val), model.state_dict(), epoch)   # --select best
        run.log_epoch(epoch, {...}); run.checkpoint(epoch)
    run.best.restore(model.load_state_dict)       # the selected epoch's weights (--select best)
    run.finish({...})                             # metrics.json

A run in stages (EXTRA's warm-up, endpoints and curve) declares them with `run.phases([...])` and
wraps each in `if run.enter(name): ... run.leave()`: each phase has its own epochs, its share of
--max-steps, its own tracked objects and best model, its seconds and peak memory, and a --resume
continues inside the phase it stopped in.

`main_guard(main)` turns a `UsageError` (bad flag values, missing or malformed data, an existing
run directory) into one line on stderr and exit status 2, before anything in --out is touched.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from common.aggregators import RuleInputError, jacobian, set_flat_grad  # noqa: F401  (jacobian, set_flat_grad: the harness's)
from common.data import MTLData, batches, dataset_accepts, dataset_names, load_dataset
from common.device import UsageError, autocast, peak_memory_mb, reset_peak_memory, resolve_device, seed_everything
from common.diverge import CHECK_EVERY, EXIT_DIVERGED, Diverged, FiniteWatch, nonfinite_tensor
from common.metrics import TaskMeter, delta_m, selection_score, task_losses
from common.reference import Reference, resolve_reference
from common import rundir

DEFAULT_DATASET = "multimnist-lite"

# Per-dataset training defaults shared by all methods (the benchmark settings the papers use);
# a method overrides them with its own table (e.g. PML's m-fold learning rate).
#   optimizer, lr, batch size, epochs, StepLR (step, gamma) or None
DATASET_DEFAULTS: dict[str, dict] = {
    "toy": dict(epochs=50, batch_size=1, lr=2e-3, scheduler=None),  # 50K Adam steps (PML App. C)
    "multimnist-lite": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None),
    "multimnist3-lite": dict(epochs=20, batch_size=256, lr=1e-3, scheduler=None),
    "multimnist": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None),
    "multimnist3": dict(epochs=20, batch_size=256, lr=1e-3, scheduler=None),
    "multifashion": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None),
    "multifashion-mnist": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None),
    "census": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None),
    "utkface": dict(epochs=100, batch_size=256, lr=1e-3, scheduler=None),
    "celeba": dict(epochs=15, batch_size=256, lr=3e-4, scheduler=None, select="best"),
    # augment: MTAN's random scale-crop + flip, on in the benchmark training codes (MTAN, Nash-MTL, FAMO,
    # FairGrad, which EXTRA follows), the PaMaL / PaLoRA configs (apply_augmentation: true) and SAM-MTL's train.py
    "cityscapes": dict(epochs=200, batch_size=8, lr=1e-4, scheduler=(100, 0.5), augment=True),
    "nyuv2": dict(epochs=200, batch_size=2, lr=1e-4, scheduler=(100, 0.5), augment=True),
    # AvgNorm Table IX (ResNet column) and appendix "Training details", after the dense-prediction survey code:
    # Adam 1e-4, weight decay 1e-4, batch 6, poly schedule, 100 / 60 epochs, the best epoch is reported;
    # augmentation of its appendix: random scale 0.5-2, horizontal flip, colour jitter
    "nyud": dict(epochs=100, batch_size=6, lr=1e-4, weight_decay=1e-4, scheduler=("poly", 0.9), select="best", augment=True),
    "pascal-context": dict(epochs=60, batch_size=6, lr=1e-4, weight_decay=1e-4, scheduler=("poly", 0.9), select="best",
                           augment=True),
}
GLOBAL_DEFAULTS = dict(epochs=10, batch_size=256, lr=1e-3, weight_decay=0.0, scheduler=None, select="last")


EXIT_STATUS_HELP = f"""exit status:
  0    the run finished (metrics.json written)
  2    bad input: a flag, missing or malformed data, an --out that holds another run, is in use
       by another process (lock --out/.lock) or cannot be written, a --resume with other settings
  {EXIT_DIVERGED}    training diverged: a loss or weight became NaN / infinite; the one-line message names
       the step and the task; checkpoint.pt keeps the last finite state (nothing later is written)
  130  interrupted (Ctrl-C): continue with --resume"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2; --help ends with the exit statuses."""

    def error(self, message):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def format_help(self):
        return super().format_help().rstrip("\n") + "\n\n" + EXIT_STATUS_HELP + "\n"


def base_parser(method: str, description: str | None = None) -> argparse.ArgumentParser:
    """The command-line contract every script in methods/ follows (DESIGN.md)."""
    p = _Parser(prog=f"methods/{method}.py", description=description,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common options (every method)")
    g.add_argument("--dataset", default=DEFAULT_DATASET,
                   help=f"dataset name (default {DEFAULT_DATASET}, offline); one of: {', '.join(dataset_names())}")
    g.add_argument("--data-root", default="data", help="folder holding the datasets, one sub-folder each (default data/; see data/README.md)")
    g.add_argument("--model", default=None, help="backbone (default: the dataset's); one of: lenet, mlp, resnet18, celeba_cnn, segnet, mtan, toy, "
                        "resnet18-dilated, resnet50-dilated, mtan-resnet18, mtan-resnet50")
    g.add_argument("--pretrained", default=None, metavar="PATH",
                   help="ImageNet weights for the ResNet encoders (resnet18, resnet18-dilated, resnet50-dilated, mtan-resnet18/50): "
                        "a torchvision state_dict file (.pth); nothing is downloaded (default: random init)")
    g.add_argument("--epochs", type=int, default=None, help="training epochs (default: per dataset, as the papers; see the table below)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimisation steps in total (smoke runs, benchmarks)")
    g.add_argument("--batch-size", type=int, default=None, help="training batch size (default: per dataset)")
    g.add_argument("--eval-batch-size", type=int, default=None, help="evaluation batch size (default: 2x the training batch, at most 1024)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: per dataset and method)")
    g.add_argument("--weight-decay", type=float, default=None, help="Adam weight decay (default 0; 1e-4 on nyud, pascal-context)")
    g.add_argument("--scheduler", default=None,
                   help="learning-rate schedule, stepped once per epoch: none | step:STEP,GAMMA (StepLR) | "
                        "multistep:M1/M2/...,GAMMA (MultiStepLR) | poly[:POWER] (lr x (1 - epoch/epochs)^POWER, power 0.9 by default) "
                        "(default: per dataset and method, e.g. step:100,0.5 on cityscapes / nyuv2)")
    g.add_argument("--clip-grad", type=float, default=None,
                   help="clip the shared-parameter gradient to this norm; 0 = off (default: the rule's official setting, e.g. 1.0 for nashmtl/fairgrad, else off)")
    g.add_argument("--seed", type=int, default=0, help="random seed of initialisation and batch order (default 0)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of dataset composition and held-out splits (default 0, same data for every run)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto: CUDA when present)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on CPU)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="train-time augmentation (default: on for cityscapes / nyuv2, MTAN's random scale-crop + flip, and "
                        "nyud / pascal-context, AvgNorm's scale 0.5-2 + flip + colour jitter, as the papers' codes; "
                        "off elsewhere, where the loaders have none)")
    g.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="scene datasets (cityscapes, nyuv2, nyud, pascal-context): validate on a seeded FRACTION of the "
                        "training images instead of the test files (default: none, validation = test, as the benchmark codes; "
                        "PaLoRA's default is the paper's 500/2975 of CityScapes, 95/795 of NYUv2)")
    g.add_argument("--image-size", default=None, metavar="HxW",
                   help="nyud / pascal-context: resize the images to H x W (default the paper's: 448x576 nyud, 512x512 pascal-context)")
    g.add_argument("--edge-thresholds", type=int, default=None, metavar="K",
                   help="nyud / pascal-context: number of thresholds of the edge odsF (default 99, as SEISM; fewer is faster)")
    g.add_argument("--c", type=float, default=1.0, help="loss-scale constant c of the toy problem, l_1 = c * l~_1 (only --dataset toy; the papers use 1 and 0.1)")
    g.add_argument("--select", choices=["last", "best"], default=None,
                   help="which epoch's model is tested: last, or best on validation by the one selection score of "
                        "common.metrics.selection_score (-Delta-m%% against the reference, else its scale-free log form) "
                        "(default: last; best for celeba, as FAMO/FairGrad)")
    g.add_argument("--reference", default="auto", metavar="auto|published|PATH",
                   help="single-task reference of Delta-m%%, matched on dataset and model: auto = our STL runs under "
                        "results/stl/<dataset>/ of the same model, else the published vector; published; or PATH = a "
                        "metrics.json, a folder of runs or a {task: {metric: value}} JSON (default auto; see common/reference.py)")
    g.add_argument("--out", default=None, help="output folder (default results/<method>/<dataset>/seed<seed>/)")
    g.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt (a finished run is reported again, not retrained)")
    g.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds an earlier run (its files are replaced)")
    g.add_argument("--num-workers", type=int, default=None, help="DataLoader workers for file-backed datasets (default: 4 on CUDA, 0 on CPU)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--quiet", action="store_true", help="no per-epoch summary lines on stdout")
    return p


def parse_hyper(items: Sequence[str]) -> dict:
    """`--hyper KEY=VALUE` items -> {key: value} for make_aggregator(); ints, floats and
    true/false are parsed, anything else stays a string."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--hyper {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                continue
        else:
            v = {"true": True, "false": False}.get(v.lower(), v)
        out[k.strip()] = v
    return out


def parse_scheduler(spec: str):
    """--scheduler text -> the schedule spec used in the defaults tables:
    None (none), (step, gamma) (StepLR), ("multistep", (m1, m2, ...), gamma), ("poly", power)."""
    text = spec.strip().lower()
    try:
        if text in ("none", ""):
            return None
        kind, _, rest = text.partition(":")
        if kind == "step":
            step, gamma = rest.split(",")
            out = (int(step), float(gamma))
            ok = out[0] >= 1 and out[1] > 0
        elif kind == "multistep":
            ms, gamma = rest.split(",")
            out = ("multistep", tuple(int(m) for m in ms.split("/")), float(gamma))
            ok = all(m >= 1 for m in out[1]) and list(out[1]) == sorted(out[1]) and out[2] > 0
        elif kind == "poly":
            out = ("poly", float(rest) if rest else 0.9)
            ok = out[1] > 0
        else:
            ok = False
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"--scheduler {spec!r}: use none, step:STEP,GAMMA, multistep:M1/M2/...,GAMMA or poly[:POWER] "
                         "(e.g. step:100,0.5, multistep:20/40/80/90,0.1, poly:0.9)")
    return out


def make_scheduler(opt, spec, epochs: int):
    """The per-epoch learning-rate schedule of a spec (see parse_scheduler), or None. poly is the
    dense-prediction survey's schedule: lr_e = lr (1 - e / epochs)^power at epoch e."""
    if not spec:
        return None
    if spec[0] == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(spec[1]), gamma=spec[2])
    if spec[0] == "poly":
        power = spec[1]
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: max(0.0, 1.0 - e / epochs) ** power)
    step, gamma = spec
    return torch.optim.lr_scheduler.StepLR(opt, step_size=int(step), gamma=gamma)


def describe_scheduler(spec) -> str:
    """A short human-readable name of a schedule spec (for --help tables and notes)."""
    if not spec:
        return "no schedule"
    if spec[0] == "multistep":
        return f"MultiStepLR(milestones {list(spec[1])}, gamma {spec[2]})"
    if spec[0] == "poly":
        return f"poly(power {spec[1]})"
    return f"StepLR(step {spec[0]}, gamma {spec[1]})"


class Derived:
    """A default computed from the run once its data is loaded, e.g. PaLoRA's adapter learning-rate
    multiplier T: ``Derived("T (the number of tasks)", lambda args, data: float(data.num_tasks))``.
    --help prints `text`; Run resolves ``fn(args, data)`` for a flag left unset (`data` is None for
    a Run without data). A method file's table, which must import without common/, may hold a
    plain function ``fn(args, data)`` instead: its docstring's first line is the text."""

    def __init__(self, text: str, fn: Callable[[argparse.Namespace, MTLData | None], object]):
        self.text, self.fn = text, fn

    def __repr__(self) -> str:
        return self.text


def as_derived(v) -> Derived | None:
    """`v` as a Derived default (a Derived, or any object with `text` and `fn`, or a plain
    function), else None."""
    if isinstance(v, Derived):
        return v
    if hasattr(v, "text") and callable(getattr(v, "fn", None)):
        return Derived(str(v.text), v.fn)
    if callable(v) and not isinstance(v, type):
        return Derived(((v.__doc__ or "").strip().splitlines() or [getattr(v, "__name__", "derived")])[0], v)
    return None


# stand-ins that pass _validate for training flags whose default is Derived (checked once resolved)
_PLACEHOLDER = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "lr": 1.0, "weight_decay": 0.0}

TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "scheduler", "select", "augment")


def resolved_defaults(dataset: str, method_defaults: Mapping[str, Mapping] | None = None) -> dict:
    """The one resolution of every default, lowest first: GLOBAL_DEFAULTS, the dataset's row of
    DATASET_DEFAULTS, the method's "*" row, the method's row for the dataset."""
    md = method_defaults or {}
    return {**GLOBAL_DEFAULTS, **DATASET_DEFAULTS.get(dataset, {}), **md.get("*", {}), **md.get(dataset, {})}


def _show(key: str, v) -> str:
    if as_derived(v) is not None:
        return as_derived(v).text
    if key == "scheduler":
        return describe_scheduler(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)) and not isinstance(v, Derived):
        return "/".join(str(x) for x in v) if v else "none"
    return str(v)


def defaults_table(method_defaults: Mapping[str, Mapping] | None = None, datasets: Sequence[str] | None = None,
                   title: str = "defaults") -> str:
    """The --help table of what every flag left unset resolves to, per dataset (`resolved_defaults`):
    the training settings, then the method's own flags (one row of values shared by all datasets,
    then each dataset's own). `datasets`: the rows to print (default: every dataset the suite knows
    and every dataset the method's table names)."""
    md = method_defaults or {}
    names = list(datasets) if datasets is not None else \
        list(DATASET_DEFAULTS) + [d for d in md if d != "*" and d not in DATASET_DEFAULTS]
    method_keys = [k for k in md.get("*", {}) if k not in TRAINING_KEYS]
    for d in names:
        method_keys += [k for k in md.get(d, {}) if k not in TRAINING_KEYS and k not in method_keys]
    lines = [f"{title}: what each flag left unset resolves to (--flag-name = key with '-' for '_'):"]
    if method_keys:
        shared = md.get("*", {})
        lines.append("  every dataset: " + ", ".join(f"{k}={_show(k, shared[k])}" for k in method_keys if k in shared))
    for name in names:
        d = resolved_defaults(name, md)
        wd = f", weight decay {d['weight_decay']:g}" if d.get("weight_decay") else ""
        own = {k: v for k, v in {**md.get(name, {})}.items() if k in method_keys or k == "model"}
        extra = ("; " + ", ".join(f"{k}={_show(k, v)}" for k, v in own.items())) if own else ""
        lines.append(f"  {name:20s} epochs {d['epochs']}, batch {d['batch_size']}, Adam lr {_show('lr', d['lr'])}{wd}, "
                     f"{describe_scheduler(d.get('scheduler'))}, select {d.get('select', 'last')}"
                     f"{', augment' if d.get('augment') else ''}{extra}")
    return "\n".join(lines)


def main_guard(main: Callable[[Sequence[str] | None], object]) -> None:
    """Run `main(sys.argv[1:])`; a UsageError (or a RuleInputError: a rule given what it cannot use,
    e.g. MGDA-UB on a backbone without one shared representation) becomes one line on stderr and exit
    status 2, a divergence one line and exit status EXIT_DIVERGED. On any failure a run set aside by
    --overwrite is put back (the new run has no checkpoint yet) and the --out lock is released."""
    prog = os.path.basename(sys.argv[0])
    try:
        main(None)
    except BaseException as e:
        rundir.abort_all()
        if isinstance(e, (UsageError, RuleInputError)):
            print(f"{prog}: error: {e}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, Diverged):
            print(f"{prog}: {e}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED)
        if isinstance(e, KeyboardInterrupt):
            print("interrupted: the last checkpoint is in --out; rerun with --resume to continue", file=sys.stderr)
            sys.exit(130)
        raise


def _atomic_write_bytes(path: str, write: Callable[[str], None]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Write strict JSON atomically: NaN and +-Inf (which json.dump would write as the invalid
    tokens NaN / Infinity) become null, and a dict gets "nonfinite_as_null": the key paths of those
    values (e.g. ["tasks.left.acc"]), so a reader can tell a missing value from a diverged one."""
    replaced: list[str] = []
    clean = _finite_or_null(obj, "", replaced)
    if replaced and isinstance(clean, dict):
        clean["nonfinite_as_null"] = replaced

    def w(tmp):
        with open(tmp, "w") as fh:
            json.dump(clean, fh, indent=2, default=_json_default, allow_nan=False)
            fh.write("\n")
    _atomic_write_bytes(path, w)


def _finite_or_null(o, where: str, replaced: list):
    """A JSON-ready copy of `o` with every non-finite float (also inside numpy / torch values) -> None."""
    if isinstance(o, (np.ndarray, torch.Tensor)):
        o = o.tolist()
    elif isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float):
        if math.isfinite(o):
            return o
        replaced.append(where or ".")
        return None
    if isinstance(o, Mapping):
        return {k: _finite_or_null(v, f"{where}.{k}" if where else str(k), replaced) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_null(v, f"{where}[{i}]", replaced) for i, v in enumerate(o)]
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def clip_shared(model, max_norm: float | None) -> None:
    if max_norm and max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.shared_parameters(), max_norm)


class bn_frozen:
    """Context: BatchNorm layers of `module` use batch statistics but do not update their running
    statistics (momentum 0). For extra forward passes on the same batch (FAMO's loss re-evaluation,
    SAM's perturbed passes) so the running statistics move once per step, not twice."""

    def __init__(self, module: torch.nn.Module):
        self.bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc):
        for m, mom in zip(self.bns, self.saved):
            m.momentum = mom
        return False


@torch.no_grad()
def recompute_bn_stats(forward: Callable[[torch.Tensor], object], module: torch.nn.Module, batch_iter: Iterable,
                       max_batches: int | None = 50) -> None:
    """Re-estimate BatchNorm running statistics of `module` with `forward` on training batches
    (cumulative average, momentum None), as the mode-connectivity literature does for points
    whose weights were never trained together with their statistics. max_batches None: every batch."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    was_training = module.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    for i, (x, _) in enumerate(batch_iter):
        if max_batches is not None and i >= max_batches:
            break
        forward(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    module.train(was_training)


SUMMARY_TASKS = 8  # more tasks than this: the per-epoch console line summarises the per-task columns


class _Adam(torch.optim.Adam):
    """Adam whose update, when too large for the parameters' float type, raises Diverged (not
    "value cannot be converted to type float without overflow")."""

    run = None

    def step(self, closure=None):
        try:
            return super().step(closure)
        except RuntimeError as e:
            if "overflow" not in str(e) or self.run is None:
                raise
            raise self.run.diverged(f"the update of step {self.run.global_step + 1} overflows the parameters' float type") from None


def _clone(state):
    """A detached copy of a (nested) state: tensors cloned on their device, containers rebuilt."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, Mapping):
        return {k: _clone(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(v) for v in state) if isinstance(state, list) else tuple(_clone(v) for v in state)
    return state


class Best:
    """The model of the best validation score so far, for --select best (the score is the one
    selection rule of the suite, higher is better: `Run.selection_score`). With --select last it
    keeps nothing. `offer` copies the state (a state_dict, or any nested structure of them) only
    when the score improves; NaN never does. Saved in every checkpoint (`state_dict`)."""

    def __init__(self, select: str = "best"):
        self.active = select == "best"
        self.reset()

    def reset(self) -> None:
        self.score, self.epoch, self.state = -math.inf, None, None

    def offer(self, score: float, state, epoch: int | None = None) -> bool:
        """Keep a copy of `state` if `score` beats the best so far; True if it did."""
        if not self.active or not score > self.score:
            return False
        self.score, self.epoch, self.state = float(score), epoch, _clone(state)
        return True

    def restore(self, load: Callable[[object], object]) -> int | None:
        """`load(state)` of the best state (e.g. model.load_state_dict) and its epoch; None (and no
        call) when nothing was kept (--select last, or no evaluation)."""
        if self.state is None:
            return None
        load(self.state)
        return self.epoch

    def state_dict(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "state": self.state}

    def load_state_dict(self, sd: Mapping) -> None:
        self.score, self.epoch, self.state = float(sd["score"]), sd["epoch"], sd["state"]


def _rng_state() -> dict:
    """The RNG streams as tensors and plain values (checkpoints load with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(rng: Mapping) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        except RuntimeError:  # another number of GPUs than the run that wrote it
            pass


class Run:
    """One training run: resolved arguments, device, data, the --out folder and its files."""

    def __init__(self, args: argparse.Namespace, method: str, method_defaults: Mapping[str, Mapping] | None = None,
                 load_data: bool = True, check: Callable[[argparse.Namespace, MTLData | None], None] | None = None):
        """`method_defaults`: the method's DEFAULTS table; every flag left None that it (or the
        dataset's table) names is resolved here. `check(args, data)`, if given, validates method
        flags that depend on the dataset; it runs after the data is loaded and before --out is
        touched (raise UsageError)."""
        self.args, self.method = args, method
        self.t0 = time.time()
        self._resolve(method_defaults or {})
        self._validate()
        self.device = resolve_device(args.device)
        seed_everything(args.seed)
        self.data: MTLData | None = None
        if load_data:
            self.data = load_dataset(args.dataset, args.data_root, args.seed, c=args.c, augment=args.augment,
                                     data_seed=args.data_seed, **self.data_options())
        self._resolve_derived()
        if check is not None:
            check(args, self.data)
        self._reference: Reference | None = None
        self._warned_val_is_test = False
        self._finish_errors: list[str] = []
        # the backbone actually built: --model, the method's / dataset's default, else the data's own
        self.model_name = args.model or (self.data.default_model if self.data is not None else None)
        if self.data is not None:
            self._reference = resolve_reference(getattr(args, "reference", "auto"), args.dataset, self.model_name,
                                                getattr(args, "data_seed", 0), method)
            if self._reference.values is None and not args.quiet:
                print(f"[{method}] {self._reference.source}", flush=True)
        self.out = args.out or os.path.join("results", method, args.dataset, f"seed{args.seed}")
        self.global_step = 0
        self.start_epoch = 0
        self.finished_before = False
        self.seconds_before = 0.0  # training seconds of the sessions before a --resume (from the checkpoint)
        self.last_checkpoint: tuple[int, int] | None = None  # (epoch, step) of checkpoint.pt
        self.watch = FiniteWatch()
        self.best = Best(args.select)  # --select best: the best model on validation (saved in checkpoints)
        self._tracked: dict[str, object] = {}  # named objects with state_dict(): run.track
        self._values: dict[str, object] = {}  # plain named values: run.values
        self._saved: dict | None = None  # the checkpoint's state, read once (--resume)
        self._read_checkpoint = False
        self._pending_rng: Mapping | None = None  # restored when training resumes (first epoch)
        self._phases: list[str] | None = None
        self._ph: dict = {}
        self._epochs_total = args.epochs
        self._saved_midphase = False  # the checkpoint was written inside a phase (not at its end)
        # the harness-resolved arguments, compared with config.json on --resume
        self.run_args = json.loads(json.dumps(vars(args), default=_json_default))
        self._config_extra: dict = {}
        self._config_pending = False  # --resume: config.json is written once the checkpoint is accepted
        self._prepare_out()
        reset_peak_memory(self.device)
        self.write_config()

    # ---- arguments -------------------------------------------------------------------------
    def _resolve(self, method_defaults):
        """Every flag left unset (None) that the defaults table names takes its value there
        (`resolved_defaults`: global, dataset, method, method x dataset); `Derived` values wait for
        the data (`_resolve_derived`)."""
        a = self.args
        ds = resolved_defaults(a.dataset, method_defaults)
        self.defaults = ds
        self._derived = []
        for k, v in ds.items():
            if k == "scheduler" or getattr(a, k, 0) is not None:
                continue
            if as_derived(v) is not None:
                self._derived.append((k, as_derived(v)))
            else:
                setattr(a, k, v)
        a.augment = bool(a.augment)
        self.scheduler_spec = parse_scheduler(a.scheduler) if getattr(a, "scheduler", None) is not None else ds.get("scheduler")
        if a.eval_batch_size is None and a.batch_size is not None:
            a.eval_batch_size = min(2 * a.batch_size, 1024)

    def _resolve_derived(self):
        """Resolve the `Derived` defaults once the data is loaded, then check the values again
        (a derived --lr or --epochs is checked like a given one)."""
        for k, v in self._derived:
            setattr(self.args, k, v.fn(self.args, self.data))
        self.defaults = {k: (getattr(self.args, k) if as_derived(v) is not None else v) for k, v in self.defaults.items()}
        if self._derived:
            if self.args.eval_batch_size is None and self.args.batch_size is not None:
                self.args.eval_batch_size = min(2 * self.args.batch_size, 1024)
            self._validate()

    def _validate(self):
        """One line and exit 2 for a bad training flag; a flag whose default is still pending
        (`Derived`, resolved after the data loads) is checked then."""
        a = self.args
        pending = {k for k, _ in getattr(self, "_derived", ())} - {k for k in vars(a) if getattr(a, k) is not None}
        if pending:
            a = argparse.Namespace(**{**vars(a), **{k: _PLACEHOLDER[k] for k in pending if k in _PLACEHOLDER}})
        for k in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(a, k) is None or getattr(a, k) < 1:
                raise UsageError(f"--{k.replace('_', '-')} must be a positive integer (got {getattr(a, k)})")
        if a.max_steps is not None and a.max_steps < 1:
            raise UsageError(f"--max-steps must be a positive integer (got {a.max_steps})")
        if not (a.lr > 0 and math.isfinite(a.lr)):
            raise UsageError(f"--lr must be a positive number (got {a.lr})")
        if a.weight_decay < 0:
            raise UsageError(f"--weight-decay must be >= 0 (got {a.weight_decay})")
        if a.clip_grad is not None and a.clip_grad < 0:
            raise UsageError(f"--clip-grad must be >= 0 (got {a.clip_grad})")
        if getattr(a, "pretrained", None) and not os.path.isfile(a.pretrained):
            raise UsageError(f"--pretrained {a.pretrained}: no such file (a torchvision ImageNet state_dict .pth; nothing is downloaded)")
        if a.dataset not in dataset_names():
            raise UsageError(f"unknown --dataset {a.dataset!r}; choose one of: {', '.join(dataset_names())}")

    def data_options(self) -> dict:
        """The loader options set by --holdout / --image-size / --edge-thresholds (only those given);
        a dataset whose loader has no such option is refused with one line."""
        a, opts = self.args, {}
        for key, attr in (("holdout", "holdout"), ("size", "image_size"), ("edge_thresholds", "edge_thresholds")):
            value = getattr(a, attr, None)
            if value is None:
                continue
            if not dataset_accepts(a.dataset, key):
                raise UsageError(f"--{attr.replace('_', '-')} does not apply to --dataset {a.dataset}")
            if key == "size":
                try:
                    h, w = (int(v) for v in str(value).lower().split("x"))
                    assert h > 0 and w > 0
                except (ValueError, AssertionError):
                    raise UsageError(f"--image-size {value!r} must look like HxW with positive integers, e.g. 448x576")
                value = (h, w)
            if key == "holdout" and not 0 <= value < 1:
                raise UsageError(f"--holdout must be a fraction in [0, 1) (got {value})")
            if key == "edge_thresholds" and value < 1:
                raise UsageError(f"--edge-thresholds must be a positive integer (got {value})")
            opts[key] = value
        return opts

    # ---- the output folder -------------------------------------------------------------------
    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.out, "checkpoint.pt")

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def _prepare_out(self):
        """Create and lock --out for the whole run (common/rundir.py); put back a run that an
        interrupted --overwrite set aside; refuse an existing run without --resume / --overwrite;
        set the old run aside on --overwrite; compare a --resume with config.json."""
        a = self.args
        rundir.make_out_dir(self.out)
        lock = rundir.OutLock(self.out).acquire()
        if lock.took_over is not None:
            print(f"[{self.method}] note: took over the stale lock of process {lock.took_over[0]} on "
                  f"{lock.took_over[1] or 'an unknown host'} (that process has ended)", file=sys.stderr, flush=True)
        if rundir.restore_aside(self.out):
            print(f"[{self.method}] note: {self.out} holds the run an interrupted --overwrite had set aside; it is restored",
                  file=sys.stderr, flush=True)
        has_run = any(os.path.exists(os.path.join(self.out, f)) for f in ("checkpoint.pt", "metrics.json", "log.csv"))
        if has_run and not (a.resume or a.overwrite):
            raise UsageError(f"--out {self.out} already holds a run; pass --resume to continue it, --overwrite to replace it, or another --out")
        if a.resume:
            self._check_resume()
        elif a.overwrite:
            rundir.set_aside(self.out)  # dropped at the first checkpoint, put back if the new run fails before

    def _check_resume(self):
        """Refuse a --resume whose settings differ from those config.json recorded at the start of
        the run (only where, how verbosely and how long it runs may change; not --epochs under a poly
        schedule, which depends on the epoch count). config.json is rewritten once the checkpoint loads."""
        if not os.path.isfile(self.ckpt_path):
            return  # nothing to continue: the run starts afresh
        self._config_pending = True
        cfg = rundir.saved_config(self.out)
        if cfg is None:
            return
        diffs = [f"method {cfg['method']} (now {self.method})"] if cfg.get("method") not in (None, self.method) else []
        free = rundir.RESUME_FREE
        if self.scheduler_spec and self.scheduler_spec[0] == "poly":
            free = free - {"epochs"}
        if "run_args" in cfg:
            diffs += rundir.resume_differences(cfg["run_args"], self.run_args, free)
        else:  # written before run_args existed: the common keys of its (possibly later completed) args
            old = cfg.get("args") or {}
            diffs += rundir.resume_differences({k: v for k, v in old.items() if self.run_args.get(k) is not None},
                                               {k: v for k, v in self.run_args.items() if k in old and v is not None}, free)
        if diffs:
            raise UsageError(f"--resume: {self.out} was started with other settings: {'; '.join(diffs)}; "
                             "rerun with its settings (config.json), or start afresh with --overwrite or another --out")

    def write_config(self, extra: Mapping | None = None):
        from importlib.metadata import PackageNotFoundError, version

        try:  # the version without importing torchvision (seconds on a small CPU)
            tv_version = version("torchvision")
        except PackageNotFoundError:
            tv_version = None
        cfg = {"method": self.method, "args": vars(self.args), "defaults_used": self.defaults,
               "device": str(self.device),
               "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
               "versions": {"python": platform.python_version(), "torch": torch.__version__,
                            "torchvision": tv_version, "numpy": np.__version__},
               "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
               "run_args": self.run_args}
        if self.data is not None:
            cfg["tasks"] = self.data.task_names
        if extra:
            self._config_extra.update(extra)
        if self._config_pending:  # --resume not accepted yet: config.json stays as it is
            return
        cfg.update(self._config_extra)
        write_json(self.path("config.json"), cfg)

    # ---- data and progress ---------------------------------------------------------------------
    def batches(self, split: str = "train", epoch: int = 0, shuffle: bool | None = None, batch_size: int | None = None):
        ds = getattr(self.data, split)
        shuffle = (split == "train") if shuffle is None else shuffle
        g = torch.Generator().manual_seed(self.args.seed * 100003 + epoch)
        bs = batch_size or (self.args.batch_size if split == "train" else self.args.eval_batch_size)
        return batches(ds, bs, shuffle=shuffle, generator=g, device=self.device, num_workers=self.args.num_workers)

    def num_batches(self, split: str = "train") -> int:
        n = len(getattr(self.data, split))
        bs = self.args.batch_size if split == "train" else self.args.eval_batch_size
        return math.ceil(n / bs)

    def progress(self, iterable, desc: str = "", total: int | None = None):
        if self.args.no_progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)

    def autocast(self):
        return autocast(self.device, self.args.amp)

    def epochs(self, n: int | None = None):
        """Epoch indices 0 .. n-1 (n = --epochs, or the current phase's epochs) from the resume
        point; stops early once --max-steps (or the phase's share of it) is spent. A resumed run
        gets its saved random streams back as its first epoch starts."""
        self._epochs_total = self.args.epochs if n is None else int(n)
        for e in range(self.start_epoch, self._epochs_total):
            if self.done:
                return
            if self._pending_rng is not None:
                _set_rng_state(self._pending_rng)
                self._pending_rng = None
            yield e

    def step(self) -> bool:
        """Count one optimisation step; True when the --max-steps budget (of the phase) is spent.
        Every CHECK_EVERY steps the on-device divergence flag is read (raises Diverged)."""
        self.global_step += 1
        if self._phases is not None:
            self._ph["steps"] += 1
        if self.global_step % CHECK_EVERY == 0:
            self.check_finite()
        return self.done

    @property
    def done(self) -> bool:
        """--max-steps is spent: in all, or within the current phase (its share, see `enter`)."""
        if self.args.max_steps is None:
            return False
        if self._phases is not None and self._ph.get("cap") is not None:  # a phase keeps at least one step
            return self._ph["steps"] >= self._ph["cap"]
        return self.global_step >= self.args.max_steps

    def eval_due(self, epoch: int, every: int | None = None) -> bool:
        """Whether to validate after `epoch`: every `every` epochs (default --eval-every, else 1),
        at the last epoch (of the phase), and when --max-steps has ended training early."""
        every = every or getattr(self.args, "eval_every", None) or 1
        return (epoch + 1) % every == 0 or epoch + 1 >= self._epochs_total or self.done

    # ---- named state: what a checkpoint holds and a --resume restores -----------------------------
    def _resume_state(self) -> dict | None:
        """The state of --out/checkpoint.pt with --resume (read once), else None."""
        if not self._read_checkpoint:
            self._read_checkpoint = True
            state = self.load_checkpoint()
            if state is not None and not (isinstance(state, Mapping) and "tracked" in state):
                raise UsageError(f"{self.ckpt_path} was written in an older layout; start afresh with --overwrite")
            self._saved = state
            if state is not None:
                self.best.load_state_dict(state["best"])
                if state.get("phases"):
                    self._ph = dict(state["phases"])
        return self._saved

    def track(self, **objects) -> None:
        """Name the objects whose state the run saves: anything with state_dict() /
        load_state_dict() (models, optimisers, schedules, rules; None is skipped). With --resume
        each gets its saved state now, so track them once they are built. In a phase they belong
        to it: `leave` forgets them."""
        saved = self._resume_state()
        for name, obj in objects.items():
            if obj is None:
                continue
            self._tracked[name] = obj
            if saved is not None and name in saved["tracked"]:
                try:
                    obj.load_state_dict(saved["tracked"][name])
                except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
                    raise UsageError(f"{self.ckpt_path}: the saved {name} does not fit this run ({type(e).__name__}); "
                                     "resume with the flags it was written with, or start afresh with --overwrite") from None

    def values(self, **defaults) -> dict:
        """Plain named values saved with the run (tensors, numbers, strings, lists, dicts): the saved
        ones on --resume, else `defaults`. Returns the dict that is saved: update it in place."""
        saved = self._resume_state()
        old = saved["values"] if saved is not None else {}
        for k, v in defaults.items():
            self._values.setdefault(k, old.get(k, v))
        return self._values

    def checkpoint(self, epoch: int, finished: bool = False) -> None:
        """Save every tracked object's state_dict, the values, the best model and the phases
        (checkpoint.pt, atomic; it loads with weights_only=True)."""
        self._resume_state()
        self.save_checkpoint(epoch, {"tracked": {n: o.state_dict() for n, o in self._tracked.items()},
                                     "values": self._values, "best": self.best.state_dict(),
                                     "phases": dict(self._ph) if self._phases is not None else None}, finished)

    # ---- phases: a run in stages (EXTRA) --------------------------------------------------------
    def phases(self, names: Sequence[str]) -> None:
        """Declare the run's stages, in order. Each is run by `if run.enter(name): ... run.leave()`;
        a --resume skips the finished ones and continues the one it stopped in."""
        self._phases = list(names)
        fresh = {"current": self._phases[0], "done": [], "steps": 0, "cap": None, "seconds": {}, "peak_mb": {}}
        saved = self._resume_state()
        if saved is None or not saved.get("phases"):
            self._ph = fresh
        elif self._ph["current"] is not None and self._ph["current"] not in self._phases:
            raise UsageError(f"{self.ckpt_path} was written with other stage flags (phase {self._ph['current']!r}); "
                             "rerun with the same flags or use --overwrite")

    @property
    def phase(self) -> str | None:
        """The phase being run (None outside phases)."""
        return self._ph.get("current") if self._phases is not None else None

    def enter(self, name: str, seed: int | None = None) -> bool:
        """Start (or, after --resume, continue) phase `name`; False if it is finished. A fresh phase
        starts at epoch 0 with no best model, seeds the RNGs with `seed` (if given), and gets its
        share of what is left of --max-steps: max(1, left // phases left, this one included)."""
        ph = self._ph
        if name in ph["done"]:
            return False
        resumed = self._saved is not None and ph["current"] == name and self._saved_midphase
        if not resumed:
            ph.update(current=name, steps=0, cap=None)
            self.start_epoch = 0
            self.best.reset()
            if self._saved is not None:
                self._saved["tracked"] = {}
            self._pending_rng = None  # a checkpoint written at the phase boundary: the phase's own seed rules
            if seed is not None:
                seed_everything(seed)
            if self.args.max_steps is not None:
                left = len(self._phases) - self._phases.index(name)
                ph["cap"] = max(1, (self.args.max_steps - self.global_step) // left)
        self._saved_midphase = False
        self._phase_t0 = time.time()
        reset_peak_memory(self.device)
        return True

    def leave(self) -> None:
        """The current phase is complete: its seconds and peak memory are recorded, its tracked
        objects and best model forgotten, the next phase is current, and a checkpoint is written."""
        ph, name = self._ph, self._ph["current"]
        ph["seconds"][name] = ph["seconds"].get(name, 0.0) + time.time() - self._phase_t0
        mb = peak_memory_mb(self.device)
        if mb is not None:
            ph["peak_mb"][name] = max(ph["peak_mb"].get(name, 0.0), mb)
        ph["done"] = ph["done"] + [name]
        i = self._phases.index(name)
        ph.update(current=self._phases[i + 1] if i + 1 < len(self._phases) else None, steps=0, cap=None)
        self._tracked.clear()
        self.best.reset()
        self.start_epoch = 0
        self.checkpoint(-1)

    def phase_seconds(self, name: str) -> float:
        return float(self._ph.get("seconds", {}).get(name, 0.0))

    def phase_peak_mb(self, name: str) -> float | None:
        return self._ph.get("peak_mb", {}).get(name)

    def make_optimizer(self, params, lr: float | None = None, **adam):
        """Adam and the resolved schedule (None when there is none); call sched.step() once per epoch.
        An update too large for the parameters' float type (e.g. --lr 1e300) raises Diverged."""
        opt = _Adam(params, lr=lr or self.args.lr, weight_decay=self.args.weight_decay, **adam)
        opt.run = self
        return opt, make_scheduler(opt, self.scheduler_spec, self.args.epochs)

    # ---- losses and evaluation ---------------------------------------------------------------
    def losses(self, outputs, targets, task_ids=None) -> torch.Tensor:
        """The per-task losses; each is watched for NaN / infinity on its device (common/diverge.py)."""
        L = task_losses(self.data, outputs, targets, task_ids)
        self.watch.observe(L, self.global_step + 1, task_ids)
        return L

    # ---- divergence ----------------------------------------------------------------------------
    def diverged(self, what: str, hint: str = "") -> Diverged:
        """The one-line Diverged error: what went wrong, where the last finite state is, what to try
        (a lower --lr, clipping, and the method's own `hint`, e.g. "smaller radii (--rho-sh / --rho-ns)")."""
        if self.last_checkpoint is not None:
            kept = (f"{self.ckpt_path} keeps epoch {self.last_checkpoint[0] + 1} (step {self.last_checkpoint[1]}), "
                    "the last finite state")
        else:
            kept = "no checkpoint was written"
        clip = "" if self.args.clip_grad else " or clip gradients (--clip-grad 1)"
        clip += f" or {hint}" if hint else ""
        return Diverged(f"training diverged: {what}; {kept}; try a lower --lr (now {self.args.lr:g}){clip}, "
                        "then start afresh with --overwrite")

    def check_finite(self, state: Mapping | None = None) -> None:
        """Raise Diverged if a watched loss went non-finite (one host sync), or if a floating-point
        tensor of `state` (weights, optimiser moments) is NaN or infinite."""
        bad = self.watch.poll()
        if bad is not None:
            step, t = bad
            names = self.data.task_names if self.data is not None else []
            task = f" of task {names[t]}" if 0 <= t < len(names) else ""
            raise self.diverged(f"the loss{task} is not finite at step {step}")
        if state is not None:
            where = nonfinite_tensor(state)
            if where is not None:
                raise self.diverged(f"{where} is not finite after step {self.global_step}")

    @torch.no_grad()
    def evaluate(self, forward: Callable[[torch.Tensor], Sequence[torch.Tensor]], split: str = "test",
                 task_ids: Sequence[int] | None = None, max_batches: int | None = None) -> dict:
        """{task: {metric: value}} over `split` for `forward(x) -> outputs` (outputs[k] is task
        task_ids[k]); every task also gets its mean loss as "loss"."""
        ids = list(range(self.data.num_tasks)) if task_ids is None else list(task_ids)
        meters = [TaskMeter(self.data.tasks[i], self.data.info, i) for i in ids]
        for b, (x, ys) in enumerate(self.batches(split, shuffle=False)):
            if max_batches is not None and b >= max_batches:
                break
            with self.autocast():
                outs = forward(x)
            for m, o, i in zip(meters, outs, ids):
                m.update(o.float(), ys[i])
        res = {}
        for m, i in zip(meters, ids):
            r = m.compute()
            r["loss"] = m.loss_sum / max(m.n, 1)
            res[self.data.tasks[i].name] = r
        return res

    def use_data(self, data: MTLData, parent: "Run") -> None:
        """For a Run made with load_data=False inside another run (a grid point): its data, model name
        and Delta-m% reference, so that both select by the same rule."""
        self.data, self._reference, self.model_name = data, parent._reference, parent.model_name

    @property
    def val_is_test(self) -> bool:
        """True when the validation split is the test split (scene datasets without --holdout, toy)."""
        return self.data is not None and (self.data.val is self.data.test or bool(self.data.info.get("val_is_test")))

    def selection_score(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        """The model-selection score (higher is better) of validation `metrics`, the one rule of
        every selection in the suite: -Delta-m% against the run's reference when there is one, else
        the scale-free log-ratio form (common.metrics.selection_score). When validation is the test
        split, the first call prints one warning line (metrics.json says "validation_is_test")."""
        self.warn_if_val_is_test()
        return selection_score(metrics, self.data.tasks, self.reference())

    def warn_if_val_is_test(self) -> None:
        """One line, once per run, when a selection on validation is a selection on test."""
        if self.val_is_test and not self._warned_val_is_test:
            self._warned_val_is_test = True
            print(f"[{self.method}] warning: validation is the test split of {self.args.dataset} (pass --holdout FRACTION "
                  "for a held-out validation split): what is selected on validation is selected on test", flush=True)

    def reference(self) -> dict | None:
        """Single-task reference metrics {task: {metric: value}} of Delta-m% for this dataset and
        model, resolved from --reference (common/reference.py), or None."""
        return self._reference.values if self._reference is not None else None

    def delta_m(self, metrics) -> float | None:
        ref = self.reference()
        return delta_m(metrics, ref, self.data.tasks) if ref else None

    # ---- log.csv, checkpoints, metrics.json ---------------------------------------------------
    def elapsed(self) -> float:
        """Seconds of this run over all its sessions (--resume adds the time saved in the checkpoint)."""
        return self.seconds_before + time.time() - self.t0

    def log_epoch(self, epoch: int, row: Mapping[str, object]) -> None:
        self.check_finite()  # a diverged epoch gets no row
        phase = {"phase": self.phase} if self.phase is not None and "phase" not in row else {}
        row = {"epoch": epoch, "step": self.global_step, "seconds": round(self.elapsed(), 3), **phase, **row}
        path = self.path("log.csv")
        rows, header = [], list(row)
        if os.path.exists(path):
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                old_header = reader.fieldnames or []
                rows = list(reader)
            header = list(old_header) + [k for k in row if k not in old_header]
        if rows and header == list(rows[0].keys()):
            with open(path, "a", newline="") as fh:  # the common case: same columns, append
                csv.DictWriter(fh, fieldnames=header).writerow({k: _fmt(row.get(k)) for k in header})
        else:  # first row, or new columns: rewrite with the union of the columns, keeping every row
            def w(tmp):
                with open(tmp, "w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=header, restval="")
                    writer.writeheader()
                    writer.writerows(rows)
                    writer.writerow({k: _fmt(row.get(k)) for k in header})
            _atomic_write_bytes(path, w)
        if not self.args.quiet:
            shown = self._console_row(row)
            where = f"{self.phase} " if self.phase is not None else ""
            print(f"[{self.method}] {where}epoch {epoch + 1}/{self._epochs_total} step {self.global_step}: {shown}", flush=True)

    def save_checkpoint(self, epoch: int, state: Mapping[str, object], finished: bool = False) -> None:
        """Write checkpoint.pt atomically; a non-finite loss since the last check or a non-finite
        tensor in `state` raises Diverged instead, so the file on disk stays the last finite state.
        `state` must hold only tensors and plain Python values: it is read with weights_only=True."""
        self.check_finite(state)
        blob = {"epoch": epoch, "global_step": self.global_step, "finished": finished, "seconds": self.elapsed(),
                "rng": _rng_state(), "state": dict(state)}
        _atomic_write_bytes(self.ckpt_path, lambda tmp: torch.save(blob, tmp))
        self.last_checkpoint = (epoch, self.global_step)
        self._accept()

    def load_checkpoint(self) -> dict | None:
        """With --resume and a checkpoint in --out: its `state` dict (and the resume point set);
        else None. The file is read with torch.load(weights_only=True): tensors and plain values
        only, so nothing in it can run code, and it does not depend on the suite's class names.
        Its random streams are restored at once and again when the first resumed epoch starts."""
        if not (self.args.resume and os.path.isfile(self.ckpt_path)):
            if self._config_pending:
                self._config_pending = False
                self.write_config()
            return None
        try:
            blob = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        except Exception as e:  # a truncated or foreign file, or one that pickles objects
            why = "it holds Python objects, written by an older version of the suite" if "eights only load" in str(e) \
                else type(e).__name__
            raise UsageError(f"cannot read checkpoint {self.ckpt_path} ({why}); use --overwrite to start afresh") from None
        self.start_epoch = blob["epoch"] + 1
        self.global_step = blob["global_step"]
        self.finished_before = bool(blob.get("finished"))
        self.seconds_before = float(blob.get("seconds", 0.0))
        self.last_checkpoint = (blob["epoch"], blob["global_step"])
        self._saved_midphase = blob["epoch"] >= 0
        self._config_pending = False  # the resume is accepted: config.json records this session
        self.write_config()
        self._trim_log(self.start_epoch, (blob.get("state") or {}).get("phases"))
        _set_rng_state(blob["rng"])  # now, and again when the first resumed epoch starts (`epochs`), so
        self._pending_rng = blob["rng"]  # that building the objects in between cannot move the streams
        if not self.args.quiet:
            where = f"epoch {self.start_epoch}"
            phases = (blob.get("state") or {}).get("phases")
            if phases and phases.get("current"):
                where = f"phase {phases['current']}, {where}"
            print(f"[{self.method}] resumed from {self.ckpt_path} at {where}, step {self.global_step}", flush=True)
        return blob["state"]

    def _accept(self) -> None:
        """The run has its first checkpoint (or its metrics): a run set aside by --overwrite goes."""
        rundir.drop_aside(self.out)

    def _trim_log(self, start_epoch: int, phases: Mapping | None = None) -> None:
        """--resume: drop log.csv rows of epochs the checkpoint does not hold (written by a session
        that stopped between its log row and its checkpoint); they are trained and logged again. In
        a run with phases, rows of finished phases stay, and of the current phase those before
        `start_epoch`."""
        path = self.path("log.csv")
        if not os.path.isfile(path):
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header, rows = reader.fieldnames or [], list(reader)

        def kept(r):
            if phases and r.get("phase") in phases.get("done", []):
                return True
            if phases and r.get("phase") != phases.get("current"):
                return False
            return str(r.get("epoch", "")).lstrip("-").isdigit() and int(r["epoch"]) < start_epoch
        keep = [r for r in rows if kept(r)]
        if len(keep) == len(rows):
            return

        def w(tmp):
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=header, restval="")
                writer.writeheader()
                writer.writerows(keep)
        _atomic_write_bytes(path, w)

    def _console_row(self, row: Mapping[str, object], where: str = "log.csv") -> str:
        """The per-epoch console text of a log row: every column with up to SUMMARY_TASKS tasks; with
        more (40-task CelebA) one summary per kind of per-task column (mean and the worst task where
        the direction is known, else the range); log.csv keeps the full row."""
        items = [(k, v) for k, v in row.items() if k not in ("epoch", "step", "phase")]
        names = self.data.task_names if self.data is not None else []
        if len(names) <= SUMMARY_TASKS:
            return ", ".join(f"{k}={_fmt(v)}" for k, v in items)
        higher = {m: h for t in self.data.tasks for m, h in t.metrics}
        by_len = sorted(names, key=len, reverse=True)
        plain, groups = [], {}
        for k, v in items:
            for t in by_len:
                if k.endswith("_" + t) or f"_{t}_" in k:
                    pattern = k[:-len(t) - 1] + "_*" if k.endswith("_" + t) else k.replace(f"_{t}_", "_*_", 1)
                    try:
                        groups.setdefault(pattern, []).append((t, float(v)))
                    except (TypeError, ValueError):
                        pass
                    break
            else:
                plain.append(f"{k}={_fmt(v)}")
        parts = plain
        for pattern, vals in groups.items():
            xs = np.array([x for _, x in vals], dtype=float)
            metric = pattern.rsplit("*_", 1)[1] if "*_" in pattern else ""
            up = False if "loss" in pattern else higher.get(metric)
            text = f"{pattern.replace('_*', '')} mean {np.nanmean(xs):.4g}"
            if up is None:
                text += f" [{np.nanmin(xs):.4g}, {np.nanmax(xs):.4g}]"
            else:
                i = int(np.nanargmax(xs) if not up else np.nanargmin(xs))
                text += f" worst {xs[i]:.4g} ({vals[i][0]})"
            parts.append(text)
        return ", ".join(parts) + f" ({len(names)} tasks; every column in {self.path(where)})"

    def guarded(self, what: str, fn: Callable, *args, default=None, **kwargs):
        """`fn(*args, **kwargs)` for the reporting after training (plots, summaries, hypervolumes): a
        failure prints one line, is recorded in metrics.json "finish_errors" and gives `default`, so a
        finished training never loses its result to its report."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 -- any failure of a report, by design
            msg = f"{what}: {type(e).__name__}: {e}"
            self._finish_errors.append(msg)
            print(f"[{self.method}] warning: {msg} (the run's result is written without it)", file=sys.stderr, flush=True)
            return default

    def finish(self, result: Mapping[str, object]) -> dict:
        """Write metrics.json: the contract fields (method, dataset, seed, tasks, delta_m,
        hypervolume, front, seconds, peak_memory_mb) plus whatever else `result` holds, the Delta-m%
        reference used ("reference": kind, source, values) and "validation_is_test". The reporting
        steps after training are guarded: one that fails is recorded under "finish_errors" and the
        file is written all the same; NaN / Inf are written as null (see write_json)."""
        self.check_finite()
        out = {"method": self.method, "dataset": self.args.dataset, "model": getattr(self.args, "model", None) or self.model_name,
               "seed": self.args.seed, "tasks": None, "delta_m": None, "hypervolume": None, "front": None}
        out.update(result)
        errors = list(self._finish_errors)
        if out.get("delta_m") is None and out.get("tasks"):
            try:
                out["delta_m"] = self.delta_m(out["tasks"])
            except Exception as e:  # never lose the run's result to its summary
                errors.append(f"delta_m: {type(e).__name__}: {e}")
        out["reference"] = self._reference.as_json() if self._reference is not None else None
        out["validation_is_test"] = self.val_is_test
        out["seconds"] = round(self.elapsed(), 3)  # all sessions of the run
        if self.seconds_before:
            out["seconds_since_resume"] = round(time.time() - self.t0, 3)
        out["steps"] = self.global_step
        try:
            out["peak_memory_mb"] = peak_memory_mb(self.device)
        except Exception as e:
            errors.append(f"peak_memory_mb: {type(e).__name__}: {e}")
        if self._config_pending:
            self._config_pending = False
            self.write_config()
        if errors:
            out["finish_errors"] = errors
        write_json(self.path("metrics.json"), out)
        self._accept()
        rundir.release(self.out)  # metrics.json is the run's last file
        if not self.args.quiet:
            try:
                tasks = out.get("tasks") or {}
                if len(tasks) > SUMMARY_TASKS:  # 40-task CelebA: mean and worst task; metrics.json has every task
                    summary = self._console_row(flat_metrics("test", tasks), "metrics.json")
                else:
                    summary = "; ".join(f"{t}: " + ", ".join(f"{m}={_fmt(v)}" for m, v in ms.items() if m != "loss" or len(ms) <= 2)
                                        for t, ms in tasks.items())
                dm = out.get("delta_m")
                print(f"[{self.method}] test: {summary}" + (f"; delta_m={dm:.2f}%" if isinstance(dm, float) and math.isfinite(dm) else ""), flush=True)
            except Exception as e:
                print(f"[{self.method}] (summary line failed: {type(e).__name__}: {e})", flush=True)
            print(f"[{self.method}] wrote {self.path('metrics.json')}", flush=True)
        return out


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.5g}"
    if isinstance(v, torch.Tensor):
        return _fmt(v.item()) if v.numel() == 1 else str([round(float(x), 5) for x in v.flatten()])
    return v


def flat_metrics(prefix: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {prefix_task_metric: v} for log.csv rows."""
    return {f"{prefix}_{t}_{m}": v for t, ms in metrics.items() for m, v in ms.items()}


# ---- Pareto-front methods (PaLoRA, COSMOS / PHN): their flags, validation and test report ----------------------
def front_validation(run: Run, evaluate: Callable[[Sequence, str], list], grid, epoch: int, history: list,
                     model: torch.nn.Module, hv_ref: Sequence[float] | None = None) -> tuple[dict, list[dict]]:
    """The per-epoch validation of a preference-conditioned front (PaLoRA, COSMOS / PHN): the grid on
    validation (`evaluate(prefs, split)` -> one {"preference", "tasks"} per preference), appended to
    `history` as (epoch, front); with --select best, `model` is offered under the front score: the
    validation hypervolume, else (past the hypervolume's work budget) the mean selection score over
    the grid. Returns the log.csv columns and the validation front."""
    from common.metrics import front_summary

    front = evaluate(grid, "val")
    summ = front_summary(front, run.data.tasks, hv_ref)
    history.append((epoch, front))
    score = summ["hypervolume"] if summ["hypervolume"] is not None else \
        float(np.mean([run.selection_score(f["tasks"]) for f in front]))
    if run.args.select == "best":
        run.warn_if_val_is_test()  # the epoch is chosen on validation
    run.best.offer(score, model.state_dict(), epoch)
    return {"val_hypervolume": summ["hypervolume"], "val_spearman": summ["spearman"],
            "val_non_dominated": summ["non_dominated"]}, front


def front_centre(front: list[dict], evaluate: Callable[[Sequence, str], list], split: str) -> dict:
    """The metrics at the centre preference (1/T, ..., 1/T): from `front` when its grid holds it, else evaluated."""
    T = len(front[0]["preference"])
    centre = [1.0 / T] * T
    hit = next((f["tasks"] for f in front if np.allclose(f["preference"], centre, atol=1e-6)), None)
    return hit if hit is not None else evaluate([centre], split)[0]["tasks"]


def front_report(run: Run, evaluate: Callable[[Sequence, str], list], grid, hv_ref: Sequence[float] | None = None) -> dict:
    """The test-time result of a front method, for metrics.json: the model selected on validation
    (--select best) is restored by the caller first; the grid on test ("front"), its front_summary,
    the centre preference's metrics ("tasks", so Delta-m% is the centre's) and each task's best value
    along the front ("best_per_task")."""
    from common.metrics import HV_SPLIT, front_summary

    front = evaluate(grid, "test")
    summ = front_summary(front, run.data.tasks, hv_ref)
    centre = front_centre(front, evaluate, "test")
    best = {t.name: (max if t.metrics[0][1] else min)(f["tasks"][t.name][t.primary] for f in front) for t in run.data.tasks}
    return {"tasks": centre, "centre_preference": [1.0 / run.data.num_tasks] * run.data.num_tasks, "front": front, **summ,
            "hypervolume_split": HV_SPLIT, "best_per_task": best}


def front_caption(report: Mapping) -> str:
    """One line of a front_report for plot titles: hypervolume, Spearman, non-dominated points."""
    show = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"HV {show(report['hypervolume'])}, Spearman {show(report['spearman'])}, "
            f"non-dominated {report['non_dominated']}/{len(report['front'])}")


def add_front_arguments(group) -> None:
    """The evaluation flags of every preference-conditioned front method (PaLoRA, COSMOS / PHN):
    --grid-points, --hv-ref, --eval-batches (checked by `check_front_arguments`)."""
    group.add_argument("--grid-points", type=int, default=11,
                       help="evaluation grid: n points per simplex edge, spacing 1/(n-1): 11 points for 2 tasks, 66 for 3 "
                            "(default 11); with more than 3 tasks: the vertices and the centre")
    group.add_argument("--hv-ref", default=None,
                       help="hypervolume reference, one value per task on its primary metric, comma separated "
                            "(default: the suite's one rule for every front method, common.metrics.HV_REFERENCE: 0 for "
                            "accuracy-like metrics, 1 for losses and errors, 90 for normal angles)")
    group.add_argument("--eval-batches", type=int, default=None,
                       help="evaluate every preference on the first N batches of val/test only (smoke runs; default: the whole split)")


def check_front_arguments(args, data: MTLData) -> None:
    """One-line errors for the flags of `add_front_arguments` (a Run's `check`, before --out is
    touched); sets args.hv_ref_values: the --hv-ref numbers, one per task, or None for the suite's rule."""
    if args.grid_points < 2:
        raise UsageError(f"--grid-points must be at least 2 (got {args.grid_points})")
    if args.eval_batches is not None and args.eval_batches < 1:
        raise UsageError(f"--eval-batches must be a positive integer (got {args.eval_batches})")
    args.hv_ref_values = None
    if args.hv_ref is not None:
        try:
            args.hv_ref_values = [float(v) for v in args.hv_ref.split(",")]
        except ValueError:
            raise UsageError(f"--hv-ref {args.hv_ref!r} must be comma-separated numbers, one per task") from None
        if len(args.hv_ref_values) != data.num_tasks:
            raise UsageError(f"--hv-ref needs {data.num_tasks} values (one per task: {', '.join(data.task_names)}), "
                             f"got {len(args.hv_ref_values)}")


def front_points(front: list[dict], tasks) -> tuple[np.ndarray, np.ndarray]:
    """A front as arrays for plots: each point's primary metrics (points x tasks) and its preference."""
    return (np.array([[f["tasks"][t.name][t.primary] for t in tasks] for f in front], dtype=float),
            np.array([f["preference"] for f in front], dtype=float))
