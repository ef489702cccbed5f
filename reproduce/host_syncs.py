"""Host synchronisations per training step of every method (`python -m reproduce.benchmark --host-syncs`).

Each row runs the method's own main() on the fake accelerator of reproduce/fake_device.py (model and
batches on `fakegpu`) on a 96-image slice of multimnist-lite, batch 8 (12 steps per epoch), twice:
with --max-steps K1 and K2 inside the first epoch. Setup, the end-of-epoch evaluation, logging and
checkpointing are the same in both runs, so (syncs(K2) - syncs(K1)) / (K2 - K1) is what one training
step costs in host round-trips: `.item()` / `float()` / `bool()` / Python branching on a device value
(item), device-to-host copies (`.cpu()`, `.to("cpu")`, to_host), `.tolist()` (tolist), anything else
that returns a Python value from a device tensor (value). The step difference is read from each run's
metrics.json ("steps"): for EXTRA it counts the steps of all its phases (endpoints and curve), so its
figure is the mean over them.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile

KINDS = ("item", "to_host", "tolist", "value", "save")


def rows() -> list[tuple[str, str, list[str]]]:
    """(label, methods/ script, flags) of every script, rule, mode, curve and balancing."""
    from common.aggregators import AGGREGATORS

    pfl = importlib.import_module("pfl")
    sam = importlib.import_module("sam_mtl")
    out = [(f"baselines {r}", "baselines", ["--method", r]) for r in sorted(AGGREGATORS)]
    out += [(f"pfl {m}", "pfl", ["--method", m, "--grid-points", "3"]) for m in pfl.METHODS]
    out += [(f"extra {c}", "extra_nurbs", ["--curve", c, "--grid", "2", "--bn-batches", "1", "--control-points", "4"])
            for c in ("nurbs", "bezier", "polychain")]
    out += [(f"sam_mtl {m}", "sam_mtl", ["--mode", m]) for m in sam.MODES]
    out += [(f"pml {b}", "pml", ["--balancing", b, "--grid-n", "3"]) for b in ("none", "loss", "grad")]
    out += [("palora", "palora", ["--num-prefs", "2", "--grid-points", "3"])]
    out += [(f"avgnorm {g}", "avgnorm", ["--grad-on", g]) for g in ("last", "all")]
    out += [("stl", "stl", [])]
    return out


def count(module: str, flags: list[str], steps: int, out: str, data_root: str):
    """Host syncs of one run of `module`.main with --max-steps `steps` on the fake device, and the
    optimisation steps the run made (metrics.json "steps": all phases of EXTRA together)."""
    from reproduce.fake_device import NAME, fake_device

    main = importlib.import_module(module).main
    with fake_device() as mode:
        main(flags + ["--dataset", "fd-tiny2", "--batch-size", "8", "--eval-batch-size", "32", "--epochs", "1",
                      "--max-steps", str(steps), "--device", NAME, "--out", out, "--data-root", data_root,
                      "--no-progress", "--quiet", "--overwrite"])
    with open(os.path.join(out, "metrics.json")) as fh:
        return mode.syncs, json.load(fh)["steps"]


def study(data_root: str = "data", k1: int = 2, k2: int = 6, only: list[str] | None = None, say=print) -> list[dict]:
    from reproduce.fake_device import install, register_tiny_datasets

    install()
    register_tiny_datasets()
    tmp = tempfile.mkdtemp(prefix="host_syncs_")
    results = []
    try:
        for label, module, flags in rows():
            if only and label.split()[0] not in only and label not in only:
                continue
            a, steps_a = count(module, flags, k1, os.path.join(tmp, "a"), data_root)
            b, steps_b = count(module, flags, k2, os.path.join(tmp, "b"), data_root)
            per = steps_b - steps_a
            if per <= 0:
                from common.device import UsageError
                raise UsageError(f"{label}: --max-steps {k1} and {k2} made the same number of steps ({steps_a}); "
                                 "widen --host-sync-steps")
            by_kind = {k: (b[k] - a[k]) / per for k in KINDS}
            row = {"method": label, "per_step": sum(by_kind.values()), **{f"per_step_{k}": v for k, v in by_kind.items()},
                   "run_total_k1": sum(a.values())}
            results.append(row)
            say(f"[host-syncs] {label}: {row['per_step']:g} per step")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def markdown(results: list[dict], k1: int, k2: int) -> str:
    lines = [f"Host synchronisations per training step on the fake accelerator (fd-tiny2, batch 8, --max-steps {k1} vs {k2}):",
             "", "| method | per step | item / float / bool | .cpu() / .to(cpu) | .tolist() | other values | whole run (K1 steps + eval) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['method']} | {r['per_step']:g} | {r['per_step_item']:g} | {r['per_step_to_host']:g} | "
                     f"{r['per_step_tolist']:g} | {r['per_step_value'] + r['per_step_save']:g} | {r['run_total_k1']} |")
    return "\n".join(lines) + "\n"
