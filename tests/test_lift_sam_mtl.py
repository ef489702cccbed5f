"""Copy one file: methods/sam_mtl.py alone, in a folder where `common` cannot be imported, trains a
foreign two-task MLP with its method half (sam_gradients / combine / apply_gradients and a rule the
script writes itself). EXAMPLE is the README example of "Use one method in your own project"."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = '''\
import torch
import torch.nn as nn
import sam_mtl
class Net(nn.Module):  # a shared trunk and two heads
    def __init__(self):
        super().__init__()
        self.trunk, self.heads = nn.Sequential(nn.Linear(8, 32), nn.ReLU()), nn.ModuleList([nn.Linear(32, 1), nn.Linear(32, 1)])
    def forward(self, x):
        return [head(self.trunk(x)) for head in self.heads]

def mgda(G, losses):  # any rule (G: one gradient per row) -> a direction; here two-task MGDA
    a = ((G[1] - G[0]) @ G[1] / ((G[0] - G[1]).norm() ** 2 + 1e-12)).clamp(0, 1)
    return a * G[0] + (1 - a) * G[1]

torch.manual_seed(0)
net = Net()
shared, heads = list(net.trunk.parameters()), [list(h.parameters()) for h in net.heads]
x = torch.randn(256, 8)
ys = [x[:, :4].sum(1, keepdim=True), (x[:, 4:] ** 2).sum(1, keepdim=True)]
loss_fn = lambda outs, ys: torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(outs, ys)])
rules = sam_mtl.rules_for("individual", 2, lambda k: mgda)  # F-MGDA: one rule per sub-problem
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for step in range(100):
    g = sam_mtl.sam_gradients(net, shared, heads, x, ys, loss_fn, rho_sh=0.05, rho_ns=0.05)  # Alg. 1, lines 1-6
    d, parts, _ = sam_mtl.combine("individual", rules, g)  # lines 7-8: d = Agg(g^loss) + Agg(g^flat)
    sam_mtl.apply_gradients(shared, heads, d, g)  # sets .grad: shared <- d, each head <- its SAM gradient (Eq. 14)
    opt.step()
    first = g.losses if step == 0 else first
print("losses", first.tolist(), "->", g.losses.tolist(), "sharpness", g.sharpness.tolist())
assert (g.losses < 0.5 * first).all()
'''


def test_sam_mtl_method_half_runs_without_common(tmp_path):
    r = run_example(tmp_path, ["methods/sam_mtl.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
    assert "losses" in r.stdout
