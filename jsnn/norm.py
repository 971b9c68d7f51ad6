"""Batch normalisation for spiking networks: tdBN and time-folded BatchNorm, as pure functions.

Both normalise each channel with statistics over every other axis: time, batch and space.
tdBN (Zheng et al. 2021, as used by Dspike Eq. 4-5) multiplies the normalised input by
``alpha * v_th``; time-folded BN (DSR supplement C.2: time and batch merged into one batch axis)
is the same with ``alpha * v_th = 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["batch_statistics", "normalize"]


def _reduce_axes(x: jax.Array, feature_axis: int) -> tuple[int, ...]:
    if not -x.ndim <= feature_axis < x.ndim:
        raise ValueError(f"feature_axis={feature_axis} does not exist for x of shape {x.shape}")
    feature_axis %= x.ndim
    return tuple(axis for axis in range(x.ndim) if axis != feature_axis)


def batch_statistics(x: jax.Array, feature_axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance of ``x`` over all axes but ``feature_axis``.

    These are E[C] and VAR(C) of Dspike Eq. 4, taken over time, batch and space together.
    Under ``jit`` with the batch sharded over devices they are global statistics.
    """
    axes = _reduce_axes(x, feature_axis)
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)
    return mean, var


def normalize(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    *,
    gamma: jax.Array,
    beta: jax.Array,
    scale: float = 1.0,
    epsilon: float = 1e-5,
    feature_axis: int = -1,
) -> jax.Array:
    """``gamma * scale * (x - mean) / sqrt(var + epsilon) + beta`` per channel.

    Dspike Eq. 4 (normalise, with ``scale = alpha * v_th`` for tdBN) followed by Eq. 5 (affine).
    ``mean``, ``var``, ``gamma`` and ``beta`` are vectors over the channel axis ``feature_axis``.
    """
    axes = _reduce_axes(x, feature_axis)

    def per_channel(v):
        return jnp.expand_dims(v, axes)

    normalized = scale * (x - per_channel(mean)) * jax.lax.rsqrt(per_channel(var) + epsilon)
    return per_channel(gamma) * normalized + per_channel(beta)
