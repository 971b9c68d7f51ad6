"""Input encoders: analog inputs ``[B, ...]`` to batch-major sequences ``[B, T, ...]``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jsnn._checks import concrete, floating_array, positive_int

__all__ = ["direct", "poisson"]


def direct(x: jax.Array, num_steps: int) -> jax.Array:
    """Direct (analog) encoding: the input repeated at every step, ``[B, ...] -> [B, T, ...]``.

    The first layer then acts as the encoder (Dspike Sec. 5: the static image feeds the first
    convolution at each of the T steps).
    """
    x = jnp.asarray(x)
    num_steps = positive_int("num_steps", num_steps)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {x.shape}")
    return jnp.broadcast_to(x[:, None], (x.shape[0], num_steps, *x.shape[1:]))


def poisson(key: jax.Array, x: jax.Array, num_steps: int) -> jax.Array:
    """Poisson rate coding: at each step a spike with probability ``x`` (rates in [0, 1]).

    Returns ``[B, T, ...]`` spikes of the dtype of ``x``; the expected count over T steps is
    ``T * x``. Out-of-range rates are rejected when ``x`` is concrete and clipped under ``jit``.
    """
    x = floating_array("x", x)
    num_steps = positive_int("num_steps", num_steps)
    values = concrete(x)
    if values is not None and values.size and not (values.min() >= 0 and values.max() <= 1):
        raise ValueError(
            f"x must hold firing probabilities in [0, 1], got values in "
            f"[{values.min()}, {values.max()}]"
        )
    rates = jnp.clip(direct(x, num_steps), 0.0, 1.0)
    return jax.random.bernoulli(key, rates).astype(x.dtype)
