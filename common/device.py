"""Device selection, seeding and optional bf16 autocast.

`--device auto` picks CUDA when present, then Apple MPS, then the CPU. A device that was asked for
but is absent raises `UsageError`, which every method turns into one line on stderr and exit 2.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


class UsageError(Exception):
    """Bad input from the user (flag, dataset, files). Methods print it on one line and exit 2."""


def resolve_device(name: str = "auto") -> torch.device:
    """Turn auto|cpu|cuda|cuda:N|mps into a torch.device, checking that it exists."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError("--device mps was requested but Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was requested but no CUDA GPU is visible; use --device cpu or auto")
        if ":" in name:
            idx_s = name.split(":", 1)[1]
            if not idx_s.isdigit():
                raise UsageError(f"--device {name}: the GPU index must be a number, e.g. cuda:0")
            idx = int(idx_s)
            if idx >= torch.cuda.device_count():
                raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible (0..{torch.cuda.device_count() - 1})")
            return torch.device("cuda", idx)
        return torch.device("cuda")
    backend = torch._C._get_privateuse1_backend_name()
    if backend != "privateuseone" and name.split(":")[0] == backend:
        return torch.device(name)  # a PrivateUse1 backend registered in this process (reproduce/fake_device.py)
    raise UsageError(f"--device {name!r} is not understood; use auto, cpu, cuda, cuda:N or mps")


def move_tensors_(tensors, device: torch.device) -> None:
    """Move leaf tensors (an aggregator's trainable parameters) to `device` in place, keeping their
    identity for whoever holds them. torch.utils.swap_tensors also moves them onto a tensor-subclass
    device (reproduce/fake_device.py), where `p.data = p.data.to(device)` is refused."""
    for p in tensors:
        moved = p.detach().to(device).requires_grad_(p.requires_grad)
        if hasattr(torch.utils, "swap_tensors"):
            torch.utils.swap_tensors(p, moved)
        else:  # torch < 2.3
            p.data = moved.data


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when `enabled` (--amp); a no-op context otherwise (CPU runs stay fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated memory on a CUDA device since the last reset, in MiB; None elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
