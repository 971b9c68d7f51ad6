"""Dspike's temperature search (Li et al., NeurIPS 2021, Algorithm 1) as an epoch-start hook.

Before every epoch, on that epoch's first training batch: the finite-difference gradient of the
first layer's weights (Eq. 10, step ``fdg_eps``), the Dspike surrogate gradients of the same
weights for ``b``, ``b + temperature_step`` and ``b - temperature_step`` (one vmapped call over
``b``), and the ``b`` whose gradient has the highest cosine similarity with the FDG becomes the
temperature of every Dspike layer for the epoch. See :mod:`jsnn.methods.fdg` for the math.

The loss is the training loss with the model in training mode: batch norm normalises with the
statistics of each perturbed forward pass on this batch (what the training steps optimise), and
its running statistics are left untouched. The forward passes are deterministic: one fixed batch
and no dropout randomness that differs between them. On a mesh of several devices the
perturbations are split over the devices, each holding the whole batch.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jsnn.methods import fdg
from jsnn.models import Classifier
from jsnn.surrogate import Dspike
from jsnn.train.config import Config
from jsnn.train.step import TrainState, batch_loss

__all__ = [
    "searched_loss",
    "searched_path",
    "select_params",
    "temperature",
    "temperature_search_hook",
    "with_temperature",
]


def _is_dspike(leaf) -> bool:
    return isinstance(leaf, Dspike)


def _dict_keys(path) -> tuple:
    return tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))


def searched_path(model: Classifier, layer: str | None = None) -> tuple:
    """The path of the parameters the search differentiates: ``layer`` as dotted names
    (``"stem.0.conv.kernel"``, or a module's path for all its parameters), by default the
    kernel of ``model.input_layer()``, the paper's "first layer"."""
    params = nnx.state(model, nnx.Param)
    paths = [_dict_keys(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    if layer is None:
        target = model.input_layer()
        prefix = next(
            (*path, "kernel") for path, module in nnx.iter_modules(model) if module is target
        )
    else:
        prefix = tuple(int(key) if key.isdigit() else key for key in layer.split("."))
    if not any(path[: len(prefix)] == prefix for path in paths):
        examples = ", ".join(".".join(map(str, path)) for path in paths[:4])
        raise ValueError(
            f"fdg_layer {layer!r} names no parameter of the model; expected a dotted path such "
            f"as one of {examples}, ..."
        )
    return prefix


def select_params(params: nnx.State, prefix: tuple):
    """The leaves of ``params`` under ``prefix`` and a function putting new ones in their place."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [leaf for _, leaf in leaves_with_paths]
    chosen = [
        i
        for i, (path, _) in enumerate(leaves_with_paths)
        if _dict_keys(path)[: len(prefix)] == prefix
    ]

    def put(new_leaves):
        merged = list(leaves)
        for i, leaf in zip(chosen, new_leaves, strict=True):
            merged[i] = leaf
        return treedef.unflatten(merged)

    return [leaves[i] for i in chosen], put


def searched_loss(state: TrainState, batch: dict, prefix: tuple, loss: str):
    """``(loss_fn, weights)``: the training loss ``loss`` on ``batch`` as a function
    ``loss_fn(w, b)`` of the parameters under ``prefix`` and the Dspike temperature of every
    layer, with the model of ``state`` in training mode; and those parameters' current values."""
    weights, put = select_params(state.params, prefix)

    def loss_fn(w, b):
        model = nnx.merge(state.graphdef, put(w), with_temperature(state.rest, b))
        return batch_loss(model, batch, loss)[0]

    return loss_fn, weights


def temperature(rest: nnx.State) -> jax.Array:
    """The Dspike temperature ``b`` the model's layers share (ValueError if they have none or
    several different ones)."""
    temperatures = [
        leaf.b for leaf in jax.tree.leaves(rest, is_leaf=_is_dspike) if _is_dspike(leaf)
    ]
    if not temperatures:
        raise ValueError(
            "the temperature search (method='dspike') needs a model with Dspike neurons "
            "(surrogate='dspike'), but the model has none"
        )
    values = {float(b) for b in temperatures if not isinstance(b, jax.core.Tracer)}
    if len(values) > 1:
        raise ValueError(
            f"the temperature search shares one Dspike b over all layers, got {sorted(values)}"
        )
    return temperatures[0]


def with_temperature(rest: nnx.State, b) -> nnx.State:
    """``rest`` with every Dspike surrogate's temperature set to ``b`` (each layer its own copy
    with the placement of the old value, so a donating train step can take them)."""

    def replace(leaf):
        if not _is_dspike(leaf):
            return leaf
        value = jnp.asarray(b, dtype=jnp.result_type(leaf.b))
        if isinstance(leaf.b, jax.Array) and not isinstance(leaf.b, jax.core.Tracer):
            value = jax.device_put(value, leaf.b.sharding, may_alias=False)
        return jax.tree.unflatten(jax.tree.structure(leaf), [value, leaf.width])

    return jax.tree.map(replace, rest, is_leaf=_is_dspike)


def temperature_search_hook(config: Config, model: Classifier):
    """An epoch-start :data:`jsnn.train.Hook` running one step of Algorithm 1 as ``config``
    says (``fdg_eps``, ``temperature_step``, ``fdg_directions``, ``fdg_chunk``,
    ``fdg_layer``); it records ``dspike_b``, the candidates' cosines and the search time."""
    prefix = searched_path(model, config.fdg_layer)
    temperature(nnx.state(model))  # fails now, not after the first epoch, without Dspike
    searches = {}  # one compiled search per mesh

    def compile_search(mesh):
        def search(state: TrainState, batch: dict, directions):
            if mesh is not None and mesh.size > 1:  # every device holds the whole batch
                batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P()))
            loss, weights = searched_loss(state, batch, prefix, config.loss)
            return fdg.search_temperature(
                loss,
                weights,
                temperature(state.rest),
                step=config.temperature_step,
                eps=config.fdg_eps,
                directions=directions,
                chunk_size=config.fdg_chunk,
                mesh=mesh,
            )

        return jax.jit(search)

    def hook(state: TrainState, epoch: int, batch: dict) -> tuple[TrainState, dict[str, float]]:
        start = time.perf_counter()
        sharding = batch["image"].sharding
        mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
        if mesh not in searches:
            searches[mesh] = compile_search(mesh)
        directions = None
        if config.fdg_directions:
            size = sum(leaf.size for leaf in select_params(state.params, prefix)[0])
            key = jax.random.fold_in(jax.random.key(config.seed), epoch)
            directions = fdg.random_directions(key, size, config.fdg_directions)
        result = searches[mesh](state, batch, directions)
        state = state.replace(rest=with_temperature(state.rest, result["b"]))
        found = jax.device_get(result)
        scalars = {"dspike_b": float(found["b"])}
        names = ("", "_up", "_down")
        for name, b, cosine in zip(names, found["candidates"], found["cosines"], strict=True):
            if b > 0:  # b - step <= 0 is not a candidate
                scalars[f"cosine_b{name}"] = float(cosine)
        scalars["search_seconds"] = time.perf_counter() - start
        if jax.process_index() == 0:
            print(
                f"epoch {epoch + 1}: Dspike temperature b = {scalars['dspike_b']:.2f} (cosine "
                f"with the FDG {max(found['cosines']):.3f}; {scalars['search_seconds']:.1f} s)"
            )
        return state, scalars

    return hook
