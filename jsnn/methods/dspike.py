"""Dspike's temperature search (Li et al., NeurIPS 2021, Algorithm 1) as a training method.

Before every epoch, on that epoch's first training batch: the finite-difference gradient of the
first layer's weights (Eq. 10, step ``eps``), the Dspike surrogate gradients of the same
weights for ``b``, ``b + b_step`` and ``b - b_step`` (one vmapped call over ``b``), and the
``b`` whose gradient has the highest cosine similarity with the FDG becomes the temperature of
every Dspike layer for the epoch. See :mod:`jsnn.methods.fdg` for the math.

The loss is the training loss with the model in training mode: batch norm normalises with the
statistics of each perturbed forward pass on this batch (what the training steps optimise), and
its running statistics are left untouched. The forward passes are deterministic: one fixed batch
and no dropout randomness that differs between them. On a mesh of several devices the
perturbations are split over the devices, each holding the whole batch.

The paper's other two parts, initialisation from a trained ANN twin and Time Inheritance
Training (Sec. 4.4, 5.2), are not specific to Dspike: any run has them (the config's ``init``
section, :func:`jsnn.run.stages`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jsnn import losses
from jsnn._checks import positive_float, positive_int
from jsnn._fields import option
from jsnn.layers import SurrogateVariable
from jsnn.losses import LossFn
from jsnn.methods import fdg
from jsnn.methods.base import Hook, Method
from jsnn.surrogate import Dspike

__all__ = [
    "METHOD",
    "DspikeSearch",
    "searched_loss",
    "searched_path",
    "select_params",
    "set_temperature",
    "temperature",
    "temperature_search",
    "with_temperature",
]


def _is_dspike(leaf) -> bool:
    return isinstance(leaf, Dspike)


def _dict_keys(path) -> tuple:
    return tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))


def searched_path(model: nnx.Module, layer: str | None = None) -> tuple:
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
            f"layer {layer!r} names no parameter of the model; expected a dotted path such "
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


def searched_loss(model: nnx.Module, batch: dict, prefix: tuple, loss: LossFn):
    """``(loss_fn, weights)``: the training ``loss`` of ``model`` (in training mode) on
    ``batch`` as a function ``loss_fn(w, b)`` of the parameters under ``prefix`` and the Dspike
    temperature of every layer; and those parameters' current values. ``model`` is not
    changed (each call of ``loss_fn`` runs a copy)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    weights, put = select_params(params, prefix)

    def loss_fn(w, b):
        copy = nnx.merge(graphdef, put(w), with_temperature(rest, b), copy=True)
        return losses.batch_loss(copy, batch, loss)[0]

    return loss_fn, weights


def temperature(tree: Any) -> jax.Array:
    """The Dspike temperature ``b`` the layers of a model (or of its state) share (ValueError
    if they have none or several different ones)."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)
    temperatures = [
        leaf.b for leaf in jax.tree.leaves(tree, is_leaf=_is_dspike) if _is_dspike(leaf)
    ]
    if not temperatures:
        raise ValueError(
            "the temperature search (method 'dspike') needs a model with Dspike neurons "
            "(model.surrogate 'dspike'), but the model has none"
        )
    values = {float(b) for b in temperatures if not isinstance(b, jax.core.Tracer)}
    if len(values) > 1:
        raise ValueError(
            f"the temperature search shares one Dspike b over all layers, got {sorted(values)}"
        )
    return temperatures[0]


def with_temperature(tree: Any, b) -> Any:
    """``tree`` (a model state) with every Dspike surrogate's temperature set to ``b``, in the
    dtype of the one it replaces."""

    def replace(leaf):
        if not _is_dspike(leaf):
            return leaf
        value = jnp.asarray(b, dtype=jnp.result_type(leaf.b))
        return jax.tree.unflatten(jax.tree.structure(leaf), [value, leaf.width])

    return jax.tree.map(replace, tree, is_leaf=_is_dspike)


def set_temperature(model: nnx.Module, b) -> None:
    """Sets the temperature of every Dspike surrogate of ``model`` to ``b``, in place."""
    nnx.update(model, with_temperature(nnx.state(model, SurrogateVariable), b))


def temperature_search(
    model: nnx.Module,
    loss: LossFn,
    *,
    eps: float = 0.1,
    b_step: float = 0.2,
    layer: str | None = None,
    chunk: int = 16,
    directions: int = 0,
    seed: int = 0,
) -> Hook:
    """An epoch-start hook (:data:`jsnn.methods.base.Hook`) running one step of Algorithm 1 on
    models shaped like ``model``: the FDG of ``layer`` (:func:`searched_path`; default the first
    layer's kernel) with step ``eps``, ``chunk`` perturbed forward passes per vmapped call, and
    with ``directions = k > 0`` the FDG sketched on k random directions (drawn from ``seed`` and
    the epoch) instead of every coordinate; the candidates ``b`` and ``b +- b_step`` of the
    training ``loss``'s surrogate gradient. The chosen ``b`` is set on the model; the hook
    records ``dspike_b``, the candidates' cosines and the search time."""
    prefix = searched_path(model, layer)
    temperature(model)  # fails now, not after the first epoch, without Dspike
    searches = {}  # one compiled search per mesh

    def compile_search(mesh):
        def search(graphdef, params, rest, batch: dict, directions):
            if mesh is not None and mesh.size > 1:  # every device holds the whole batch
                batch = jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P()))
            live = nnx.merge(graphdef, params, rest)
            loss_fn, weights = searched_loss(live, batch, prefix, loss)
            return fdg.search_temperature(
                loss_fn,
                weights,
                temperature(rest),
                step=b_step,
                eps=eps,
                directions=directions,
                chunk_size=chunk,
                mesh=mesh,
            )

        return jax.jit(search, static_argnums=0)

    def hook(model: nnx.Module, epoch: int, batch: dict) -> dict[str, float]:
        start = time.perf_counter()
        sharding = batch["image"].sharding
        mesh = sharding.mesh if isinstance(sharding, NamedSharding) else None
        if mesh not in searches:
            searches[mesh] = compile_search(mesh)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        sketch = None
        if directions:
            size = sum(leaf.size for leaf in select_params(params, prefix)[0])
            key = jax.random.fold_in(jax.random.key(seed), epoch)
            sketch = fdg.random_directions(key, size, directions)
        result = searches[mesh](graphdef, params, rest, batch, sketch)
        set_temperature(model, result["b"])
        found = jax.device_get(result)
        scalars = {"dspike_b": float(found["b"])}
        names = ("", "_up", "_down")
        for name, b, cosine in zip(names, found["candidates"], found["cosines"], strict=True):
            if b > 0:  # b - b_step <= 0 is not a candidate
                scalars[f"cosine_b{name}"] = float(cosine)
        scalars["search_seconds"] = time.perf_counter() - start
        if jax.process_index() == 0:
            print(
                f"epoch {epoch + 1}: Dspike temperature b = {scalars['dspike_b']:.2f} (cosine "
                f"with the FDG {max(found['cosines']):.3f}; {scalars['search_seconds']:.1f} s)"
            )
        return scalars

    return hook


@dataclasses.dataclass(frozen=True)
class DspikeSearch(Method):
    """Dspike neurons whose temperature ``b`` Algorithm 1 re-chooses before every epoch; ``b``
    starts at the surrogate's (``--model.surrogate-options b=1``, the default)."""

    name = "dspike"
    legacy_flags = MappingProxyType(
        {
            "fdg_eps": "eps",
            "temperature_step": "b_step",
            "fdg_layer": "layer",
            "fdg_chunk": "chunk",
            "fdg_directions": "directions",
        }
    )
    settings = MappingProxyType({"model.surrogate": "dspike"})

    eps: float = option(0.1, "step of the finite-difference gradient (Eq. 10)")
    b_step: float = option(0.2, "the candidates are b and b +- b_step")
    layer: str | None = option(
        None, "dotted path of the parameters the FDG perturbs (none: the first layer's kernel)"
    )
    chunk: int = option(16, "perturbed forward passes per vmapped call (memory grows with it)")
    directions: int = option(
        0, "k > 0: sketch the FDG on k random directions (2k passes); 0: the exact FDG"
    )

    def __post_init__(self):
        positive_float("eps", self.eps)
        positive_float("b_step", self.b_step)
        positive_int("chunk", self.chunk)
        if isinstance(self.directions, bool) or not (
            isinstance(self.directions, int) and self.directions >= 0
        ):
            raise ValueError(
                f"directions must be an integer >= 0 (0: the exact FDG), got {self.directions!r}"
            )

    def check(self, config: Any) -> None:
        if config.model.surrogate != "dspike" or not config.model.spiking:
            raise ValueError(
                "method 'dspike' searches the temperature of Dspike neurons: it needs "
                f"model.surrogate='dspike' and model.spiking=True, got "
                f"{config.model.surrogate!r} and {config.model.spiking!r}"
            )

    def epoch_start(self, model: nnx.Module, config: Any) -> Sequence[Hook]:
        loss = self.loss(config) or losses.get(config.train.loss)
        search = temperature_search(
            model,
            loss,
            eps=self.eps,
            b_step=self.b_step,
            layer=self.layer,
            chunk=self.chunk,
            directions=self.directions,
            seed=config.train.seed,
        )
        return (search,)

    def plots(self, workdir: pathlib.Path) -> list[pathlib.Path]:
        """``temperature.png``: ``b`` chosen before each epoch (the paper's Fig. 5) and the
        chosen candidate's cosine similarity with the FDG."""
        from jsnn.train.metrics import plot_scalars

        def best_cosine(record: dict) -> float:
            return max(value for key, value in record.items() if key.startswith("cosine_b"))

        panels = {
            "temperature b": lambda record: record["dspike_b"],
            "cosine similarity with the FDG": best_cosine,
        }
        return [plot_scalars(workdir, panels, name="temperature.png")]


METHOD = DspikeSearch
