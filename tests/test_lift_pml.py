"""methods/pml.py lifts out alone (issue 17): copied by itself into an empty folder where `common`
cannot be imported, its method half (WeightEnsemble, train_step) trains a 2-task MLP that this test
defines. EXAMPLE is the README example of "Use one method in your own project"."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = """\
import torch
import torch.nn as nn
import pml


class Net(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(32, 1), nn.Linear(32, 1)])

    def forward(self, x):
        z = self.trunk(x)
        return [head(z).squeeze(1) for head in self.heads]


torch.manual_seed(0)
x = torch.randn(256, 8)
ys = [x[:, :4].sum(1), x[:, 2:6].sum(1)]  # two related regression tasks
task_losses = lambda outs: torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(outs, ys)])  # noqa: E731
ens = pml.WeightEnsemble([Net(), Net()], shared=lambda m: m.trunk.parameters(),  # member t <-> task t
                         heads=lambda m, t: m.heads[t].parameters())
opt = torch.optim.Adam(ens.parameters(), lr=1e-2)
before = [task_losses(ens(x, torch.tensor([a, 1 - a]))).detach() for a in (1.0, 0.5, 0.0)]
for step in range(200):  # Algorithm 1: W = 3 samples of alpha ~ Dir(1, 1), Eq. 3 with lambda = 1
    pml.train_step(ens, opt, x, task_losses, p=1.0, window=3, lam=1.0, balancing="grad")
after = [task_losses(ens(x, torch.tensor([a, 1 - a]))).detach() for a in (1.0, 0.5, 0.0)]
print("losses at alpha_1 = 1, 0.5, 0: before", [l.tolist() for l in before], "after", [l.tolist() for l in after])
assert all(a.sum() < 0.5 * b.sum() for a, b in zip(after, before))  # every network of the segment learned
assert after[0][0] < after[2][0] and after[2][1] < after[0][1]  # member t is the better one on task t
"""


def test_pml_method_half_trains_a_foreign_mlp_without_common(tmp_path):
    r = run_example(tmp_path, ["methods/pml.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
    assert "after" in r.stdout
