"""Readouts and losses over the output sequence ``[B, T, classes]`` of a spiking network, by
name for a run's config, and the per-batch metrics the train and eval steps share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import jax
import jax.numpy as jnp
import optax

from jsnn.dtypes import compute_dtype

__all__ = [
    "LOSSES",
    "LossFn",
    "as_sequence",
    "batch_loss",
    "batch_metrics",
    "get",
    "mean_output_cross_entropy",
    "mean_over_time",
    "tet_cross_entropy",
]


def _check(outputs: jax.Array, labels: jax.Array, time_axis: int) -> tuple[jax.Array, jax.Array]:
    """The outputs in their compute dtype (:mod:`jsnn.dtypes`: a loss is float32 at least)
    and the checked labels."""
    outputs = jnp.asarray(outputs)
    if outputs.ndim != 3:
        raise ValueError(f"outputs must be [B, T, classes] (3 axes), got shape {outputs.shape}")
    if time_axis not in (0, 1, -3, -2):
        raise ValueError(f"time_axis must be 0 or 1 for [T, B, C] or [B, T, C], got {time_axis}")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    batch = outputs.shape[1 - time_axis % 3]
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},) to match outputs, got {labels.shape}")
    return outputs.astype(compute_dtype(outputs.dtype)), labels


def mean_over_time(outputs: jax.Array, time_axis: int = 1) -> jax.Array:
    """The readout of Dspike Eq. 3 and CPNG Eq. 5: ``y = (1/T) sum_t c_net[t]``.

    ``outputs`` are the last layer's pre-synaptic outputs ``W x[t]`` (no neuron after it).
    """
    return jnp.mean(outputs, axis=time_axis)


def mean_output_cross_entropy(
    outputs: jax.Array, labels: jax.Array, time_axis: int = 1
) -> jax.Array:
    """Cross-entropy of the time-averaged output (Dspike Eq. 3, CPNG Eq. 5), mean over batch."""
    outputs, labels = _check(outputs, labels, time_axis)
    logits = mean_over_time(outputs, time_axis)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def tet_cross_entropy(outputs: jax.Array, labels: jax.Array, time_axis: int = 1) -> jax.Array:
    """TET loss (Deng et al., ICLR 2022; used with CPNG in its Table 3): the cross-entropy at
    every time step, ``(1/T) sum_t CE(outputs[t], label)``, mean over batch.
    """
    outputs, labels = _check(outputs, labels, time_axis)
    per_step = jnp.moveaxis(outputs, time_axis, 1)
    steps = per_step.shape[1]
    repeated = jnp.broadcast_to(labels[:, None], (labels.shape[0], steps))
    return optax.softmax_cross_entropy_with_integer_labels(per_step, repeated).mean()


LossFn = Callable[[jax.Array, jax.Array], jax.Array]

# The losses a run's config names (``loss``): outputs [B, T, classes] and labels [B] -> scalar.
LOSSES: Mapping[str, LossFn] = MappingProxyType(
    {"mean_ce": mean_output_cross_entropy, "tet": tet_cross_entropy}
)


def get(name: str) -> LossFn:
    """The loss called ``name`` in :data:`LOSSES`."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {name!r}")
    return LOSSES[name]


def as_sequence(outputs: jax.Array) -> jax.Array:
    """A model's outputs as ``[B, T, classes]`` in float32 at least: an ANN twin's ``[B,
    classes]`` becomes a one-step sequence, so every loss applies unchanged; a bfloat16
    model's outputs are cast up so that the loss is computed in float32."""
    outputs = outputs.astype(compute_dtype(outputs.dtype))
    return outputs[:, None] if outputs.ndim == 2 else outputs


def batch_loss(model: Callable, batch: dict, loss: LossFn) -> tuple[jax.Array, jax.Array]:
    """``loss`` of ``model``'s outputs on ``batch`` (``image``, ``label``), and the outputs as
    ``[B, T, classes]``, with the model in whatever mode it is in. A model whose
    ``takes_labels`` is true is called with the labels too (``model(images, labels)``: a
    training forward pass that uses them, such as a supervisory spike); evaluation never
    passes them."""
    if getattr(model, "takes_labels", False):
        outputs = as_sequence(model(batch["image"], batch["label"]))
    else:
        outputs = as_sequence(model(batch["image"]))
    return loss(outputs, batch["label"]), outputs


def batch_metrics(outputs: jax.Array, labels: jax.Array, loss: LossFn, mask: jax.Array) -> dict:
    """Sums over the examples of a batch whose ``mask`` is 1 (padding is 0): ``loss_sum`` (the
    ``loss`` of each example on its own), ``correct`` (the time-averaged output's arg-max is
    the label) and ``count``. The train and the eval steps both report these."""
    per_example = jax.vmap(lambda o, y: loss(o[None], y[None]))(outputs, labels)
    mask = mask.astype(per_example.dtype)
    correct = (mean_over_time(outputs).argmax(-1) == labels).astype(per_example.dtype)
    return {
        "loss_sum": jnp.sum(per_example * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }
