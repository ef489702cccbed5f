"""Task kinds (common/metrics.py's registry): every kind of the suite keeps its losses and metrics
(pinned numbers), the mse kind on hand-computed values, a kind registered by a user runs through
the meters, the losses, Delta-m%, the selection score and the hypervolume reference, and an unknown
kind fails with one clear error."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.data import task  # noqa: E402
from common.metrics import TaskMeter, delta_metrics, hv_reference, task_loss  # noqa: E402

torch.set_num_threads(1)


def pin_inputs():
    """Fixed random (spec args, info, index, two batches) per kind; the same on every run."""
    g = torch.Generator().manual_seed(17)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def ri(lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=g)

    def depth_t():
        t = torch.rand(2, 1, 5, 5, generator=g) + 0.5
        return t * (torch.rand(2, 1, 5, 5, generator=g) > 0.2)

    def normal_t():
        t = F.normalize(r(2, 3, 5, 5), dim=1)
        return t * (torch.rand(2, 1, 5, 5, generator=g) > 0.2)

    def sal_t(h):
        return ri(-1, 2, 2, 1, h, h).float()

    return {
        "class": (4, {}, 0, [(r(6, 4), ri(0, 4, 6)) for _ in range(2)]),
        "binary": (1, {}, 0, [(r(6, 1), ri(0, 2, 6).float()) for _ in range(2)]),
        "huber": (1, {}, 0, [(r(6, 1) * 2, r(6) * 2) for _ in range(2)]),
        "seg": (3, {}, 0, [(r(2, 3, 5, 5), ri(-1, 3, 2, 5, 5)) for _ in range(2)]),
        "depth": (1, {}, 0, [(torch.rand(2, 1, 5, 5, generator=g) * 2 - 0.2, depth_t()) for _ in range(2)]),
        "normal": (3, {}, 0, [(r(2, 3, 5, 5), normal_t()) for _ in range(2)]),
        "normal_l1": (3, {}, 0, [(r(2, 3, 5, 5), normal_t()) for _ in range(2)]),
        "saliency": (1, {}, 0, [(r(2, 1, 6, 6), sal_t(6)) for _ in range(2)]),
        "edge": (1, {"edge_thresholds": 9}, 0, [(r(2, 1, 8, 8) * 2, sal_t(8)) for _ in range(2)]),
        "toy": (2, {"c": 0.5}, 1, [(r(1, 2) * 4, torch.zeros(1)) for _ in range(2)]),
    }


# Computed with the suite as it was before the kinds moved into one registry (the if-chains of
# task_loss / TaskMeter): every metric the kind's meter computes, optional ones included, on two
# batches of pin_inputs(); its delta metrics and its hypervolume reference.
PINNED = {
    "class": {
        "losses": [1.8199702501296997, 1.7469764947891235],
        "metrics": {"acc": 0.08333333333333333},
        "spec": (("acc", True),),
        "delta": ("acc",), "hv": 0.0,
    },
    "binary": {
        "losses": [0.7928866744041443, 0.8820858597755432],
        "metrics": {"f1": 0.5333333333333333, "acc": 0.4166666666666667},
        "spec": (("f1", True), ("acc", True)),
        "delta": ("f1",), "hv": 0.0,
    },
    "huber": {
        "losses": [1.598649501800537, 1.9899641275405884],
        "metrics": {"mae": 2.2400052547454834, "huber": 1.7943068146705627},
        "spec": (("mae", False), ("huber", False)),
        "delta": ("mae",), "hv": 1.0,
    },
    "seg": {
        "losses": [1.3100838661193848, 1.1558109521865845],
        "metrics": {"miou": 0.31296571296571296, "pixacc": 0.4794520547945205},
        "spec": (("miou", True), ("pixacc", True)),
        "delta": ("miou", "pixacc"), "hv": 0.0,
    },
    "depth": {
        "losses": [0.6000803709030151, 0.6376574039459229],
        "metrics": {"abs_err": 0.6197854018792873, "rel_err": 0.6157174226714344, "rmse": 0.7074661359578225},
        "spec": (("abs_err", False), ("rel_err", False), ("rmse", False)),
        "delta": ("abs_err", "rel_err", "rmse"), "hv": 1.0,
    },
    "normal": {
        "losses": [0.9322147369384766, 0.9601680040359497],
        "metrics": {"mean": 86.382580235947, "median": 83.725, "11.25": 0.023255813953488372, "22.5": 0.023255813953488372, "30": 0.023255813953488372},
        "spec": (("mean", False), ("median", False), ("11.25", True), ("22.5", True), ("30", True)),
        "delta": ("mean", "median", "11.25", "22.5", "30"), "hv": 90.0,
    },
    "normal_l1": {
        "losses": [0.6433166265487671, 0.7443568110466003],
        "metrics": {"mean": 94.80985282017635, "median": 95.985, "11.25": 0.0, "22.5": 0.0, "30": 0.02564102564102564},
        "spec": (("mean", False), ("median", False), ("11.25", True), ("22.5", True), ("30", True)),
        "delta": ("mean", "median", "11.25", "22.5", "30"), "hv": 90.0,
    },
    "saliency": {
        "losses": [0.3155030906200409, 0.41080600023269653],
        "metrics": {"maxF": 0.6514476614699333},
        "spec": (("maxF", True),),
        "delta": ("maxF",), "hv": 0.0,
    },
    "edge": {
        "losses": [0.5286832451820374, 0.5130886435508728],
        "metrics": {"odsF": 0.5656565656565657},
        "spec": (("odsF", True),),
        "delta": ("odsF",), "hv": 0.0,
    },
    "toy": {
        "losses": [0.9045463800430298, 7.435896396636963],
        "metrics": {"loss": 4.170221388339996},
        "spec": (("loss", False),),
        "delta": ("loss",), "hv": 1.0,
    },
}


@pytest.mark.parametrize("kind", sorted(PINNED))
def test_every_kind_of_the_suite_keeps_its_losses_and_metrics(kind):
    out_dim, info, index, batches = pin_inputs()[kind]
    want = PINNED[kind]
    spec = task("t", kind, out_dim, metrics=[m for m, _ in want["spec"]])
    assert spec.metrics == want["spec"]
    losses = [float(task_loss(spec, p, t, info, index)) for p, t in batches]
    assert losses == pytest.approx(want["losses"], rel=1e-6)
    meter = TaskMeter(spec, info, index)
    for p, t in batches:
        meter.update(p, t)
    assert meter.compute() == pytest.approx(want["metrics"], rel=1e-6)
    assert tuple(delta_metrics(spec)) == want["delta"]
    assert hv_reference([spec]) == [want["hv"]]
