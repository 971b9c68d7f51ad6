"""Readouts and losses over the output sequence ``[B, T, classes]`` of a spiking network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["mean_output_cross_entropy", "mean_over_time", "tet_cross_entropy"]


def _check(outputs: jax.Array, labels: jax.Array, time_axis: int) -> jax.Array:
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
    return labels


def mean_over_time(outputs: jax.Array, time_axis: int = 1) -> jax.Array:
    """The readout of Dspike Eq. 3 and CPNG Eq. 5: ``y = (1/T) sum_t c_net[t]``.

    ``outputs`` are the last layer's pre-synaptic outputs ``W x[t]`` (no neuron after it).
    """
    return jnp.mean(outputs, axis=time_axis)


def mean_output_cross_entropy(
    outputs: jax.Array, labels: jax.Array, time_axis: int = 1
) -> jax.Array:
    """Cross-entropy of the time-averaged output (Dspike Eq. 3, CPNG Eq. 5), mean over batch."""
    labels = _check(outputs, labels, time_axis)
    logits = mean_over_time(outputs, time_axis)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def tet_cross_entropy(outputs: jax.Array, labels: jax.Array, time_axis: int = 1) -> jax.Array:
    """TET loss (Deng et al., ICLR 2022; used with CPNG in its Table 3): the cross-entropy at
    every time step, ``(1/T) sum_t CE(outputs[t], label)``, mean over batch.
    """
    labels = _check(outputs, labels, time_axis)
    per_step = jnp.moveaxis(outputs, time_axis, 1)
    steps = per_step.shape[1]
    repeated = jnp.broadcast_to(labels[:, None], (labels.shape[0], steps))
    return optax.softmax_cross_entropy_with_integer_labels(per_step, repeated).mean()
