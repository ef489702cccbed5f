"""The single-task reference of Delta-m% (`--reference auto|published|PATH`), matched on dataset and model.

    auto       our single-task runs of this dataset and model under the results root
               (results/stl/<dataset>/*/metrics.json, averaged over the runs found, the folders
               `python methods/stl.py --dataset D --model M --seed S --out results/stl/D/<name>` writes;
               the default --out of stl.py is results/stl/<dataset>/seed<S>), else the published vector
    published  the published single-task vector of this dataset and model (PUBLISHED below), or the
               measured one shipped in common/stl_reference.json for the offline datasets
    PATH       a metrics.json of a single-task run, a folder of such runs (PATH/*/metrics.json) or a
               JSON file {task: {metric: value}}; a file that names another dataset or model is refused

Where no reference is found the run says so in one line and Delta-m% is None. The resolved
reference and where it came from are written to metrics.json ("reference").

The results root is `results/` of the current folder (the default --out root), never a folder
found from --out: a custom --out does not change the reference.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import numpy as np

from common.device import UsageError

RESULTS_ROOT = "results"
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stl_reference.json")


def _published() -> dict:
    """(dataset, model) -> (values, source). Units are those of common/metrics.py."""
    from common.real_data import CITYSCAPES_REFERENCE, NYUD_REFERENCE, NYUV2_REFERENCE, PASCAL_CONTEXT_REFERENCE

    cagrad = ("the single-task vector of CAGrad (Liu et al. 2021), used by Nash-MTL, FAMO, FairGrad and EXTRA "
              "for their SegNet / MTAN rows")
    avg18 = ("AvgNorm Table II, ResNet-18 'Single-task' row (the paper's reference for its ResNet-18 and MTAN rows)")
    # AvgNorm Table III, ResNet-50 'Single-task' row: 42.94 mIoU, 0.5905 RMSE, 20.54 mErr, 73.40 odsF
    nyud50 = {"semseg": {"miou": 0.4294}, "depth": {"rmse": 0.5905}, "normals": {"mean": 20.54}, "edge": {"odsF": 0.7340}}
    out = {}
    for model in ("segnet", "mtan"):
        out[("cityscapes", model)] = (CITYSCAPES_REFERENCE, f"published: {cagrad}")
        out[("nyuv2", model)] = (NYUV2_REFERENCE, f"published: {cagrad}")
    for model in ("resnet18-dilated", "mtan-resnet18"):
        out[("nyud", model)] = (NYUD_REFERENCE, f"published: {avg18}")
        out[("pascal-context", model)] = (PASCAL_CONTEXT_REFERENCE, f"published: {avg18}")
    out[("nyud", "resnet50-dilated")] = (nyud50, "published: AvgNorm Table III, ResNet-50 'Single-task' row")
    return out


def _shipped(dataset: str, model: str, data_seed: int):
    """The measured single-task reference shipped for an offline dataset (common/stl_reference.json)."""
    try:
        with open(SHIPPED) as fh:
            table = json.load(fh)
    except (OSError, ValueError):
        return None
    e = table.get(dataset)
    if not e or e.get("model") != model or e.get("data_seed", 0) != data_seed:
        return None
    seeds = ", ".join(str(s) for s in e["seeds"])
    return e["tasks"], (f"shipped: common/stl_reference.json, our single-task runs measured with "
                        f"`{e['command']}` for seeds {seeds} (mean)")


def published_reference(dataset: str, model: str, data_seed: int = 0):
    """(values, source) of the published (or shipped, measured) reference of dataset and model, or None."""
    hit = _published().get((dataset, model))
    return hit if hit is not None else _shipped(dataset, model, data_seed)


@dataclass
class Reference:
    values: dict | None  # {task: {metric: value}}
    kind: str  # "stl-runs" | "published" | "shipped" | "file" | "none"
    source: str

    def as_json(self) -> dict:
        return {"kind": self.kind, "source": self.source, "values": self.values}


def _run_identity(metrics_path: str, m: dict) -> tuple:
    """(dataset, model, data_seed) of the run whose metrics.json is at `metrics_path` (its config.json
    fills what metrics.json does not say); None where unknown."""
    cfg = {}
    try:
        with open(os.path.join(os.path.dirname(metrics_path), "config.json")) as fh:
            cfg = json.load(fh).get("args", {})
    except (OSError, ValueError, AttributeError):
        pass
    return (m.get("dataset", cfg.get("dataset")), m.get("model", cfg.get("model")),
            m.get("data_seed", cfg.get("data_seed")))


def _mean_tasks(found: list[dict]) -> dict:
    ref = {}
    for t in found[0]:
        ref[t] = {k: float(np.mean([f[t][k] for f in found if t in f and k in f[t]])) for k in found[0][t]
                  if k != "loss"}
    return ref


def stl_runs(dataset: str, model: str, data_seed: int, root: str = RESULTS_ROOT) -> tuple[dict | None, list[str]]:
    """Mean test metrics of our finished single-task runs of dataset and model under root/stl/<dataset>/."""
    found, paths = [], []
    for p in sorted(glob.glob(os.path.join(root, "stl", dataset, "*", "metrics.json"))):
        try:
            with open(p) as fh:
                m = json.load(fh)
        except (OSError, ValueError):
            continue
        ds, mdl, dseed = _run_identity(p, m)
        if m.get("method", "stl") != "stl" or ds != dataset or mdl != model or (dseed is not None and dseed != data_seed):
            continue
        if isinstance(m.get("tasks"), dict) and m["tasks"]:
            found.append(m["tasks"])
            paths.append(p)
    return (_mean_tasks(found) if found else None), paths


def _from_path(path: str, dataset: str, model: str) -> Reference:
    if os.path.isdir(path):
        files = [os.path.join(path, "metrics.json")] if os.path.isfile(os.path.join(path, "metrics.json")) else \
            sorted(glob.glob(os.path.join(path, "*", "metrics.json")))
        if not files:
            raise UsageError(f"--reference {path}: no metrics.json in it or in its sub-folders")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise UsageError(f"--reference {path!r}: use auto, published, or an existing metrics.json / folder of runs / JSON file")
    found = []
    for f in files:
        try:
            with open(f) as fh:
                m = json.load(fh)
        except (OSError, ValueError) as e:
            raise UsageError(f"--reference {f}: not valid JSON ({e})")
        if not isinstance(m, dict):
            raise UsageError(f"--reference {f}: expected a JSON object")
        if "tasks" in m:
            ds, mdl, _ = _run_identity(f, m)
            if ds is not None and ds != dataset:
                raise UsageError(f"--reference {f} is a run on dataset {ds}, this run is on {dataset}")
            if mdl is not None and mdl != model:
                raise UsageError(f"--reference {f} is a run of model {mdl}, this run uses {model}")
            tasks = m["tasks"]
        else:
            tasks = m
        if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
            raise UsageError(f"--reference {f}: expected {{task: {{metric: value}}}} or a run's metrics.json")
        found.append(tasks)
    src = files[0] if len(files) == 1 else f"{path} ({len(files)} runs, mean)"
    return Reference(_mean_tasks(found), "file", f"file: {src}")


def resolve_reference(spec: str | None, dataset: str, model: str, data_seed: int = 0, method: str = "",
                      root: str = RESULTS_ROOT) -> Reference:
    """The Delta-m% reference of `--reference spec` for a run of `model` on `dataset` (module docstring)."""
    spec = spec or "auto"
    if spec not in ("auto", "published"):
        return _from_path(spec, dataset, model)
    if spec == "auto" and method != "stl":  # an STL run is not its own reference
        values, paths = stl_runs(dataset, model, data_seed, root)
        if values:
            where = paths[0] if len(paths) == 1 else f"{os.path.join(root, 'stl', dataset)}/*/metrics.json ({len(paths)} runs, mean)"
            return Reference(values, "stl-runs", f"our single-task runs: {where}")
    hit = published_reference(dataset, model, data_seed)
    if hit is not None:
        values, source = hit
        return Reference({t: dict(v) for t, v in values.items()}, source.split(":")[0], source)
    how = (f"no Delta-m% reference for --dataset {dataset} --model {model}: train one with `python methods/stl.py "
           f"--dataset {dataset} --model {model} --seed S` (found under {os.path.join(root, 'stl', dataset)}/) "
           "or pass --reference PATH")
    return Reference(None, "none", how)
