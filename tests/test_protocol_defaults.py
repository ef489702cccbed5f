"""The training protocol a script uses when it is run directly is the paper's (the official code's
where the paper is silent): augmentation, validation hold-outs, SAM-MTL's scene protocol, EXTRA's
L2 term and BatchNorm re-estimation."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import baselines  # noqa: E402
import extra_nurbs  # noqa: E402
import palora  # noqa: E402
import sam_mtl  # noqa: E402
from common.real_data import _split_counts  # noqa: E402
from common.train import Run, recompute_bn_stats  # noqa: E402


def write_tiny_cityscapes(root, n_train=12, n_val=2):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        base = root / "cityscapes" / split
        for kind in ("image", "label_7", "depth"):
            (base / kind).mkdir(parents=True)
        for i in range(n):
            np.save(base / "image" / f"{i}.npy", rng.random((32, 64, 3)))
            np.save(base / "label_7" / f"{i}.npy", rng.integers(-1, 7, (32, 64)).astype(np.float64))
            np.save(base / "depth" / f"{i}.npy", rng.random((32, 64, 1)).astype(np.float32))


def resolved(module, method, argv, tmp_path, defaults=None):
    args = module.parse_args(argv + ["--out", str(tmp_path / "out"), "--quiet", "--no-progress"])
    Run(args, method, defaults, load_data=False)
    return args


@pytest.mark.parametrize("dataset,on", [("cityscapes", True), ("nyuv2", True), ("nyud", True), ("pascal-context", True),
                                        ("multimnist-lite", False), ("celeba", False)])
def test_augmentation_default_per_dataset(tmp_path, dataset, on):
    assert resolved(baselines, "baselines", ["--dataset", dataset], tmp_path).augment is on
    assert resolved(baselines, "baselines", ["--dataset", dataset, "--no-augment"], tmp_path).augment is False
    assert resolved(baselines, "baselines", ["--dataset", dataset, "--augment"], tmp_path).augment is True


def test_scene_loader_augments_when_run_directly(tmp_path):
    write_tiny_cityscapes(tmp_path)
    args = baselines.parse_args(["--dataset", "cityscapes", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert Run(args, "baselines").data.info["augment"] is True


def test_palora_holds_out_the_papers_validation_images(tmp_path):
    cs = resolved(palora, "palora", ["--dataset", "cityscapes"], tmp_path, palora.method_defaults())
    ny = resolved(palora, "palora", ["--dataset", "nyuv2"], tmp_path, palora.method_defaults())
    assert _split_counts(2975, cs.holdout) == 500 and _split_counts(795, ny.holdout) == 95  # PaLoRA section 5
    assert resolved(palora, "palora", ["--dataset", "cityscapes", "--holdout", "0"], tmp_path, palora.method_defaults()).holdout == 0
    assert resolved(baselines, "baselines", ["--dataset", "cityscapes"], tmp_path).holdout is None  # other methods: as their codes
    # the real loader takes it: validation is a held-out part of train/, not the test files
    write_tiny_cityscapes(tmp_path)
    args = palora.parse_args(["--dataset", "cityscapes", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    run = Run(args, "palora", palora.method_defaults())
    assert run.data.info["val_is_test"] is False and len(run.data.val) == 2 and len(run.data.train) == 10


def sam_resolved(argv, tmp_path):
    args = sam_mtl.parse_args(argv + ["--out", str(tmp_path / "out"), "--quiet", "--no-progress"])
    sam_mtl.validate_method_args(args)
    Run(args, "sam_mtl", sam_mtl.DEFAULTS, load_data=False)
    return args


def test_sam_mtl_scene_defaults_are_the_official_train_py_and_average_ten_epochs(tmp_path):
    cs = sam_resolved(["--dataset", "cityscapes", "--model", "mtan"], tmp_path)
    assert (cs.batch_size, cs.lr, cs.average_last, cs.augment) == (2, 2e-4, 10, True)
    ny = sam_resolved(["--dataset", "nyuv2", "--model", "mtan"], tmp_path)
    assert (ny.batch_size, ny.lr, ny.average_last) == (2, 1e-4, 10)
    assert sam_resolved(["--model", "lenet"], tmp_path).average_last == 1


def test_sam_mtl_reports_the_mean_of_the_last_epochs(tmp_path, monkeypatch):
    tests = []
    original = sam_mtl.evaluate

    def recording(run, models, split, stl=False):
        out = original(run, models, split, stl)
        if split == "test":
            tests.append(out)
        return out
    monkeypatch.setattr(sam_mtl, "evaluate", recording)
    out = tmp_path / "avg"
    res = sam_mtl.main(["--dataset", "toy", "--aggregator", "ls", "--mode", "individual", "--epochs", "3",
                        "--batch-size", "500", "--average-last", "2", "--out", str(out), "--quiet", "--no-progress"])
    assert len(tests) == 2 and res["test_epochs_averaged"] == [2, 3]
    for task, metrics in res["tasks"].items():
        for k, v in metrics.items():
            assert v == pytest.approx((tests[0][task][k] + tests[1][task][k]) / 2)
    assert json.loads((out / "metrics.json").read_text())["test_epochs_averaged"] == [2, 3]


def test_extra_defaults_follow_the_official_code():
    args = extra_nurbs.parse_args([])
    assert args.l2 == 0.0 and args.bn_batches is None
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(2)

        def forward(self, x):
            seen.append(x)
            return self.bn(x)

    net = Net()
    batches = [(torch.full((4, 2), float(i)) + torch.arange(4.0)[:, None], None) for i in range(60)]
    recompute_bn_stats(net, net, iter(batches), args.bn_batches)
    assert len(seen) == 60  # every training batch, not the first 50
    assert torch.allclose(net.bn.running_mean, torch.full((2,), 29.5 + 1.5))


def test_sam_mtl_f_mgda_on_scene_datasets_aggregates_unit_gradients(tmp_path):
    assert sam_resolved(["--dataset", "nyuv2", "--model", "mtan", "--aggregator", "mgda"], tmp_path).unit_gradients is True
    assert sam_resolved(["--dataset", "cityscapes", "--model", "mtan", "--aggregator", "mgda"], tmp_path).unit_gradients is True
    assert sam_resolved(["--dataset", "nyuv2", "--model", "mtan", "--aggregator", "pcgrad"], tmp_path).unit_gradients is False
    assert sam_resolved(["--dataset", "nyuv2", "--model", "mtan", "--aggregator", "mgda", "--mode", "direct"],
                        tmp_path).unit_gradients is False
    assert sam_resolved(["--model", "lenet", "--aggregator", "mgda"], tmp_path).unit_gradients is False
    # by hand: g^1 = (3, 0), g^2 = (0, 1) -> unit (1, 0), (0, 1): min-norm weights (1/2, 1/2), g^loss = (1/2, 1/2)
    # (on the raw rows MGDA would give w = (0.1, 0.9), g^loss = (0.3, 0.9)); h^1 = (0, 2), h^2 = (0, -4) -> unit
    # (0, 1), (0, -1): g^flat = 0
    g = sam_mtl.SAMGrads(torch.ones(2), torch.ones(2), torch.tensor([[3.0, 0.0], [0.0, 1.0]]),
                         torch.tensor([[3.0, 2.0], [0.0, -3.0]]), [[]] * 2, [[]] * 2, torch.zeros(2), torch.zeros(2))
    u = sam_mtl.unit_rows(g)
    d, parts, _ = sam_mtl.combine("individual", sam_mtl.make_aggregators("mgda", 2, "individual"), u)
    assert torch.allclose(parts["loss"], torch.tensor([0.5, 0.5]), atol=1e-6)
    assert torch.allclose(parts["flat"], torch.zeros(2), atol=1e-6) and torch.allclose(d, torch.tensor([0.5, 0.5]), atol=1e-6)
    d_raw, parts_raw, _ = sam_mtl.combine("individual", sam_mtl.make_aggregators("mgda", 2, "individual"), g)
    assert torch.allclose(parts_raw["loss"], torch.tensor([0.3, 0.9]), atol=1e-6)
