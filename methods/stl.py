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
import importlib.util  # noqa: E402
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
    from common.models import build_model
    from common.train import Best, Run, flat_metrics

    run = Run(args, "stl")
    data, T = run.data, run.data.num_tasks
    models = [build_model(args.model, data, tasks=[t], pretrained=args.pretrained).to(run.device) for t in range(T)]
    optimizers, schedules = zip(*(run.make_optimizer(m.parameters()) for m in models))
    best = [Best(args.select) for _ in range(T)]  # each task's network is selected on its own task
    for t in range(T):
        run.track(**{f"model{t}": models[t], f"opt{t}": optimizers[t], f"sched{t}": schedules[t], f"best{t}": best[t]})

    for epoch in run.epochs():
        for m in models:
            m.train()
        sums, n = torch.zeros(T, device=run.device), 0  # read once per epoch, not per step
        for x, ys in run.progress(run.batches("train", epoch), f"stl epoch {epoch + 1}", run.num_batches()):
            def task_loss(t, m, x=x, ys=ys):
                with run.autocast():
                    return run.losses(m(x), ys, task_ids=[t])[0]

            sums += stl_step(models, optimizers, task_loss).float()
            n += 1
            if run.step():
                break
        for schedule in filter(None, schedules):
            schedule.step()
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
    return report(run, models, best)


def report(run, models, best) -> dict:
    """Each task's network (its best epoch under --select best) on the test split; metrics.json."""
    from common.models import count_parameters

    test = {}
    for t, m in enumerate(models):
        best[t].restore(m.load_state_dict)
        m.eval()
        test.update(run.evaluate(m, "test", task_ids=[t]))
    return run.finish({"tasks": test, "delta_m": 0.0,  # the reference itself
                       "parameters": sum(count_parameters(m.parameters()) for m in models)})["tasks"]


if __name__ == "__main__":
    _on_path()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import stl) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
