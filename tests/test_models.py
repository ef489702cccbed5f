"""Backbones of common/models.py: output shapes, parameter counts against the published figures,
the shared / task parameter split, torch.func.functional_call, and pretrained-weight loading."""
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from common.data import MTLData, TensorMTL, task
from common.device import UsageError
from common.models import build_model, count_parameters


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These forwards are tiny; one intra-op thread avoids OpenMP spin-waits on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fake_data(tasks, input_shape, n=2):
    """A minimal MTLData: zeros in, zeros out; only the task specs and input shape matter."""
    ds = TensorMTL(torch.zeros(n, *input_shape), [torch.zeros(n) for _ in tasks])
    return MTLData("fake", list(tasks), ds, ds, ds, tuple(input_shape), "lenet")


NYU_TASKS = [task("segmentation", "seg", 13), task("depth", "depth", 1), task("normal", "normal", 3)]
CITY_TASKS = [task("segmentation", "seg", 7), task("depth", "depth", 1)]
CELEBA_TASKS = [task(f"attr{i}", "binary", 1) for i in range(40)]
UTK_TASKS = [task("age", "huber", 1), task("gender", "binary", 1), task("ethnicity", "class", 5)]
MNIST_TASKS = [task("left", "class", 10), task("right", "class", 10)]

NYU = fake_data(NYU_TASKS, (3, 32, 64))
CITY = fake_data(CITY_TASKS, (3, 32, 64))
CELEBA = fake_data(CELEBA_TASKS, (3, 64, 64))
UTK = fake_data(UTK_TASKS, (3, 64, 64))
MNIST = fake_data(MNIST_TASKS, (1, 28, 28))

_CACHE = {}


NARROW = (8, 8, 16, 16, 16)  # SegNet / MTAN filters for checks that do not depend on the width


def model(name, data, narrow=False):
    """Models are built once per (name, dataset, width) and put in eval mode."""
    key = (name, data.name, tuple(data.task_names), data.input_shape, narrow)
    if key not in _CACHE:
        torch.manual_seed(0)
        kw = {"filters": NARROW} if narrow and name in ("segnet", "mtan") else {}
        _CACHE[key] = build_model(name, data, **kw).eval()
    return _CACHE[key]


def shared_count(m):
    return count_parameters(m.shared_parameters())


def head_count(m):
    return count_parameters(m.all_task_parameters())


# ----------------------------------------------------------------------------------------------
# parameter counts
# ----------------------------------------------------------------------------------------------
def test_lenet_parameter_counts():
    m = build_model("lenet", MNIST)
    assert shared_count(m) == 21_330
    assert [count_parameters(m.task_parameters(t)) for t in range(2)] == [3_060, 3_060]


def test_celeba_cnn_parameter_count():
    m = model("celeba_cnn", CELEBA)
    shared, heads = shared_count(m), head_count(m)
    print(f"celeba_cnn: shared {shared:,} heads {heads:,} total {shared + heads:,} (reference ~5.2M)")
    # 7 bias-free convs 4,646,592 + BN2d 3,712 + 2 bias-free linears 524,288 + BN1d 2,048
    assert shared == 5_176_640
    assert heads == 40 * 513
    assert abs(shared + heads - 5.2e6) / 5.2e6 < 0.01  # "about 5.2M": within 1%


def test_segnet_parameter_count():
    m = model("segnet", NYU)
    shared, heads = shared_count(m), head_count(m)
    print(f"segnet (NYUv2): shared {shared:,} heads {heads:,} total {shared + heads:,} (reference ~25M)")
    assert shared == 24_943_296
    # trunk + one 13-class head = the single-task SegNet count the MTAN scripts divide by
    assert shared + count_parameters(m.task_parameters(0)) == 24_981_069
    assert abs(shared + heads - 25e6) / 25e6 < 0.01


def test_mtan_parameter_count():
    m = model("mtan", NYU)
    shared, heads = shared_count(m), head_count(m)
    print(f"mtan (NYUv2): shared {shared:,} heads {heads:,} total {shared + heads:,} (reference ~44.2M)")
    assert shared + heads == 44_229_073
    assert abs(shared + heads - 44.2e6) / 44.2e6 < 0.005  # "about 44.2M": within 0.5%
    assert abs(shared - 44.1e6) / 44.1e6 < 0.005  # attention counted as shared: "about 44.1M"
    city = model("mtan", CITY)
    print(f"mtan (Cityscapes): shared {shared_count(city):,} heads {head_count(city):,}")
    assert shared - shared_count(city) == 2_984_576  # one task's attention modules


@pytest.mark.parametrize("data, expected", [(UTK, 11_176_512), (MNIST, 11_170_240)])
def test_resnet18_parameter_count(data, expected):
    m = model("resnet18", data)
    print(f"resnet18 ({data.input_shape[0]} channel): shared {shared_count(m):,} heads {head_count(m):,}")
    assert shared_count(m) == expected
    assert head_count(m) == sum(512 * t.out_dim + t.out_dim for t in data.tasks)


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------
CASES = [("resnet18", UTK, 2), ("resnet18", MNIST, 2), ("celeba_cnn", CELEBA, 2),
         ("segnet", NYU, 1), ("segnet", CITY, 1), ("mtan", NYU, 1), ("mtan", CITY, 1),
         ("lenet", MNIST, 2)]
IDS = [f"{n}-{d.input_shape[0]}x{d.input_shape[1]}-{d.num_tasks}t" for n, d, _ in CASES]


def expected_shape(data, t, batch):
    spec = data.tasks[t]
    if spec.kind in ("seg", "depth", "normal"):
        return (batch, spec.out_dim, *data.input_shape[1:])
    return (batch, spec.out_dim)


@pytest.mark.parametrize("name, data, batch", CASES, ids=IDS)
def test_output_shapes(name, data, batch):
    m = model(name, data)
    with torch.no_grad():
        out = m(torch.randn(batch, *data.input_shape))
    assert len(out) == data.num_tasks
    for t, y in enumerate(out):
        assert tuple(y.shape) == expected_shape(data, t, batch)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [28, 36])
def test_resnet18_one_channel_small_inputs(size):
    m = model("resnet18", fake_data(MNIST_TASKS, (1, size, size)))
    assert m.encoder.conv1.in_channels == 1
    with torch.no_grad():
        rep = m.encoder(torch.randn(2, 1, size, size))
        out = m.decode(rep)
    assert rep.shape == (2, 512)
    assert [tuple(y.shape) for y in out] == [(2, 10), (2, 10)]


def test_mtan_encoder_returns_one_map_per_task():
    for data in (NYU, CITY):
        m = model("mtan", data)
        with torch.no_grad():
            reps = m.encoder(torch.randn(1, 3, 32, 64))
        assert isinstance(reps, list) and len(reps) == data.num_tasks
        assert all(r.shape == (1, 64, 32, 64) for r in reps)
    # the task maps differ: each task has its own attention (checked in training mode, where BatchNorm
    # normalises; at init in eval mode all masks are ~sigmoid(0) and the maps nearly coincide)
    torch.manual_seed(0)
    narrow = build_model("mtan", CITY, filters=NARROW).train()
    reps = narrow.encoder(torch.randn(2, 3, 32, 64))
    assert (reps[0] - reps[1]).norm() > 1e-2 * reps[0].norm() > 0


def test_dense_heads_normals_unit_length_and_odd_sizes():
    m = model("segnet", NYU)
    with torch.no_grad():
        out = m(torch.randn(1, 3, 36, 52))  # not a multiple of 32: unpooling restores the sizes
    assert [tuple(y.shape[-2:]) for y in out] == [(36, 52)] * 3
    assert torch.allclose(out[2].norm(dim=1), torch.ones(1, 36, 52), atol=1e-5)


def test_channels_last_matches_contiguous():
    for name, data, shape in (("segnet", CITY, (1, 3, 32, 64)), ("mtan", CITY, (1, 3, 32, 64)),
                              ("celeba_cnn", CELEBA, (2, 3, 64, 64))):
        m = model(name, data, narrow=True)
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = m(x)
            m.to(memory_format=torch.channels_last)
            got = m(x.contiguous(memory_format=torch.channels_last))
            m.to(memory_format=torch.contiguous_format)
        for a, b in zip(ref, got):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# parameter partition, last shared layer, functional_call
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, data, batch", CASES, ids=IDS)
def test_shared_and_task_parameters_partition(name, data, batch):
    m = model(name, data)
    ids_shared = [id(p) for p in m.shared_parameters()]
    ids_tasks = [[id(p) for p in m.task_parameters(t)] for t in range(m.num_tasks)]
    groups = [set(ids_shared)] + [set(g) for g in ids_tasks]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "groups overlap"
    assert set().union(*groups) == {id(p) for p in m.parameters()}, "groups do not cover the model"
    last = {id(p) for p in m.last_shared_parameters()}
    assert last and last <= set(ids_shared)


def test_last_shared_layers():
    seg = model("segnet", NYU)
    assert [id(p) for p in seg.last_shared_parameters()] == [id(p) for p in seg.encoder.dec[-1][-1][0].parameters()]
    mtan = model("mtan", NYU)
    last = mtan.encoder.trunk.dec[-1][-1][0]
    assert isinstance(last, nn.Conv2d) and last.out_channels == 64
    assert [id(p) for p in mtan.last_shared_parameters()] == [id(p) for p in last.parameters()]
    res = model("resnet18", UTK)
    assert [id(p) for p in res.last_shared_parameters()] == [id(res.encoder.layer4[1].conv2.weight)]
    cel = model("celeba_cnn", CELEBA)
    linears = [mod for mod in cel.encoder.modules() if isinstance(mod, nn.Linear)]
    assert [id(p) for p in cel.last_shared_parameters()] == [id(linears[-1].weight)]


@pytest.mark.parametrize("name, data, batch", CASES, ids=IDS)
def test_functional_call_reproduces_forward(name, data, batch):
    m = model(name, data, narrow=True)
    x = torch.randn(batch, *data.input_shape)
    state = {**dict(m.named_parameters()), **dict(m.named_buffers())}
    with torch.no_grad():
        ref = m(x)
        got = functional_call(m, state, (x,))
        # substituted parameters take effect: zeroed heads give zero (or normalised-zero) outputs
        zeroed = {k: (torch.zeros_like(v) if k.startswith("heads.") else v) for k, v in state.items()}
        out0 = functional_call(m, zeroed, (x,))
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.count_nonzero(y) == 0 for y in out0)


def test_gradients_reach_every_shared_parameter_in_training():
    m = build_model("mtan", CITY, filters=NARROW).train()  # narrow copy: fast
    out = m(torch.randn(2, 3, 32, 64))
    sum(y.square().mean() for y in out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert all(p.grad.abs().sum() > 0 for p in m.shared_parameters())


# ----------------------------------------------------------------------------------------------
# pretrained weights for the ResNet-18 encoder
# ----------------------------------------------------------------------------------------------
def test_resnet18_pretrained_loading(tmp_path):
    src = model("resnet18", UTK).encoder
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    m3 = build_model("resnet18", UTK, pretrained=str(path))
    torch.testing.assert_close(m3.encoder.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    m1 = build_model("resnet18", MNIST, pretrained=str(path))  # 3-channel stem summed into 1 channel
    torch.testing.assert_close(m1.encoder.conv1.weight, src.conv1.weight.sum(1, keepdim=True))

    bad = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    with pytest.raises(UsageError, match="no tensor matched"):
        build_model("resnet18", UTK, pretrained=str(bad))
    with pytest.raises(UsageError, match="cannot read"):
        build_model("resnet18", UTK, pretrained=str(tmp_path / "missing.pt"))
