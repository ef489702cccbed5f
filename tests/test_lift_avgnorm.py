"""Copy one file: methods/avgnorm.py alone, in a folder where `common` cannot be imported, trains a
foreign two-task MLP with its method half (avgnorm_weights, Eq. 6, and weighted_backward, Eq. 2-3).
EXAMPLE is the README example of "Use one method in your own project"."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = '''\
import torch
import torch.nn as nn
import avgnorm
class Net(nn.Module):  # a shared trunk and two heads
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(32, 1), nn.Linear(32, 1)])
    def forward(self, x):
        return [head(self.trunk(x)) for head in self.heads]

torch.manual_seed(0)
net = Net()
theta = list(net.trunk[2].parameters())  # the g_i are measured on the last shared layer (the paper's choice)
x = torch.randn(256, 8)
ys = [x[:, :4].sum(1, keepdim=True), 30 * (x[:, 4:] ** 2).sum(1, keepdim=True)]  # task 2 on a 30x larger scale
weigh = lambda G: avgnorm.avgnorm_weights(G)[0]  # Eq. 6: w_i = ||sum_j g_j|| / ||g_i||
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for step in range(150):
    opt.zero_grad()
    losses = torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(net(x), ys)])
    w, G = avgnorm.weighted_backward(losses, None, weigh, theta)  # backward of sum_i w_i L_i, w detached (Eq. 2-3)
    opt.step()
    # every weighted gradient w_i g_i has the norm S = ||sum_i g_i||: no task dominates the update
    assert torch.allclose(w * G.norm(dim=1), G.sum(0).norm().expand(2), rtol=1e-4)
    first = losses.detach() if step == 0 else first
print("weights", w.tolist(), "losses", first.tolist(), "->", losses.tolist())
assert (losses < 0.5 * first).all()
'''


def test_avgnorm_method_half_runs_without_common(tmp_path):
    r = run_example(tmp_path, ["methods/avgnorm.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
    assert "weights" in r.stdout
