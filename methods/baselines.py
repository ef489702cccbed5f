"""Multi-task baselines: every loss-weighting and gradient-aggregation rule of common/aggregators.py
on a shared-bottom network (shared encoder + one head per task).

    python methods/baselines.py --method ls                 # linear scalarisation, multimnist-lite
    python methods/baselines.py --method nashmtl --dataset cityscapes
    python methods/baselines.py --method cagrad --hyper c=0.4

One optimisation step (common.aggregators.RuleStep, which applies any rule to a model):
- loss rules (ls, si, rlw, dwa, uw, famo, imtl-l): back-propagate the rule's scalar loss;
- gradient rules (mgda, pcgrad, cagrad, imtl, nashmtl, fairgrad, graddrop): the T x d Jacobian of the
  task losses w.r.t. the shared parameters (one backward per task, which also yields each head's
  own gradient), the rule's direction for the shared parameters, w_t times its gradient for head t;
- gradnorm: the Jacobian on the last shared layer only; mgda-ub: w.r.t. the shared representation.
FAMO re-evaluates the losses of the same batch after the step (BatchNorm statistics frozen for that
pass, unlike the official code, which moves them twice) and updates its task logits.
Gradient clipping of the shared parameters follows each rule's official code unless --clip-grad.

The file has two halves. The method half (up to the "runner" banner) needs only torch:
cosine_and_norms, the gradient diagnostics below; the rules themselves are common/aggregators.py,
which a researcher copies alone as well (see tests/test_lift_baselines.py for a loop that uses one
rule and these diagnostics on any nn.Module). The runner half (the command line and the training
loop) imports the suite's harness (common/) when it runs.

--log-grads N (the diagnostics of the AvgNorm paper, Figs. 7-8): every N steps, the gradient g_t of
each task loss w.r.t. the last shared layer (one extra backward per task, through the heads and
that layer only) and the aggregated gradient d the rule writes there (clipping scales d by a positive
factor, which leaves the cosine unchanged); log.csv
gets the epoch means of cos(g_t, d) (cos_<task>) and ||g_t|| (grad_norm_<task>).
"""
from __future__ import annotations

import torch


def cosine_and_norms(G: torch.Tensor, last: list) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(g_t, d) and ||g_t|| for the task gradients G (T x d) and d = the .grad now on `last` (the
    aggregated gradient a rule wrote there; AvgNorm paper, Figs. 7-8). A zero d or g_t gives cosine 0."""
    d = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in last]).float()
    norms = G.norm(dim=1)
    denom = norms * d.norm()
    return torch.where(denom > 0, (G @ d) / denom.clamp_min(1e-30), torch.zeros_like(norms)), norms


# ================= runner: command line and training loop (needs the suite's common/) =================
import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

# The defaults of every flag left unset, printed by --help: the suite's per-dataset training settings
# (common/train.py DATASET_DEFAULTS) and this script's own flags. The rules' own hyperparameters and
# their dataset settings (e.g. FAMO's gamma 1e-2 on cityscapes, 1e-3 on nyuv2 and celeba) and clipping
# norms (1.0 for nashmtl, fairgrad) are the rules' (common/aggregators.py; --help lists them):
# --hyper and --clip-grad override them.
DEFAULTS = {"*": dict(eval_every=1, log_grads=0)}


def _harness() -> None:
    """Put the repository root on sys.path so that the runner's lazy imports of common/ resolve."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


def rule_settings_per_dataset() -> str:
    """The --help lines of the rules' dataset settings (common.aggregators.DATASET_DEFAULTS)."""
    from common.aggregators import DATASET_DEFAULTS

    return "\n".join(f"  {rule}: " + "; ".join(f"{ds} " + ", ".join(f"{k}={v}" for k, v in hp.items()) for ds, hp in rows.items())
                     for rule, rows in DATASET_DEFAULTS.items())


def parse_args(argv=None):
    _harness()
    from common.aggregators import AGGREGATORS, describe
    from common.train import base_parser, defaults_table

    p = base_parser("baselines", __doc__ + "\nRules and their defaults:\n" + describe())
    p.epilog = (defaults_table(DEFAULTS) + "\nrule hyperparameters set per dataset (over the rule's default; "
                "--hyper overrides):\n" + rule_settings_per_dataset())
    p.add_argument("--method", default="ls", choices=sorted(AGGREGATORS), help="the MTL rule (default ls)")
    p.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of the rule's hyperparameters, e.g. --hyper c=0.4 (repeatable; numbers are parsed)")
    p.add_argument("--eval-every", type=int, default=None, help="validate every N epochs (default 1)")
    p.add_argument("--log-grads", type=int, default=None, metavar="N",
                   help="every N steps log cos(g_t, d) and ||g_t|| of each task gradient g_t and the aggregated "
                        "gradient d on the last shared layer (AvgNorm Figs. 7-8; costs T backward passes; default 0 = off)")
    args = p.parse_args(argv)
    if args.log_grads is not None and args.log_grads < 0:
        p.error(f"--log-grads must be >= 0 (got {args.log_grads})")
    if args.eval_every is not None and args.eval_every < 1:
        p.error(f"--eval-every must be a positive integer (got {args.eval_every})")
    return args


def make_rule(args, num_tasks: int, device):
    """The rule of --method with its dataset settings and --hyper, its learnable tensors on `device`;
    a bad --hyper is one UsageError line."""
    from common.aggregators import make_aggregator
    from common.device import UsageError, move_tensors_
    from common.train import parse_hyper

    try:
        rule = make_aggregator(args.method, num_tasks, dataset=args.dataset, **parse_hyper(args.hyper))
    except (TypeError, ValueError) as e:
        raise UsageError(f"--hyper: {e}")
    move_tensors_(rule.parameters(), device)
    return rule


def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    from common.aggregators import RuleStep
    from common.device import synchronize
    from common.models import build_model
    from common.train import Run, bn_frozen, flat_metrics, jacobian

    run = Run(args, args.method, DEFAULTS)
    data, T, dev = run.data, run.data.num_tasks, run.device
    model = build_model(args.model, data, pretrained=args.pretrained).to(dev)
    step = RuleStep.for_model(make_rule(args, T, dev), model, max_norm=args.clip_grad)  # the rule's clipping unless --clip-grad
    opt, sched = run.make_optimizer(list(model.parameters()) + step.parameters())
    run.track(model=model, opt=opt, sched=sched, rule=step)  # the rule's state: weights, logits, loss history
    S = run.values(weight_sum=torch.zeros(T), weight_n=0, agg_seconds=0.0)

    def recompute(x, ys):
        with bn_frozen(model), run.autocast():  # BatchNorm statistics move once per step (no_grad: after_step)
            return run.losses(model(x), ys).float()

    for epoch in run.epochs():
        model.train()
        # logged sums stay on the device during the epoch and are read once at its end (no per-step host sync)
        weights, diag_sum, diag_n = torch.zeros(T, device=dev), torch.zeros(2, T, device=dev), 0
        for x, ys in run.progress(run.batches("train", epoch), f"{args.method} epoch {epoch + 1}", run.num_batches()):
            opt.zero_grad(set_to_none=True)
            with run.autocast():
                rep = model.encoder(x)
                losses = run.losses(model.decode(rep), ys).float()
            diag = args.log_grads and run.global_step % args.log_grads == 0
            if diag:
                last = model.last_shared_parameters()
                G_last = jacobian(losses, last, retain_graph=True).detach().float()  # graph kept for the step
            t0 = time.perf_counter()
            w = step.backward(losses, rep)  # the rule's gradients, clipped
            synchronize(dev)
            S["agg_seconds"] += time.perf_counter() - t0
            if diag:
                diag_sum += torch.stack(cosine_and_norms(G_last, last))
                diag_n += 1
            opt.step()
            step.after_step(lambda: recompute(x, ys))  # FAMO: the losses of the same batch after the step
            weights += w.detach().float()
            S["weight_n"] += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        S["weight_sum"] += weights.cpu()
        row = epoch_row(data.tasks, step.end_epoch(), diag_sum.cpu(), diag_n, step.rule.last_weights)  # end_epoch: DWA, GradNorm
        if run.eval_due(epoch):
            model.eval()
            val = run.evaluate(model, "val")
            row.update(flat_metrics("val", val))
            run.best.offer(run.selection_score(val), model.state_dict(), epoch)
        run.log_epoch(epoch, row)
        run.checkpoint(epoch)
    run.best.restore(model.load_state_dict)
    return report(run, model, step, S)


def epoch_row(tasks, mean_losses, diag_sum, diag_n: int, last_weights) -> dict:
    """log.csv's training columns of one epoch: the mean task losses, the --log-grads means of
    cos(g_t, d) and ||g_t|| (when some step logged them) and the rule's last task weights."""
    row = {f"train_loss_{t.name}": float(v) for t, v in zip(tasks, mean_losses)}
    if diag_n:
        row.update({f"cos_{t.name}": float(v) for t, v in zip(tasks, diag_sum[0] / diag_n)})
        row.update({f"grad_norm_{t.name}": float(v) for t, v in zip(tasks, diag_sum[1] / diag_n)})
    if last_weights is not None:
        row.update({f"weight_{t.name}": float(v) for t, v in zip(tasks, last_weights.detach().float().cpu().reshape(-1))})
    return row


def report(run, model, step, S) -> dict:
    """Test the selected model and write metrics.json: the test metrics, the mean task weights over
    all steps, the seconds spent in the rule (aggregation, and its solver where it has one), the
    clipping norm used and the parameter count. Returns the test metrics."""
    from common.models import count_parameters

    model.eval()
    test = run.evaluate(model, "test")
    run.finish({"tasks": test,
                "mean_weights": (S["weight_sum"] / max(S["weight_n"], 1)).tolist(),
                "aggregation_seconds": round(S["agg_seconds"], 4),
                "solver_seconds": round(float(getattr(step.rule, "solver_seconds", 0.0)), 4),
                "clip_grad": step.max_norm,
                "parameters": count_parameters(model.parameters())})
    return test


if __name__ == "__main__":
    _harness()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import baselines) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
