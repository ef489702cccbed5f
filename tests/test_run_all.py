"""run_all.sh / reproduce/: the registry covers every table and figure of the five papers, the
aggregation over seeds (mean, std, Delta-m%, Mean Rank, hypervolume) on hand-made metrics.json files,
the SLURM job array, dependencies between runs, data-absent skips, and a reduced smoke run that
still writes every table and figure file."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reproduce import aggregate, registry as reg, run as runner  # noqa: E402
from reproduce.registry import BL, STL, Block, Col, Entry, R  # noqa: E402


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
def test_registry_covers_every_table_and_figure_of_the_issue():
    have = {}
    for e in reg.ENTRIES:
        have.setdefault(e.paper, ([], []))[0 if e.kind == "table" else 1].append(e.number)
    expected = {  # the issue's list, typed here independently of registry.EXPECTED
        "extra": (["1", "2", "3", "4", "5"], ["4", "6", "7", "8", "9", "10", "11"]),
        "pml": (["1", "2", "3", "4", "5", "6"], ["4", "7", "8", "9", "10", "11", "12", "13", "14", "29"]),
        "palora": (["1", "2"], ["3", "4", "5", "6"]),
        "sam_mtl": (["1", "2", "3", "4", "5", "6", "7"], ["2", "3"]),
        "avgnorm": (["II", "III", "VI", "VII"], ["7", "8", "9"]),
    }
    assert set(have) == set(expected)
    for paper, (tables, figures) in expected.items():
        assert sorted(have[paper][0]) == sorted(tables), paper
        assert sorted(have[paper][1]) == sorted(figures), paper
    assert reg.EXPECTED == expected
    assert len({e.id for e in reg.ENTRIES}) == len(reg.ENTRIES) == 50


def test_registry_rows_are_well_formed():
    scripts = {"stl", "baselines", "pml", "palora", "sam_mtl", "extra_nurbs", "avgnorm", "pfl"}
    for e in reg.ENTRIES:
        assert e.source and e.title and e.blocks, e.id
        assert e.number in e.source or e.number.lower() in e.source.lower(), e.id
        for b in e.blocks:
            assert b.rows and b.columns, e.id
            keys = [c.key for c in b.columns]
            assert len(keys) == len(set(keys)), e.id
            for r in b.rows:
                assert len(r.paper) <= len(b.columns), (e.id, r.label)
                if r.method is not None:
                    assert r.method.script in scripts, (e.id, r.label)
                for v in r.paper:
                    assert v is None or isinstance(v, (int, float)) or (isinstance(v, tuple) and len(v) == 2), (e.id, r.label, v)


def _paper(entry_id, label, col, block=0):
    b = reg.BY_ID[entry_id].blocks[block]
    r = next(r for r in b.rows if r.label == label)
    return r.paper[[c.key for c in b.columns].index(col)]


def test_paper_numbers_spot_checks():
    assert _paper("extra_table3", "LS", "dm") == 22.60
    assert _paper("extra_table3", "EXTRA-F", "dm") == (1.63, 1.6)
    assert _paper("extra_table2", "Nash-MTL", "w11") == 28.40
    assert _paper("extra_table1", "IMTL-G", "mr") == 6.45
    assert _paper("pml_table1", "PML (ours)", "rel") == 52.559
    assert _paper("pml_table4", "Nash-MTL", "hv", block=1) == 0.650
    assert _paper("pml_table6", "MGDA", "eth") == (74.06, 2.66)
    assert _paper("palora_table2", "PaLoRA [ours]", "miou") == 38.27
    assert _paper("palora_table1", "PaMaL", "dp") == 100
    assert _paper("sam_mtl_table4", "F-IMTL", "dm") == 1.87
    assert _paper("sam_mtl_table2", "F-CAGrad", "err") == 8.22
    assert _paper("avgnorm_table6", "ours (AvgNorm)", "wedge") == 114.00
    assert _paper("avgnorm_table2", "FairGrad", "dm", block=1) == 1.17


def test_typed_paper_numbers_are_self_consistent():
    """Typos in the typed-in numbers: PML Tables 2-3 give per-seed HV with their mean, max and
    (population) std; SAM-MTL Tables 1 and 6 give two accuracies and their average."""
    for eid in ("pml_table2", "pml_table3"):
        for r in reg.BY_ID[eid].blocks[0].rows:
            if r.paper[0] is None:
                continue
            s = np.array(r.paper[:3])
            assert abs(s.mean() - r.paper[3]) <= 1.01e-4, (eid, r.label)  # seeds and mean both rounded to 4 digits
            assert abs(s.max() - r.paper[4]) <= 1e-9, (eid, r.label)
            assert abs(s.std() - r.paper[5]) <= 1.5e-4, (eid, r.label)
    for eid in ("sam_mtl_table1", "sam_mtl_table6"):
        for b in reg.BY_ID[eid].blocks:
            for r in b.rows:
                a, c, avg = [v[0] if isinstance(v, tuple) else v for v in r.paper]
                assert abs((a + c) / 2 - avg) <= 0.0151, (eid, b.dataset, r.label)


def test_select_by_id_paper_and_pattern():
    assert [e.id for e in reg.select(["pml_table4"])] == ["pml_table4"]
    assert {e.paper for e in reg.select(["palora"])} == {"palora"}
    assert all(e.id.startswith("pml_figure") for e in reg.select(["pml_figure*"]))
    assert len(reg.select(["extra_table1,extra_table2"])) == 2
    with pytest.raises(ValueError, match="matches no table"):
        reg.select(["nonsense"])


# --------------------------------------------------------------------------------------------
# Aggregation on hand-made metrics.json files
# --------------------------------------------------------------------------------------------
def _write_metrics(job, tasks, **extra):
    os.makedirs(job.out, exist_ok=True)
    with open(os.path.join(job.out, "metrics.json"), "w") as fh:
        json.dump({"tasks": tasks, **extra}, fh)


def _acc(a, b):
    return {"left": {"acc": a, "loss": 0.1}, "right": {"acc": b, "loss": 0.2}}


def _toy_entry():
    cols = [Col("t1", "Task 1", "acc", 0, 100, True, 2), Col("t2", "Task 2", "acc", 1, 100, True, 2),
            Col("hv", "HV", "hv", None, 1, True, 4), reg.MR, reg.DM]
    rows = [R("STL", STL, (None,) * 5, role="stl"), R("LS", BL("ls"), (91.0, 80.0, None, 2.0, 0.1)),
            R("MGDA", BL("mgda"), (95.0, 85.0, None, 1.0, -3.0))]
    return Entry("test_table", "pml", "table", "9", "hand-made", "test", [Block("multimnist-lite", cols, rows, hv=reg.ACC2_HV)],
                 seeds=(0, 1))


def test_aggregation_mean_std_delta_m_mean_rank_hypervolume(tmp_path):
    opts = runner.Options(results=str(tmp_path), data_root=str(tmp_path / "data"))
    (ep,), jobs = runner.plan([_toy_entry()], opts)
    bp = ep.blocks[0]
    stl, ls, mgda = (rp.jobs for rp in bp.rows)
    assert bp.status == "run" and len(jobs) == 6
    _write_metrics(stl[0], _acc(0.90, 0.80))
    _write_metrics(stl[1], _acc(0.92, 0.82))
    _write_metrics(ls[0], _acc(0.91, 0.81))
    _write_metrics(ls[1], _acc(0.93, 0.79))
    _write_metrics(mgda[0], _acc(0.95, 0.85))  # seed 1 of MGDA never finished

    d = aggregate.BlockData(bp)
    assert d.reference == {"left": {"acc": 0.91, "loss": 0.1}, "right": {"acc": 0.81, "loss": 0.2}}
    v = d.values
    # mean and sample std of LS's task-1 accuracy, in percent
    m, sd = aggregate.stat(v[1]["t1"], "mean")
    assert m == pytest.approx(92.0) and sd == pytest.approx(math.sqrt(2) * 1.0)
    # Delta-m% per seed against the STL mean (0.91, 0.81): seed 0 exactly 0; seed 1 by hand
    assert v[1]["dm"][0] == pytest.approx(0.0, abs=1e-12)
    assert v[1]["dm"][1] == pytest.approx(((-(0.93 - 0.91) / 0.91) + (-(0.79 - 0.81) / 0.81)) / 2 * 100)
    assert v[2]["dm"][0] == pytest.approx(((-(0.95 - 0.91) / 0.91) + (-(0.85 - 0.81) / 0.81)) / 2 * 100)
    assert list(v[2]["t1"]) == [0]  # only the finished seed counts
    # Mean Rank over LS and MGDA (STL excluded): MGDA is better on both tasks
    assert v[2]["mr"]["mean"] == 1.0 and v[1]["mr"]["mean"] == 2.0
    # hypervolume of a single point w.r.t. (0, 0) is the product of the accuracies
    assert v[1]["hv"][0] == pytest.approx(0.91 * 0.81)

    md = aggregate.entry_markdown(ep, [d], smoke=False)
    assert "| LS | 2/2 | 92.00 ± 1.41 (91.00) | 80.00 ± 1.41 (80.00) |" in md
    assert "| MGDA [" in md and "| 1/2 |" in md and "not finished" in md
    assert "our STL runs (2 seed(s))" in md


def test_pooled_seed_hypervolume_on_hand_made_points(tmp_path):
    """PML Table 4's baseline HV pools the seeds' points into one front: larger than acc_1 x acc_2 of
    the seed mean."""
    entry = _toy_entry()
    entry.blocks[0].columns.append(reg.HV_POOLED_COL.__class__("hvp", "HV pooled", "hv_pooled", None, 1, True, 4))
    (ep,), _ = runner.plan([entry], runner.Options(results=str(tmp_path)))
    ls = ep.blocks[0].rows[1].jobs
    _write_metrics(ls[0], _acc(0.91, 0.81))
    _write_metrics(ls[1], _acc(0.93, 0.79))
    d = aggregate.BlockData(ep.blocks[0])
    pooled = 0.91 * 0.81 + 0.93 * 0.79 - 0.91 * 0.79  # union of the two seeds' boxes from (0, 0)
    assert aggregate.stat(d.values[1]["hvp"], "mean")[0] == pytest.approx(pooled)
    assert pooled > 0.92 * 0.80  # the product of the seed-mean accuracies
    t4 = reg.select(["pml_table4"])[0]
    assert all(any(c.metric == "hv_pooled" for c in b.columns) for b in t4.blocks)


def test_front_best_and_front_hypervolume(tmp_path):
    opts = runner.Options(results=str(tmp_path))
    entry = _toy_entry()
    entry.blocks[0].rows[1].pick = "front_best"
    (ep,), _ = runner.plan([entry], opts)
    job = ep.blocks[0].rows[1].jobs[0]
    front = [{"preference": [1, 0], "tasks": _acc(0.97, 0.50)}, {"preference": [0.5, 0.5], "tasks": _acc(0.90, 0.90)},
             {"preference": [0, 1], "tasks": _acc(0.40, 0.96)}]
    _write_metrics(job, _acc(0.90, 0.90), front=front)
    d = aggregate.BlockData(ep.blocks[0])
    assert d.values[1]["t1"][0] == pytest.approx(97.0) and d.values[1]["t2"][0] == pytest.approx(96.0)
    # union of three boxes from (0, 0)
    hv = 0.97 * 0.50 + 0.90 * 0.90 + 0.40 * 0.96 - 0.90 * 0.50 - 0.40 * 0.90
    assert d.values[1]["hv"][0] == pytest.approx(hv)


def test_delta_m_published_reference_and_sign():
    ref = aggregate.published_reference("cityscapes")
    specs = aggregate.task_specs("cityscapes", ["segmentation", "depth"])
    same = {"segmentation": {"miou": ref["segmentation"]["miou"], "pixacc": ref["segmentation"]["pixacc"]},
            "depth": {"abs_err": ref["depth"]["abs_err"], "rel_err": ref["depth"]["rel_err"]}}
    from common.metrics import delta_m

    assert delta_m(same, ref, specs) == pytest.approx(0.0)
    worse = json.loads(json.dumps(same))
    worse["depth"]["abs_err"] *= 1.4  # +40% error on one of four metrics: Delta-m% = +10
    assert delta_m(worse, ref, specs) == pytest.approx(10.0)


# --------------------------------------------------------------------------------------------
# Planning: stand-ins, absent data, dependencies, SLURM
# --------------------------------------------------------------------------------------------
def test_absent_data_standin_and_skip_reasons(tmp_path):
    opts = runner.Options(results=str(tmp_path / "res"), data_root=str(tmp_path / "empty"))
    plans, _ = runner.plan([reg.BY_ID["pml_table4"], reg.BY_ID["pml_table1"], reg.BY_ID["avgnorm_table7"]], opts)
    mm, census = plans[0].blocks
    assert mm.status == "standin" and mm.dataset == "multimnist-lite" and "MNIST" in mm.reason
    assert census.status == "absent" and "census" in census.reason and "adult.data" in census.reason
    assert plans[1].blocks[0].status == "absent" and "cityscapes" in plans[1].blocks[0].reason
    assert plans[2].blocks[0].status == "absent" and "PASCAL_MT" in plans[2].blocks[0].reason
    text = aggregate.summary(plans, {})
    assert "pml_table1" in text and "cityscapes" in text and "PASCAL_MT" in text
    opts.standins = False
    plans, _ = runner.plan([reg.BY_ID["pml_table4"]], opts)
    assert plans[0].blocks[0].status == "absent"


def test_dependency_waves_for_pareto_expansion(tmp_path):
    opts = runner.Options(results=str(tmp_path), smoke=True)
    _, jobs = runner.plan([reg.BY_ID["palora_figure4"]], opts)
    expansion = [j for j in jobs.values() if "--init-ckpt" in j.flags]
    assert expansion
    for j in expansion:
        ckpt = j.flags[j.flags.index("--init-ckpt") + 1]
        (dep,) = j.deps
        assert ckpt == os.path.join(jobs[dep].out, "checkpoint.pt") and jobs[dep].script == "baselines"
    waves = runner.waves(jobs)
    order = {j.key: k for k, w in enumerate(waves) for j in w}
    assert all(order[d] < order[j.key] for j in expansion for d in j.deps)


def test_unknown_flag_or_missing_script_is_reported_not_run(tmp_path):
    bad = Entry("t_bad", "pml", "table", "9", "x", "test", [Block("multimnist-lite", [reg.DM], [
        R("bogus flag", BL("ls", "--no-such-flag", "1")), R("no script", reg.Method("does_not_exist"))])])
    (ep,), jobs = runner.plan([bad], runner.Options(results=str(tmp_path)))
    r1, r2 = ep.blocks[0].rows
    assert "does not accept --no-such-flag" in r1.skipped
    assert "method not available yet" in r2.skipped
    assert all(j.status == "skipped" for j in jobs.values())


def _slurm_args(res, *extra):
    return ["--only", "pml_table5", "--results", res, "--seeds", "0,1", "--slurm", *extra]


def test_slurm_writes_one_array_task_per_unfinished_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "cluster_gpus", lambda: None)
    res = str(tmp_path / "res")
    opts = runner.options_from(runner.parse_args(["--only", "pml_table5", "--results", res, "--seeds", "0,1"]))
    _, jobs = runner.plan([reg.BY_ID["pml_table5"]], opts)
    keys = list(jobs)
    assert len(keys) == 20  # 10 rows x 2 seeds
    for k in keys[:3]:  # three runs already finished
        _write_metrics(jobs[k], {"a": {"acc": 1.0}})
    assert runner.main(_slurm_args(res)) == 0
    folder = os.path.join(res, "slurm")
    script = open(os.path.join(folder, "wave0.sbatch")).read()
    assert not os.path.exists(os.path.join(folder, "wave1.sbatch"))  # no dependencies: one wave
    assert "#SBATCH --array=0-16" in script
    # the runs are named by key inside the script (sbatch keeps its own copy), not by a line of a file
    embedded = script.split("KEYS=(\n")[1].split("\n)")[0].split()
    assert embedded == keys[3:]
    assert "SLURM_ARRAY_TASK_ID" in script and "--slurm-task" in script
    # the generating interpreter, absolute paths, one output per run named after it
    assert f"PY={sys.executable}\n" in script and os.path.isabs(sys.executable)
    assert f"#SBATCH --output={folder}/logs/wave0_%A_%a.out" in script
    assert f"OUT={folder}/logs/${{KEY//\\//__}}.out" in script
    assert f"cd {REPO}" in script
    # --device auto where sinfo cannot tell: one GPU, said so in the header with how to drop it
    assert "#SBATCH --gres=gpu:1" in script and "--slurm-gres none on a cluster without" in script
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH --mem=32G" in script and "#SBATCH --time=24:00:00" in script
    tasks = open(os.path.join(folder, "tasks.txt")).read().splitlines()
    assert [t.split("\t")[1] for t in tasks] == keys[3:]
    for k in keys[3:]:
        spec = json.load(open(runner.task_spec_path(res, k)))
        assert spec["argv"][0] == sys.executable and "--resume" in spec["argv"] and spec["out"] == jobs[k].out
    submit = open(os.path.join(folder, "submit.sh")).read()
    assert 'sbatch --parsable "$@" "$D/wave0.sbatch"' in submit and "--dependency=afterany:" not in submit
    # the aggregation command of the header never starts runs
    assert f"bash run_all.sh --only pml_table5 --results {res} --seeds 0,1 --no-run" in script


def test_slurm_resources_follow_the_device_and_the_flags(tmp_path, monkeypatch):
    res = str(tmp_path / "res")
    wave0 = lambda: open(os.path.join(res, "slurm", "wave0.sbatch")).read()  # noqa: E731
    monkeypatch.setattr(runner, "cluster_gpus", lambda: False)  # sinfo lists no GPU: auto runs on the CPU
    assert runner.main(_slurm_args(res)) == 0
    assert "#SBATCH --gres" not in wave0() and "sinfo lists no GPU" in wave0()
    assert runner.main(_slurm_args(res, "--device", "cpu")) == 0
    assert "#SBATCH --gres" not in wave0()
    # a GPU device needs no GPU on the machine that writes the scripts; cuda:N is cuda:0 of the task's GPU
    assert runner.main(_slurm_args(res, "--device", "cuda:1")) == 0
    assert "#SBATCH --gres=gpu:1" in wave0()
    spec = json.load(open(runner.task_spec_path(res, open(os.path.join(res, "slurm", "wave0.keys")).readline().strip())))
    assert spec["argv"][spec["argv"].index("--device") + 1] == "cuda"
    assert runner.main(_slurm_args(res, "--device", "cuda", "--slurm-gres", "none", "--slurm-cpus", "2", "--slurm-mem", "3G",
                                   "--slurm-time", "1-00:00:00", "--slurm-partition", "gpu",
                                   "--sbatch-args", "--account=me --qos high")) == 0
    s = wave0()
    assert "#SBATCH --gres" not in s
    for line in ("--cpus-per-task=2", "--mem=3G", "--time=1-00:00:00", "--partition=gpu", "--account=me", "--qos high"):
        assert f"#SBATCH {line}\n" in s, line
    # --timeout sets the default --time
    assert runner.main(_slurm_args(res, "--timeout", "3600")) == 0
    assert "#SBATCH --time=01:05:00" in wave0()


def _smoke_slurm(res):
    assert runner.main(["--smoke", "--only", "palora_figure4", "--results", res, "--slurm"]) == 0
    folder = os.path.join(res, "slurm")
    return [open(os.path.join(folder, f"wave{k}.keys")).read().split() for k in (0, 1)]


def test_slurm_waves_chain_and_a_task_checks_its_inputs(tmp_path, capsys):
    res = str(tmp_path / "res")
    w0, w1 = _smoke_slurm(res)
    folder = os.path.join(res, "slurm")
    assert len(w0) == 2 and len(w1) == 2
    submit = open(os.path.join(folder, "submit.sh")).read()
    assert '--dependency=afterany:"$jid" "$@" "$D/wave1.sbatch"' in submit
    assert "#SBATCH --array=0-1" in open(os.path.join(folder, "wave1.sbatch")).read()
    # a wave-1 task whose input run did not finish stops at once with its own status and a line naming it
    capsys.readouterr()
    assert runner.main(["--slurm-task", w1[0], "--results", res]) == runner.SLURM_DEP_EXIT
    assert f"not started: it starts from {w0[0]}, which did not finish" in capsys.readouterr().out
    # a finished run is not run again (a resubmitted or stale task)
    _, jobs = runner.plan([reg.BY_ID["palora_figure4"]], runner.options_from(runner.parse_args(
        ["--smoke", "--only", "palora_figure4", "--results", res])))
    _write_metrics(jobs[w1[0]], {"a": {"acc": 1.0}})
    assert runner.main(["--slurm-task", w1[0], "--results", res]) == 0
    assert "is finished already" in capsys.readouterr().out
    assert runner.main(["--slurm-task", "no/such/key", "--results", res]) == 2
    # regeneration drops the old wave scripts but keeps the task files queued tasks still read
    assert runner.main(["--only", "pml_table5", "--seeds", "0", "--results", res, "--slurm", "--device", "cpu"]) == 0
    assert not os.path.exists(os.path.join(folder, "wave1.sbatch"))
    assert os.path.isfile(runner.task_spec_path(res, w1[1]))


def test_slurm_smoke_task_runs_what_the_local_smoke_runner_runs(tmp_path, monkeypatch):
    """--slurm --smoke: the task runs the local runner's smoke run (same command, smoke model
    widths through the same launcher, the smoke timeout, checkpoint pruning except for inputs)."""
    res = str(tmp_path / "res")
    w0, w1 = _smoke_slurm(res)
    local = runner.options_from(runner.parse_args(["--smoke", "--only", "palora_figure4", "--results", res,
                                                   "--data-root", os.path.join(REPO, "data")]))  # --slurm: absolute paths
    _, jobs = runner.plan([reg.BY_ID["palora_figure4"]], local)
    seen = []
    monkeypatch.setattr(runner, "execute", lambda waves, opts, n, timeout, keep=(): seen.append((waves, opts, n, timeout, keep)))
    for key in w0 + w1:
        spec = json.load(open(runner.task_spec_path(res, key)))
        assert spec["argv"] == jobs[key].argv(sys.executable, runner.extra_flags(jobs[key], local))
        for d in jobs[key].deps:  # its inputs have finished
            _write_metrics(jobs[d], {"a": {"acc": 1.0}})
        runner.main(["--slurm-task", key, "--results", res])
        (job,), = seen[-1][0]
        opts, timeout, keep = seen[-1][1], seen[-1][3], seen[-1][4]
        assert opts.smoke and opts.device == "cpu" and timeout == runner.SMOKE_TIMEOUT
        assert job.argv(opts.python, runner.extra_flags(job, opts)) == spec["argv"]
        assert (key in keep) == (key in w0)  # an input of wave 1 keeps its checkpoint


def test_aggregation_never_starts_runs_that_slurm_has(tmp_path, monkeypatch, capsys):
    res = str(tmp_path / "res")
    w0, w1 = _smoke_slurm(res)
    with open(os.path.join(res, "slurm", "submitted.tsv"), "w") as fh:
        fh.write(f"g1\t77\t0\t{w0[0]}\ng1\t77\t1\t{w0[1]}\n")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    squeue = bin_ / "squeue"
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    started = []
    monkeypatch.setattr(runner, "execute", lambda waves, *a, **k: started.extend(j.key for w in waves for j in w))
    monkeypatch.setattr(aggregate, "write_all", lambda plans, opts: {"tables": 0, "figures": 0})
    args = ["--smoke", "--only", "palora_figure4", "--results", res]

    squeue.write_text("#!/bin/sh\necho '77 0'\n")  # task 0 queued, task 1 gone
    squeue.chmod(0o755)
    capsys.readouterr()
    runner.main(args + ["--list"])
    out = capsys.readouterr().out
    assert f"slurm     {w0[0]}" in out and "queued or running under SLURM (job 77_0)" in out
    assert f"slurm     {w1[0]}" in out  # and the run that starts from it
    assert f"todo      {w0[1]}" in out
    runner.main(args)
    assert w0[0] not in started and w1[0] not in started and w0[1] in started
    assert "2 run(s) left to SLURM" in capsys.readouterr().out

    squeue.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1\n")
    started.clear()
    runner.main(args)
    assert set(started) == set(w0 + w1)  # every job has left the queue

    squeue.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1\n")
    started.clear()
    runner.main(args)
    assert started == []  # squeue cannot tell: every submitted unfinished run (and its dependant) stays SLURM's
    out = capsys.readouterr().out
    assert "Unable to contact slurm controller" in out and "delete that file once those jobs are gone" in out


def test_list_shows_table_ids_and_the_tables_that_cannot_run(tmp_path, capsys):
    empty = str(tmp_path / "empty")
    assert runner.main(["--list", "--only", "extra_table3,pml_table4", "--results", str(tmp_path / "r"), "--data-root", empty]) == 0
    out = capsys.readouterr().out
    assert "extra_table3 (cityscapes): needs cityscapes under" in out and "MTAN-preprocessed" in out
    assert "pml_table4 (census): needs census under" in out and "adult.data" in out
    assert "pml_table4 (multimnist): multimnist is absent" in out
    assert "todo      baselines_method-ls/multimnist-lite/seed0  [pml_table4]" in out


def test_without_slurm_flags():
    argv = ["--smoke", "--slurm", "--slurm-cpus", "2", "--slurm-mem=3G", "--only", "x", "--sbatch-args", "--qos a"]
    assert runner.without_slurm_flags(argv) == ["--smoke", "--only", "x"]


# --------------------------------------------------------------------------------------------
# Tiny real-format data, the command line, and a reduced smoke run
# --------------------------------------------------------------------------------------------
def test_tiny_datasets_load_through_the_real_loaders(tmp_path):
    from common.data import load_dataset
    from reproduce.tiny_data import TINY_DATASETS, make_all

    make_all(str(tmp_path))
    tasks = {"census": 2, "utkface": 3, "celeba": 40, "cityscapes": 2, "nyuv2": 3, "nyud": 4, "pascal-context": 5}
    for name in TINY_DATASETS:
        d = load_dataset(name, str(tmp_path))
        assert d.num_tasks == tasks[name] and len(d.train) > 0 and len(d.test) > 0, name
    assert (tmp_path / "cityscapes" / "val" / "label_7" / "0.npy").exists()


def test_bad_flags_exit_2_with_one_line():
    bad_device = ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"]
    for args in (["--jobs", "0"], ["--only", "nonsense"], ["--seeds", "a,b"], bad_device, ["--slurm-cpus", "2"],
                 ["--slurm", "--slurm-mem", "lots"], ["--slurm", "--slurm-time", "soon"], ["--slurm", "--sbatch-args", "qos=x"],
                 ["--slurm", "--slurm-cpus", "0"], ["--slurm", "--list"]):
        # the running interpreter, not python3 from PATH (a virtual environment need not be activated)
        p = subprocess.run(["bash", os.path.join(REPO, "run_all.sh"), *args], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHON=sys.executable))
        assert p.returncode == 2, args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("run_all.sh: error:"), p.stderr


def test_reduced_smoke_run_writes_every_table_and_figure(tmp_path):
    """--smoke --only one table: its runs, then every table / figure file of the registry."""
    res = str(tmp_path / "smoke")
    assert runner.main(["--smoke", "--only", "pml_table3", "--jobs", "2", "--results", res]) == 0
    for e in reg.ENTRIES:
        assert os.path.isfile(os.path.join(res, "tables", f"{e.id}.md")), e.id
        if e.kind == "figure":
            assert os.path.getsize(os.path.join(res, "figures", f"{e.id}.png")) > 1000, e.id
    readme = open(os.path.join(res, "README.md")).read()
    assert all(f"tables/{e.id}.md" in readme for e in reg.ENTRIES)
    md = open(os.path.join(res, "tables", "pml_table3.md")).read()
    assert "Smoke run" in md and "tiny census files" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| W = 2, λ = 0 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1/1" and cells[2].endswith("(0.6517)") and 0 < float(cells[2].split()[0]) <= 1
    # finished runs are reused: nothing left to run
    opts = runner.options_from(runner.parse_args(["--smoke", "--only", "pml_table3", "--results", res]))
    _, jobs = runner.plan(reg.select(["pml_table3"]), opts)
    assert jobs and all(j.status == "finished" for j in jobs.values())


def test_job_slots_spread_over_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpus = runner.visible_gpus()
    assert gpus == ["3", "5"]
    assert [runner.job_env(k, gpus, 4, "auto")["CUDA_VISIBLE_DEVICES"] for k in range(4)] == ["3", "5", "3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runner.visible_gpus() == []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runner.job_env(1, [], 2, "cpu")["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_extra_table2_note_figures_and_avgnorm_mtan_notes():
    """The figures of EXTRA_T2_DM_NOTE, recomputed from the paper's rows; the MTAN blocks say their Δm% differs."""
    from common.metrics import delta_m
    from common.real_data import NYUV2_REFERENCE

    b = reg.select(["extra_table2"])[0].blocks[0]
    specs = aggregate.task_specs("nyuv2", ["segmentation", "depth", "normal"])

    def tasks_of(row):
        out = {}
        for c, v in zip(b.columns, row.paper):
            if c.task is not None and v is not None:
                out.setdefault(specs[c.task].name, {})[c.metric] = v / c.scale
        return out

    rows = {r.label: r for r in b.rows}
    for label, ours in (("LS", 5.75), ("CAGrad", 0.42), ("IMTL", -0.47)):
        assert round(delta_m(tasks_of(rows[label]), NYUV2_REFERENCE, specs), 2) == ours
    indep = tasks_of(rows["Independent"])
    exact = [r for r in b.rows[1:] if r.paper[-1] is not None and not isinstance(r.paper[-1], tuple)
             and round(delta_m(tasks_of(r), indep, specs), 2) == r.paper[-1]]
    assert len(exact) == 8 and "not reproducible" in b.note
    for name in ("avgnorm_table2", "avgnorm_table6", "avgnorm_table7"):
        for blk in reg.select([name])[0].blocks:
            assert ("ResNet-18 single-task row" in blk.note) == ("MTAN" in blk.title), (name, blk.title)
