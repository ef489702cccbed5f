"""methods/baselines.py and common/aggregators.py, each copied alone into an empty folder, import without
the suite's common/; copied together they run EXAMPLE, the README example ("Use one method in your own
project"): one rule from aggregators.py and baselines.py's gradient diagnostics in a researcher's own loop
on a 2-task MLP that the test defines."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_alone, run_example  # noqa: E402

EXAMPLE = '''\
import torch
import torch.nn as nn
from aggregators import make_aggregator  # the rules: common/aggregators.py, copied alone
from baselines import cosine_and_norms

class Net(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(2))
    def forward(self, x):
        return [head(self.trunk(x)).squeeze(1) for head in self.heads]

torch.manual_seed(0)
x = torch.randn(256, 5)
ys = [x[:, 0] + x[:, 1], x[:, 2] * x[:, 3]]
net, rule = Net(), make_aggregator("mgda", num_tasks=2)  # any rule with rule.needs == "jacobian"
shared = list(net.trunk.parameters())  # you name the shared part
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for step in range(100):
    losses = torch.stack([nn.functional.mse_loss(out, y) for out, y in zip(net(x), ys)])
    G = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(l, shared, retain_graph=True)]) for l in losses])
    d, w = rule.direction(G, losses.detach())  # T x d Jacobian -> shared update d, task weights w
    opt.zero_grad(); (w * losses).sum().backward()  # the heads: w_t times their own gradient
    for p, g in zip(shared, d.split([p.numel() for p in shared])):  # the shared part: the rule's d
        p.grad = g.view_as(p).clone()
    cos, norms = cosine_and_norms(G, shared)  # cos(g_t, d) > 0: MGDA's d descends every task
    assert (cos > 0).all(), cos
    opt.step()
assert (losses < 0.2).all(), losses  # from 2 and 1, the variances of the two targets
'''


def test_baselines_and_aggregators_each_import_alone(tmp_path):
    for f, code in (("methods/baselines.py", "import baselines; baselines.cosine_and_norms"),
                    ("common/aggregators.py", "import aggregators; aggregators.make_aggregator('cagrad', 2)")):
        (tmp_path / f.split("/")[0]).mkdir()
        r = run_alone(tmp_path / f.split("/")[0], [f], code + "; print('ok')")
        assert r.returncode == 0 and "ok" in r.stdout, f + ": " + r.stderr


def test_baselines_readme_example_with_one_rule_of_aggregators(tmp_path):
    r = run_example(tmp_path, ["methods/baselines.py", "common/aggregators.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
