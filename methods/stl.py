"""Single-task learning (STL): one independent model per task, the reference of Delta-m%.

Each task gets its own copy of the dataset's backbone (encoder + that task's head), its own Adam
optimiser and the same batches; the T models train side by side in one loop. The test metrics in
metrics.json are the single-task references that every other method's Delta-m% uses on this
dataset and model (--reference auto, common/reference.py, averages results/stl/<dataset>/*/metrics.json
of the same model; `--out results/stl/<dataset>/<name>` keeps runs of several models apart).

    python methods/stl.py                       # multimnist-lite, offline
    python methods/stl.py --dataset cityscapes  # MTAN-preprocessed files under data/cityscapes
"""
from __future__ import annotations

import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from common.models import build_model, count_parameters  # noqa: E402
from common.train import Run, base_parser, defaults_table, flat_metrics, main_guard  # noqa: E402


def parse_args(argv=None):
    p = base_parser("stl", __doc__)
    p.epilog = defaults_table()
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs (default 1)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run = Run(args, "stl")
    data, T = run.data, run.data.num_tasks
    models = [build_model(args.model, data, tasks=[t], pretrained=args.pretrained).to(run.device) for t in range(T)]
    opts = [run.make_optimizer(m.parameters()) for m in models]
    best = [(-float("inf"), None)] * T

    state = run.load_checkpoint()
    if state is not None:
        for m, s in zip(models, state["models"]):
            m.load_state_dict(s)
        for (o, sc), s, ss in zip(opts, state["opts"], state["scheds"]):
            o.load_state_dict(s)
            if sc is not None and ss is not None:
                sc.load_state_dict(ss)
        best = state.get("best", best)

    for epoch in run.epochs():
        for m in models:
            m.train()
        sums, n = torch.zeros(T, device=run.device), 0  # read once per epoch, not per step
        for x, ys in run.progress(run.batches("train", epoch), f"stl epoch {epoch + 1}", run.num_batches()):
            losses = []
            for t, (m, (o, _)) in enumerate(zip(models, opts)):
                o.zero_grad(set_to_none=True)
                with run.autocast():
                    loss = run.losses(m(x), ys, task_ids=[t])[0]
                loss.backward()
                o.step()
                losses.append(loss.detach())
            sums += torch.stack(losses).float()
            n += 1
            if run.step():
                break
        for _, sc in opts:
            if sc is not None:
                sc.step()
        row = {f"train_loss_{t.name}": float(s / max(n, 1)) for t, s in zip(data.tasks, sums.cpu())}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs or run.done:
            val = {}
            for t, m in enumerate(models):
                m.eval()
                val.update(run.evaluate(m, "val", task_ids=[t]))
                score = run.selection_score({data.tasks[t].name: val[data.tasks[t].name]})
                if args.select == "best" and score > best[t][0]:
                    best[t] = (score, copy.deepcopy(m.state_dict()))
            row.update(flat_metrics("val", val))
        run.log_epoch(epoch, row)
        run.save_checkpoint(epoch, {"models": [m.state_dict() for m in models], "opts": [o.state_dict() for o, _ in opts],
                                    "scheds": [sc.state_dict() if sc is not None else None for _, sc in opts], "best": best})

    test = {}
    for t, m in enumerate(models):
        if args.select == "best" and best[t][1] is not None:
            m.load_state_dict(best[t][1])
        m.eval()
        test.update(run.evaluate(m, "test", task_ids=[t]))
    run.finish({"tasks": test, "delta_m": 0.0,
                "parameters": sum(count_parameters(m.parameters()) for m in models)})
    return test


if __name__ == "__main__":
    main_guard(main)
