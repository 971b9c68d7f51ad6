"""Finite-difference gradients and Dspike's temperature search (Li et al., NeurIPS 2021).

The loss of a spiking network is piecewise constant in its weights, so its true gradient is 0
almost everywhere. Dspike measures instead how the loss changes over a step ``eps`` (Eq. 10,
the finite-difference gradient, FDG), and before every epoch picks the temperature ``b`` of the
Dspike surrogate whose gradient points most nearly along the FDG (Sec. 4.3, Algorithm 1).

Everything here is a pure function of a loss ``w -> L(w)`` (a closure over one fixed batch and
the rest of the model) and is jitted by its caller. The perturbed forward passes run as
``vmap``-ed chunks of ``chunk_size`` perturbations inside a ``lax.map``, so memory grows with
the chunk, not with the number of weights; given a ``mesh``, each chunk is sharded over its
axis, so every device runs its share of the passes (the batch is then replicated).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jsnn._checks import positive_float, positive_int

__all__ = [
    "cosine_similarity",
    "directional_differences",
    "finite_difference_gradient",
    "random_directions",
    "search_temperature",
]


def cosine_similarity(a, b) -> jax.Array:
    """``a . b / (|a| |b|)`` over all leaves of two pytrees of the same structure (Dspike
    Sec. 4.2, Experiment I); 0 where either is the zero vector (no direction to compare)."""
    a_leaves, b_leaves = jax.tree.leaves(a), jax.tree.leaves(b)
    dot = sum(jnp.vdot(x, y) for x, y in zip(a_leaves, b_leaves, strict=True))
    norms = jnp.sqrt(sum(jnp.vdot(x, x) for x in a_leaves) * sum(jnp.vdot(y, y) for y in b_leaves))
    return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1), 0.0)


def _central_differences(
    loss: Callable[[jax.Array], jax.Array],
    flat: jax.Array,
    direction: Callable[[jax.Array], jax.Array],
    count: int,
    *,
    eps: float,
    chunk_size: int,
    mesh: jax.sharding.Mesh | None,
) -> jax.Array:
    """``[(L(w + eps d_k) - L(w - eps d_k)) / (2 eps) for k < count]``, ``w`` the flat vector
    ``flat`` and ``d_k = direction(k)``."""
    eps = positive_float("eps", eps)
    devices = 1 if mesh is None else mesh.size
    chunk = min(positive_int("chunk_size", chunk_size), count)
    chunk = -(-chunk // devices) * devices  # the same number of perturbations on every device
    num_chunks = -(-count // chunk)
    indices = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)

    def difference(k):
        d = direction(jnp.minimum(k, count - 1)).astype(flat.dtype)  # padding repeats the last
        return (loss(flat + eps * d) - loss(flat - eps * d)) / (2 * eps)

    def run_chunk(ks):
        if mesh is not None:
            ks = jax.lax.with_sharding_constraint(ks, NamedSharding(mesh, P(mesh.axis_names)))
        return jax.vmap(difference)(ks)

    return jax.lax.map(run_chunk, indices).reshape(-1)[:count]


def finite_difference_gradient(
    loss: Callable,
    w,
    *,
    eps: float = 0.1,
    chunk_size: int = 64,
    mesh: jax.sharding.Mesh | None = None,
):
    """The finite-difference gradient of Dspike Eq. 10, shaped like ``w`` (an array or a pytree
    of them): the element for weight ``i`` is ``(L(w + eps e_i) - L(w - eps e_i)) / (2 eps)``,
    ``e_i`` the i-th standard basis vector.

    It costs ``2 * (number of weights)`` forward passes, ``chunk_size`` per vmapped call.
    """
    flat, unravel = ravel_pytree(w)

    def basis(i):
        return jax.nn.one_hot(i, flat.size, dtype=flat.dtype)

    differences = _central_differences(
        lambda v: loss(unravel(v)),
        flat,
        basis,
        flat.size,
        eps=eps,
        chunk_size=chunk_size,
        mesh=mesh,
    )
    return unravel(differences)


def random_directions(key: jax.Array, size: int, count: int) -> jax.Array:
    """``count`` random orthonormal directions ``[count, size]`` in the space of ``size``
    weights (the Q of a Gaussian matrix's QR; needs ``count <= size``)."""
    size = positive_int("size", size)
    count = positive_int("count", count)
    if count > size:
        raise ValueError(f"count must be at most the number of weights {size}, got {count}")
    q, _ = jnp.linalg.qr(jax.random.normal(key, (size, count)))
    return q.T


def directional_differences(
    loss: Callable,
    w,
    directions: jax.Array,
    *,
    eps: float = 0.1,
    chunk_size: int = 64,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """``[(L(w + eps d_k) - L(w - eps d_k)) / (2 eps)]`` for the unit ``directions``
    ``[k, size]`` in the flattened weights of ``w`` (``jax.flatten_util.ravel_pytree`` order):
    the FDG sketched onto k directions at 2k forward passes, an estimator the paper does not
    have. With orthonormal ``directions`` the cosine of two sketches estimates the cosine of
    the full vectors (random projections keep angles), so ``cosine_similarity(differences,
    directions @ ravel(g))`` estimates ``cosine_similarity(FDG, g)``; with all the basis
    vectors as directions it is the FDG itself.
    """
    flat, unravel = ravel_pytree(w)
    if directions.ndim != 2 or directions.shape[1] != flat.size:
        raise ValueError(
            f"directions must have shape [k, {flat.size}] (one row per direction over the "
            f"{flat.size} weights), got {directions.shape}"
        )
    return _central_differences(
        lambda v: loss(unravel(v)),
        flat,
        lambda k: directions[k],
        directions.shape[0],
        eps=eps,
        chunk_size=chunk_size,
        mesh=mesh,
    )


def search_temperature(
    loss: Callable,
    w,
    b: jax.Array | float,
    *,
    step: float = 0.2,
    eps: float = 0.1,
    directions: jax.Array | None = None,
    chunk_size: int = 64,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, jax.Array]:
    """One temperature update of Dspike's Algorithm 1.

    ``loss(w, b)`` is the training loss on one batch as a function of the searched weights
    ``w`` (the first layer's; an array or a pytree) and the Dspike temperature of every layer;
    its value does not depend on ``b``, only its gradient does. The FDG of ``w`` (Eq. 10, step
    ``eps``) is compared by cosine similarity with the surrogate gradients for ``b`` in
    ``{b, b + step, b - step}``, computed in one ``vmap`` over ``b``; the most similar becomes
    the new temperature (the current one on ties; ``b - step`` only while it stays > 0). With
    ``directions`` (see :func:`random_directions`) both are compared on the sketch of
    :func:`directional_differences` instead: 2k passes rather than two per weight.

    Returns ``{"b", "candidates", "cosines"}``, the candidates in the order above.
    """
    step = positive_float("step", step)
    flat, unravel = ravel_pytree(w)
    b = jnp.asarray(b, dtype=flat.dtype)

    def flat_loss(v, temperature):
        return loss(unravel(v), temperature)

    options = {"eps": eps, "chunk_size": chunk_size, "mesh": mesh}
    candidates = jnp.stack([b, b + step, b - step])
    gradients = jax.vmap(jax.grad(flat_loss), in_axes=(None, 0))(flat, candidates)
    if directions is None:
        reference = finite_difference_gradient(lambda v: flat_loss(v, b), flat, **options)
    else:
        reference = directional_differences(lambda v: flat_loss(v, b), flat, directions, **options)
        gradients = gradients @ directions.T
    cosines = jax.vmap(cosine_similarity, in_axes=(0, None))(gradients, reference)
    cosines = jnp.where(candidates > 0, cosines, -jnp.inf)
    return {"b": candidates[jnp.argmax(cosines)], "candidates": candidates, "cosines": cosines}
