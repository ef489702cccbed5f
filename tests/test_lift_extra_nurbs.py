"""Issue 17, "copy one file": methods/extra_nurbs.py copied alone into an empty folder, where `common`
cannot be imported, runs its method half on a model and data that this test defines (the EXAMPLE below
is the README's "Use one method in your own project" example for EXTRA); the copied command line says
in one line (exit status 2) that it needs the suite; gradient_cosines, the method half's task-gradient
affinity of section 5.3, equals the harness's Jacobian-based one."""
import os
import shutil
import subprocess
import sys

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import extra_nurbs as ex  # noqa: E402
from common.train import jacobian  # noqa: E402

torch.set_num_threads(1)

# Two MSE tasks on a shared trunk; single-task endpoints, then a NURBS curve between them trained with
# Eq. 1-3: its centre must beat the centre of the straight line, C(1) must be the second endpoint, and
# model_at must give the network at C(t).
EXAMPLE = """\
import torch
import torch.nn as nn
from extra_nurbs import Curve, FlatParams, extra_objective, model_at

class MLP(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 32), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(2))
    def forward(self, x):
        return torch.cat([head(self.trunk(x)) for head in self.heads], 1)

torch.manual_seed(0)
x = torch.randn(512, 8)
y = torch.stack([x[:, :4].sum(1), (x[:, 4:] ** 2).sum(1)], 1)
def task_losses(out): return ((out - y) ** 2).mean(0)  # (2,): one MSE per task
def fit(params, objective, steps=200):
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps): opt.zero_grad(); objective().backward(); opt.step()

ends = [MLP(), MLP()]  # stage 1: single-task endpoints, task 1 at t = 0 and task 2 at t = 1
for task, m in enumerate(ends): fit(m.parameters(), lambda: task_losses(m(x))[task])
flat = FlatParams(ends[0])  # the curve spans every parameter, trunk and heads
curve = Curve(flat.flatten(ends[0]), flat.flatten(ends[1]), "nurbs", num_points=4)  # Eq. 4-5
def at(t): return task_losses(flat.call(ends[0], curve.point(t), x))  # the task losses at C(t)
def objective(t1, t2): return extra_objective(at(t1), at(t2), t1, t2, groups=([0], [1], []))[0]  # Eq. 1-3
before = at(0.5).detach()  # the centre of the straight line between the endpoints
fit(curve.parameters(), lambda: objective(*torch.rand(2).tolist()))  # stage 2: interior points, weights
assert at(0.5).mean() < before.mean() and torch.equal(curve.point(1), flat.flatten(ends[1]))
assert torch.allclose(task_losses(model_at(ends[0], curve, 0.3)(x)), at(0.3))  # a standalone model at C(t)
"""


def _alone(tmp_path):
    """A folder holding only extra_nurbs.py, and an environment where nothing else of the suite is importable."""
    shutil.copy(os.path.join(ROOT, "methods", "extra_nurbs.py"), tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _py(tmp_path, env, *args):
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_readme_example_runs_with_only_the_method_file(tmp_path):
    env = _alone(tmp_path)
    p = _py(tmp_path, env, "-c", "import common")
    assert p.returncode != 0 and "No module named 'common'" in p.stderr  # the suite is out of reach here
    p = _py(tmp_path, env, "-c", "import sys, extra_nurbs; assert not [m for m in sys.modules if m.split('.')[0] == 'common']")
    assert p.returncode == 0, p.stderr  # importing the module pulls in nothing of the harness
    (tmp_path / "example.py").write_text(EXAMPLE)
    assert len(EXAMPLE.splitlines()) <= 30
    p = _py(tmp_path, env, "example.py")
    assert p.returncode == 0, p.stderr


def test_copied_command_line_says_in_one_line_that_it_needs_the_suite(tmp_path):
    p = _py(tmp_path, _alone(tmp_path), "extra_nurbs.py", "--help")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "common/" in p.stderr


class _ThreeTasks(nn.Module):
    """Task 2 reads only the first trunk layer: the second one is unused by it (a zero gradient)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 6)
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(3))

    def forward(self, x):
        z1 = torch.tanh(self.a(x))
        z2 = torch.tanh(self.b(z1))
        return torch.cat([self.heads[0](z2), self.heads[1](z2), self.heads[2](z1)], 1)


def test_gradient_cosines_equal_the_harness_jacobian_and_keep_the_graph():
    torch.manual_seed(0)
    model = _ThreeTasks()
    x, y = torch.randn(32, 4), torch.randn(32, 3)
    losses = ((model(x) - y) ** 2).mean(0)
    shared = list(model.a.parameters()) + list(model.b.parameters())
    A = ex.gradient_cosines(losses, iter(shared))  # any iterable of the shared parameters
    G = jacobian(losses, shared, retain_graph=True)
    assert torch.equal(A, ex.cosine_matrix(G.detach().float()))
    assert torch.allclose(A.diagonal(), torch.ones(3)) and torch.allclose(A, A.T)
    losses.sum().backward()  # the caller's own backward after the affinity: the graph was kept
    assert model.heads[2].weight.grad is not None
