"""Flax NNX shells around the pure core; inputs are batch-major sequences ``[B, T, ...]``, the
time layout of :mod:`jsnn.neuron`.

Stateless layers (conv, linear, pooling) run once on the folded ``B*T`` batch through
:class:`TimeDistributed`; only :class:`LIF` steps through time (with :func:`jsnn.neuron.lif`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jsnn import norm
from jsnn._checks import positive_int
from jsnn.neuron import Reset, check_neuron_parameters, lif
from jsnn.surrogate import Dspike, Surrogate

__all__ = ["LIF", "NeuronConstant", "SurrogateVariable", "TDBatchNorm", "TimeDistributed"]


class SurrogateVariable(nnx.Variable):
    """A layer's surrogate. Its shape parameters are state but not optimizer parameters:
    methods (Dspike's temperature search, CPNG) read and replace them between epochs."""


class NeuronConstant(nnx.Variable):
    """A fixed neuron constant (decay or threshold), scalar or per neuron."""


class LIF(nnx.Module):
    """A layer of LIF neurons (IF with ``decay=1``, PLIF with ``learn_decay=True``).

    Maps input currents ``[B, T, ...]`` (batch-major, the time layout of :mod:`jsnn.neuron`) to
    spikes of the same shape with :func:`jsnn.neuron.lif`.
    The defaults are the Dspike setting (the paper's Eq. 1-2 and 12 with the constants of the
    authors' public code): decay 0.25, ``v_th = 0.5``, hard reset kept in the graph,
    ``Dspike(b=1)`` on ``u in [0, 1]``.

    With ``record_firing_rate`` set, each call sows the mean spike rate as an
    ``nnx.Intermediate`` named ``firing_rate``, for ``nnx.capture`` (the trainer's evaluation).
    It is a mode flag like ``use_running_average``: ``model.eval(record_firing_rate=True)`` sets
    it on every LIF layer of a model (and on none, without error, in a model without them), and
    ``model.train(record_firing_rate=False)`` clears it.

    With ``record_membrane`` set, each call also sows the mean and the standard deviation of
    the pre-spike membrane ``u_pre`` over the whole call (batch, time steps and neurons) as
    ``membrane_mean`` and ``membrane_std``: the statistics CPNG's chi is computed from.

    ``layer.surrogate`` is a :class:`SurrogateVariable`: read it with ``get_value()``, replace
    it with ``set_value(sg)`` (no retracing: its shape parameters are traced data).

    PLIF (Fang et al., ICCV 2021) learns one decay per layer as ``sigmoid(w)``, ``w`` an
    ``nnx.Param`` initialised so that ``sigmoid(w) = decay``.
    """

    def __init__(
        self,
        *,
        decay: float | jax.Array = 0.25,
        v_th: float | jax.Array = 0.5,
        surrogate: Surrogate | None = None,
        reset: Reset = "hard",
        detach_reset: bool = False,
        learn_decay: bool = False,
    ):
        check_neuron_parameters(decay=decay, v_th=v_th, reset=reset)
        surrogate = Dspike(1.0) if surrogate is None else surrogate
        if not isinstance(surrogate, Surrogate):
            raise TypeError(f"surrogate must be a jsnn.surrogate.Surrogate, got {surrogate!r}")
        decay = jnp.array(decay, jnp.float32)
        if learn_decay:
            if decay.ndim or decay >= 1:
                raise ValueError(
                    f"learn_decay needs one initial decay in (0, 1) (sigmoid(w) < 1), got {decay}"
                )
            self.decay_logit = nnx.Param(jnp.log(decay) - jnp.log1p(-decay))
        else:
            self.fixed_decay = NeuronConstant(decay)
        self.v_th = NeuronConstant(jnp.array(v_th, jnp.float32))
        # Own copies: layers built from one factory must not share arrays (CPNG sets each
        # layer's surrogate on its own; a train step donates its state, one buffer per leaf).
        self.surrogate = SurrogateVariable(jax.tree.map(jnp.array, surrogate))
        self.reset = reset
        self.detach_reset = detach_reset
        self.learn_decay = learn_decay
        self.record_firing_rate = False
        self.record_membrane = False

    @property
    def decay(self) -> jax.Array:
        """The membrane decay, learnt (``sigmoid(decay_logit)``) or fixed."""
        if self.learn_decay:
            return jax.nn.sigmoid(self.decay_logit[...])
        return self.fixed_decay[...]

    def __call__(self, currents: jax.Array) -> jax.Array:
        outputs = lif(
            currents,
            decay=self.decay,
            v_th=self.v_th[...],
            surrogate=self.surrogate.get_value(),
            reset=self.reset,
            detach_reset=self.detach_reset,
            return_membrane=self.record_membrane,
        )
        spikes = outputs
        if self.record_membrane:
            spikes, u_pre = outputs
            self.sow(nnx.Intermediate, "membrane_mean", jnp.mean(u_pre))
            self.sow(nnx.Intermediate, "membrane_std", jnp.std(u_pre))
        if self.record_firing_rate:
            self.sow(nnx.Intermediate, "firing_rate", jnp.mean(spikes))
        return spikes


class TDBatchNorm(nnx.Module):
    """tdBN (Dspike Eq. 4-5): per-channel statistics over time, batch and space, the normalised
    input scaled by ``alpha * v_th``, then the affine ``gamma``, ``beta``.

    Works on ``[B, T, ..., C]`` or on the folded ``[B*T, ..., C]`` alike (channels last by
    default). Running statistics follow ``running = momentum * running + (1 - momentum) * batch``
    (momentum 0.9 is PyTorch's 0.1), with the unbiased batch variance as PyTorch keeps it; eval
    mode (``use_running_average=True``, set by ``model.eval()``) normalises with them.
    :meth:`time_folded` builds plain time-folded BN (DSR supplement C.2), ``alpha * v_th = 1``.
    """

    def __init__(
        self,
        num_features: int,
        *,
        alpha: float = 1.0,
        v_th: float = 0.5,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        feature_axis: int = -1,
        use_running_average: bool = False,
    ):
        num_features = positive_int("num_features", num_features)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        if not alpha * v_th > 0:
            raise ValueError(f"alpha * v_th must be > 0, got alpha={alpha!r}, v_th={v_th!r}")
        self.gamma = nnx.Param(jnp.ones(num_features))
        self.beta = nnx.Param(jnp.zeros(num_features))
        self.mean = nnx.BatchStat(jnp.zeros(num_features))
        self.var = nnx.BatchStat(jnp.ones(num_features))
        self.scale = alpha * v_th
        self.momentum = momentum
        self.epsilon = epsilon
        self.feature_axis = feature_axis
        self.use_running_average = use_running_average

    @classmethod
    def time_folded(cls, num_features: int, **kwargs) -> TDBatchNorm:
        """Plain BatchNorm over the folded ``T*B`` batch (DSR supplement C.2): no ``alpha v_th``."""
        return cls(num_features, alpha=1.0, v_th=1.0, **kwargs)

    def __call__(self, x: jax.Array) -> jax.Array:
        features = self.gamma.shape[0]
        if not -x.ndim <= self.feature_axis < x.ndim:
            raise ValueError(
                f"feature_axis={self.feature_axis} does not exist for x of shape {x.shape}"
            )
        if x.ndim < 2 or x.shape[self.feature_axis] != features:
            raise ValueError(
                f"x must have {features} features on axis {self.feature_axis}, got shape {x.shape}"
            )
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean, var = norm.batch_statistics(x, self.feature_axis)
            count = x.size // features
            unbiased = var * count / max(count - 1, 1)
            # Running statistics keep their dtype whatever the compute dtype of x.
            new_mean = self.momentum * self.mean[...] + (1 - self.momentum) * mean
            new_var = self.momentum * self.var[...] + (1 - self.momentum) * unbiased
            self.mean.set_value(new_mean.astype(self.mean.dtype))
            self.var.set_value(new_var.astype(self.var.dtype))
        return norm.normalize(
            x,
            mean,
            var,
            gamma=self.gamma[...],
            beta=self.beta[...],
            scale=self.scale,
            epsilon=self.epsilon,
            feature_axis=self.feature_axis,
        )


class TimeDistributed(nnx.Module):
    """Runs a stateless layer on every time step at once: ``[B, T, ...]`` is folded to
    ``[B*T, ...]`` (batch-major, so the reshape keeps a batch sharding), mapped, and unfolded.

    The one public time adapter: build networks on ``[B, T, ...]`` from ``TimeDistributed``
    around the stateless layers and :class:`LIF` (which takes ``[B, T, ...]`` itself). The model
    zoo does the opposite inside (:mod:`jsnn.models.common`): it keeps the folded ``[B*T, ...]``
    layout between layers, so that its layers are the same modules as in its ANN twins, and
    unfolds only around each neuron, in an internal neuron slot.
    """

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 2:
            raise ValueError(f"x must be [B, T, ...], got shape {x.shape}")
        batch, steps = x.shape[:2]
        y = self.layer(x.reshape(batch * steps, *x.shape[2:]))
        return y.reshape(batch, steps, *y.shape[1:])
