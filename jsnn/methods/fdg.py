"""Finite-difference gradients and Dspike's temperature search (Li et al., NeurIPS 2021).

The loss of a spiking network is piecewise constant in its weights, so its true gradient is 0
almost everywhere. Dspike measures instead how the loss changes over a step ``eps`` (Eq. 10,
the finite-difference gradient, FDG), and before every epoch picks the temperature ``b`` of the
Dspike surrogate whose gradient points most nearly along the FDG (Sec. 4.3, Algorithm 1).

Algorithm 1 is here in its parts: :func:`candidates` (``b``, ``b + step``, ``b - step``),
:func:`candidate_gradients` (their surrogate gradients, one ``vmap``), the FDG or its sketch
(:func:`finite_difference_gradient`, :func:`directional_differences`) and :func:`choose` (the
most similar candidate); :func:`search_temperature` composes them, and benchmarks compose the
same parts to decide at many temperatures or time them apart.
:func:`finite_difference_value_and_grad` is the FDG as a trainer's gradient
(:data:`jsnn.train.Gradient`), for training with it (Sec. 4.2, Table 1).

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
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jsnn._checks import positive_float, positive_int

__all__ = [
    "candidate_gradients",
    "candidates",
    "choose",
    "cosine_similarity",
    "directional_differences",
    "finite_difference_gradient",
    "finite_difference_value_and_grad",
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

    It costs ``2 * (number of weights)`` forward passes, ``chunk_size`` per vmapped call. The
    result has the dtype of ``w`` whatever the loss's (:mod:`jsnn.dtypes`).
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
    return unravel(differences.astype(flat.dtype))  # a gradient has its weights' dtype


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


def finite_difference_value_and_grad(
    *,
    eps: float = 0.1,
    chunk_size: int = 64,
    select=None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable:
    """The FDG as a trainer's gradient (:data:`jsnn.train.Gradient`): a function ``(f, params)
    -> ((loss, aux), grads)`` for ``f(params) -> (loss, aux)``, like
    ``jax.value_and_grad(f, has_aux=True)(params)`` but with the gradient of the parameters
    that ``select`` picks replaced by their FDG (Eq. 10, step ``eps``, of ``f``'s loss).

    ``select`` is an NNX filter over the paths of ``params`` (an ``nnx.State``), e.g. a
    predicate ``(path, value) -> bool``; ``None`` selects every parameter, and then ``f`` is
    not differentiated at all. The other parameters get their gradient by autodiff. Each
    selected array is perturbed on its own, the others held fixed, so the ``vmap`` over its
    perturbations leaves the layers before it unbatched: the 2 passes per weight of a last FC
    layer cost little more than the FC itself. ``chunk_size`` and ``mesh`` are those of
    :func:`finite_difference_gradient`.
    """
    eps = positive_float("eps", eps)
    chunk_size = positive_int("chunk_size", chunk_size)

    def gradient(f: Callable, params):
        if select is None:
            (value, aux), grads = f(params), None
            chosen, others = params, None
        else:
            (value, aux), grads = jax.value_and_grad(f, has_aux=True)(params)
            chosen, others = nnx.split_state(params, select, ...)
            if not jax.tree.leaves(chosen):
                raise ValueError(f"select {select!r} matches no parameter")
        leaves, treedef = jax.tree.flatten(chosen)

        def loss_of_leaf(index: int) -> Callable:
            def loss(w):
                tree = treedef.unflatten([w if i == index else x for i, x in enumerate(leaves)])
                return f(tree if others is None else nnx.merge_state(tree, others))[0]

            return loss

        differences = treedef.unflatten(
            [
                finite_difference_gradient(
                    loss_of_leaf(i), leaf, eps=eps, chunk_size=chunk_size, mesh=mesh
                )
                for i, leaf in enumerate(leaves)
            ]
        )
        if grads is None:
            return (value, aux), differences
        _, exact = nnx.split_state(grads, select, ...)
        return (value, aux), nnx.merge_state(differences, exact)

    return gradient


def candidates(b: jax.Array | float, step: float) -> jax.Array:
    """The temperatures Algorithm 1 compares: ``[b, b + step, b - step]`` on a new last axis
    (``b`` a scalar or an array of temperatures, each decided on its own), current first."""
    step = positive_float("step", step)
    b = jnp.asarray(b)
    b = b.astype(jnp.result_type(b.dtype, float))  # an integer b counts as a float
    return jnp.stack([b, b + step, b - step], axis=-1)


def candidate_gradients(loss: Callable, w, temperatures: jax.Array):
    """``jax.grad(loss)(w, b)`` for every ``b`` of ``temperatures`` (any shape, e.g. the
    ``[3]`` of :func:`candidates`), in one ``vmap`` over ``b``: the surrogate gradients of the
    searched weights ``w``, each leaf shaped ``[*temperatures.shape, *leaf.shape]``."""
    temperatures = jnp.asarray(temperatures)
    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0))(w, temperatures.reshape(-1))
    return jax.tree.map(lambda g: g.reshape(*temperatures.shape, *g.shape[1:]), grads)


def choose(
    temperatures: jax.Array,
    gradients,
    reference,
    directions: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Algorithm 1's decision: of the candidates on the last axis of ``temperatures`` (as
    :func:`candidates` orders them), the one whose surrogate gradient (``gradients``, from
    :func:`candidate_gradients`) has the highest cosine similarity with ``reference``, the FDG
    of the same weights (shaped like them). With ``directions`` ``[k, size]``, ``reference`` is
    the FDG's sketch ``[k]`` (:func:`directional_differences`) and each gradient is sketched on
    the same directions before the cosine.

    Ties go to the earliest candidate (the current ``b``: it is kept unless another is
    strictly better), and a candidate ``<= 0`` is never chosen (its cosine is ``-inf``):
    ``b - step`` only while it stays positive. Returns ``{"b", "candidates", "cosines"}``,
    ``b`` shaped like ``temperatures`` without its last axis.
    """
    temperatures = jnp.asarray(temperatures)
    lead = temperatures.shape
    leaves = jax.tree.leaves(gradients)
    if not lead or any(leaf.shape[: len(lead)] != lead for leaf in leaves):
        raise ValueError(
            f"gradients must have the candidates' shape {lead} as leading axes (from "
            f"candidate_gradients), got {[leaf.shape for leaf in leaves]}"
        )
    # Each candidate's gradient as one vector, in ravel_pytree order.
    flat = jnp.concatenate([leaf.reshape(*lead, -1) for leaf in leaves], axis=-1)
    if directions is None:
        reference = ravel_pytree(reference)[0]
    else:
        flat = flat @ directions.T
        reference = jnp.asarray(reference)
    if reference.shape != flat.shape[-1:]:
        raise ValueError(
            f"reference must have {flat.shape[-1]} elements (the FDG of the searched weights, or "
            f"its sketch on the directions), got shape {reference.shape}"
        )
    cosine = jax.vmap(cosine_similarity, in_axes=(0, None))
    cosines = cosine(flat.reshape(-1, flat.shape[-1]), reference).reshape(lead)
    cosines = jnp.where(temperatures > 0, cosines, -jnp.inf)
    best = jnp.argmax(cosines, axis=-1)  # the first of equal maxima
    b = jnp.take_along_axis(temperatures, best[..., None], axis=-1)[..., 0]
    return {"b": b, "candidates": temperatures, "cosines": cosines}


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

    That is :func:`candidates`, :func:`candidate_gradients`, the FDG and :func:`choose`.
    Returns ``{"b", "candidates", "cosines"}``, the candidates in the order above.
    """
    b = jnp.asarray(b, dtype=ravel_pytree(w)[0].dtype)
    temperatures = candidates(b, step)
    gradients = candidate_gradients(loss, w, temperatures)
    options = {"eps": eps, "chunk_size": chunk_size, "mesh": mesh}
    if directions is None:
        reference = finite_difference_gradient(lambda v: loss(v, b), w, **options)
    else:
        reference = directional_differences(lambda v: loss(v, b), w, directions, **options)
    return choose(temperatures, gradients, reference, directions)
