"""common.aggregators as a drop-in: RuleStep fills the gradients of any rule as hand-written references
do, and every rule's state lives in a state_dict that torch.load(weights_only=True) reads back, so that
a restored rule continues exactly as the original; baselines.py --resume equals an uninterrupted run."""
import copy
import io
import json
import os
import sys

import pytest
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "methods"))

import baselines  # noqa: E402
from common.aggregators import AGGREGATORS, RuleInputError, RuleStep, make_aggregator  # noqa: E402

FLAGS = ["--no-progress", "--quiet", "--data-root", os.path.join(ROOT, "data")]


class Net(nn.Module):
    """A shared trunk (its output is the shared representation) and one linear head per task."""

    def __init__(self, T=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(T))

    def losses(self, x, ys):
        rep = self.trunk(x)
        return torch.stack([(h(rep).squeeze(1) - y).pow(2).mean() for h, y in zip(self.heads, ys)]), rep


def make_step(net, name, T=3, **hyper):
    rule = make_aggregator(name, T, **hyper)
    return RuleStep(rule, net.trunk.parameters(), [list(h.parameters()) for h in net.heads],
                    last_shared=net.trunk[2].parameters())


def batch(i, T=3):
    """Targets whose means pull the trunk apart (conflicting task gradients: PCGrad projects)."""
    g = torch.Generator().manual_seed(100 + i)
    x = torch.randn(16, 4, generator=g)
    return x, [torch.randn(16, generator=g) + m for m in (1.0, -1.0, 0.5)[:T]]


# hyperparameters that make every piece of state matter within a few steps; generators seeded
# differently in the original and the fresh rule, so that only a restored generator state agrees
HYPER = {"nashmtl": dict(update_weights_every=2), "imtl": dict(mode="hybrid", scale_lr=0.1)}
GENERATED = ("rlw", "pcgrad", "graddrop")


def hyper_for(name, seed):
    h = dict(HYPER.get(name, {}))
    if name in GENERATED:
        h["generator"] = torch.Generator().manual_seed(seed)
    return h


def run_steps(net, step, opt, batches):
    out = []
    for x, ys in batches:
        opt.zero_grad(set_to_none=True)
        losses, rep = net.losses(x, ys)
        w = step.backward(losses, rep)
        out.append((w.detach().clone(), [None if p.grad is None else p.grad.clone() for p in _all(net, step)]))
        opt.step()
        step.after_step(lambda: net.losses(x, ys)[0])
    return out


def _all(net, step):
    return list(net.parameters()) + list(step.parameters())


def trained(name):
    """A net and its drop-in after 2 epochs of 2 steps and 1 step into the third epoch."""
    net = Net()
    step = make_step(net, name, **hyper_for(name, 0))
    opt = torch.optim.SGD(_all(net, step), lr=0.05)
    for e in range(2):
        run_steps(net, step, opt, [batch(2 * e), batch(2 * e + 1)])
        step.end_epoch()
    run_steps(net, step, opt, [batch(4)])
    return net, step


def restored(net, step, drop=()):
    """A copy of `net` and a freshly built drop-in that loads `step`'s state through torch.save /
    torch.load(weights_only=True), without the rule-state keys in `drop`."""
    buf = io.BytesIO()
    torch.save(step.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    for k in drop:
        if k == "sums":
            sd["sums"], sd["n"] = None, 0
        else:
            del sd["rule"][k]
    net2 = copy.deepcopy(net)
    step2 = make_step(net2, step.rule.name, **hyper_for(step.rule.name, 12345))
    opt2 = torch.optim.SGD(_all(net2, step2), lr=0.05)  # built before the load: the rule's tensors keep their identity
    step2.load_state_dict(sd)
    return net2, step2, opt2


def continuation(net, step, opt):
    """Two more steps of the third epoch, its end, and one step of the fourth: every weight and .grad,
    the epoch's mean losses, the final parameters and the rule's final state (but its wall time)."""
    out = run_steps(net, step, opt, [batch(5), batch(6)])
    mean = step.end_epoch()
    out += run_steps(net, step, opt, [batch(7)])
    state = {k: v for k, v in step.state_dict()["rule"].items() if k != "solver_seconds"}
    return out, mean, [p.detach().clone() for p in _all(net, step)], state


def equal_state(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(equal_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal_state(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN residuals are equal


def same(a, b):
    (steps_a, mean_a, params_a, state_a), (steps_b, mean_b, params_b, state_b) = a, b
    if not torch.equal(mean_a, mean_b) or not all(torch.equal(p, q) for p, q in zip(params_a, params_b)):
        return False
    if not equal_state(state_a, state_b):
        return False
    for (wa, ga), (wb, gb) in zip(steps_a, steps_b):
        if not torch.equal(wa, wb):
            return False
        for p, q in zip(ga, gb):
            if (p is None) != (q is None) or (p is not None and not torch.equal(p, q)):
                return False
    return True


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_restored_rule_continues_exactly_as_the_original(name):
    net, step = trained(name)
    net2, step2, opt2 = restored(net, step)
    opt = torch.optim.SGD(_all(net, step), lr=0.05)
    assert same(continuation(net, step, opt), continuation(net2, step2, opt2))
    for v in step2.state_dict()["rule"].values():  # plain values only (the weights_only loader already says so)
        assert isinstance(v, (torch.Tensor, int, float, str, bool, list, tuple, dict, type(None)))


# every piece of state that changes in training: dropped from the state_dict, the continuation differs
MATTERS = [("dwa", "history"), ("uw", "log_vars"), ("gradnorm", "w"), ("gradnorm", "opt"),
           ("gradnorm", "initial_losses"), ("gradnorm", "epochs_seen"), ("famo", "logits"), ("famo", "opt"),
           ("rlw", "generator"), ("pcgrad", "generator"), ("graddrop", "generator"),
           ("nashmtl", "alpha"), ("nashmtl", "step"), ("imtl", "log_scales"), ("imtl", "_opt"), ("dwa", "sums")]


@pytest.mark.parametrize("name,key", MATTERS)
def test_each_piece_of_state_is_needed(name, key):
    net, step = trained(name)
    net2, step2, opt2 = restored(net, step, drop=[key])
    opt = torch.optim.SGD(_all(net, step), lr=0.05)
    assert not same(continuation(net, step, opt), continuation(net2, step2, opt2))


def test_learnable_tensors_are_loaded_in_place_and_imtl_loss_mode_restores():
    net, step = trained("uw")
    net2 = copy.deepcopy(net)
    step2 = make_step(net2, "uw")
    held = step2.parameters()[0]
    step2.load_state_dict(step.state_dict())
    assert step2.parameters()[0] is held and torch.equal(held, step.rule.log_vars.detach()) and held.requires_grad
    a, b = make_aggregator("imtl", 3, mode="loss"), make_aggregator("imtl", 3, mode="loss")
    with torch.no_grad():
        a.log_scales += 0.5
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.log_scales, a.log_scales) and b.parameters()[0] is b.log_scales


def test_state_of_another_rule_or_task_count_is_refused():
    with pytest.raises(ValueError, match="cannot load"):
        make_aggregator("dwa", 3).load_state_dict(make_aggregator("famo", 3).state_dict())
    with pytest.raises(ValueError, match="cannot load"):
        make_aggregator("dwa", 2).load_state_dict(make_aggregator("dwa", 3).state_dict())


# ---- RuleStep against hand-written references (two tasks) --------------------------------------------
def _reference_grads(net, weighted_loss):
    net.zero_grad(set_to_none=True)
    weighted_loss.backward()
    return [p.grad.clone() for p in net.parameters()]


def _filled(net):
    return [p.grad.clone() for p in net.parameters()]


def _close(a, b, tol=1e-6):
    return all(torch.allclose(p, q, atol=tol, rtol=1e-5) for p, q in zip(a, b))


def test_ls_is_the_gradient_of_the_summed_loss_and_max_norm_clips_only_the_shared_part():
    x, ys = batch(0, 2)
    net = Net(2)
    ref = _reference_grads(net, net.losses(x, ys)[0].sum())
    net.zero_grad(set_to_none=True)
    w = make_step(net, "ls", 2).backward(net.losses(x, ys)[0])
    assert torch.equal(w, torch.ones(2)) and _close(_filled(net), ref, 0)
    net.zero_grad(set_to_none=True)
    step = RuleStep(make_aggregator("ls", 2), net.trunk.parameters(), [list(h.parameters()) for h in net.heads], max_norm=0.01)
    step.backward(net.losses(x, ys)[0])
    n_trunk = len(list(net.trunk.parameters()))
    norm = torch.cat([g.flatten() for g in ref[:n_trunk]]).norm()
    assert norm > 0.01
    assert _close(_filled(net)[:n_trunk], [g * (0.01 / (norm + 1e-6)) for g in ref[:n_trunk]])
    assert _close(_filled(net)[n_trunk:], ref[n_trunk:], 0)  # heads are not clipped


def _min_norm_2(g1, g2):
    """Sener & Koltun, Algorithm 1: gamma minimising ||gamma g1 + (1 - gamma) g2||."""
    gamma = float(((g2 - g1) @ g2) / (g1 - g2).pow(2).sum())
    gamma = min(1.0, max(0.0, gamma))
    return torch.tensor([gamma, 1.0 - gamma])


def _flat_grads(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])


def test_mgda_shared_direction_and_weighted_heads():
    x, ys = batch(1, 2)
    net = Net(2)
    shared = list(net.trunk.parameters())
    L = net.losses(x, ys)[0]
    w = _min_norm_2(_flat_grads(L[0], shared), _flat_grads(L[1], shared))
    ref = _reference_grads(net, (w * L).sum())  # = sum_t w_t g_t on the trunk, w_t times its own gradient on head t
    net.zero_grad(set_to_none=True)
    got_w = make_step(net, "mgda", 2).backward(net.losses(x, ys)[0])
    assert torch.allclose(got_w.float(), w, atol=1e-6) and _close(_filled(net), ref)


def test_mgda_ub_weights_come_from_the_representation_gradients():
    x, ys = batch(2, 2)
    net = Net(2)
    L, rep = net.losses(x, ys)
    w = _min_norm_2(torch.autograd.grad(L[0], rep, retain_graph=True)[0].flatten(),
                    torch.autograd.grad(L[1], rep, retain_graph=True)[0].flatten())
    ref = _reference_grads(net, (w * L).sum())
    net.zero_grad(set_to_none=True)
    L, rep = net.losses(x, ys)
    step = make_step(net, "mgda-ub", 2)
    got_w = step.backward(L, rep)
    assert torch.allclose(got_w.float(), w, atol=1e-6) and _close(_filled(net), ref)
    for bad in (None, [rep, rep]):
        L, rep = net.losses(x, ys)
        with pytest.raises(ValueError, match="mgda-ub needs rep") as e:
            step.backward(L, bad)
        assert "\n" not in str(e.value)


def test_gradnorm_equal_weights_then_one_adam_step_on_the_weights():
    """Algorithm 1 with warm-up off: step 1 uses w = 1 and moves w by one Adam step on
    sum_t |w_t n_t - mean(w n) r_t^alpha| (r = 1 at the first step); Adam's first step is lr * sign."""
    x, ys = batch(3, 2)
    net = Net(2)
    last = list(net.trunk[2].parameters())
    L = net.losses(x, ys)[0]
    n = torch.stack([_flat_grads(L[t], last).norm() for t in range(2)]).double()
    ref1 = _reference_grads(net, L.sum())
    net.zero_grad(set_to_none=True)
    step = make_step(net, "gradnorm", 2, warmup_epochs=0)
    w1 = step.backward(net.losses(x, ys)[0])
    assert torch.equal(w1, torch.ones(2)) and _close(_filled(net), ref1)
    w2_ref = 1.0 - 0.025 * torch.sign(n - n.mean())  # sums to 2 already: the renormalisation keeps it
    L = net.losses(x, ys)[0]
    ref2 = _reference_grads(net, (w2_ref.float() * L).sum())
    net.zero_grad(set_to_none=True)
    w2 = step.backward(net.losses(x, ys)[0])
    assert torch.allclose(w2.double(), w2_ref, atol=1e-7) and _close(_filled(net), ref2)


def test_famo_after_step_moves_the_logits_by_one_adam_step_and_the_next_gradient_uses_them():
    """FAMO Algorithm 1: delta = log L(before) - log L(after), grad_xi = z (delta - z . delta) with
    z = softmax(0) = 1/2; Adam's first step is lr * sign(grad). The next step's loss is
    sum_t z_t log L_t / c, c = sum_t z_t / L_t (detached)."""
    x, ys = batch(4, 2)
    net = Net(2)
    step = make_step(net, "famo", 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = net.losses(x, ys)[0]
    opt.zero_grad()
    step.backward(before)
    opt.step()
    step.after_step(lambda: net.losses(x, ys)[0])
    after = net.losses(x, ys)[0].detach()
    delta = (torch.log(before.detach() + 1e-8) - torch.log(after + 1e-8)).double()
    z = torch.full((2,), 0.5, dtype=torch.float64)
    logits = -0.025 * torch.sign(z * (delta - (z * delta).sum()))
    assert torch.allclose(step.rule.logits, logits, atol=1e-9)
    z = torch.softmax(logits, 0).float()
    L = net.losses(x, ys)[0]
    ref = _reference_grads(net, (z * torch.log(L + 1e-8)).sum() / (z / (L.detach() + 1e-8)).sum())
    net.zero_grad(set_to_none=True)
    step.backward(net.losses(x, ys)[0])
    assert _close(_filled(net), ref)


def test_end_epoch_is_the_mean_of_the_losses_and_feeds_the_rules_epoch_hook():
    net = Net(2)
    step = make_step(net, "dwa", 2)
    seen = []
    for i in range(3):
        L = net.losses(*batch(i, 2))[0]
        seen.append(L.detach())
        step.backward(L)
    mean = step.end_epoch()
    assert torch.equal(mean, (seen[0] + seen[1] + seen[2]) / 3) and torch.equal(step.rule.history[-1], mean.double())
    assert step.state_dict()["sums"] is None and step.state_dict()["n"] == 0


def test_after_step_only_recomputes_for_rules_that_need_it():
    net = Net(2)
    calls = []
    for name, needs in (("famo", True), ("ls", False), ("nashmtl", False)):
        step = make_step(net, name, 2)
        assert step.needs_after_step is needs
        step.backward(net.losses(*batch(0, 2))[0])
        step.after_step(lambda: calls.append(name) or net.losses(*batch(0, 2))[0])
    assert calls == ["famo"]


def test_a_subset_of_tasks_is_a_subset_of_heads():
    """EXTRA's endpoints train a rule on some of a model's tasks: RuleStep.for_model(rule, model, tasks)."""
    from common.models import MTLModel

    torch.manual_seed(0)
    model = MTLModel(nn.Sequential(nn.Linear(4, 6), nn.Tanh()), [nn.Linear(6, 1) for _ in range(3)], ["a", "b", "c"])
    x, ys = batch(0)
    step = RuleStep.for_model(make_aggregator("mgda", 2), model, tasks=[0, 2])
    L = torch.stack([(o.squeeze(1) - y).pow(2).mean() for o, y in zip(model(x), ys)])
    step.backward(L[[0, 2]])
    assert all(p.grad is None for p in model.heads[1].parameters())
    assert all(p.grad is not None for t in (0, 2) for p in model.heads[t].parameters())


# ---- baselines.py --resume ---------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["famo", "dwa", "nashmtl", "uw"])
def test_baselines_resume_equals_an_uninterrupted_run(tmp_path, rule):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--method", rule, "--dataset", "toy", "--batch-size", "250"] + FLAGS  # 4 steps per epoch
    if rule == "nashmtl":  # step 8 (the first after the resume) reuses the weights solved at step 6
        common += ["--hyper", "update_weights_every=3"]
    baselines.main(common + ["--epochs", "4", "--out", str(a)])
    baselines.main(common + ["--epochs", "2", "--out", str(b)])
    blob = torch.load(b / "checkpoint.pt", weights_only=False)
    rng = blob.pop("rng")  # Run's own RNG record (numpy's state) is not the rule's concern here
    buf = io.BytesIO()
    torch.save(blob, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["state"]  # the method's state, the rule's included
    assert state["tracked"]["rule"]["rule"]["rule"] == rule and rng is not None
    baselines.main(common + ["--epochs", "4", "--out", str(b), "--resume"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert mb["steps"] == ma["steps"] == 16
    assert mb["tasks"] == ma["tasks"] and mb["mean_weights"] == ma["mean_weights"]
    if rule == "dwa":  # the third epoch's weights come from the loss history of the first two
        assert ma["mean_weights"] != [1.0, 1.0]


def test_mgda_ub_on_task_specific_features_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """A backbone whose encoder gives one feature tensor per task (MTAN) has no shared representation:
    RuleStep raises RuleInputError, which the command line reports like a UsageError."""
    import common.models as models
    from common.train import main_guard

    class PerTask(nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.enc = enc

        def forward(self, x):
            r = self.enc(x)
            return [r, r]
    real = models.build_model

    def build(*a, **k):
        m = real(*a, **k)
        m.encoder = PerTask(m.encoder)
        return m
    monkeypatch.setattr(models, "build_model", build)
    monkeypatch.setattr(sys, "argv", ["baselines.py"])
    argv = ["--method", "mgda-ub", "--dataset", "toy", "--max-steps", "1", "--out", str(tmp_path / "o")] + FLAGS
    with pytest.raises(RuleInputError, match="mgda-ub needs rep = the one shared representation tensor, got a list"):
        baselines.main(argv)
    with pytest.raises(SystemExit) as e:
        main_guard(lambda _: baselines.main(argv + ["--overwrite"]))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("baselines.py: error: mgda-ub needs rep"), err


def test_the_module_docstring_example_runs_with_aggregators_py_copied_alone(tmp_path):
    """The usage example at the top of common/aggregators.py, run on a 2-task MLP in a folder that holds
    only that file; its saved state loads with weights_only=True into a fresh rule."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _lift import run_alone
    import common.aggregators as A

    lines = A.__doc__.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("    rule = make_aggregator("))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    example = "\n".join(ln[4:] for ln in lines[start:end])
    setup = """import torch
import torch.nn as nn
from aggregators import RuleStep, make_aggregator

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 16), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(2))
    def forward(self, x):
        return [h(self.trunk(x)).squeeze(1) for h in self.heads]

def task_losses(outs, ys):
    return torch.stack([nn.functional.mse_loss(o, y) for o, y in zip(outs, ys)])

torch.manual_seed(0)
net, epochs = Net(), 3
x = torch.randn(64, 5)
batches = [(x, [x[:, 0] + 1.0, x[:, 1] * x[:, 2]])] * 4
"""
    check = """
fresh = RuleStep(make_aggregator("famo", num_tasks=2), net.trunk.parameters(), [list(h.parameters()) for h in net.heads])
fresh.load_state_dict(torch.load("rule.pt", weights_only=True))
assert (step.rule.logits != 0).any() and torch.equal(fresh.rule.logits, step.rule.logits)
assert torch.equal(fresh.rule.opt.m, step.rule.opt.m) and fresh.rule.opt.t == step.rule.opt.t == 12
"""
    (tmp_path / "example.py").write_text(setup + example + "\n" + check)
    r = run_alone(tmp_path, ["common/aggregators.py"], "import runpy; runpy.run_path('example.py'); print('example ok')")
    assert r.returncode == 0 and "example ok" in r.stdout, r.stdout + r.stderr
