"""The train state and the pure, jitted train and eval steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jsnn import losses
from jsnn.layers import LIF

__all__ = ["LOSSES", "TrainState", "batch_loss", "compiler_options", "eval_step", "train_step"]

LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mean_ce": losses.mean_output_cross_entropy,
    "tet": losses.tet_cross_entropy,
}


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
        """A fresh model holding this state (its changes do not flow back)."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    def checkpoint_items(self) -> dict:
        """The arrays a checkpoint holds (the graphdef is rebuilt from the config)."""
        return {"params": self.params, "rest": self.rest, "opt": self.opt_state, "step": self.step}

    def from_checkpoint_items(self, items: dict) -> TrainState:
        return self.replace(
            params=items["params"], rest=items["rest"], opt_state=items["opt"], step=items["step"]
        )


def _as_sequence(outputs: jax.Array) -> jax.Array:
    """The outputs as ``[B, T, classes]`` in float32 at least: ANN twins output ``[B, classes]``,
    a one-step sequence, so the losses apply unchanged; a bfloat16 model's outputs are cast up
    so that the loss is computed in float32."""
    outputs = outputs.astype(jnp.promote_types(outputs.dtype, jnp.float32))
    return outputs[:, None] if outputs.ndim == 2 else outputs


def batch_loss(model: nnx.Module, batch: dict, loss: str) -> tuple[jax.Array, jax.Array]:
    """The training loss ``loss`` of ``model`` on ``batch`` (``image``, ``label``) and the
    outputs ``[B, T, classes]``, with the model in whatever mode it is in."""
    outputs = _as_sequence(model(batch["image"]))
    return LOSSES[loss](outputs, batch["label"]), outputs


def train_step(
    state: TrainState, batch: dict, *, tx: optax.GradientTransformation, loss: str
) -> tuple[TrainState, dict]:
    """One optimizer step on ``batch`` (``image``, ``label``); returns the new state and the
    batch's loss and accuracy. Under ``jit`` with the batch sharded over a mesh, BN statistics
    and gradients are global (the compiler inserts the all-reduces)."""

    model = state.model()
    (value, outputs), grads = nnx.value_and_grad(batch_loss, has_aux=True)(model, batch, loss)
    _, _, rest = nnx.split(model, nnx.Param, ...)  # BN statistics after this batch
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    predictions = losses.mean_over_time(outputs).argmax(-1)
    metrics = {"loss": value, "accuracy": jnp.mean(predictions == batch["label"])}
    new_state = state.replace(params=params, rest=rest, opt_state=opt_state, step=state.step + 1)
    return new_state, metrics


def compiler_options(remat: str, platform: str) -> dict[str, str]:
    """XLA options for the jitted train step of a model built with ``remat`` on ``platform``.

    Rematerialisation relies on optimisation barriers that keep XLA from merging the recomputed
    values back into the forward pass (common-subexpression elimination). XLA's CPU pipeline
    removes those barriers before its last CSE (its GPU pipeline only after scheduling), which
    silently undoes remat; on CPU with remat on, that removal pass is switched off.
    """
    if remat != "none" and platform == "cpu":
        return {"xla_disable_hlo_passes": "cse_barrier_expander"}
    return {}


def eval_step(state: TrainState, batch: dict) -> dict:
    """Sums over the real examples of ``batch`` (``mask`` 1): loss, correct predictions,
    count, and each LIF layer's firing rate (mean over the batch, padding included)."""
    model = state.model()
    model.eval()
    for _, module in nnx.iter_modules(model):
        if isinstance(module, LIF):
            module.record_firing_rate = True
    outputs, intermediates = nnx.capture(model, nnx.Intermediate)(batch["image"])
    logits = losses.mean_over_time(_as_sequence(outputs))
    mask = batch["mask"].astype(logits.dtype)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (logits.argmax(-1) == batch["label"]).astype(logits.dtype)
    rates: dict[str, list[jax.Array]] = {}
    for path, rate in jax.tree_util.tree_leaves_with_path(intermediates):
        keys = [str(key.key) for key in path if isinstance(key, jax.tree_util.DictKey)]
        rates.setdefault(".".join(keys[:-1]), []).append(rate)  # drop the name "firing_rate"
    return {
        "loss_sum": jnp.sum(per_example * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
        "firing_rates": {name: jnp.mean(jnp.stack(calls)) for name, calls in rates.items()},
    }
