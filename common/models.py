"""Backbones with an explicit shared-encoder / task-heads split.

What the methods and the harness call on a model is `MultiTaskProtocol` (below: which method needs
which member). Every model of the suite is an `MTLModel`: `encoder(x)` gives the shared
representation (one tensor, or a list of T task-specific tensors for MTAN-style attention models),
`heads[t]` maps it to task t's output. `MultiTaskModel(shared, heads)` turns any trunk and heads of
your own into such a model. `build_model(name, data, tasks=None)` builds one by name for a dataset
(`tasks` picks a subset of the dataset's tasks, e.g. one task for single-task learning).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F


class MTLModel(nn.Module):
    """Shared encoder + one head per task."""

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module], task_names: Sequence[str]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)
        self.task_names = list(task_names)

    @property
    def num_tasks(self) -> int:
        return len(self.heads)

    def decode(self, rep) -> list[torch.Tensor]:
        if isinstance(rep, (list, tuple)):
            return [h(r) for h, r in zip(self.heads, rep)]
        return [h(rep) for h in self.heads]

    def forward(self, x) -> list[torch.Tensor]:
        return self.decode(self.encoder(x))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        return [p for p in self.heads[t].parameters() if p.requires_grad]

    def all_task_parameters(self) -> list[nn.Parameter]:
        return [p for t in range(self.num_tasks) for p in self.task_parameters(t)]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the last shared layer with weights (GradNorm's W, AvgNorm's default)."""
        last = None
        for m in self.encoder.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.weight.requires_grad:
                last = m
        if last is None:
            return self.shared_parameters()
        return [p for p in last.parameters() if p.requires_grad]


@runtime_checkable
class MultiTaskProtocol(Protocol):
    """What the suite's methods and harness call on a multi-task model of T tasks. Every model of
    `build_model` satisfies it (they are MTLModels); `MultiTaskModel(shared, heads)` makes any
    trunk and heads of yours satisfy it; `check_model` says which members a model lacks.

    Who needs which member (besides model(x), which every method calls):
    - num_tasks: the harness (one loss per task), SAM-MTL.
    - shared_parameters(): the gradient rules of baselines.py that need the task Jacobian (MGDA,
      PCGrad, CAGrad, IMTL, Nash-MTL, FairGrad, GradDrop), --clip-grad, SAM-MTL, PML's gradient
      balancing and clipping (WeightEnsemble(shared=...)), AvgNorm with --grad-on all, EXTRA, PaLoRA
      (which parameters are the shared ones).
    - task_parameters(t): the Jacobian rules (head t gets w_t times its own gradient), SAM-MTL, PML's
      gradient balancing (WeightEnsemble(heads=...)), AvgNorm with --grad-on all, EXTRA.
    - last_shared_parameters(): GradNorm, AvgNorm (its default --grad-on last), EXTRA.
    - encoder(x), decode(rep): the training loops of baselines.py and EXTRA (every rule; MGDA-UB
      differentiates the losses w.r.t. the representation rep).
    The losses-only rules (LS, SI, RLW, DWA, UW, FAMO) need model(x) alone. PFL and PaLoRA build
    their own models around a backbone of the suite; the members above are what they read from it.
    """

    num_tasks: int
    encoder: Callable[[torch.Tensor], Any]  # x -> the shared representation rep (a tensor, or T tensors)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The T task outputs, in task order: decode(encoder(x))."""

    def decode(self, rep) -> list[torch.Tensor]:
        """The T task outputs from the shared representation."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters every task's loss reaches (the trunk)."""

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        """The trainable parameters only task t's loss reaches (its head), disjoint from the shared ones."""

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The parameters of the last shared layer (GradNorm's W), a subset of the shared ones."""


PROTOCOL_MEMBERS = {
    "num_tasks": "the harness, SAM-MTL",
    "encoder": "baselines.py and EXTRA",
    "decode": "baselines.py and EXTRA",
    "shared_parameters": "the Jacobian rules, SAM-MTL, PML --balancing grad, AvgNorm, EXTRA, PaLoRA",
    "task_parameters": "the Jacobian rules, SAM-MTL, PML --balancing grad, AvgNorm, EXTRA",
    "last_shared_parameters": "GradNorm, AvgNorm, EXTRA",
}


def check_model(model) -> Any:
    """`model` if it has every member of MultiTaskProtocol; a one-line TypeError naming the missing
    members, who needs them, and the adapter otherwise."""
    missing = [m for m in PROTOCOL_MEMBERS if not hasattr(model, m)]
    if not callable(model):
        missing.insert(0, "__call__")
    if missing:
        who = "; ".join(f"{m} ({PROTOCOL_MEMBERS.get(m, 'every method')})" for m in missing)
        raise TypeError(f"{type(model).__name__} is not a multi-task model of the suite: it lacks {who}; wrap your "
                        f"network as common.models.MultiTaskModel(shared=<trunk>, heads=[<head per task>])")
    return model


class MultiTaskModel(MTLModel):
    """Any shared trunk and T heads of yours as a model of the suite (MultiTaskProtocol):
    model(x) = [heads[t](shared(x)) for t], shared_parameters() = the trunk's trainable parameters,
    task_parameters(t) = head t's.

    `last_shared` is the module whose parameters are last_shared_parameters() (GradNorm's W,
    AvgNorm's default); it must be a module of `shared`. Default: the trunk's last module, in
    registration order (`shared.modules()`), that holds trainable parameters itself (for an
    nn.Sequential: its last layer with weights, a normalisation layer included); the whole trunk if
    none does. Pass it when your trunk registers its layers in another order than it runs them."""

    def __init__(self, shared: nn.Module, heads: Sequence[nn.Module], last_shared: nn.Module | None = None,
                 task_names: Sequence[str] | None = None):
        heads = list(heads)
        if not heads:
            raise ValueError("MultiTaskModel needs one head per task, got none")
        super().__init__(shared, heads, task_names or [f"task{t}" for t in range(len(heads))])
        if last_shared is None:
            owners = [m for m in shared.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
            last_shared = owners[-1] if owners else shared
        elif not any(m is last_shared for m in shared.modules()):
            raise ValueError(f"last_shared ({type(last_shared).__name__}) is not a module of the shared trunk")
        self._last_shared = [last_shared]  # a list: not registered twice (state_dict, named_parameters)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self._last_shared[0].parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# toy: the parameter vector theta is the model (PML appendix C)
# --------------------------------------------------------------------------------------------
class ToyEncoder(nn.Module):
    def __init__(self, init=(0.0, 0.0)):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(init, dtype=torch.float32))

    def forward(self, x):
        return self.theta.expand(x.shape[0], 2)


def toy_model(init=(-8.5, 7.5), num_tasks: int = 2) -> MTLModel:
    return MTLModel(ToyEncoder(init), [nn.Identity() for _ in range(num_tasks)], [f"l{i + 1}" for i in range(num_tasks)])


# --------------------------------------------------------------------------------------------
# MultiMNIST LeNet (Sener & Koltun 2018; PML appendix B)
# --------------------------------------------------------------------------------------------
class LeNetEncoder(nn.Module):
    """conv(1->10, k5) -> maxpool 2 -> ReLU -> conv(10->20, k5) -> Dropout2d -> maxpool 2 -> ReLU ->
    Linear(320 -> 50) -> ReLU. 21,330 parameters."""

    def __init__(self, in_channels: int = 1, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.drop = nn.Dropout2d(dropout)
        self.fc = nn.Linear(320, 50)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        return F.relu(self.fc(x.flatten(1)))


def lenet_head(out_dim: int = 10) -> nn.Module:
    """Linear(50 -> 50) -> ReLU -> Linear(50 -> out). 3,060 parameters for 10 classes."""
    return nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, out_dim))


# --------------------------------------------------------------------------------------------
# Census MLP (PML appendix B): one hidden layer of 256 units, linear heads
# --------------------------------------------------------------------------------------------
class MLPEncoder(nn.Module):
    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.fc = nn.Linear(in_features, hidden)

    def forward(self, x):
        return F.relu(self.fc(x.flatten(1)))


_BUILDERS = {}


def register_model(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


def model_names() -> list[str]:
    return list(_BUILDERS)


@register_model("toy")
def _build_toy(data, tasks, **kw):
    return toy_model(kw.get("init", (-8.5, 7.5)), len(tasks))


@register_model("lenet")
def _build_lenet(data, tasks, **kw):
    return MTLModel(LeNetEncoder(data.input_shape[0]), [lenet_head(t.out_dim) for t in tasks], [t.name for t in tasks])


@register_model("mlp")
def _build_mlp(data, tasks, **kw):
    hidden = kw.get("hidden", 256)
    in_features = 1
    for s in data.input_shape:
        in_features *= s
    return MTLModel(MLPEncoder(in_features, hidden), [nn.Linear(hidden, t.out_dim) for t in tasks],
                    [t.name for t in tasks])


def build_model(name: str | None, data, tasks: Sequence[int] | None = None, **kw) -> MTLModel:
    """Build backbone `name` (default: the dataset's) with heads for `tasks` (default: all)."""
    from common.device import UsageError

    name = name or data.default_model
    if name not in _BUILDERS:
        raise UsageError(f"unknown --model {name!r}; choose one of: {', '.join(_BUILDERS)}")
    specs = [data.tasks[i] for i in (range(data.num_tasks) if tasks is None else tasks)]
    return check_model(_BUILDERS[name](data, specs, **kw))  # a registered builder of yours too


def count_parameters(params) -> int:
    return sum(p.numel() for p in params)


# --------------------------------------------------------------------------------------------
# Shared pieces of the larger backbones
# --------------------------------------------------------------------------------------------
def conv_bn_relu(cin: int, cout: int, bias: bool = True) -> nn.Sequential:
    """conv3x3 (padding 1) -> BatchNorm2d -> ReLU. Not in-place, so that torch.func transforms
    (functional_call, vmap, jvp) see plain out-of-place ops."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


def xavier_init_(module: nn.Module) -> nn.Module:
    """The MTAN / Nash-MTL initialisation: Xavier-normal conv and linear weights, zero biases,
    BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------------------------
# ResNet-18 encoder (SAM-MTL's MultiMNIST family; PML / PaLoRA UTKFace)
# --------------------------------------------------------------------------------------------
def resnet18_encoder(in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (random init, never downloaded) with `fc` replaced by Identity:
    x (B, C, H, W) -> global-average-pooled features (B, 512). 11,176,512 parameters for C = 3,
    11,170,240 for C = 1.

    For C != 3 only the first conv changes (C -> 64, 7x7, stride 2, Kaiming init as torchvision).
    The stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) is kept even for the 28-36 px MultiMNIST
    inputs: a 28x28 image reaches layer4 as 1x1 and a 36x36 one as 2x2. SAM-MTL says only
    "ResNet-18" for MultiMNIST and its released code covers the scene datasets, so the plain
    torchvision network is used and no CIFAR-style 3x3 stem is assumed. The module is the
    torchvision ResNet itself, so its
    state_dict keys are torchvision's (`conv1.weight`, `layer1.0.conv1.weight`, ...).
    """
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.fc = nn.Identity()
    return net


def load_encoder_weights(encoder: nn.Module, path: str) -> list[str]:
    """Load a state_dict file (torchvision keys; `module.` / `encoder.` prefixes and a wrapping
    {"state_dict": ...} or {"model": ...} are accepted) into `encoder`, non-strictly.

    Tensors whose shape does not match are skipped, except a 3-channel `conv1.weight` loaded into a
    1-channel stem, which is summed over its input channels (the usual grey-scale adaptation).
    Raises UsageError if the file cannot be read or no key matched; returns the encoder keys that
    were left at their initial values (empty when the load was complete).
    """
    from common.device import UsageError

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # missing file, not a torch file, pickled objects ...
        raise UsageError(f"--pretrained {path!r}: cannot read a state_dict from it ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise UsageError(f"--pretrained {path!r}: expected a state_dict (a dict of tensors), got {type(sd).__name__}")
    own = encoder.state_dict()
    matched = {}
    for k, v in sd.items():
        for prefix in ("module.", "encoder."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k not in own or not torch.is_tensor(v):
            continue
        if v.shape != own[k].shape and v.dim() == 4 and own[k].shape[1] == 1 and v.shape[0] == own[k].shape[0] \
                and v.shape[2:] == own[k].shape[2:]:
            v = v.sum(1, keepdim=True)  # RGB stem -> grey-scale stem
        if v.shape == own[k].shape:
            matched[k] = v
    if not matched:
        expected = ", ".join(list(own)[:4])
        raise UsageError(f"--pretrained {path!r}: no tensor matched the encoder (it expects keys such as {expected}; "
                         f"the file has {', '.join(list(sd)[:4]) or 'no keys'})")
    encoder.load_state_dict(matched, strict=False)
    return [k for k in own if k not in matched]


@register_model("resnet18")
def _build_resnet18(data, tasks, pretrained: str | None = None, **kw):
    """ResNet-18 encoder (512 features) + one Linear(512, out_dim) head per task (PML appendix B:
    the UTKFace heads are one fully-connected layer; Huber tasks have out_dim 1)."""
    encoder = resnet18_encoder(data.input_shape[0])
    if pretrained:
        missing = load_encoder_weights(encoder, pretrained)
        if missing:
            import warnings
            warnings.warn(f"--pretrained {pretrained!r}: {len(missing)} encoder tensors kept their random init, "
                          f"e.g. {', '.join(missing[:4])}")
    return MTLModel(encoder, [nn.Linear(512, t.out_dim) for t in tasks], [t.name for t in tasks])


# --------------------------------------------------------------------------------------------
# CelebA 9-layer CNN (FAMO / FairGrad benchmark code)
# --------------------------------------------------------------------------------------------
class CelebACNN(nn.Module):
    """The "9-layer CNN" of the FAMO / FairGrad CelebA experiments: 7 bias-free conv3x3 + BN + ReLU
    layers with 64, 128, 128, 256, 256, 512, 512 channels, a 2x2 max-pool after layers 1, 3 and 5
    (as in their code: none after layer 7, whose output is global-average-pooled directly), then
    2 x (bias-free Linear 512-512 + BatchNorm1d + ReLU). x (B, 3, 64, 64) -> (B, 512).

    Parameters: convs 4,646,592 + BN2d 3,712 + linears 524,288 + BN1d 2,048 = 5,176,640 shared;
    with 40 heads Linear(512, 1) (20,520) the model has 5,197,160, the "about 5.2M" of the papers.
    Their heads end in a sigmoid; ours return logits (the binary loss uses BCE-with-logits).
    PyTorch's default initialisation, as in their code.
    """

    channels = (64, 128, 128, 256, 256, 512, 512)
    pool_after = (1, 3, 5)  # 1-based layer numbers followed by MaxPool2d(2)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, c in enumerate(self.channels, start=1):
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            if i in self.pool_after:
                layers.append(nn.MaxPool2d(2))
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for _ in range(2):
            layers += [nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU()]
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


@register_model("celeba_cnn")
def _build_celeba_cnn(data, tasks, **kw):
    return MTLModel(CelebACNN(data.input_shape[0]), [nn.Linear(512, t.out_dim) for t in tasks],
                    [t.name for t in tasks])


# --------------------------------------------------------------------------------------------
# SegNet (split) and SegNet-MTAN (Liu et al. 2019; the MTAN / Nash-MTL / FAMO benchmark code)
# --------------------------------------------------------------------------------------------
SEGNET_FILTERS = (64, 128, 256, 512, 512)


class SegNetTrunk(nn.Module):
    """The shared SegNet encoder-decoder. Level i of the encoder is `enc[i]`: conv-BN-ReLU blocks
    (in -> f[i], then f[i] -> f[i]), 2 blocks at levels 0-1 and 3 at levels 2-4, followed by a 2x2
    max-pool that keeps its indices. The decoder mirrors it, deepest level first (`dec[0]` is level
    4): max-unpool with the stored indices, then f[i] -> f[i-1] (f[0] at level 0) and 1 or 2 more
    f[i-1] -> f[i-1] blocks. Convs keep their bias before BatchNorm, as the benchmark code does
    (this keeps the parameter counts comparable). Any input size works (unpooling restores the
    pre-pool size); the output has f[0] channels at the input resolution.

    `features(x)` also returns what MTAN's attention modules read at each level.
    """

    def __init__(self, in_channels: int = 3, filters: Sequence[int] = SEGNET_FILTERS):
        super().__init__()
        f = list(filters)
        depth = [2, 2] + [3] * (len(f) - 2)
        self.enc = nn.ModuleList()
        for i, c in enumerate(f):
            cin = in_channels if i == 0 else f[i - 1]
            self.enc.append(nn.Sequential(*[conv_bn_relu(cin if j == 0 else c, c) for j in range(depth[i])]))
        self.dec = nn.ModuleList()
        for i in reversed(range(len(f))):
            cout = f[max(i - 1, 0)]
            self.dec.append(nn.Sequential(*[conv_bn_relu(f[i] if j == 0 else cout, cout) for j in range(depth[i])]))
        xavier_init_(self)

    def features(self, x):
        """Returns (out, enc_first, enc_out, dec_in, dec_out): per encoder level the output of its
        first block and of its last block (before pooling); per decoder step (deepest first) the
        unpooled input and the output."""
        enc_first, enc_out, indices = [], [], []
        h = x
        for level in self.enc:
            for j, block in enumerate(level):
                h = block(h)
                if j == 0:
                    enc_first.append(h)
            enc_out.append(h)
            h, idx = F.max_pool2d(h, 2, 2, return_indices=True)
            indices.append(idx)
        dec_in, dec_out = [], []
        for level, skip, idx in zip(self.dec, reversed(enc_out), reversed(indices)):
            h = F.max_unpool2d(h, idx, 2, 2, output_size=skip.shape[-2:])
            dec_in.append(h)
            h = level(h)
            dec_out.append(h)
        return h, enc_first, enc_out, dec_in, dec_out

    def forward(self, x):
        return self.features(x)[0]


class DenseHead(nn.Module):
    """The benchmark's task head: conv3x3 (c -> c) -> conv1x1 (c -> out_dim), no activation between.
    Segmentation heads return raw class logits (the loss applies log-softmax); `normalize=True`
    (surface normals) L2-normalises the 3 output channels per pixel (F.normalize, i.e. with an
    epsilon where the benchmark divides by the bare norm)."""

    def __init__(self, in_channels: int, out_dim: int, normalize: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.out = nn.Conv2d(in_channels, out_dim, 1)
        self.normalize = normalize
        xavier_init_(self)

    def forward(self, x):
        y = self.out(self.conv(x))
        return F.normalize(y, dim=1) if self.normalize else y


def dense_heads(tasks, channels: int) -> list[nn.Module]:
    return [DenseHead(channels, t.out_dim, normalize=t.kind == "normal") for t in tasks]


@register_model("segnet")
def _build_segnet(data, tasks, filters: Sequence[int] = SEGNET_FILTERS, **kw):
    """SegNet "split" (MTAN repo, standard type): the whole encoder-decoder is shared, one
    DenseHead per task. NYUv2 (13 classes, depth, normals): 24,943,296 shared + 111,889 in the heads
    = 25,055,185 (the "about 25M"); the trunk plus one 13-class head is 24,981,069, exactly the
    single-task SegNet count that the MTAN scripts divide by. `last_shared_parameters()` is the
    final decoder conv
    (64 -> 64), the layer Nash-MTL's code returns (it also returns the BatchNorm after it)."""
    trunk = SegNetTrunk(data.input_shape[0], filters)
    return MTLModel(trunk, dense_heads(tasks, filters[0]), [t.name for t in tasks])


def attention_block(cin: int, cmid: int, cout: int) -> nn.Sequential:
    """MTAN's task attention module: conv1x1-BN-ReLU-conv1x1-BN-Sigmoid, a soft mask in (0, 1)."""
    return nn.Sequential(nn.Conv2d(cin, cmid, 1), nn.BatchNorm2d(cmid), nn.ReLU(),
                         nn.Conv2d(cmid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid())


class MTANEncoder(nn.Module):
    """SegNet-MTAN (Liu, Johns & Davison, CVPR 2019): a shared SegNet trunk plus, for each task, a
    soft-attention mask at every encoder and decoder level. forward(x) returns a list of T maps
    (B, f[0], H, W), one per task.

    Encoder level j, task t: mask = att_enc[t][j](trunk's first-block output at level j, concatenated
    with the task's previous-level features for j > 0); the masked features mask * (level output)
    go through the shared conv `enc_att_conv[j]` (f[j] -> f[j+1], f[4] -> f[4] at the bottom) and a
    2x2 max-pool. Decoder step k (level 4 down to 0): the task features are upsampled (bilinear,
    align_corners=True) to the trunk's unpooled size, pass the shared conv `dec_att_conv[k]`
    (f[k] -> f[k-1]), and mask = att_dec[t][k](unpooled trunk input, those features) multiplies the
    trunk's decoder output at that step. The shared convs and the trunk are one copy for all tasks;
    the attention modules are per task. All of it is the `encoder`, i.e. counted as shared
    parameters, as Nash-MTL's code does for its gradient methods.

    Parameters for NYUv2 (3 tasks): 44,117,184 in the encoder (the "about 44.1M coordinates per task
    gradient") + 111,889 in the heads = 44,229,073 (the "about 44.2M" of the papers); Cityscapes
    (2 tasks, 7 classes): 41,132,608 + 74,376. Each task adds 2,984,576 attention parameters.
    """

    def __init__(self, num_tasks: int, in_channels: int = 3, filters: Sequence[int] = SEGNET_FILTERS):
        super().__init__()
        f = list(filters)
        n = len(f)
        self.trunk = SegNetTrunk(in_channels, f)
        self.enc_att_conv = nn.ModuleList(conv_bn_relu(f[j], f[min(j + 1, n - 1)]) for j in range(n))
        # decoder steps deepest first, like trunk.dec: step s works on level k = n - 1 - s
        self.dec_att_conv = nn.ModuleList(conv_bn_relu(f[k], f[max(k - 1, 0)]) for k in reversed(range(n)))
        self.att_enc = nn.ModuleList(
            nn.ModuleList(attention_block(f[0] if j == 0 else 2 * f[j], f[j], f[j]) for j in range(n))
            for _ in range(num_tasks))
        self.att_dec = nn.ModuleList(
            nn.ModuleList(attention_block(f[k] + f[max(k - 1, 0)], f[max(k - 1, 0)], f[max(k - 1, 0)])
                          for k in reversed(range(n)))
            for _ in range(num_tasks))
        xavier_init_(self)

    def forward(self, x) -> list[torch.Tensor]:
        _, enc_first, enc_out, dec_in, dec_out = self.trunk.features(x)
        reps = []
        for att_enc, att_dec in zip(self.att_enc, self.att_dec):
            a = None
            for j, (att, conv) in enumerate(zip(att_enc, self.enc_att_conv)):
                mask = att(enc_first[j] if a is None else torch.cat((enc_first[j], a), dim=1))
                a = F.max_pool2d(conv(mask * enc_out[j]), 2, 2)
            for s, (att, conv) in enumerate(zip(att_dec, self.dec_att_conv)):
                a = conv(F.interpolate(a, size=dec_in[s].shape[-2:], mode="bilinear", align_corners=True))
                a = att(torch.cat((dec_in[s], a), dim=1)) * dec_out[s]
            reps.append(a)
        return reps

    def last_shared_layer(self) -> nn.Module:
        """The trunk's final decoder conv: the last layer every task's gradient passes through."""
        return self.trunk.dec[-1][-1][0]


class MTANModel(MTLModel):
    """MTLModel whose `last_shared_parameters()` is the trunk's last decoder conv. The base rule
    (last conv by module order) would pick the last task's final attention conv, which only that
    task's loss reaches."""

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.last_shared_layer().parameters() if p.requires_grad]


@register_model("mtan")
def _build_mtan(data, tasks, filters: Sequence[int] = SEGNET_FILTERS, **kw):
    encoder = MTANEncoder(len(tasks), data.input_shape[0], filters)
    return MTANModel(encoder, dense_heads(tasks, filters[0]), [t.name for t in tasks])


# --------------------------------------------------------------------------------------------
# Dense-prediction suite of the AvgNorm paper (NYUD-v2, PASCAL-Context): dilated ResNet encoders,
# DeepLab (ASPP) heads and MTAN on a ResNet, after the multi-task dense-prediction survey code of
# Vandenhende et al. (github SimonVandenhende/Multi-Task-Learning-PyTorch), which AvgNorm follows
# ("Following the prior work [52], we add dilated convolutions to ResNet", section IV).
# --------------------------------------------------------------------------------------------
ASPP_RATES = (12, 24, 36)  # the survey's DeepLabHead (models/aspp.py): the DeepLabv3 rates for output stride 8


def _dilate_stage(stage: nn.Module, dilation: int) -> None:
    """Turn one ResNet stage from "stride 2" into "stride 1, dilation `dilation`", in place, as the
    survey's ResnetDilated (models/resnet_dilated.py) does: every conv with stride 2 gets stride 1
    and, if it is a 3x3 conv, dilation and padding `dilation // 2` (the block's first conv still
    sees the previous stage's scale); every other 3x3 conv gets dilation and padding `dilation`.
    1x1 convs (the shortcut projection, the bottleneck's reductions) keep dilation 1.

    Parameter shapes do not change, so torchvision's ImageNet weights load unchanged. For
    Bottleneck blocks this is exactly torchvision's `replace_stride_with_dilation`; for BasicBlock
    (ResNet-18), which torchvision refuses to dilate, it is the only way."""
    for m in stage.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if m.stride == (2, 2):
            m.stride = (1, 1)
            d = dilation // 2
        else:
            d = dilation
        if m.kernel_size == (3, 3):
            m.dilation, m.padding = (d, d), (d, d)


class DilatedResNet(nn.Module):
    """torchvision's ResNet-18 or ResNet-50 (random init, never downloaded) without its pooling and
    classifier, with layer3 dilated by 2 and layer4 by 4 instead of strided: output stride 8, as the
    survey's `ResnetDilated(dilate_scale=8)`. x (B, C, H, W) -> (B, 512 or 2048, ceil(H/8), ceil(W/8)).

    Every stride-2 layer (7x7 conv, 3x3 max-pool, layer2's first block) maps n to ceil(n / 2) with
    its padding, so a size that is not a multiple of 8 gives ceil(H/8) x ceil(W/8) features (60x76 ->
    8x10): the heads' bilinear upsampling to the input size absorbs the half-pixel misalignment, as in
    the survey. The modules keep torchvision's names (`conv1`, `bn1`, `layer1.0.conv1`, ...), so an
    ImageNet state_dict of torchvision's resnet18/resnet50 loads directly (its `fc.*` is ignored).

    For C != 3 only the stem conv changes (C -> 64, 7x7, stride 2, Kaiming init as torchvision).
    `forward` records the input's spatial size in `input_size` for the heads' upsampling (see
    `DenseMTLModel.decode`).
    """

    def __init__(self, depth: int = 18, in_channels: int = 3):
        super().__init__()
        import torchvision

        builders = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}
        if depth not in builders:
            raise ValueError(f"DilatedResNet: depth must be 18 or 50, got {depth}")
        net = builders[depth](weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        _dilate_stage(net.layer3, 2)
        _dilate_stage(net.layer4, 4)
        self.depth = depth
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth == 50 else 1
        self.stage_channels = tuple(c * expansion for c in (64, 128, 256, 512))
        self.out_channels = self.stage_channels[-1]
        self.input_size: tuple[int, int] | None = None

    @property
    def layers(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x):
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x):
        self.input_size = tuple(x.shape[-2:])
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h)
        return h

    def last_shared_layer(self) -> nn.Conv2d:
        """The last conv of layer4's last block (conv2 of a BasicBlock, conv3 of a Bottleneck): the
        last encoder layer with weights, "the last layer of the shared encoder" of AvgNorm."""
        block = self.layer4[-1]
        return block.conv3 if hasattr(block, "conv3") else block.conv2


def load_dense_encoder_weights(backbone: DilatedResNet, path: str) -> None:
    """Load an ImageNet checkpoint (a torchvision resnet18 / resnet50 state_dict file; prefixes and
    wrappers as `load_encoder_weights` accepts) into a DilatedResNet, strictly: every tensor of the
    backbone must be in the file with its shape, otherwise UsageError. BatchNorm's
    `num_batches_tracked` counters may be absent (torchvision's older checkpoints lack them); extra
    keys such as `fc.weight` are ignored. Strict because a ResNet-50 file half-matches a ResNet-18
    (the stem and the BatchNorms of layer1 fit) and would otherwise load silently in part."""
    from common.device import UsageError

    missing = [k for k in load_encoder_weights(backbone, path) if not k.endswith("num_batches_tracked")]
    if missing:
        own = backbone.state_dict()
        depth = backbone.depth
        raise UsageError(f"--pretrained {path!r}: {len(missing)} of the ResNet-{depth} encoder's tensors are "
                         f"missing from the file or have another shape there (e.g. {missing[0]} "
                         f"{tuple(own[missing[0]].shape)}); expected a torchvision resnet{depth} ImageNet state_dict")


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pool -> bias-free conv1x1 -> BatchNorm -> ReLU,
    broadcast back to the feature map's size (the survey upsamples the 1x1 map bilinearly, which is
    the same constant map).

    With one image in training mode BatchNorm has a single value per channel and cannot use batch
    statistics (PyTorch raises); the survey never meets this (its loader drops the last incomplete
    batch). Here that one batch is normalised with the running statistics instead, so a trailing
    batch of size 1 does not stop a run; every larger batch is the usual training-mode BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        if self.training and y.shape[0] == 1:
            bn = self.bn
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = self.bn(y)
        return F.relu(y).expand(-1, -1, *x.shape[-2:])


class ASPPHead(nn.Module):
    """The survey's DeepLabHead (models/aspp.py; DeepLabv3, Chen et al. 2017): ASPP with five
    parallel branches of `width` (256) channels, each bias-free conv + BatchNorm + ReLU (a 1x1 conv,
    3x3 convs with dilation 12, 24 and 36, the image-pooling branch), concatenated and projected by a
    bias-free conv1x1 (5 * 256 -> 256) + BatchNorm + ReLU + Dropout(0.5); then a bias-free conv3x3
    (256 -> 256) + BatchNorm + ReLU and a conv1x1 classifier (256 -> out_dim, with bias).
    PyTorch's default initialisation, as in the survey. The output stays at the feature map's
    resolution; `DenseMTLModel` upsamples it to the input size."""

    def __init__(self, in_channels: int, out_dim: int, rates: Sequence[int] = ASPP_RATES, width: int = 256,
                 dropout: float = 0.5):
        super().__init__()

        def branch(k: int, rate: int = 1) -> nn.Sequential:
            conv = nn.Conv2d(in_channels, width, k, padding=rate if k == 3 else 0, dilation=rate, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU())

        self.rates = tuple(rates)
        self.branches = nn.ModuleList([branch(1)] + [branch(3, r) for r in self.rates])
        self.pool = ASPPPooling(in_channels, width)
        n = len(self.branches) + 1
        self.project = nn.Sequential(nn.Conv2d(n * width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                     nn.Dropout(dropout))
        self.refine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.classifier = nn.Conv2d(width, out_dim, 1)

    def forward(self, x):
        y = torch.cat([b(x) for b in self.branches] + [self.pool(x)], dim=1)
        return self.classifier(self.refine(self.project(y)))


class DenseMTLModel(MTLModel):
    """Shared (dilated ResNet) encoder + one ASPP head per task; every output is upsampled
    bilinearly (align_corners=False, the survey's F.interpolate(mode="bilinear")) to the input
    resolution, and surface-normal outputs (tasks of kind "normal") are then L2-normalised per pixel.

    The survey returns raw normals and normalises them in its loss (NormalsLoss(normalize=True):
    x / (|x| + 1e-12)) and in its saved predictions; normalising here, after the upsampling as there,
    gives the same loss values and gradients whether or not the loss normalises again (normalising a
    unit vector is the identity, and so is the chain rule through it), and the metrics always see
    unit vectors. F.normalize clamps the norm at 1e-12 where the survey adds 1e-12. Only kind
    "normal" is normalised here (its loss expects unit vectors); any other kind, e.g. a normals
    kind whose loss and metrics normalise the prediction themselves, gets the raw upsampled output,
    exactly as in the survey.

    `forward(x)` passes the input size to `decode`; `decode(encoder(x))` (methods that need the
    shared representation) upsamples to the size the encoder last saw.
    """

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module], tasks):
        super().__init__(encoder, heads, [t.name for t in tasks])
        self.normalize = [t.kind == "normal" for t in tasks]

    def forward(self, x) -> list[torch.Tensor]:
        return self.decode(self.encoder(x), x.shape[-2:])

    def decode(self, rep, size=None) -> list[torch.Tensor]:
        size = self.encoder.input_size if size is None else tuple(size)
        if size is None:
            raise RuntimeError("DenseMTLModel.decode: call the encoder first or pass the output size")
        outs = []
        for y, norm in zip(super().decode(rep), self.normalize):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(F.normalize(y, dim=1) if norm else y)
        return outs

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.last_shared_layer().parameters() if p.requires_grad]


def _dense_backbone(depth: int, data, pretrained: str | None) -> DilatedResNet:
    backbone = DilatedResNet(depth, data.input_shape[0])
    if pretrained:
        load_dense_encoder_weights(backbone, pretrained)
    return backbone


def _build_dilated(depth: int):
    def build(data, tasks, pretrained: str | None = None, aspp_width: int = 256, **kw):
        """Dilated ResNet (shared) + one ASPP head per task: the survey's "multi_task_baseline"
        (models/models.py MultiTaskModel with `backbone_kwargs: dilated: True`, `head: deeplab`), the
        "ResNet-18" / "ResNet-50" vanilla MTL of the AvgNorm paper. `pretrained`: path of a torchvision
        ImageNet state_dict for the encoder (the paper's default; nothing is downloaded). `aspp_width`:
        the heads' channel width (256 as the survey; narrower only for smoke runs)."""
        encoder = _dense_backbone(depth, data, pretrained)
        heads = [ASPPHead(encoder.out_channels, t.out_dim, width=aspp_width) for t in tasks]
        return DenseMTLModel(encoder, heads, tasks)
    return build


register_model("resnet18-dilated")(_build_dilated(18))
register_model("resnet50-dilated")(_build_dilated(50))


class MTANResNetEncoder(nn.Module):
    """MTAN (Liu, Johns & Davison, CVPR 2019) on a dilated ResNet, as the survey's models/mtan.py
    builds it for NYUD / PASCAL-Context (LibMTL's architecture/MTAN.py has the same structure).
    forward(x) returns T task feature maps (B, 512 or 2048, ceil(H/8), ceil(W/8)).

    The shared backbone runs once. For stage j (layer1..layer4) let b_j be the output of all its
    blocks but the last (for layer1 including the stem) and u_j the output of its last block. Task t:
        mask = att[t][j](b_j)                                   (j = 0)
        mask = att[t][j](concat(b_j, a_{j-1}))                   (j > 0)
        a_j  = refine[j](mask * u_j)                             (j < 3; max-pooled 2x2 when the
                                                                  next stage is smaller, i.e. after layer1)
        a_3  = mask * u_3                                        (the task's features for its head)
    att[t][j] is MTAN's attention module (conv1x1-BN-ReLU-conv1x1-BN-Sigmoid; in: c_j at j = 0, 2 c_j
    after; hidden c_j / 4; out c_j, with c_j the stage's channels), one per task and stage.
    refine[j] (shared by all tasks) is one torchvision Bottleneck c_j -> c_{j+1} with a 1x1 conv + BN
    projection shortcut, the survey's RefinementBlock (a Bottleneck even on ResNet-18). Widths follow
    the survey (hidden c_j / 4, Bottleneck refinement); LibMTL uses hidden c_j / expansion and a
    BasicBlock on ResNet-18. Default PyTorch initialisation of the added modules, as in both.

    The max-pool uses ceil_mode so that a_0 matches layer2's ceil(n/2) size for odd sizes too (the
    survey's and LibMTL's floor-mode pool would give mismatched maps there); for even sizes it is
    the same pool.
    """

    def __init__(self, num_tasks: int, depth: int = 18, in_channels: int = 3, backbone: DilatedResNet | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else DilatedResNet(depth, in_channels)
        c = self.backbone.stage_channels
        self.out_channels = c[-1]
        self.attention = nn.ModuleList(
            nn.ModuleList(attention_block(c[j] if j == 0 else 2 * c[j], c[j] // 4, c[j]) for j in range(4))
            for _ in range(num_tasks))
        self.refine = nn.ModuleList(self._refinement_block(c[j], c[j + 1]) for j in range(3))

    @staticmethod
    def _refinement_block(cin: int, cout: int) -> nn.Module:
        from torchvision.models.resnet import Bottleneck

        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        return Bottleneck(cin, cout // Bottleneck.expansion, downsample=shortcut)

    @property
    def input_size(self):
        return self.backbone.input_size

    def forward(self, x) -> list[torch.Tensor]:
        bb = self.backbone
        bb.input_size = tuple(x.shape[-2:])
        h = bb.stem(x)
        before, after = [], []
        for layer in bb.layers:
            b = layer[:-1](h)
            h = layer[-1](b)
            before.append(b)
            after.append(h)
        reps = []
        for att in self.attention:
            a = None
            for j in range(4):
                mask = att[j](before[j] if a is None else torch.cat((before[j], a), dim=1))
                a = mask * after[j]
                if j < 3:
                    a = self.refine[j](a)
                    if a.shape[-2:] != before[j + 1].shape[-2:]:
                        a = F.max_pool2d(a, 2, 2, ceil_mode=True)
            reps.append(a)
        return reps

    def last_shared_layer(self) -> nn.Conv2d:
        """The backbone's last conv (layer4's last block): every task's features are a mask times its
        output, so it is the last layer all task gradients pass through."""
        return self.backbone.last_shared_layer()


class MTANResNetModel(DenseMTLModel):
    """DenseMTLModel whose task-specific attention modules are task parameters: task t owns its
    attention modules and its head, the shared parameters are the backbone and the refinement
    blocks (reached by every task's loss). This follows LibMTL, whose MTAN gives the gradient
    methods only the backbone as shared parameters, except that the refinement blocks, which every
    task passes through, are shared here (LibMTL leaves them out of its shared set). The SegNet
    "mtan" model above instead counts its attention as shared, as Nash-MTL's code does."""

    def _attention_ids(self) -> set[int]:
        return {id(p) for p in self.encoder.attention.parameters()}

    def shared_parameters(self) -> list[nn.Parameter]:
        att = self._attention_ids()
        return [p for p in self.encoder.parameters() if p.requires_grad and id(p) not in att]

    def task_parameters(self, t: int) -> list[nn.Parameter]:
        own = list(self.encoder.attention[t].parameters()) + list(self.heads[t].parameters())
        return [p for p in own if p.requires_grad]


def _build_mtan_resnet(depth: int):
    def build(data, tasks, pretrained: str | None = None, aspp_width: int = 256, **kw):
        """MTAN on a dilated ResNet + one ASPP head per task (the survey's `model: mtan` with
        `backbone_kwargs: dilated: True`, `head: deeplab`): the "MTAN" rows of the AvgNorm paper.
        `pretrained` loads the ResNet only; the attention and refinement modules start at random."""
        backbone = _dense_backbone(depth, data, pretrained)
        encoder = MTANResNetEncoder(len(tasks), backbone=backbone)
        heads = [ASPPHead(encoder.out_channels, t.out_dim, width=aspp_width) for t in tasks]
        return MTANResNetModel(encoder, heads, tasks)
    return build


register_model("mtan-resnet18")(_build_mtan_resnet(18))
register_model("mtan-resnet50")(_build_mtan_resnet(50))
