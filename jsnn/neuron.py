"""Neuron dynamics: one LIF step, and the loops that run it over whole sequences.

**Time layout.** Sequences are batch-major, ``[B, T, ...]``: time is axis 1 everywhere in jsnn,
in :func:`lif` (``time_axis=1`` by default), :func:`lif_scan`, the layers, the models and the
losses of :mod:`jsnn.losses` (``time_axis=1``). The batch is the axis sharded over devices,
and folding ``[B, T, ...]`` to ``[B*T, ...]`` for the stateless layers keeps that sharding (a
time-major ``[T, B@data]`` reshape fails under explicit sharding). Time-major data
``[T, B, ...]`` goes to :func:`lif` with ``time_axis=0``.

:func:`lif_step` is the neuron: Dspike Eq. 1-2 for one time step, over :class:`LIFParams`, for
loops written by hand. :func:`lif_scan` is the plain ``lax.scan`` of it, differentiated by
autodiff: the reference. :func:`lif` is the fast scan of the same step, the one layers and
models call, and the only other place where neurons are stepped through time.

:func:`lif` is one ``jax.custom_vjp``: its forward loop keeps a single array of the size of
the input as residual (the pre-spike membrane), and its backward pass is one reverse loop
written out by hand (backpropagation through time of Dspike Eq. 1-2). Autodiff of the same loop
(:func:`lif_scan`) stores more and runs a backward pass several times slower than the forward.
Both loops read and write the time axis where it lies (``dynamic_slice`` at step ``t``, updated
in place) instead of moving it to the front for ``lax.scan``: the two transposes of every input
and output cost more than the loop itself on a CPU. The forward loop also works inside one
array, writing the membrane over the currents, so a layer needs no memory of its input's size
beyond its output and that one residual. ``python -m benchmarks.lif_layer`` measures the result.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jsnn._checks import concrete, floating_array
from jsnn.dtypes import cast_parameters, compute_dtype
from jsnn.surrogate import Surrogate

__all__ = [
    "RESETS",
    "LIFParams",
    "Reset",
    "check_neuron_parameters",
    "lif",
    "lif_scan",
    "lif_step",
]

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


@dataclasses.dataclass(frozen=True, eq=False)
class LIFParams:
    """The parameters of LIF neurons (IF with ``decay=1``), a pytree for :func:`lif_step` and
    :func:`lif_scan`.

    ``decay``, ``v_th`` (scalars or arrays that broadcast against one time step) and
    ``surrogate`` (a :class:`jsnn.surrogate.Surrogate`, itself a pytree) are its leaves, traced
    under ``jit``; ``reset`` (``"hard"``, ``"soft"`` or ``"none"``) and ``detach_reset`` are
    static metadata, so ``jax.jit(lif_step)`` takes the parameters as an argument and compiles
    once per reset choice. Constructing it checks concrete values (ValueError naming the
    argument); transformations rebuild it without checks, as they do surrogates.
    """

    decay: float | jax.Array
    v_th: float | jax.Array
    surrogate: Surrogate
    reset: Reset = "hard"
    detach_reset: bool = False

    def __post_init__(self):
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(f"surrogate must be a jsnn.surrogate.Surrogate, got {self.surrogate!r}")
        check_neuron_parameters(decay=self.decay, v_th=self.v_th, reset=self.reset)
        if not isinstance(self.detach_reset, bool):
            raise TypeError(f"detach_reset must be True or False, got {self.detach_reset!r}")

    def _flatten_with_keys(self):
        keyed = tuple((jax.tree_util.GetAttrKey(name), getattr(self, name)) for name in _LEAVES)
        return keyed, tuple(getattr(self, name) for name in _STATIC)

    def _flatten(self):
        leaves = tuple(getattr(self, name) for name in _LEAVES)
        return leaves, tuple(getattr(self, name) for name in _STATIC)

    @classmethod
    def _unflatten(cls, static, leaves):
        # Transformations rebuild pytrees with tracers or sentinels as leaves: skip validation.
        # (jax.tree_util.register_dataclass would rebuild through the constructor, checks and all.)
        params = object.__new__(cls)
        for name, value in (*zip(_LEAVES, leaves, strict=True), *zip(_STATIC, static, strict=True)):
            object.__setattr__(params, name, value)
        return params


_LEAVES = ("decay", "v_th", "surrogate")
_STATIC = ("reset", "detach_reset")
jax.tree_util.register_pytree_with_keys(
    LIFParams, LIFParams._flatten_with_keys, LIFParams._unflatten, LIFParams._flatten
)


def lif_step(
    state: jax.Array, current: jax.Array, params: LIFParams
) -> tuple[jax.Array, jax.Array]:
    """One time step of LIF neurons (Dspike Eq. 1-2, CPNG Eq. 2): ``(state, spike)``.

    ``state`` is the membrane ``u[t-1]`` after the previous step's reset (zeros before the first
    step), ``current`` the input ``c[t]`` of this step, of the same shape (one time step, e.g.
    ``[B, N]``). Dtypes follow :mod:`jsnn.dtypes`: the new state is in the compute dtype of
    ``state`` and ``current`` (a float32 state for bfloat16 currents), the spikes in the dtype
    of ``current``, and the parameters never promote either::

        u_pre = decay * u[t-1] + c[t]                 Dspike Eq. 1
        s[t]  = H(u_pre - v_th)                       Dspike Eq. 2; backward: the surrogate
        u[t]  = u_pre * (1 - s[t])                    reset="hard" (Dspike Eq. 2, CPNG Eq. 2)
              = u_pre - v_th * s[t]                   reset="soft" (reset by subtraction)
              = u_pre                                 reset="none"

    ``H`` is the exact step forward (a spike iff ``u_pre > v_th``) with the surrogate's
    derivative backward (:func:`jsnn.surrogate.spike`). With ``detach_reset`` the reset term
    passes no gradient through ``s[t]``. Returns the new state ``u[t]`` and the spikes ``s[t]``;
    loop it over time with ``jax.lax.scan`` (that is :func:`lif_scan`), or by hand.
    """
    if not isinstance(params, LIFParams):
        raise TypeError(f"params must be a jsnn.neuron.LIFParams, got {params!r}")
    state = floating_array("state", state)
    current = floating_array("current", current)
    if current.shape != state.shape:
        raise ValueError(
            f"current must have the shape of state (one time step), {state.shape}; "
            f"got {current.shape}"
        )
    _check_fits_step(params.decay, params.v_th, state.shape)
    dtype = compute_dtype(state.dtype, current.dtype)
    decay, v_th = cast_parameters((params.decay, params.v_th), dtype)
    state, spike, _ = _step(
        state.astype(dtype),
        current.astype(dtype),
        decay,
        v_th,
        params.surrogate,
        params.reset,
        params.detach_reset,
    )
    return state, spike.astype(current.dtype)


def _step(u, current, decay, v_th, surrogate: Surrogate, reset: str, detach_reset: bool):
    """:func:`lif_step` on plain values, also returning ``u_pre``: ``(u[t], s[t], u_pre[t])``.

    The one statement of the step (Dspike Eq. 1-2) that :func:`lif_step`, :func:`lif_scan` and
    the loop of :func:`lif` run.
    """
    u_pre = decay * u + current  # Dspike Eq. 1
    return (*_fire(u_pre, v_th, surrogate, reset, detach_reset), u_pre)


def _fire(u_pre, v_th, surrogate: Surrogate, reset: str, detach_reset: bool):
    """The spike of the pre-spike membrane and the reset after it (Dspike Eq. 2): ``(u, s)``."""
    s = surrogate(u_pre - v_th)
    s_reset = jax.lax.stop_gradient(s) if detach_reset else s
    return _after_reset(u_pre, s_reset, v_th, reset), s


def lif_scan(
    currents: jax.Array, params: LIFParams, *, v0: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The reference loop: :func:`lif_step` under ``jax.lax.scan`` over time, differentiated by
    autodiff. ``(final_state, spikes)``.

    ``currents`` are batch-major ``[B, T, ...]`` (the module's time layout); ``v0`` is the
    state before the first step (zeros by default), shaped like one time step ``[B, ...]``.
    The spikes and their gradients are those of :func:`lif` (the tests check it for every
    reset); :func:`lif` is the fast path, this is the oracle: its backward pass keeps every
    step's intermediates and runs slower.
    """
    if not isinstance(params, LIFParams):
        raise TypeError(f"params must be a jsnn.neuron.LIFParams, got {params!r}")
    if np.ndim(currents) < 2:
        raise ValueError(
            f"currents must be batch-major [B, T, ...], got shape {np.shape(currents)}"
        )
    currents, _, _, v0 = _sequence_inputs(
        currents, params.decay, params.v_th, params.surrogate, params.reset, 1, v0
    )
    state, spikes = jax.lax.scan(
        lambda u, c: lif_step(u, c, params), v0, jnp.moveaxis(currents, 1, 0)
    )
    return state, jnp.moveaxis(spikes, 0, 1).astype(currents.dtype)


def lif(
    currents: jax.Array,
    *,
    decay: float | jax.Array,
    v_th: float | jax.Array,
    surrogate: Surrogate,
    reset: Reset = "hard",
    time_axis: int = 1,
    v0: jax.Array | None = None,
    detach_reset: bool = False,
    return_membrane: bool = False,
    return_state: bool = False,
) -> jax.Array | tuple[jax.Array, ...]:
    """Leaky integrate-and-fire neurons driven by ``currents`` over all time steps: the fast
    scan of :func:`lif_step`, with a backward pass written by hand.

    For every step ``t`` (Dspike Eq. 1-2, CPNG Eq. 2; see :func:`lif_step`)::

        u_pre[t] = decay * u[t-1] + c[t]
        s[t]     = H(u_pre[t] - v_th)             forward: exact step; backward: surrogate
        u[t]     = u_pre[t] * (1 - s[t])          reset="hard" (Dspike Eq. 2, CPNG Eq. 2)
                 = u_pre[t] - v_th * s[t]         reset="soft" (reset by subtraction)
                 = u_pre[t]                       reset="none"

    with ``u[-1] = v0`` (zeros by default). ``currents`` are batch-major ``[B, T, ...]``, the
    time layout of the whole library (module docstring); ``time_axis`` puts time elsewhere
    (``time_axis=0`` for time-major ``[T, B, ...]``). ``decay = 1`` gives IF neurons; PLIF
    passes ``decay = sigmoid(w)`` of a learnt ``w``. ``decay`` and ``v_th`` are scalars or arrays
    that broadcast against one time step of ``currents``. ``detach_reset`` stops the gradient
    through ``s[t]`` in the reset term (the authors' code keeps it, hence the default).

    Returns the spikes, shaped like ``currents``; with ``return_membrane`` also the pre-spike
    membrane ``u_pre`` (what CPNG's chi is computed from), shaped the same; with
    ``return_state`` also the final state ``u[T-1]``, shaped like one time step, from which
    ``lif(next_currents, v0=state, ...)`` continues the sequence. The outputs come in that
    order: ``spikes[, u_pre][, state]``. Dtypes (:mod:`jsnn.dtypes`): spikes in the dtype of
    ``currents``, ``u_pre`` and the state in its compute dtype (float32 for bfloat16 currents);
    ``decay``, ``v_th`` and the surrogate's parameters never promote them. The final state
    costs one membrane-sized cotangent in the backward pass; without ``return_state`` nothing
    changes.
    """
    currents, decay, v_th, v0 = _sequence_inputs(
        currents, decay, v_th, surrogate, reset, time_axis, v0
    )
    time_axis %= currents.ndim
    options = _Options(reset, detach_reset, return_membrane or return_state, time_axis)
    outputs = _lif_loop(currents, v0, decay, v_th, surrogate, options)
    if not return_state:
        return outputs
    spikes, u_pre = outputs
    # The last step's reset, from its pre-spike membrane (whose gradient the loop's backward
    # pass takes as a membrane cotangent).
    u_last = _at(u_pre, currents.shape[time_axis] - 1, time_axis)
    state, _ = _fire(u_last, v_th, surrogate, reset, detach_reset)
    return (spikes, u_pre, state) if return_membrane else (spikes, state)


def _sequence_inputs(currents, decay, v_th, surrogate, reset: str, time_axis: int, v0):
    """The checked inputs of :func:`lif` and :func:`lif_scan`: ``(currents, decay, v_th, v0)``,
    the parameters and ``v0`` in the state's dtype, the parameters with the rank of one step."""
    currents = floating_array("currents", currents)
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a jsnn.surrogate.Surrogate, got {surrogate!r}")
    check_neuron_parameters(decay=decay, v_th=v_th, reset=reset)
    ndim = currents.ndim
    if not -ndim <= time_axis < ndim:
        raise ValueError(
            f"time_axis={time_axis} does not exist for currents of shape {currents.shape} "
            f"(time_axis=1, the default, is batch-major [B, T, ...]; 0 is time-major)"
        )
    time_axis %= ndim
    step_shape = currents.shape[:time_axis] + currents.shape[time_axis + 1 :]
    _check_fits_step(decay, v_th, step_shape)
    # bf16/f16 currents still integrate in float32: the membrane is a long running sum.
    state_dtype = compute_dtype(currents.dtype)
    # Rank of one step, so that inserting the time axis broadcasts them over the whole sequence.
    decay, v_th = (_step_rank(jnp.asarray(p, state_dtype), len(step_shape)) for p in (decay, v_th))
    if v0 is None:
        v0 = jnp.zeros(step_shape, state_dtype)
    else:
        v0 = floating_array("v0", v0).astype(state_dtype)
        if v0.shape != step_shape:
            raise ValueError(
                f"v0 must have the shape of one time step of currents, {step_shape}; got {v0.shape}"
            )
    return currents, decay, v_th, v0


def _check_fits_step(decay, v_th, step_shape: tuple[int, ...]) -> None:
    """ValueError naming the parameter unless it broadcasts to one time step without changing
    its shape (spikes and membrane keep the shape of one step of currents)."""
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


def _step_rank(parameter: jax.Array, ndim: int) -> jax.Array:
    return parameter.reshape((1,) * (ndim - parameter.ndim) + parameter.shape)


def _after_reset(u_pre, s, v_th, reset: str):
    """The membrane after the spike ``s``: Dspike Eq. 2 (hard), reset by subtraction (soft)."""
    if reset == "hard":
        return u_pre * (1 - s)
    if reset == "soft":
        return u_pre - v_th * s
    return u_pre


class _Options(NamedTuple):
    """The static choices of :func:`lif` (hashable: a ``nondiff_argnums`` argument)."""

    reset: str
    detach_reset: bool
    return_membrane: bool
    time_axis: int


def _at(array: jax.Array, t, axis: int) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(array, t, axis, keepdims=False)


def _put(array: jax.Array, value: jax.Array, t, axis: int) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(array, value.astype(array.dtype), t, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _lif_loop(currents, v0, decay, v_th, surrogate, options: _Options):
    """The loop of :func:`lif`: spikes (and ``u_pre`` if asked), time on ``options.time_axis``."""
    spikes, u_pre = _forward(currents, v0, decay, v_th, surrogate, options)
    return (spikes, u_pre) if options.return_membrane else spikes


def _forward(currents, v0, decay, v_th, surrogate, options: _Options):
    axis = options.time_axis

    def step(t, carry):
        u, current, membrane = carry
        u, _, u_pre = _step(u, current, decay, v_th, surrogate, options.reset, options.detach_reset)
        membrane = _put(membrane, u_pre, t, axis)
        # The next current, read after this step's write (at the last step, a clamped re-read).
        return u, _at(membrane, t + 1, axis), membrane

    # One array for the whole loop: step t reads its current from slot t and writes its u_pre
    # there (the spikes follow from u_pre afterwards). A read after the write, not before it,
    # lets XLA update in place instead of copying the whole array every step.
    membrane = currents.astype(v0.dtype)
    start = (v0, _at(membrane, 0, axis), membrane)
    _, _, u_pre = jax.lax.fori_loop(0, currents.shape[axis], step, start)
    spikes = surrogate(u_pre - jnp.expand_dims(v_th, axis))
    return spikes.astype(currents.dtype), u_pre


def _lif_loop_fwd(currents, v0, decay, v_th, surrogate, options: _Options):
    spikes, u_pre = _forward(currents, v0, decay, v_th, surrogate, options)
    outputs = (spikes, u_pre) if options.return_membrane else spikes
    # The only residual of size T: u_pre. Spikes, resets and earlier membranes are recomputed.
    return outputs, (u_pre, v0, decay, v_th, surrogate)


def _lif_loop_bwd(options: _Options, residuals, cotangents):
    """Backpropagation through time of the whole layer in one reverse loop.

    With ``g_u`` the gradient reaching ``u[t]`` from step ``t+1`` (``decay * g_pre[t+1]``)::

        g_s[t]   = ds[t] + g_u * du[t]/ds[t]          (0 from the reset when detached)
        g_pre[t] = du_pre[t] + g_u * du[t]/du_pre[t] + g_s[t] * surrogate'(u_pre[t] - v_th)
        dc[t]    = g_pre[t]

    The gradients of ``v0``, ``decay`` and ``v_th`` follow from ``g_pre`` without another loop
    (XLA drops them when nothing asks for them).
    """
    u_pre, v0, decay, v_th, surrogate = residuals
    reset, axis = options.reset, options.time_axis
    if options.return_membrane:
        d_spikes, d_u_pre = cotangents
    else:
        d_spikes, d_u_pre = cotangents, None

    def reset_partials(u, s, v_th):
        """(du/du_pre, du/ds) of the membrane after the reset."""
        if reset == "hard":
            return 1 - s, -u
        return jnp.ones_like(u), -v_th  # soft; with no reset, du/ds is never asked for

    def spike_gradient(g_u, u, s, ds, v_th):
        if options.detach_reset or reset == "none":  # no gradient from the reset
            return ds
        return ds + g_u * reset_partials(u, s, v_th)[1]

    steps = u_pre.shape[axis]

    def step(i, carry):
        g_u, g_pre_all = carry
        t = steps - 1 - i
        u = _at(u_pre, t, axis)
        s = surrogate(u - v_th)
        g_s = spike_gradient(g_u, u, s, _at(d_spikes, t, axis).astype(u.dtype), v_th)
        g_pre = g_u * reset_partials(u, s, v_th)[0] + g_s * surrogate.derivative(u - v_th)
        if d_u_pre is not None:
            g_pre = g_pre + _at(d_u_pre, t, axis)
        return decay * g_pre, _put(g_pre_all, g_pre, t, axis)

    # Every slot is overwritten. A copy of d_spikes rather than zeros: XLA on CPU creates zero
    # buffers at the start of the whole program, which keeps every layer's buffers alive through
    # a rematerialised training step. (Writing over d_spikes itself, as _forward writes over the
    # currents, saved little memory and made the training step slower.)
    start = (jnp.zeros_like(v0), d_spikes.astype(u_pre.dtype))
    g_v0, g_pre = jax.lax.fori_loop(0, steps, step, start)
    # The parameters' gradients from the same quantities, for all steps at once.
    v_th_all = jnp.expand_dims(v_th, axis)
    spikes = surrogate(u_pre - v_th_all)

    def shifted(x, first):
        """``x`` one step later along time: ``[first, x[0], ..., x[T-2]]``."""
        return jnp.concatenate([jnp.expand_dims(first, axis), _drop_last(x, axis)], axis)

    def ahead(x):
        """``x`` one step earlier along time: ``[x[1], ..., x[T-1], 0]``."""
        return jnp.flip(shifted(jnp.flip(x, axis), jnp.zeros_like(v0)), axis)

    g_u = jnp.expand_dims(decay, axis) * ahead(g_pre)
    u_before = shifted(_after_reset(u_pre, spikes, v_th_all, reset), v0)
    g_v_th = -spike_gradient(g_u, u_pre, spikes, d_spikes, v_th_all) * surrogate.derivative(
        u_pre - v_th_all
    )
    if reset == "soft":
        g_v_th = g_v_th - g_u * spikes
    return (
        g_pre.astype(d_spikes.dtype),
        g_v0,
        _sum_to_shape(g_pre * u_before, decay.shape, axis),
        _sum_to_shape(g_v_th, v_th.shape, axis),
        jax.tree.map(jnp.zeros_like, surrogate),
    )


def _drop_last(x: jax.Array, axis: int) -> jax.Array:
    return jax.lax.slice_in_dim(x, 0, x.shape[axis] - 1, axis=axis)


def _sum_to_shape(per_step: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    """Sums ``per_step`` over the time ``axis`` and the axes a parameter of ``shape`` (the rank
    of one step) was broadcast along."""
    total = per_step.sum(axis)
    keep = tuple(i for i, size in enumerate(shape) if size == 1 and total.shape[i] != 1)
    return total.sum(axis=keep, keepdims=True)


_lif_loop.defvjp(_lif_loop_fwd, _lif_loop_bwd)
