"""methods/stl.py copied alone into an empty folder imports without the suite's common/, and its method
half (stl_step: one independent model per task) trains a 2-task problem that the test defines. EXAMPLE is
the README example ("Use one method in your own project")."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lift import run_example  # noqa: E402

EXAMPLE = '''\
import torch
import torch.nn as nn
from stl import stl_step

class Net(nn.Module):  # your model: a shared trunk and one head per task
    def __init__(self, num_heads=2):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(num_heads))
    def forward(self, x):
        return [head(self.trunk(x)).squeeze(1) for head in self.heads]

torch.manual_seed(0)
x = torch.randn(256, 5)
ys = [x[:, 0] + x[:, 1], x[:, 2] * x[:, 3]]
models = [Net(num_heads=1) for _ in ys]  # STL: one model (trunk + its own head) per task
optimizers = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
task_loss = lambda t, model: nn.functional.mse_loss(model(x)[0], ys[t])  # model t sees task t only
first = stl_step(models, optimizers, task_loss)
for step in range(100):
    losses = stl_step(models, optimizers, task_loss)
assert (losses < 0.1 * first).all(), (first, losses)  # each task's reference: its own model, trained alone
'''


def test_stl_copied_alone_runs_the_readme_example(tmp_path):
    r = run_example(tmp_path, ["methods/stl.py"], EXAMPLE)
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
