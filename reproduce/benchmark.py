"""Step-time and memory benchmark of every MTL method, measured against linear scalarisation (LS).

    python -m reproduce.benchmark --shape cityscapes-segnet                  # every method, GPU
    python -m reproduce.benchmark --shape nyuv2-mtan --steps 30 --warmup 10  # the Nash-MTL benchmark shape
    python -m reproduce.benchmark --shape multimnist --methods ls,mgda,pml --steps 5 --device cpu
    python -m reproduce.benchmark --shape cityscapes-segnet --filters 8,16,32,64,64 --device cpu --jacobian
    python -m reproduce.benchmark --harness-tax --device cpu                 # baselines.py vs a bare loop
    python -m reproduce.benchmark --host-syncs                              # host round-trips per step, every method

For one dataset shape (synthetic tensors of the real sizes: no dataset files needed) it builds each
method's model afresh, runs --warmup untimed and --steps timed optimisation steps on one fixed batch
(--order: one method after the other on CUDA, round-robin step by step on a shared CPU) and
reports, per method:

  step time     median and spread (25th-75th percentile) of the synchronised wall time of one step;
  x LS          the median over the median of LS (the `ls` row: the harness path of
                methods/baselines.py, i.e. common.aggregators.RuleStep, then Adam);
  x bound       the median over the lower bound of a per-task-gradient method: one forward pass plus
                one backward pass per task on the shared parameters (the `bound` row), the work that
                no gradient-aggregation rule can avoid;
  peak memory   torch.cuda.max_memory_allocated over the method's model, optimiser and steps (CUDA
                only: PyTorch does not track CPU allocations), and its ratio to LS;
  solver share  the median share of the step spent inside the aggregation rule (the rule's own
                ``solver_seconds`` clock: Gram matrix, T x T solver, the combination sum_t w_t g_t).

Rows: `bare` (LS as a plain PyTorch loop: forward, summed loss, backward, Adam, no harness), `bound`,
every rule of common/aggregators.py (AGGREGATORS, the step of methods/baselines.py), and the
method files: `avgnorm` (Eq. 6 weights on the last shared layer), `pml` (the T-member weight
ensemble, pml_step), `palora` (m forward passes, one per preference; also reported per forward
pass), `sam_mtl` (Algorithm 1 with the LS rule: T extra perturbed forward/backward passes),
`extra` (stage 2: two points of the NURBS curve per batch). A method file that cannot be imported is reported as skipped, with why.

--jacobian times the alternatives for the T x d Jacobian of the task losses w.r.t. the shared
parameters (forward included): a loop of torch.autograd.grad with retain_graph (common.train.jacobian),
torch.autograd.grad with is_grads_batched=True (one vmapped backward over the T one-hot cotangents),
torch.func.vjp + vmap, and torch.func.vmap(grad), and checks that they agree.

--harness-tax runs methods/baselines.py (--method ls) end to end on multimnist-lite for two values
of --max-steps (the fastest of --tax-repeats runs each) and divides the time difference by the step
difference (setup and evaluation cancel), against a bare PyTorch loop over the same model and the
same batches (Run.batches of the same seed).

--host-syncs (instead of timing) counts the host synchronisations of one training step of every method
script, rule, mode, curve and balancing, on the fake accelerator of reproduce/fake_device.py (see
reproduce/host_syncs.py); it writes host_syncs.json / host_syncs.md to --out (default
results/benchmark/host_syncs/).

Outputs in --out (default results/benchmark/<shape>/<device type>/): benchmark.json (every
measurement, the device, the date, the versions) and benchmark.md (the table). Timing is synchronised
on CUDA (torch.cuda.synchronize around every step); on CPU the numbers are CPU numbers only.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "methods"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common.aggregators import AGGREGATORS, RuleStep, make_aggregator  # noqa: E402
from common.data import MTLData, load_dataset, task  # noqa: E402
from common.device import UsageError, autocast, resolve_device, seed_everything, synchronize  # noqa: E402
from common.metrics import task_loss, task_losses  # noqa: E402
from common.models import build_model, count_parameters  # noqa: E402
from common.train import bn_frozen, jacobian, main_guard, write_json  # noqa: E402

# ----------------------------------------------------------------------------------------------
# The dataset shapes of the issue (input C x H x W, batch, tasks, backbone) and the dataset whose
# per-method defaults (the DEFAULTS table of each method file) apply.
# ----------------------------------------------------------------------------------------------
SHAPES: dict[str, dict] = {
    "multimnist": dict(dataset="multimnist-lite", model="lenet", input=(1, 28, 28), batch=256,
                       tasks=[task("left", "class", 10), task("right", "class", 10)]),
    "cityscapes-segnet": dict(dataset="cityscapes", model="segnet", input=(3, 128, 256), batch=8,
                              tasks=[task("segmentation", "seg", 7), task("depth", "depth", 1)]),
    "cityscapes-mtan": dict(dataset="cityscapes", model="mtan", input=(3, 128, 256), batch=8,
                            tasks=[task("segmentation", "seg", 7), task("depth", "depth", 1)]),
    "nyuv2-mtan": dict(dataset="nyuv2", model="mtan", input=(3, 288, 384), batch=2,
                       tasks=[task("segmentation", "seg", 13), task("depth", "depth", 1), task("normal", "normal", 3)]),
    "nyuv2-segnet": dict(dataset="nyuv2", model="segnet", input=(3, 288, 384), batch=2,
                         tasks=[task("segmentation", "seg", 13), task("depth", "depth", 1), task("normal", "normal", 3)]),
    "celeba": dict(dataset="celeba", model="celeba_cnn", input=(3, 64, 64), batch=256,
                   tasks=[task(f"attr{i:02d}", "binary", 1) for i in range(40)]),
}
METHOD_FILES = ("avgnorm", "pml", "palora", "sam_mtl", "extra")
GRADIENT_RULES = tuple(n for n, c in AGGREGATORS.items() if c.needs in ("jacobian", "last_shared", "representation"))
JACOBIAN_VARIANTS = ("loop", "batched", "func-vjp", "func-vmap-grad")


def all_methods() -> list[str]:
    return ["bare", "bound"] + list(AGGREGATORS) + list(METHOD_FILES)


def parse_args(argv=None):
    from common.train import _Parser

    p = _Parser(prog="python -m reproduce.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="multimnist", choices=sorted(SHAPES),
                   help="dataset shape: " + "; ".join(f"{k} = {v['model']} {'x'.join(map(str, v['input']))} batch {v['batch']}, "
                                                      f"{len(v['tasks'])} tasks" for k, v in SHAPES.items()) + " (default multimnist)")
    p.add_argument("--methods", default="all",
                   help="comma-separated rows to run (default all): " + ", ".join(all_methods()))
    p.add_argument("--steps", type=int, default=10, help="timed steps per method (default 10; the Nash-MTL benchmark used 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the shape's)")
    p.add_argument("--resolution", default=None, metavar="HxW", help="input height x width (default: the shape's), e.g. 64x128")
    p.add_argument("--filters", default=None, metavar="F0,...,F4",
                   help="SegNet / MTAN channel widths (default 64,128,256,512,512); narrow them for CPU runs, e.g. 8,16,32,64,64")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: CUDA when present)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA for every row (ignored on CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and input (4-D inputs)")
    p.add_argument("--order", choices=["auto", "sequential", "interleaved"], default="auto",
                   help="sequential: one method after the other, each with its own peak-memory window; interleaved: "
                        "round-robin over the methods step by step, fair on a shared, noisy machine, no memory figures "
                        "(default auto: sequential on CUDA, interleaved elsewhere)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of every row (default 1e-4; only the work matters)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and the synthetic batch (default 0)")
    p.add_argument("--jacobian", action="store_true", help="also time the alternatives for the per-task Jacobian (see above)")
    p.add_argument("--harness-tax", action="store_true",
                   help="also time methods/baselines.py --method ls end to end on multimnist-lite against a bare loop")
    p.add_argument("--tax-steps", default="3,13", metavar="K1,K2",
                   help="the two --max-steps of the harness-tax runs (default 3,13; K2 - K1 steps are timed)")
    p.add_argument("--tax-repeats", type=int, default=3,
                   help="runs per K in the harness-tax measurement; the fastest counts (default 3)")
    p.add_argument("--host-syncs", action="store_true",
                   help="instead of timing: count the host synchronisations of one training step of every method script, rule, "
                        "mode, curve and balancing on the fake accelerator (reproduce/host_syncs.py); --methods filters by script")
    p.add_argument("--host-sync-steps", default="2,6", metavar="K1,K2",
                   help="the two --max-steps of the --host-syncs runs (default 2,6; at most 12, one epoch)")
    p.add_argument("--data-root", default="data", help="where multimnist-lite's cache lives, for --harness-tax and --host-syncs (default data/)")
    p.add_argument("--out", default=None, help="output folder (default results/benchmark/<shape>/<device type>/)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p.parse_args(argv)


def resolve(args) -> tuple[dict, list[str], torch.device]:
    """Validate the flags; the shape spec with overrides applied, the rows, the device."""
    if args.tax_repeats < 1:
        raise UsageError(f"--tax-repeats must be a positive integer (got {args.tax_repeats})")
    for k in ("steps", "warmup"):
        if getattr(args, k) < (1 if k == "steps" else 0):
            raise UsageError(f"--{k} must be {'a positive' if k == 'steps' else 'a non-negative'} integer (got {getattr(args, k)})")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number (got {args.lr})")
    spec = copy.deepcopy(SHAPES[args.shape])
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be a positive integer (got {args.batch_size})")
        spec["batch"] = args.batch_size
    if args.resolution:
        try:
            h, w = (int(v) for v in args.resolution.lower().split("x"))
            assert h >= 1 and w >= 1
        except (ValueError, AssertionError):
            raise UsageError(f"--resolution must look like HxW with positive integers, e.g. 64x128 (got {args.resolution!r})")
        spec["input"] = (spec["input"][0], h, w)
    spec["filters"] = None
    if args.filters:
        if spec["model"] not in ("segnet", "mtan"):
            raise UsageError(f"--filters only applies to the segnet / mtan shapes, not {args.shape}")
        try:
            f = tuple(int(v) for v in args.filters.split(","))
            assert len(f) == 5 and min(f) >= 1
        except (ValueError, AssertionError):
            raise UsageError(f"--filters needs 5 positive integers separated by commas, e.g. 8,16,32,64,64 (got {args.filters!r})")
        spec["filters"] = f
    if spec["model"] in ("segnet", "mtan"):
        h, w = spec["input"][1:]
        if h % 32 or w % 32:
            raise UsageError(f"--resolution {h}x{w}: SegNet pools 5 times, so H and W must be multiples of 32")
    known = all_methods()
    methods = known if args.methods.strip() == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in known]
    if bad or not methods:
        raise UsageError(f"--methods: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(known)} or all")
    return spec, methods, resolve_device(args.device)


# ----------------------------------------------------------------------------------------------
# Synthetic data of the real shapes
# ----------------------------------------------------------------------------------------------
def synthetic_data(spec: dict) -> MTLData:
    """An MTLData with the shape's tasks and input shape (no samples: only the batch is synthetic)."""
    return MTLData(spec["dataset"], list(spec["tasks"]), None, None, None, tuple(spec["input"]), spec["model"])


def synthetic_batch(spec: dict, device, seed: int = 0):
    """(x, ys) with the shape's sizes: targets valid for each task kind (segmentation with some -1
    pixels, depth with some invalid zeros, unit normals)."""
    g = torch.Generator().manual_seed(seed)
    B, (C, H, W) = spec["batch"], spec["input"]
    x = torch.randn(B, C, H, W, generator=g)
    ys = []
    for t in spec["tasks"]:
        if t.kind == "class":
            y = torch.randint(0, t.out_dim, (B,), generator=g)
        elif t.kind == "binary":
            y = torch.randint(0, 2, (B,), generator=g).float()
        elif t.kind == "seg":
            y = torch.randint(-1, t.out_dim, (B, H, W), generator=g)
        elif t.kind == "depth":
            y = torch.rand(B, 1, H, W, generator=g) * (torch.rand(B, 1, H, W, generator=g) > 0.1)
        elif t.kind == "normal":
            y = F.normalize(torch.randn(B, 3, H, W, generator=g), dim=1)
        else:
            raise ValueError(f"no synthetic targets for task kind {t.kind!r}")
        ys.append(y.to(device))
    return x.to(device), ys


class Bench:
    """What every row needs: the shape, the synthetic data and batch, the device and the flags."""

    def __init__(self, args, spec: dict, device: torch.device):
        self.args, self.spec, self.device = args, spec, device
        self.data = synthetic_data(spec)
        self.T = len(spec["tasks"])
        x, self.ys = synthetic_batch(spec, device, args.seed)
        self.x = x.contiguous(memory_format=torch.channels_last) if args.channels_last and x.dim() == 4 else x

    def model(self, seed_offset: int = 0):
        seed_everything(self.args.seed + seed_offset)
        kw = {"filters": self.spec["filters"]} if self.spec["filters"] else {}
        m = build_model(self.spec["model"], self.data, **kw).to(self.device)
        if self.args.channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m.train()

    def autocast(self):
        return autocast(self.device, self.args.amp)

    def losses(self, outputs) -> torch.Tensor:
        return task_losses(self.data, outputs, self.ys).float()

    def defaults(self, module) -> dict:
        """The method file's defaults table (DEFAULTS) for this shape's dataset ("*" first)."""
        table = getattr(module, "DEFAULTS", {})
        d = dict(table.get("*", {}))
        d.update(table.get(self.spec["dataset"], {}))
        return d

    def adam(self, params):
        return torch.optim.Adam(params, lr=self.args.lr)


# ----------------------------------------------------------------------------------------------
# One row = a maker that builds the method's state and returns (step, solver clock, notes)
# ----------------------------------------------------------------------------------------------
def make_bare(b: Bench):
    """LS as a bare PyTorch loop: forward, sum of the task losses, backward, Adam."""
    model = b.model()
    opt = b.adam(model.parameters())
    tasks = b.data.tasks

    def step():
        opt.zero_grad(set_to_none=True)
        with b.autocast():
            out = model(b.x)
            loss = sum(task_loss(t, o.float(), y) for t, o, y in zip(tasks, out, b.ys))
        loss.backward()
        opt.step()
    return step, None, {"parameters": count_parameters(model.parameters())}


def make_bound(b: Bench):
    """The lower bound of a per-task-gradient step: one forward, one backward per task on the
    shared parameters (the graph kept for all but the last), no optimiser."""
    model = b.model()
    shared = model.shared_parameters()

    def step():
        with b.autocast():
            losses = b.losses(model(b.x))
        for t in range(b.T):
            torch.autograd.grad(losses[t], shared, retain_graph=t < b.T - 1)
    return step, None, {"shared_parameters": count_parameters(shared)}


def make_rule(name: str):
    """A rule of common/aggregators.py through the step of methods/baselines.py."""
    def maker(b: Bench):
        model = b.model()
        agg = make_aggregator(name, b.T, dataset=b.spec["dataset"])
        for p in agg.parameters():
            p.data = p.data.to(b.device)
        rule = RuleStep.for_model(agg, model)
        opt = b.adam(list(model.parameters()) + rule.parameters())

        def recompute():
            with bn_frozen(model), b.autocast():
                return b.losses(model(b.x))

        def step():
            opt.zero_grad(set_to_none=True)
            with b.autocast():
                rep = model.encoder(b.x)
                losses = b.losses(model.decode(rep))
            rule.backward(losses, rep)
            opt.step()
            rule.after_step(recompute)  # FAMO: the losses of the same batch after the step
        return step, lambda: agg.solver_seconds, {"needs": agg.needs}
    return maker


def make_avgnorm(b: Bench):
    """AvgNorm (Eq. 6): weights from the Jacobian on the last shared layer, then one backward."""
    avgnorm = importlib.import_module("avgnorm")
    d = b.defaults(avgnorm)
    model = b.model()
    opt = b.adam(model.parameters())
    clock = [0.0]

    def weigh(G):
        t0 = time.perf_counter()
        w = avgnorm.avgnorm_weights(G, "avgnorm", d.get("eps", 1e-8))[0]
        clock[0] += time.perf_counter() - t0
        return w

    def step():
        opt.zero_grad(set_to_none=True)
        with b.autocast():
            losses = b.losses(model(b.x))
        avgnorm.train_step(model, losses, None, weigh, d.get("grad_on", "last"))
        opt.step()
    return step, lambda: clock[0], {"grad_on": d.get("grad_on", "last")}


def make_pml(b: Bench):
    """PML: m = T members, W forward passes at Dirichlet-sampled theta(alpha) (pml_step)."""
    pml = importlib.import_module("pml")
    d = b.defaults(pml)
    ens = pml.mtl_ensemble([b.model(seed_offset=k) for k in range(b.T)])
    opt = b.adam(ens.parameters())
    args = SimpleNamespace(window=d["window"], lam=d["lam"], balancing=d["balancing"], clip_grad=0.0)
    run = SimpleNamespace(data=b.data, device=b.device, autocast=b.autocast,
                          losses=lambda out, ys: task_losses(b.data, out, ys))
    balancer = pml.LossBalancer(d["balance_window"]) if d["balancing"] == "loss" else None

    def step():
        pml.pml_step(run, args, ens, opt, b.x, b.ys, d["p"], balancer)
    return step, None, {"members": b.T, "window": d["window"], "balancing": d["balancing"], "forward_passes": d["window"]}


def make_palora(b: Bench):
    """PaLoRA: low-rank adapters on every conv / linear, m forward passes per step (one per
    preference), each back-propagated (grad balancing: one backward per task)."""
    palora = importlib.import_module("palora")
    d = b.defaults(palora)
    model = b.model()
    palora.palora_wrap(model, b.T, d["rank"], d["scaling"])
    model.to(b.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    shared_ids = {id(p) for p in model.shared_parameters()}
    opt = torch.optim.Adam([{"params": palora.base_parameters(model)},
                            {"params": palora.adapter_parameters(model), "lr": b.args.lr * b.T}], lr=b.args.lr)
    M, schedule = d["num_prefs"], d["schedule"]
    base = (palora.base_preferences(b.T, M, 0.01) if schedule in ("annealed", "fixed")
            else torch.full((M, b.T), 1.0 / b.T, dtype=torch.float64))
    tau = [0.0]

    def step():
        tau[0] = min(1.0, tau[0] + 0.01)
        prefs = palora.sample_preferences(schedule, base, tau[0], d["temperature"], 1.0)
        opt.zero_grad(set_to_none=True)
        for lam in prefs:
            palora.set_preference(model, lam)
            with b.autocast():
                losses = b.losses(model(b.x))
            palora.backward_pass(losses, lam, d["balance"], trainable, shared_ids)
        opt.step()
    return step, None, {"rank": d["rank"], "forward_passes": M, "balance": d["balance"]}


def make_sam_mtl(b: Bench):
    """SAM-MTL (Algorithm 1 with the LS rule): the T loss gradients, then per task a perturbed forward and
    backward, the loss and flat directions aggregated, each head its SAM gradient."""
    sam = importlib.import_module("sam_mtl")
    d = b.defaults(sam)
    model = b.model()
    opt = b.adam(model.parameters())
    aggs = sam.make_aggregators("ls", b.T, "individual", dataset=b.spec["dataset"])

    def step():
        opt.zero_grad(set_to_none=True)
        g = sam.sam_gradients(model, *sam.model_parts(model), b.x, b.ys, lambda out, ys: task_losses(b.data, out, ys), d["rho_sh"], d["rho_ns"],
                              d["adaptive"], b.autocast)
        direction, _, _ = sam.combine("individual", aggs, g)
        sam.apply_gradients(*sam.model_parts(model), direction, g)
        opt.step()
    return step, lambda: sum(a.solver_seconds for a in sam.all_aggregators(aggs)), {
        "rule": "ls", "rho_sh": d["rho_sh"], "adaptive": d["adaptive"], "forward_passes": 1 + b.T}


def extra_groups(T: int) -> tuple[list[int], list[int], list[int]]:
    """Task groups E1, E2, E3 for the benchmark (the method clusters tasks; the cost does not depend
    on which tasks fall where): one task each for T = 2, else three contiguous thirds."""
    if T == 2:
        return [0], [1], []
    k = math.ceil(T / 3)
    return list(range(k)), list(range(k, 2 * k)), list(range(2 * k, T))


def make_extra(b: Bench):
    """EXTRA stage 2: the control points of a NURBS curve between two endpoints are trained with
    two points C(t1), C(t2) per batch (Eq. 4), each a forward pass through a functional call."""
    extra = importlib.import_module("extra_nurbs")
    from torch.func import functional_call

    d = b.defaults(extra)
    template = b.model()
    flat = extra.FlatParams(template)
    start, end = flat.flatten(template), flat.flatten(b.model(seed_offset=1))
    for p in template.parameters():
        p.requires_grad_(False)
    curve = extra.Curve(start, end, "nurbs", d["control_points"], 3).to(b.device)
    opt = b.adam(curve.parameters())
    groups = extra_groups(b.T)

    def step():
        opt.zero_grad(set_to_none=True)
        t1, t2 = torch.rand(2).tolist()
        outs = []
        for t in (t1, t2):
            theta = curve.point(t)
            with b.autocast():
                out = functional_call(template, flat.unflatten(theta), (b.x,))
                outs.append((b.losses(out), (theta.float() ** 2).sum()))
        J, _ = extra.extra_objective(outs[0][0], outs[1][0], t1, t2, groups, 0.5, 1.0, 0.0, outs[0][1], outs[1][1])
        J.backward()
        opt.step()
    return step, None, {"control_points": d["control_points"], "forward_passes": 2}


MAKERS: dict[str, Callable] = {"bare": make_bare, "bound": make_bound, **{n: make_rule(n) for n in AGGREGATORS},
                               "avgnorm": make_avgnorm, "pml": make_pml, "palora": make_palora,
                               "sam_mtl": make_sam_mtl, "extra": make_extra}


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _summary(name: str, times: list[float], shares: list[float], peak, notes: dict) -> dict:
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    row = {"method": name, "median_ms": float(q50), "p25_ms": float(q25), "p75_ms": float(q75),
           "min_ms": float(min(times)), "times_ms": [round(t, 3) for t in times],
           "solver_share": float(statistics.median(shares)) if shares else None, "peak_memory_mb": peak}
    row.update(notes)
    if "forward_passes" in notes:
        row["ms_per_forward_pass"] = float(q50) / notes["forward_passes"]
    return row


def _timed_step(b: Bench, step, clock, times: list, shares: list) -> None:
    s0 = clock() if clock else 0.0
    synchronize(b.device)
    t0 = time.perf_counter()
    step()
    synchronize(b.device)
    dt = time.perf_counter() - t0
    times.append(dt * 1e3)
    if clock:
        shares.append((clock() - s0) / dt)


def _build(b: Bench, name: str):
    try:
        return MAKERS[name](b), None
    except ImportError as e:
        return None, {"method": name, "skipped": f"cannot import the method file ({type(e).__name__}: {e})"}


def time_sequential(b: Bench, methods: list[str]) -> list[dict]:
    """One row after the other, each with its own peak-memory window (the CUDA default)."""
    rows = []
    for name in methods:
        _free(b.device)
        built, skipped = _build(b, name)
        if skipped:
            rows.append(skipped)
            continue
        step, clock, notes = built
        for _ in range(b.args.warmup):
            step()
        times, shares = [], []
        for _ in range(b.args.steps):
            _timed_step(b, step, clock, times, shares)
        peak = torch.cuda.max_memory_allocated(b.device) / 2**20 if b.device.type == "cuda" else None
        rows.append(_summary(name, times, shares, peak, notes))
        del built, step, clock
    return rows


def time_interleaved(b: Bench, methods: list[str]) -> list[dict]:
    """Every row built first, then round-robin: step k of every row before step k + 1 of any, so
    that load from other processes on a shared machine falls on all rows alike (the CPU default).
    No per-row peak memory in this mode."""
    built, skipped = {}, {}
    for name in methods:
        r, sk = _build(b, name)
        if sk:
            skipped[name] = sk
        else:
            built[name] = r
    for _ in range(b.args.warmup):
        for step, _, _ in built.values():
            step()
    times = {n: [] for n in built}
    shares = {n: [] for n in built}
    for _ in range(b.args.steps):
        for n, (step, clock, _) in built.items():
            _timed_step(b, step, clock, times[n], shares[n])
    return [skipped[n] if n in skipped else _summary(n, times[n], shares[n], None, built[n][2]) for n in methods]


def add_ratios(rows: list[dict]) -> None:
    """x LS, x bound, memory x LS (in place)."""
    by = {r["method"]: r for r in rows if "median_ms" in r}
    ls, bound = by.get("ls"), by.get("bound")
    for r in by.values():
        r["x_ls"] = r["median_ms"] / ls["median_ms"] if ls else None
        r["x_bound"] = r["median_ms"] / bound["median_ms"] if bound and (r["method"] in GRADIENT_RULES or r["method"] in ("bound", "avgnorm")) else None
        r["memory_x_ls"] = (r["peak_memory_mb"] / ls["peak_memory_mb"]
                            if ls and r["peak_memory_mb"] and ls["peak_memory_mb"] else None)
        if r.get("ms_per_forward_pass") is not None and ls:
            r["forward_pass_x_ls"] = r["ms_per_forward_pass"] / ls["median_ms"]


# ----------------------------------------------------------------------------------------------
# The per-task Jacobian: four ways to get the T x d matrix
# ----------------------------------------------------------------------------------------------
def _flat_rows(grads, params) -> torch.Tensor:
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1)


def jacobian_fn(variant: str, model, b: Bench) -> Callable[[], torch.Tensor]:
    """A function that runs the forward pass and returns G (T x d) with the given variant."""
    from torch.func import functional_call, grad, vjp, vmap

    shared = model.shared_parameters()
    names = {id(p): n for n, p in model.named_parameters()}
    shared_names = [names[id(p)] for p in shared]
    eye = torch.eye(b.T, device=b.device)

    if variant == "loop":  # common.train.jacobian: one backward per task, graph kept until the last
        def f():
            with b.autocast():
                losses = b.losses(model(b.x))
            return jacobian(losses, shared)
        return f
    if variant == "batched":  # one vmapped backward over the T one-hot cotangents
        def f():
            with b.autocast():
                losses = b.losses(model(b.x))
            return _flat_rows(torch.autograd.grad(losses, shared, grad_outputs=eye, is_grads_batched=True), shared)
        return f

    # BatchNorm buffers are passed in explicitly: a torch.func transform may not mutate a captured
    # tensor, and train-mode BatchNorm updates its running statistics in place
    def losses_at(params: dict, buffers: dict):
        with b.autocast():
            return b.losses(functional_call(model, (params, buffers), (b.x,)))

    def inputs():
        return ({n: p.detach() for n, p in zip(shared_names, shared)}, dict(model.named_buffers()))

    if variant == "func-vjp":  # torch.func: one forward, vmap of the pullback over one-hot cotangents
        def f():
            params, buffers = inputs()

            def fwd(p):  # buffers cloned inside the transform, written back after it
                bufs = {k: v.clone() for k, v in buffers.items()}
                return losses_at(p, bufs), bufs
            _, pullback, new_buffers = vjp(fwd, params, has_aux=True)
            with torch.no_grad():
                for k, v in new_buffers.items():
                    buffers[k].copy_(v)
            g = vmap(pullback)(eye)[0]
            return _flat_rows([g[n] for n in shared_names], shared)
        return f
    if variant == "func-vmap-grad":  # torch.func: vmap over the one-hot e_t of grad(e_t^T L)
        def f():
            params, buffers = inputs()
            g = vmap(grad(lambda p, e, bufs: (losses_at(p, bufs) * e).sum()), in_dims=(None, 0, None),
                     randomness="same")(params, eye, buffers)
            return _flat_rows([g[n] for n in shared_names], shared)
        return f
    raise ValueError(variant)


def jacobian_study(b: Bench, order: str = "sequential") -> list[dict]:
    """Check each variant's G against the loop's in eval mode (dropout off, BatchNorm on running
    statistics: every variant sees the same function), then time them in train mode (forward
    included), one after the other or round-robin (`order`, as the method rows)."""
    model = b.model()
    fns, out, ref = {}, {}, None
    for v in JACOBIAN_VARIANTS:
        fn = jacobian_fn(v, model, b)
        model.eval()
        try:
            G = fn().detach()
        except Exception as e:  # a torch.func transform that this model does not support
            out[v] = {"variant": v, "failed": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
            continue
        finally:
            model.train()
        ref = G if ref is None else ref
        fns[v] = fn
        out[v] = {"variant": v, "max_rel_diff_vs_loop": float((G - ref).abs().max() / ref.abs().max().clamp_min(1e-30)),
                  "times": [], "peak_memory_mb": None}
    rounds = [list(fns)] if order == "interleaved" else [[v] for v in fns]
    for group in rounds:
        if order == "sequential":
            _free(b.device)
        for v in list(group):
            try:  # train mode can fail where eval mode did not (BatchNorm updates under a transform)
                for _ in range(max(b.args.warmup, 1)):
                    fns[v]()
            except Exception as e:
                out[v] = {"variant": v, "failed": f"train mode: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}
                group.remove(v)
        for _ in range(b.args.steps):
            for v in group:
                _timed_step(b, fns[v], None, out[v]["times"], [])
        if group and order == "sequential" and b.device.type == "cuda":
            out[group[0]]["peak_memory_mb"] = torch.cuda.max_memory_allocated(b.device) / 2**20
    for r in out.values():
        if "times" in r:
            t = r.pop("times")
            q25, q50, q75 = np.percentile(t, [25, 50, 75])
            r.update(median_ms=float(q50), p25_ms=float(q25), p75_ms=float(q75), min_ms=float(min(t)))
    loop = out.get("loop")
    for r in out.values():
        if loop and "median_ms" in r and "median_ms" in loop:
            r["x_loop"] = r["median_ms"] / loop["median_ms"]
    return [out[v] for v in JACOBIAN_VARIANTS]


# ----------------------------------------------------------------------------------------------
# The harness tax: methods/baselines.py end to end against a bare loop over the same batches
# ----------------------------------------------------------------------------------------------
def harness_tax(args, device: torch.device) -> dict:
    try:
        k1, k2 = (int(v) for v in args.tax_steps.split(","))
        assert 1 <= k1 < k2
    except (ValueError, AssertionError):
        raise UsageError(f"--tax-steps must be two integers K1,K2 with 1 <= K1 < K2 (got {args.tax_steps!r})")
    baselines = importlib.import_module("baselines")
    from common.train import Run, base_parser

    data = load_dataset("multimnist-lite", args.data_root, args.seed)
    per_epoch = math.ceil(len(data.train) / 256)
    if k2 > per_epoch:
        raise UsageError(f"--tax-steps K2 must be at most one epoch ({per_epoch} steps) so that evaluation cancels out")
    tmp = tempfile.mkdtemp(prefix="bench_tax_")
    try:
        def timed_main(k):
            synchronize(device)
            t0 = time.perf_counter()
            baselines.main(["--method", "ls", "--max-steps", str(k), "--out", os.path.join(tmp, f"k{k}"), "--device", str(device),
                            "--data-root", args.data_root, "--seed", str(args.seed), "--no-progress", "--quiet", "--overwrite"])
            synchronize(device)
            return time.perf_counter() - t0
        timed_main(k1)  # warm-up (dataset cache, kernels)
        # the fastest of --tax-repeats runs per K: the least disturbed by other load on the machine
        t1 = min(timed_main(k1) for _ in range(args.tax_repeats))
        t2 = min(timed_main(k2) for _ in range(args.tax_repeats))
        harness_ms = _per_step_ms(t1, t2, k1, k2)
        # the bare loop: same model, same batches (Run.batches of the same seed), same Adam
        run_args = base_parser("baselines").parse_args(["--out", os.path.join(tmp, "bare"), "--device", str(device),
                                                          "--data-root", args.data_root, "--seed", str(args.seed)])
        run = Run(run_args, "ls")
        model = build_model(None, run.data).to(device).train()
        opt, _ = run.make_optimizer(model.parameters())
        tasks = run.data.tasks

        def bare(k):
            synchronize(device)
            t0 = time.perf_counter()
            for i, (x, ys) in enumerate(run.batches("train", 0)):
                if i >= k:
                    break
                opt.zero_grad(set_to_none=True)
                loss = sum(task_loss(t, o, y) for t, o, y in zip(tasks, model(x), ys))
                loss.backward()
                opt.step()
            synchronize(device)
            return time.perf_counter() - t0
        bare(k1)
        b1 = min(bare(k1) for _ in range(args.tax_repeats))
        b2 = min(bare(k2) for _ in range(args.tax_repeats))
        bare_ms = _per_step_ms(b1, b2, k1, k2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"dataset": "multimnist-lite", "steps": [k1, k2], "baselines_ls_ms_per_step": harness_ms,
           "bare_ms_per_step": bare_ms, "ratio": harness_ms / bare_ms if harness_ms is not None and bare_ms is not None else None,
           "baselines_seconds": [t1, t2], "bare_seconds": [b1, b2]}
    unmeasured = [name for name, v in (("methods/baselines.py", harness_ms), ("the bare loop", bare_ms)) if v is None]
    if unmeasured:
        out["not_measured"] = (f"{' and '.join(unmeasured)}: the {k2}-step runs were not slower than the {k1}-step runs "
                               "(other load on the machine); rerun with more --tax-repeats or a wider --tax-steps")
    return out


def _per_step_ms(t1: float, t2: float, k1: int, k2: int) -> float | None:
    """Milliseconds per step from the times of a K1- and a K2-step run; None when the longer run was
    not slower (the difference drowned in load), which is no measurement."""
    return (t2 - t1) / (k2 - k1) * 1e3 if t2 > t1 else None


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _f(v, fmt="{:.1f}", none="–"):
    return none if v is None else fmt.format(v)


def markdown(report: dict) -> str:
    s = report["shape"]
    lines = [f"### {report['shape_name']}: {s['model']} {'x'.join(map(str, s['input']))}, batch {s['batch']}, "
             f"{s['num_tasks']} tasks" + (f", filters {','.join(map(str, s['filters']))}" if s.get("filters") else ""),
             "",
             f"{report['device_name']} ({report['device']}), torch {report['versions']['torch']}, {report['date']}; "
             f"{report['warmup']} warm-up + {report['steps']} timed steps, {report['order']}"
             + (", bf16 autocast" if report["amp"] else "") + (", channels_last" if report["channels_last"] else ""),
             "",
             "| method | step ms (median) | p25-p75 ms | min ms | x LS | x bound | peak MiB | mem x LS | solver share |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        if "skipped" in r:
            lines.append(f"| {r['method']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        name = r["method"]
        if r.get("forward_passes", 1) > 1:
            name += f" ({r['forward_passes']} fwd; {r['ms_per_forward_pass']:.1f} ms = {_f(r.get('forward_pass_x_ls'), '{:.2f}')}x LS per fwd)"
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['p25_ms']:.1f}-{r['p75_ms']:.1f} | {r['min_ms']:.1f} | {_f(r.get('x_ls'), '{:.2f}')} | "
                     f"{_f(r.get('x_bound'), '{:.2f}')} | {_f(r['peak_memory_mb'], '{:.0f}')} | {_f(r.get('memory_x_ls'), '{:.2f}')} | "
                     f"{_f(r['solver_share'], '{:.1%}')} |")
    if report.get("jacobian"):
        lines += ["", "Per-task Jacobian (forward included):", "",
                  "| variant | ms (median) | min ms | x loop | max rel. diff vs loop | peak MiB |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["jacobian"]:
            if "failed" in r:
                lines.append(f"| {r['variant']} | failed: {r['failed']} | | | | |")
            else:
                lines.append(f"| {r['variant']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['x_loop']:.2f} | {r['max_rel_diff_vs_loop']:.1e} | "
                             f"{_f(r['peak_memory_mb'], '{:.0f}')} |")
    if report.get("harness_tax"):
        h = report["harness_tax"]
        na = "not measured"
        lines += ["", f"Harness tax (multimnist-lite, LeNet, batch 256, steps {h['steps'][0]}..{h['steps'][1]}): "
                      f"methods/baselines.py --method ls {_f(h['baselines_ls_ms_per_step'], '{:.1f} ms/step', na)}, "
                      f"bare PyTorch loop {_f(h['bare_ms_per_step'], '{:.1f} ms/step', na)}, ratio {_f(h['ratio'], '{:.2f}', na)}"
                      + (f" (not measured: {h['not_measured']})" if h.get("not_measured") else "")]
    return "\n".join(lines) + "\n"


def host_sync_report(args) -> dict:
    """--host-syncs: the table of reproduce/host_syncs.py, written to --out (default results/benchmark/host_syncs/)."""
    from reproduce import host_syncs

    try:
        k1, k2 = (int(v) for v in args.host_sync_steps.split(","))
        assert 1 <= k1 < k2 <= 12
    except (ValueError, AssertionError):
        raise UsageError(f"--host-sync-steps must be two integers K1,K2 with 1 <= K1 < K2 <= 12 (got {args.host_sync_steps!r})")
    only = None if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    rows = host_syncs.study(args.data_root, k1, k2, only, say)
    if not rows:
        raise UsageError(f"--methods {args.methods!r} matches no --host-syncs row (scripts: baselines, pfl, extra, sam_mtl, pml, "
                         "palora, avgnorm, stl, or a row label such as 'baselines mgda')")
    report = {"host_syncs": rows, "steps": [k1, k2], "versions": {"torch": torch.__version__},
              "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "command": "python -m reproduce.benchmark " + " ".join(sys.argv[1:] if args.argv is None else args.argv)}
    out = args.out or os.path.join("results", "benchmark", "host_syncs")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "host_syncs.json"), report)
    md = host_syncs.markdown(rows, k1, k2)
    with open(os.path.join(out, "host_syncs.md"), "w") as fh:
        fh.write(md)
    say(md)
    say(f"[benchmark] wrote {os.path.join(out, 'host_syncs.json')} and host_syncs.md")
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.host_syncs:
        args.argv = argv
        return host_sync_report(args)
    spec, methods, device = resolve(args)
    out = args.out or os.path.join("results", "benchmark", args.shape, device.type)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder")
    b = Bench(args, spec, device)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    torch.backends.cudnn.benchmark = device.type == "cuda"
    order = args.order if args.order != "auto" else ("sequential" if device.type == "cuda" else "interleaved")
    rows = (time_sequential if order == "sequential" else time_interleaved)(b, methods)
    add_ratios(rows)
    report = {"shape_name": args.shape,
              "shape": {"dataset": spec["dataset"], "model": spec["model"], "input": list(spec["input"]), "batch": spec["batch"],
                        "num_tasks": b.T, "filters": list(spec["filters"]) if spec["filters"] else None},
              "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()) + f", {torch.get_num_threads()} threads",
              "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              "steps": args.steps, "warmup": args.warmup, "order": order, "amp": bool(args.amp and device.type == "cuda"),
              "channels_last": args.channels_last, "results": rows,
              "command": "python -m reproduce.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.jacobian:
        report["jacobian"] = jacobian_study(b, order)
        for r in report["jacobian"]:
            say(f"[benchmark] jacobian {r['variant']}: " + (r["failed"] if "failed" in r else f"{r['median_ms']:.1f} ms"))
    if args.harness_tax:
        report["harness_tax"] = harness_tax(args, device)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "benchmark.json"), report)
    md = markdown(report)
    with open(os.path.join(out, "benchmark.md"), "w") as fh:
        fh.write(md)
    say(md)
    say(f"[benchmark] wrote {os.path.join(out, 'benchmark.json')} and benchmark.md")
    return report


if __name__ == "__main__":
    main_guard(main)
