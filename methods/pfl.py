"""Pareto-front-learning baselines: COSMOS and Pareto HyperNetworks (PHN-LS, PHN-EPO).

One model is trained so that a preference vector r on the simplex, given at test time, selects a
trade-off between the tasks. The EXTRA, PML and PaLoRA papers compare against these baselines
(EXTRA Figure 6, PML appendix K / Figure 29, PaLoRA Table 1 and Figure 3).

COSMOS  M. Ruchte and J. Grabocka, "Scalable Pareto Front Approximation for Deep Multi-Objective
        Learning", ICDM 2021 ("Conditioned One-shot Multi-Objective Search").
        - the preference r ~ Dirichlet(alpha 1) (one per batch) is appended to the input:
          images get K extra channels (--condition upsample: the official transposed-convolution
          upsampler, ConvTranspose(K,K,4) -> ReLU -> ConvTranspose(K,K,6,stride 2) -> ReLU ->
          resize to H x W; --condition constant: channel k filled with r_k), tabular inputs get r
          appended to the features; the backbone's first layer takes C + K channels;
        - the loss is the linear scalarisation minus the cosine-similarity penalty:
              L(theta; r) = sum_k r_k L_k(theta; r) - lambda cos(L(theta; r), r)
          which pulls the loss vector towards the preference ray (lambda = --lamda).
PHN     A. Navon, A. Shamsian, G. Chechik and E. Fetaya, "Learning the Pareto Front with
        Hypernetworks", ICLR 2021.
        - a hypernetwork h(r; phi) maps the ray r to ALL weights of the target network: a ray MLP
          (K -> d -> d -> d, ReLU) and one linear layer per target weight tensor (d -> its numel),
          the target (the dataset's backbone, e.g. the MultiMNIST LeNet) runs with those weights;
        - PHN-LS: minimise r^T L(h(r; phi)) over phi, r ~ Dirichlet(alpha 1);
        - PHN-EPO: the Exact Pareto Optimal search direction of Mahapatra & Rajan (ICML 2020) at the
          ray r: with l_hat = r*l / sum(r*l), the non-uniformity mu(r*l) = KL(l_hat || 1/K) and the
          adjustment a = r * (log(K l_hat) - mu), C = G G^T (G: the task gradients w.r.t. phi):
            if mu > eps ("balance"):  max_beta beta^T C a  s.t. beta in simplex,
                                      (C beta)_j >= (C a)_j for j with (C a)_j <= 0, except
                                      (C beta)_j* >= 0 for j* = argmax r*l;
            else ("descent"):         max_beta beta^T C 1  s.t. beta in simplex, C beta >= 0,
                                      beta^T C a >= min(max(C a), 0);
          and phi descends sum_k K beta_k L_k.

Evaluation (the same as methods/pml.py and methods/palora.py): the front on an evenly spaced
preference grid (11 points for 2 tasks, the 66-point lattice for 3; --grid-points), its
hypervolume on the primary metrics (accuracies / mIoU / F1 with reference 0), the number of
non-dominated points and the Spearman correlations, the front in metrics.json, plots. metrics.json
"tasks" holds the centre preference (1/K, ..., 1/K). Parameter counts of the hypernetwork, the
target and the conditioning are reported, and Delta_p% = trainable parameters over the plain
multi-task model (PaLoRA Table 1; the PML paper notes a 1.6M hypernetwork for a < 50k target).

Settings (PML appendix K; the COSMOS repository's settings.py for both methods):
  setting I  (default, --setting 1): 10 epochs, no learning-rate schedule, the setting of every
             other method of PML Figure 4;
  setting II (--setting 2): COSMOS 100 epochs with MultiStepLR(milestones 20/40/80/90, gamma 0.1);
             PHN 150 epochs (the COSMOS repository turns the scheduler off for the hypernetworks).
  COSMOS: Adam 1e-3, batch 256, alpha 1.2, lambda 2 (MultiFashion+MNIST: 8; census, the tabular
  setting of the COSMOS repo: alpha 0.5, lambda 0.01; celeba: 30 epochs, batch 32, lr 5e-4, alpha 1, lambda 3).
  PHN: Adam 1e-4, batch 256, alpha 0.2, ray-MLP width 100.

Where the official codes (ruchtem/cosmos, AvivNavon/pareto-hypernetworks) differ, this file:
- generalises the hypernetwork: any backbone of common/models.py is a target (one linear layer per
  weight tensor, the official layout), and the ray MLP takes K inputs (the official one is wired
  for 2 tasks); its size is checked before it is built (--max-hyper-params);
- solves the EPO linear programmes with scipy's HiGHS instead of cvxpy + GLPK, with the same
  constraints (rows whose right-hand side is -inf are dropped rather than passed as -inf); when a
  programme has no solution it falls back, as the official code does, to the normalised ray, and
  the fallbacks are counted in log.csv instead of printed;
- guards EPO's logarithm: l_hat is clamped to machine epsilon (a task with zero loss gives -inf in
  the official adjustment and NaN weights); negative losses are refused (EPO needs l > 0), and
  --epo-offset shifts the losses the LP sees (20 on toy, whose losses reach -20; the gradients are
  unchanged by a shift, the ray then balances r_k (l_k + offset));
- applies PHN-EPO's update as the gradient beta^T G already computed for the LP (no second
  backward pass; the same direction);
- toy (PML appendix C): the target is theta itself; the hypernetwork's output bias starts at the
  toy initial point (-8.5, 7.5) as every other method does; COSMOS conditions theta = theta_0 +
  MLP([x, r]) (the tabular path of COSMOS; the toy "input" is a dummy 0) with the last layer
  zero-initialised, so both start at the same point as the other methods.

The file has two halves. The method half (up to the "runner" banner) needs only torch, numpy and
scipy (for EPO's LP): sample_ray, COSMOSModel / Upsampler / cosmos_loss, HyperNetwork /
target_forward, epo_adjustments / epo_weights / phn_epo_weights; copy this file into another
project and use them on any nn.Module. The runner half (the command line and the training loop)
imports the suite's harness (common/) when it runs:

    python methods/pfl.py --method cosmos                     # multimnist-lite, offline, setting I
    python methods/pfl.py --method phn-ls
    python methods/pfl.py --method phn-epo --setting 2        # 150 epochs
    python methods/pfl.py --method cosmos --dataset toy
    python methods/pfl.py --method cosmos --dataset cityscapes   # PaLoRA Table 1's COSMOS row
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call


# ----------------------------------------------------------------------------------------------
# Preferences
# ----------------------------------------------------------------------------------------------
def sample_ray(num_tasks: int, alpha: float) -> torch.Tensor:
    """One training preference r ~ Dirichlet(alpha 1) (torch's global generator: seeded, restored on --resume)."""
    return torch.distributions.Dirichlet(torch.full((num_tasks,), float(alpha))).sample()


# ----------------------------------------------------------------------------------------------
# COSMOS: the preference appended to the input, and the penalised loss
# ----------------------------------------------------------------------------------------------
class Upsampler(nn.Module):
    """Official COSMOS image conditioning: r (K) -> K channels of H x W via two transposed
    convolutions (1x1 -> 4x4 -> 10x10) and a nearest resize."""

    def __init__(self, K: int, size: tuple[int, int]):
        super().__init__()
        self.net = nn.Sequential(nn.ConvTranspose2d(K, K, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU(),
                                 nn.ConvTranspose2d(K, K, kernel_size=6, stride=2, padding=1, bias=False), nn.ReLU(),
                                 nn.Upsample(size=tuple(size)))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r.view(1, -1, 1, 1))


class COSMOSModel(nn.Module):
    """x -> backbone([x, c(r)]): c(r) is r itself for tabular inputs, K image channels for images.
    The backbone is any nn.Module whose first layer takes the C + K channels (F + K features);
    set_ray(r) selects the preference the next forward passes use."""

    def __init__(self, backbone: nn.Module, num_tasks: int, input_shape: tuple[int, ...], condition: str = "upsample"):
        super().__init__()
        self.backbone, self.K = backbone, num_tasks
        self.image = len(input_shape) == 3
        self.upsampler = Upsampler(num_tasks, input_shape[1:]) if self.image and condition == "upsample" else None
        self.ray = torch.full((num_tasks,), 1.0 / num_tasks)

    def set_ray(self, r) -> None:
        self.ray = torch.as_tensor(r, dtype=torch.float32).reshape(-1)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (COSMOS section 4): the input augmented with the preference."""
        b = x.shape[0]
        r = self.ray.to(device=x.device, dtype=x.dtype)
        if not self.image:
            return torch.cat([x.flatten(1), r.expand(b, self.K)], dim=1)
        if self.upsampler is not None:
            c = self.upsampler(r).expand(b, -1, -1, -1)
        else:
            c = r.view(1, self.K, 1, 1).expand(b, self.K, *x.shape[2:])
        return torch.cat([x, c], dim=1)

    def forward(self, x):
        return self.backbone(self.condition(x))


class ToyConditioned(nn.Module):
    """toy: theta(x, r) = theta_0 + MLP([x, r]), the last layer zero-initialised (theta = theta_0 at start)."""

    def __init__(self, num_tasks: int, init=(-8.5, 7.5), hidden: int = 100):
        super().__init__()
        self.theta0 = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.mlp = nn.Sequential(nn.Linear(1 + num_tasks, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x):
        return self.theta0 + self.mlp(x)


def cosmos_loss(losses: torch.Tensor, r: torch.Tensor, lamda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_k r_k L_k - lambda cos(L, r); returns (loss, cosine)."""
    r = r.to(losses.device, losses.dtype)
    cos = F.cosine_similarity(losses, r, dim=0)
    return (r * losses).sum() - lamda * cos, cos



# ----------------------------------------------------------------------------------------------
# PHN: the hypernetwork h(r; phi) -> all weights of the target network
# ----------------------------------------------------------------------------------------------
class HyperNetwork(nn.Module):
    """Ray MLP (K -> d -> d -> d, ReLU between) and one linear layer per weight tensor of the
    target (d -> numel), as the official PHN LeNet hypernetwork; forward(r) -> {name: tensor}."""

    def __init__(self, target: nn.Module, num_tasks: int, hidden: int = 100):
        super().__init__()
        self.names = [n for n, _ in target.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in target.named_parameters()]
        self.ray_mlp = nn.Sequential(nn.Linear(num_tasks, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden))
        self.heads = nn.ModuleList(nn.Linear(hidden, math.prod(s)) for s in self.shapes)

    @staticmethod
    def size(target: nn.Module, num_tasks: int, hidden: int) -> int:
        """Parameter count without building it (to refuse oversized hypernetworks up front)."""
        mlp = num_tasks * hidden + hidden + 2 * (hidden * hidden + hidden)
        return mlp + sum((hidden + 1) * p.numel() for p in target.parameters())

    def forward(self, r: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.ray_mlp(r)
        return {n: head(f).view(s) for n, s, head in zip(self.names, self.shapes, self.heads)}


def target_forward(target: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor):
    """The target network run with generated weights (its buffers, e.g. BatchNorm statistics, are its own)."""
    return functional_call(target, weights, (x,), strict=False)



# ----------------------------------------------------------------------------------------------
# EPO search direction (Mahapatra & Rajan 2020), LPs solved with scipy's HiGHS
# ----------------------------------------------------------------------------------------------
def epo_adjustments(l: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(r*l, mu(r*l), a): l_hat = r*l / sum(r*l), mu = KL(l_hat || 1/K) = sum l_hat log(K l_hat),
    a = r * (log(K l_hat) - mu). l_hat is clamped to machine epsilon inside the logarithm."""
    K = len(l)
    rl = r * l
    l_hat = rl / rl.sum()
    eps = np.finfo(np.float64).eps
    keep = l_hat > eps
    mu = float(np.sum(l_hat[keep] * np.log(l_hat[keep] * K)))
    a = r * (np.log(np.maximum(l_hat, eps) * K) - mu)
    return rl, mu, a


def epo_weights(l, C, r, eps: float = 1e-4, relax: bool = False) -> tuple[np.ndarray | None, str]:
    """beta of the EPO LP (on the simplex; None if the LP has no solution) and the move
    ("balance" or "descent"). l: task losses (K,), C = G G^T (K, K), r: the preference ray."""
    from scipy.optimize import linprog

    l, C, r = (np.asarray(v, dtype=np.float64) for v in (l, C, r))
    if np.any(l < 0):
        raise ValueError("PHN-EPO needs non-negative task losses (its non-uniformity is a KL divergence of r*l); "
                         "shift them with an offset (--epo-offset) or use PHN-LS (--method phn-ls)")
    K = len(l)
    rl, mu, a = epo_adjustments(l, r)
    Ca = C @ a
    A_eq, b_eq, bounds = np.ones((1, K)), [1.0], [(0, None)] * K
    if mu > eps:  # balance: move towards the ray
        move = "balance"
        rhs = Ca.copy()
        if np.any(Ca > 0):
            rhs[Ca > 0] = -np.inf
            rhs[rl == rl.max()] = 0.0
        else:
            rhs[:] = 0.0
        rows = np.isfinite(rhs)
        res = linprog(-Ca, A_ub=-C[rows] if rows.any() else None, b_ub=-rhs[rows] if rows.any() else None,
                      A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    else:  # descent: the best common descent direction, without leaving the ray
        move = "descent"
        A_ub, b_ub = [-C], [np.zeros(K)]
        if not relax:
            A_ub.append(-Ca[None, :])
            b_ub.append([-min(Ca.max(), 0.0)])
        res = linprog(-C.sum(axis=1), A_ub=np.vstack(A_ub), b_ub=np.concatenate(b_ub), A_eq=A_eq, b_eq=b_eq,
                      bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        return None, move
    beta = np.clip(res.x, 0, None)
    return beta / beta.sum(), move




def phn_epo_weights(G: torch.Tensor, losses: torch.Tensor, r: torch.Tensor, offset: float = 0.0, eps: float = 1e-4,
                    relax: bool = False) -> tuple[torch.Tensor, str, bool]:
    """PHN-EPO's task weights w = K beta for the update w^T G (G: K x d task gradients w.r.t. the
    hypernetwork's parameters); the LP sees the losses l + offset. Returns (w, move, fell_back):
    when the LP has no solution beta is the normalised ray, as in the official code."""
    K = len(losses)
    # the LP runs on the host in float64 (none on MPS): one transfer of the K x K Gram, l and r
    host = torch.cat([(G @ G.T).reshape(-1), losses.detach().float(), r.float()]).cpu().double().numpy()
    C, l_host, r_host = host[:K * K].reshape(K, K), host[K * K:K * K + K], host[K * K + K:]
    beta, move = epo_weights(l_host + offset, C, r_host, eps, relax)
    fell_back = beta is None
    if fell_back:
        beta = r_host / r_host.sum()
    return torch.as_tensor(K * beta, dtype=G.dtype, device=G.device), move, fell_back


# ================= runner: command line and training loop (needs the suite's common/) =================
import dataclasses  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def _harness() -> None:
    """Make the suite's common/ importable (the runner's imports happen inside the functions that need them)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


METHODS = ("cosmos", "phn-ls", "phn-epo")
EPO_MOVES = ("balance", "descent", "fallback")  # PHN-EPO's steps: balance LP, descent LP, the official fallback

# ----------------------------------------------------------------------------------------------
# Defaults: one table with the rows of each method family (COSMOS; PHN-LS and PHN-EPO share theirs),
# "*" then per dataset, for setting I (PML appendix K: 10 epochs, no schedule; --setting 1, the default).
# --setting 2 (setting II, the COSMOS paper's) puts SETTING_II over the family's "*" row: every dataset
# without its own epochs (the MultiMNIST family, census, utkface) trains longer; toy, celeba and the
# scene datasets keep theirs. Sources: ruchtem/cosmos multi_objective/settings.py (generic, cosmos,
# hyperSolver_ln/_epo and the per-dataset dicts), PML appendix K, PaLoRA section 5.2 (CityScapes).
# ----------------------------------------------------------------------------------------------
DEFAULTS = {
    "cosmos": {
        "*": dict(epochs=10, batch_size=256, lr=1e-3, scheduler=None, alpha=1.2, lamda=2.0, eval_every=1),
        "multifashion-mnist": dict(lamda=8.0),
        "census": dict(alpha=0.5, lamda=0.01),
        "celeba": dict(epochs=30, batch_size=32, lr=5e-4, scheduler=None, alpha=1.0, lamda=3.0, eval_every=5),  # COSMOS repo celeba
        "toy": dict(epochs=50, batch_size=1, lr=2e-3, eval_every=10),
        # not in the COSMOS paper: PaLoRA Table 1 (results of the PaMaL paper) uses the CityScapes
        # benchmark (SegNet, 100 epochs, Adam 1e-4 halved after 75) for every PFL method
        "cityscapes": dict(epochs=100, batch_size=8, lr=1e-4, scheduler=(75, 0.5), eval_every=20),
        "nyuv2": dict(epochs=200, batch_size=2, lr=1e-4, scheduler=(100, 0.5), eval_every=20),
    },
    "phn": {
        "*": dict(epochs=10, batch_size=256, lr=1e-4, scheduler=None, alpha=0.2, ray_hidden=100, eval_every=1, epo_offset=0.0),
        # the toy losses reach -20 (PML App. C); EPO needs l > 0, so it works on l + 20 there
        "toy": dict(epochs=50, batch_size=1, lr=2e-3, eval_every=10, epo_offset=20.0),
    },
}
SETTING_II = {"cosmos": dict(epochs=100, scheduler=("multistep", (20, 40, 80, 90), 0.1)),
              "phn": dict(epochs=150, scheduler=None)}


def method_defaults(method: str, setting: int) -> dict:
    """The rows of DEFAULTS a run resolves its unset flags from: its --method's family, with SETTING_II
    over the "*" row under --setting 2 (the one choice the table cannot say by dataset)."""
    family = "cosmos" if method == "cosmos" else "phn"
    table = {ds: dict(row) for ds, row in DEFAULTS[family].items()}
    if setting == 2:
        table["*"].update(SETTING_II[family])
    return table


def parse_args(argv=None):
    _harness()
    from common.train import add_front_arguments, base_parser, defaults_table, describe_scheduler

    p = base_parser("pfl", __doc__)
    p.epilog = "\n\n".join(defaults_table(method_defaults(m, 1), title=f"{title}, setting I (--setting 1)")
                           for m, title in (("cosmos", "COSMOS (--method cosmos)"), ("phn-ls", "PHN (--method phn-ls, phn-epo)")))
    p.epilog += "\n\n--setting 2 changes the '*' row (every dataset without its own epochs): " + "; ".join(
        f"{k}: epochs {v['epochs']}, {describe_scheduler(v['scheduler'])}" for k, v in SETTING_II.items())
    g = p.add_argument_group("Pareto-front-learning options")
    g.add_argument("--method", choices=METHODS, default="cosmos",
                   help="cosmos (input conditioning + cosine penalty), phn-ls (hypernetwork, r^T L), "
                        "phn-epo (hypernetwork, EPO search direction) (default cosmos)")
    g.add_argument("--setting", type=int, choices=(1, 2), default=1,
                   help="PML appendix K: 1 = 10 epochs, no schedule (default); 2 = the COSMOS paper's "
                        "(COSMOS 100 epochs, MultiStepLR 20/40/80/90 x0.1; PHN 150 epochs)")
    g.add_argument("--alpha", type=float, default=None,
                   help="Dirichlet concentration of the training preferences, r ~ Dir(alpha 1) (default: per method and dataset, see the tables below)")
    g.add_argument("--lamda", type=float, default=None,
                   help="COSMOS: weight lambda of the cosine-similarity penalty (default: per dataset, see the table below)")
    g.add_argument("--condition", choices=("upsample", "constant"), default="upsample",
                   help="COSMOS on images: upsample = the official transposed-conv upsampler of r to K channels; "
                        "constant = channel k filled with r_k (default upsample)")
    g.add_argument("--ray-hidden", type=int, default=None, help="PHN: width d of the ray MLP (default 100)")
    g.add_argument("--epo-eps", type=float, default=1e-4,
                   help="PHN-EPO: non-uniformity threshold between the balance and the descent LP (default 1e-4, official)")
    g.add_argument("--epo-offset", type=float, default=None,
                   help="PHN-EPO: the LP sees the losses l + offset (EPO needs l > 0; default 0, 20 on toy whose losses reach -20)")
    g.add_argument("--epo-relax", action="store_true",
                   help="PHN-EPO: drop the descent LP's restriction beta^T C a >= min(max(C a), 0) (official 'relax'; default off)")
    g.add_argument("--max-hyper-params", type=float, default=5e7,
                   help="PHN: refuse to build a hypernetwork larger than this many parameters (default 5e7)")
    g.add_argument("--eval-every", type=int, default=None, help="validate the front every N epochs (default: per method and dataset, see the tables below)")
    add_front_arguments(g)  # --grid-points, --hv-ref, --eval-batches
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# The models: a COSMOS-conditioned backbone, or a hypernetwork and its target
# ----------------------------------------------------------------------------------------------
def build_cosmos(args, data) -> COSMOSModel:
    from common.models import MTLModel, build_model

    K = data.num_tasks
    if args.dataset == "toy":
        backbone = MTLModel(ToyConditioned(K), [nn.Identity() for _ in range(K)], data.task_names)
        return COSMOSModel(backbone, K, (1,), "constant")
    shape = tuple(data.input_shape)
    wide = (shape[0] + K,) + shape[1:] if len(shape) == 3 else (int(np.prod(shape)) + K,)
    backbone = build_model(args.model, dataclasses.replace(data, input_shape=wide), pretrained=args.pretrained)
    return COSMOSModel(backbone, K, shape, args.condition)


def build_phn(args, data) -> tuple[HyperNetwork, nn.Module]:
    from common.models import build_model

    target = build_model(args.model, data, pretrained=args.pretrained)
    hnet = HyperNetwork(target, data.num_tasks, args.ray_hidden)
    if args.dataset == "toy":  # start theta at the toy initial point (see the docstring)
        with torch.no_grad():
            for name, head in zip(hnet.names, hnet.heads):
                head.bias.copy_(dict(target.named_parameters())[name].detach().reshape(-1))
    for p in target.parameters():  # placeholders: the hypernetwork supplies every weight
        p.requires_grad_(False)
    return hnet, target


def build(args, run) -> tuple[nn.Module, nn.Module | None, dict]:
    """The trained module (COSMOS: the conditioned backbone; PHN: the hypernetwork) on the run's
    device, PHN's target network (None for COSMOS) and the parameter counts with Delta_p% (PaLoRA
    Table 1): the trainable parameters over the plain multi-task model of the same backbone."""
    from common.models import build_model, count_parameters

    if args.method != "cosmos":
        module, target = build_phn(args, run.data)
        module.to(run.device), target.to(run.device)
        params = {"hypernetwork": count_parameters(module.parameters()), "target": count_parameters(target.parameters())}
    else:
        module, target = build_cosmos(args, run.data).to(run.device), None
        cond = count_parameters(module.upsampler.parameters()) if module.upsampler is not None else 0
        params = {"model": count_parameters(module.parameters()), "conditioning": cond}
    params["trainable"] = count_parameters(module.parameters())
    params["base_model"] = params["target"] if target is not None else count_parameters(build_model(args.model, run.data).parameters())
    params["delta_p_percent"] = 100.0 * (params["trainable"] / params["base_model"] - 1.0)
    return module, target, params


def forward_at(module: nn.Module, target: nn.Module | None, r, x=None):
    """The outputs at preference r for a batch x; without x, forward(x) at r for evaluation (PHN
    generates the weights once, without a graph)."""
    if target is None:
        module.set_ray(r)
        return module if x is None else module(x)
    if x is not None:
        return target_forward(target, module(r), x)
    with torch.no_grad():
        w = module(r)
    return lambda x: target_forward(target, w, x)


def evaluate_front(run, module: nn.Module, target: nn.Module | None, prefs, split: str) -> list[dict]:
    module.eval()
    if target is not None:
        target.eval()
    return [{"preference": [round(float(v), 6) for v in r],
             "tasks": run.evaluate(forward_at(module, target, torch.as_tensor(r, dtype=torch.float32, device=run.device)),
                                   split, max_batches=run.args.eval_batches)} for r in prefs]


def train_row(run, opt, sums: torch.Tensor, n: int, cos_sum: torch.Tensor, moves: dict) -> dict:
    """An epoch's log columns: mean training losses, the learning rate, COSMOS's mean cosine, PHN-EPO's steps."""
    row = {f"train_loss_{t.name}": float(s / max(n, 1)) for t, s in zip(run.data.tasks, sums.cpu())}
    row["lr"] = opt.param_groups[0]["lr"]
    if run.args.method == "cosmos":
        row["train_cosine"] = float(cos_sum) / max(n, 1)
    if run.args.method == "phn-epo":
        row.update({f"epo_{k}": v for k, v in moves.items()})
    return row


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front(path: str, front: list[dict], tasks, title: str, analytic: np.ndarray | None = None,
               history: list | None = None) -> None:
    """2 tasks: the test front coloured by r_1 (validation fronts of earlier epochs in grey, the
    analytic front on toy); 3 tasks: each task's metric over the preference triangle."""
    from common.train import front_points

    plt, T = _plt(), len(tasks)
    P, lam = front_points(front, tasks)
    if T == 2:
        fig, ax = plt.subplots(figsize=(5.4, 4.4))
        for epoch, vf in (history or [])[:-1]:
            V = front_points(vf, tasks)[0]
            ax.plot(V[:, 0], V[:, 1], "-", color="0.85", lw=0.8, zorder=0)
        if analytic is not None:
            ax.plot(analytic[:, 0], analytic[:, 1], "k--", lw=1, label="analytic Pareto front")
        ax.plot(P[:, 0], P[:, 1], "-", color="0.5", lw=1, zorder=1)
        sc = ax.scatter(P[:, 0], P[:, 1], c=lam[:, 0], cmap="viridis", vmin=0, vmax=1, zorder=2, edgecolor="k", lw=0.4)
        fig.colorbar(sc, ax=ax, label=f"r_1 ({tasks[0].name})")
        ax.set_xlabel(f"{tasks[0].name} {tasks[0].primary}")
        ax.set_ylabel(f"{tasks[1].name} {tasks[1].primary}")
        if analytic is not None:
            ax.legend(fontsize=8)
    elif T == 3:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        x, y = lam[:, 1] + 0.5 * lam[:, 2], lam[:, 2] * math.sqrt(3) / 2
        for i, (ax, t) in enumerate(zip(axes, tasks)):
            sc = ax.scatter(x, y, c=P[:, i], cmap="viridis", s=60)
            ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], "k-", lw=0.8)
            ax.set_title(f"{t.name} {t.primary}")
            ax.set_aspect("equal")
            ax.axis("off")
            fig.colorbar(sc, ax=ax, shrink=0.8)
    else:
        return
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Flag checks, the test-time report, main
# ----------------------------------------------------------------------------------------------
def _validate(args) -> None:
    from common.device import UsageError

    for k in ("alpha", "lamda"):
        v = getattr(args, k)
        if v is not None and not (math.isfinite(v) and (v > 0 if k == "alpha" else v >= 0)):
            raise UsageError(f"--{k} must be a {'positive' if k == 'alpha' else 'non-negative'} number (got {v})")
    if args.ray_hidden is not None and args.ray_hidden < 1:
        raise UsageError(f"--ray-hidden must be a positive integer (got {args.ray_hidden})")
    if not (args.epo_eps >= 0 and math.isfinite(args.epo_eps)):
        raise UsageError(f"--epo-eps must be a non-negative number (got {args.epo_eps})")
    if args.eval_every is not None and args.eval_every < 1:
        raise UsageError(f"--eval-every must be a positive integer (got {args.eval_every})")


def _check(args, data) -> None:
    """The flags that depend on the data (Run calls it before --out is touched)."""
    from common.device import UsageError
    from common.models import build_model, count_parameters
    from common.train import check_front_arguments

    check_front_arguments(args, data)
    if args.method != "cosmos":  # refuse an oversized hypernetwork before anything is built or written
        target = build_model(args.model, data, pretrained=args.pretrained)
        n = HyperNetwork.size(target, data.num_tasks, args.ray_hidden)
        if n > args.max_hyper_params:
            raise UsageError(f"PHN would need a {n / 1e6:.0f}M-parameter hypernetwork for the {count_parameters(target.parameters()) / 1e6:.2f}M-"
                             f"parameter --model {args.model or data.default_model} (ray width {args.ray_hidden}); PHN targets small "
                             f"networks (LeNet, MLP, toy): use --method cosmos here, or raise --max-hyper-params")
    if args.method == "cosmos" and args.dataset != "toy" and len(data.input_shape) not in (1, 3):
        raise UsageError(f"COSMOS conditions image (C, H, W) or tabular (F,) inputs; {args.dataset} has shape {data.input_shape}")


def report(run, module: nn.Module, evaluate, grid, S: dict, params: dict) -> dict:
    """Test: the model selected on validation (--select best), the grid front and its centre; the
    front plot (earlier validation fronts in grey, the analytic front on toy); metrics.json."""
    from common.metrics import front_summary
    from common.train import front_caption, front_report

    args, tasks = run.args, run.data.tasks
    selected_epoch = run.best.restore(module.load_state_dict)
    rep = front_report(run, evaluate, grid, args.hv_ref_values)
    title = f"{args.method} {args.dataset} seed {args.seed} (test)\n" + front_caption(rep)
    run.guarded("front.png", plot_front, run.path("front.png"), rep["front"], tasks, title, analytic=run.data.info.get("front"),
                history=S["history"])
    out = run.finish({**rep, "parameters": params, "delta_p_percent": params["delta_p_percent"], "selected_epoch": selected_epoch,
                      "pfl_method": args.method, "setting": args.setting, "alpha": args.alpha,
                      "lamda": args.lamda if args.method == "cosmos" else None,
                      "epo_moves": S["counters"] if args.method == "phn-epo" else None,
                      "val_history": [{"epoch": e, **front_summary(vf, tasks, args.hv_ref_values)} for e, vf in S["history"]]})
    if not args.quiet:
        show = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"[{args.method}] front: {len(rep['front'])} points, hypervolume={show(out['hypervolume'])}, "
              f"non-dominated={out['non_dominated']}, spearman={show(out['spearman'])}, parameters={params}", flush=True)
    return out


def main(argv=None):
    args = parse_args(argv)  # puts common/ on the path
    from common.device import UsageError
    from common.metrics import evaluation_grid
    from common.train import Run, clip_shared, front_validation, jacobian, set_flat_grad

    _validate(args)
    run = Run(args, args.method, method_defaults(args.method, args.setting), check=_check)
    data, K, dev = run.data, run.data.num_tasks, run.device
    module, target, params = build(args, run)
    trainable = list(module.parameters())
    run.write_config({"resolved": {k: getattr(args, k, None) for k in ("method", "setting", "alpha", "lamda", "condition",
                                                                        "ray_hidden", "epo_offset", "eval_every")},
                      "parameters": params})
    opt, sched = run.make_optimizer(trainable)
    run.track(model=module, opt=opt, sched=sched)
    S = run.values(history=[], counters=dict.fromkeys(EPO_MOVES, 0))
    evaluate = functools.partial(evaluate_front, run, module, target)

    grid = evaluation_grid(K, args.grid_points)
    for epoch in run.epochs():
        module.train()
        if target is not None:
            target.train()
        sums, cos_sum, n = torch.zeros(K, device=dev), torch.zeros((), device=dev), 0  # read once per epoch
        moves = dict.fromkeys(EPO_MOVES, 0)
        for x, ys in run.progress(run.batches("train", epoch), f"{args.method} epoch {epoch + 1}", run.num_batches()):
            r = sample_ray(K, args.alpha).to(dev)
            opt.zero_grad(set_to_none=True)
            with run.autocast():
                losses = run.losses(forward_at(module, target, r, x), ys).float()
            if args.method == "cosmos":
                loss, cos = cosmos_loss(losses, r, args.lamda)
                cos_sum += cos.detach().float()
                loss.backward()
            elif args.method == "phn-ls":
                (r * losses).sum().backward()
            else:  # phn-epo: G w.r.t. every hypernetwork parameter (official), the update K beta^T G
                G = jacobian(losses, trainable)
                try:
                    w, move, fell_back = phn_epo_weights(G, losses, r, args.epo_offset, args.epo_eps, args.epo_relax)
                except ValueError as e:  # negative losses: a flag choice, one line and exit status 2
                    raise UsageError(str(e)) from None
                moves[move] += 1
                moves["fallback"] += fell_back  # the official fallback: the normalised ray
                set_flat_grad(trainable, w @ G)
            if target is None:
                clip_shared(module.backbone, args.clip_grad)
            elif args.clip_grad:
                torch.nn.utils.clip_grad_norm_(trainable, args.clip_grad)
            opt.step()
            sums += losses.detach()
            n += 1
            if run.step():
                break
        if sched is not None:
            sched.step()
        for k, v in moves.items():
            S["counters"][k] += v
        row = train_row(run, opt, sums, n, cos_sum, moves)
        if run.eval_due(epoch):  # the front on validation; --select best keeps the best front score
            row.update(front_validation(run, evaluate, grid, epoch, S["history"], module, args.hv_ref_values)[0])
        run.log_epoch(epoch, row)
        run.checkpoint(epoch, finished=epoch + 1 == args.epochs)
    return report(run, module, evaluate, grid, S, params)


if __name__ == "__main__":
    _harness()  # the suite's root on sys.path, where common/ is
    if importlib.util.find_spec("common") is None:  # copied out of the suite: the method half works alone
        sys.exit(print(f"{os.path.basename(__file__)}: error: the command line needs the suite's common/ package (next to methods/); the method half (import pfl) works without it", file=sys.stderr) or 2)  # one line on stderr, exit status 2
    from common.train import main_guard

    main_guard(main)
