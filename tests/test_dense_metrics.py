"""Losses and metrics of the AvgNorm dense-prediction suite (common/metrics.py), on hand-made maps.

Every expected value is computed by hand in the test (written out in the comments): the survey's
weighted / balanced BCE and normals L1, pooled depth RMSE, mIoU with ignore labels, normal angles,
saliency maxF (beta^2 = 0.3, pooled), edge odsF (thinning, one-to-one matching within the tolerance,
counts pooled over images, max over thresholds) and Delta-m% against the paper's Eq. 5.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.data import TaskSpec, task
from common.metrics import (SAL_THRESHOLDS, TaskMeter, balanced_bce, delta_m, delta_metrics, disk_offsets,
                            edge_counts, edge_thresholds, match_edges, max_f, mean_rank, normals_l1_loss, ods_f,
                            task_loss, thin)
from common.real_data import NYUD_REFERENCE, NYUD_TASKS, PASCAL_CONTEXT_REFERENCE, PASCAL_TASKS


def bce(z: float, y: int) -> float:
    """Binary cross-entropy of logit z against label y."""
    p = 1 / (1 + math.exp(-z))
    return -math.log(p) if y else -math.log(1 - p)


def grid(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "#" for c in r] for r in rows])


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def test_edge_loss_is_weighted_bce_095_005_over_valid_pixels():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 1.0, -1.0]).view(1, 1, 2, 2)  # the last pixel is ignored
    want = (0.95 * (bce(0, 1) + bce(-1, 1)) + 0.05 * bce(2, 0)) / 3
    got = task_loss(task("edge", "edge"), logits, target)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # no ignored pixel: the survey's BalancedCrossEntropyLoss(pos_weight=0.95), / numel
    full = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    want_full = (0.95 * (bce(0, 1) + bce(-1, 1)) + 0.05 * (bce(2, 0) + bce(3, 0))) / 4
    assert float(balanced_bce(logits, full, 0.95)) == pytest.approx(want_full, rel=1e-6)


def test_saliency_loss_is_balanced_bce_weighted_by_the_negative_fraction():
    logits = torch.tensor([[0.5, -0.5], [1.0, 2.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    w = 3 / 4  # 3 negatives of 4 pixels
    want = (w * bce(0.5, 1) + (1 - w) * (bce(-0.5, 0) + bce(1, 0) + bce(2, 0))) / 4
    assert float(task_loss(task("sal", "saliency"), logits, target)) == pytest.approx(want, rel=1e-6)


def test_bce_losses_are_zero_without_valid_pixels_and_differentiable():
    logits = torch.randn(2, 1, 3, 3, requires_grad=True)
    target = -torch.ones(2, 1, 3, 3)
    loss = balanced_bce(logits, target)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()


def test_normals_l1_loss_normalises_the_prediction_and_averages_valid_elements():
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])   # -> (1, 0, 0) vs target (0, 1, 0): |1| + |1| + 0 = 2
    pred[0, :, 0, 1] = torch.tensor([0.0, 0.0, -5.0])  # -> (0, 0, -1) vs target (0, 0, -1): 0
    pred[0, :, 0, 2] = torch.tensor([1.0, 1.0, 1.0])   # invalid target (all zero): ignored
    target = torch.zeros(1, 3, 1, 3)
    target[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    target[0, :, 0, 1] = torch.tensor([0.0, 0.0, -1.0])
    want = 2.0 / 6  # summed over the 6 valid elements
    assert float(normals_l1_loss(pred, target)) == pytest.approx(want, rel=1e-6)
    assert float(task_loss(task("normals", "normal_l1", 3), pred, target)) == pytest.approx(want, rel=1e-6)


def test_seg_loss_without_labelled_pixels_is_zero_not_nan():
    logits = torch.randn(2, 7, 4, 4, requires_grad=True)
    target = -torch.ones(2, 4, 4, dtype=torch.long)  # human parts of images without people
    loss = task_loss(task("human_parts", "seg", 7), logits, target)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(logits.grad).all()
    target[0, 0, 0] = 3
    want = -torch.log_softmax(logits.detach()[0, :, 0, 0], 0)[3]
    assert float(task_loss(task("human_parts", "seg", 7), logits, target).detach()) == pytest.approx(float(want), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Depth RMSE, mIoU, normal angles
# --------------------------------------------------------------------------------------------
def test_depth_rmse_pools_pixels_not_images_and_clamps_negative_predictions():
    spec = task("depth", "depth", 1, metrics=("rmse",))
    m = TaskMeter(spec)
    # image A: one valid pixel, error 3; image B: three valid pixels, error 1 each; zeros are invalid
    m.update(torch.tensor([4.0, 9.0, 9.0, 9.0]).view(1, 1, 2, 2), torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2))
    m.update(torch.tensor([3.0, 3.0, -2.0, 7.0]).view(1, 1, 2, 2), torch.tensor([2.0, 2.0, 1.0, 0.0]).view(1, 1, 2, 2))
    pooled = math.sqrt((9 + 1 + 1 + 1) / 4)  # the prediction -2 counts as 0: error 1
    per_image = (3 + 1) / 2
    out = m.compute()
    assert list(out) == ["rmse"] and out["rmse"] == pytest.approx(pooled) and pooled != per_image


def test_miou_with_ignore_label_and_images_without_parts():
    spec = task("human_parts", "seg", 3, metrics=("miou",))
    m = TaskMeter(spec)
    logits = torch.zeros(1, 3, 2, 2)
    pred = torch.tensor([[0, 1], [1, 2]])
    logits.scatter_(1, pred.view(1, 1, 2, 2), 1.0)
    m.update(logits, torch.tensor([[0, 1], [2, -1]]).view(1, 2, 2))  # the -1 pixel (predicted 2) is ignored
    m.update(logits, -torch.ones(1, 2, 2, dtype=torch.long))  # an image without people: all ignored
    # class 0: tp 1 / union 1; class 1: tp 1, fp 1 (gt 2 predicted 1): 1/2; class 2: tp 0, fn 1: 0/1
    assert m.compute() == {"miou": pytest.approx((1 + 0.5 + 0) / 3)}


def test_normal_l1_meter_mean_angle_over_valid_pixels_with_unnormalised_target():
    spec = task("normals", "normal_l1", 3, metrics=("mean",))
    m = TaskMeter(spec)
    pred = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    m.update(pred, target)  # 90 degrees, 0 degrees, invalid
    assert m.compute() == {"mean": pytest.approx(45.0, abs=1e-4)}


def test_task_metric_override_and_delta_metrics():
    assert [m for m, _ in NYUD_TASKS[1].metrics] == ["rmse"] and NYUD_TASKS[1].metrics[0][1] is False
    assert [t.metrics for t in NYUD_TASKS] == [(("miou", True),), (("rmse", False),), (("mean", False),), (("odsF", True),)]
    assert [t.metrics[0][0] for t in PASCAL_TASKS] == ["miou", "miou", "mean", "maxF", "odsF"]
    for spec in NYUD_TASKS + PASCAL_TASKS:
        assert delta_metrics(spec) == [spec.metrics[0][0]]
    # the existing kinds keep their metrics and Delta-m% metrics
    assert delta_metrics(task("depth", "depth", 1)) == ["abs_err", "rel_err"]
    assert delta_metrics(task("s", "seg", 13)) == ["miou", "pixacc"]
    with pytest.raises(ValueError):
        task("depth", "depth", 1, metrics=("odsF",))


# --------------------------------------------------------------------------------------------
# Saliency maxF
# --------------------------------------------------------------------------------------------
def test_saliency_maxf_pools_counts_over_images_with_beta2_03():
    info = {"sal_thresholds": (0.3, 0.7)}
    m = TaskMeter(task("sal", "saliency"), info)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    # image 1: gt [1, 1, 0, 0], prob [0.9, 0.5, 0.5, 0.1]; image 2: gt [1, 0, 0, -1], prob [0.2, 0.8, 0.1, 0.9]
    p1, g1 = [0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 0.0, 0.0]
    p2, g2 = [0.2, 0.8, 0.1, 0.9], [1.0, 0.0, 0.0, -1.0]
    for p, g in ((p1, g1), (p2, g2)):
        m.update(torch.tensor([logit(v) for v in p]).view(1, 1, 2, 2), torch.tensor(g).view(1, 1, 2, 2))
    # t = 0.3: predicted {0.9, 0.5, 0.5} + {0.8} (0.9 ignored) -> tp 2, pp 4, actual 3
    # t = 0.7: predicted {0.9} + {0.8} -> tp 1, pp 2, actual 3
    def fb(tp, pp, ap, b2=0.3):
        P, R = tp / pp, tp / ap
        return (1 + b2) * P * R / (b2 * P + R)
    want = max(fb(2, 4, 3), fb(1, 2, 3))
    assert m.compute() == {"maxF": pytest.approx(want)}
    # averaging per image (the survey's eval_sal) would give another number: the pooled one is reported
    assert max_f([2, 1], [4, 2], [3, 3]) == pytest.approx(want)
    assert max_f([0], [0], [5]) == 0.0  # nothing predicted: F undefined -> 0
    assert SAL_THRESHOLDS[0] == 0.05 and SAL_THRESHOLDS[-1] == 0.95 and len(SAL_THRESHOLDS) == 19


# --------------------------------------------------------------------------------------------
# Edge odsF: thinning, matching, counting
# --------------------------------------------------------------------------------------------
def test_thin_matches_skimage_on_a_golden_map():
    # skimage.morphology.thin (= MATLAB bwmorph 'thin', Inf) of this map, computed once with skimage 0.26
    src = ["#########...", ".#######....", ".#######....", ".###.#......", "####....####", "####.....##.",
           "#####....##.", "#...##..####", "....########"]
    want = ["#......##...", ".#.####.....", "..#.........", "..#.........", ".#......#.##", "..#......#..",
            ".#.#.....#..", "#...#....##.", ".....####..."]
    assert torch.equal(thin(grid(src)), grid(want))
    # a batch is thinned map by map; a 3 x 3 square keeps its centre, a 1-pixel line is kept whole
    square = torch.zeros(5, 5, dtype=torch.bool)
    square[1:4, 1:4] = True
    line = torch.zeros(5, 5, dtype=torch.bool)
    line[2, :] = True
    out = thin(torch.stack([square, line, grid(src)[:5, :5]]))
    assert out[0].sum() == 1 and out[0][2, 2] and torch.equal(out[1], line) and torch.equal(out[2], thin(grid(src)[:5, :5]))


def test_thin_reduces_a_thick_line_to_one_pixel_width():
    bar = torch.zeros(7, 12, dtype=torch.bool)
    bar[2:5, 1:11] = True
    t = thin(bar)
    assert t.sum(0)[2:10].eq(1).all() and t.sum() <= 12


def test_matching_is_one_to_one():
    gt = torch.zeros(5, 5, dtype=torch.bool)
    gt[2, 2] = True
    pred = torch.zeros(1, 5, 5, dtype=torch.bool)
    pred[0, 2, 1] = pred[0, 2, 3] = True  # two predictions at distance 1 from one GT pixel
    assert match_edges(pred, gt, 1.5).tolist() == [1]  # a distance transform would count both
    gt2 = torch.zeros(3, 6, dtype=torch.bool)
    gt2[1, 2] = True
    p = torch.zeros(1, 3, 6, dtype=torch.bool)
    p[0, 1, 2] = p[0, 1, 3] = True
    assert match_edges(p, gt2, 1.5).tolist() == [1]
    assert disk_offsets(1.0) == [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0)]
    # no ground truth, or no prediction near it: nothing matches
    assert match_edges(p, torch.zeros(3, 6, dtype=torch.bool), 1.5).tolist() == [0]
    assert match_edges(torch.zeros(2, 3, 6, dtype=torch.bool), gt2, 1.5).tolist() == [0, 0]


def test_matching_is_maximum_on_a_shifted_two_pixel_segment():
    # GT x = (0, 2), y = (0, 3); prediction a = (0, 3), b = (0, 4): the segment shifted by one pixel,
    # radius 1. Nearest-first greedy pairs a - y (distance 0) and leaves b without a partner (x is 2
    # away): 1 match. The maximum matching pairs a - x and b - y: 2.
    gt = torch.zeros(1, 7, dtype=torch.bool)
    gt[0, 2] = gt[0, 3] = True
    pred = torch.zeros(1, 1, 7, dtype=torch.bool)
    pred[0, 0, 3] = pred[0, 0, 4] = True
    assert match_edges(pred, gt, 1.0).tolist() == [2]
    # a - x at 1, a - y at 2, b - x at 2, b - y out of reach (radius 2): also 2
    gt = torch.zeros(1, 8, dtype=torch.bool)
    gt[0, 3] = gt[0, 6] = True
    pred = torch.zeros(1, 1, 8, dtype=torch.bool)
    pred[0, 0, 4] = pred[0, 0, 1] = True
    assert match_edges(pred, gt, 2.0).tolist() == [2]


def test_matching_equals_brute_force_maximum_on_random_maps():
    # the matching size against a brute-force maximum matching (augmenting paths in pure Python)
    rng = np.random.default_rng(0)
    H, W, r = 9, 11, 1.5
    gt = torch.from_numpy(rng.random((H, W)) < 0.25)
    pred = torch.from_numpy(rng.random((4, H, W)) < 0.3)

    def brute(p):
        P = [tuple(v) for v in torch.nonzero(p).tolist()]
        G = [tuple(v) for v in torch.nonzero(gt).tolist()]
        adj = [[j for j, g in enumerate(G) if (a[0] - g[0]) ** 2 + (a[1] - g[1]) ** 2 <= r * r] for a in P]
        owner = {}

        def augment(i, seen):
            for j in adj[i]:
                if j not in seen:
                    seen.add(j)
                    if j not in owner or augment(owner[j], seen):
                        owner[j] = i
                        return True
            return False
        return sum(augment(i, set()) for i in range(len(P)))

    want = [brute(p) for p in pred]
    assert match_edges(pred, gt, r).tolist() == want


def test_odsf_does_not_thin_the_ground_truth():
    # a 4-connected staircase GT (18 px); prediction = GT. The prediction is thinned (edgesEvalImg
    # thins E) to the 9 diagonal pixels plus the end pixel (10 px); the GT is used as given, as in
    # edgesEvalImg / correspondPixels: P = 10/10, R = 10/18, F = 2 P R / (P + R) = 5/7 (thinning the
    # GT as well would give 1).
    g = torch.zeros(12, 12)
    for i in range(1, 10):
        g[i, i] = g[i, i + 1] = 1
    assert int(thin(g.bool()).sum()) == 10
    c = edge_counts(g.clone(), g, edge_thresholds(3), 0.0075)
    assert c[:, 0].tolist() == [10, 18, 10, 10]
    assert ods_f(*c)[0] == pytest.approx(5 / 7)


def test_odsf_on_hand_made_maps():
    """Two images, thresholds 1/3 and 2/3, tolerance r = 0.06 * diag(20 x 20) = 1.70 px.

    Image 1: GT row 5, columns 2..17 (16 px); prediction 0.9 on row 6 (shifted by 1 px, within r) and
    a spurious 3 x 3 blob of 0.6 (thinned to its centre). Image 2: GT column 3, rows 2..11 (10 px);
    prediction 0.5 exactly on it.
      t = 1/3: predicted 17 + 10, matched 16 + 10, GT 26 -> P = 26/27, R = 1  -> F = 52/53
      t = 2/3: predicted 16 (only the line of image 1), matched 16 -> P = 1, R = 16/26 -> F = 32/42
    """
    info = {"edge_thresholds": 2, "edge_max_dist": 0.06}
    m = TaskMeter(task("edge", "edge"), info)
    prob = torch.full((2, 1, 20, 20), 0.01)
    gt = torch.zeros(2, 1, 20, 20)
    gt[0, 0, 5, 2:18] = 1
    prob[0, 0, 6, 2:18] = 0.9
    prob[0, 0, 14:17, 14:17] = 0.6
    gt[1, 0, 2:12, 3] = 1
    prob[1, 0, 2:12, 3] = 0.5
    m.update(torch.logit(prob), gt)
    counts = m.edge_counts  # cntR, sumR, cntP, sumP per threshold: bounded memory, no maps kept
    assert counts.shape == (4, 2)
    assert counts.tolist() == [[26, 16], [26, 26], [26, 16], [27, 16]]
    assert m.compute() == {"odsF": pytest.approx(52 / 53)}
    assert ods_f(*counts)[1] == 0
    # the same prediction shifted by 3 px is beyond r: nothing matches
    far = torch.full((1, 1, 20, 20), 0.01)
    far[0, 0, 8, 2:18] = 0.9
    c = edge_counts(far[0, 0], gt[0, 0], edge_thresholds(2), 0.06)
    assert c[0].tolist() == [0, 0] and ods_f(*c)[0] == 0.0


def test_edge_ignore_pixels_drop_predictions_and_sums_follow_seism_conventions():
    prob = torch.full((6, 6), 0.9)
    target = -torch.ones(6, 6)  # everything ignored: no GT, no prediction
    c = edge_counts(prob, target, edge_thresholds(3), 0.0075)
    assert c.sum() == 0 and ods_f(*c) == (0.0, 0)
    assert edge_thresholds(99)[0] == pytest.approx(0.01) and edge_thresholds(99)[-1] == pytest.approx(0.99)


# --------------------------------------------------------------------------------------------
# Delta-m% = -(paper's Eq. 5) with one metric per task
# --------------------------------------------------------------------------------------------
def test_delta_m_on_nyud_equals_eq5_by_hand():
    # AvgNorm Table II, ResNet-18 "Uniform" on NYUD-v2 (paper's Delta_m = -2.93)
    uniform = {"semseg": {"miou": 0.3970}, "depth": {"rmse": 0.6030}, "normals": {"mean": 23.37}, "edge": {"odsF": 0.6710}}
    eq5 = ((39.70 - 39.38) / 39.38 - (0.6030 - 0.6111) / 0.6111 - (23.37 - 21.94) / 21.94
           + (67.10 - 72.40) / 72.40) / 4 * 100
    assert round(eq5, 2) == -2.93
    assert delta_m(uniform, NYUD_REFERENCE, NYUD_TASKS) == pytest.approx(-eq5)
    # extra metrics in the results (or the reference) do not enter: one metric per task
    noisy = {k: dict(v, pixacc=0.5, abs_err=0.4) for k, v in uniform.items()}
    assert delta_m(noisy, NYUD_REFERENCE, NYUD_TASKS) == pytest.approx(-eq5)


def test_delta_m_on_pascal_context_reproduces_table2():
    # AvgNorm Table II, ResNet-18 "Uniform" on PASCAL-Context: Delta_m = -4.04
    uniform = {"semseg": {"miou": 0.6652}, "human_parts": {"miou": 0.6002}, "normals": {"mean": 14.99},
               "sal": {"maxF": 0.8325}, "edge": {"odsF": 0.6250}}
    assert round(-delta_m(uniform, PASCAL_CONTEXT_REFERENCE, PASCAL_TASKS), 2) == -4.04
    ranks = mean_rank({"a": uniform, "ref": PASCAL_CONTEXT_REFERENCE}, PASCAL_TASKS)
    assert ranks == {"a": 2.0, "ref": 1.0}


def test_meters_report_exactly_the_spec_metrics():
    spec = TaskSpec("d", "depth", 1, (("abs_err", False), ("rel_err", False)))
    m = TaskMeter(spec)
    m.update(torch.ones(1, 1, 2, 2), 2 * torch.ones(1, 1, 2, 2))
    assert list(m.compute()) == ["abs_err", "rel_err"]


def test_odsf_cost_script_runs_and_rejects_bad_input(capsys):
    from reproduce.odsf_cost import main
    assert main(["--size", "24x30", "--thresholds", "3", "--repeats", "1", "--regions", "3"]) == 0
    out = capsys.readouterr().out
    assert "| band | 3 |" in out and "| noise | 3 |" in out
    assert main(["--size", "24"]) == 2
    assert "error" in capsys.readouterr().err
