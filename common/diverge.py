"""Divergence: a non-finite loss or weight stops a run (exit status EXIT_DIVERGED) and never reaches
checkpoint.pt, so the last checkpoint on disk is the last finite state.

Every loss that goes through Run.losses() is watched on its device: the first step with a
non-finite task loss and that task are kept in a 2-element device tensor, without reading anything
back to the host. The Run reads it (one host sync) every CHECK_EVERY steps, before each log.csv
row and before each checkpoint, where it also checks the weights and optimiser state to be saved.
"""
from __future__ import annotations

from typing import Sequence

import torch

EXIT_DIVERGED = 3
CHECK_EVERY = 100  # steps between two reads of the on-device flag


class Diverged(Exception):
    """Training produced a non-finite loss or update; main_guard prints one line and exits EXIT_DIVERGED."""


class FiniteWatch:
    """The first step whose watched losses were not finite, and the first such task, on device."""

    def __init__(self):
        self.first: torch.Tensor | None = None  # [step, task index or -1], -1 while all is finite
        self._ids: dict = {}

    def observe(self, losses: torch.Tensor, step: int, task_ids: Sequence[int] | None = None) -> None:
        v = losses.detach().reshape(-1)
        dev = v.device
        ids = tuple(range(v.numel())) if task_ids is None else tuple(int(i) for i in task_ids)
        if len(ids) != v.numel():
            ids = (-1,) * v.numel()
        key = (ids, dev)
        if key not in self._ids:  # built once per (tasks, device): no host-to-device copy per step
            self._ids[key] = torch.tensor(ids, dtype=torch.long, device=dev)
        if self.first is None or self.first.device != dev:
            self.first = torch.full((2,), -1, dtype=torch.long, device=dev) if self.first is None else self.first.to(dev)
        bad = ~torch.isfinite(v)
        # index_select, not [tensor]: indexing with a 0-d tensor reads it back to the host (a sync per step)
        task = self._ids[key].index_select(0, torch.argmax(bad.to(torch.uint8)).reshape(1)).reshape(())
        cand = torch.stack((torch.full((), step, dtype=torch.long, device=dev), task))
        self.first = torch.where(bad.any() & (self.first[0] < 0), cand, self.first)

    def poll(self) -> tuple[int, int] | None:
        """(step, task index or -1) of the first non-finite loss, or None; one host sync."""
        if self.first is None:
            return None
        step, task = self.first.tolist()
        return (step, task) if step >= 0 else None


def nonfinite_tensor(state, path: str = "") -> str | None:
    """The path of the first floating-point tensor in a nested dict / list / tuple that holds a NaN or
    an infinity (None if all are finite). One host sync per device for the whole tree."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(obj, where):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and obj.numel():
                found.append((where, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{where}[{i}]")

    walk(state, path)
    by_dev: dict = {}
    for where, t in found:
        by_dev.setdefault(t.device, []).append((where, t))
    for items in by_dev.values():
        ok = torch.stack([torch.isfinite(t).all() for _, t in items])
        if not bool(ok.all()):
            return items[int(torch.argmin(ok.to(torch.uint8)))][0]
    return None
