"""Aggregation: from the runs' metrics.json files to results/tables/*.md, results/figures/*.png and
results/README.md, with the paper's number beside ours in every cell.

    python -m reproduce.aggregate [--smoke] [--results DIR]      # no training, just the files

For every row of a table: the metrics of each finished seed (metrics.json "tasks", or the best point
of the front per metric for Pareto-front methods, or the front's midpoint for EXTRA's curve), then
  - each metric column: mean +- std over seeds (sample std, ddof 1) in the paper's unit;
  - Delta-m% (EXTRA Eq. 8, common.metrics.delta_m) per seed against the block's reference (our STL
    runs averaged over seeds, or the published single-task vector), then mean +- std;
  - Mean Rank (common.metrics.mean_rank) over the rows with results, on their mean metrics;
  - HyperVolume (common.metrics.hypervolume) of the front (or of the single point) per seed.
A cell reads `ours (paper)`: `75.10 ± 0.21 (75.18)`; `n/a` where no run finished.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from common.data import TaskSpec, task  # noqa: E402
from common.metrics import delta_m, hypervolume, mean_rank  # noqa: E402
from reproduce import registry as reg  # noqa: E402

# Task kinds per dataset (the task names come from the runs' metrics.json)
KINDS = {
    "toy": ["toy", "toy"], "census": ["class", "class"], "utkface": ["huber", "class", "class"],
    "cityscapes": ["seg", "depth"], "nyuv2": ["seg", "depth", "normal"],
}


def task_specs(dataset: str, names: list[str]) -> list[TaskSpec]:
    if dataset in ("nyud", "pascal-context"):  # the dense suite: one metric per task, its own kinds
        from common.real_data import NYUD_TASKS, PASCAL_TASKS

        return list(NYUD_TASKS if dataset == "nyud" else PASCAL_TASKS)
    if dataset == "celeba":
        kinds = ["binary"] * len(names)
    else:
        kinds = KINDS.get(dataset, ["class"] * len(names))
    return [task(n, k, 1) for n, k in zip(names, kinds)]


def published_reference(dataset: str) -> dict | None:
    try:
        from common.real_data import CITYSCAPES_REFERENCE, NYUD_REFERENCE, NYUV2_REFERENCE, PASCAL_CONTEXT_REFERENCE
    except ImportError:
        return None
    return {"cityscapes": CITYSCAPES_REFERENCE, "nyuv2": NYUV2_REFERENCE, "nyud": NYUD_REFERENCE,
            "pascal-context": PASCAL_CONTEXT_REFERENCE}.get(dataset)


def pooled_hypervolume(point_sets: list, hv) -> float | None:
    """Hypervolume of the union of several runs' points (e.g. one per seed) as ONE front: PML Table 4's
    "HV (across seeds)" for the single-point baselines, which is larger than acc_1 x acc_2 of the seed
    mean. One set gives that run's own hypervolume."""
    pts = [p for ps in point_sets for p in ps]
    if not pts:
        return None
    v = hypervolume(np.array(pts, float), hv.ref, maximize=hv.maximize)
    return None if v is None else float(v)


def higher_is_better(metric: str, specs: list[TaskSpec]) -> bool:
    for s in specs:
        d = dict(s.metrics)
        if metric in d:
            return d[metric]
    return metric not in ("loss", "huber", "mae", "abs_err", "rel_err", "rmse", "mean", "median")


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------
def load_json(path: str) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def row_results(rp) -> dict:
    """{seed: metrics.json} of a row's finished runs."""
    out = {}
    for seed, job in sorted(rp.jobs.items()):
        m = load_json(os.path.join(job.out, "metrics.json"))
        if m is not None:
            out[seed] = m
    return out


def front_best(m: dict, dataset: str) -> dict | None:
    """Per task and metric, the best value over the front (the papers' "best of the subspace")."""
    if m.get("tasks_best_of_subspace_test"):
        return m["tasks_best_of_subspace_test"]
    front = m.get("front") or []
    if not front:
        return None
    names = list(front[0].get("tasks", {}))
    specs = task_specs(dataset, names)
    best: dict = {}
    for f in front:
        for t, ms in (f.get("tasks") or {}).items():
            for k, v in ms.items():
                if not isinstance(v, (int, float)) or v is None:
                    continue
                cur = best.setdefault(t, {}).get(k)
                hi = higher_is_better(k, specs)
                if cur is None or (v > cur if hi else v < cur):
                    best[t][k] = v
    return best


def front_mid(m: dict) -> dict | None:
    """The front's point at t = 1/2 (EXTRA's reported model), or at the centre preference."""
    for f in m.get("front") or []:
        if f.get("t") is not None and abs(float(f["t"]) - 0.5) < 1e-6:
            return f["tasks"]
        pref = f.get("preference")
        if pref and np.allclose(pref, [1.0 / len(pref)] * len(pref), atol=1e-6):
            return f["tasks"]
    return None


def picked_tasks(m: dict, pick: str, dataset: str) -> dict | None:
    if pick == "front_best":
        return front_best(m, dataset) or m.get("tasks")
    if pick == "front_mid":
        return front_mid(m) or m.get("tasks")
    return m.get("tasks")


def task_at(tasks: dict | None, index: int | None) -> dict | None:
    if not tasks or index is None:
        return None
    names = list(tasks)
    return tasks[names[index]] if index < len(names) else None


def field(m: dict, path: str):
    cur = m
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


def fnum(v) -> float | None:
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# One block: values per row, column, seed
# --------------------------------------------------------------------------------------------
class BlockData:
    """Numbers of one block: values[row_index][col_key] = list of per-seed values (paper units)."""

    def __init__(self, bp):
        self.bp = bp
        self.block = bp.block
        self.dataset = bp.dataset or bp.block.dataset
        self.results = [row_results(rp) for rp in bp.rows]
        self.tasks = [{s: picked_tasks(m, rp.row.pick, self.dataset) for s, m in res.items()}
                      for rp, res in zip(bp.rows, self.results)]
        names = next((list(t) for per in self.tasks for t in per.values() if t), [])
        self.specs = task_specs(self.dataset, names)
        self.reference, self.reference_source = self._reference()
        self.values = [self._row_values(i) for i in range(len(bp.rows))]
        self._mean_ranks()

    # reference of Delta-m%
    def _reference(self):
        b = self.block
        stl = [i for i, rp in enumerate(self.bp.rows) if rp.row.role == "stl"]
        want = b.reference
        if want in ("stl", "auto") and stl and self.tasks[stl[0]]:
            per_seed = [t for t in self.tasks[stl[0]].values() if t]
            ref = {}
            for t in per_seed[0]:
                ref[t] = {k: float(np.mean([p[t][k] for p in per_seed if t in p and k in p[t]]))
                          for k, v in per_seed[0][t].items() if isinstance(v, (int, float))}
            return ref, f"our STL runs ({len(per_seed)} seed(s))"
        if want in ("published", "auto"):
            pub = published_reference(self.dataset)
            if pub:
                return pub, "the published single-task vector (CAGrad; common/real_data.py)"
        return None, "no reference: " + ("the STL row has no finished run" if stl else "no single-task reference for this dataset")

    def _base_params(self):
        for rp, res in zip(self.bp.rows, self.results):
            if rp.row.role == "" and rp.row.method is not None and rp.row.method.script == "baselines":
                for m in res.values():
                    if isinstance(m.get("parameters"), (int, float)):
                        return m["parameters"]
        return None

    def _row_values(self, i: int) -> dict:
        rp, res, tasks = self.bp.rows[i], self.results[i], self.tasks[i]
        out = {}
        for c in self.block.columns:
            if c.metric == "hv_pooled":  # one value per row: the seeds' points pooled into one front
                sets = [self._hv_points(m, tasks.get(seed)) for seed, m in res.items()]
                hv = pooled_hypervolume([p for p in sets if p], self.block.hv) if self.block.hv else None
                out[c.key] = {"mean": hv} if hv is not None else {}
                continue
            vals = {}
            for seed, m in res.items():
                v = self._value(c, m, tasks.get(seed), rp)
                if v is not None:
                    vals[seed] = v
            out[c.key] = vals
        return out

    def _value(self, c, m: dict, tasks: dict | None, rp) -> float | None:
        metric = c.metric
        if metric == "delta_m":
            if not tasks or not self.reference:
                return None
            v = delta_m(tasks, self.reference, self.specs)
            return None if v is None else self.block.delta_sign * v
        if metric == "mean_rank" or metric == "text":
            return None
        if metric == "hv":
            return self._hv(m, tasks)
        if metric == "hv_method":
            return fnum(m.get("hypervolume")) if m.get("hypervolume") is not None else self._hv(m, tasks)
        if metric == "avg_acc":
            accs = [ms.get("acc") for ms in (tasks or {}).values() if isinstance(ms, dict)]
            accs = [a for a in accs if a is not None]
            return c.scale * float(np.mean(accs)) if accs else None
        if metric == "mean_error":
            errs = [1.0 - ms["acc"] for ms in (tasks or {}).values() if isinstance(ms, dict) and ms.get("acc") is not None]
            return c.scale * float(np.mean(errs)) if errs else None
        if metric == "weight":
            w = m.get("mean_weights")
            if isinstance(w, dict):
                w = list(w.values())
            if isinstance(w, list) and c.task is not None and c.task < len(w):
                return fnum(w[c.task])
            return None
        if metric == "peak_memory_mb":
            return fnum(m.get("peak_memory_mb"))
        if metric == "params_increase":
            if m.get("delta_p_percent") is not None:
                return fnum(m["delta_p_percent"])
            p, base = m.get("parameters"), self._base_params()
            if isinstance(p, (int, float)) and base:
                return 100.0 * (p / base - 1.0)
            return None
        if metric.startswith("field:"):
            return fnum(field(m, metric[6:]))
        ms = task_at(tasks, c.task)
        if ms is None or metric not in ms:
            return None
        v = fnum(ms[metric])
        return None if v is None else c.scale * v

    def _hv(self, m: dict, tasks: dict | None) -> float | None:
        hv = self.block.hv
        if hv is None:
            return fnum(m.get("hypervolume"))
        pts = self._hv_points(m, tasks)
        return pooled_hypervolume([pts], hv) if pts else None

    def _hv_points(self, m: dict, tasks: dict | None) -> list:
        """The run's points in the block's HV objectives: its front, else its one result."""
        hv = self.block.hv
        pts = []
        for f in (m.get("front") or []):
            p = [task_at(f.get("tasks"), i) for i, _ in hv.objectives]
            if all(q is not None and k in q for q, (_, k) in zip(p, hv.objectives)):
                pts.append([q[k] for q, (_, k) in zip(p, hv.objectives)])
        if not pts and tasks:
            p = [task_at(tasks, i) for i, _ in hv.objectives]
            if all(q is not None and k in q for q, (_, k) in zip(p, hv.objectives)):
                pts = [[q[k] for q, (_, k) in zip(p, hv.objectives)]]
        return pts

    def _mean_ranks(self):
        cols = [c for c in self.block.columns if c.metric == "mean_rank"]
        if not cols:
            return
        means = {}
        for i, (rp, per) in enumerate(zip(self.bp.rows, self.tasks)):
            if rp.row.role == "stl" or not per:
                continue
            seeds = [t for t in per.values() if t]
            if not seeds:
                continue
            avg = {}
            for t in seeds[0]:
                avg[t] = {k: float(np.mean([s[t][k] for s in seeds if t in s and k in s[t]]))
                          for k, v in seeds[0][t].items() if isinstance(v, (int, float))}
            means[i] = avg
        if len(means) < 2:
            return
        ranks = mean_rank(means, self.specs)
        for i, r in ranks.items():
            for c in cols:
                self.values[i][c.key] = {"mean": r}


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------
def fmt(v, digits: int) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        return f"{fmt(v[0], digits)} ± {v[1]}"
    return f"{v:.{digits}f}"


def stat(values: dict, how: str) -> tuple[float | None, float | None]:
    """(value, spread) of per-seed values by the column's stat."""
    if "mean" in values and len(values) == 1 and not isinstance(next(iter(values)), int):
        return values["mean"], None  # a mean rank
    vs = [values[s] for s in sorted(values)]
    if not vs:
        return None, None
    if how.startswith("seed"):
        s = int(how[4:])
        return values.get(s), None
    if how == "max":
        return max(vs), None
    if how == "std":
        return (float(np.std(vs, ddof=1)) if len(vs) > 1 else None), None
    if how == "mean_only":
        return float(np.mean(vs)), None
    return float(np.mean(vs)), (float(np.std(vs, ddof=1)) if len(vs) > 1 else None)


def cell(values: dict, paper, c, text: str = "") -> str:
    if c.metric == "text":
        ours = text or ""
        return ours if paper is None else ours
    v, sd = stat(values, c.stat)
    ours = fmt(v, c.digits) + (f" ± {sd:.{c.digits}f}" if sd is not None else "")
    if paper is None or paper == ():
        return ours
    return f"{ours} ({fmt(paper, c.digits)})"


def md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def command_of(job) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in job.argv("python", ["--device", "auto"]))


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def block_markdown(bp, data: BlockData, entry) -> list[str]:
    b = bp.block
    lines = [f"## {b.title or b.dataset}", ""]
    if bp.status == "unsupported":
        lines.append(f"**Not run**: {bp.reason}. The paper's numbers are listed for reference.")
    elif bp.status == "absent":
        lines.append(f"**Not run**: the dataset is absent; this block {bp.reason}. The paper's numbers are listed for reference.")
    elif bp.status == "standin":
        lines.append(f"**Stand-in dataset**: {bp.reason}. Our numbers are not directly comparable with the paper's.")
    else:
        lines.append(f"Dataset: `{bp.dataset}` (under `{bp.data_root}`)" + (f"; {bp.reason}" if bp.reason else "") + ".")
    if b.flags:
        lines.append(f"Setup flags of every run: `{' '.join(str(f) for f in b.flags)}`.")
    if any(c.metric == "delta_m" for c in b.columns):
        lines.append(f"Δm% reference: {data.reference_source}" + ("; sign flipped (higher is better), as the paper." if b.delta_sign < 0 else "."))
    if b.note:
        lines.append("")
        lines.append(b.note)
    lines.append("")
    header = ["Method", "runs"] + [c.header for c in b.columns]
    lines.append("| " + " | ".join(md_escape(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    notes = []
    for i, rp in enumerate(bp.rows):
        r = rp.row
        n_done = len(data.results[i])
        n_all = len(rp.jobs)
        smoke_skip = rp.skipped == "not part of the smoke plan"
        runs = f"{n_done}/{n_all}" if n_all else ("skip" if smoke_skip else "—")
        cells = []
        for k, c in enumerate(b.columns):
            paper = r.paper[k] if k < len(r.paper) else None
            cells.append(cell(data.values[i].get(c.key, {}), paper, c, r.text))
        label = r.label
        unfinished = f"{n_all - n_done} of {n_all} seed(s) not finished" if n_done < n_all else ""
        block_wide = bp.status in ("absent", "unsupported") and rp.skipped in (bp.reason, r.note)
        why = "" if smoke_skip or block_wide else (rp.skipped or unfinished)
        if block_wide:
            runs = "—"
        if why or r.note:
            notes.append((r.label, "; ".join(x for x in (r.note, why) if x)))
            label += f" [{len(notes)}]"
        lines.append("| " + " | ".join(md_escape(x) for x in [label, runs] + cells) + " |")
    if notes:
        lines.append("")
        for k, (label, why) in enumerate(notes, 1):
            lines.append(f"[{k}] {label}: {why}")
    return lines + [""]


def entry_markdown(ep, datas, smoke: bool) -> str:
    e = ep.entry
    what = "Table" if e.kind == "table" else "Figure"
    lines = [f"# {reg.PAPERS[e.paper].split(':')[0]} — {what} {e.number}: {e.title}", ""]
    if smoke:
        lines += ["> **Smoke run**: tiny offline data, a few optimisation steps, one seed, scene backbones at 1/8 width. "
                  "The numbers only show that the pipeline works; they say nothing about the methods. Rows whose `runs` "
                  "cell is `skip` are not part of the smoke plan.", ""]
    lines.append(f"Source of the paper's numbers: {e.source} (text: /work/shared/papers/{reg.PAPER_FILES[e.paper]}).")
    lines.append("Each cell: ours, mean ± std over the finished seeds (sample std), then the paper's number in parentheses; "
                 "`n/a`: no finished run. `runs`: finished / planned seeds.")
    if e.kind == "figure":
        lines.append(f"Figure: [../figures/{e.file_stem}.png](../figures/{e.file_stem}.png)")
    for n in e.notes:
        lines.append("")
        lines.append(n)
    lines.append("")
    for bp, d in zip(ep.blocks, datas):
        lines += block_markdown(bp, d, e)
    cmds = []
    for bp in ep.blocks:
        for rp in bp.rows:
            for seed, job in sorted(rp.jobs.items())[:1]:
                cmds.append(f"- {rp.row.label}: `{command_of(job)}`")
    if cmds:
        lines += ["## Commands (first seed of each row; `bash run_all.sh --only " + e.id + "` runs them all)", ""] + cmds + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _placeholder(ax, msg: str, fontsize: float = 8):
    """The text of a panel without runs, wrapped to the panel's width (matplotlib's wrap=True measures
    against the figure and lets centred lines run over the left edge)."""
    import textwrap

    width_in = ax.get_position().width * ax.figure.get_figwidth()
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)) - 2)  # average glyph about 0.6 em wide
    text = "\n".join(textwrap.fill(line, chars) if line else "" for line in msg.splitlines())
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=fontsize, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_front2d(ep, datas, path, smoke):
    plt = _plt()
    n = len(ep.blocks)
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 5.2), squeeze=False)
    for ax, bp, d in zip(axes[0], ep.blocks, datas):
        cols = [c for c in bp.block.columns if c.task in (0, 1) and c.metric not in ("weight",)]
        cx = next((c for c in cols if c.task == 0), None)
        cy = next((c for c in cols if c.task == 1), None)
        ax.set_title(f"{bp.block.title or bp.dataset or bp.block.dataset}" + (" (stand-in)" if bp.status == "standin" else ""), fontsize=9)
        if cx is None or cy is None or not any(d.results):
            _placeholder(ax, f"no finished runs\n{bp.reason}" if bp.reason else "no finished runs")
            continue
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        markers = "osD^v<>ph*X"
        k = 0
        for i, rp in enumerate(bp.rows):
            res = d.results[i]
            if not res:
                continue
            label = rp.row.label
            if rp.row.role == "stl":
                for m in res.values():
                    t = m.get("tasks") or {}
                    x, y = task_at(t, cx.task), task_at(t, cy.task)
                    if x and y:
                        ax.axvline(x[cx.metric] * cx.scale, color="gray", ls="--", lw=0.8)
                        ax.axhline(y[cy.metric] * cy.scale, color="gray", ls="--", lw=0.8)
                ax.plot([], [], color="gray", ls="--", label=f"{label} (dashed)")
                continue
            color = colors[k % len(colors)]
            k += 1
            first = True
            for seed, m in sorted(res.items()):
                front = m.get("front") or []
                pts = []
                for f in front:
                    x, y = task_at(f.get("tasks"), cx.task), task_at(f.get("tasks"), cy.task)
                    if x and y and cx.metric in x and cy.metric in y:
                        pts.append((x[cx.metric] * cx.scale, y[cy.metric] * cy.scale))
                if len(pts) > 1:
                    pts = np.array(pts)
                    ax.plot(pts[:, 0], pts[:, 1], "-", marker=".", ms=3, lw=1.2, color=color, alpha=0.85,
                            label=label if first else None)
                else:
                    t = d.tasks[i].get(seed) if rp.row.pick == "tasks" else m.get("tasks")
                    x, y = task_at(t, cx.task), task_at(t, cy.task)
                    if x and y and cx.metric in x and cy.metric in y:
                        ax.scatter([x[cx.metric] * cx.scale], [y[cy.metric] * cy.scale], color=color,
                                   marker=markers[(k - 1) % len(markers)], s=28, label=label if first else None, zorder=3)
                first = False
        ax.set_xlabel(cx.header)
        ax.set_ylabel(cy.header)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    fig.suptitle(_title(ep, smoke), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_FRONTS: dict = {}


def analytic_front(c: float) -> np.ndarray:
    from common.data import toy_pareto_front

    if c not in _FRONTS:
        _FRONTS[c] = toy_pareto_front(c)
    return _FRONTS[c]


def toy_trajectory(checkpoint: str):
    """The loss trajectory a PML toy run saved in its checkpoint (run.values "traj": one
    (25 pairs, 2 members, 2 losses) array per logged step), as one (steps, 25, 2, 2) array; None
    when the file is missing or holds none (then the figure shows the subspaces only)."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state"]
        return np.array([np.asarray(t) for t in state["values"]["traj"]])
    except (OSError, KeyError, TypeError, RuntimeError):
        return None


def plot_toy(ep, datas, path, smoke):
    """PML Figures 7-14: one panel per initialisation pair (5 x 5): the final subspace (dashed) and,
    for the trajectory figures, each member's path in objective space; the analytic front in light blue."""
    import torch

    from common.data import toy_losses

    plt = _plt()
    c = ep.entry.plot_opts.get("c", 1.0)
    view = ep.entry.plot_opts.get("view", "subspace")
    bp, d = ep.blocks[0], datas[0]
    res = d.results[0] if d.results else {}
    m = res.get(min(res)) if res else None
    if not m or not m.get("pairs"):
        fig, ax = plt.subplots(figsize=(6, 4))
        _placeholder(ax, "no finished run\n" + (bp.rows[0].skipped if bp.rows else ""))
    else:
        fig, axes = plt.subplots(5, 5, figsize=(13, 12), squeeze=False)
        front = analytic_front(c)
        traj = None
        if view == "trajectories":
            job = next(iter(bp.rows[0].jobs.values()))
            traj = toy_trajectory(os.path.join(job.out, "checkpoint.pt"))
        a = torch.linspace(0, 1, 101, dtype=torch.float64)
        for q, (ax, pair) in enumerate(zip(axes.flat, m["pairs"])):
            th = torch.tensor(pair["members"], dtype=torch.float64)  # (2 members, 2 params)
            pts = toy_losses(a[:, None] * th[0] + (1 - a[:, None]) * th[1], c).numpy()
            ax.plot(front[:, 0], front[:, 1], color="#9ecae1", lw=4, zorder=1)
            ax.plot(pts[:, 0], pts[:, 1], "k--", lw=1, zorder=3)
            if traj is not None and traj.ndim == 4 and q < traj.shape[1]:
                for k, col in enumerate(("tab:blue", "tab:red")):
                    ax.plot(traj[:, q, k, 0], traj[:, q, k, 1], color=col, lw=0.8, zorder=2)
                    ax.scatter(traj[0, q, k, 0], traj[0, q, k, 1], color=col, s=12, marker="o", zorder=4)
                    ax.scatter(traj[-1, q, k, 0], traj[-1, q, k, 1], color=col, s=18, marker="x", zorder=4)
            i, j = pair["init"]
            ax.set_title(f"init {tuple(i)} / {tuple(j)}, coverage {pair.get('coverage', float('nan')):.2f}", fontsize=7)
            ax.tick_params(labelsize=7)
            lo = front.min(0) - 0.3 * (front.max(0) - front.min(0))
            hi = front.max(0) + 0.8 * (front.max(0) - front.min(0))
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="#9ecae1", lw=4, label="analytic Pareto front"),
                   Line2D([], [], color="k", ls="--", lw=1, label="final subspace (segment between the 2 members)")]
        if traj is not None:
            handles += [Line2D([], [], color="tab:blue", lw=1, label="member 1 path"),
                        Line2D([], [], color="tab:red", lw=1, label="member 2 path"),
                        Line2D([], [], color="0.3", marker="o", ls="", label="start"),
                        Line2D([], [], color="0.3", marker="x", ls="", label="end")]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
        fig.supxlabel("loss of task 1, $l_1$ (lower is better)", fontsize=10, y=0.035)
        fig.supylabel("loss of task 2, $l_2$ (lower is better)", fontsize=10)
        if view == "trajectories" and traj is None:
            fig.text(0.5, 0.06, "trajectories unavailable (no checkpoint.pt with 'traj'); final subspaces only", ha="center", fontsize=8)
    fig.suptitle(_title(ep, smoke) + f"\nc = {c}; one panel per pair of initial points (App. C)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _front_delta(m: dict, ref: dict | None, specs) -> list[tuple[float, float]]:
    out = []
    for k, f in enumerate(m.get("front") or []):
        t = f.get("t")
        if t is None:
            pref = f.get("preference") or [k]
            t = pref[0]
        v = delta_m(f.get("tasks") or {}, ref, specs) if ref else None
        if v is not None:
            out.append((float(t), v))
    return sorted(out)


def plot_curve_t(ep, datas, path, smoke):
    """EXTRA Figures 4 / 9: task losses and Delta-m% along the curve t in [0, 1]."""
    plt = _plt()
    ys = ep.entry.plot_opts.get("y", ["loss", "delta_m"])
    fig, axes = plt.subplots(1, len(ys), figsize=(6 * len(ys), 4.6), squeeze=False)
    bp, d = ep.blocks[0], datas[0]
    anything = False
    for i, rp in enumerate(bp.rows):
        res = d.results[i]
        if not res:
            continue
        m = res[min(res)]
        front = m.get("front") or []
        for ax, what in zip(axes[0], ys):
            if what == "loss":
                names = list((front[0].get("tasks") if front else {}) or {})
                for tn in names:
                    pts = sorted((float(f.get("t", k)), f["tasks"][tn].get("loss")) for k, f in enumerate(front)
                                 if f.get("tasks", {}).get(tn, {}).get("loss") is not None)
                    if pts:
                        ax.plot(*zip(*pts), marker=".", label=f"{rp.row.label}: {tn}")
                        anything = True
                ax.set_ylabel("test loss")
            else:
                pts = _front_delta(m, d.reference, d.specs)
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=rp.row.label)
                    anything = True
                ax.set_ylabel("Δm% (lower is better)")
            ax.set_xlabel("t")
    for ax in axes[0]:
        if anything:
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        else:
            _placeholder(ax, "no finished runs with a curve\n" + "; ".join(sorted({rp.skipped for rp in bp.rows if rp.skipped}))[:300])
    fig.suptitle(_title(ep, smoke), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(ep, datas, path, smoke):
    plt = _plt()
    key = ep.entry.plot_opts.get("y", "delta_m")
    n = len(ep.blocks)
    fig, axes = plt.subplots(1, n, figsize=(max(5, 1.2 * max(len(b.rows) for b in ep.blocks) + 2) * n, 4.6), squeeze=False)
    for ax, bp, d in zip(axes[0], ep.blocks, datas):
        col = next((c for c in bp.block.columns if c.metric == key), None)
        labels, means, sds, papers = [], [], [], []
        for i, rp in enumerate(bp.rows):
            if rp.row.role == "stl":
                continue
            vals = d.values[i].get(col.key, {}) if col else {}
            v, sd = stat(vals, "mean")
            labels.append(rp.row.label)
            means.append(np.nan if v is None else v)
            sds.append(0 if sd is None else sd)
            k = bp.block.columns.index(col) if col else -1
            p = rp.row.paper[k] if col and k < len(rp.row.paper) else None
            papers.append(np.nan if p is None else (p[0] if isinstance(p, tuple) else p))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, means, 0.4, yerr=sds, label="ours", color="tab:blue")
        if not all(np.isnan(papers)):
            ax.bar(x + 0.2, papers, 0.4, label="paper", color="tab:gray")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(col.header if col else key)
        ax.set_title(bp.block.title or bp.dataset or bp.block.dataset, fontsize=9)
        if all(np.isnan(means)):
            _placeholder(ax, "no finished runs" + (f"\n{bp.reason}" if bp.reason else ""))
            continue
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(_title(ep, smoke), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hv_spearman(ep, datas, path, smoke):
    plt = _plt()
    bp, d = ep.blocks[0], datas[0]
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = {}
    for i, rp in enumerate(bp.rows):
        for seed, m in d.results[i].items():
            hv, rho = fnum(m.get("hypervolume")), fnum(m.get("spearman"))
            if hv is not None and rho is not None:
                groups.setdefault(rp.row.label.split(",")[0], []).append((rho, hv))
    for g, pts in groups.items():
        pts = np.array(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=14, label=g, alpha=0.8)
    if groups:
        ax.legend(fontsize=7)
        ax.set_xlabel("Spearman correlation of the two tasks' losses over the front (lower: more diverse)")
        ax.set_ylabel("HyperVolume")
        ax.grid(alpha=0.3)
    else:
        _placeholder(ax, "no finished runs")
    ax.set_title(_title(ep, smoke), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_preferences(ep, datas, path, smoke):
    plt = _plt()
    bp, d = ep.blocks[0], datas[0]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    res = d.results[0] if d.results else {}
    m = res.get(min(res)) if res else None
    pseudo = (m or {}).get("pseudo_preferences") or []
    if pseudo:
        names = list(pseudo[0]["tasks"])
        x = np.arange(len(pseudo))
        w = 0.8 / max(1, len(names))
        for k, tn in enumerate(names):
            metric = "acc" if "acc" in pseudo[0]["tasks"][tn] else next(iter(pseudo[0]["tasks"][tn]))
            ax.bar(x + (k - (len(names) - 1) / 2) * w, [p["tasks"][tn].get(metric, np.nan) for p in pseudo], w, label=f"{tn} {metric}")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{p.get('label', '')}\n{tuple(round(v, 2) for v in p['preference'])}" for p in pseudo], fontsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    else:
        _placeholder(ax, "no finished run with pseudo-preferences\n" + (bp.rows[0].skipped if bp.rows else ""))
    ax.set_title(_title(ep, smoke), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_log(path: str) -> dict[str, list]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    cols: dict[str, list] = {}
    for r in rows:
        for k, v in r.items():
            cols.setdefault(k, []).append(fnum(v))
    return cols


def plot_log_curves(ep, datas, path, smoke):
    """Training curves from each run's log.csv: one panel per pattern (columns containing it)."""
    plt = _plt()
    patterns = ep.entry.plot_opts.get("patterns", ["train_loss"])
    fig, axes = plt.subplots(1, len(patterns), figsize=(6 * len(patterns), 4.6), squeeze=False)
    bp = ep.blocks[0]
    drawn = [False] * len(patterns)
    for rp in bp.rows:
        for seed, job in sorted(rp.jobs.items())[:1]:
            log = read_log(os.path.join(job.out, "log.csv"))
            if not log:
                continue
            x = log.get("epoch") or list(range(len(next(iter(log.values())))))
            x = [v + 1 if v is not None else None for v in x]
            for k, (ax, pat) in enumerate(zip(axes[0], patterns)):
                for col, ys in log.items():
                    if pat in col and any(v is not None for v in ys):
                        ax.plot(x, ys, marker=".", label=f"{rp.row.label}: {col}")
                        drawn[k] = True
    for ax, pat, ok in zip(axes[0], patterns, drawn):
        if ok:
            ax.set_xlabel("epoch")
            ax.set_ylabel(pat.strip("_"))
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        else:
            why = "; ".join(sorted({rp.skipped for rp in bp.rows if rp.skipped}))
            _placeholder(ax, f"no log.csv column containing '{pat}' in the finished runs" + (f"\n{why[:300]}" if why else ""))
    fig.suptitle(_title(ep, smoke), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {"front2d": plot_front2d, "toy": plot_toy, "curve_t": plot_curve_t, "bars": plot_bars,
         "hv_spearman": plot_hv_spearman, "preferences": plot_preferences, "log_curves": plot_log_curves}


def _title(ep, smoke: bool) -> str:
    import textwrap

    e = ep.entry
    return textwrap.fill(f"{e.paper} Figure {e.number}: {e.title}" + (" [SMOKE: meaningless numbers]" if smoke else ""), 110)


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------
def entry_status(ep) -> str:
    planned = done = 0
    reasons = []
    for bp in ep.blocks:
        if bp.status in ("absent", "unsupported"):
            reasons.append(f"{bp.block.title or bp.block.dataset}: {bp.reason}")
        for rp in bp.rows:
            for job in rp.jobs.values():
                planned += 1
                done += os.path.isfile(os.path.join(job.out, "metrics.json"))
    s = f"{done}/{planned} runs finished" if planned else "no runs"
    if any(bp.status == "standin" for bp in ep.blocks):
        s += " (stand-in data)"
    if reasons:
        s += "; not run: " + "; ".join(reasons)
    return s


def write_all(plans, opts) -> dict:
    tables_dir = os.path.join(opts.results, "tables")
    figures_dir = os.path.join(opts.results, "figures")
    os.makedirs(tables_dir, exist_ok=True)
    os.makedirs(figures_dir, exist_ok=True)
    n_tables = n_figs = 0
    readme = [f"# Reproduction of the five papers' tables and figures{' (SMOKE RUN)' if opts.smoke else ''}", "",
              "Generated by `bash run_all.sh" + (" --smoke" if opts.smoke else "") + "` (reproduce/aggregate.py); do not edit.",
              "Each table cell shows our mean ± std over seeds with the paper's number in parentheses.", ""]
    if opts.smoke:
        readme += ["> Smoke run: tiny offline data and a few steps. It proves that every table's pipeline runs; its numbers "
                   "mean nothing.", ""]
    by_paper: dict = {}
    for ep in plans:
        by_paper.setdefault(ep.entry.paper, []).append(ep)
    for paper, eps in by_paper.items():
        readme += [f"## {reg.PAPERS[paper]}", "", "| | file | status |", "|---|---|---|"]
        for ep in eps:
            e = ep.entry
            datas = [BlockData(bp) for bp in ep.blocks]
            md_path = os.path.join(tables_dir, f"{e.file_stem}.md")
            with open(md_path + ".tmp", "w") as fh:
                fh.write(entry_markdown(ep, datas, opts.smoke))
            os.replace(md_path + ".tmp", md_path)
            n_tables += 1
            links = f"[table](tables/{e.file_stem}.md)"
            if e.kind == "figure":
                png = os.path.join(figures_dir, f"{e.file_stem}.png")
                try:
                    PLOTS[e.plot or "bars"](ep, datas, png + ".tmp.png", opts.smoke)
                    os.replace(png + ".tmp.png", png)
                except Exception as ex:  # a figure must never stop the tables
                    _error_png(png, f"{type(ex).__name__}: {ex}")
                n_figs += 1
                links = f"[figure](figures/{e.file_stem}.png), [data](tables/{e.file_stem}.md)"
            what = "Table" if e.kind == "table" else "Figure"
            readme.append(f"| {what} {e.number}: {md_escape(e.title)} | {links} | {md_escape(entry_status(ep))} |")
        readme.append("")
    readme += data_section(plans)
    with open(os.path.join(opts.results, "README.md"), "w") as fh:
        fh.write("\n".join(readme) + "\n")
    return {"tables": n_tables, "figures": n_figs}


def data_section(plans) -> list[str]:
    """README: which dataset each table needed, and what happened (ran, stand-in, absent + how to enable)."""
    seen: dict = {}
    for ep in plans:
        for bp in ep.blocks:
            d = bp.block.dataset
            present = "tiny files in the real format (smoke)" if "tiny" in bp.reason else "present, runs on it"
            state = {"run": present, "standin": f"absent: ran on {bp.dataset} instead",
                     "absent": "absent", "unsupported": "not supported"}[bp.status]
            key = (d, state, bp.reason if bp.status != "run" else "")
            seen.setdefault(key, set()).add(ep.entry.id)
    lines = ["## Data", "", "| dataset | state | tables / figures | what would enable it |", "|---|---|---|---|"]
    for (d, state, why), ids in sorted(seen.items()):
        lines.append(f"| {d} | {state} | {', '.join(sorted(ids))} | {md_escape(why)} |")
    return lines + [""]


def _error_png(path: str, msg: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    _placeholder(ax, "figure failed:\n" + msg[:400])
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summary(plans, jobs) -> str:
    """The end-of-run report: what ran, what failed, what was skipped and which data would enable it."""
    lines = []
    failed = [j for j in jobs.values() if j.status == "failed"]
    missing = {}
    absent, standin = {}, {}
    for ep in plans:
        for bp in ep.blocks:
            if bp.status in ("absent", "unsupported"):
                absent.setdefault(bp.reason, []).append(ep.entry.id)
            elif bp.status == "standin":
                standin.setdefault(bp.reason, []).append(ep.entry.id)
            for rp in bp.rows:
                if rp.skipped and rp.row.method is not None and bp.status not in ("absent", "unsupported") \
                        and rp.skipped != "not part of the smoke plan":
                    missing.setdefault(rp.skipped, set()).add(ep.entry.id)
    ok = sum(1 for j in jobs.values() if j.status in ("done", "finished"))
    lines.append(f"[run_all] runs: {ok} finished, {len(failed)} failed, "
                 f"{sum(1 for j in jobs.values() if j.status == 'skipped')} could not run")
    for j in failed:
        lines.append(f"  FAILED {j.key}: {j.reason} (log: {j.log})")
    if absent:
        lines.append("[run_all] skipped tables / blocks (data absent or unsupported) and what would enable them:")
        for why, ids in absent.items():
            lines.append(f"  - {', '.join(sorted(set(ids)))}: {why}")
    if standin:
        lines.append("[run_all] blocks run on an offline stand-in dataset (labelled so in their tables):")
        for why, ids in standin.items():
            lines.append(f"  - {', '.join(sorted(set(ids)))}: {why}")
    if missing:
        lines.append("[run_all] rows that could not run:")
        for why, ids in sorted(missing.items()):
            lines.append(f"  - {why}: {', '.join(sorted(ids))}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from reproduce.run import Options, plan

    p = argparse.ArgumentParser(prog="python -m reproduce.aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="aggregate the smoke runs (results/smoke/)")
    p.add_argument("--results", default=None, help="results folder (default results/ or results/smoke/)")
    p.add_argument("--data-root", default="data")
    a = p.parse_args(argv)
    os.chdir(REPO)
    opts = Options(results=a.results or (os.path.join("results", "smoke") if a.smoke else "results"),
                   data_root=a.data_root, smoke=a.smoke)
    plans, jobs = plan(reg.ENTRIES, opts)
    n = write_all(plans, opts)
    print(summary(plans, jobs))
    print(f"wrote {n['tables']} table files and {n['figures']} figures under {opts.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
