"""What keeps a workdir honest: one run at a time, a resume only under the config its
checkpoints were trained with, a stop on SIGTERM or Ctrl-C that saves first, and a full disk
reported as such."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pathlib
import signal
import socket
import threading
import time
from typing import IO

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = [
    "RESUMABLE",
    "ConfigChanged",
    "DiskFull",
    "SignalCatcher",
    "Stopped",
    "WorkdirBusy",
    "changed_fields",
    "disk_full",
    "lock",
]

# The trainer fields a resumed run may change: they say how long to train, how often to log
# and save, and where, not what is trained. More epochs extend the run (a cosine schedule then
# follows the new length from the resume on); fewer than already trained are refused. Any
# other change (the model, T, the neurons, the seed, the learning rate, the batch size, the
# method's options ...) would continue a run under a config its checkpoints were not trained
# with, so it is refused.
RESUMABLE = (
    "epochs",
    "progress",
    "log_every",
    "tensorboard",
    "keep_checkpoints",
    "checkpoint_every",
    "workdir",
)


class ConfigChanged(ValueError):
    """A workdir's checkpoints were trained under another config than the one given."""


class WorkdirBusy(RuntimeError):
    """Another run holds the workdir."""


class DiskFull(OSError):
    """The workdir's disk is full (``errno`` ENOSPC), said in one line."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


class Stopped(SystemExit):
    """The run stopped on SIGTERM or SIGINT after saving a checkpoint. A ``SystemExit`` with
    the conventional code (128 + the signal), so a script ends with its one-line message and
    no traceback; a notebook may catch it."""


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def changed_fields(saved: dict, given: dict) -> tuple[dict, dict]:
    """The fields (dotted names) that differ between the ``saved`` and ``given`` run records,
    as ``{name: (saved, given)}``, split into the harmless ones (a :data:`RESUMABLE` field of
    the trainer section, at the top level or under ``train``) and the rest."""
    old, new = _flat(saved), _flat(given)
    harmless, refused = {}, {}
    for name in sorted(set(old) | set(new)):
        if old.get(name, "<absent>") == new.get(name, "<absent>"):
            continue
        section, _, field = name.rpartition(".")
        target = harmless if section in ("", "train") and field in RESUMABLE else refused
        target[name] = (old.get(name, "<absent>"), new.get(name, "<absent>"))
    return harmless, refused


def _agreed(value: bool) -> bool:
    """Process 0's ``value``, on every process (all take its decision)."""
    if jax.process_count() == 1:
        return value
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def lock(workdir: pathlib.Path) -> IO[str] | None:
    """Takes the workdir's lock for this run (process 0 holds it; the others follow its
    verdict) and returns the open lock file (None on the other processes), which holds it
    until closed or the process ends (a killed run leaves no stale lock). WorkdirBusy if
    another run holds it."""
    handle, holder = None, ""
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        handle = (workdir / "lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            handle = None
        else:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
            handle.flush()
    if not _agreed(handle is not None or jax.process_index() != 0):
        raise WorkdirBusy(
            f"workdir {str(workdir)!r} is in use by another run ({holder}); wait for it to "
            "end or give this run another train.workdir"
        )
    return handle


class SignalCatcher:
    """While active, SIGTERM (what Slurm and Kubernetes send before preemption) and SIGINT
    (Ctrl-C) only set :attr:`received`; the loop saves and stops at its next step. A second
    signal acts as it would have without the catcher. Installs nothing outside the main
    thread (signals are delivered there only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> SignalCatcher:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._catch) for sig in self.SIGNALS}
        return self

    def _catch(self, signum, frame) -> None:
        self.received = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def stop_requested(self) -> bool:
        """Whether any process received a signal (every process must call it at the same
        steps, so that all stop at the same one)."""
        if jax.process_count() == 1:
            return self.received is not None
        flags = multihost_utils.process_allgather(np.asarray(self.received is not None))
        return bool(np.any(flags))


class QuietDiskFull(logging.Filter):
    """While active, drops the log records that repeat a full disk's error (Orbax's writer
    threads each log the whole trace); :class:`DiskFull` reports it once, in one line."""

    LOGGERS = ("absl", "asyncio")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return "No space left on device" not in text

    def __enter__(self) -> QuietDiskFull:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


def disk_full(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised from, says the disk is full (an OSError with
    ENOSPC, or TensorStore's RESOURCE_EXHAUSTED with "No space left on device")."""
    for _ in range(20):  # a chain of causes, not a cycle
        if error is None:
            return False
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
