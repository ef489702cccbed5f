"""Property tests for common/aggregators.py: every rule against its defining equation, a hand
computation or a brute-force search over the simplex."""
import itertools
import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import aggregators as A  # noqa: E402

D64 = torch.float64


def rand_G(T, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, d, generator=g, dtype=D64)


def simplex_grid(T, n):
    """All points of the simplex with coordinates in {0, 1/n, ..., 1}."""
    pts = [c for c in itertools.product(range(n + 1), repeat=T - 1) if sum(c) <= n]
    W = torch.tensor([list(c) + [n - sum(c)] for c in pts], dtype=D64) / n
    return W


def losses_of(T, value=1.0):
    return torch.full((T,), value, dtype=D64)


# ---------------------------------------------------------------------------------------------
# MGDA
# ---------------------------------------------------------------------------------------------

def test_mgda_two_tasks_closed_form_by_hand():
    # g1 = (1, 0), g2 = (0, 2): w1 = (4 - 0) / (1 + 4) = 0.8, d = (0.8, 0.4)
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=D64)
    d, w = A.make_aggregator("mgda", 2).direction(G, losses_of(2))
    assert torch.allclose(w, torch.tensor([0.8, 0.2], dtype=D64))
    assert torch.allclose(d, torch.tensor([0.8, 0.4], dtype=D64))
    # one gradient inside the other's half-space beyond it: the shorter one is the min-norm point
    G = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=D64)
    d, w = A.make_aggregator("mgda", 2).direction(G, losses_of(2))
    assert torch.allclose(w, torch.tensor([1.0, 0.0], dtype=D64)) and torch.allclose(d, G[0])


@pytest.mark.parametrize("solver", ["frank-wolfe", "exact"])
@pytest.mark.parametrize("T,n", [(2, 2000), (3, 150)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mgda_is_min_norm_point_of_hull(T, n, seed, solver):
    G = rand_G(T, 6, seed) + (0.7 if seed == 1 else 0.0)   # seed 1: an interior solution
    agg = A.make_aggregator("mgda", T, solver=solver)
    d, w = agg.direction(G, losses_of(T))
    W = simplex_grid(T, n)
    grid_norms = ((W @ G) ** 2).sum(1)
    best = float(grid_norms.min())
    assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-12
    assert torch.allclose(d, w @ G)
    assert float(d @ d) <= best + 1e-6            # no grid point is shorter
    assert float(d @ d) >= best - 5.0 / n          # and the grid's best is close to it
    # the paper's property: g_t . d >= ||d||^2 for every task (common descent direction)
    assert float((G @ d).min()) >= float(d @ d) - 1e-5 * (1 + float(d @ d))
    if T == 2:  # exact closed form
        g1, g2 = G
        gam = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))
        gam = min(1.0, max(0.0, gam))
        assert torch.allclose(d, gam * g1 + (1 - gam) * g2, atol=1e-12)


@pytest.mark.parametrize("T,d,seed", [(8, 5, 0), (10, 40, 1), (40, 100, 2)])
def test_mgda_exact_solver_and_frank_wolfe_on_many_tasks(T, d, seed):
    G = rand_G(T, d, seed) + 0.3
    L = losses_of(T)
    de, we = A.make_aggregator("mgda", T, solver="exact").direction(G, L)
    df, wf = A.make_aggregator("mgda", T, solver="frank-wolfe").direction(G, L)
    n_exact, n_fw = float(de @ de), float(df @ df)
    # exact: KKT of min ||G^T w||^2 on the simplex: (G d)_t = ||d||^2 on the support, >= elsewhere
    Gd = G @ de
    assert float(Gd.min()) >= n_exact - 1e-9
    assert torch.allclose(Gd[we > 1e-9], torch.full_like(Gd[we > 1e-9], n_exact), atol=1e-8)
    assert float(we.min()) >= 0 and abs(float(we.sum()) - 1) < 1e-12
    # Frank-Wolfe (paper / official limits: 250 iterations) is within a few percent of it
    assert n_exact - 1e-12 <= n_fw <= 1.05 * n_exact + 1e-9


def test_mgda_default_solver_reaches_the_min_norm_point_on_five_tasks():
    # a T = 5 Jacobian on which Frank-Wolfe (250 iterations, tol 1e-5) stops ~0.4% above the minimum
    G = rand_G(5, 6, 12) + 1.0
    L = losses_of(5)
    d, w = A.make_aggregator("mgda", 5).direction(G, L)
    n = float(d @ d)
    # optimality of min ||G^T w||^2 on the simplex (KKT, sufficient for this convex problem):
    # (G d)_t >= ||d||^2 for every t, with equality wherever w_t > 0
    Gd = G @ d
    assert float(Gd.min()) >= n - 1e-9
    assert float((w * (Gd - n)).abs().max()) <= 1e-9
    # the minimum it certifies, recomputed by a generic solver, agrees to 1e-9
    from scipy.optimize import minimize
    K = (G @ G.T).numpy()
    res = minimize(lambda v: v @ K @ v, np.full(5, 0.2), jac=lambda v: 2 * K @ v, method="SLSQP",
                   bounds=[(0, 1)] * 5, constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert abs(n - float(res.fun)) <= 1e-9 * (1 + n)
    fw, _ = A.make_aggregator("mgda", 5, solver="frank-wolfe").direction(G, L)
    assert float(fw @ fw) > n * (1 + 1e-3)     # the case is one where Frank-Wolfe stops early


def test_mgda_zero_in_hull_and_identical_gradients():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]], dtype=D64)   # 0 = (g1 + g2 + g3) / 3... hull
    for solver in ("frank-wolfe", "exact"):
        d, w = A.make_aggregator("mgda", 3, solver=solver).direction(G, losses_of(3))
        assert float(d.norm()) < 1e-2 if solver == "frank-wolfe" else float(d.norm()) < 1e-9
    G = torch.ones(3, 4, dtype=D64)
    for solver in ("frank-wolfe", "exact"):
        d, _ = A.make_aggregator("mgda", 3, solver=solver).direction(G, losses_of(3))
        assert torch.allclose(d, G[0])


def test_mgda_normalisation_and_ub():
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=D64)
    L = torch.tensor([1.0, 1.0], dtype=D64)
    # l2: the min-norm point of the UNIT gradients is the midpoint -> w = (0.5, 0.5) applied to raw g
    d, w = A.make_aggregator("mgda", 2, normalization="l2").direction(G, L)
    assert torch.allclose(w, torch.tensor([0.5, 0.5], dtype=D64))
    assert torch.allclose(d, torch.tensor([0.5, 1.0], dtype=D64))
    # mgda-ub runs the same solver on the representation gradients
    ub = A.make_aggregator("mgda-ub", 2)
    assert ub.needs == "representation"
    assert torch.allclose(ub.weights(L, G), torch.tensor([0.8, 0.2], dtype=D64))
    with pytest.raises(ValueError):
        A.make_aggregator("mgda", 2, normalization="bogus")


# ---------------------------------------------------------------------------------------------
# PCGrad
# ---------------------------------------------------------------------------------------------

def test_pcgrad_hand_computed():
    # g1 = (1, 0), g2 = (-1, 1), g1.g2 = -1:
    # g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1), sum = (0.5, 1.5)
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=D64)
    d, w = A.make_aggregator("pcgrad", 2).direction(G, losses_of(2))
    assert w is None
    assert torch.allclose(d, torch.tensor([0.5, 1.5], dtype=D64))
    # no conflict: plain sum
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D64)
    d, _ = A.make_aggregator("pcgrad", 2).direction(G, losses_of(2))
    assert torch.allclose(d, G.sum(0))


@pytest.mark.parametrize("seed", range(6))
def test_pcgrad_two_tasks_leaves_no_conflict(seed):
    G = rand_G(2, 7, seed)
    if float(G[0] @ G[1]) > 0:
        G[1] = -G[1]
    agg = A.make_aggregator("pcgrad", 2, generator=torch.Generator().manual_seed(seed))
    d, _ = agg.direction(G, losses_of(2))
    P = agg.last_coefficients @ G           # the projected gradients
    assert abs(float(P[0] @ G[1])) < 1e-10 and abs(float(P[1] @ G[0])) < 1e-10
    assert float(P[0] @ P[1]) >= -1e-10
    assert torch.allclose(d, P.sum(0))


def test_pcgrad_projects_against_original_gradients_in_random_order():
    G = rand_G(4, 6, 11)
    agg = A.make_aggregator("pcgrad", 4, generator=torch.Generator().manual_seed(0))
    d, _ = agg.direction(G, losses_of(4))
    # every projected gradient is g_i minus multiples of the ORIGINAL others, never of itself
    C = agg.last_coefficients
    assert torch.allclose(C.diagonal(), torch.ones(4, dtype=D64))
    assert float((C - torch.eye(4, dtype=D64)).min()) >= 0.0   # only conflicting parts removed
    # same generator seed -> same result
    d2, _ = A.make_aggregator("pcgrad", 4, generator=torch.Generator().manual_seed(0)).direction(G, losses_of(4))
    assert torch.allclose(d, d2)


# ---------------------------------------------------------------------------------------------
# IMTL
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T,seed", [(2, 0), (3, 1), (5, 2)])
def test_imtl_g_equal_projections_on_unit_gradients(T, seed):
    G = rand_G(T, 12, seed) * torch.tensor([1.0, 10.0, 0.1, 3.0, 0.5][:T], dtype=D64)[:, None]
    agg = A.make_aggregator("imtl", T)
    d, w = agg.direction(G, losses_of(T))
    U = G / G.norm(dim=1, keepdim=True)
    proj = U @ d
    assert torch.allclose(proj, proj.mean().expand(T), rtol=1e-9, atol=1e-12)
    assert abs(float(agg.last_weights.sum()) - 1) < 1e-9
    assert torch.allclose(d, agg.last_weights @ G)
    assert w is None                     # heads: their own losses (paper)


def test_imtl_g_invariant_to_gradient_scaling():
    G = rand_G(3, 9, 5)
    d1, _ = A.make_aggregator("imtl", 3).direction(G, losses_of(3))
    G2 = G.clone()
    G2[1] *= 7.0
    d2, _ = A.make_aggregator("imtl", 3).direction(G2, losses_of(3))
    cos = float(d1 @ d2 / (d1.norm() * d2.norm()))
    assert cos > 1 - 1e-10


def test_imtl_loss_and_hybrid_modes():
    L = torch.tensor([2.0, 0.5], dtype=D64)
    agg = A.make_aggregator("imtl", 2, mode="loss")
    assert agg.needs == "losses" and len(agg.parameters()) == 1
    Lr = L.clone().requires_grad_(True)
    out = agg.loss(Lr)
    assert abs(out.item() - 2.5) < 1e-6                   # sum(e^0 L - 0)
    s = agg.parameters()[0]
    (gs,) = torch.autograd.grad(agg.loss(L), s)
    assert torch.allclose(gs.double(), L - 1)            # d/ds (e^s L - s) = e^s L - 1
    hyb = A.make_aggregator("imtl", 2, mode="hybrid", scale_lr=0.01)
    G = rand_G(2, 5, 0)
    d, w = hyb.direction(G, L)
    assert torch.allclose(w, torch.ones(2, dtype=D64))   # e^0 before the step
    # first Adam step moves s by -lr * sign(e^s L - 1) = (-0.01, +0.01)
    assert torch.allclose(hyb.log_scales.detach().double(), torch.tensor([-0.01, 0.01], dtype=D64), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Nash-MTL and FairGrad
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T,d,seed", [(2, 5, 0), (3, 10, 1), (4, 30, 2), (6, 50, 3)])
def test_nashmtl_solves_bargaining_equation(T, d, seed):
    G = rand_G(T, d, seed) * torch.linspace(0.2, 5.0, T, dtype=D64)[:, None]
    agg = A.make_aggregator("nashmtl", T)
    dvec, w = agg.direction(G, losses_of(T))
    Gram = G @ G.T
    K = Gram / torch.linalg.norm(Gram)
    beta, alpha = agg.last_beta, agg.alpha
    assert float(beta.min()) > 0
    assert torch.allclose(K @ beta, 1 / beta, rtol=1e-7)          # normalised Gram (official numerics)
    assert torch.allclose(Gram @ alpha, 1 / alpha, rtol=1e-7)     # the paper's equation
    assert torch.allclose(dvec, alpha @ G)
    assert torch.allclose(w, alpha)                               # heads: alpha-weighted loss
    assert torch.allclose(G @ dvec, 1 / alpha, rtol=1e-7)         # g_t . d = 1 / alpha_t
    assert agg.default_max_norm == 1.0


def test_nashmtl_two_tasks_by_hand_and_reuse():
    # Gram = diag(4, 1): alpha_t = 1/||g_t|| = (0.5, 1), d = (1, 1)
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=D64)
    agg = A.make_aggregator("nashmtl", 2, update_weights_every=2)
    d, w = agg.direction(G, losses_of(2))
    assert torch.allclose(w, torch.tensor([0.5, 1.0], dtype=D64)) and torch.allclose(d, torch.ones(2, dtype=D64))
    G2 = torch.tensor([[1.0, 1.0], [0.0, 3.0]], dtype=D64)
    d2, w2 = agg.direction(G2, losses_of(2))        # step 2: reuse alpha
    assert torch.allclose(w2, w) and torch.allclose(d2, w @ G2)
    _, w3 = agg.direction(G2, losses_of(2))         # step 3: re-solve
    assert torch.allclose((G2 @ G2.T) @ w3, 1 / w3, rtol=1e-7)


@pytest.mark.parametrize("alpha", [2.0, 0.5, 1.0, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_fairgrad_solves_its_equation(alpha, seed):
    T = 3
    G = rand_G(T, 8, seed) * torch.tensor([0.3, 1.0, 4.0], dtype=D64)[:, None]
    agg = A.make_aggregator("fairgrad", T, alpha=alpha)
    d, w = agg.direction(G, losses_of(T))
    x = agg.last_solution
    Gram = G @ G.T
    assert float(x.min()) > 0
    assert torch.allclose(Gram @ x, x.pow(-1.0 / alpha), rtol=1e-7)
    assert torch.allclose(d, T * (x @ G))         # reference notes: T * sum w_t g_t
    assert w is None and agg.default_max_norm == 1.0
    d1, _ = A.make_aggregator("fairgrad", T, alpha=alpha, scale_by_num_tasks=False).direction(G, losses_of(T))
    assert torch.allclose(d1 * T, d)
    if alpha == 1.0:                              # FairGrad(alpha = 1) is Nash-MTL
        dn, _ = A.make_aggregator("nashmtl", T).direction(G, losses_of(T))
        assert torch.allclose(d1, dn, rtol=1e-7)


def test_power_solver_handles_hard_and_degenerate_cases():
    G = rand_G(10, 40, 7) * torch.logspace(-2, 1, 10, dtype=D64)[:, None] + 3 * rand_G(1, 40, 8)
    Gram = G @ G.T
    K = Gram / torch.linalg.norm(Gram)
    w, its, res = A.solve_power_equation(K, 1.0, max_iter=50)
    assert res < 1e-8 and its <= 30
    # all-zero gradients: finite output, zero direction
    agg = A.make_aggregator("nashmtl", 2)
    d, w = agg.direction(torch.zeros(2, 3, dtype=D64), losses_of(2))
    assert torch.all(d == 0) and torch.isfinite(w).all()


# ---------------------------------------------------------------------------------------------
# CAGrad
# ---------------------------------------------------------------------------------------------

def test_cagrad_hand_checked_orthogonal_case():
    # g1, g2 orthonormal: g0 = (.5, .5), the dual optimum is w = (.5, .5) (g_w = g0), so
    # d = (1 + c) g0 / (1 + c^2) = 0.5 * 1.4 / 1.16 = 0.6034483 per coordinate
    G = torch.eye(2, dtype=D64)
    agg = A.make_aggregator("cagrad", 2)
    d, w = agg.direction(G, losses_of(2))
    assert w is None
    assert np.allclose(agg.last_dual, [0.5, 0.5], atol=1e-6)
    assert torch.allclose(d, torch.full((2,), 0.5 * 1.4 / 1.16, dtype=D64), atol=1e-7)


@pytest.mark.parametrize("T,n,seed", [(2, 4000, 0), (3, 200, 1), (3, 200, 2)])
def test_cagrad_solves_its_dual_against_a_grid(T, n, seed):
    G = rand_G(T, 6, seed) * torch.tensor([1.0, 3.0, 0.5][:T], dtype=D64)[:, None]
    c = 0.4
    agg = A.make_aggregator("cagrad", T, c=c, rescale=0)
    d, _ = agg.direction(G, losses_of(T))
    g0 = G.mean(0)
    sphi = c * float(g0.norm())

    def F(W):
        gw = W @ G
        return gw @ g0 + sphi * gw.norm(dim=-1)

    W = simplex_grid(T, n)
    w = torch.from_numpy(agg.last_dual)
    assert float(F(w)) <= float(F(W).min()) + 1e-9
    # primal: d maximises min_t g_t . d over the ball ||d - g0|| <= c ||g0||
    assert abs(float((d - g0).norm()) - sphi) < 1e-7
    gen = torch.Generator().manual_seed(seed)
    V = torch.randn(20000, G.shape[1], generator=gen, dtype=D64)
    V = g0 + sphi * V / V.norm(dim=1, keepdim=True) * torch.rand(20000, 1, generator=gen, dtype=D64).pow(1 / 6)
    assert float((G @ d).min()) >= float((V @ G.T).min(1).values.max()) - 1e-9


def test_cagrad_c_zero_is_mean_and_rescale_options():
    G = rand_G(3, 5, 4)
    d, _ = A.make_aggregator("cagrad", 3, c=0.0).direction(G, losses_of(3))
    assert torch.allclose(d, G.mean(0))
    d1, _ = A.make_aggregator("cagrad", 3).direction(G, losses_of(3))
    d0, _ = A.make_aggregator("cagrad", 3, rescale=0).direction(G, losses_of(3))
    dT, _ = A.make_aggregator("cagrad", 3, scale_by_num_tasks=True).direction(G, losses_of(3))
    assert torch.allclose(d1 * 1.16, d0, atol=1e-9) and torch.allclose(dT, 3 * d1)


# ---------------------------------------------------------------------------------------------
# GradDrop
# ---------------------------------------------------------------------------------------------

def test_graddrop_sign_consistency_and_limits():
    G = rand_G(3, 200, 9)
    agg = A.make_aggregator("graddrop", 3, generator=torch.Generator().manual_seed(0))
    d, w = agg.direction(G, losses_of(3))
    assert w is None
    # reconstruct the kept parts: in every coordinate only one sign survives
    P = 0.5 * (1 + G.sum(0) / (G.abs().sum(0) + 1e-8))
    U = torch.rand(200, generator=torch.Generator().manual_seed(0)).to(D64)
    M = ((P > U) & (G > 0)) | ((P < U) & (G < 0))
    kept = G * M
    assert torch.allclose(d, kept.sum(0))
    assert not bool(((kept > 0).any(0) & (kept < 0).any(0)).any())
    # all-positive gradients are never dropped; leak = 1 gives the plain sum
    Gp = G.abs()
    d, _ = A.make_aggregator("graddrop", 3).direction(Gp, losses_of(3))
    assert torch.allclose(d, Gp.sum(0))
    d, _ = A.make_aggregator("graddrop", 3, leak=1.0).direction(G, losses_of(3))
    assert torch.allclose(d, G.sum(0))


# ---------------------------------------------------------------------------------------------
# loss-weighting rules on scripted loss sequences
# ---------------------------------------------------------------------------------------------

def test_ls_and_si():
    L = torch.tensor([2.0, 0.5], dtype=D64, requires_grad=True)
    ls = A.make_aggregator("ls", 2)
    assert abs(ls.loss(L).item() - 2.5) < 1e-12
    si = A.make_aggregator("si", 2)
    (g,) = torch.autograd.grad(si.loss(L), L)
    assert torch.allclose(g, torch.tensor([0.5, 2.0], dtype=D64))


def test_si_invariant_to_loss_scaling():
    theta = torch.tensor([0.3, -1.2, 0.7], dtype=D64, requires_grad=True)
    a, b = torch.tensor([1.0, 2.0, 0.5], dtype=D64), torch.tensor([-1.0, 0.3, 2.0], dtype=D64)

    def losses(scale):
        return torch.stack([scale * (theta @ a) ** 2, 1 + (theta @ b) ** 2])

    si = A.make_aggregator("si", 2)
    (g1,) = torch.autograd.grad(si.loss(losses(1.0)), theta)
    (g2,) = torch.autograd.grad(si.loss(losses(1000.0)), theta)
    assert torch.allclose(g1, g2)
    ls = A.make_aggregator("ls", 2)
    (h1,) = torch.autograd.grad(ls.loss(losses(1.0)), theta)
    (h2,) = torch.autograd.grad(ls.loss(losses(1000.0)), theta)
    assert not torch.allclose(h1, h2)            # LS is not


def test_rlw_softmax_of_gaussian_draws():
    agg = A.make_aggregator("rlw", 3, generator=torch.Generator().manual_seed(123))
    ref = torch.Generator().manual_seed(123)
    L = torch.tensor([1.0, 2.0, 3.0], dtype=D64)
    seen = []
    for _ in range(3):
        w = agg.weights(L)
        z = torch.randn(3, generator=ref, dtype=D64)
        assert torch.allclose(w, torch.softmax(z, 0))
        seen.append(w)
    assert not torch.allclose(seen[0], seen[1])
    out = agg.loss(L)
    z = torch.randn(3, generator=ref, dtype=D64)
    assert abs(float(out) - float(torch.softmax(z, 0) @ L)) < 1e-12


def test_dwa_update_equation():
    agg = A.make_aggregator("dwa", 2)
    L = torch.tensor([1.0, 1.0], dtype=D64)
    assert torch.allclose(agg.weights(L), torch.ones(2, dtype=D64))           # epoch 0
    agg.epoch_end(torch.tensor([2.0, 1.0]))
    assert torch.allclose(agg.weights(L), torch.ones(2, dtype=D64))           # epoch 1
    agg.epoch_end(torch.tensor([1.0, 1.0]))
    # r = (1/2, 1/1); w = 2 softmax(r / 2) = 2 (e^.25, e^.5) / (e^.25 + e^.5) = (0.875647, 1.124353)
    w = agg.weights(L)
    assert torch.allclose(w, torch.tensor([0.875647, 1.124353], dtype=D64), atol=1e-6)
    assert abs(float(agg.loss(torch.tensor([2.0, 4.0], dtype=D64))) - (2 * 0.875647 + 4 * 1.124353)) < 1e-5
    agg.epoch_end(torch.tensor([1.0, 0.25]))
    # r = (1, 0.25): w = 2 (e^.5, e^.125) / (e^.5 + e^.125) = (1.185333, 0.814667)
    assert torch.allclose(agg.weights(L), torch.tensor([1.185333, 0.814667], dtype=D64), atol=1e-6)


def test_uw_loss_gradient_and_step():
    agg = A.make_aggregator("uw", 2)
    (s,) = agg.parameters()
    L = torch.tensor([2.0, 0.5])
    out = agg.loss(L)
    assert abs(out.item() - 1.25) < 1e-6          # 0.5 (2 + 0.5) at s = 0
    out.backward()
    assert torch.allclose(s.grad, torch.tensor([-0.5, 0.25]))   # 0.5 (1 - e^{-s} L)
    with torch.no_grad():                         # one SGD step, lr 0.1, as the harness's optimiser
        s -= 0.1 * s.grad
    assert torch.allclose(s.detach(), torch.tensor([0.05, -0.025]))
    # effective weights 0.5 e^{-s}
    assert torch.allclose(agg.weights(L), torch.tensor([0.475615, 0.512658]), atol=1e-6)


def test_gradnorm_update_equation_sgd_by_hand():
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=D64)     # ||g|| = (2, 1)
    agg = A.make_aggregator("gradnorm", 2, optimizer="sgd", warmup_epochs=0)
    assert agg.needs == "last_shared"
    # call 1: L(0) = (1, 1), r = (1, 1), target = mean(w n) = 1.5; grad = sign(w n - 1.5) n = (2, -1)
    # w <- (1 - .05, 1 + .025) = (.95, 1.025) -> renormalised to sum 2: (0.962025, 1.037975)
    w = agg.weights(torch.tensor([1.0, 1.0], dtype=D64), G)
    assert torch.allclose(w, torch.ones(2, dtype=D64))
    # call 2: L = (.5, 1): r = (2/3, 4/3); w n = (1.924051, 1.037975), mean 1.481013,
    # target = (0.806147, 2.280168) -> grad (2, -1) -> (0.912025, 1.062975) -> (0.923570, 1.076430)
    w = agg.weights(torch.tensor([0.5, 1.0], dtype=D64), G)
    assert torch.allclose(w, torch.tensor([0.962025, 1.037975], dtype=D64), atol=1e-6)
    w = agg.weights(torch.tensor([0.5, 1.0], dtype=D64), G)
    assert torch.allclose(w, torch.tensor([0.923570, 1.076430], dtype=D64), atol=1e-6)
    assert abs(float(w.sum()) - 2) < 1e-12


def test_gradnorm_adam_first_step_and_warmup():
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=D64)
    agg = A.make_aggregator("gradnorm", 2)          # adam, lr 0.025, one warm-up epoch
    L = torch.tensor([1.0, 1.0], dtype=D64)
    for _ in range(3):
        assert torch.allclose(agg.weights(L, G), torch.ones(2, dtype=D64))   # warm-up: no updates
    agg.epoch_end(L)
    assert torch.allclose(agg.weights(L, G), torch.ones(2, dtype=D64))
    # Adam's first step is lr * sign(grad): (1 - .025, 1 + .025), already summing to 2
    assert torch.allclose(agg.weights(L, G), torch.tensor([0.975, 1.025], dtype=D64), atol=1e-7)


def test_famo_loss_weights_and_logit_update():
    agg = A.make_aggregator("famo", 2)
    L = torch.tensor([2.0, 1.0], dtype=D64, requires_grad=True)
    # z = (.5, .5): effective weights (z_t / L_t) / sum(z / L) = (1/3, 2/3)
    (g,) = torch.autograd.grad(agg.loss(L), L)
    assert torch.allclose(g, torch.tensor([1 / 3, 2 / 3], dtype=D64), atol=1e-7)
    assert torch.allclose(agg.weights(L), g, atol=1e-12)
    # post_step: delta = log(before) - log(after) = (log 2, -log .9); grad_xi = z (delta - z.delta)
    # = (+, -), Adam's first step lr * sign -> xi = (-0.025, +0.025) (task 1 improved faster)
    agg.post_step(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.9]))
    assert torch.allclose(agg.logits.detach(), torch.tensor([-0.025, 0.025], dtype=D64), atol=1e-7)
    # z = softmax(xi) = (0.487503, 0.512497); for L = (2, 1): c = z1/2 + z2 = 0.756249,
    # weights z / (c L) = (0.322316, 0.677684)
    w = agg.weights(torch.tensor([2.0, 1.0], dtype=D64))
    assert torch.allclose(w, torch.tensor([0.322316, 0.677684], dtype=D64), atol=1e-6)
    assert agg.default_max_norm == 0.0


# ---------------------------------------------------------------------------------------------
# registry, aggregate(), timing
# ---------------------------------------------------------------------------------------------

def _exercise(agg, T, G, L):
    if agg.needs == "losses":
        agg.loss(L.clone().requires_grad_(True))
    elif agg.needs == "jacobian":
        agg.direction(G, L)
    else:
        agg.weights(L, G)


@pytest.mark.parametrize("name", list(A.AGGREGATORS))
def test_every_rule_aggregates_a_random_jacobian_and_is_timed(name):
    T, d = 3, 50
    G = rand_G(T, d, 0).float()
    L = torch.tensor([1.0, 2.0, 0.5])
    agg = A.make_aggregator(name, T)
    assert agg.needs in ("losses", "jacobian", "last_shared", "representation")
    out = A.aggregate(agg, G, L)
    assert out.shape == (d,) and out.dtype == G.dtype and bool(torch.isfinite(out).all())
    before = agg.solver_seconds
    assert before > 0
    _exercise(agg, T, G, L)
    assert agg.solver_seconds > before
    assert isinstance(agg.parameters(), list)
    agg.epoch_end(L)
    agg.post_step(L, L * 0.9)
    assert name in A.describe()


def test_aggregate_matches_rule_semantics():
    G = rand_G(3, 10, 1)
    L = torch.tensor([1.0, 2.0, 4.0], dtype=D64)
    assert torch.allclose(A.aggregate(A.make_aggregator("ls", 3), G, L), G.sum(0))
    assert torch.allclose(A.aggregate(A.make_aggregator("si", 3), G, L), (G / L[:, None]).sum(0))
    ub = A.aggregate(A.make_aggregator("mgda-ub", 3), G, L)
    assert torch.allclose(ub, A.aggregate(A.make_aggregator("mgda", 3), G, L))


def test_make_aggregator_dataset_overrides_and_errors():
    assert A.make_aggregator("famo", 2).gamma == 1e-3
    assert A.make_aggregator("famo", 2, "cityscapes").gamma == 1e-2
    assert A.make_aggregator("famo", 3, "nyuv2").gamma == 1e-3
    assert A.make_aggregator("famo", 40, "celeba").gamma == 1e-3
    assert A.make_aggregator("famo", 2, "cityscapes", gamma=0.5).gamma == 0.5   # explicit wins
    assert A.make_aggregator("cagrad", 2, "cityscapes").c == 0.4                # no entry: defaults
    assert A.make_aggregator("pcgrad", 2, max_norm=1.0).default_max_norm == 1.0
    assert A.make_aggregator("pcgrad", 2).default_max_norm == 0.0
    with pytest.raises(ValueError, match="unknown aggregator"):
        A.make_aggregator("stl", 2)
    with pytest.raises(ValueError, match="no hyperparameter"):
        A.make_aggregator("cagrad", 2, gamma=1.0)
    with pytest.raises(TypeError):                      # also a TypeError, like a bad keyword
        A.make_aggregator("cagrad", 2, gamma=1.0)
    with pytest.raises(ValueError):
        A.make_aggregator("dwa", 2, temp=0.0)
    with pytest.raises(ValueError):
        A.make_aggregator("ls", 3).weights(torch.ones(2))
    assert len(A.describe().splitlines()) == len(A.AGGREGATORS)
