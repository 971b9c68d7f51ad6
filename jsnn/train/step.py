"""The train state and the pure, jitted train and eval steps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jsnn import losses
from jsnn.losses import LossFn

__all__ = [
    "Gradient",
    "TrainState",
    "compiler_options",
    "eval_step",
    "make_train_step",
    "train_step",
    "value_and_grad",
]

# How a step differentiates: ``gradient(f, params) -> ((loss, aux), grads)`` for a function
# ``f(params) -> (loss, aux)``, as ``jax.value_and_grad(f, has_aux=True)(params)`` does. The
# default is the surrogate gradient by autodiff; the FDG study plugs in finite differences.
Gradient = Callable[[Callable[[nnx.State], tuple[jax.Array, Any]], nnx.State], tuple]


@flax.struct.dataclass
class TrainState:
    """Everything a run changes, as one pytree: parameters, the rest of the model state (BN
    statistics, surrogate shape parameters, neuron constants, RNG), optimizer state, step."""

    graphdef: Any = flax.struct.field(pytree_node=False)
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    step: jax.Array

    @classmethod
    def create(cls, model: nnx.Module, tx: optax.GradientTransformation) -> TrainState:
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return cls(graphdef, params, rest, tx.init(params), jnp.zeros((), jnp.int32))

    def model(self) -> nnx.Module:
        """A model holding this state in fresh variables: setting its values or running it in
        training mode leaves this state as it is."""
        return nnx.merge(self.graphdef, self.params, self.rest, copy=True)

    def with_model(self, model: nnx.Module) -> TrainState:
        """This state with the values of ``model`` (e.g. after a method's hook changed them);
        ValueError if its variables differ from this state's. The state keeps its own graph
        and so its modes: a hook that put the model in eval mode (``model.eval()``) to
        evaluate it leaves the run in training mode."""
        _, params, rest = nnx.split(model, nnx.Param, ...)
        if jax.tree.structure((params, rest)) != jax.tree.structure((self.params, self.rest)):
            raise ValueError(
                "the model's structure changed (a hook may set values, not add or remove "
                "variables or modules)"
            )
        return self.replace(params=params, rest=rest)

    def checkpoint_items(self) -> dict:
        """The arrays a checkpoint holds (the graphdef is rebuilt from the config)."""
        return {"params": self.params, "rest": self.rest, "opt": self.opt_state, "step": self.step}

    def from_checkpoint_items(self, items: dict) -> TrainState:
        return self.replace(
            params=items["params"], rest=items["rest"], opt_state=items["opt"], step=items["step"]
        )


def value_and_grad(f: Callable, params: nnx.State) -> tuple:
    """The default :data:`Gradient`: autodiff, through the surrogates' custom derivatives."""
    return jax.value_and_grad(f, has_aux=True)(params)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    tx: optax.GradientTransformation,
    loss: LossFn,
    gradient: Gradient = value_and_grad,
) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``image``, ``label``) with the gradient of ``loss``
    that ``gradient`` computes; returns the new state and the batch's loss and accuracy.
    Under ``jit`` with the batch sharded over a mesh, BN statistics and gradients are global
    (the compiler inserts the all-reduces)."""

    def loss_of(params):
        model = nnx.merge(state.graphdef, params, state.rest, copy=True)
        value, outputs = losses.batch_loss(model, batch, loss)
        _, _, rest = nnx.split(model, nnx.Param, ...)  # BN statistics after this batch
        return value, (outputs, rest)

    (value, (outputs, rest)), grads = gradient(loss_of, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    counts = losses.batch_metrics(outputs, batch["label"], loss, jnp.ones_like(batch["label"]))
    metrics = {"loss": value, "accuracy": counts["correct"] / counts["count"]}
    new_state = state.replace(params=params, rest=rest, opt_state=opt_state, step=state.step + 1)
    return new_state, metrics


def compiler_options(platform: str) -> dict[str, str]:
    """XLA options for a jitted train step on ``platform``.

    Rematerialisation (the zoo's ``remat``) relies on optimisation barriers that keep XLA from
    merging the recomputed values back into the forward pass (common-subexpression
    elimination). XLA's CPU pipeline removes those barriers before its last CSE (its GPU
    pipeline only after scheduling), which silently undoes remat; on CPU that removal pass is
    switched off. A program without remat has no barriers, so the option changes nothing there.
    """
    if platform == "cpu":
        return {"xla_disable_hlo_passes": "cse_barrier_expander"}
    return {}


def make_train_step(
    tx: optax.GradientTransformation,
    loss: LossFn,
    *,
    platform: str,
    gradient: Gradient = value_and_grad,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """:func:`train_step` jitted as the trainer runs it: the state donated, with the XLA
    options of :func:`compiler_options` for ``platform``."""
    return jax.jit(
        functools.partial(train_step, tx=tx, loss=loss, gradient=gradient),
        donate_argnums=0,
        compiler_options=compiler_options(platform),
    )


def eval_step(state: TrainState, batch: dict, *, loss: LossFn) -> dict:
    """The sums of :func:`jsnn.losses.batch_metrics` over the real examples of ``batch``
    (``mask`` 1), with the model in eval mode, and the mean firing rate of every spiking layer
    that records one (``record_firing_rate``; padding included)."""
    model = state.model()
    model.eval(record_firing_rate=True)  # layers without the attribute are left alone
    outputs, intermediates = nnx.capture(model, nnx.Intermediate)(batch["image"])
    metrics = losses.batch_metrics(losses.as_sequence(outputs), batch["label"], loss, batch["mask"])
    rates: dict[str, list[jax.Array]] = {}
    for path, rate in jax.tree_util.tree_leaves_with_path(intermediates):
        keys = [str(key.key) for key in path if isinstance(key, jax.tree_util.DictKey)]
        if keys[-1] == "firing_rate":
            rates.setdefault(".".join(keys[:-1]), []).append(rate)
    metrics["firing_rates"] = {name: jnp.mean(jnp.stack(calls)) for name, calls in rates.items()}
    return metrics
