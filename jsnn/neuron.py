"""Neuron dynamics over whole sequences: pure functions scanned over time with ``lax.scan``.

This is the only place where neurons are stepped through time; layers and models call it.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jsnn._checks import concrete, floating_array
from jsnn.surrogate import Surrogate

__all__ = ["RESETS", "Reset", "check_neuron_parameters", "lif"]

Reset = Literal["hard", "soft", "none"]
RESETS: tuple[str, ...] = ("hard", "soft", "none")


def check_neuron_parameters(*, decay, v_th, reset: str) -> None:
    """ValueError naming the argument when a concrete decay, v_th or reset is out of range."""
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    decay_values = concrete(decay)
    if decay_values is not None and not np.all((decay_values > 0) & (decay_values <= 1)):
        raise ValueError(f"decay must lie in (0, 1] (1 gives IF neurons), got {decay!r}")
    v_th_values = concrete(v_th)
    if v_th_values is not None and not np.all((v_th_values > 0) & np.isfinite(v_th_values)):
        raise ValueError(f"v_th must be finite and > 0, got {v_th!r}")


def lif(
    currents: jax.Array,
    *,
    decay: float | jax.Array,
    v_th: float | jax.Array,
    surrogate: Surrogate,
    reset: Reset = "hard",
    time_axis: int = 0,
    v0: jax.Array | None = None,
    detach_reset: bool = False,
    return_membrane: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Leaky integrate-and-fire neurons driven by ``currents`` over all time steps.

    For every step ``t`` (Dspike Eq. 1-2, CPNG Eq. 2)::

        u_pre[t] = decay * u[t-1] + c[t]
        s[t]     = H(u_pre[t] - v_th)             forward: exact step; backward: surrogate
        u[t]     = u_pre[t] * (1 - s[t])          reset="hard" (Dspike Eq. 2, CPNG Eq. 2)
                 = u_pre[t] - v_th * s[t]         reset="soft" (reset by subtraction)
                 = u_pre[t]                       reset="none"

    with ``u[-1] = v0`` (zeros by default). ``decay = 1`` gives IF neurons; PLIF passes
    ``decay = sigmoid(w)`` of a learnt ``w``. ``decay`` and ``v_th`` are scalars or arrays that
    broadcast against one time step of ``currents``. ``detach_reset`` stops the gradient through
    ``s[t]`` in the reset term (the authors' code keeps it, hence the default).

    Returns the spikes, shaped like ``currents``; with ``return_membrane`` also the pre-spike
    membrane ``u_pre`` (what CPNG's chi is computed from), shaped the same.
    """
    currents = floating_array("currents", currents)
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a jsnn.surrogate.Surrogate, got {surrogate!r}")
    check_neuron_parameters(decay=decay, v_th=v_th, reset=reset)
    ndim = currents.ndim
    if not -ndim <= time_axis < ndim:
        raise ValueError(
            f"time_axis={time_axis} does not exist for currents of shape {currents.shape}"
        )
    steps = jnp.moveaxis(currents, time_axis, 0)
    step_shape = steps.shape[1:]
    for name, value in (("decay", decay), ("v_th", v_th)):
        try:
            fits = np.broadcast_shapes(np.shape(value), step_shape) == step_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name} of shape {np.shape(value)} must broadcast to one time step of "
                f"currents, shape {step_shape}"
            )
    dtype = currents.dtype
    decay = jnp.asarray(decay, dtype)
    v_th = jnp.asarray(v_th, dtype)
    if v0 is None:
        v0 = jnp.zeros(step_shape, dtype)
    else:
        v0 = floating_array("v0", v0).astype(dtype)
        if v0.shape != step_shape:
            raise ValueError(
                f"v0 must have the shape of one time step of currents, {step_shape}; got {v0.shape}"
            )

    def step(u, c):
        u_pre = decay * u + c
        s = surrogate(u_pre - v_th)
        s_reset = jax.lax.stop_gradient(s) if detach_reset else s
        if reset == "hard":
            u = u_pre * (1 - s_reset)
        elif reset == "soft":
            u = u_pre - v_th * s_reset
        else:
            u = u_pre
        return u, ((s, u_pre) if return_membrane else s)

    _, outputs = jax.lax.scan(step, v0, steps)
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, time_axis), outputs)
