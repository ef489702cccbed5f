"""Tests of methods/pml.py (Pareto Manifold Learning): the ensemble theta(alpha), the Dirichlet
sampling, the multi-forward regulariser of Eq. 3, both balancing schemes, the evaluation grids, the
toy problem of App. C, and end-to-end runs on multimnist(3)-lite and on tiny files written in the
real on-disk layouts of census, utkface and cityscapes."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import pml  # noqa: E402
from common.data import MTLData, TensorMTL, task, toy_losses  # noqa: E402
from common.data import toy_pareto_front as _toy_pareto_front  # noqa: E402
from common.device import UsageError  # noqa: E402
from common.metrics import delta_m, evaluation_grid, hypervolume, selection_score, simplex_grid  # noqa: E402
from common.models import MTLModel, build_model  # noqa: E402

torch.set_num_threads(2)
QUIET = ["--no-progress", "--quiet"]


_FRONTS = {}


def toy_pareto_front(c):
    """The analytic front, computed once per c (a dense grid: several seconds on a busy CPU)."""
    if c not in _FRONTS:
        _FRONTS[c] = _toy_pareto_front(c)
    return _FRONTS[c]


def fake_data(tasks, input_shape, n=8):
    ds = TensorMTL(torch.randn(n, *input_shape), [torch.zeros(n, dtype=torch.long) for _ in tasks])
    return MTLData("fake", list(tasks), ds, ds, ds, tuple(input_shape), "mlp")


TWO = fake_data([task("a", "class", 3), task("b", "class", 4)], (6,))
TWO_MNIST = fake_data([task("left", "class", 10), task("right", "class", 10)], (1, 28, 28), n=2)


def tiny_bn_model(seed):
    """A small MTLModel whose encoder has BatchNorm (to check the shared running statistics)."""
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU())
    return MTLModel(enc, [nn.Linear(5, 3), nn.Linear(5, 4)], ["a", "b"])


def ensemble(models):
    return pml.mtl_ensemble(models)


# ------------------------------------------------------------------------------------------------
# theta(alpha) = sum_t alpha_t theta_t
# ------------------------------------------------------------------------------------------------
def test_vertex_is_exactly_the_member_and_members_differ():
    torch.manual_seed(0)
    ens = ensemble([build_model("mlp", TWO) for _ in range(2)])
    x = torch.randn(5, 6)
    ens.eval()
    for k in range(2):
        e = torch.zeros(2)
        e[k] = 1.0
        params = ens.params_at(e)
        for n, p in ens.members[k].named_parameters():
            assert torch.equal(params[n], p)
        for a, b in zip(ens(x, e), ens.members[k](x)):
            assert torch.equal(a, b)
    # independent initialisation (Algorithm 1, line 1): the members are different networks
    w0 = dict(ens.members[0].named_parameters())["encoder.fc.weight"]
    w1 = dict(ens.members[1].named_parameters())["encoder.fc.weight"]
    assert not torch.allclose(w0, w1)


def test_interpolated_weights_and_materialize():
    ens = ensemble([tiny_bn_model(0), tiny_bn_model(1)])
    alpha = torch.tensor([0.25, 0.75])
    p0, p1 = dict(ens.members[0].named_parameters()), dict(ens.members[1].named_parameters())
    for n, v in ens.params_at(alpha).items():
        assert torch.allclose(v, 0.25 * p0[n] + 0.75 * p1[n])
    net = ens.materialize(alpha, tiny_bn_model(5))
    x = torch.randn(7, 6)
    net.eval(), ens.eval()
    for a, b in zip(net(x), ens(x, alpha)):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradients_reach_every_member_scaled_by_alpha():
    ens = ensemble([tiny_bn_model(0), tiny_bn_model(1), tiny_bn_model(2)])
    ens.eval()  # deterministic BN for the comparison
    alpha = torch.tensor([0.2, 0.5, 0.3])
    x = torch.randn(7, 6)
    out = ens(x, alpha)
    (out[0].square().sum() + out[1].sum()).backward()
    net = ens.materialize(alpha, tiny_bn_model(9)).eval()
    o = net(x)
    (o[0].square().sum() + o[1].sum()).backward()
    ref = dict(net.named_parameters())
    for k, member in enumerate(ens.members):
        for n, p in member.named_parameters():
            assert p.grad is not None and torch.count_nonzero(ref[n].grad) > 0
            assert torch.allclose(p.grad, alpha[k] * ref[n].grad, atol=1e-6), n


def test_batchnorm_running_statistics_are_one_shared_buffer():
    ens = ensemble([tiny_bn_model(0), tiny_bn_model(1)])
    bn0, bn1 = ens.members[0].encoder[1], ens.members[1].encoder[1]
    assert bn0.running_mean is bn1.running_mean and bn0.running_var is bn1.running_var
    before = bn0.running_mean.clone()
    ens.train()
    ens(torch.randn(16, 6) + 3.0, torch.tensor([0.3, 0.7]))
    assert not torch.equal(before, bn0.running_mean)  # updated in place by the functional call
    assert bn1.running_mean is bn0.running_mean
    # a state_dict round trip keeps them tied
    ens2 = ensemble([tiny_bn_model(3), tiny_bn_model(4)])
    ens2.load_state_dict(ens.state_dict())
    assert torch.equal(ens2.members[1].encoder[1].running_mean, bn0.running_mean)
    assert ens2.members[1].encoder[1].running_mean is ens2.members[0].encoder[1].running_mean


# ------------------------------------------------------------------------------------------------
# Dirichlet sampling
# ------------------------------------------------------------------------------------------------
def test_dirichlet_samples_lie_on_the_simplex_and_concentrate_as_p_grows():
    torch.manual_seed(0)
    T, n = 3, 20000
    stds = []
    for p in (1.0, 5.0, 50.0):
        a = pml.sample_alphas(p, T, n)
        assert a.shape == (n, T)
        assert torch.all(a >= 0) and torch.allclose(a.sum(-1), torch.ones(n), atol=1e-5)
        assert torch.allclose(a.mean(0), torch.full((T,), 1 / T), atol=0.01)
        var = (1 / T) * (1 - 1 / T) / (T * p + 1)  # variance of one coordinate of Dir(p 1_T)
        assert abs(float(a[:, 0].var()) / var - 1) < 0.1
        stds.append(float(a.std(0).mean()))
    assert stds[0] > stds[1] > stds[2]
    assert pml.sample_alphas(2.0, 2, 4, (5,)).shape == (5, 4, 2)


def test_concentration_warm_start_is_linear_from_p0_to_p():
    from types import SimpleNamespace

    a = SimpleNamespace(p=1.0, p0=5.0, warmup_epochs=4)
    assert [pml.concentration(a, e) for e in (0, 2, 4, 9)] == [5.0, 3.0, 1.0, 1.0]
    assert pml.concentration(SimpleNamespace(p=2.0, p0=None, warmup_epochs=0), 3) == 2.0


# ------------------------------------------------------------------------------------------------
# the multi-forward regulariser (Eq. 3, lexicographic graphs)
# ------------------------------------------------------------------------------------------------
def test_regulariser_zero_when_every_edge_respects_its_ordering():
    alphas = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    # the larger alpha_t, the lower L_t: task 1 loss decreasing in alpha_1, task 2 in alpha_2
    L = torch.stack([1 - alphas[:, 0], 2 * (1 - alphas[:, 1])], -1)
    assert float(pml.multiforward_regulariser(alphas, L)) == 0.0
    assert float(pml.multiforward_regulariser(alphas, -L)) > 0.0  # every ordering reversed
    assert float(pml.multiforward_regulariser(alphas[:1], L[:1])) == 0.0  # W = 1: no edges


def test_regulariser_hand_computed_w3():
    alphas = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    L = torch.tensor([[1.0, 0.3], [1.5, 0.6], [0.7, 0.9]])
    # task 1, alpha_1 ascending 0.2 -> 0.5 -> 0.9: losses 1.0 -> 1.5 (violation 0.5) -> 0.7 (fine)
    # task 2, alpha_2 ascending 0.1 -> 0.5 -> 0.8: losses 0.9 -> 0.6 -> 0.3 (fine, fine)
    expected = math.log((math.exp(0.5) + math.exp(0.0)) / 2) + math.log((1 + 1) / 2)
    assert float(pml.multiforward_regulariser(alphas, L)) == pytest.approx(expected, abs=1e-6)
    # batched: one value per leading index, gradients only through the violating edge
    Lb = torch.stack([L, L.flip(0)]).requires_grad_(True)
    R = pml.multiforward_regulariser(torch.stack([alphas, alphas.flip(0)]), Lb)
    assert R.shape == (2,) and torch.allclose(R, torch.full((2,), expected), atol=1e-6)
    R[0].backward()
    w = math.exp(0.5) / (math.exp(0.5) + 1)
    assert torch.allclose(Lb.grad[0], torch.tensor([[-w, 0.0], [w, 0.0], [0.0, 0.0]]), atol=1e-6)


def test_lexicographic_graph_one_edge_per_node_and_ties():
    alphas = torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.5, 0.3], [0.5, 0.2, 0.3]])
    # task 1: alpha_1 ties between rows 0 and 1, broken by alpha_2 (0.3 < 0.5)
    assert pml.lexicographic_order(alphas, 0).tolist() == [0, 1, 2]
    assert pml.lexicographic_order(alphas, 1).tolist() == [2, 0, 1]
    # task 3: alpha_3 ties between rows 1 and 2, broken by alpha_1 (cyclic order after task 3)
    assert pml.lexicographic_order(alphas, 2).tolist() == [1, 2, 0]
    # |E_t| = W - 1: one violated edge of size v among W - 1 gives log((e^v + W - 2) / (W - 1))
    W = 5
    a = torch.stack([torch.linspace(0.1, 0.9, W), 1 - torch.linspace(0.1, 0.9, W)], -1)
    L = torch.stack([1 - a[:, 0], 1 - a[:, 1]], -1)
    L[2, 0] += 1.0  # node 2 (alpha_1 = 0.5) worse than node 1 (alpha_1 = 0.3) by 1.2 on task 1
    v = float(L[2, 0] - L[1, 0])
    assert float(pml.multiforward_regulariser(a, L)) == pytest.approx(
        math.log((math.exp(v) + W - 2) / (W - 1)), abs=1e-6)


# ------------------------------------------------------------------------------------------------
# balancing schemes
# ------------------------------------------------------------------------------------------------
def test_loss_balancer_is_the_running_mean_of_the_last_w_steps():
    b = pml.LossBalancer(window=2)
    assert torch.equal(b.update(torch.tensor([2.0, 4.0])), torch.tensor([2.0, 4.0]))  # tau_0 < W: what exists
    assert torch.equal(b.update(torch.tensor([6.0, 8.0])), torch.tensor([4.0, 6.0]))
    assert torch.equal(b.update(torch.tensor([10.0, 12.0])), torch.tensor([8.0, 10.0]))  # oldest dropped
    assert torch.equal(b.update(torch.tensor([-20.0, 0.0])), torch.tensor([5.0, 6.0]))  # |mean|
    s = b.state_dict()
    c = pml.LossBalancer(7)
    c.load_state_dict(s)
    assert c.window == 2 and torch.equal(c.update(torch.tensor([0.0, 0.0])), torch.tensor([10.0, 0.0]).clamp_min(1e-8))


def test_gradient_balancing_unit_norm_shared_plain_heads_plus_regulariser():
    torch.manual_seed(0)
    ens = ensemble([build_model("mlp", TWO) for _ in range(2)])
    x, ys = torch.randn(8, 6), [torch.randint(0, 3, (8,)), torch.randint(0, 4, (8,))]
    alphas = torch.tensor([[0.3, 0.7], [0.8, 0.2]])

    def losses():
        rows = []
        for i in range(2):
            out = ens(x, alphas[i])
            rows.append(torch.stack([nn.functional.cross_entropy(out[0], ys[0]) * 10,  # task 1 ten times the scale
                                     nn.functional.cross_entropy(out[1], ys[1])]))
        return torch.stack(rows)

    shared = ens.shared_parameters()
    expected = {p: torch.zeros_like(p) for p in ens.parameters()}
    L = losses()
    R = 0.5 * pml.multiforward_regulariser(alphas, L)
    for i in range(2):
        for t in range(2):
            g = torch.autograd.grad(L[i, t], shared, retain_graph=True)
            norm = torch.sqrt(sum((x_ ** 2).sum() for x_ in g))
            for p, gp in zip(shared, g):
                expected[p] += alphas[i, t] * gp / norm
            heads = ens.task_parameters(t)
            for p, h in zip(heads, torch.autograd.grad(L[i, t], heads, retain_graph=True)):
                expected[p] += alphas[i, t] * h
    if R.requires_grad:
        for p, g in zip(list(ens.parameters()), torch.autograd.grad(R, list(ens.parameters()), retain_graph=True, allow_unused=True)):
            if g is not None:
                expected[p] += g
    L = losses()
    norms = pml.grad_balanced_backward(ens, alphas, L, 0.5 * pml.multiforward_regulariser(alphas, L))
    assert norms.shape == (2, 2) and torch.all(norms > 0)
    for p in ens.parameters():
        assert torch.allclose(p.grad, expected[p], atol=1e-5)
    # scale invariance on the shared parameters: task 1's loss x 10 leaves their update unchanged,
    # while head 1 (plain gradient) scales by 10
    pml.grad_balanced_backward(ens, alphas, losses())
    g_shared = [p.grad.clone() for p in shared]
    g_head = [p.grad.clone() for p in ens.task_parameters(0)]
    L10 = losses() * torch.tensor([10.0, 1.0])
    pml.grad_balanced_backward(ens, alphas, L10)
    for p, g in zip(shared, g_shared):
        assert torch.allclose(p.grad, g, atol=1e-5)
    for p, g in zip(ens.task_parameters(0), g_head):
        assert torch.allclose(p.grad, 10 * g, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# evaluation grids and hypervolume
# ------------------------------------------------------------------------------------------------
def test_evaluation_grids():
    g2 = evaluation_grid(2, 11)
    assert g2.shape == (11, 2) and np.allclose(g2[:, 0], np.linspace(1, 0, 11)) and np.allclose(g2.sum(1), 1)
    g3 = evaluation_grid(3, 11)
    assert g3.shape == (66, 3) and math.comb(12, 2) == 66
    assert np.all(g3 >= 0) and np.allclose(g3.sum(1), 1)
    assert len({tuple(np.round(r, 6)) for r in g3}) == 66
    assert np.allclose(np.sort(np.unique(np.round(g3 * 10, 6))), np.arange(11))  # spacing 1/10
    g5 = evaluation_grid(5, 11)
    assert g5.shape == (6, 5) and np.allclose(g5[-1], 0.2)
    assert np.array_equal(evaluation_grid(3, 11), simplex_grid(3, 11))


def test_one_network_is_selected_and_the_oracle_is_apart():
    data = fake_data([task("a", "class", 3), task("b", "huber")], (6,))
    val = [{"a": {"acc": 0.9}, "b": {"mae": 3.0, "huber": 1.0}},
           {"a": {"acc": 0.5}, "b": {"mae": 2.0, "huber": 1.0}},
           {"a": {"acc": 0.1}, "b": {"mae": 1.0, "huber": 1.0}}]
    test = [{"a": {"acc": 0.8}, "b": {"mae": 3.5, "huber": 0.5}},
            {"a": {"acc": 0.85}, "b": {"mae": 2.5, "huber": 0.4}},
            {"a": {"acc": 0.2}, "b": {"mae": 1.5, "huber": 0.9}}]

    class FakeRun:  # the scale-free score without a reference: 100/K sum s_k log M_k
        def selection_score(self, m):
            return selection_score(m, data.tasks)

    # log-ratio scores: 0: (log .9 - log 3)/2, 1: (log .5 - log 2)/2, 2: (log .1 - log 1)/2 -> network 0
    assert pml.select_network(FakeRun(), val) == 0
    assert pml.best_of_subspace(data, test) == {"a": {"acc": 0.85}, "b": {"mae": 1.5, "huber": 0.4}}
    pts, flags = pml.primary_points(data, test)
    assert flags == [True, False] and pts.shape == (3, 2)
    # front of two accuracies with reference (0, 0): union of the boxes
    assert pml.front_hypervolume(np.array([[0.9, 0.5], [0.5, 0.9]]), [0, 0], [True, True]) == pytest.approx(0.45 + 0.45 - 0.25)


# ------------------------------------------------------------------------------------------------
# the toy problem (App. C)
# ------------------------------------------------------------------------------------------------
def test_toy_pairs_and_main_pair():
    pairs, Theta = pml.toy_pairs()
    assert len(pairs) == 25 and Theta.shape == (25, 2, 2)
    assert Theta[pairs.index((0, 2))].tolist() == [[-8.5, 7.5], [9.0, 9.0]]
    assert pml.main_toy_pair(1.0) == (0, 2)
    imgs = pml.toy_subspace_losses(Theta.double(), 1.0, 11)
    assert imgs.shape == (25, 11, 2)
    assert torch.allclose(imgs[:, 0], toy_losses(Theta[:, 0].double(), 1.0))  # alpha_1 = 1: member 1
    assert torch.allclose(imgs[:, -1], toy_losses(Theta[:, 1].double(), 1.0))


def test_toy_coverage_of_the_front_itself_and_of_a_point():
    front = toy_pareto_front(1.0)
    cov = pml.toy_coverage([front, front[:1].repeat(3, 0), front[: len(front) // 2]], front, 0.02)
    assert cov[0] == 1.0 and cov[1] < 0.05 and 0.4 < cov[2] < 0.6
    hv, hv_front, ref = pml.toy_hypervolumes([front, front[:1]], front)
    assert hv[0] == pytest.approx(hv_front) and hv[1] < 0.2 * hv_front


def test_toy_short_run_recovers_the_front_c1():
    """c = 1, the pair (9, -1) / (-7.5, -0.5), W = 2, lambda = 1, 1,000 Adam steps at lr 2e-2 (a short
    run; the paper: 50K steps at 2e-3): the subspace's hypervolume goes from < 85% to within 5% of
    the analytic front's (reference: the front's nadir + 10% of its range)."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    init = torch.tensor([[[9.0, -1.0], [-7.5, -0.5]]])
    Theta = nn.Parameter(init.clone())
    opt = torch.optim.Adam([Theta], lr=2e-2)
    args = SimpleNamespace(p_now=1.0, window=2, lam=1.0, balancing="none", clip_grad=None)
    front = toy_pareto_front(1.0)
    hv0, hv_front, _ = pml.toy_hypervolumes(pml.toy_subspace_losses(init.double(), 1.0, 201).numpy(), front)
    for _ in range(1000):
        pml.toy_step(Theta, opt, args, None, 1.0)
    img = pml.toy_subspace_losses(Theta.detach().double(), 1.0, 201).numpy()
    hv, hv_front, _ = pml.toy_hypervolumes(img, front)
    assert hv0[0] < 0.85 * hv_front
    assert hv[0] >= 0.95 * hv_front
    assert pml.toy_coverage(img, front, 0.05)[0] >= 0.8


def test_toy_end_to_end_writes_trajectories_and_coverage(tmp_path, monkeypatch):
    import common.data

    monkeypatch.setattr(common.data, "toy_pareto_front", toy_pareto_front)  # the cached one
    out = tmp_path / "toy"
    m = pml.main(["--dataset", "toy", "--c", "0.1", "--balancing", "loss", "--steps", "30", "--out", str(out)] + QUIET)
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt", "toy_trajectories.png", "toy_subspaces.png"):
        assert (out / f).is_file(), f
    assert len(m["pairs"]) == 25 and len(m["front"]) == 11
    assert m["pml"]["balancing"] == "loss" and m["pml"]["c"] == 0.1 and m["steps"] == 30
    assert 0 <= m["coverage"]["mean"] <= 1 and 0 <= m["coverage"]["recovered_pairs"] <= 25
    assert np.isfinite(m["hypervolume"]) and m["hypervolume_analytic_front"] > 0
    assert m["front"][0]["preference"] == [1.0, 0.0]
    from reproduce.aggregate import toy_trajectory  # what PML Figs. 7-14 of run_all.sh draw

    traj = toy_trajectory(str(out / "checkpoint.pt"))
    assert traj is not None and traj.shape[1:] == (25, 2, 2) and len(traj) >= 2 and np.isfinite(traj).all()


# ------------------------------------------------------------------------------------------------
# end to end on real data
# ------------------------------------------------------------------------------------------------
def _check_run(out, m, n_points, tasks):
    for f in ("config.json", "log.csv", "metrics.json", "checkpoint.pt"):
        assert (out / f).is_file(), f
    disk = json.loads((out / "metrics.json").read_text())
    assert disk["method"] == "pml" and disk["front"] == m["front"]
    assert len(m["front"]) == n_points
    for pt in m["front"]:
        assert len(pt["preference"]) == len(tasks) and abs(sum(pt["preference"]) - 1) < 1e-6
        assert set(pt["tasks"]) == set(tasks) and set(pt["val"]) == set(tasks)
        assert all(np.isfinite(v) for r in pt["tasks"].values() for v in r.values())
    assert set(m["tasks"]) == set(tasks)
    assert m["hypervolume"] is None or np.isfinite(m["hypervolume"])
    ck = torch.load(out / "checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert len(ck["state"]["tracked"]["members"]) > 0 and "model" in ck["state"]["tracked"]


def test_multimnist_lite_end_to_end_11_point_front_then_resume(tmp_path):
    out = tmp_path / "mm"
    common = ["--batch-size", "5000", "--out", str(out)] + QUIET  # 2 steps per epoch
    m = pml.main(["--epochs", "1", "--window", "2", "--lam", "1"] + common)
    _check_run(out, m, 11, ["left", "right"])
    assert m["dataset"] == "multimnist-lite" and m["pml"]["lr"] == pytest.approx(2e-3)  # 2 x 1e-3
    assert [pt["preference"] for pt in m["front"]][:2] == [[1.0, 0.0], [0.9, 0.1]]
    assert 0 <= m["hypervolume"] <= 1 and 0 <= m["hypervolume_val"] <= 1 and m["hypervolume_split"] == "test"
    # delta_m is the selected network's (one alpha, best on validation), the oracle is apart
    i = [pt["preference"] for pt in m["front"]].index(m["selected_preference"])
    ref = m["reference"]["values"]
    assert m["reference"]["kind"] == "shipped" and m["tasks"] == m["front"][i]["tasks"]
    assert m["delta_m"] == pytest.approx(delta_m(m["front"][i]["tasks"], ref, TWO_MNIST.tasks))
    scores = [selection_score(pt["val"], TWO_MNIST.tasks, ref) for pt in m["front"]]
    assert scores[i] == max(scores)
    front_dm = [delta_m(pt["tasks"], ref, TWO_MNIST.tasks) for pt in m["front"]]
    assert m["delta_m_best_of_subspace_test"] <= min(front_dm) + 1e-9 and "oracle" in m["best_of_subspace_note"]
    accs = np.array([[pt["val"]["left"]["acc"], pt["val"]["right"]["acc"]] for pt in m["front"]])
    assert m["hypervolume_val"] == pytest.approx(hypervolume(accs, [0, 0], maximize=True))
    accs = np.array([[pt["tasks"]["left"]["acc"], pt["tasks"]["right"]["acc"]] for pt in m["front"]])
    assert m["hypervolume"] == pytest.approx(hypervolume(accs, [0, 0], maximize=True))
    assert (out / "front.png").is_file() and (out / "curves.png").is_file()
    assert len(m["members_cosine"]) == 2 and m["members_cosine"][0][0] == pytest.approx(1.0)
    ck1 = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck1["epoch"] == 0 and ck1["global_step"] == 2
    net = build_model("lenet", TWO_MNIST)  # "model" is the centre network in MTLModel format
    net.load_state_dict(ck1["state"]["tracked"]["model"])
    w = {k: v for k, v in ck1["state"]["tracked"]["members"].items() if k.endswith("encoder.fc.weight")}
    assert torch.allclose(net.encoder.fc.weight, 0.5 * (w["members.0.encoder.fc.weight"] + w["members.1.encoder.fc.weight"]))

    with pytest.raises(UsageError, match="already holds a run"):  # never overwritten silently
        pml.main(["--epochs", "1"] + common)
    with pytest.raises(UsageError, match=r"--window 2 \(now 1\)"):  # a resume continues the same run
        pml.main(["--epochs", "2", "--window", "1", "--lam", "1", "--resume"] + common)
    m2 = pml.main(["--epochs", "2", "--window", "2", "--lam", "1", "--resume"] + common)
    ck2 = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck2["epoch"] == 1 and ck2["global_step"] == 4 and m2["steps"] == 4 and len(m2["front"]) == 11
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + one row per epoch
    assert not torch.equal(ck1["state"]["tracked"]["members"]["members.0.encoder.fc.weight"],
                           ck2["state"]["tracked"]["members"]["members.0.encoder.fc.weight"])


def test_multimnist3_lite_simplex_grid_and_plot(tmp_path):
    out = tmp_path / "mm3"
    m = pml.main(["--dataset", "multimnist3-lite", "--max-steps", "1", "--grid-n", "3", "--balancing", "grad",
                  "--out", str(out)] + QUIET)
    _check_run(out, m, 6, ["top_left", "top_right", "bottom"])
    assert (out / "simplex.png").is_file() and np.isfinite(m["hypervolume"])
    assert m["pml"]["window"] == 3 and m["pml"]["lr"] == pytest.approx(3e-3)


# tiny files in the real on-disk layouts --------------------------------------------------------
ADULT_ROW = ("{age}, Private, 77516, {edu}, 13, Never-married, Adm-clerical, Not-in-family, White, {sex}, "
             "2174, 0, 40, United-States, {inc}")


def write_census(root, n=40):
    d = root / "census"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [ADULT_ROW.format(age=int(rng.integers(18, 80)), edu=["Bachelors", "HS-grad", "Masters"][i % 3],
                             sex=["Male", "Female"][i % 2], inc=["<=50K", ">50K"][i % 2]) for i in range(n)]
    (d / "adult.data").write_text("\n".join(rows) + "\n")
    (d / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(r + "." for r in rows[:12]) + "\n")


def write_utkface(root, n=12):
    from PIL import Image

    d = root / "utkface"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
        img.save(d / f"{20 + i}_{i % 2}_{i % 5}_2017010{i:02d}.jpg.chip.jpg")


def write_cityscapes(root, n=3, h=32, w=64):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for kind in ("image", "label_7", "depth"):
            (root / "cityscapes" / split / kind).mkdir(parents=True)
        for i in range(n):
            np.save(root / "cityscapes" / split / "image" / f"{i}.npy", rng.random((h, w, 3)).astype(np.float32))
            np.save(root / "cityscapes" / split / "label_7" / f"{i}.npy", rng.integers(-1, 7, (h, w)).astype(np.float32))
            np.save(root / "cityscapes" / split / "depth" / f"{i}.npy", rng.random((h, w, 1)).astype(np.float32))


def test_census_tiny_real_format(tmp_path):
    write_census(tmp_path / "data")
    out = tmp_path / "census"
    m = pml.main(["--dataset", "census", "--data-root", str(tmp_path / "data"), "--epochs", "1",
                  "--out", str(out)] + QUIET)
    _check_run(out, m, 11, ["age", "education"])
    assert m["pml"]["window"] == 2 and m["pml"]["lambda"] == 5.0


def test_utkface_tiny_real_format_grad_balancing(tmp_path):
    write_utkface(tmp_path / "data")
    out = tmp_path / "utk"
    m = pml.main(["--dataset", "utkface", "--data-root", str(tmp_path / "data"), "--max-steps", "1",
                  "--batch-size", "4", "--grid-n", "2", "--out", str(out)] + QUIET)
    _check_run(out, m, 3, ["age", "gender", "ethnicity"])
    assert m["pml"]["balancing"] == "grad" and m["pml"]["members"] == 3
    assert m["hypervolume_ref"] == [1.0, 0.0, 0.0]  # age (normalised, lower is better): 1; accuracies: 0


def test_cityscapes_tiny_real_format_segnet(tmp_path):
    write_cityscapes(tmp_path / "data")
    out = tmp_path / "city"
    # one forward and one backward through the two SegNet members (grad balancing is covered elsewhere)
    m = pml.main(["--dataset", "cityscapes", "--data-root", str(tmp_path / "data"), "--max-steps", "1",
                  "--batch-size", "2", "--window", "1", "--balancing", "none", "--grid-n", "2", "--out", str(out)] + QUIET)
    _check_run(out, m, 2, ["segmentation", "depth"])
    assert m["val_is_test"] is True and m["pml"]["lr"] == pytest.approx(2e-4) and m["pml"]["p"] == 5.0
    assert m["hypervolume_ref"] == [0.0, 1.0]  # mIoU 0, depth abs err 1: the suite's one rule


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_flag_exits_2_with_one_line_and_touches_nothing(tmp_path):
    out = tmp_path / "bad"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "methods", "pml.py"), "--p", "-1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--p must be a positive number" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--window", "0"], "--window must be a positive integer"),
    (["--steps", "5"], "--steps is for --dataset toy"),
    (["--lam", "-1"], "--lam must be"),
    (["--grid-n", "1"], "--grid-n must be >= 2"),
    (["--hv-ref", "a,b"], "--hv-ref must be comma-separated numbers"),
    (["--p0", "5"], "--p0 and --warmup-epochs go together"),
    (["--balance-window", "0"], "--balance-window must be a positive integer"),
])
def test_bad_values_are_usage_errors_before_anything_is_written(tmp_path, flags, message):
    out = tmp_path / "o"
    with pytest.raises(UsageError, match=message):
        pml.main(flags + ["--out", str(out)] + QUIET)
    assert not out.exists()


def test_hv_ref_of_the_wrong_length_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--hv-ref needs 2 numbers"):
        pml.main(["--max-steps", "1", "--window", "1", "--grid-n", "2", "--hv-ref", "0,0,0", "--out", str(tmp_path / "o")] + QUIET)


# ------------------------------------------------------------------------------------------------
# the one defaults table (DEFAULTS): --help prints it, Run resolves it, config.json records it
# ------------------------------------------------------------------------------------------------
def _help(mod) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(buf):
        mod.parse_args(["--help"])
    return buf.getvalue()


def test_help_prints_the_defaults_table_and_config_records_the_resolved_values(tmp_path):
    text = _help(pml)
    assert "every dataset: window=3, lam=1, p=1, balancing=none, balance_window=25, eval_every=1" in text
    assert ("multimnist-lite      epochs 10, batch 256, Adam lr 0.002, no schedule, select last; "
            "window=4, lam=0, p=1, balancing=none") in text
    assert ("cityscapes           epochs 100, batch 8, Adam lr 0.0002, StepLR(step 75, gamma 0.5), select last, augment; "
            "window=3, lam=1, p=5, balancing=grad, eval_every=20") in text
    assert "nyuv2                epochs 200, batch 2, Adam lr T x the dataset's lr (m-fold, Sec. 5)" in text
    args = pml.parse_args(["--out", str(tmp_path / "o")] + QUIET)
    pml.make_run(args)
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    want = dict(epochs=10, batch_size=256, lr=2e-3, window=4, lam=0.0, p=1.0, balancing="none", balance_window=25, eval_every=1)
    assert {k: cfg["args"][k] for k in want} == want and {k: cfg["defaults_used"][k] for k in want} == want


def test_the_m_fold_learning_rate_of_a_dataset_without_its_own_row(tmp_path, monkeypatch):
    # multimnist-lite without its row's lr: the table's Derived gives T x the dataset's 1e-3 (Sec. 5)
    monkeypatch.setitem(pml.DEFAULTS, "multimnist-lite", {k: v for k, v in pml.DEFAULTS["multimnist-lite"].items() if k != "lr"})
    run = pml.make_run(pml.parse_args(["--out", str(tmp_path / "o")] + QUIET))
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert run.args.lr == pytest.approx(2e-3) and cfg["args"]["lr"] == cfg["defaults_used"]["lr"] == pytest.approx(2e-3)
    assert pml.m_fold_lr(pml.parse_args(["--dataset", "nyuv2"]), TWO) == pytest.approx(2e-4)  # T = 2 x nyuv2's 1e-4
    run = pml.make_run(pml.parse_args(["--lr", "5e-4", "--out", str(tmp_path / "g")] + QUIET))  # a given --lr stays
    assert run.args.lr == 5e-4


def test_toy_resume_continues_to_the_uninterrupted_run(tmp_path, monkeypatch):
    import common.data

    monkeypatch.setattr(common.data, "toy_pareto_front", toy_pareto_front)  # the cached one
    monkeypatch.setattr(pml._harness(), "TOY_STEPS_PER_EPOCH", 10)  # 3 "epochs" of 10 steps
    flags = ["--dataset", "toy", "--c", "0.1", "--balancing", "loss", "--steps", "30"] + QUIET
    whole = pml.main(flags + ["--out", str(tmp_path / "a")])
    pml.main(flags + ["--max-steps", "10", "--out", str(tmp_path / "b")])
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert ck["epoch"] == 0 and len(ck["state"]["values"]["traj"]) == 11 and "members" in ck["state"]["tracked"]
    resumed = pml.main(flags + ["--resume", "--out", str(tmp_path / "b")])
    assert resumed["steps"] == whole["steps"] == 30
    assert resumed["pairs"] == whole["pairs"] and resumed["front"] == whole["front"]
    assert len((tmp_path / "b" / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 epochs
