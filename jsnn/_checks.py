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


def floating_array(name: str, value) -> jax.Array:
    """``value`` as an array; TypeError naming ``name`` unless its dtype is floating point."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array
