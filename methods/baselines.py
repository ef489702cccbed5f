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
import copy  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402


def _harness() -> None:
    """Put the repository root on sys.path so that the runner's lazy imports of common/ resolve."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


def parse_args(argv=None):
    _harness()
    from common.aggregators import AGGREGATORS, describe
    from common.train import base_parser, defaults_table

    p = base_parser("baselines", __doc__ + "\nRules and their defaults:\n" + describe())
    p.epilog = defaults_table()
    p.add_argument("--method", default="ls", choices=sorted(AGGREGATORS), help="the MTL rule (default ls)")
    p.add_argument("--hyper", action="append", default=[], metavar="KEY=VALUE",
                   help="override one of the rule's hyperparameters, e.g. --hyper c=0.4 (repeatable; numbers are parsed)")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    p.add_argument("--log-grads", type=int, default=0, metavar="N",
                   help="every N steps log cos(g_t, d) and ||g_t|| of each task gradient g_t and the aggregated "
                        "gradient d on the last shared layer (AvgNorm Figs. 7-8; costs T backward passes; default 0 = off)")
    args = p.parse_args(argv)
    if args.log_grads < 0:
        p.error(f"--log-grads must be >= 0 (got {args.log_grads})")
    return args


def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    from common.aggregators import RuleStep, make_aggregator
    from common.device import UsageError, move_tensors_, synchronize
    from common.models import build_model, count_parameters
    from common.train import Run, bn_frozen, flat_metrics, jacobian, parse_hyper

    run = Run(args, args.method)
    data, T, dev = run.data, run.data.num_tasks, run.device
    model = build_model(args.model, data, pretrained=args.pretrained).to(dev)
    try:
        agg = make_aggregator(args.method, T, dataset=args.dataset, **parse_hyper(args.hyper))
    except (TypeError, ValueError) as e:
        raise UsageError(f"--hyper: {e}")
    move_tensors_(agg.parameters(), dev)
    step = RuleStep.for_model(agg, model, max_norm=args.clip_grad)  # clips to the rule's default unless --clip-grad
    best = (-float("inf"), None)
    weight_sum, weight_n, agg_seconds = torch.zeros(T), 0, 0.0
    state = run.load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        step.load_state_dict(state["rule"])  # the rule's own state (weights, logits, loss history)
        best = state.get("best", best)
        weight_sum, weight_n, agg_seconds = state["weight_sum"], state["weight_n"], state["agg_seconds"]
    opt, sched = run.make_optimizer(list(model.parameters()) + step.parameters())
    if state is not None:
        opt.load_state_dict(state["opt"])
        if sched is not None and state.get("sched") is not None:
            sched.load_state_dict(state["sched"])

    def recompute(x, ys):
        with bn_frozen(model), run.autocast():  # BatchNorm statistics move once per step (no_grad: after_step)
            return run.losses(model(x), ys).float()

    for epoch in run.epochs():
        model.train()
        # logged sums stay on the device during the epoch and are read once at its end (no per-step host sync)
        epoch_weights = torch.zeros(T, device=dev)
        diag_sum, diag_n = torch.zeros(2, T, device=dev), 0
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
            agg_seconds += time.perf_counter() - t0
            if diag:
                diag_sum += torch.stack(cosine_and_norms(G_last, last))
                diag_n += 1
            opt.step()
            step.after_step(lambda: recompute(x, ys))  # FAMO: the losses of the same batch after the step
            epoch_weights += w.detach().float()
            weight_n += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        mean, diag_sum = step.end_epoch(), diag_sum.cpu()  # the rule's epoch_end (DWA, GradNorm)
        weight_sum += epoch_weights.cpu()
        row = {f"train_loss_{t.name}": float(v) for t, v in zip(data.tasks, mean)}
        if diag_n:
            row.update({f"cos_{t.name}": float(v) for t, v in zip(data.tasks, diag_sum[0] / diag_n)})
            row.update({f"grad_norm_{t.name}": float(v) for t, v in zip(data.tasks, diag_sum[1] / diag_n)})
        if agg.last_weights is not None:
            row.update({f"weight_{t.name}": float(v) for t, v in zip(data.tasks, agg.last_weights.detach().float().cpu().reshape(-1))})
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs or run.done:
            model.eval()
            val = run.evaluate(model, "val")
            row.update(flat_metrics("val", val))
            score = run.selection_score(val)
            if args.select == "best" and score > best[0]:
                best = (score, copy.deepcopy(model.state_dict()))
        run.log_epoch(epoch, row)
        run.save_checkpoint(epoch, {"model": model.state_dict(), "opt": opt.state_dict(),
                                    "sched": sched.state_dict() if sched is not None else None, "rule": step.state_dict(),
                                    "best": best, "weight_sum": weight_sum, "weight_n": weight_n,
                                    "agg_seconds": agg_seconds})

    if args.select == "best" and best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    test = run.evaluate(model, "test")
    run.finish({"tasks": test,
                "mean_weights": (weight_sum / max(weight_n, 1)).tolist(),
                "aggregation_seconds": round(agg_seconds, 4),
                "solver_seconds": round(float(getattr(agg, "solver_seconds", 0.0)), 4),
                "clip_grad": step.max_norm,
                "parameters": count_parameters(model.parameters())})
    return test


if __name__ == "__main__":
    _harness()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import baselines) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
