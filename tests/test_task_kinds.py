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


def test_mse_kind_on_hand_computed_values():
    spec = task("y", "mse")
    assert spec.metrics == (("mse", False), ("mae", False))  # mse first: the primary, lower is better
    # batch 1: errors (1, -2) -> loss (1 + 4) / 2 = 2.5; batch 2: errors (0.5, 0, 3) -> (0.25 + 9) / 3
    b1 = (torch.tensor([[1.0], [0.0]]), torch.tensor([0.0, 2.0]))
    b2 = (torch.tensor([[1.5], [1.0], [4.0]]), torch.tensor([1.0, 1.0, 1.0]))
    assert float(task_loss(spec, *b1)) == pytest.approx(2.5)
    assert float(task_loss(spec, *b2)) == pytest.approx(9.25 / 3)
    meter = TaskMeter(spec)
    for pred, target in (b1, b2):
        meter.update(pred, target)
    # pooled over the five elements of the split, never averaged per batch
    assert meter.compute() == pytest.approx({"mse": (1 + 4 + 0.25 + 0 + 9) / 5, "mae": (1 + 2 + 0.5 + 0 + 3) / 5})
    assert delta_metrics(spec) == ["mse", "mae"]
    assert hv_reference([spec]) == [1.0]  # an error: 1, as the huber MAE, depth abs_err and the toy losses


def test_mse_loss_has_the_gradient_of_the_mean_squared_error():
    pred = torch.tensor([[1.0], [0.0]], requires_grad=True)
    task_loss(task("y", "mse"), pred, torch.tensor([0.0, 2.0])).backward()
    assert pred.grad.flatten().tolist() == pytest.approx([2 * 1 / 2, 2 * -2 / 2])


@pytest.fixture
def count_kind():
    """A user's kind, registered without editing the suite: Poisson regression of counts with
    metrics mean absolute error (primary, lower is better) and exact-count accuracy."""
    from common.metrics import TASK_KINDS, TaskKind, register_kind

    def update(meter, pred, target):
        rate = pred.reshape(target.shape).exp()
        meter.sums["abs"] += float((rate - target).abs().sum())
        meter.sums["exact"] += float((rate.round() == target).sum())

    kind = register_kind(TaskKind(
        "count", lambda pred, target, info, index: F.poisson_nll_loss(pred.reshape(target.shape), target),
        metrics=(("mae", False), ("exact", True)), hv_reference=1.0, update=update,
        compute=lambda m: {"mae": m.sums["abs"] / m.n, "exact": m.sums["exact"] / m.n}))
    yield kind
    del TASK_KINDS["count"]


def test_a_user_registered_kind_runs_through_the_suite(count_kind):
    from types import SimpleNamespace

    from common.metrics import delta_m, selection_score, task_losses

    specs = [task("n", "count"), task("y", "mse")]
    data = SimpleNamespace(tasks=specs, info={})
    log_rate = torch.log(torch.tensor([[1.0], [2.0], [4.0]]))
    counts = torch.tensor([1.0, 3.0, 4.0])
    losses = task_losses(data, [log_rate, torch.zeros(3, 1)], [counts, torch.ones(3)])
    want = float(F.poisson_nll_loss(log_rate.flatten(), counts))
    assert losses.tolist() == pytest.approx([want, 1.0])

    meter = TaskMeter(specs[0])
    meter.update(log_rate, counts)
    out = meter.compute()
    assert out == pytest.approx({"mae": 1 / 3, "exact": 2 / 3})
    assert delta_metrics(specs[0]) == ["mae", "exact"]  # default: every metric of the kind
    ref = {"n": {"mae": 0.5, "exact": 0.5}}
    # Delta-m% = mean((1/3 - 0.5) / 0.5, -(2/3 - 0.5) / 0.5) * 100 = mean(-33.3, -33.3)
    assert delta_m({"n": out}, ref, specs) == pytest.approx(-100 / 3)
    assert selection_score({"n": out}, specs, ref) == pytest.approx(100 / 3)
    assert hv_reference(specs) == [1.0, 1.0]


def test_registering_a_kind_twice_needs_replace(count_kind):
    from common.metrics import register_kind

    with pytest.raises(ValueError, match="'count' is already registered"):
        register_kind(count_kind)
    assert register_kind(count_kind, replace=True) is count_kind


def test_a_kind_must_declare_its_delta_metrics_among_its_metrics():
    from common.metrics import TaskKind

    with pytest.raises(ValueError, match=r"delta metrics \['rmse'\] are not among its metrics"):
        TaskKind("bad", F.mse_loss, (("mse", False),), 1.0, lambda m, p, t: None, lambda m: {}, delta_metrics=("rmse",))


def test_an_unknown_kind_is_one_clear_error():
    from common.data import TaskSpec

    with pytest.raises(ValueError) as e:
        task("y", "regression")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("unknown task kind 'regression'; registered kinds: binary, class, ")
    assert "register_kind" in msg
    spec = TaskSpec("y", "regression", 1, (("mse", False),))  # built by hand: the same error where it is used
    for use in (lambda: task_loss(spec, torch.zeros(1), torch.zeros(1)), lambda: TaskMeter(spec),
                lambda: delta_metrics(spec), lambda: hv_reference([spec])):
        with pytest.raises(ValueError, match="^unknown task kind 'regression'; registered kinds"):
            use()
