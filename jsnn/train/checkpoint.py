"""Orbax checkpoints of the whole train state in the workdir; a run resumes from the latest."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from jsnn.train.step import TrainState

__all__ = ["Checkpointer"]


class Checkpointer:
    """Saves the train state (and a JSON record) under ``workdir/checkpoints/<step>``.

    Saving is asynchronous; orbax commits a step only once it is fully written, so a run killed
    mid-save resumes from the previous step. Every process calls every method (multi-host).
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self._manager = ocp.CheckpointManager(directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: TrainState, record: dict) -> None:
        step = int(state.step)
        if step == self._manager.latest_step():
            return
        items = ocp.args.StandardSave(state.checkpoint_items())
        self._manager.save(
            step, args=ocp.args.Composite(state=items, record=ocp.args.JsonSave(record))
        )

    def restore(self, state: TrainState) -> tuple[TrainState, dict] | None:
        """The latest checkpoint restored into the shapes and shardings of ``state``."""
        step = self._manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.checkpoint_items())
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
            ),
        )
        return state.from_checkpoint_items(restored.state), dict(restored.record)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
