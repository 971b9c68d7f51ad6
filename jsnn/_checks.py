"""Input checks shared by the core: they run at trace time on whatever values are concrete."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def concrete(value) -> np.ndarray | None:
    """The value as a NumPy array, or None when it is traced (known only at run time)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def floating_array(name: str, value) -> jax.Array:
    """``value`` as an array; TypeError naming ``name`` unless its dtype is floating point."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array
