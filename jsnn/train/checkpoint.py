"""Orbax checkpoints of the whole train state in the workdir, each with a checksum; a run
resumes from the newest one that verifies."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jsnn.train.step import TrainState
from jsnn.train.workdir import DiskFull

__all__ = ["Checkpointer", "NonFiniteState", "fingerprint"]


class NonFiniteState(FloatingPointError):
    """A train state whose parameters or optimizer state hold NaN or infinite values: it is
    never saved."""


def fingerprint(items: dict, finite: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The SHA-256 of ``items`` (every leaf's path, dtype, shape and bytes), and the paths of
    the floating leaves under the ``finite`` keys of ``items`` that are not all finite.

    Computed from the arrays themselves, not from the files, so it catches a flipped byte
    wherever Orbax and its compression put it, and it needs no second read of the files.
    """
    digest = hashlib.sha256()
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(items)[0]:
        value = _local_copy(leaf)
        name = jax.tree_util.keystr(path)
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
        checked = path[0].key in finite and np.issubdtype(value.dtype, np.inexact)
        if checked and not np.isfinite(value).all():
            bad.append(name)
    return digest.hexdigest(), bad


def _record_digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _local_copy(leaf) -> np.ndarray:
    """The whole value of ``leaf`` on this process (the train state is replicated, so each
    process holds all of it; a sharded leaf is gathered, which every process must call)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def _all_processes(flag: bool) -> bool:
    """``flag`` held on every process: the processes take the same decision."""
    if jax.process_count() == 1:
        return flag
    return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


class Checkpointer:
    """Saves the train state (and a JSON record) under ``workdir/checkpoints/<step>``, with
    checksums of both in the record.

    Saving is asynchronous; orbax commits a step only once it is fully written, so a run killed
    mid-save resumes from the previous step. A state whose parameters or optimizer state hold
    NaN or infinite values is refused (:class:`NonFiniteState`), and so is a save the disk
    has no room for (:class:`DiskFull`). Every process calls every method (multi-host).
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, record: dict) -> None:
        step = int(state.step)
        if step == self._manager.latest_step():
            return
        # The trained values must be finite; the rest of the model state may use NaN on
        # purpose (a hook's "nothing measured yet").
        checksum, bad = fingerprint(state.checkpoint_items(), finite=("params", "opt"))
        if bad:
            raise NonFiniteState(
                f"the train state at step {step} holds NaN or infinite values in "
                f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; it was not saved"
            )
        # Orbax reports a full disk from its writer threads, each with its own trace; a save
        # that cannot fit is refused before it starts, in one line.
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state.checkpoint_items())) + 2**16
        where = self.directory if self.directory.exists() else self.directory.parent
        free = shutil.disk_usage(where).free
        if not _all_processes(free >= needed):
            raise DiskFull(
                f"checkpoint {step} needs about {needed / 1e6:.1f} MB and "
                f"{self.directory} has {free / 1e6:.1f} MB free"
            )
        items = ocp.args.StandardSave(state.checkpoint_items())
        record = {**record, "checksum": {"state": checksum, "record": _record_digest(record)}}
        self._manager.save(
            step, args=ocp.args.Composite(state=items, record=ocp.args.JsonSave(record))
        )

    def restore(
        self, state: TrainState, accept: Callable[[dict], None] | None = None
    ) -> tuple[TrainState, dict] | None:
        """The newest checkpoint that verifies, restored into the shapes and shardings of
        ``state``, with its record (without the checksum); None if there is none.

        ``accept(record)`` sees each candidate's record before its arrays are read and
        raises to refuse the run (e.g. a changed config); it is not a reason to fall back. A
        step that cannot be read or fails its checksum (a flipped byte, a partial or empty
        directory) is moved to ``workdir/damaged_checkpoints`` with a one-line message, and the
        next older one is tried.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
        for step in sorted(self._manager.all_steps(), reverse=True):
            record, problem = self._read(step, "record", ocp.args.JsonRestore())
            if record is not None:
                record = dict(record)
                if "checksum" not in record:
                    raise ValueError(
                        f"checkpoint {self.directory / str(step)} has no checksum (an older "
                        "workdir) and cannot be verified; move it away to resume from an "
                        "older one or to start afresh"
                    )
                checksum = record.pop("checksum")
                if not isinstance(checksum, dict) or checksum.get("record") != _record_digest(
                    record
                ):
                    record, problem = None, "its record does not match its checksum"
            if _all_processes(record is not None):
                if accept is not None:  # a config check, only once the record is known sound
                    accept(record)
                items, problem = self._read(step, "state", ocp.args.StandardRestore(abstract))
                if items is not None and fingerprint(items)[0] != checksum["state"]:
                    items, problem = None, "its arrays do not match their checksum"
                if _all_processes(items is not None):
                    return state.from_checkpoint_items(items), record
            self._set_aside(step, problem or "another process could not read it")
        return None

    def _read(self, step: int, name: str, args) -> tuple[object, str | None]:
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**{name: args}))
        except Exception as error:  # any failure to read a step is a damaged step
            message = " ".join(str(error).split())[:200]
            return None, f"it cannot be read ({type(error).__name__}: {message})"
        return restored[name], None

    def _set_aside(self, step: int, problem: str) -> None:
        aside = self.directory.parent / "damaged_checkpoints" / str(step)
        if jax.process_index() == 0:
            print(
                f"checkpoint {self.directory / str(step)} is damaged: {problem}; moved to {aside}"
            )
            aside.parent.mkdir(exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            shutil.move(self.directory / str(step), aside)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jsnn checkpoint {step} set aside")
        self._manager.reload()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
