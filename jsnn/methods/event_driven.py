"""Event-driven learning: gradients on spike times (Zhu et al., "Training Spiking Neural Networks
with Event-driven Backpropagation", NeurIPS 2022), in the authors' discrete time.

SRM neurons (Eq. 1-3) integrate their synaptic currents through a double-exponential PSP
kernel and restart from zero at each output spike. The backward pass carries the loss's
gradient with respect to spike times: from each output spike ``t_k`` to the inputs of its
window ``(t_{k-1}, t_k]`` with the gradient-assignment kernel ``h`` (Eq. 12-13), and to the
weights through ``-1/(du/dt)`` and the PSP kernel (Eq. 14). A spike's input time gradients sum
to its own (Eq. 6), so the sum is the same in every layer (Eq. 8).

Conventions: arrays are batch-major ``[B, T, ...]`` (images NHWC); dense weights
``[N_in, N_out]``, conv kernels HWIO; time in simulation steps, the decays ``a = 1 - 1/tau``
(the authors' discrete form, not ``exp(-1/tau)``). The cotangent a layer receives for its
spikes is the ordinary ``dL/ds[t]``, read at each spike as ``dL/dt_f = -dL/ds[t_f]``; the one it
returns for its input is ``-dL/dt_x``. Layers therefore compose under ``jax.grad`` with any loss
on spikes.

Where the paper and the authors' code (zhuyaoyu/SNN-event-driven-learning) differ, the defaults
follow the paper, the code's choices are options: no damping of input gradients
(``input_grad_scale=1``; the code's 0.85 is an option); the supervisory spike at the end of the
simulation (``supervise="end"``; the code's last rising step is ``"last_rising"``). The
one-step increments standing in for ``du/dt`` and the count loss are the code's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsnn._checks import concrete, floating_array, positive_float
from jsnn._fields import option
from jsnn.dtypes import compute_dtype
from jsnn.methods.base import Method

__all__ = [
    "METHOD",
    "EventDriven",
    "EventDrivenNet",
    "SRMLayer",
    "SRMTrace",
    "ScaleConstant",
    "adjusted_avg_pool",
    "conv",
    "count_loss",
    "dense",
    "grad_kernel",
    "initialize_scales",
    "psp_kernel",
    "srm_forward",
    "srm_layer",
    "standardize",
]

GRAD_KERNELS = ("exp", "psp")
SUPERVISE = ("end", "last_rising")
# The code's rising threshold for the supervisory spike of "last_rising".
_RISING = 0.05
# The bound of -1/du on the weight path: dt/du is at most 4 in size.
_MAX_DT_DU = 4.0


def _check_taus(tau_m, tau_s, tau_grad=None) -> None:
    named = {"tau_m": tau_m, "tau_s": tau_s}
    if tau_grad is not None:
        named["tau_grad"] = tau_grad
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise ValueError(f"{name} must be a number > 1 (time steps), got {value!r}")
        if not (math.isfinite(value) and value > 1):
            raise ValueError(f"{name} must be a number > 1 (time steps), got {value!r}")
    if tau_m == tau_s:
        raise ValueError(
            f"tau_m and tau_s must differ (Eq. 3 divides by tau_m - tau_s), got {tau_m}"
        )


def _decay(tau):
    return 1.0 - 1.0 / tau


def psp_kernel(steps: int, *, tau_m: float, tau_s: float, dtype=jnp.float32) -> jax.Array:
    """``eps[k] = tau_m/(tau_m - tau_s) (a_m^(k+1) - a_s^(k+1))`` for ``k < steps``: the PSP
    ``k`` steps after an input (Eq. 3 in discrete time; ``sum_k eps[k] = tau_m``, and
    ``eps[0] > 0``: an input counts in the membrane at its own step)."""
    _check_taus(tau_m, tau_s)
    k = jnp.arange(1, steps + 1, dtype=dtype)
    return tau_m / (tau_m - tau_s) * (_decay(tau_m) ** k - _decay(tau_s) ** k)


def grad_kernel(
    steps: int,
    *,
    tau_m: float,
    tau_s: float,
    tau_grad: float,
    kind: str = "exp",
    dtype=jnp.float32,
) -> jax.Array:
    """The backward kernel ``kappa[k]``, ``k < steps``: ``"exp"`` the paper's gradient-assignment
    function h of Eq. 12, ``h[k] = a_g^(k+1)``; ``"psp"`` the PSP's slope ``eps[k] - eps[k-1]``
    (``eps[-1] = 0``), the "original" of the paper's Table 3."""
    _check_taus(tau_m, tau_s, tau_grad)
    if kind not in GRAD_KERNELS:
        raise ValueError(f"grad_kernel must be one of {GRAD_KERNELS}, got {kind!r}")
    if kind == "exp":
        return _decay(tau_grad) ** jnp.arange(1, steps + 1, dtype=dtype)
    eps = psp_kernel(steps, tau_m=tau_m, tau_s=tau_s, dtype=dtype)
    return eps - jnp.concatenate([jnp.zeros(1, dtype), eps[:-1]])


class SRMTrace(NamedTuple):
    """The forward pass of SRM neurons, each shaped like the currents ``[B, T, ...]``:
    ``spikes``, ``delta_u`` (the potential's one-step increment since the last step, from 0
    after a spike) and ``delta_u_t`` (the gradient-kernel potential ``sum h[t - tau] I[tau]``
    over the window, the input path's ``du/dt``)."""

    spikes: jax.Array
    delta_u: jax.Array
    delta_u_t: jax.Array


def srm_forward(
    currents: jax.Array, *, tau_m: float, tau_s: float, tau_grad: float, v_th: float = 1.0
) -> SRMTrace:
    """SRM neurons driven by ``currents`` ``[B, T, ...]`` (Eq. 1-3, the authors' discrete
    form): traces ``m``, ``s``, ``g`` decayed after adding each input, the potential
    ``u = (m - s) tau_m/(tau_m - tau_s)`` (the PSP kernel over the inputs since the last
    spike), a spike where ``u >= v_th``, and at a spike every trace restarting from zero (the
    input at the spike step belongs to that spike; no refractory period, no reset kernel).
    For inspection and tests: :func:`srm_layer` is what a network differentiates."""
    _check_taus(tau_m, tau_s, tau_grad)
    currents = floating_array("currents", currents)
    if currents.ndim < 2:
        raise ValueError(f"currents must be [B, T, ...], got shape {currents.shape}")
    dtype = compute_dtype(currents.dtype)
    a_m, a_s, a_g = (_decay(tau) for tau in (tau_m, tau_s, tau_grad))
    scale = tau_m / (tau_m - tau_s)

    def step(carry, current):
        m, s, g, u_last = carry
        m, s, g = (m + current) * a_m, (s + current) * a_s, (g + current) * a_g
        u = (m - s) * scale
        spike = u >= v_th
        keep = jnp.where(spike, 0.0, 1.0).astype(dtype)
        return (m * keep, s * keep, g * keep, u * keep), (spike, u - u_last, g)

    step_shape = (currents.shape[0], *currents.shape[2:])
    zeros = jnp.zeros(step_shape, dtype)
    _, (spikes, delta_u, delta_u_t) = jax.lax.scan(
        step, (zeros, zeros, zeros, zeros), jnp.moveaxis(currents.astype(dtype), 1, 0)
    )
    spikes, delta_u, delta_u_t = (jnp.moveaxis(a, 0, 1) for a in (spikes, delta_u, delta_u_t))
    return SRMTrace(spikes.astype(currents.dtype), delta_u, delta_u_t)


def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """The dense synapse ``x @ w`` (``w`` ``[N_in, N_out]``, the ``nnx.Linear`` kernel layout)."""
    return x @ w


@dataclasses.dataclass(frozen=True)
class _Conv:
    stride: tuple[int, int]
    padding: tuple[int, int]

    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(
            x,
            w.astype(x.dtype),
            self.stride,
            [(p, p) for p in self.padding],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def conv(*, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0) -> _Conv:
    """A convolution synapse (NHWC inputs, HWIO kernel; no bias, as in the paper) with an int
    or pair ``stride`` and symmetric ``padding``; hashable, so a static argument."""

    def pair(name, value):
        values = (value, value) if isinstance(value, int) else tuple(value)
        if len(values) != 2 or any(not isinstance(v, int) for v in values):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        if any(v < (1 if name == "stride" else 0) for v in values):
            raise ValueError(
                f"{name} must be {'>= 1' if name == 'stride' else '>= 0'}, got {value!r}"
            )
        return values

    return _Conv(pair("stride", stride), pair("padding", padding))


class _Options(NamedTuple):
    """The static choices of :func:`srm_layer` (a ``nondiff_argnums`` argument)."""

    synapse: Callable
    tau_m: float
    tau_s: float
    tau_grad: float
    v_th: float
    input_grad_scale: float
    max_dudt_inv: float
    grad_kernel: str
    supervised: bool
    supervise: str


def srm_layer(
    x: jax.Array,
    w: jax.Array,
    *,
    synapse: Callable = dense,
    tau_m: float,
    tau_s: float,
    tau_grad: float,
    v_th: float = 1.0,
    input_grad_scale: float = 1.0,
    max_dudt_inv: float = 123456789.0,
    grad_kernel: str = "exp",
    labels: jax.Array | None = None,
    supervise: str = "end",
) -> jax.Array:
    """One spiking layer, ``synapse`` then SRM neurons (:func:`srm_forward`), whose backward
    pass carries spike-time gradients (Eq. 12-14, the authors' ``neuron_backward``):

    For each neuron and each of its spikes ``t_k`` with window ``(t_{k-1}, t_k]``, ``tau`` in
    the window and ``d = t_k - tau``::

        delta_k = dL/dt_k = -ct[t_k]
        P_w  = delta_k * clip(-1/delta_u[t_k],   -4, 0)             dt/du on the weight path
        P_in = delta_k * clip(-1/delta_u_t[t_k], -max_dudt_inv, 0)  (delta_u with "psp")
        e[tau] =  P_w  * eps[d]                                     Eq. 14
        r[tau] = -P_in * kappa[d]                                   Eq. 12-13

    and nothing after a neuron's last spike. ``dL/dw`` is the transpose of ``w -> synapse(x,
    w)`` at ``e``; ``dL/dt_x = input_grad_scale * x * (transpose of x -> synapse(x, w) at r)``
    (the ``* x`` keeps it event-based), returned for ``x`` as ``-dL/dt_x``.

    ``x`` is ``[B, T, *in]``; ``synapse(x_folded, w)`` must be bilinear (no bias) and runs on
    the batch-major fold ``[B*T, *in]`` (:func:`dense`, :func:`conv`, or any hashable
    callable). With ``labels`` (int ``[B]``, may be traced; output layers ``[B, T, N]``) the
    label neuron of each sample gets a supervisory spike at step ``t*`` (where its
    ``delta_u != 0``; the dynamics are not recomputed): ``supervise="end"``, ``t* = T - 1``
    with ``delta_u`` and ``delta_u_t`` there floored at ``1/tau_s`` for the backward (the
    paper: "force it to fire at the end of the simulation"); ``"last_rising"``, the last step
    whose ``delta_u > 0.05`` (0 if none), no floor (the authors' final code).
    """
    _check_taus(tau_m, tau_s, tau_grad)
    x = floating_array("x", x)
    w = floating_array("w", w)
    if not callable(synapse):
        raise TypeError(f"synapse must be a callable synapse(x, w), such as dense, got {synapse!r}")
    if grad_kernel not in GRAD_KERNELS:
        raise ValueError(f"grad_kernel must be one of {GRAD_KERNELS}, got {grad_kernel!r}")
    if supervise not in SUPERVISE:
        raise ValueError(f"supervise must be one of {SUPERVISE}, got {supervise!r}")
    for name, value in (("input_grad_scale", input_grad_scale), ("max_dudt_inv", max_dudt_inv)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if x.ndim < 3:
        raise ValueError(f"x must be [B, T, *in], got shape {x.shape}")
    options = _Options(
        synapse,
        float(tau_m),
        float(tau_s),
        float(tau_grad),
        float(v_th),
        float(input_grad_scale),
        float(max_dudt_inv),
        grad_kernel,
        labels is not None,
        supervise,
    )
    if labels is None:
        labels = jnp.zeros(x.shape[0], jnp.int32)
    else:
        labels = _check_labels(labels, x, w, synapse)
    return _layer(x, w, labels, options)


def _currents(x, w, synapse):
    batch, steps = x.shape[:2]
    folded = synapse(x.reshape(batch * steps, *x.shape[2:]), w)
    return folded.reshape(batch, steps, *folded.shape[1:])


def _check_labels(labels, x, w, synapse) -> jax.Array:
    out = jax.eval_shape(lambda x, w: _currents(x, w, synapse), x, w).shape
    if len(out) != 3:
        raise ValueError(f"labels supervise an output layer [B, T, N]; this layer gives {out}")
    return _class_indices(labels, out[0], out[2])


def _class_indices(labels, batch: int, classes: int) -> jax.Array:
    """``labels`` as integer class indices of shape ``[batch]``, in range when concrete."""
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != (batch,):
        raise ValueError(
            f"labels must be integer class indices of shape ({batch},), got "
            f"{labels.dtype} {labels.shape}"
        )
    values = concrete(labels)
    if values is not None and values.size and not (values.min() >= 0 and values.max() < classes):
        raise ValueError(
            f"labels must lie in [0, {classes}), got values in [{values.min()}, {values.max()}]"
        )
    return labels


def _forward(x, w, labels, options: _Options):
    """Spikes (with the supervisory spike) and the increments the backward pass reads."""
    currents = _currents(x, w, options.synapse)
    spikes, delta_u, delta_u_t = srm_forward(
        currents,
        tau_m=options.tau_m,
        tau_s=options.tau_s,
        tau_grad=options.tau_grad,
        v_th=options.v_th,
    )
    if not options.supervised:
        return spikes, delta_u, delta_u_t
    steps, classes = spikes.shape[1], spikes.shape[2]
    label_du = jnp.take_along_axis(delta_u, labels[:, None, None], axis=2)[..., 0]  # [B, T]
    if options.supervise == "end":
        target = jnp.full(labels.shape, steps - 1)
    else:  # the last step whose increment exceeds the rising threshold; 0 if none
        rising = label_du > _RISING
        target = jnp.where(rising.any(1), steps - 1 - jnp.argmax(rising[:, ::-1], axis=1), 0)
    at = (jnp.arange(steps)[None, :, None] == target[:, None, None]) & (
        jnp.arange(classes)[None, None, :] == labels[:, None, None]
    )
    forced = jnp.take_along_axis(label_du, target[:, None], axis=1)[:, :, None] != 0
    spikes = jnp.where(at, forced.astype(spikes.dtype), spikes)
    if options.supervise == "end":
        floor = 1.0 / options.tau_s
        delta_u = jnp.where(at, jnp.maximum(delta_u, floor), delta_u)
        delta_u_t = jnp.where(at, jnp.maximum(delta_u_t, floor), delta_u_t)
    return spikes, delta_u, delta_u_t


def _layer_impl(x, w, labels, options: _Options):
    return _forward(x, w, labels, options)[0]


_layer = jax.custom_vjp(_layer_impl, nondiff_argnums=(3,))


def _layer_fwd(x, w, labels, options: _Options):
    spikes, delta_u, delta_u_t = _forward(x, w, labels, options)
    return spikes, (x, w, spikes, delta_u, delta_u_t)


def _time_gradients(ct, spikes, delta_u, delta_u_t, options: _Options):
    """``(e, r)``: the weight-path and input-path cotangents of the currents (docstring of
    :func:`srm_layer`), by one reverse scan over time."""
    dtype = delta_u.dtype
    steps = spikes.shape[1]
    kernels = dict(tau_m=options.tau_m, tau_s=options.tau_s, dtype=dtype)
    eps = psp_kernel(steps, **kernels)
    kappa = grad_kernel(steps, tau_grad=options.tau_grad, kind=options.grad_kernel, **kernels)
    spiked = spikes > 0
    delta = jnp.where(spiked, -ct.astype(dtype), 0.0)  # dL/dt_k at each spike
    slope_in = delta_u_t if options.grad_kernel == "exp" else delta_u
    # IEEE division: an increment of +0 gives -inf, clipped to the lower bound.
    p_w = delta * jnp.clip(-1.0 / delta_u, -_MAX_DT_DU, 0.0)
    p_in = delta * jnp.clip(-1.0 / slope_in, -options.max_dudt_inv, 0.0)

    def step(carry, inputs):
        pw, pin, distance, active = carry
        spike, pw_t, pin_t = inputs
        pw, pin = jnp.where(spike, pw_t, pw), jnp.where(spike, pin_t, pin)
        distance = jnp.where(spike, 0, distance + 1)
        active = active | spike
        index = jnp.minimum(distance, steps - 1)
        e = jnp.where(active, pw * eps[index], 0.0)
        r = jnp.where(active, -pin * kappa[index], 0.0)
        return (pw, pin, distance, active), (e, r)

    step_shape = (spikes.shape[0], *spikes.shape[2:])
    start = (
        jnp.zeros(step_shape, dtype),
        jnp.zeros(step_shape, dtype),
        jnp.zeros(step_shape, jnp.int32),
        jnp.zeros(step_shape, bool),
    )
    sequences = (spiked, p_w, p_in)
    _, (e, r) = jax.lax.scan(
        step, start, tuple(jnp.moveaxis(a, 1, 0) for a in sequences), reverse=True
    )
    return jnp.moveaxis(e, 0, 1), jnp.moveaxis(r, 0, 1)


def _layer_bwd(options: _Options, residuals, ct):
    x, w, spikes, delta_u, delta_u_t = residuals
    e, r = _time_gradients(ct, spikes, delta_u, delta_u_t, options)
    _, pullback = jax.vjp(lambda x, w: _currents(x, w, options.synapse), x, w)
    _, dw = pullback(e.astype(x.dtype))
    dx_from_r, _ = pullback(r.astype(x.dtype))
    dt_x = options.input_grad_scale * x * dx_from_r
    return -dt_x, dw.astype(w.dtype), None


_layer.defvjp(_layer_fwd, _layer_bwd)


def adjusted_avg_pool(x: jax.Array, window: int = 2) -> jax.Array:
    """Mean pooling over ``window x window`` blocks, stride ``window``, of ``x`` ``[..., H, W,
    C]``, whose backward pass is the paper's adjusted average pooling (Sec. 3.2): each input
    gets its window's cotangent times ``rho(p) = 1/(k^2 p)`` (``p`` the window's output, ``k =
    window``), 0 where ``1/p > k^2 + 1`` (``p = 0`` included). For spike inputs that is
    ``1/n_spikes`` of the window: the layer below keeps the spiking positions only, so the
    window's gradient is split equally over them and its sum kept."""
    x = floating_array("x", x)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if x.ndim < 3 or x.shape[-3] % window or x.shape[-2] % window:
        raise ValueError(
            f"x must be [..., H, W, C] with H and W divisible by window={window}, got shape "
            f"{x.shape}"
        )
    return _adjusted_pool(x, window)


def _blocks(x, k):
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // k, k, w // k, k, c)


def _mean_pool(x, k):
    return jnp.mean(_blocks(x, k), axis=(-4, -2))


_adjusted_pool = jax.custom_vjp(_mean_pool, nondiff_argnums=(1,))


def _pool_fwd(x, k):
    p = _mean_pool(x, k)
    return p, p


def _pool_bwd(k, p, ct):
    inverse = jnp.where(p > 0, 1.0 / jnp.where(p > 0, p, 1.0), jnp.inf)
    rho = jnp.where(inverse > k * k + 1, 0.0, inverse / (k * k))
    g = (ct * rho).astype(ct.dtype)
    upsampled = jnp.repeat(jnp.repeat(g, k, axis=-3), k, axis=-2)
    return (upsampled,)


_adjusted_pool.defvjp(_pool_fwd, _pool_bwd)


def count_loss(
    spikes: jax.Array, labels: jax.Array, *, desired_count: float, undesired_count: float
) -> jax.Array:
    """The authors' spike-count loss of the output spikes ``[B, T, classes]``: with ``count``
    the spikes over time and ``target`` ``desired_count`` at the label, ``undesired_count``
    elsewhere, ``delta = (count - target)/T``, zero where the label neuron already fires more
    than desired or another fewer than undesired (one-sided), and ``L = 1/2 sum_{b,t,c}
    delta^2 = (T/2) sum_{b,c} delta^2``, summed over the batch. Its gradient for each spike is
    ``+delta``, which :func:`srm_layer` reads as ``dL/dt_f = -delta``."""
    spikes = floating_array("spikes", spikes)
    if spikes.ndim != 3:
        raise ValueError(f"spikes must be [B, T, classes], got shape {spikes.shape}")
    for name, value in (("desired_count", desired_count), ("undesired_count", undesired_count)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    batch, steps, classes = spikes.shape
    labels = _class_indices(labels, batch, classes)
    is_label = jax.nn.one_hot(labels, classes, dtype=bool)
    target = jnp.where(is_label, desired_count, undesired_count).astype(spikes.dtype)
    delta = (spikes.sum(1) - target) / steps
    delta = jnp.where((is_label & (delta > 0)) | (~is_label & (delta < 0)), 0.0, delta)
    return 0.5 * steps * jnp.sum(delta**2)  # d L / d s[t] = T delta d delta / d s[t] = delta


# ----------------------------------------------------------------------------------------------
# Networks


def standardize(kernel: jax.Array, gain: jax.Array, offset: jax.Array) -> jax.Array:
    """The authors' weight standardisation (their ``norm_weight``/``norm_bias``): each output
    channel's weights (the last axis) centred and scaled over its fan-in, ``(W - mean) /
    sqrt(var + 1e-5) * gain + offset``, with the unbiased variance. Differentiated exactly by
    autodiff (the authors' hand-written backward is a diagonal approximation of it)."""
    fan_in = tuple(range(kernel.ndim - 1))
    mean = jnp.mean(kernel, axis=fan_in)
    var = jnp.var(kernel, axis=fan_in, ddof=1)
    return (kernel - mean) / jnp.sqrt(var + 1e-5) * gain + offset


class ScaleConstant(nnx.Variable):
    """A standardisation gain or offset kept fixed in training (the authors' ``norm_grad``
    0 of their CIFAR configs): state, not an optimizer parameter."""


class SRMLayer(nnx.Module):
    """A synapse (dense or conv) and SRM neurons with spike-time gradients
    (:func:`srm_layer`), its weights standardised per output channel (:func:`standardize`,
    with a ``gain`` and an ``offset`` learnt, or with ``learn_scale=False`` fixed)."""

    def __init__(
        self,
        kernel_shape: tuple[int, ...],
        synapse: Callable,
        *,
        rngs: nnx.Rngs,
        learn_scale: bool = True,
    ):
        fan_in = int(np.prod(kernel_shape[:-1]))
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), kernel_shape) / math.sqrt(fan_in))
        scale = nnx.Param if learn_scale else ScaleConstant
        self.gain = scale(jnp.ones(kernel_shape[-1]))
        self.offset = scale(jnp.zeros(kernel_shape[-1]))
        self.synapse = synapse

    def weight(self) -> jax.Array:
        return standardize(self.kernel[...], self.gain[...], self.offset[...])

    def __call__(self, x: jax.Array, neurons: dict, labels: jax.Array | None = None):
        return srm_layer(
            x, self.weight().astype(x.dtype), synapse=self.synapse, labels=labels, **neurons
        )


def _parse(architecture: str) -> list[tuple[str, int, int]]:
    """``"15C5-P2-40C5-P2-300"`` (the paper's notation; ``32C5p2`` pads by 2) as a list of
    ``("conv", channels, kernel, padding)``, ``("pool", window, 0, 0)``, ``("dense", units, 0,
    0)``."""
    layers = []
    for item in architecture.split("-"):
        text = item.strip()
        try:
            if text.upper().startswith("P"):
                layers.append(("pool", int(text[1:]), 0, 0))
            elif "C" in text.upper():
                channels, _, rest = text.upper().partition("C")
                kernel, _, padding = rest.partition("P")
                layers.append(("conv", int(channels), int(kernel), int(padding or 0)))
            else:
                layers.append(("dense", int(text), 0, 0))
        except ValueError as error:
            raise ValueError(
                f"architecture item {item!r} of {architecture!r} is not nCk[pP], Pk or n"
            ) from error
    return layers


class EventDrivenNet(nnx.Module):
    """A network of :class:`SRMLayer` and adjusted average pooling from the paper's notation
    (Table 2: ``"15C5-P2-40C5-P2-300"`` is conv 15x5x5, pool 2, conv 40x5x5, pool 2, dense 300),
    with a dense output layer of ``num_classes`` neurons. Images ``[B, H, W, C]`` are
    direct-encoded (repeated over ``steps``, the authors' encoding); ``[B, T, ...]`` inputs
    (event frames; ``input_shape`` then ``(T, H, W, C)``) are taken as they are. The output is
    the output layer's spikes ``[B, T, classes]``, with the supervisory spike when ``labels``
    are given (the trainer passes them in training: ``takes_labels``)."""

    takes_labels = True
    spiking = True

    def __init__(
        self,
        architecture: str,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        steps: int,
        neurons: dict,
        rngs: nnx.Rngs,
        learn_scale: bool = True,
    ):
        self.steps = steps
        self.num_classes = num_classes
        self.neurons = dict(neurons)
        self.plan = _parse(architecture)
        height, width, channels = input_shape[-3:]
        layers = []
        flat = None
        for kind, size, kernel, padding in self.plan:
            if kind == "pool":
                if height % size or width % size:
                    raise ValueError(
                        f"architecture {architecture!r}: a {height}x{width} map does not pool "
                        f"by {size}"
                    )
                height, width = height // size, width // size
                layers.append(None)
            elif kind == "conv":
                if flat is not None:
                    raise ValueError(f"architecture {architecture!r}: a conv after a dense layer")
                shape = (kernel, kernel, channels, size)
                synapse = conv(padding=padding)
                layers.append(SRMLayer(shape, synapse, rngs=rngs, learn_scale=learn_scale))
                height, width = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
                channels = size
            else:
                flat = flat or height * width * channels
                layers.append(SRMLayer((flat, size), dense, rngs=rngs, learn_scale=learn_scale))
                flat = size
        self.layers = nnx.List(layers)
        self.output = SRMLayer(
            (flat or height * width * channels, num_classes),
            dense,
            rngs=rngs,
            learn_scale=learn_scale,
        )

    def encode(self, x: jax.Array) -> jax.Array:
        """Images ``[B, H, W, C]`` repeated over the steps; sequences as they are."""
        if x.ndim == 4:
            return jnp.broadcast_to(x[:, None], (x.shape[0], self.steps, *x.shape[1:]))
        return x

    def stages(self) -> list[tuple[str, int, SRMLayer | None]]:
        """``(kind, size, layer)`` in order, the output layer last (kind ``"dense"``)."""
        plan = [
            (kind, size, layer)
            for (kind, size, *_), layer in zip(self.plan, self.layers, strict=True)
        ]
        return [*plan, ("dense", self.num_classes, self.output)]

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        x = self.encode(x)
        stages = self.stages()
        for i, (kind, size, layer) in enumerate(stages):
            x = _apply(kind, size, layer, x, self.neurons, labels if i == len(stages) - 1 else None)
        return x


def _apply(kind, size, layer, x, neurons, labels=None):
    """One stage of :class:`EventDrivenNet`: pooling, or a layer (flattening before a dense)."""
    if kind == "pool":
        return adjusted_avg_pool(x, size)
    return layer(_layer_input(kind, x), neurons, labels)


def _layer_input(kind: str, x: jax.Array) -> jax.Array:
    """``x`` flattened to ``[B, T, features]`` before a dense layer."""
    return x.reshape(*x.shape[:2], -1) if kind == "dense" and x.ndim > 3 else x


def initialize_scales(
    model: EventDrivenNet, images: jax.Array, *, avg_spike_init: float = 1.0
) -> list[float]:
    """The authors' weight-scale initialisation (their ``initialize``), in place: layer by
    layer, a geometric binary search over a scale ``m`` in ``[0.05, 500]`` of the layer's
    ``gain`` until the bracket's ends are within 1%, so that the layer's mean spike count per
    neuron over the last third of the window (``t >= floor(2T/3)``) meets ``1.2 *
    avg_spike_init * (T - t_start) / T``; the layer's output at the chosen scale feeds the
    next layer. Runs outside ``jit`` on one batch of ``images``; returns the scales."""
    x = model.encode(jnp.asarray(images))
    steps = x.shape[1]
    start = (2 * steps) // 3
    target = 1.2 * avg_spike_init * (steps - start) / steps
    scales = []
    for kind, size, layer in model.stages():
        if kind == "pool":
            x = _apply(kind, size, layer, x, model.neurons)
            continue
        x = _layer_input(kind, x)
        base = layer.gain[...]
        forward = jax.jit(functools.partial(srm_layer, synapse=layer.synapse, **model.neurons))
        low, high = 0.05, 500.0
        while high / low > 1.01:
            middle = math.sqrt(low * high)
            layer.gain.set_value(base * middle)
            spikes = forward(x, layer.weight().astype(x.dtype))
            rate = float(jnp.mean(jnp.sum(spikes[:, start:], axis=1)))
            low, high = (low, middle) if rate > target else (middle, high)
        scales.append(middle)
        x = spikes  # the output at the last scale tried, the one the layer keeps
    return scales


# ----------------------------------------------------------------------------------------------
# The method


@dataclasses.dataclass(frozen=True)
class EventDriven(Method):
    """Event-driven training: an :class:`EventDrivenNet` of ``architecture``, initialised by
    :func:`initialize_scales` on the first training batch, trained with the count loss
    (:func:`count_loss`) through the spike-time gradients of :func:`srm_layer`. T is
    ``model.time_steps``. The defaults are the paper's MNIST config (T = 5, tau 5/3/2.5,
    counts 5/1, AdamW with weight decay 5e-4, gradients clipped at norm 1, the threshold 1)
    with a smaller network for the bundled 8x8 digits and, for their 1,437 images (45 steps
    an epoch at batch 32, against MNIST's 1,200 at batch 50), the learning rate 1e-2 instead
    of 5e-4."""

    name = "event_driven"
    settings = MappingProxyType(
        {
            "model.time_steps": 5,
            "train.optimizer": "adamw",
            "train.lr": 1e-2,
            "train.weight_decay": 5e-4,
            "train.grad_clip": 1.0,
            "train.schedule": "cosine",
        }
    )

    architecture: str = option(
        "16C3p1-P2-32C3p1-P2-128", "layers in the paper's notation, before the output layer"
    )
    tau_m: float = option(5.0, "membrane time constant, in steps")
    tau_s: float = option(3.0, "synaptic time constant, in steps")
    tau_grad: float = option(2.5, "time constant of the gradient kernel h (Eq. 12)")
    v_th: float = option(1.0, "firing threshold")
    desired_count: float = option(5.0, "spikes wanted from the label neuron")
    undesired_count: float = option(1.0, "spikes allowed from the other output neurons")
    grad_kernel: str = option("exp", f"backward kernel: {GRAD_KERNELS}")
    input_grad_scale: float = option(1.0, "damping of input gradients (the authors' code: 0.85)")
    supervise: str = option("end", f"supervisory spike: {SUPERVISE}")
    avg_spike_init: float = option(0.5, "target spikes per neuron of the initialisation")
    learn_scale: bool = option(
        True, "learn the standardisation's gain and offset (the code's CIFAR configs: no)"
    )

    def __post_init__(self):
        _check_taus(self.tau_m, self.tau_s, self.tau_grad)
        _parse(self.architecture)
        for name, allowed in (("grad_kernel", GRAD_KERNELS), ("supervise", SUPERVISE)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("v_th", "input_grad_scale", "avg_spike_init"):
            positive_float(name, getattr(self, name))

    def neuron_options(self) -> dict:
        return {
            "tau_m": self.tau_m,
            "tau_s": self.tau_s,
            "tau_grad": self.tau_grad,
            "v_th": self.v_th,
            "input_grad_scale": self.input_grad_scale,
            "grad_kernel": self.grad_kernel,
            "supervise": self.supervise,
        }

    def check(self, config: Any) -> None:
        if not config.model.spiking:
            raise ValueError("method 'event_driven' trains spiking networks: model.spiking=True")

    def model(self, config: Any, dataset: Any) -> EventDrivenNet:
        net = EventDrivenNet(
            self.architecture,
            input_shape=tuple(dataset.input_shape),
            num_classes=dataset.num_classes,
            steps=config.model.time_steps,
            neurons=self.neuron_options(),
            rngs=nnx.Rngs(config.train.seed),
            learn_scale=self.learn_scale,
        )
        batch = dataset.train(batch_size=config.train.batch_size, seed=config.train.seed)[0]
        scales = initialize_scales(net, batch["image"], avg_spike_init=self.avg_spike_init)
        if jax.process_index() == 0:
            print(
                "event-driven initialisation: weight scales "
                + ", ".join(f"{s:.3g}" for s in scales)
            )
        return net

    def loss(self, config: Any) -> Callable:
        return functools.partial(
            count_loss, desired_count=self.desired_count, undesired_count=self.undesired_count
        )


METHOD = EventDriven
