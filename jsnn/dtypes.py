"""The dtype policy of jsnn, in one place; every public function of the core follows it.

- **Compute dtype.** A floating input is computed in ``compute_dtype(x.dtype)``, its dtype
  promoted to float32 at least: bfloat16 and float16 compute in float32, float32 in float32,
  float64 (with ``JAX_ENABLE_X64``) in float64. Membranes, batch statistics and losses take it.
- **Parameters never promote.** Shape parameters of surrogates, the neuron's decay and
  threshold, norm parameters: whatever their dtype (a Python float, float32, or float64 under
  x64), they are cast to the compute dtype of the input they meet. A float32 computation stays
  float32 with a float64 parameter; a float64 one keeps its precision with a float32 one.
- **Outputs and gradients.** Spikes, normalised activations, encoded inputs and surrogate
  derivatives come back in the input's dtype; a gradient with respect to an input has the
  input's dtype (JAX's rule), and a parameter's gradient the parameter's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["cast_parameters", "compute_dtype"]


def compute_dtype(*dtypes) -> jnp.dtype:
    """The dtype inputs of ``dtypes`` are computed in: their promotion, float32 at least."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def cast_parameters(tree: Any, dtype) -> Any:
    """``tree`` (a pytree of parameters: numbers, arrays, a surrogate) with every floating
    leaf, or Python number, cast to ``dtype``; integer arrays are left alone."""

    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)
