"""common/device.py: --device resolution (present / absent / malformed), seeding, autocast."""
import os
import random
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.device import UsageError, autocast, peak_memory_mb, resolve_device, seed_everything  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def test_auto_and_cpu():
    dev = resolve_device("auto")
    assert isinstance(dev, torch.device)
    if HAS_CUDA:
        assert dev.type == "cuda"
    elif HAS_MPS:
        assert dev.type == "mps"
    else:
        assert dev == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(None).type == dev.type  # no flag: auto


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_absent_cuda_is_a_usage_error(name):
    with pytest.raises(UsageError, match="cpu"):  # the message says what to use instead
        resolve_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_present_cuda():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UsageError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU
    with pytest.raises(UsageError):
        resolve_device("cuda:x")


@pytest.mark.skipif(HAS_MPS, reason="Apple MPS is present")
def test_absent_mps_is_a_usage_error():
    with pytest.raises(UsageError):
        resolve_device("mps")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda0", "cpu:0:1", "", "xla", "cudax"])
def test_garbage_is_a_usage_error(name):
    if name == "":
        # an empty flag means auto
        assert resolve_device(name).type in ("cpu", "cuda", "mps")
        return
    with pytest.raises(UsageError):
        resolve_device(name)


def test_usage_error_is_one_line():
    with pytest.raises(UsageError) as e:
        resolve_device("tpu")
    msg = str(e.value)
    assert "\n" not in msg and "tpu" in msg


def test_seed_everything_makes_draws_reproducible():
    seed_everything(123)
    a = (torch.rand(5), np.random.rand(3), random.random())
    seed_everything(123)
    b = (torch.rand(5), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    seed_everything(124)
    c = torch.rand(5)
    assert not torch.equal(a[0], c)
    seed_everything(2**40 + 5)  # large seeds are accepted (numpy's is taken mod 2^32)
    torch.rand(1)


def test_autocast_on_cpu_is_a_noop():
    x = torch.randn(4, 4)
    for enabled in (True, False):
        with autocast(torch.device("cpu"), enabled):
            assert not torch.is_autocast_enabled("cpu")
            y = x @ x
            assert y.dtype == torch.float32
            assert torch.equal(y, x @ x)
    with autocast(torch.device("cuda"), False):  # disabled on CUDA: also a no-op
        assert (x @ x).dtype == torch.float32


def test_peak_memory_is_none_off_cuda():
    assert peak_memory_mb(torch.device("cpu")) is None
