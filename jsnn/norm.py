"""Batch normalisation for spiking networks: tdBN and time-folded BatchNorm, as pure functions.

Both normalise each channel with statistics over every other axis: time, batch and space.
tdBN (Zheng et al. 2021, as used by Dspike Eq. 4-5) multiplies the normalised input by
``alpha * v_th``; time-folded BN (DSR supplement C.2: time and batch merged into one batch axis)
is the same with ``alpha * v_th = 1``.

Dtypes follow :mod:`jsnn.dtypes`: both compute in float32 at least (with bfloat16 activations
the statistics are float32), the parameters are cast to that compute dtype, and the normalised
output comes back in the input's dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jsnn.dtypes import cast_parameters, compute_dtype

__all__ = ["batch_statistics", "normalize"]


def _reduce_axes(x: jax.Array, feature_axis: int) -> tuple[int, ...]:
    if not -x.ndim <= feature_axis < x.ndim:
        raise ValueError(f"feature_axis={feature_axis} does not exist for x of shape {x.shape}")
    feature_axis %= x.ndim
    return tuple(axis for axis in range(x.ndim) if axis != feature_axis)


def batch_statistics(x: jax.Array, feature_axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and (biased) variance of ``x`` over all axes but ``feature_axis``.

    These are E[C] and VAR(C) of Dspike Eq. 4, taken over time, batch and space together.
    Under ``jit`` with the batch sharded over devices they are global statistics. Computed in
    float32 at least (and returned so) whatever the dtype of ``x``; the backward pass keeps
    only ``x`` (no centred copy of it).
    """
    return _moments(x, _reduce_axes(x, feature_axis))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _moments(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    x = x.astype(compute_dtype(x.dtype))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)
    return mean, var


@_moments.defjvp
def _moments_jvp(axes, primals, tangents):
    # d var = 2 E[(x - E[x]) dx], written 2 (E[x dx] - E[x] E[dx]) so that the only
    # full-size value the backward pass needs is x itself.
    (x,), (dx,) = primals, tangents
    mean, var = _moments(x, axes)
    dtype = mean.dtype
    x, dx = x.astype(dtype), dx.astype(dtype)
    dmean = jnp.mean(dx, axis=axes)
    dvar = 2 * (jnp.mean(x * dx, axis=axes) - mean * dmean)
    return (mean, var), (dmean, dvar)


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
    Computed in the compute dtype of ``x`` (float32 at least), with every parameter cast to
    it; the result has the dtype of ``x``.
    """
    axes = _reduce_axes(x, feature_axis)
    dtype = compute_dtype(x.dtype)
    mean, var, gamma, beta, scale, epsilon = cast_parameters(
        (mean, var, gamma, beta, scale, epsilon), dtype
    )
    # One multiply-add per element, x * a + b, with the per-channel a and b: the backward pass
    # then keeps only x (and vectors), not the centred or normalised copies.
    a = gamma * scale * jax.lax.rsqrt(var + epsilon)
    b = beta - mean * a
    y = x.astype(dtype) * jnp.expand_dims(a, axes)
    return (y + jnp.expand_dims(b, axes)).astype(x.dtype)
