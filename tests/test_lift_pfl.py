"""methods/pfl.py copied alone into an empty folder imports without the suite's common/, and its method half
(COSMOS, PHN-LS) trains a 2-task MLP that the test defines. EXAMPLE is the README example
("Use one method in your own project")."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = '''\
import torch
import torch.nn as nn
from pfl import COSMOSModel, HyperNetwork, cosmos_loss, sample_ray, target_forward

class Net(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self, d_in):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(2))
    def forward(self, x):
        return [head(self.trunk(x)).squeeze(1) for head in self.heads]

torch.manual_seed(0)
x = torch.randn(256, 5)
ys = [x[:, 0] + x[:, 1], x[:, 2] * x[:, 3]]
task_losses = lambda outs: torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(outs, ys)])
cosmos = COSMOSModel(Net(5 + 2), num_tasks=2, input_shape=(5,))  # COSMOS: r appended to the features
target = Net(5).requires_grad_(False)                            # PHN: h(r) generates all its weights
hnet = HyperNetwork(target, num_tasks=2, hidden=32)
def at(r):  # the task losses of COSMOS and of PHN at the preference r
    cosmos.set_ray(r)
    return task_losses(cosmos(x)), task_losses(target_forward(target, hnet(r), x))
opt = torch.optim.Adam(list(cosmos.parameters()) + list(hnet.parameters()), lr=3e-3)
for step in range(300):
    l_cosmos, l_phn = at(r := sample_ray(2, alpha=1.0))  # one training preference r ~ Dir(alpha 1)
    loss = cosmos_loss(l_cosmos, r, lamda=2.0)[0] + (r * l_phn).sum()  # r^T L - lambda cos(L, r); PHN-LS: r^T L
    opt.zero_grad(); loss.backward(); opt.step()
(c1, p1), (c2, p2) = at(torch.tensor([1.0, 0.0])), at(torch.tensor([0.0, 1.0]))  # the two ends of the front
assert c1[0] / c1[1] > c2[0] / c2[1], (c1, c2)  # COSMOS: the loss vector turns with the ray (the cosine term)
assert p1[0] < p2[0] and p2[1] < p1[1], (p1, p2)  # PHN-LS: each task does best at its own end
'''


def test_pfl_copied_alone_runs_the_readme_example(tmp_path):
    r = run_example(tmp_path, ["methods/pfl.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
