"""A fake accelerator for CPU-only machines: run a method's own code "on the GPU" and check it.

`FakeDeviceMode` registers PyTorch's PrivateUse1 backend under the name `fakegpu` (a Python backend:
device guard and hooks from torch.utils.backend_registration) and, while it is active, makes every
tensor put on `fakegpu` a `DeviceTensor`: a wrapper subclass whose `.device` is `fakegpu:0` and whose
values live in a CPU tensor inside it. Every ATen op passes through the mode, which

  - rejects a mix of device tensors and CPU tensors in one op, as CUDA does ("Expected all tensors to
    be on the same device"): CPU tensors of 0 dimensions (CUDA treats them as scalars), copies
    (`.to`, `.copy_`) and CPU index tensors of advanced indexing are allowed, as on CUDA;
  - rejects float64 / complex128 tensors created on the device (an MPS-like check: MPS has no
    float64), unless `forbid_float64=False`;
  - counts the host synchronisations: `.item()` / `float()` / `bool()` / Python branching on a device
    value (aten._local_scalar_dense), copies from the device to the host (`.cpu()`, `.to("cpu")`,
    `.tolist()`, `torch.save`), and any other op that returns a Python value computed from a device
    tensor. `.numpy()` of a device tensor raises, as on CUDA.

Because the values are real, a whole training step runs: forward, backward (the autograd engine sees a
non-CPU device with its own device guard), the optimiser, linear algebra, and the host-side solvers
that read values through `.item()` / `.cpu()`; every method's own `main()` runs unchanged with
`--device fakegpu` (common.device.resolve_device accepts the registered backend's name).

What it cannot see (README, "GPU correctness without a GPU"): the real kernels (cuDNN, cuBLAS, fused
and foreach optimiser paths that only run on CUDA), numerical differences between devices, bf16
autocast (`--amp` is CUDA-only), CUDA memory, streams and asynchronous errors. The ops themselves run on
the CPU.
"""
from __future__ import annotations

import collections
import contextlib
import os
import traceback

import torch
from torch.utils._mode_utils import no_dispatch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

NAME = "fakegpu"
aten = torch.ops.aten


class DeviceMixError(RuntimeError):
    """A CPU tensor met a device tensor in an op that CUDA would reject."""


class Float64OnDevice(RuntimeError):
    """A float64 tensor was created on the (fake) accelerator: MPS cannot hold one."""


def install() -> torch.device:
    """Register the PrivateUse1 backend as `fakegpu` (once per process) and return its device.

    Call it before the process's first backward pass: the autograd engine sizes its per-device queues
    once, at that pass, and a device registered later fails an internal assert in the engine
    (tests/conftest.py installs it when pytest starts; the benchmark's --host-syncs mode first thing)."""
    import torch.utils.backend_registration as reg

    current = torch._C._get_privateuse1_backend_name()
    if current != NAME:
        if current != "privateuseone":
            raise RuntimeError(f"the PrivateUse1 backend is already registered as {current!r} in this process")
        reg._setup_privateuseone_for_python_backend(NAME)
    return torch.device(NAME, 0)


class DeviceTensor(torch.Tensor):
    """A tensor on `fakegpu:0` whose values are the CPU tensor `_inner`."""

    _inner: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(cls, inner.size(), strides=inner.stride(),
                                                storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                layout=inner.layout, device=torch.device(NAME, 0),
                                                requires_grad=inner.requires_grad)
        r._inner = inner
        return r

    def __repr__(self, *, tensor_contents=None):
        return f"DeviceTensor({self._inner!r}, device='{NAME}:0')"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func}: a {NAME} tensor was used outside FakeDeviceMode")

    @property
    def data(self):
        return torch._C.TensorBase.data.__get__(self)

    @data.setter
    def data(self, new):  # `p.data = q` swaps the TensorImpl; the values must follow
        torch._C.TensorBase.data.__set__(self, new)
        self._inner = new._inner

    def tolist(self):
        _record("tolist")
        return self._inner.tolist()

    def numpy(self, *, force: bool = False):
        raise TypeError(f"can't convert {NAME}:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                        "to host memory first.")

    def __array__(self, dtype=None, copy=None):
        return self.numpy()

    def __reduce_ex__(self, proto):
        _record("save")  # torch.save copies device tensors to the host
        return self._inner.detach().clone().__reduce_ex__(proto)


_ACTIVE: list["FakeDeviceMode"] = []
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller() -> str:
    """file:line of the innermost project frame (methods/, common/) outside this module."""
    for frame in reversed(traceback.extract_stack()):
        f = os.path.abspath(frame.filename)
        if f.startswith(_HERE) and not f.endswith("fake_device.py"):
            return f"{os.path.relpath(f, _HERE)}:{frame.lineno}"
    return "?"


def _record(kind: str) -> None:
    for m in _ACTIVE:
        m.record(kind)


# Ops that legitimately take CPU tensors next to device tensors on CUDA (copies), and the indexing ops
# whose index tensors may stay on the CPU (only the `indices` argument is exempt there).
_COPIES = {aten._to_copy.default, aten.copy_.default, aten.copy.default, aten.lift_fresh.default,
           aten.lift_fresh_copy.default, aten._copy_from.default, aten._copy_from_and_resize.default}
_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default,
             aten._unsafe_index.Tensor, aten._unsafe_index_put.default}
_FLOAT64 = (torch.float64, torch.complex128)


class FakeDeviceMode(TorchDispatchMode):
    """Run the code inside on the fake accelerator `fakegpu` (see the module docstring).

    `syncs` counts host synchronisations by kind (item, to_host, tolist, save, value); `ops` counts the
    ops that ran on the device. `forbid_float64` raises Float64OnDevice at the first float64 tensor
    created on the device."""

    def __init__(self, forbid_float64: bool = True):
        super().__init__()
        self.device = install()
        self.forbid_float64 = forbid_float64
        self.syncs: collections.Counter = collections.Counter()
        self.ops = 0
        self.op_names: collections.Counter = collections.Counter()  # ops that ran on the device, by name
        self.sites: collections.Counter = collections.Counter()  # (kind, "file:line" of the project code) per sync
        self._lift = None

    # -- counting ---------------------------------------------------------------------------------
    def record(self, kind: str) -> None:
        self.syncs[kind] += 1
        self.sites[(kind, _caller())] += 1

    @property
    def host_syncs(self) -> int:
        return sum(self.syncs.values())

    def __enter__(self):
        self._lift = torch._C._only_lift_cpu_tensors()
        torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(..., device=fakegpu) is built on the CPU, then moved
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        torch._C._set_only_lift_cpu_tensors(self._lift)
        return super().__exit__(*exc)

    # -- the dispatch -----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        on_dev: list[DeviceTensor] = []

        def unwrap(x):
            if isinstance(x, DeviceTensor):
                on_dev.append(x)
                return x._inner
            return x

        u_args, u_kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
        target = u_kwargs.get("device")
        if target is not None:
            target = torch.device(target)
            to_device = target.type == NAME
            if to_device:
                u_kwargs["device"] = torch.device("cpu")
        else:
            to_device = bool(on_dev)

        if on_dev:
            self._check_mix(func, args, kwargs)
        if func is aten.copy_.default:  # copy_(dst, src): the result lives where dst lives
            dst, src = args[0], args[1]
            if not isinstance(dst, DeviceTensor) and isinstance(src, DeviceTensor):
                self.record("to_host")
            func(*u_args, **u_kwargs)
            return dst
        if func is aten._local_scalar_dense.default and on_dev:
            self.record("item")
        elif on_dev and not to_device:
            self.record("to_host")

        out = func(*u_args, **u_kwargs)
        if on_dev or to_device:
            self.ops += 1
            self.op_names[func.__name__.split(".")[0]] += 1
        if not to_device:
            return out
        inners = {id(t._inner): t for t in on_dev}

        def wrap(o):
            if isinstance(o, torch.Tensor) and not isinstance(o, DeviceTensor):
                if id(o) in inners:  # in-place and out= ops return their argument
                    t = inners[id(o)]
                    if t.shape != o.shape or t.stride() != o.stride() or t.storage_offset() != o.storage_offset():
                        with no_dispatch():  # squeeze_, resize_, out= ...: the wrapper takes the new layout
                            t.as_strided_(o.size(), o.stride(), o.storage_offset())
                    return t
                if self.forbid_float64 and o.dtype in _FLOAT64:
                    raise Float64OnDevice(f"{func} created a {o.dtype} tensor on the accelerator ({NAME}); "
                                          "MPS has no float64: compute in the parameters' dtype or on the host")
                return DeviceTensor(o)
            if on_dev and isinstance(o, (bool, int, float)) and func is not aten._local_scalar_dense.default:
                self.record("value")
            return o

        return tree_map(wrap, out)

    @staticmethod
    def _check_mix(func, args, kwargs) -> None:
        if func in _COPIES:
            return
        scan = (args[:1] + args[2:]) if func in _INDEXING else args  # CPU index tensors are fine on CUDA
        for x in tree_flatten((scan, kwargs))[0]:
            if isinstance(x, torch.Tensor) and not isinstance(x, DeviceTensor) and x.dim() > 0 and x.device.type == "cpu":
                raise DeviceMixError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                     f"{NAME}:0 and cpu! (in {func}, a CPU tensor of shape {tuple(x.shape)})")


@contextlib.contextmanager
def fake_device(forbid_float64: bool = True):
    """`with fake_device() as mode:` run code with `--device fakegpu` available; mode.syncs counts host syncs."""
    mode = FakeDeviceMode(forbid_float64)
    with mode:
        yield mode


# ----------------------------------------------------------------------------------------------
# Small real datasets for device checks: slices of the offline multimnist-lite (real digits).
# ----------------------------------------------------------------------------------------------
def register_tiny_datasets(train: int = 96, held_out: int = 32) -> tuple[str, str]:
    """Register `fd-tiny2` (multimnist-lite's two tasks) and `fd-tiny4` (four tasks, the digit tasks
    repeated: EXTRA's many-task grouping path) on the first `train` / `held_out` images of each split."""
    from common.data import MTLData, TensorMTL, load_dataset, register, task

    def loader(num_tasks):
        def load(root, seed, **kw):
            d = load_dataset("multimnist-lite", root, seed, data_seed=kw.get("data_seed", 0))

            def cut(ds, n):
                return TensorMTL(ds.x[:n], [ds.ys[i % 2][:n] for i in range(num_tasks)])
            names = ["left", "right"] if num_tasks == 2 else [f"task{i}" for i in range(num_tasks)]
            return MTLData(f"fd-tiny{num_tasks}", [task(n, "class", 10) for n in names], cut(d.train, train),
                           cut(d.val, held_out), cut(d.test, held_out), (1, 28, 28), "lenet")
        return load

    register("fd-tiny2", loader(2))
    register("fd-tiny4", loader(4))
    return "fd-tiny2", "fd-tiny4"
