"""AvgNorm: loss weights from the task gradient norms, and the grid search over static loss weights
that it replaces.

Paper: Y. Guo, T. Yu, L. Bai, Y. Guo, Y. Ruan, W. Li, W. Zheng, "Revisit the Imbalance Optimization
in Multi-task Learning: An Experimental Analysis" (section III, section V-F 5, Tables VI-VII,
Figures 7-9). No official code is public; the paper's equations are the specification.

The multi-task objective is the weighted sum of the task losses (Eq. 2), so the shared parameters
move along the weighted sum of the task gradients (Eq. 3):

    min  sum_t lambda_t L_t                                   (Eq. 2)
    phi <- phi - eta sum_t lambda_t grad_phi L_t              (Eq. 3)

AvgNorm sets lambda_t at every step from the gradients g_i = grad_theta L_i of the task losses with
respect to the shared parameters theta (by default the last layer of the shared encoder, which the
paper finds sufficient; --grad-on all uses every shared parameter):

    w_i = 1 / ||g_i||                                         (the rejected "reciprocal" variant)
    S   = || sum_i g_i ||,   w_i = S / ||g_i||                (Eq. 6)

so every weighted task gradient w_i g_i has the same norm S and the update direction
sum_i w_i g_i = S sum_i g_i / ||g_i|| is the sum of the unit task gradients: it does not change
when a task's loss is multiplied by a constant (that task's weight falls by the same factor). The
weights are detached (no gradient flows through them), used for the whole loss (heads included, as
loss weights are), and recomputed every --every steps (reused in between).

Near-zero guard (not in the paper, which only says that extreme norms make 1/||g|| unstable): a
task whose gradient norm is below --eps (or not finite) has no gradient reaching theta, so its
weight is undefined; it keeps its previous weight (at the first computation: the mean weight of
the tasks that do have a gradient, or 1 if none has). Eq. 6 is applied unchanged to the others, and
no weight is ever infinite or NaN.

The grid search (--grid "1,2,5,10,50", or a file): every combination of those static loss weights
(one value per task, Eq. 2 with fixed lambda_t) is trained with the same harness, and the best
point on the validation split is reported with its test metrics. Combinations that are a common
multiple of another (2,2 vs 1,1) are skipped when the update is invariant to that scale (Adam
without weight decay and without clipping: the update ignores a common factor of the gradient, up to
Adam's epsilon). The selection criterion is the validation Delta-m% (Eq. 5's normalisation with the
single-task reference) when a reference exists, else its scale-free log form (the suite's one
selection score, common.metrics.selection_score; never a raw mean of metrics in different units).

Reports: the mean of each task's weight over training (the lambda_t columns of Tables VI and VII),
and per epoch, over the steps where the gradients were computed, the cosine similarity between
each task gradient and the aggregated gradient sum_i w_i g_i (Figures 7 and 9), the norms of the
task gradients ||g_i|| (Figure 8) and of the weighted ones ||w_i g_i||, all with plots.
--variant static --weights ... trains one fixed weighting (Uniform = all ones) with the same
reports, for the paper's Uniform / Grid Search curves.

The paper's suites are `--dataset nyud` (NYUD-v2: semantic segmentation, depth, normals, edges) and
`--dataset pascal-context` (semantic segmentation, human parts, normals, saliency, edges), in the
dense-prediction survey's on-disk layout, with a dilated ResNet-18 and DeepLab (ASPP) heads by
default (`--model mtan-resnet18` for MTAN, `resnet50-dilated` for Table III) and the training of
Table IX (Adam 1e-4, weight decay 1e-4, batch 6, poly schedule, 100 / 60 epochs, best epoch): the
dataset defaults of common/train.py. Every dataset runs with the same defaults as
methods/baselines.py, so AvgNorm compares with the other rules on equal terms. Differences from the
paper: random initialisation unless --pretrained PATH gives a torchvision ImageNet state_dict (the
paper starts from ImageNet weights; nothing can be downloaded here). Delta-m% follows this project's sign (EXTRA Eq. 8: lower is better,
negative = better than single-task), the opposite of the paper's Eq. 5. Gradient clipping is off by
default, as in the paper's ResNet setting (Table IX).

Copy this one file into another project for the method half (torch only, above the "runner" banner):
avgnorm_weights(G) is Eq. 6 on any T x d matrix of task gradients, weighted_backward(losses, w, weigh,
theta, heads) one training backward of Eq. 2-3 with theta (and heads) any parameters the caller names.
The runner half (command line, training loop, grid) imports the suite's common/ only when it runs.

    python methods/avgnorm.py                                  # multimnist-lite, offline
    python methods/avgnorm.py --variant reciprocal             # w_i = 1 / ||g_i||
    python methods/avgnorm.py --grad-on all --every 5
    python methods/avgnorm.py --grid "1,2,5,10,50"             # the grid search it replaces
    python methods/avgnorm.py --dataset nyuv2 --model mtan
    python methods/avgnorm.py --dataset nyud                   # Table VI (needs data/NYUD_MT, see data/README.md)
    python methods/avgnorm.py --dataset pascal-context --model mtan-resnet18
    python methods/avgnorm.py --dataset nyud --variant static --weights 1,1,2,50   # the paper's grid-searched weights
"""
from __future__ import annotations

import itertools
import math
import importlib.util
import os
import sys
import time
from argparse import Namespace

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------
# The method: Eq. 6 (and the reciprocal variant) with the near-zero guard
# ----------------------------------------------------------------------------------------------
def avgnorm_weights(G: torch.Tensor, variant: str = "avgnorm", eps: float = 1e-8,
                    previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss weights from the T x d matrix G whose row i is g_i = grad_theta L_i.

    avgnorm (Eq. 6): w_i = S / ||g_i|| with S = ||sum_i g_i||; reciprocal: w_i = 1 / ||g_i||.
    Guard: rows with ||g_i|| < eps (or a non-finite norm) get their `previous` weight, or, without
    one, the mean weight of the valid rows (1 if no row is valid). Returns (w, guarded mask).
    """
    G = G.detach().float()
    norms = G.norm(dim=1)
    S = G.sum(dim=0).norm()
    numerator = S if variant == "avgnorm" else torch.ones_like(S)
    bad = ~(norms >= eps) | ~torch.isfinite(norms)
    if not torch.isfinite(S):  # a non-finite row poisons S: Eq. 6 on the finite rows only
        S = G[~bad].sum(dim=0).norm() if (~bad).any() else torch.ones_like(S)
        numerator = S if variant == "avgnorm" else torch.ones_like(S)
    w = numerator / torch.where(bad, torch.ones_like(norms), norms)
    if bad.any():
        if previous is not None:
            fallback = previous.to(w).expand_as(w)
        else:
            fill = w[~bad].mean() if (~bad).any() else torch.ones((), device=w.device)
            fallback = fill.expand_as(w)
        w = torch.where(bad, fallback, w)
    return w, bad


def gradient_report(G: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per task: ||g_i|| (Fig. 8), ||w_i g_i||, and cos(g_i, d) with d = sum_i w_i g_i (Figs. 7, 9;
    the cosine of the weighted contribution w_i g_i is the same for w_i > 0); plus S and ||d||."""
    G = G.detach().float()
    w = w.detach().float().to(G.device)
    norms = G.norm(dim=1)
    d = w @ G
    dn = d.norm()
    denom = norms * dn
    cos = torch.where(denom > 0, (G @ d) / denom.clamp_min(1e-30), torch.zeros_like(norms))
    return {"grad_norm": norms, "wgrad_norm": w.abs() * norms, "cos": cos,
            "S": G.sum(dim=0).norm(), "agg_norm": dn}



def _flat_grads(grads, params) -> torch.Tensor:
    """One row of G: the gradients of `params` flattened and concatenated (an unused one counts 0)."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def weighted_backward(losses: torch.Tensor, w: torch.Tensor | None, weigh, theta, heads=None):
    """One backward of Eq. 2-3, sum_t w_t L_t with detached weights; fills .grad.

    `weigh` None: the weights `w` are reused (no gradients measured this step). Otherwise `weigh`
    maps G (T x d, row t = g_t = grad_theta L_t) to the weights, and theta are the parameters the
    g_t are measured on:
    - heads None (the paper: theta = the last shared layer): G one task at a time with the graph
      kept, then one backward of sum_t w_t L_t through the whole model;
    - heads[t] = task t's head parameters (theta = all shared parameters): one backward per task
      gives row t of G and the gradient of its own head at once; theta's .grad = sum_t w_t g_t
      (Eq. 3), head t's = w_t times its own.
    Returns (w, G or None).
    """
    T = len(losses)
    if weigh is None:
        (w.to(losses) * losses).sum().backward()
        return w, None
    theta = list(theta)
    if heads is None:
        G = torch.stack([_flat_grads(torch.autograd.grad(losses[t], theta, retain_graph=True, allow_unused=True), theta)
                         for t in range(T)]).to(losses.dtype)
        w = weigh(G)
        (w.to(losses) * losses).sum().backward()
        return w, G
    heads = [list(h) for h in heads]
    rows, head_grads = [], []
    for t in range(T):
        grads = torch.autograd.grad(losses[t], theta + heads[t], retain_graph=t < T - 1, allow_unused=True)
        rows.append(_flat_grads(grads[:len(theta)], theta))
        head_grads.append(grads[len(theta):])
    G = torch.stack(rows)
    w = weigh(G)
    d = w.to(G) @ G                                                         # Eq. 3
    for p, v in zip(theta, torch.split(d, [p.numel() for p in theta])):
        p.grad = v.view_as(p).to(p.dtype).clone()
    for t in range(T):
        for p, g in zip(heads[t], head_grads[t]):
            p.grad = g * w[t].to(g) if g is not None else torch.zeros_like(p)
    return w, G



# ============================ runner: command line and training loop (needs common/) ============================
def _common() -> None:
    """Make `common` (the suite's harness) importable from methods/: the runner half's imports need it."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.dirname(here) not in sys.path:
        sys.path.insert(0, os.path.dirname(here))


def _usage(message: str) -> Exception:
    """The harness's UsageError (exit status 2, one line) with `message`."""
    _common()
    from common.device import UsageError

    return UsageError(message)


# The defaults (--help prints them; Run resolves every flag left unset from them): the harness's
# benchmark settings per dataset (epochs, batch size, lr, schedule; common/train.py DATASET_DEFAULTS),
# the same as methods/baselines.py, so AvgNorm compares with the other rules on equal terms; AvgNorm's
# own, the same everywhere: the last shared layer (paper, section V-F 5), recomputed every step,
# clipping off (Table IX).
DEFAULTS = {"*": {"grad_on": "last", "every": 1, "eps": 1e-8, "clip_grad": 0.0}}
PAPER_GRID = "1,2,5,10,50"  # the values of the paper's searched weights (Tables VI, VII; appendix)


def parse_args(argv=None):
    _common()
    from common.train import base_parser, defaults_table

    p = base_parser("avgnorm", __doc__)
    p.epilog = defaults_table(DEFAULTS, title="AvgNorm defaults")
    g = p.add_argument_group("AvgNorm options")
    g.add_argument("--variant", choices=["avgnorm", "reciprocal", "static"], default="avgnorm",
                   help="avgnorm: w_i = S / ||g_i||, S = ||sum_i g_i|| (Eq. 6, default); reciprocal: w_i = 1 / ||g_i|| "
                        "(the variant the paper rejects); static: the fixed weights of --weights (Uniform by default)")
    g.add_argument("--grad-on", choices=["last", "all"], default=None,
                   help="parameters theta of the gradients g_i: the last layer of the shared encoder (default, as the paper) "
                        "or all shared parameters")
    g.add_argument("--every", type=int, default=None,
                   help="recompute the weights (and the gradient reports) every K steps, reusing them in between (default 1)")
    g.add_argument("--eps", type=float, default=None,
                   help="near-zero guard: a task gradient norm below this (or not finite) keeps the task's previous weight "
                        "(default 1e-8)")
    g.add_argument("--weights", default=None, metavar="W1,W2,..",
                   help="static loss weights lambda_t, one per task (--variant static; default all 1 = Uniform)")
    g.add_argument("--grid", nargs="?", const=PAPER_GRID, default=None, metavar="VALUES|FILE",
                   help=f"grid search over static loss weights instead of AvgNorm: comma-separated values tried for every task "
                        f"(all combinations; bare --grid = \"{PAPER_GRID}\"), or a file with one weight vector per line "
                        f"('#' comments); each point is a full run under --out/grid/, the best on validation is reported "
                        f"(default --out results/avgnorm-grid/<dataset>/seed<seed>/)")
    g.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    return p.parse_args(argv)


def shared_target(model, grad_on: str) -> list[torch.nn.Parameter]:
    return model.last_shared_parameters() if grad_on == "last" else model.shared_parameters()


def train_step(model, losses: torch.Tensor, w: torch.Tensor | None, weigh, grad_on: str):
    """weighted_backward on one of the suite's models: the g_t on its last shared layer (grad_on
    last) or on all its shared parameters, with its heads (grad_on all)."""
    heads = [model.task_parameters(t) for t in range(len(losses))] if grad_on == "all" else None
    return weighted_backward(losses, w, weigh, shared_target(model, grad_on), heads)


# ----------------------------------------------------------------------------------------------
# Arguments of the method and of the grid
# ----------------------------------------------------------------------------------------------
def parse_vector(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise _usage(f"{what} {text!r} must be numbers separated by commas, e.g. 1,2,5")
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise _usage(f"{what} {text!r} must hold positive finite numbers")
    return vals


def grid_points(spec: str, num_tasks: int, dedupe_scale: bool = True) -> list[list[float]]:
    """The grid: a file with one weight vector per line, or every combination (one value per task)
    of comma-separated values. With `dedupe_scale`, points that are a common multiple of an earlier
    one are dropped (same update under Adam)."""
    if os.path.isfile(spec):
        try:
            with open(spec) as fh:
                lines = [ln.split("#", 1)[0].strip() for ln in fh]
        except (OSError, UnicodeDecodeError) as e:
            raise _usage(f"--grid {spec}: cannot read it ({type(e).__name__})")
        points = [parse_vector(ln, f"--grid {spec}: line") for ln in lines if ln]
        if not points:
            raise _usage(f"--grid {spec}: no weight vector in it (one line per point, e.g. 1,2)")
        for pt in points:
            if len(pt) != num_tasks:
                raise _usage(f"--grid {spec}: the line {','.join(f'{v:g}' for v in pt)} has {len(pt)} weights, "
                                 f"this dataset has {num_tasks} tasks")
    else:
        values = sorted(set(parse_vector(spec, "--grid")))
        points = [list(p) for p in itertools.product(values, repeat=num_tasks)]
    out, seen = [], set()
    for pt in points:
        key = tuple(round(v / pt[0], 9) for v in pt) if dedupe_scale else tuple(pt)
        if key not in seen:
            seen.add(key)
            out.append(pt)
    return out


def check_flags(args) -> None:
    """The method flags given on the command line, checked before anything is loaded or written."""
    if args.every is not None and args.every < 1:
        raise _usage(f"--every must be a positive integer (got {args.every})")
    if args.eps is not None and not (args.eps > 0 and math.isfinite(args.eps)):
        raise _usage(f"--eps must be a positive number (got {args.eps})")
    if args.eval_every < 1:
        raise _usage(f"--eval-every must be a positive integer (got {args.eval_every})")
    if args.weights is not None and (args.variant != "static" or args.grid is not None):
        raise _usage("--weights sets the fixed weights of --variant static (the grid sets its own); add --variant static or drop it")


def static_weights(args, T: int) -> list[float]:
    if args.weights is None:
        return [1.0] * T
    w = parse_vector(args.weights, "--weights")
    if len(w) != T:
        raise _usage(f"--weights has {len(w)} values; this dataset has {T} tasks (one weight per task)")
    return w


# ----------------------------------------------------------------------------------------------
# Training one weighting (AvgNorm, reciprocal or static) with its reports
# ----------------------------------------------------------------------------------------------
def fit(args, run: Run, weights: list[float] | None = None) -> dict:
    """Train with args.variant (static: `weights`), write log.csv / checkpoints / plots in run.out, and
    return the result (`fit_report`, with the final validation metrics for the grid)."""
    _common()
    from common.device import synchronize
    from common.models import build_model
    from common.train import clip_shared, flat_metrics

    data, T, dev = run.data, run.data.num_tasks, run.device
    model = build_model(args.model, data, pretrained=args.pretrained).to(dev)
    opt, sched = run.make_optimizer(model.parameters())
    run.track(model=model, opt=opt, sched=sched)
    adaptive = args.variant != "static"
    S = run.values(w=torch.tensor(weights if weights is not None else [1.0] * T, dtype=torch.float32),
                   computed=False,  # whether w holds a computed AvgNorm weight (guard fallback)
                   weight_sum=torch.zeros(T), weight_n=0, guard_hits=0, weight_seconds=0.0,
                   history=[])  # per-epoch means of the reports (Figs. 7-9, Tables VI-VII)
    w = S["w"].to(dev)
    last_val = None  # validation metrics of the current model, if just computed

    def weigh(G):  # Eq. 6 (or the reciprocal variant) on the task gradients G, with the near-zero guard
        if not adaptive:
            return w
        t0 = time.perf_counter()
        new, bad = avgnorm_weights(G, args.variant, args.eps, w if S["computed"] else None)
        synchronize(dev)
        S["weight_seconds"] += time.perf_counter() - t0
        guard_epoch.add_(bad.sum())
        S["computed"] = True
        return new

    for epoch in run.epochs():
        model.train()
        last_val = None
        # logged sums stay on the device during the epoch and are read once at its end (no per-step host sync)
        sums, n = torch.zeros(T, device=dev), 0
        rep_sum, rep_n, w_epoch = {}, 0, torch.zeros(T, device=dev)
        guard_epoch = torch.zeros((), dtype=torch.long, device=dev)
        for x, ys in run.progress(run.batches("train", epoch), f"{args.variant} epoch {epoch + 1}", run.num_batches()):
            opt.zero_grad(set_to_none=True)
            with run.autocast():
                losses = run.losses(model(x), ys).float()
            due = run.global_step % args.every == 0  # recompute (adaptive) / report (static) this step
            w, G = train_step(model, losses, w, weigh if due else None, args.grad_on)
            w = w.detach()
            if G is not None:
                for k, v in gradient_report(G, w).items():
                    rep_sum[k] = rep_sum.get(k, 0) + v.detach()
                rep_n += 1
            clip_shared(model, args.clip_grad)
            opt.step()
            sums += losses.detach()
            w_epoch += w.float()
            S["weight_n"] += 1
            n += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        S["weight_sum"] += w_epoch.cpu()
        S["guard_hits"] += int(guard_epoch)
        rec = {"epoch": epoch, "weights": (w_epoch.cpu() / max(n, 1)).tolist()}
        rec.update({k: (v.cpu() / rep_n).tolist() if v.dim() else float(v.cpu() / rep_n) for k, v in rep_sum.items()})
        S["history"].append(rec)
        row = epoch_row(data.task_names, sums.cpu() / max(n, 1), rec)
        if run.eval_due(epoch):
            model.eval()
            val = last_val = run.evaluate(model, "val")
            row.update(flat_metrics("val", val))
            run.best.offer(run.selection_score(val), model.state_dict(), epoch)  # --select best
        run.log_epoch(epoch, row)
        S["w"] = w.cpu()
        run.checkpoint(epoch)

    if run.best.restore(model.load_state_dict) is not None:
        last_val = None
    model.eval()
    val = last_val if last_val is not None else run.evaluate(model, "val")
    return fit_report(run, args, model, weights, w, S, val, run.evaluate(model, "test"))


def epoch_row(names: list[str], train_loss: torch.Tensor, rec: dict) -> dict:
    """The log.csv row of an epoch: mean training losses and weights, the gradient reports."""
    row = {f"train_loss_{t}": float(v) for t, v in zip(names, train_loss)}
    row.update({f"weight_{t}": v for t, v in zip(names, rec["weights"])})
    for k in ("grad_norm", "wgrad_norm", "cos"):
        row.update({f"{k}_{t}": (rec[k][i] if k in rec else None) for i, t in enumerate(names)})
    row["S"] = rec.get("S")
    return row


def fit_report(run: Run, args, model, weights: list[float] | None, w: torch.Tensor, S: dict, val: dict, test: dict) -> dict:
    """The result of one weighting: the weights and gradient reports of Tables VI-VII and Figs. 7-9,
    the test and validation metrics; the plots (`plot_dynamics`)."""
    _common()
    from common.models import count_parameters

    names, history = run.data.task_names, S["history"]
    mean_w = (S["weight_sum"] / max(S["weight_n"], 1)).tolist()
    run.guarded("plots", plot_dynamics, run.out, history, names, f"{run.method} ({args.variant}, grad on {args.grad_on})")
    curves = {k: {t: [h[k][i] if k in h else None for h in history] for i, t in enumerate(names)}
              for k in ("weights", "grad_norm", "wgrad_norm", "cos")}
    return {"tasks": test, "variant": args.variant, "grad_on": args.grad_on, "every": args.every,
            "eps": args.eps, "clip_grad": args.clip_grad,
            "static_weights": weights if args.variant == "static" else None,
            "mean_weights": dict(zip(names, mean_w)),                       # Tables VI-VII, lambda_t
            "final_weights": dict(zip(names, w.float().cpu().tolist())),
            "gradient_cosine": curves["cos"],                                # Figs. 7, 9 (per epoch)
            "grad_norms": curves["grad_norm"],                               # Fig. 8 (per epoch)
            "weighted_grad_norms": curves["wgrad_norm"],
            "weights_per_epoch": curves["weights"],
            "S_per_epoch": [h.get("S") for h in history],
            "guard_hits": S["guard_hits"], "weight_seconds": round(S["weight_seconds"], 4),
            "val_tasks": val, "val_score": run.selection_score(val),
            "parameters": count_parameters(model.parameters())}


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dynamics(out: str, history: list[dict], names: list[str], title: str) -> None:
    """weights.png (lambda_t per epoch), grad_cosine.png (Figs. 7, 9), grad_norms.png (Fig. 8)."""
    if not history:
        return
    plt = _plt()
    epochs = [h["epoch"] + 1 for h in history]
    panels = [("weights.png", [("weights", "mean loss weight $\\lambda_t$")], True),
              ("grad_cosine.png", [("cos", "cos($g_t$, $\\sum_i w_i g_i$)")], False),
              ("grad_norms.png", [("grad_norm", "$\\|g_t\\|$"), ("wgrad_norm", "$\\|w_t g_t\\|$")], True)]
    for fname, keys, logy in panels:
        fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
        for ax, (key, label) in zip(axes[0], keys):
            for i, t in enumerate(names):
                ys = [h[key][i] if key in h else np.nan for h in history]
                ax.plot(epochs, ys, marker="o", ms=3, label=t)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            vals = np.array([h[key] for h in history if key in h], dtype=float)
            if logy and vals.size and np.isfinite(vals).all() and (vals > 0).all():
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=110)
        plt.close(fig)


def plot_grid(path: str, points: list[dict], names: list[str], best: int, criterion: str) -> None:
    """Validation criterion of every grid point (best marked), and the test primary metrics."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    order = np.argsort([-p["val_criterion"] for p in points])
    labels = [",".join(f"{v:g}" for v in points[i]["weights"]) for i in order]
    ax = axes[0]
    shown = [p["val_delta_m"] if p["val_delta_m"] is not None else p["val_score"] for p in points]
    ax.bar(range(len(order)), [shown[i] for i in order],
           color=["tab:red" if i == best else "tab:blue" for i in order])
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel(criterion)
    ax.set_title("grid points on validation (best in red)")
    ax = axes[1]
    if len(names) >= 2:
        specs = points[0]["primary"]
        P = np.array([[p["tasks"][t][specs[t]] for t in names[:2]] for p in points])
        ax.scatter(P[:, 0], P[:, 1], c="tab:blue", s=18)
        ax.scatter(P[best, 0], P[best, 1], c="tab:red", s=40, label="best on validation")
        for p, (a, b) in zip(points, P):
            ax.annotate(",".join(f"{v:g}" for v in p["weights"]), (a, b), fontsize=6)
        ax.set_xlabel(f"test {names[0]} {specs[names[0]]}")
        ax.set_ylabel(f"test {names[1]} {specs[names[1]]}")
        ax.legend(fontsize=8)
        ax.set_title("test metrics of the grid points")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The grid search driver
# ----------------------------------------------------------------------------------------------
def grid_search(args, run: Run) -> dict:
    _common()
    from common.train import Run

    data, T = run.data, run.data.num_tasks
    names = data.task_names
    dedupe = not args.clip_grad and args.weight_decay == 0
    points = grid_points(args.grid, T, dedupe_scale=dedupe)
    reference = run.reference()
    criterion = ("val Delta-m% (lower is better)" if reference else
                 "scale-free val selection score, the log-ratio form of Delta-m% (common.metrics.selection_score)")
    results = []
    for k, pt in enumerate(points):
        label = "w" + "_".join(f"{v:g}" for v in pt)
        sub = Namespace(**vars(args))
        sub.grid, sub.variant, sub.weights = None, "static", ",".join(f"{v:g}" for v in pt)
        sub.out = os.path.join(run.out, "grid", label)
        sub.quiet = True
        if not args.quiet:
            print(f"[{run.method}] grid point {k + 1}/{len(points)}: weights {sub.weights}", flush=True)
        prun = Run(sub, "avgnorm-static", DEFAULTS, load_data=False)
        prun.use_data(data, run)  # the grid's data and Delta-m% reference: one selection rule for every point
        prun.write_config({"grid_point": pt})
        res = fit(sub, prun, pt)
        res["delta_m"] = run.delta_m(res["tasks"])   # the grid's reference (--reference, common/reference.py)
        prun.finish(res)
        val_dm = run.delta_m(res["val_tasks"]) if reference else None
        results.append({"weights": pt, "out": prun.out, "tasks": res["tasks"], "delta_m": res["delta_m"],
                        "val_tasks": res["val_tasks"], "val_score": res["val_score"],
                        "val_criterion": run.selection_score(res["val_tasks"]),
                        "val_delta_m": val_dm, "primary": {t.name: t.primary for t in data.tasks},
                        "gradient_cosine_last": {t: v[-1] for t, v in res["gradient_cosine"].items() if v},
                        "weighted_grad_norms_last": {t: v[-1] for t, v in res["weighted_grad_norms"].items() if v}})
    best = int(np.argmax([r["val_criterion"] for r in results]))
    run.guarded("grid.png", plot_grid, run.path("grid.png"), results, names, best, criterion)
    write_grid_csv(run.path("grid.csv"), results, names)
    front = [{"preference": (np.array(r["weights"]) / sum(r["weights"])).tolist(), "weights": r["weights"], "tasks": r["tasks"]}
             for r in results]
    hv, hv_ref = front_hypervolume(front, data.tasks)
    b = results[best]
    return {"tasks": b["tasks"], "delta_m": b["delta_m"], "best_weights": dict(zip(names, b["weights"])),
            "best_out": b["out"], "selection": criterion, "best_val_delta_m": b["val_delta_m"],
            "best_val_score": b["val_score"], "grid_size": len(results), "scale_duplicates_skipped": dedupe,
            "grid": [{k: r[k] for k in ("weights", "delta_m", "val_delta_m", "val_score", "tasks", "out",
                                        "gradient_cosine_last", "weighted_grad_norms_last")} for r in results],
            "front": front, "hypervolume": hv, "hypervolume_ref": hv_ref}


def write_grid_csv(path: str, results: list[dict], names: list[str]) -> None:
    import csv

    cols = [f"weight_{t}" for t in names] + ["val_score", "val_delta_m", "test_delta_m"]
    metric_cols = [(t, m) for t in names for m in results[0]["tasks"][t]]
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(cols + [f"test_{t}_{m}" for t, m in metric_cols])
        for r in results:
            wr.writerow(list(r["weights"]) + [r["val_score"], r["val_delta_m"], r["delta_m"]]
                        + [r["tasks"][t][m] for t, m in metric_cols])


def front_hypervolume(front: list[dict], tasks) -> tuple[float | None, list[float] | None]:
    """Hypervolume of the grid points' test primary metrics, reference point from
    common.metrics.hv_reference (the suite's one rule for every front method: 0 for accuracy, F1,
    mIoU, maxF and odsF; 1 for depth error, 90 degrees for normals)."""
    _common()
    from common.metrics import hv_reference, hypervolume

    P = np.array([[f["tasks"][t.name][t.primary] for t in tasks] for f in front], dtype=float)
    higher = [t.metrics[0][1] for t in tasks]
    ref = hv_reference(tasks)
    return hypervolume(P, ref, maximize=higher), ref


# ----------------------------------------------------------------------------------------------
def main(argv=None):
    _common()
    from common.train import Run

    args = parse_args(argv)
    check_flags(args)
    if args.grid is not None:
        method = "avgnorm-grid"
    else:
        method = "avgnorm" if args.variant == "avgnorm" else f"avgnorm-{args.variant}"
    def check(a, data):  # the flags that depend on the number of tasks, before --out is touched
        static_weights(a, data.num_tasks)
        if a.grid is not None:
            grid_points(a.grid, data.num_tasks)

    run = Run(args, method, DEFAULTS, check=check)  # the grid points share its data
    weights = static_weights(args, run.data.num_tasks)
    if args.grid is not None:
        return run.finish(grid_search(args, run))
    return run.finish(fit(args, run, weights if args.variant == "static" else None))


if __name__ == "__main__":
    _common()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import avgnorm) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
