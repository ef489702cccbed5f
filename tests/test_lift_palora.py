"""methods/palora.py lifts out alone (issue 17): copied by itself into an empty folder where `common`
cannot be imported, its method half (palora_wrap, the Eq. 2 schedule, backward_pass) trains a 2-task
MLP that this test defines, and one network then traces a trade-off as the preference moves. EXAMPLE
is the README example of "Use one method in your own project"."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = """\
import torch
import torch.nn as nn
import palora


class Net(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self):
        super().__init__()
        self.trunk, self.heads = nn.Sequential(nn.Linear(8, 4), nn.ReLU()), nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])

    def forward(self, x):
        return [head(self.trunk(x)).squeeze(1) for head in self.heads]


torch.manual_seed(0)
x = torch.randn(256, 8)
ys = [x[:, :4].abs().sum(1), x[:, 4:].abs().sum(1)]  # two tasks competing for a narrow trunk
task_losses = lambda outs: torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(outs, ys)])  # noqa: E731
model = palora.palora_wrap(Net(), num_tasks=2, rank=1, scaling=1.0)  # Eq. 1: task adapters on every Linear
params, shared = list(model.parameters()), {id(p) for p in model.trunk.parameters()}  # shared: for "grad" balancing
opt, base = torch.optim.Adam(params, lr=1e-2), palora.base_preferences(2, 5)  # M = 5 preferences per batch (App. B)
for step in range(300):
    opt.zero_grad()
    for lam in palora.sample_preferences("annealed", base, (step + 1) / 300, 0.2, 1.0):  # Eq. 2, tau = progress
        palora.set_preference(model, lam)
        palora.backward_pass(task_losses(model(x)), lam, "none", params, shared)  # lambda^T L
    opt.step()
front = []
for a in (1.0, 0.5, 0.0):  # one network, any preference lambda = (a, 1 - a)
    palora.set_preference(model, [a, 1 - a])
    front.append(task_losses(model(x)).detach())
assert front[0][0] < front[1][0] < front[2][0] and front[2][1] < front[1][1] < front[0][1], front  # a trade-off
"""


def test_palora_method_half_trains_a_foreign_mlp_without_common(tmp_path):
    r = run_example(tmp_path, ["methods/palora.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
