"""Backbones of the dense-prediction suite (common/models.py): dilated ResNet-18/50 encoders (output
stride 8), DeepLab ASPP heads, MTAN on a dilated ResNet; shapes, dilations, parameter counts, the
shared / task parameter split, gradients, and ImageNet-checkpoint loading.

The task specs stand in for NYUD-v2 (semseg 40, depth, normals, edge) and PASCAL-Context (semseg 21,
human parts 7, normals, saliency, edge); saliency and edge are one-channel "binary" tasks here, the
heads only look at out_dim and at kind == "normal"."""
import types

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.func import functional_call

from common.data import task
from common.device import UsageError
from common.models import (ASPP_RATES, ASPPHead, DilatedResNet, MTANResNetEncoder, build_model,
                           count_parameters)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def dense_data(tasks, size=(32, 32)):
    return types.SimpleNamespace(tasks=list(tasks), num_tasks=len(tasks), input_shape=(3, *size),
                                 default_model="resnet18-dilated")


NYUD = dense_data([task("semseg", "seg", 40), task("depth", "depth", 1), task("normals", "normal", 3),
                   task("edge", "binary", 1)])
PASCAL = dense_data([task("semseg", "seg", 21), task("human_parts", "seg", 7), task("normals", "normal", 3),
                     task("sal", "binary", 1), task("edge", "binary", 1)])
SMALL = dense_data([task("semseg", "seg", 3), task("normals", "normal", 3)])  # for the wide ResNet-50 heads

_CACHE = {}


def model(name, data):
    """Built once per (name, tasks), seeded; callers set train/eval mode themselves."""
    key = (name, tuple(t.name for t in data.tasks))
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = build_model(name, data)
    return _CACHE[key]


def aspp_head_count(cin, out_dim, width=256):
    """ASPP head parameters: five bias-free branches (1x1, three dilated 3x3, pooled 1x1) + BN each,
    the 1x1 projection + BN, the 3x3 conv + BN, the 1x1 classifier with bias."""
    branches = cin * width * (1 + 9 * len(ASPP_RATES) + 1) + 5 * 2 * width
    return branches + (5 * width * width + 2 * width) + (9 * width * width + 2 * width) + (width + 1) * out_dim


# ----------------------------------------------------------------------------------------------
# encoders: output stride 8 and the dilations
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, channels", [(18, 512), (50, 2048)])
def test_dilated_encoder_output_stride_8(depth, channels):
    enc = DilatedResNet(depth).eval()
    with torch.no_grad():
        assert enc(torch.zeros(1, 3, 64, 64)).shape == (1, channels, 8, 8)
        # not a multiple of 8: each stride-2 layer maps n -> ceil(n/2), so ceil(H/8) x ceil(W/8)
        assert enc(torch.zeros(1, 3, 60, 76)).shape == (1, channels, 8, 10)
    assert enc.input_size == (60, 76)


def conv_settings(stage):
    return [(name, m.stride, m.dilation, m.padding) for name, m in stage.named_modules() if isinstance(m, nn.Conv2d)]


def test_resnet18_dilations():
    enc = DilatedResNet(18)
    plain = torchvision.models.resnet18(weights=None)
    assert conv_settings(enc.layer1) == conv_settings(plain.layer1)
    assert conv_settings(enc.layer2) == conv_settings(plain.layer2)
    l3, l4 = enc.layer3, enc.layer4
    # first block: the strided 3x3 keeps the previous scale (dilation d/2), the rest get d
    assert (l3[0].conv1.stride, l3[0].conv1.dilation, l3[0].conv1.padding) == ((1, 1), (1, 1), (1, 1))
    assert (l3[0].conv2.dilation, l3[0].conv2.padding) == ((2, 2), (2, 2))
    assert l3[0].downsample[0].stride == (1, 1) and l3[0].downsample[0].dilation == (1, 1)
    assert [(c.dilation, c.stride) for c in (l3[1].conv1, l3[1].conv2)] == [((2, 2), (1, 1))] * 2
    assert (l4[0].conv1.stride, l4[0].conv1.dilation, l4[0].conv1.padding) == ((1, 1), (2, 2), (2, 2))
    assert (l4[0].conv2.dilation, l4[0].conv2.padding) == ((4, 4), (4, 4))
    assert l4[0].downsample[0].stride == (1, 1)
    assert [(c.dilation, c.stride) for c in (l4[1].conv1, l4[1].conv2)] == [((4, 4), (1, 1))] * 2


def test_resnet50_dilations_match_torchvision():
    """For Bottleneck blocks the survey's conversion is torchvision's replace_stride_with_dilation."""
    enc = DilatedResNet(50)
    ref = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    for name in ("layer1", "layer2", "layer3", "layer4"):
        assert conv_settings(getattr(enc, name)) == conv_settings(getattr(ref, name)), name
    assert enc.layer3[0].conv2.dilation == (1, 1) and enc.layer3[1].conv2.dilation == (2, 2)
    assert enc.layer4[0].conv2.dilation == (2, 2) and enc.layer4[2].conv2.dilation == (4, 4)
    assert all(c.dilation == (1, 1) for c in (enc.layer4[1].conv1, enc.layer4[1].conv3))


# ----------------------------------------------------------------------------------------------
# heads and whole models: shapes, normals, parameter counts
# ----------------------------------------------------------------------------------------------
def test_aspp_head_structure():
    head = ASPPHead(512, 5)
    assert ASPP_RATES == (12, 24, 36)
    assert [b[0].dilation for b in head.branches] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    assert head.classifier.out_channels == 5 and head.classifier.bias is not None
    assert count_parameters(head.parameters()) == aspp_head_count(512, 5)


CASES = [("resnet18-dilated", NYUD), ("resnet18-dilated", PASCAL), ("mtan-resnet18", NYUD),
         ("mtan-resnet18", PASCAL), ("resnet50-dilated", SMALL), ("mtan-resnet50", SMALL)]
IDS = [f"{n}-{d.num_tasks}t" for n, d in CASES]


@pytest.mark.parametrize("name, data", CASES, ids=IDS)
@pytest.mark.parametrize("size", [(32, 32), (36, 44)], ids=["32x32", "36x44"])
def test_outputs_at_input_resolution(name, data, size):
    m = model(name, data).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, *size))
    assert [tuple(y.shape) for y in out] == [(2, t.out_dim, *size) for t in data.tasks]
    assert all(torch.isfinite(y).all() for y in out)
    for t, y in zip(data.tasks, out):  # normals: unit length per pixel after the upsampling
        if t.kind == "normal":
            torch.testing.assert_close(y.norm(dim=1), torch.ones(2, *size))


def test_decode_of_encoder_equals_forward():
    """Methods that need the shared representation call decode(encoder(x)): same outputs."""
    for name in ("resnet18-dilated", "mtan-resnet18"):
        m = model(name, NYUD).eval()
        x = torch.randn(1, 3, 36, 44)
        with torch.no_grad():
            ref = m(x)
            rep = m.encoder(x)
            got = m.decode(rep)
        assert (isinstance(rep, list) and len(rep) == 4) if name.startswith("mtan") else rep.shape == (1, 512, 5, 6)
        for a, b in zip(ref, got):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_parameter_counts():
    for data in (NYUD, PASCAL):
        m = model("resnet18-dilated", data)
        shared = count_parameters(m.shared_parameters())
        heads = [count_parameters(m.task_parameters(t)) for t in range(data.num_tasks)]
        print(f"resnet18-dilated ({data.num_tasks} tasks): shared {shared:,} heads {sum(heads):,} "
              f"total {shared + sum(heads):,}")
        assert shared == 11_176_512  # torchvision ResNet-18 without fc: dilation adds no parameter
        assert heads == [aspp_head_count(512, t.out_dim) for t in data.tasks]
    assert count_parameters(model("resnet18-dilated", NYUD).parameters()) == 30_076_781
    assert count_parameters(model("resnet18-dilated", PASCAL).parameters()) == 34_795_873
    mtan = model("mtan-resnet18", NYUD)
    att = [count_parameters(mtan.encoder.attention[t].parameters()) for t in range(4)]
    print(f"mtan-resnet18 (NYUD): shared {count_parameters(mtan.shared_parameters()):,} attention per task {att[0]:,}")
    assert count_parameters(mtan.shared_parameters()) == 11_176_512 + 499_072  # + the 3 refinement Bottlenecks
    assert att == [263_696] * 4
    r50 = model("resnet50-dilated", SMALL)
    assert count_parameters(r50.shared_parameters()) == 23_508_032  # torchvision ResNet-50 without fc
    assert count_parameters(r50.task_parameters(0)) == aspp_head_count(2048, 3)


# ----------------------------------------------------------------------------------------------
# parameter partition and last shared layer
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, data", CASES, ids=IDS)
def test_shared_and_task_parameters_partition(name, data):
    m = model(name, data)
    groups = [{id(p) for p in m.shared_parameters()}] + [{id(p) for p in m.task_parameters(t)}
                                                          for t in range(m.num_tasks)]
    assert all(groups), "an empty group"
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "groups overlap"
    assert set().union(*groups) == {id(p) for p in m.parameters()}, "groups do not cover the model"
    last = {id(p) for p in m.last_shared_parameters()}
    assert last and last <= groups[0]
    layer4 = m.encoder.backbone.layer4 if name.startswith("mtan") else m.encoder.layer4
    expected = layer4[-1].conv3 if "50" in name else layer4[-1].conv2
    assert [id(p) for p in m.last_shared_parameters()] == [id(expected.weight)]
    if name.startswith("mtan"):  # task t owns its attention modules; the refinement blocks are shared
        for t in range(m.num_tasks):
            assert {id(p) for p in m.encoder.attention[t].parameters()} <= groups[1 + t]
        assert {id(p) for p in m.encoder.refine.parameters()} <= groups[0]


# ----------------------------------------------------------------------------------------------
# MTAN attention, gradients, batch of one
# ----------------------------------------------------------------------------------------------
def test_mtan_attention_makes_task_features_differ():
    m = model("mtan-resnet18", NYUD).eval()
    with torch.no_grad():
        reps = m.encoder(torch.randn(2, 3, 36, 44))
        plain = m.encoder.backbone(torch.randn(2, 3, 36, 44))
    assert len(reps) == 4 and all(r.shape == plain.shape == (2, 512, 5, 6) for r in reps)
    for t in range(1, 4):
        assert (reps[t] - reps[0]).norm() > 1e-2 * reps[0].norm() > 0
    # each task's features are an attention mask in (0, 1) times the shared layer4 output
    assert isinstance(m.encoder, MTANResNetEncoder)
    assert all(isinstance(stage[-1], nn.Sigmoid) for att in m.encoder.attention for stage in att)


@pytest.mark.parametrize("name", ["resnet18-dilated", "mtan-resnet18"])
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    m = build_model(name, NYUD).train()
    losses = [y.square().mean() for y in m(torch.randn(2, 3, 32, 32))]
    sum(losses).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in m.parameters())
    # one task's loss reaches the shared parameters and its own, not the other tasks' parameters
    m.zero_grad(set_to_none=True)
    losses = [y.square().mean() for y in m(torch.randn(2, 3, 32, 32))]
    grads = torch.autograd.grad(losses[1], m.shared_parameters() + m.all_task_parameters(), allow_unused=True)
    n_shared = len(m.shared_parameters())
    assert all(g is not None for g in grads[:n_shared])
    own = {id(p) for p in m.task_parameters(1)}
    for p, g in zip(m.all_task_parameters(), grads[n_shared:]):
        assert (g is not None) == (id(p) in own)


def test_training_batch_of_one():
    """The ASPP pooling branch's BatchNorm sees one value per channel: running statistics are used."""
    m = model("resnet18-dilated", NYUD).train()
    before = m.heads[0].pool.bn.running_mean.clone()
    out = m(torch.randn(1, 3, 32, 32))
    assert [tuple(y.shape) for y in out] == [(1, t.out_dim, 32, 32) for t in NYUD.tasks]
    torch.testing.assert_close(m.heads[0].pool.bn.running_mean, before)
    m.eval()


def test_functional_call_reproduces_forward():
    m = model("mtan-resnet18", NYUD).eval()
    x = torch.randn(1, 3, 32, 32)
    state = {**dict(m.named_parameters()), **dict(m.named_buffers())}
    with torch.no_grad():
        ref = m(x)
        got = functional_call(m, state, (x,))
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# --pretrained: a torchvision ImageNet state_dict file
# ----------------------------------------------------------------------------------------------
def test_pretrained_loading(tmp_path):
    torch.manual_seed(1)
    src = torchvision.models.resnet18(weights=None)
    sd = src.state_dict()  # torchvision keys, with fc.* (ignored)
    for k in sd:  # trained-looking BatchNorm statistics, so that their loading shows too
        if k.endswith(("running_mean", "running_var")):
            sd[k] = torch.rand_like(sd[k]) + 0.5
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    data = dense_data(NYUD.tasks[:2])
    for name in ("resnet18-dilated", "mtan-resnet18"):
        torch.manual_seed(0)
        fresh = build_model(name, data)
        torch.manual_seed(0)
        m = build_model(name, data, pretrained=str(path))
        enc = m.encoder.backbone if name.startswith("mtan") else m.encoder
        fresh_enc = fresh.encoder.backbone if name.startswith("mtan") else fresh.encoder
        for key, value in enc.state_dict().items():
            torch.testing.assert_close(value, sd[key], rtol=0, atol=0)
        assert not torch.equal(enc.layer4[1].conv2.weight, fresh_enc.layer4[1].conv2.weight)
        assert not torch.equal(enc.bn1.running_var, fresh_enc.bn1.running_var)

    # older torchvision checkpoints have no num_batches_tracked: still a complete load
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, old)
    build_model("resnet18-dilated", data, pretrained=str(old))

    with pytest.raises(UsageError, match="cannot read"):
        build_model("resnet18-dilated", data, pretrained=str(tmp_path / "missing.pth"))
    bad = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    with pytest.raises(UsageError, match="no tensor matched"):
        build_model("resnet18-dilated", data, pretrained=str(bad))
    # a partial match (here: one block's conv missing, another with the wrong shape, as a ResNet-50
    # file would give) is an error, not a silent half-load
    partial = tmp_path / "partial.pth"
    torch.save({**{k: v for k, v in sd.items() if k != "layer3.1.conv1.weight"},
                "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}, partial)
    with pytest.raises(UsageError, match=r"2 of the ResNet-18 encoder's tensors .*layer1\.0\.conv1\.weight"):
        build_model("mtan-resnet18", data, pretrained=str(partial))
