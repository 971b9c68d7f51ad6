"""The training loop: one code path for one CPU, one GPU, many devices and many hosts."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import signal
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx

from jsnn import losses
from jsnn.losses import LossFn
from jsnn.train.checkpoint import Checkpointer, NonFiniteState
from jsnn.train.config import TrainConfig
from jsnn.train.mesh import data_mesh, replicate, shard_batch
from jsnn.train.metrics import MetricWriter
from jsnn.train.optim import optimizer
from jsnn.train.step import Gradient, TrainState, eval_step, make_train_step, value_and_grad
from jsnn.train.workdir import (
    RESUMABLE,
    ConfigChanged,
    DiskFull,
    QuietDiskFull,
    SignalCatcher,
    Stopped,
    changed_fields,
    disk_full,
    lock,
)

__all__ = ["Hook", "TrainingDiverged", "evaluate", "fit"]

# A hook acts between epochs: it gets the live model (holding the train state), the epoch (from
# 0) and a training batch sharded like the training steps' (an epoch-start hook the epoch's
# first batch, an epoch-end hook its last); it may set the model's values (not change its
# structure) and returns the scalars it wants recorded, or None. This is how a training method
# acts on a run.
Hook = Callable[[nnx.Module, int, dict], dict[str, float] | None]


class TrainingDiverged(FloatingPointError):
    """The loss, the parameters or the optimizer state became NaN or infinite; the last
    checkpoint holds the last good state."""


def evaluate(state: TrainState, batches, mesh: jax.sharding.Mesh, step_fn) -> dict[str, float]:
    """Test loss, accuracy and per-layer firing rates over all ``batches`` (with ``mask``)."""
    totals: dict = {}
    rates: dict[str, list[float]] = {}
    for local_batch in batches:
        result = jax.device_get(step_fn(state, shard_batch(local_batch, mesh)))
        for name in ("loss_sum", "correct", "count"):
            totals[name] = totals.get(name, 0.0) + float(result[name])
        for layer, rate in result["firing_rates"].items():
            rates.setdefault(layer, []).append(float(rate))
    metrics = {
        "loss": totals["loss_sum"] / totals["count"],
        "accuracy": totals["correct"] / totals["count"],
    }
    metrics.update({f"firing_rate/{layer}": float(np.mean(r)) for layer, r in rates.items()})
    return metrics


def _check_finite(losses: list[float], last_step: int, checkpointer: Checkpointer) -> None:
    """Raises on the first non-finite loss of the steps ending at ``last_step``."""
    for offset, loss in enumerate(losses):
        if not math.isfinite(loss):
            step = last_step - len(losses) + offset + 1
            raise TrainingDiverged(
                f"the training loss became {loss} at step {step}; stopping. "
                + _last_good(checkpointer)
            )


def _last_good(checkpointer: Checkpointer) -> str:
    latest = checkpointer.latest_step()
    where = (
        "No checkpoint was saved"
        if latest is None
        else f"The last good checkpoint is step {latest}"
    )
    return f"{where} (lower lr or set grad_clip)"


def fit(
    config: TrainConfig,
    model: nnx.Module,
    dataset,
    *,
    loss: LossFn | None = None,
    gradient: Gradient = value_and_grad,
    epoch_start: Sequence[Hook] = (),
    epoch_end: Sequence[Hook] = (),
    devices: list | None = None,
    record: dict | None = None,
) -> dict[str, float]:
    """Trains ``model`` (in place) on ``dataset`` as ``config`` says; returns the final test
    metrics.

    The workdir holds ``config.json``, ``metrics.jsonl``, TensorBoard logs and the checkpoints;
    a run started again with the same workdir resumes from its latest checkpoint (saved every
    ``checkpoint_every`` steps and at each epoch end) with no lost epochs. The global batch is
    sharded over ``devices`` (default: all devices of all processes); every process runs this
    same function on its own part of the data.

    ``loss`` (default: the one ``config.loss`` names) is the training loss of the outputs
    ``[B, T, classes]``; the evaluation reports it too. ``gradient`` is how a step
    differentiates it (:data:`jsnn.train.Gradient`; default autodiff). The ``epoch_start``
    hooks run before each epoch (once: not again when a run resumes inside the epoch), the
    ``epoch_end`` hooks after its evaluation; see :data:`Hook`. A start hook is given the
    epoch's first training batch, an end hook its last (the batch the last step trained on).
    ``record`` (default: the trainer section) is the whole config of the run, with the trainer
    section at its top level or under ``train``. Each checkpoint stores it with a checksum; a
    resume restores the newest checkpoint that verifies and only if ``record`` differs from the
    checkpoint's in :data:`jsnn.train.workdir.RESUMABLE` fields alone (and ``epochs`` covers
    the steps already trained), else :class:`ConfigChanged` lists the differences. It is
    written as ``config.json`` once the run is accepted.

    One run at a time holds the workdir (:class:`WorkdirBusy` for a second). SIGTERM or SIGINT
    saves a checkpoint and raises :class:`Stopped`; a state whose parameters or optimizer
    state are not finite is never saved (:class:`TrainingDiverged`); a full disk raises
    :class:`DiskFull`. The fields of ``config`` a resume may change and why:
    :data:`jsnn.train.workdir.RESUMABLE`.
    """
    loss = losses.get(config.loss) if loss is None else loss
    workdir = pathlib.Path(config.workdir)
    held = lock(workdir)
    try:
        with SignalCatcher() as signals, QuietDiskFull():
            return _fit(
                config,
                model,
                dataset,
                loss,
                gradient,
                epoch_start,
                epoch_end,
                devices,
                dataclasses.asdict(config) if record is None else record,
                signals,
            )
    except Exception as error:
        if not disk_full(error):
            raise
        message = " ".join(str(error).split())[:300]
        raise DiskFull(f"the disk of workdir {str(workdir)!r} is full: {message}") from None
    finally:
        if held is not None:
            held.close()


def _fit(
    config: TrainConfig,
    model,
    dataset,
    loss,
    gradient,
    epoch_start,
    epoch_end,
    devices,
    record: dict,
    signals: SignalCatcher,
) -> dict[str, float]:
    workdir = pathlib.Path(config.workdir)
    lead = jax.process_index() == 0
    mesh = data_mesh(devices)
    if config.batch_size % mesh.size:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the number of devices, "
            f"{mesh.size}"
        )
    steps_per_epoch = dataset.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training set ({dataset.num_train})"
        )
    tx = optimizer(config, steps_per_epoch)
    state = TrainState.create(model, tx)
    if config.compute_dtype == "float64":  # a 64-bit run: the state too, not just the inputs
        state = jax.tree.map(_to_float64, state)
    state = replicate(state, mesh)
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    writer = MetricWriter(workdir, enabled=lead, tensorboard=config.tensorboard)
    try:
        accept = functools.partial(_accept, given=record, workdir=config.workdir)
        restored = checkpointer.restore(state, accept)
        trained = 0 if restored is None else int(restored[0].step)
        if config.epochs * steps_per_epoch < trained:
            raise ConfigChanged(
                f"workdir {config.workdir!r} holds a run trained for {trained} steps; epochs "
                f"{config.epochs} ({config.epochs * steps_per_epoch} steps) would end it before "
                "that. Give at least as many epochs as it trained, or a new train.workdir"
            )
        if lead:  # the run is accepted: its config is the workdir's now
            (workdir / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        if restored is not None:
            state = restored[0]
            if lead:
                print(f"resuming {workdir} from step {int(state.step)}")
        writer.drop_after(int(state.step))
        return _train(
            state,
            _Run(config, mesh, tx, steps_per_epoch, checkpointer, writer, record),
            dataset,
            loss,
            gradient,
            epoch_start,
            epoch_end,
            signals,
            model,
        )
    finally:  # checkpoints being written are completed, whatever stopped the run
        checkpointer.close()
        writer.close()


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the epochs of an accepted run share."""

    config: TrainConfig
    mesh: jax.sharding.Mesh
    tx: optax.GradientTransformation
    steps_per_epoch: int
    checkpointer: Checkpointer
    writer: MetricWriter
    record: dict


def _accept(saved: dict, *, given: dict, workdir: str) -> None:
    """Refuses to resume a checkpoint (its record ``saved``) under the run record ``given``
    unless only :data:`RESUMABLE` fields changed."""
    harmless, refused = changed_fields(saved.get("config", {}), given)
    if "config" not in saved:
        refused = {"config": ("not stored", "given")}
    if refused:
        listed = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in refused.items())
        raise ConfigChanged(
            f"workdir {workdir!r} holds a run trained under another config; only "
            f"{', '.join(RESUMABLE)} may change on resume. Differences: {listed}. Start it in "
            "a new train.workdir, or rerun with the old values"
        )
    if harmless and jax.process_index() == 0:
        listed = ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in harmless.items())
        print(f"resuming with changed {listed}")


def _train(
    state: TrainState,
    run: _Run,
    dataset,
    loss: LossFn,
    gradient: Gradient,
    epoch_start: Sequence[Hook],
    epoch_end: Sequence[Hook],
    signals: SignalCatcher,
    model: nnx.Module,
) -> dict[str, float]:
    config, mesh, steps_per_epoch = run.config, run.mesh, run.steps_per_epoch
    checkpointer, writer = run.checkpointer, run.writer
    workdir = pathlib.Path(config.workdir)
    lead = jax.process_index() == 0
    single = jax.process_count() == 1
    step_fn = make_train_step(
        run.tx, loss, platform=mesh.devices.flat[0].platform, gradient=gradient
    )
    eval_fn = jax.jit(functools.partial(eval_step, loss=loss))
    shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    train_data = dataset.train(batch_size=config.batch_size, seed=config.seed, **shard)
    test_data = dataset.test(batch_size=config.batch_size, **shard)
    test_metrics: dict[str, float] = {}

    def batch_at(step: int) -> dict:
        return shard_batch(_cast(train_data[step], config), mesh)

    def run_eval(state):
        return evaluate(state, (_cast(batch, config) for batch in test_data), mesh, eval_fn)

    def save(state, record):
        try:
            checkpointer.save(state, {**record, "config": run.record})
        except NonFiniteState as error:
            raise TrainingDiverged(f"{error}; stopping. {_last_good(checkpointer)}") from None

    def stop(state, step) -> Stopped:
        save(state, {"epoch": step // steps_per_epoch})
        received = signals.received
        name = "a signal to another process" if received is None else signal.Signals(received).name
        if lead:
            print(
                f"stopped by {name} at step {step}: checkpoint saved in {workdir}; run the "
                "same command to resume"
            )
        return Stopped(128 + (signal.SIGTERM if received is None else received))

    for epoch in range(int(state.step) // steps_per_epoch, config.epochs):
        first, last = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch
        if int(state.step) == first and epoch_start:  # a resumed epoch ran them already
            state = _run_hooks(epoch_start, state, epoch, batch_at(first), writer, "epoch_start")
        bar = tqdm.tqdm(
            total=steps_per_epoch,
            initial=int(state.step) - first,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not (lead and config.progress),
            dynamic_ncols=True,
        )
        pending: list[dict] = []
        clock = time.perf_counter()
        for step in range(int(state.step), last):
            batch = batch_at(step)
            state, metrics = step_fn(state, batch)
            pending.append(metrics)
            done = step + 1
            # The epoch's last step is saved after its evaluation and end hooks.
            save_now = done % config.checkpoint_every == 0 and done < last
            stopping = False
            # Every process reaches the same sync points; a single one also stops between them.
            synced = save_now or done % config.log_every == 0 or done == last
            if synced or (single and signals.received is not None):
                # Only a state whose losses were all finite is ever saved.
                fetched = jax.device_get(pending)
                _check_finite([float(m["loss"]) for m in fetched], done, checkpointer)
                scalars = {
                    "loss": float(np.mean([m["loss"] for m in fetched])),
                    "accuracy": float(np.mean([m["accuracy"] for m in fetched])),
                    "samples_per_second": len(fetched)
                    * config.batch_size
                    / (time.perf_counter() - clock),
                }
                writer.write("train", done, scalars)
                bar.set_postfix(
                    loss=f"{scalars['loss']:.4f}",
                    acc=f"{scalars['accuracy']:.3f}",
                    samples_s=f"{scalars['samples_per_second']:,.0f}",
                )
                bar.update(len(fetched))
                pending, clock = [], time.perf_counter()
                stopping = done < last and signals.stop_requested()
            if save_now:
                save(state, {"epoch": epoch})
            if stopping:
                bar.close()
                raise stop(state, done)
        bar.close()
        test_metrics = run_eval(state)
        writer.write("eval", int(state.step), test_metrics)
        if epoch_end:
            state = _run_hooks(epoch_end, state, epoch, batch_at(last - 1), writer, "epoch_end")
        save(state, {"epoch": epoch + 1, "test": test_metrics})
        if lead:
            print(
                f"epoch {epoch + 1}/{config.epochs}: test loss {test_metrics['loss']:.4f}, "
                f"test accuracy {test_metrics['accuracy']:.4f}"
            )
        if epoch + 1 < config.epochs and signals.stop_requested():
            raise stop(state, last)
    if not test_metrics:  # the run had already finished: report its final evaluation
        test_metrics = run_eval(state)
    nnx.update(model, state.params, state.rest)
    return test_metrics


def _cast(batch: dict, config: TrainConfig) -> dict:
    return {**batch, "image": np.asarray(batch["image"]).astype(jnp.dtype(config.compute_dtype))}


def _to_float64(leaf):
    return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def _run_hooks(hooks, state: TrainState, epoch, batch, writer, kind) -> TrainState:
    """Runs ``hooks`` on one live model of ``state``; returns the state they leave. Values the
    hooks set are placed like the values they replace (a train step donates its state, which
    needs one buffer per leaf, sharded as before)."""
    model = state.model()
    for hook in hooks:
        scalars = hook(model, epoch, batch)
        if scalars:
            writer.write(kind, int(state.step), {"epoch": epoch + 1, **scalars})
    changed = state.with_model(model)

    def placed(new, old):
        if new is old:
            return new
        return jax.device_put(jnp.asarray(new, old.dtype), old.sharding, may_alias=False)

    params, rest = jax.tree.map(placed, (changed.params, changed.rest), (state.params, state.rest))
    return state.replace(params=params, rest=rest)
