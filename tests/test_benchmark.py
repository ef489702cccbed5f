"""Tests of reproduce/benchmark.py: the Jacobian variants agree, synthetic batches are valid, the
ratios are computed as defined, bad flags fail cleanly, and end-to-end runs on CPU write the JSON
and the table (no timing assertions)."""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common.device import UsageError  # noqa: E402
from reproduce import benchmark as B  # noqa: E402


def bench(argv):
    args = B.parse_args(argv)
    spec, methods, dev = B.resolve(args)
    return B.Bench(args, spec, dev), methods


def test_jacobian_variants_agree_with_per_task_gradients():
    b, _ = bench(["--device", "cpu", "--batch-size", "8"])
    model = b.model().eval()  # no dropout: every variant sees the same function
    shared = model.shared_parameters()
    losses = b.losses(model(b.x))
    expected = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)])
                            for t in range(b.T)])
    assert expected.shape == (2, 21330)  # LeNet encoder
    for v in B.JACOBIAN_VARIANTS:
        G = B.jacobian_fn(v, model, b)()
        assert G.shape == expected.shape, v
        assert torch.allclose(G, expected, rtol=1e-4, atol=1e-6), v


def test_functional_jacobians_keep_batchnorm_statistics_moving():
    b, _ = bench(["--device", "cpu", "--shape", "cityscapes-segnet", "--filters", "2,2,2,2,2", "--resolution", "32x32",
                  "--batch-size", "2"])
    model = b.model()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for v in ("func-vjp", "func-vmap-grad"):
        before = bn.running_mean.clone(), int(bn.num_batches_tracked)
        G = B.jacobian_fn(v, model, b)()
        assert G.shape[0] == 2 and torch.isfinite(G).all()
        assert not torch.equal(bn.running_mean, before[0]), v  # the train-mode forward updated the statistics
        assert int(bn.num_batches_tracked) == before[1] + 1, v


@pytest.mark.parametrize("shape", ["nyuv2-mtan", "celeba", "multimnist"])
def test_synthetic_batch_is_valid_for_every_task_kind(shape):
    spec = dict(B.SHAPES[shape], batch=3)
    if spec["model"] in ("segnet", "mtan"):
        spec["input"] = (3, 32, 64)
    x, ys = B.synthetic_batch(spec, torch.device("cpu"))
    assert x.shape == (3, *spec["input"])
    assert len(ys) == len(spec["tasks"])
    for t, y in zip(spec["tasks"], ys):
        if t.kind == "seg":
            assert y.shape == (3, 32, 64) and y.min() >= -1 and y.max() < t.out_dim
        elif t.kind == "normal":
            assert torch.allclose(y.norm(dim=1), torch.ones(3, 32, 64), atol=1e-5)
        elif t.kind == "binary":
            assert set(y.unique().tolist()) <= {0.0, 1.0}
        elif t.kind == "class":
            assert y.shape == (3,) and y.max() < t.out_dim
        elif t.kind == "depth":
            assert y.shape == (3, 1, 32, 64) and (y == 0).any() and (y >= 0).all()
    data = B.synthetic_data(spec)
    assert data.num_tasks == len(ys) and data.input_shape == spec["input"]


def test_ratios_hand_computed():
    rows = [{"method": "ls", "median_ms": 10.0, "peak_memory_mb": 100.0},
            {"method": "bound", "median_ms": 20.0, "peak_memory_mb": 150.0},
            {"method": "mgda", "median_ms": 23.0, "peak_memory_mb": 160.0},
            {"method": "palora", "median_ms": 60.0, "peak_memory_mb": None, "ms_per_forward_pass": 12.0},
            {"method": "pml", "skipped": "cannot import"}]
    B.add_ratios(rows)
    assert rows[0]["x_ls"] == 1.0 and rows[0]["x_bound"] is None  # LS is not a per-task-gradient method
    assert rows[1]["x_bound"] == 1.0 and rows[1]["x_ls"] == 2.0
    assert rows[2]["x_bound"] == pytest.approx(1.15) and rows[2]["memory_x_ls"] == pytest.approx(1.6)
    assert rows[3]["memory_x_ls"] is None and rows[3]["forward_pass_x_ls"] == pytest.approx(1.2)
    assert "x_ls" not in rows[4]


def test_extra_groups_partition_the_tasks():
    assert B.extra_groups(2) == ([0], [1], [])
    for T in (3, 7, 40):
        e1, e2, e3 = B.extra_groups(T)
        assert sorted(e1 + e2 + e3) == list(range(T)) and e1 and e2


@pytest.mark.parametrize("argv, words", [
    (["--filters", "8,16,32,64,64"], "segnet / mtan"),
    (["--shape", "cityscapes-segnet", "--filters", "8,16"], "5 positive integers"),
    (["--shape", "cityscapes-segnet", "--resolution", "100x128"], "multiples of 32"),
    (["--resolution", "big"], "HxW"),
    (["--methods", "ls,nosuch"], "nosuch"),
    (["--steps", "0"], "--steps"),
    (["--device", "cuda:99"], "cuda"),
])
def test_bad_input_is_a_usage_error(argv, words):
    if argv == ["--device", "cuda:99"] and torch.cuda.device_count() > 99:
        pytest.skip("that many GPUs")
    with pytest.raises(UsageError, match=words.replace("+", r"\+")):
        B.resolve(B.parse_args(argv))


def test_end_to_end_two_methods_write_json_and_table(tmp_path):
    out = tmp_path / "bench"
    report = B.main(["--methods", "ls,mgda", "--steps", "2", "--warmup", "0", "--batch-size", "16", "--device", "cpu",
                     "--jacobian", "--out", str(out), "--quiet"])
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["shape"]["batch"] == 16 and saved["device"] == "cpu" and saved["order"] == "interleaved"
    assert [r["method"] for r in saved["results"]] == ["ls", "mgda"]
    for r in saved["results"]:
        assert len(r["times_ms"]) == 2 and all(t > 0 for t in r["times_ms"])
        assert r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] and r["peak_memory_mb"] is None
        assert 0.0 <= r["solver_share"] < 1.0
    ls, mgda = saved["results"]
    assert ls["x_ls"] == 1.0 and mgda["x_ls"] == pytest.approx(mgda["median_ms"] / ls["median_ms"])
    assert mgda["x_bound"] is None  # no bound row in this run
    assert [r["variant"] for r in saved["jacobian"]] == list(B.JACOBIAN_VARIANTS)
    assert all(r["max_rel_diff_vs_loop"] < 1e-3 for r in saved["jacobian"])
    md = (out / "benchmark.md").read_text()
    assert "| mgda |" in md and "x bound" in md and "Per-task Jacobian" in md
    assert report["results"][0]["method"] == "ls"


def test_method_file_rows_run_sequentially(tmp_path):
    report = B.main(["--methods", "bare,bound,gradnorm,avgnorm,pml,palora,sam_mtl,extra", "--steps", "1", "--warmup", "0",
                     "--batch-size", "8", "--device", "cpu", "--order", "sequential", "--out", str(tmp_path), "--quiet"])
    rows = {r["method"]: r for r in report["results"]}
    for name, r in rows.items():
        assert "median_ms" in r, (name, r.get("skipped"))
    assert rows["pml"]["members"] == 2 and rows["pml"]["forward_passes"] == 4  # multimnist: W = 4
    assert rows["palora"]["forward_passes"] == 5 and rows["extra"]["forward_passes"] == 2
    assert rows["avgnorm"]["x_bound"] is not None and rows["gradnorm"]["x_bound"] is not None
    assert rows["bare"]["x_ls"] is None  # no ls row


def test_harness_tax_runs_baselines_and_a_bare_loop(tmp_path):
    report = B.main(["--methods", "ls", "--steps", "1", "--warmup", "0", "--batch-size", "8", "--device", "cpu",
                     "--harness-tax", "--tax-steps", "1,2", "--tax-repeats", "1", "--out", str(tmp_path), "--quiet"])
    h = report["harness_tax"]
    assert h["steps"] == [1, 2] and len(h["baselines_seconds"]) == 2
    t1, t2 = h["baselines_seconds"]
    # on a loaded machine the 2-step run may not be slower than the 1-step run: then it says so
    if t2 > t1:
        assert h["baselines_ls_ms_per_step"] == pytest.approx((t2 - t1) * 1e3)
    else:
        assert h["baselines_ls_ms_per_step"] is None and "were not slower" in h["not_measured"]
        assert "not measured" in (tmp_path / "benchmark.md").read_text()
    assert "Harness tax" in (tmp_path / "benchmark.md").read_text()


def test_harness_tax_report_says_what_it_could_not_measure():
    report = {"shape_name": "s", "shape": {"model": "lenet", "input": [1, 36, 36], "batch": 8, "num_tasks": 2},
              "device_name": "cpu", "device": "cpu", "versions": {"torch": "x"}, "date": "d", "warmup": 0, "steps": 1,
              "order": "sequential", "amp": False, "channels_last": False, "results": [],
              "harness_tax": {"steps": [1, 2], "baselines_ls_ms_per_step": 4.0, "bare_ms_per_step": None, "ratio": None,
                              "not_measured": "the bare loop: the 2-step runs were not slower than the 1-step runs"}}
    md = B.markdown(report)
    assert "baselines.py --method ls 4.0 ms/step, bare PyTorch loop not measured, ratio not measured" in md
    assert "(not measured: the bare loop" in md
    assert B._per_step_ms(1.0, 0.9, 1, 2) is None and B._per_step_ms(1.0, 1.5, 1, 3) == pytest.approx(250.0)


def test_bad_flag_exits_2_with_one_line(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "benchmark.json").write_text("{}")
    for argv in (["--steps", "-1"], ["--shape", "nosuch"]):
        p = subprocess.run([sys.executable, "-m", "reproduce.benchmark", *argv, "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "error" in p.stderr
    assert (out / "benchmark.json").read_text() == "{}"  # nothing in --out destroyed
