"""common/metrics.py on hand-computed values: every TaskMeter kind (pooled over the split, never
averaged per batch), the task losses, Delta-m% against the papers' own rows, Mean Rank,
hypervolume (exact 2-D / 3-D cases and a Monte-Carlo check), non-dominated filtering, Spearman and
the simplex evaluation grid."""
import math
import os
import sys
from itertools import product

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.data import task, toy_losses  # noqa: E402
from common.metrics import (  # noqa: E402
    TaskMeter,
    delta_m,
    hypervolume,
    mean_rank,
    non_dominated,
    simplex_grid,
    spearman,
    task_loss,
)

torch.set_num_threads(2)


def run_meter(spec, batches, info=None, index=0):
    meter = TaskMeter(spec, info, index)
    for pred, target in batches:
        meter.update(pred, target)
    return meter.compute()


def seg_logits(labels, num_classes):
    """(B, C, H, W) logits whose argmax is `labels` (B, H, W)."""
    return F.one_hot(torch.as_tensor(labels), num_classes).permute(0, 3, 1, 2).float() * 5.0


# ============================================================================================
# TaskMeter, one kind at a time
# ============================================================================================
def test_class_accuracy_pooled_over_batches():
    spec = task("digit", "class", 3)
    # batch 1: argmax (0, 2) vs targets (0, 2): 2 correct of 2
    b1 = (torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 2]))
    # batch 2: argmax (1, 1, 0) vs targets (1, 0, 2): 1 correct of 3
    b2 = (torch.tensor([[0.0, 5.0, 1.0], [0.1, 0.9, 0.0], [2.0, 1.0, 0.0]]), torch.tensor([1, 0, 2]))
    out = run_meter(spec, [b1, b2])
    assert out["acc"] == pytest.approx(3 / 5)  # per-batch averaging would give (1 + 1/3) / 2
    assert run_meter(spec, [b1])["acc"] == pytest.approx(1.0)


def test_binary_f1_and_accuracy_at_logit_zero():
    spec = task("attr", "binary", 1)
    logits = torch.tensor([2.0, -1.0, 0.5, -0.3, 0.0, 3.0])
    target = torch.tensor([1, 1, 0, 0, 1, 1])
    # prediction = logit > 0 (probability > 0.5; logit 0 is a negative): 1 0 1 0 0 1
    tp, fp, fn, correct = 2, 1, 2, 3  # tp: #0 #5; fp: #2; fn: #1 #4; correct: #0 #3 #5
    f1 = 2 * tp / (2 * tp + fp + fn)
    out = run_meter(spec, [(logits[:4].reshape(4, 1), target[:4]), (logits[4:].reshape(2, 1), target[4:])])
    assert out["f1"] == pytest.approx(f1) and f1 == pytest.approx(4 / 7)
    assert out["acc"] == pytest.approx(correct / 6)
    # F1 is pooled (tp/fp/fn summed), not the mean of per-batch F1 (batch 1: 2/3, batch 2: 2/3 -> 0.667)
    assert abs(out["f1"] - 2 / 3) > 0.05
    # no positive predicted, no positive present: F1 is 0, accuracy 1
    none = run_meter(spec, [(torch.tensor([-1.0, -2.0]), torch.tensor([0, 0]))])
    assert none["f1"] == 0.0 and none["acc"] == pytest.approx(1.0)


def test_huber_mae_and_huber_loss():
    spec = task("age", "huber", 1)
    pred = torch.tensor([[1.0], [2.5], [-1.0]])
    target = torch.tensor([0.0, 0.5, 1.0])  # errors 1, 2, 2
    out = run_meter(spec, [(pred[:1], target[:1]), (pred[1:], target[1:])])
    assert out["mae"] == pytest.approx(5 / 3)
    # Huber (delta 1): 0.5 e^2 for |e| <= 1, |e| - 0.5 beyond: 0.5, 1.5, 1.5
    assert out["huber"] == pytest.approx(3.5 / 3, rel=1e-6)


# Segmentation case (4 classes; class 3 never occurs in target nor prediction).
SEG_T1 = [[[0, 0, 1], [1, -1, 2]]]
SEG_P1 = [[[0, 1, 1], [1, 2, 2]]]  # the ignored pixel is predicted 2: must not count
SEG_T2 = [[[0, -1, -1], [2, 2, 0]]]
SEG_P2 = [[[2, 0, 0], [2, 0, 0]]]
# confusion over both batches (rows = truth): [[2, 1, 1], [0, 2, 0], [1, 0, 2]]
SEG_PIXACC = 6 / 9
SEG_MIOU = (2 / 5 + 2 / 3 + 2 / 4) / 3  # class 3 (empty union) is excluded, not counted as 0


def test_seg_miou_pixacc_ignore_and_pooling():
    spec = task("segmentation", "seg", 4)
    b1 = (seg_logits(SEG_P1, 4), torch.tensor(SEG_T1))
    b2 = (seg_logits(SEG_P2, 4), torch.tensor(SEG_T2))
    two = run_meter(spec, [b1, b2])
    one = run_meter(spec, [(torch.cat([b1[0], b2[0]]), torch.cat([b1[1], b2[1]]))])
    assert two["pixacc"] == pytest.approx(SEG_PIXACC)
    assert two["miou"] == pytest.approx(SEG_MIOU)
    assert two == pytest.approx(one)
    # per-batch averaging would give pixacc (4/5 + 2/4) / 2 = 0.65: the meter pools
    assert abs(two["pixacc"] - 0.65) > 0.01


def test_seg_class_only_predicted_counts_as_zero_iou():
    spec = task("segmentation", "seg", 3)
    target = torch.tensor([[[0, 0], [1, 1]]])
    pred = seg_logits([[[0, 2], [1, 1]]], 3)  # class 2 is predicted once, never true: IoU 0
    out = run_meter(spec, [(pred, target)])
    assert out["miou"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert out["pixacc"] == pytest.approx(3 / 4)


def test_depth_errors_over_valid_pixels_pooled():
    spec = task("depth", "depth", 1)
    t1 = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]]]])
    p1 = torch.tensor([[[[1.5, 1.0], [9.0, 4.0]]]])  # errors 0.5, 1, (invalid), 0
    t2 = torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])
    p2 = torch.tensor([[[[1.5, 3.0], [3.0, 3.0]]]])  # error 1 on the one valid pixel
    two = run_meter(spec, [(p1, t1), (p2, t2)])
    assert two["abs_err"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert two["rel_err"] == pytest.approx((0.5 / 1 + 1 / 2 + 0 + 1 / 0.5) / 4)
    one = run_meter(spec, [(torch.cat([p1, p2]), torch.cat([t1, t2]))])
    assert two == pytest.approx(one)
    assert abs(two["abs_err"] - (1.5 / 3 + 1.0) / 2) > 0.1  # not the mean of per-batch values


def normal_pixels(angles_deg, axis=2, scale=3.0):
    """Target unit normals along `axis` and predictions at the given angles from them (scaled, so
    the metric must normalise them); shape (1, 3, 1, n)."""
    a = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
    other = (axis + 1) % 3
    target = torch.zeros(1, 3, 1, len(angles_deg), dtype=torch.float64)
    target[0, axis, 0] = 1.0
    pred = torch.zeros_like(target)
    pred[0, axis, 0] = torch.cos(a) * scale
    pred[0, other, 0] = torch.sin(a) * scale
    return pred.float(), target.float()


def test_normal_angle_metrics_hand_made():
    spec = task("normal", "normal", 3)
    angles = [5.0, 40.0, 10.0, 20.37, 25.0]
    p1, t1 = normal_pixels(angles[:3], axis=2)
    p2, t2 = normal_pixels(angles[3:], axis=0)
    # one invalid pixel (all-zero target) per batch, with a wild prediction
    bad_p = torch.tensor([-1.0, 0.3, -0.2]).reshape(1, 3, 1, 1)
    bad_t = torch.zeros(1, 3, 1, 1)
    p1, t1 = torch.cat([p1, bad_p], 3), torch.cat([t1, bad_t], 3)
    p2, t2 = torch.cat([bad_p, p2], 3), torch.cat([bad_t, t2], 3)
    out = run_meter(spec, [(p1, t1), (p2, t2)])
    assert out["mean"] == pytest.approx(sum(angles) / 5, abs=1e-3)
    assert abs(out["median"] - 20.37) <= 0.01  # pooled median; per batch: 10 and 22.685
    assert out["11.25"] == pytest.approx(2 / 5)
    assert out["22.5"] == pytest.approx(3 / 5)
    assert out["30"] == pytest.approx(4 / 5)


def test_normal_thresholds_are_strict_and_exact():
    """Fractions 'within' t degrees are the fractions of errors < t (MTAN: np.mean(error < t)),
    exact: errors a few thousandths of a degree above a threshold are not within it."""
    spec = task("normal", "normal", 3)
    below = [11.246, 22.496, 29.996]
    above = [11.254, 22.504, 30.004]
    out = run_meter(spec, [normal_pixels(below + above)])
    assert out["11.25"] == pytest.approx(1 / 6)
    assert out["22.5"] == pytest.approx(3 / 6)
    assert out["30"] == pytest.approx(5 / 6)


def test_toy_meter_reports_the_toy_loss():
    spec = task("l1", "toy")
    theta = torch.tensor([[1.0, -2.0]])
    out = run_meter(spec, [(theta, torch.zeros(1))], info={"c": 0.5}, index=0)
    assert out["loss"] == pytest.approx(float(toy_losses(theta[0], 0.5)[0]), rel=1e-6)


# ============================================================================================
# Losses
# ============================================================================================
def test_seg_loss_ignores_minus_one():
    spec = task("segmentation", "seg", 3)
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    target = torch.tensor([[[0, 2], [-1, 1]]])
    logp = torch.log_softmax(logits, 1)
    want = -(logp[0, 0, 0, 0] + logp[0, 2, 0, 1] + logp[0, 1, 1, 1]) / 3
    assert float(task_loss(spec, logits, target)) == pytest.approx(float(want), rel=1e-6)
    changed = logits.clone()
    changed[0, :, 1, 0] = torch.tensor([9.0, -9.0, 4.0])  # only the ignored pixel
    assert float(task_loss(spec, changed, target)) == pytest.approx(float(want), rel=1e-6)


def test_depth_loss_is_masked_l1():
    spec = task("depth", "depth", 1)
    target = torch.tensor([[[[1.0, 0.0], [2.0, 0.5]]]])
    pred = torch.tensor([[[[2.0, 7.0], [1.5, 0.5]]]])
    assert float(task_loss(spec, pred, target)) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    pred2 = pred.clone()
    pred2[0, 0, 0, 1] = -100.0  # invalid pixel: no effect
    assert float(task_loss(spec, pred2, target)) == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_normal_loss_is_one_minus_mean_cosine_of_normalised_predictions():
    spec = task("normal", "normal", 3)
    angles = [0.0, 60.0, 90.0]
    pred, target = normal_pixels(angles, scale=7.0)
    pred = torch.cat([pred, torch.tensor([5.0, 5.0, 5.0]).reshape(1, 3, 1, 1)], 3)
    target = torch.cat([target, torch.zeros(1, 3, 1, 1)], 3)  # invalid pixel
    want = 1.0 - (1.0 + 0.5 + 0.0) / 3
    assert float(task_loss(spec, pred, target)) == pytest.approx(want, abs=1e-6)


def test_toy_loss_equals_toy_losses():
    theta = torch.tensor([[-8.5, 7.5]])
    for i, name in enumerate(["l1", "l2"]):
        for c in (1.0, 0.1):
            got = task_loss(task(name, "toy"), theta, torch.zeros(1), {"c": c}, i)
            assert float(got) == pytest.approx(float(toy_losses(theta[0], c)[i]), rel=1e-6)
    # and the toy loss is differentiable in theta
    th = theta.clone().requires_grad_(True)
    task_loss(task("l1", "toy"), th, torch.zeros(1), {"c": 1.0}, 0).backward()
    assert th.grad is not None and torch.isfinite(th.grad).all()


# ============================================================================================
# Delta-m% and Mean Rank
# ============================================================================================
CITY_SPECS = [task("segmentation", "seg", 7), task("depth", "depth", 1)]
NYU_SPECS = [task("segmentation", "seg", 13), task("depth", "depth", 1), task("normal", "normal", 3)]
NYU_KEYS = [("segmentation", "miou"), ("segmentation", "pixacc"), ("depth", "abs_err"), ("depth", "rel_err"),
            ("normal", "mean"), ("normal", "median"), ("normal", "11.25"), ("normal", "22.5"), ("normal", "30")]


def nested(keys, values):
    out = {}
    for (t, m), v in zip(keys, values):
        out.setdefault(t, {})[m] = v
    return out


def test_delta_m_reproduces_extra_cityscapes_ls():
    ls = {"segmentation": {"miou": 0.7518, "pixacc": 0.9349}, "depth": {"abs_err": 0.0155, "rel_err": 46.77}}
    ref = {"segmentation": {"miou": 0.7401, "pixacc": 0.9316}, "depth": {"abs_err": 0.0125, "rel_err": 27.77}}
    x = delta_m(ls, ref, CITY_SPECS)
    assert abs(x - 22.62) < 0.01  # EXTRA Table 3: 22.60 (from unrounded values)


def test_delta_m_reproduces_sam_mtl_nyuv2_ls():
    ls = nested(NYU_KEYS, [0.3929, 0.6533, 0.5493, 0.2263, 28.15, 23.96, 0.2209, 0.4750, 0.6108])
    ref = nested(NYU_KEYS, [0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915])
    assert abs(delta_m(ls, ref, NYU_SPECS) - 5.59) < 0.02


def test_delta_m_signs_and_missing_reference():
    ref = {"segmentation": {"miou": 0.5, "pixacc": 0.8}, "depth": {"abs_err": 0.1, "rel_err": 0.2}}
    better = {"segmentation": {"miou": 0.55, "pixacc": 0.88}, "depth": {"abs_err": 0.09, "rel_err": 0.18}}
    assert delta_m(better, ref, CITY_SPECS) == pytest.approx(-10.0)  # every metric 10 % better
    assert delta_m(ref, ref, CITY_SPECS) == pytest.approx(0.0)
    assert delta_m(better, None, CITY_SPECS) is None


def test_mean_rank_with_tie():
    results = {
        "A": {"segmentation": {"miou": 0.5, "pixacc": 0.8}, "depth": {"abs_err": 0.1, "rel_err": 0.3}},
        "B": {"segmentation": {"miou": 0.6, "pixacc": 0.8}, "depth": {"abs_err": 0.2, "rel_err": 0.1}},
        "C": {"segmentation": {"miou": 0.4, "pixacc": 0.7}, "depth": {"abs_err": 0.3, "rel_err": 0.2}},
    }
    # ranks (miou, pixacc, abs, rel): A (2, 1.5, 1, 3), B (1, 1.5, 2, 1), C (3, 3, 3, 2)
    assert mean_rank(results, CITY_SPECS) == pytest.approx({"A": 7.5 / 4, "B": 5.5 / 4, "C": 11 / 4})


# ============================================================================================
# Hypervolume, non-dominated filter
# ============================================================================================
def test_hypervolume_2d_exact():
    pts = [(1, 3), (2, 2), (3, 1)]
    assert hypervolume(pts, (4, 4)) == pytest.approx(6.0)
    assert hypervolume(pts[::-1], (4, 4)) == pytest.approx(6.0)
    # dominated, out-of-box and on-the-boundary points add nothing
    extra = pts + [(3, 3), (2.5, 2.5), (2, 2), (5, 0), (0, 4), (0.5, 4.5), (-1, 9)]
    assert hypervolume(extra, (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(2, 2)], (4, 4)) == pytest.approx(4.0)
    assert hypervolume([(5, 5)], (4, 4)) == 0.0
    assert hypervolume([(1, 1)], (4, 4)) == pytest.approx(9.0)  # dominates all three: 3 x 3


def test_hypervolume_2d_maximize():
    # boxes [0, .9] x [0, .5] and [0, .6] x [0, .8]: 0.45 + 0.48 - 0.30
    assert hypervolume([(0.9, 0.5), (0.6, 0.8)], (0, 0), maximize=True) == pytest.approx(0.63)
    assert hypervolume([(0.9, 0.5), (0.6, 0.8), (0.5, 0.5), (-0.1, 0.9)], (0, 0), maximize=True) == pytest.approx(0.63)
    # mixed: accuracy (higher better) and loss (lower better)
    assert hypervolume([(0.9, 0.5)], (0, 1), maximize=[True, False]) == pytest.approx(0.45)
    # maximising x is minimising -x
    rng = np.random.default_rng(1)
    P = rng.uniform(0, 1, (12, 2))
    assert hypervolume(P, (0, 0), maximize=True) == pytest.approx(hypervolume(-P, (0, 0)))


def test_hypervolume_3d_hand_made():
    ref = (4, 4, 4)
    assert hypervolume([(1, 2, 3)], ref) == pytest.approx(3 * 2 * 1)
    # a = (1,2,3): 6; b = (2,1,1): 18; a ^ b = box above (2,2,3): 4
    assert hypervolume([(1, 2, 3), (2, 1, 1)], ref) == pytest.approx(6 + 18 - 4)
    # c = (3,3,0): 4; a^c (3,3,3): 1; b^c (3,3,1): 3; a^b^c (3,3,3): 1
    three = [(1, 2, 3), (2, 1, 1), (3, 3, 0)]
    assert hypervolume(three, ref) == pytest.approx(6 + 18 + 4 - 4 - 1 - 3 + 1)
    assert hypervolume(three + [(3, 3, 3), (5, 0, 0)], ref) == pytest.approx(21)
    assert hypervolume([(-1, -2, -3)], (0, 0, 0), maximize=True) == 0.0
    assert hypervolume([(1, 2, 3)], (0, 0, 0), maximize=True) == pytest.approx(6)


@pytest.mark.parametrize("kind", ["uniform", "front"])
def test_hypervolume_3d_monte_carlo(kind):
    rng = np.random.default_rng(0)
    if kind == "uniform":
        P = rng.uniform(0, 1, (15, 3))
    else:  # all mutually non-dominated: points on the unit sphere's positive octant
        v = np.abs(rng.normal(size=(20, 3)))
        P = 1 - v / np.linalg.norm(v, axis=1, keepdims=True)
    ref = np.array([1.1, 1.1, 1.1])
    exact = hypervolume(P, ref)
    lo = P.min(0)
    box = float(np.prod(ref - lo))
    n = 200_000
    S = rng.uniform(lo, ref, (n, 3))
    dominated = np.zeros(n, dtype=bool)
    for p in P:
        dominated |= np.all(S >= p, axis=1)
    frac = dominated.mean()
    est = frac * box
    se = math.sqrt(frac * (1 - frac) / n) * box
    # tolerance: 5 standard errors of the Monte-Carlo estimate (about 0.5 % of the box volume)
    assert abs(exact - est) < 5 * se, (exact, est, se)


def test_non_dominated():
    pts = [(1, 3), (2, 2), (3, 1), (2, 3), (3, 3), (0.5, 5), (2, 2)]
    # (2,3) is dominated by (2,2) (equal x, worse y); duplicates do not dominate each other
    assert non_dominated(pts).tolist() == [True, True, True, False, False, True, True]
    up = non_dominated([(1, 3), (2, 2), (3, 1), (2, 3), (3, 3)], maximize=True)
    assert up.tolist() == [False, False, False, False, True]
    mixed = non_dominated([(0.9, 0.5), (0.8, 0.4), (0.7, 0.6)], maximize=[True, False])
    assert mixed.tolist() == [True, True, False]


# ============================================================================================
# Spearman, simplex grid
# ============================================================================================
def test_spearman_matches_scipy_with_ties():
    x = [1, 2, 2, 3, 5, 4, 4, 4, 0]
    y = [3, 1, 2, 2, 6, 5, 5, 7, 1]
    assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 30), rng.integers(0, 5, 30)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("tasks,rows", [(2, 11), (3, 66)])
def test_simplex_grid(tasks, rows):
    g = simplex_grid(tasks)
    assert g.shape == (rows, tasks)
    assert np.allclose(g.sum(1), 1.0)
    assert (g >= 0).all()
    assert np.allclose(g * 10, np.round(g * 10), atol=1e-9)  # spacing 0.1
    ints = {tuple(r) for r in np.round(g * 10).astype(int)}
    assert len(ints) == rows  # all distinct
    # and every point of the 0.1-lattice on the simplex is there
    assert ints == {c for c in product(range(11), repeat=tasks) if sum(c) == 10}
    if tasks == 2:
        assert np.allclose(g[:, 0], np.linspace(1, 0, 11))


def test_hv_reference_is_one_fixed_rule_and_override():
    from common.data import task
    from common.metrics import HV_REFERENCE, hv_reference

    specs = [task("a", "class", 10), task("d", "depth"), task("age", "huber"), task("n", "normal", 3)]
    # accuracy -> 0, depth abs error -> 1, MAE of normalised age -> 1, normal angle -> 90; never from the points
    assert hv_reference(specs) == [0.0, 1.0, 1.0, 90.0]
    assert hv_reference(specs, override=[0.5, 2, 9, 1]) == [0.5, 2.0, 9.0, 1.0]
    from common.metrics import TASK_KINDS
    assert set(HV_REFERENCE) == set(TASK_KINDS)  # every task kind has its fixed value
    assert HV_REFERENCE["mse"] == 1.0  # an error, like huber's MAE and depth's absolute error


def test_front_summary_on_a_hand_made_front():
    from common.data import task
    from common.metrics import front_summary

    tasks = [task("a", "class", 10), task("b", "class", 10)]
    pts = [((1.0, 0.0), (0.9, 0.5), (0.2, 1.5)), ((0.5, 0.5), (0.8, 0.8), (0.5, 0.6)), ((0.0, 1.0), (0.5, 0.9), (1.4, 0.1))]
    front = [{"preference": list(lam), "tasks": {"a": {"acc": acc[0], "loss": loss[0]}, "b": {"acc": acc[1], "loss": loss[1]}}}
             for lam, acc, loss in pts]
    s = front_summary(front, tasks)
    # accuracies with reference (0, 0): union of [0,.9]x[0,.5], [0,.8]x[0,.8], [0,.5]x[0,.9] = .45 + .8*.3 + .5*.1
    assert s["hypervolume_ref"] == [0.0, 0.0] and abs(s["hypervolume"] - (0.45 + 0.24 + 0.05)) < 1e-12
    assert s["non_dominated"] == 3 and s["front_size"] == 3
    assert s["spearman"] == -1.0  # loss of a rises exactly where loss of b falls
    assert s["spearman_alignment"] == {"a": -1.0, "b": -1.0}  # more weight, lower loss: aligned
