"""The --out folder of a run: an exclusive lock for the whole run, the previous run kept aside by
--overwrite until the new one has written its first checkpoint, and the comparison of a --resume
with the configuration the folder was started with. Used by common.train.Run.

Lock: `<out>/.lock` holds "pid host" of the writer and an exclusive fcntl.flock on it. The kernel
drops a flock when its process dies (SIGKILL included), so a lock file whose flock can be taken is
stale and is taken over. On a file system without flock (some network mounts) the lock falls back
to the pid / host in the file: a lock of a process that no longer exists on this host is stale.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import shutil
import socket
from typing import Mapping

from common.device import UsageError

LOCK_NAME = ".lock"
ASIDE_NAME = ".previous"  # the run replaced by --overwrite, until the new run's first checkpoint
RUN_FILES = ("checkpoint.pt", "metrics.json", "log.csv", "config.json")

_HELD: dict[str, "OutLock"] = {}  # this process's locks by folder (a finished in-process run hands its lock on)
_ASIDE: set[str] = set()  # folders whose previous run is set aside and not yet replaced by a checkpoint


def _unwritable(out: str, e: OSError) -> UsageError:
    return UsageError(f"--out {out} cannot be written ({e.strerror or type(e).__name__}); choose a writable folder")


def make_out_dir(out: str) -> None:
    """Create --out (and its parents); an --out that cannot be created is one UsageError."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise _unwritable(out, e) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_owner(path: str) -> tuple[int | None, str]:
    try:
        with open(path) as fh:
            pid, _, host = fh.read().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


class OutLock:
    """An exclusive lock on a run folder for the lifetime of a run (see the module docstring)."""

    def __init__(self, out: str):
        self.out = out
        self.path = os.path.join(out, LOCK_NAME)
        self.key = os.path.realpath(out)
        self.fd: int | None = None
        self.took_over: tuple[int | None, str] | None = None  # (pid, host) of a stale lock taken over

    def acquire(self) -> "OutLock":
        held = _HELD.pop(self.key, None)
        if held is not None:  # an earlier run of this process in the same folder has ended (tests, sweeps)
            held.release()
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise _unwritable(self.out, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                os.close(fd)
                return self._acquire_without_flock(me)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and flock: retry
                os.close(fd)
                continue
            pid, host = _read_owner(self.path)
            if pid is not None and pid != os.getpid():
                self.took_over = (pid, host)
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
            self.fd = fd
            _HELD[self.key] = self
            return self
        raise UsageError(f"--out {self.out}: cannot take the lock {self.path}; another process keeps replacing it")

    def _busy(self) -> UsageError:
        pid, host = _read_owner(self.path)
        who = f"process {pid} on {host}" if pid is not None else "another process"
        return UsageError(f"--out {self.out} is in use by {who} (lock {self.path}); wait for that run or choose another --out")

    def _acquire_without_flock(self, me: str) -> "OutLock":
        """O_EXCL creation; a lock file of a dead process on this host is stale and replaced."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid, host = _read_owner(self.path)
                if pid is not None and host == socket.gethostname() and not _pid_alive(pid):
                    self.took_over = (pid, host)
                    os.remove(self.path)
                    continue
                raise self._busy() from None
            except OSError as e:
                raise _unwritable(self.out, e) from None
            os.write(fd, me.encode())
            self.fd = fd
            _HELD[self.key] = self
            return self
        raise self._busy()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.remove(self.path)  # removed while still held: a waiting opener sees a new file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if _HELD.get(self.key) is self:
            del _HELD[self.key]


def release(out: str) -> None:
    """Release this process's lock on `out` (if it holds one)."""
    lock = _HELD.get(os.path.realpath(out))
    if lock is not None:
        lock.release()


def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


atexit.register(_release_all)  # a run that ends normally leaves no lock file behind


def abort_all() -> None:
    """A run failed: put back every run set aside by --overwrite, release every lock of this process."""
    for out in list(_ASIDE):
        try:
            restore_aside(out)
        except OSError:
            pass
    _release_all()


# ---- --overwrite: keep the previous run until the new one has a checkpoint ------------------------
def _run_files(folder: str) -> list[str]:
    return [f for f in os.listdir(folder) if f in RUN_FILES or f.endswith(".png") or ".tmp" in f]


def set_aside(out: str) -> str | None:
    """Move the run files of `out` into `out/.previous/`; returns that folder (None if nothing moved)."""
    files = _run_files(out)
    if not files:
        return None
    aside = os.path.join(out, ASIDE_NAME)
    os.makedirs(aside, exist_ok=True)
    for f in files:
        os.replace(os.path.join(out, f), os.path.join(aside, f))
    _ASIDE.add(out)
    return aside


def restore_aside(out: str) -> bool:
    """Put back a run kept aside by an --overwrite that did not reach its first checkpoint (the new
    run's files are removed); True if there was one."""
    _ASIDE.discard(out)
    aside = os.path.join(out, ASIDE_NAME)
    if not os.path.isdir(aside):
        return False
    for f in _run_files(out):
        os.remove(os.path.join(out, f))
    for f in os.listdir(aside):
        os.replace(os.path.join(aside, f), os.path.join(out, f))
    os.rmdir(aside)
    return True


def drop_aside(out: str) -> None:
    """The new run has written its first checkpoint: the previous run is deleted."""
    if out not in _ASIDE:
        return
    _ASIDE.discard(out)
    shutil.rmtree(os.path.join(out, ASIDE_NAME), ignore_errors=True)


# ---- --resume: the same run, or refused ---------------------------------------------------------
# flags that do not change what a run computes: where files are, how it reports, how far it goes
RESUME_FREE = frozenset({"resume", "overwrite", "out", "data_root", "no_progress", "quiet", "num_workers", "device",
                         "epochs", "max_steps"})


def saved_config(out: str) -> dict | None:
    """config.json of the run in `out` (None if absent or unreadable)."""
    try:
        with open(os.path.join(out, "config.json")) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def resume_differences(saved: Mapping, now: Mapping, free: frozenset = RESUME_FREE) -> list[str]:
    """'--flag OLD (now NEW)' for every setting outside `free` that differs between two argument dicts."""
    out = []
    for k in sorted(set(saved) | set(now)):
        if k in free or saved.get(k) == now.get(k):
            continue
        out.append(f"--{k.replace('_', '-')} {_show(saved.get(k))} (now {_show(now.get(k))})")
    return out


def _show(v) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) if v else "none"
    return str(v)
