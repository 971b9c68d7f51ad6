"""Input checks shared by the core: they run at trace time on whatever values are concrete."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def concrete(value) -> np.ndarray | None:
    """The value as a NumPy array, or None when it is traced (known only at run time)."""
    # Checked first: a failed conversion makes JAX describe the whole trace so far, which is
    # slow in deep models.
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value)):
        return None
    return np.asarray(value)


def positive_int(name: str, value) -> int:
    """``value`` as an int; ValueError naming ``name`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(name: str, value) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def floating_array(name: str, value) -> jax.Array:
    """``value`` as an array; TypeError naming ``name`` unless its dtype is floating point."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array
