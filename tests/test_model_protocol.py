"""The model protocol of common/models.py: every model build_model builds satisfies
MultiTaskProtocol; MultiTaskModel turns a foreign MLP (a trunk and heads) into a model that trains
one step through every kind of rule of the baselines' drop-in path (losses, Jacobian, last shared
layer, representation) and through PML's method half with gradient balancing; a model missing a
member fails with one clear line."""
import os
import sys
import types

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.data import task  # noqa: E402
from common.metrics import task_losses  # noqa: E402
from common.models import (MultiTaskModel, MultiTaskProtocol, build_model, check_model,  # noqa: E402
                           model_names, register_model)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def specs_for(name):
    """Small task specs and input shapes each registered backbone is built for (the offline toy, the
    tiny image and dense shapes), enough to build and run it."""
    if name == "toy":
        return [task("l1", "toy", 2), task("l2", "toy", 2)], (2,), {}
    if name == "mlp":
        return [task("income", "binary"), task("age", "mse")], (12,), {"hidden": 16}
    if name == "lenet":
        return [task("left", "class", 10), task("right", "class", 10)], (1, 28, 28), {}
    if name in ("resnet18", "celeba_cnn"):
        return [task("age", "huber"), task("gender", "binary")], (3, 64, 64), {}
    if name in ("segnet", "mtan"):
        return [task("seg", "seg", 3), task("depth", "depth")], (3, 32, 64), {"filters": (8, 8, 16, 16, 16)}
    return [task("seg", "seg", 3), task("normals", "normal", 3)], (3, 32, 32), {}  # the dilated dense models


@pytest.mark.parametrize("name", model_names())
def test_every_model_of_build_model_satisfies_the_protocol(name):
    tasks, shape, kw = specs_for(name)
    data = types.SimpleNamespace(tasks=tasks, num_tasks=len(tasks), input_shape=shape, default_model=name)
    torch.manual_seed(0)
    model = build_model(name, data, **kw).eval()
    assert isinstance(model, MultiTaskProtocol) and check_model(model) is model
    assert model.num_tasks == len(tasks)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        out = model(x)
        again = model.decode(model.encoder(x))
    assert len(out) == len(tasks) and all(torch.equal(a, b) for a, b in zip(out, again))
    shared = {id(p) for p in model.shared_parameters()}
    heads = [{id(p) for p in model.task_parameters(t)} for t in range(len(tasks))]
    last = {id(p) for p in model.last_shared_parameters()}
    assert shared and last and last <= shared
    assert all(not (h & shared) for h in heads)  # the toy's heads are the identity: no parameters
    assert all(not (heads[i] & heads[j]) for i in range(len(heads)) for j in range(i))


# ---------------------------------------------------------------------------------------------
# the adapter on a foreign MLP
# ---------------------------------------------------------------------------------------------
class Squeeze(nn.Module):
    def forward(self, x):
        return x.squeeze(1)


def foreign_mlp(seed=0):
    """Someone's network: a trunk and two heads, nothing of the suite."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())
    heads = [nn.Sequential(nn.Linear(16, 1), Squeeze()), nn.Linear(16, 3)]
    return trunk, heads


def problem():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    ys = [x[:, :4].sum(1), (x[:, 4:] @ torch.randn(4, 3, generator=g)).argmax(1)]
    data = types.SimpleNamespace(tasks=[task("y", "mse"), task("c", "class", 3)], info={})
    return x, ys, data


def test_adapter_members_and_default_last_shared():
    trunk, heads = foreign_mlp()
    model = MultiTaskModel(trunk, heads)
    assert model.num_tasks == 2 and model.task_names == ["task0", "task1"]
    assert model.shared_parameters() == list(trunk.parameters())
    assert model.task_parameters(1) == list(heads[1].parameters())
    # default: the trunk's last module holding parameters itself (the second Linear; Tanh has none)
    assert model.last_shared_parameters() == list(trunk[2].parameters())
    assert MultiTaskModel(trunk, heads, last_shared=trunk[0]).last_shared_parameters() == list(trunk[0].parameters())
    # the last shared module is not registered twice
    assert len(model.state_dict()) == len(list(model.parameters())) == 8
    with pytest.raises(ValueError, match="last_shared .Linear. is not a module of the shared trunk"):
        MultiTaskModel(trunk, heads, last_shared=heads[1])


@pytest.mark.parametrize("rule", ["ls", "pcgrad", "gradnorm", "mgda-ub"])
def test_adapter_trains_one_step_through_the_baselines_drop_in(rule):
    """One rule per kind of need: losses, the task Jacobian on shared_parameters() with
    task_parameters(t), last_shared_parameters(), and the representation encoder(x) -> decode(rep)."""
    from common.aggregators import RuleStep, make_aggregator  # the baselines' drop-in

    x, ys, data = problem()
    model = MultiTaskModel(*foreign_mlp())
    agg = make_aggregator(rule, 2)
    step = RuleStep.for_model(agg, model)  # shared_parameters(), task_parameters(t), last_shared_parameters()
    opt = torch.optim.SGD(list(model.parameters()) + list(step.parameters()), lr=0.05)
    before = task_losses(data, model(x), ys).detach()
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        rep = model.encoder(x)
        losses = task_losses(data, model.decode(rep), ys)
        w = step.backward(losses, rep=rep if agg.needs == "representation" else None)
        assert w.shape == (2,)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
    after = task_losses(data, model(x), ys).detach()
    assert (after < before).all(), (rule, before.tolist(), after.tolist())


def test_adapter_trains_through_pml_gradient_balancing():
    """PML's method half on two adapted foreign MLPs (member t <-> task t), --balancing grad: the
    shared and head parameters come from the protocol (pml.mtl_ensemble)."""
    import methods.pml as pml

    x, ys, data = problem()
    ens = pml.mtl_ensemble([MultiTaskModel(*foreign_mlp(seed)) for seed in (0, 1)])
    opt = torch.optim.Adam(ens.parameters(), lr=1e-2)
    losses = lambda out: task_losses(data, out, ys)  # noqa: E731
    alphas = [torch.tensor([a, 1 - a]) for a in (1.0, 0.5, 0.0)]
    before = torch.stack([losses(ens(x, a)).detach() for a in alphas])
    for _ in range(40):
        L, _ = pml.train_step(ens, opt, x, losses, p=1.0, window=3, lam=1.0, balancing="grad")
        assert L.shape == (3, 2) and torch.isfinite(L).all()
    after = torch.stack([losses(ens(x, a)).detach() for a in alphas])
    assert (after.sum(1) < before.sum(1)).all(), (before.tolist(), after.tolist())


def test_pml_gradient_balancing_on_an_unadapted_foreign_model_says_what_to_name():
    """The issue's AttributeError is gone: without shared / heads PML says what to pass."""
    import methods.pml as pml

    x = problem()[0]
    plain = [nn.Sequential(foreign_mlp(seed)[0], foreign_mlp(seed)[1][1]) for seed in (0, 1)]  # no protocol members
    ens = pml.WeightEnsemble(plain)
    with pytest.raises(ValueError, match="^name the shared parameters and the heads: WeightEnsemble"):
        pml.train_step(ens, torch.optim.SGD(ens.parameters(), lr=0.1), x,
                       lambda out: torch.stack([out.pow(2).mean(), out.abs().mean()]), p=1.0, window=2,
                       balancing="grad")


# ---------------------------------------------------------------------------------------------
# a model missing a member
# ---------------------------------------------------------------------------------------------
class NoLastLayer(nn.Module):
    """A multi-task network with every member but last_shared_parameters()."""

    num_tasks = 2

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 4)
        self.heads = nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])

    def decode(self, rep):
        return [h(rep) for h in self.heads]

    def forward(self, x):
        return self.decode(self.encoder(x))

    def shared_parameters(self):
        return list(self.encoder.parameters())

    def task_parameters(self, t):
        return list(self.heads[t].parameters())


def test_a_model_missing_a_member_gets_one_clear_line():
    with pytest.raises(TypeError) as e:
        check_model(NoLastLayer())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("NoLastLayer is not a multi-task model of the suite: it lacks last_shared_parameters "
                          "(GradNorm, AvgNorm, EXTRA); wrap your network as common.models.MultiTaskModel(")
    assert not isinstance(NoLastLayer(), MultiTaskProtocol)
    with pytest.raises(TypeError, match="Sequential is not a multi-task model of the suite: it lacks num_tasks"):
        check_model(nn.Sequential(nn.Linear(8, 2)))


def test_build_model_checks_a_registered_builder_of_yours():
    from common.models import _BUILDERS

    register_model("bare-mlp")(lambda data, tasks, **kw: nn.Sequential(nn.Linear(8, len(tasks))))
    register_model("adapted-mlp")(lambda data, tasks, **kw: MultiTaskModel(nn.Linear(8, 4),
                                                                           [nn.Linear(4, 1) for _ in tasks]))
    data = types.SimpleNamespace(tasks=[task("a", "mse"), task("b", "mse")], num_tasks=2, input_shape=(8,),
                                 default_model="bare-mlp")
    try:
        with pytest.raises(TypeError, match="^Sequential is not a multi-task model of the suite"):
            build_model("bare-mlp", data)
        assert build_model("adapted-mlp", data).num_tasks == 2
    finally:
        del _BUILDERS["bare-mlp"], _BUILDERS["adapted-mlp"]


def test_readme_example_of_your_own_model_and_tasks_runs():
    """README "Your own model and tasks": its example, run as printed with the suite importable."""
    import re
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    section = text[text.index("### Your own model and tasks"):]
    code = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M).group(1)
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'mse'" in r.stdout and "'mae'" in r.stdout
