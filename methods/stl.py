"""Single-task learning (STL): one independent model per task, the reference of Delta-m%.

Each task gets its own copy of the dataset's backbone (encoder + that task's head), its own Adam
optimiser and the same batches; the T models train side by side in one loop. The test metrics in
metrics.json are the single-task references that every other method's Delta-m% uses on this
dataset and model (--reference auto, common/reference.py, averages results/stl/<dataset>/*/metrics.json
of the same model; `--out results/stl/<dataset>/<name>` keeps runs of several models apart).

The file has two halves. The method half (up to the "runner" banner) needs only torch: stl_step,
one training step of the T independent models; the runner half (the command line and the training
loop) imports the suite's harness (common/) when it runs.

    python methods/stl.py                       # multimnist-lite, offline
    python methods/stl.py --dataset cityscapes  # MTAN-preprocessed files under data/cityscapes
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn


def stl_step(models: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer],
             task_loss: Callable[[int, nn.Module], torch.Tensor]) -> torch.Tensor:
    """One step of single-task learning on one batch: model t descends its own task's loss
    task_loss(t, models[t]) with its own optimiser, and no gradient crosses between the models.
    Returns the T losses (detached, before the step)."""
    losses = []
    for t, (model, opt) in enumerate(zip(models, optimizers)):
        opt.zero_grad(set_to_none=True)
        loss = task_loss(t, model)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


# ================= runner: command line and training loop (needs the suite's common/) =================
import os  # noqa: E402
import sys  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root, which holds common/


def _on_path() -> None:
    """The runner imports common/ lazily, from the repository root."""
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)


def parse_args(argv=None):
    _on_path()
    from common.train import base_parser, defaults_table

    p = base_parser("stl", __doc__)
    p.epilog = defaults_table()
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    from common.models import build_model, count_parameters
    from common.train import Best, Run, flat_metrics

    run = Run(args, "stl")
    data, T = run.data, run.data.num_tasks
    models = [build_model(args.model, data, tasks=[t], pretrained=args.pretrained).to(run.device) for t in range(T)]
    opts = [run.make_optimizer(m.parameters()) for m in models]
    best = [Best(args.select) for _ in range(T)]  # each task's network is selected on its own task
    for t, (m, (opt, sched), b) in enumerate(zip(models, opts, best)):
        run.track(**{f"model{t}": m, f"opt{t}": opt, f"sched{t}": sched, f"best{t}": b})

    for epoch in run.epochs():
        for m in models:
            m.train()
        sums, n = torch.zeros(T, device=run.device), 0  # read once per epoch, not per step
        for x, ys in run.progress(run.batches("train", epoch), f"stl epoch {epoch + 1}", run.num_batches()):
            def task_loss(t, m, x=x, ys=ys):
                with run.autocast():
                    return run.losses(m(x), ys, task_ids=[t])[0]

            sums += stl_step(models, [o for o, _ in opts], task_loss).float()
            n += 1
            if run.step():
                break
        for _, sc in opts:
            if sc is not None:
                sc.step()
        row = {f"train_loss_{t.name}": float(s / max(n, 1)) for t, s in zip(data.tasks, sums.cpu())}
        if run.eval_due(epoch):
            val = {}
            for t, m in enumerate(models):
                m.eval()
                val.update(run.evaluate(m, "val", task_ids=[t]))
                best[t].offer(run.selection_score({data.tasks[t].name: val[data.tasks[t].name]}), m.state_dict(), epoch)
            row.update(flat_metrics("val", val))
        run.log_epoch(epoch, row)
        run.checkpoint(epoch)

    test = {}
    for t, m in enumerate(models):
        best[t].restore(m.load_state_dict)
        m.eval()
        test.update(run.evaluate(m, "test", task_ids=[t]))
    run.finish({"tasks": test, "delta_m": 0.0,
                "parameters": sum(count_parameters(m.parameters()) for m in models)})
    return test


if __name__ == "__main__":
    _on_path()
    try:
        from common.train import main_guard
    except ModuleNotFoundError as e:  # this file was copied out of the suite: its method half still imports
        if e.name != "common":
            raise
        print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import stl) works without it", file=sys.stderr)
        sys.exit(2)
    main_guard(main)
