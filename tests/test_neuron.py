"""Tests for ``jsnn.lif``, ``jsnn.lif_step`` and ``jsnn.lif_scan``: LIF/IF/PLIF neuron dynamics.

The statements checked come from Dspike (Li et al. 2021) Eq. 1-2 and CPNG Eq. 2:

    u_pre[t] = decay * u[t-1] + c[t]                     (Dspike Eq. 1)
    s[t]     = 1 iff u_pre[t] > V_th (strictly)          (Dspike Eq. 2)
    u[t]     = u_pre[t] * (1 - s[t])                     (hard reset, Dspike Eq. 2, CPNG Eq. 2)

plus the soft reset u[t] = u_pre[t] - V_th s[t] and no reset, as the issue asks for. The forward
pass is compared with a plain NumPy loop, the backward pass with an unrolled JAX loop using the
same surrogate spike function, and the invariants of the dynamics with hypothesis properties.
The fast ``lif`` is also compared with the reference ``lif_scan`` (autodiff of ``lax.scan`` over
``lif_step``) and with ``lif_step`` looped by hand. The NumPy and unrolled references are
time-major, so those tests pass ``time_axis=0``; the library's default is batch-major
``[B, T, ...]`` (``tests/test_time_convention.py``).
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.ad_checkpoint import print_saved_residuals

import jsnn
from jsnn.neuron import LIFParams, lif, lif_scan, lif_step
from jsnn.surrogate import Dspike, Rectangular, Surrogate, Triangular

RESETS = ("hard", "soft", "none")
# Reference draws keep every u_pre at least this far from V_th, so that float32 rounding
# differences between implementations can never flip a spike.
MARGIN = 1e-4


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def numpy_lif(currents, decay, v_th, reset, time_axis=0, v0=None):
    """Plain float32 NumPy loop of Dspike Eq. 1-2 with hard/soft/no reset: (spikes, u_pre)."""
    c = np.moveaxis(np.asarray(currents, np.float32), time_axis, 0)
    decay = np.asarray(decay, np.float32)
    v_th = np.asarray(v_th, np.float32)
    u = np.zeros(c.shape[1:], np.float32) if v0 is None else np.asarray(v0, np.float32)
    spikes, membrane = np.zeros_like(c), np.zeros_like(c)
    for t in range(c.shape[0]):
        u_pre = (decay * u + c[t]).astype(np.float32)
        s = (u_pre > v_th).astype(np.float32)  # strict threshold
        if reset == "hard":
            u = u_pre * (np.float32(1) - s)
        elif reset == "soft":
            u = u_pre - v_th * s
        else:
            u = u_pre
        spikes[t], membrane[t] = s, u_pre
    return np.moveaxis(spikes, 0, time_axis), np.moveaxis(membrane, 0, time_axis)


def loop_lif(currents, decay, v_th, v0, *, surrogate, reset, detach_reset):
    """Unrolled Python-loop JAX reference (time axis 0) with the same surrogate spike function."""
    u = v0
    spikes, membrane = [], []
    for t in range(currents.shape[0]):
        u_pre = decay * u + currents[t]
        s = surrogate(u_pre - v_th)
        s_reset = jax.lax.stop_gradient(s) if detach_reset else s
        if reset == "hard":
            u = u_pre * (1 - s_reset)
        elif reset == "soft":
            u = u_pre - v_th * s_reset
        else:
            u = u_pre
        spikes.append(s)
        membrane.append(u_pre)
    return jnp.stack(spikes), jnp.stack(membrane)


def min_distance(membrane, v_th, time_axis, edges=(0.0,)):
    """Smallest |u_pre - v_th - e| over the points e (threshold and surrogate window edges)."""
    x = np.moveaxis(membrane, time_axis, 0) - np.asarray(v_th, np.float32)
    return min(float(np.min(np.abs(x - e))) for e in edges)


def parameters(kind, step_shape, rng):
    """(decay, v_th) for a parameter layout: scalars, IF, per-neuron arrays, last-axis arrays."""
    if kind == "scalar":
        return 0.8, 0.7
    if kind == "if":  # decay = 1 gives IF neurons
        return 1.0, 1.1
    shape = step_shape if kind == "per_neuron" else step_shape[-1:]
    decay = rng.uniform(0.3, 1.0, shape).astype(np.float32)
    decay.flat[0] = 1.0  # the closed end of (0, 1]
    v_th = rng.uniform(0.4, 1.5, shape).astype(np.float32)
    return decay, v_th


# ---------------------------------------------------------------------------------------------
# Forward pass against NumPy (Dspike Eq. 1-2, soft and no reset)
# ---------------------------------------------------------------------------------------------

# lif jitted once with its static options: decay, v_th, v0 and the surrogate are traced
# arguments, so cases sharing shapes share one compilation (keeps the file fast). The eager,
# validating path is exercised by the validation and composition tests below.
JIT_LIF = jax.jit(lif, static_argnames=("reset", "time_axis", "detach_reset", "return_membrane"))

LAYOUTS = [
    ((7, 5), 0),  # [T, N]
    ((6, 2, 5), 0),  # [T, B, N]
    ((2, 6, 3, 4), 1),  # [B, T, C, H]
    ((3, 6, 4), -2),  # [B, T, N], negative axis
    ((3, 4, 6), -1),  # [B, N, T], negative axis
]
# (parameter layout, v0 given): scalar LIF, scalar IF (decay = 1), per-neuron arrays of one
# step's shape (one decay element = 1). Arrays over the last axis only are tested eagerly below.
VARIANTS = [("scalar", False), ("if", False), ("per_neuron", True)]


def check_against_numpy(shape, time_axis, reset, kind, with_v0, seed_text):
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    step_shape = tuple(np.delete(shape, time_axis % len(shape)))
    decay, v_th = parameters(kind, step_shape, rng)
    for _ in range(50):  # resample until no u_pre lies within MARGIN of V_th ...
        currents = rng.uniform(-0.6, 1.4, shape).astype(np.float32)
        v0 = rng.uniform(-0.5, 1.0, step_shape).astype(np.float32) if with_v0 else None
        want_s, want_u = numpy_lif(currents, decay, v_th, reset, time_axis, v0)
        # ... and the case exercises both spikes and silence.
        if min_distance(want_u, v_th, time_axis) > MARGIN and 0 < want_s.sum() < want_s.size:
            break
    else:
        pytest.fail("could not draw currents away from the threshold")
    kwargs = dict(
        decay=decay, v_th=v_th, surrogate=Dspike(), reset=reset, time_axis=time_axis, v0=v0
    )
    got_s, got_u = JIT_LIF(jnp.asarray(currents), **kwargs, return_membrane=True)
    assert got_s.shape == got_u.shape == shape
    assert got_s.dtype == got_u.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got_s), want_s)
    np.testing.assert_allclose(np.asarray(got_u), want_u, rtol=0, atol=1e-6)
    return currents, kwargs, want_s


@pytest.mark.parametrize(("shape", "time_axis"), LAYOUTS)
@pytest.mark.parametrize("reset", RESETS)
def test_lif_matches_numpy_loop(shape, time_axis, reset):
    # Dspike Eq. 1-2 (hard reset), soft and no reset, against a plain NumPy loop.
    for kind, with_v0 in VARIANTS:
        check_against_numpy(shape, time_axis, reset, kind, with_v0, f"{shape}{time_axis}{kind}")


@pytest.mark.parametrize("reset", RESETS)
def test_lif_eager_matches_numpy_loop_with_broadcast_parameters(reset):
    # Eager call (validation on concrete values) with decay/v_th over the last axis only.
    shape = (6, 2, 5)
    currents, kwargs, want_s = check_against_numpy(shape, 0, reset, "last_axis", True, reset)
    got_s, got_u = lif(jnp.asarray(currents), **kwargs, return_membrane=True)
    want_s, want_u = numpy_lif(currents, kwargs["decay"], kwargs["v_th"], reset, 0, kwargs["v0"])
    np.testing.assert_array_equal(np.asarray(got_s), want_s)
    np.testing.assert_allclose(np.asarray(got_u), want_u, rtol=0, atol=1e-6)
    # Without return_membrane only the spikes come back.
    only_s = lif(jnp.asarray(currents), **kwargs)
    assert isinstance(only_s, jax.Array)
    np.testing.assert_array_equal(np.asarray(only_s), want_s)


def test_single_time_step():
    # T = 1: u_pre[0] = decay * v0 + c[0].
    c = jnp.array([[0.3, 0.9, -0.2]], jnp.float32)
    v0 = jnp.array([0.5, -0.5, 2.0], jnp.float32)
    s, u = lif(c, decay=0.5, v_th=0.5, surrogate=Dspike(), v0=v0, time_axis=0, return_membrane=True)
    np.testing.assert_allclose(u, [[0.55, 0.65, 0.8]], rtol=1e-6)
    np.testing.assert_array_equal(s, [[1.0, 1.0, 1.0]])


def test_strict_threshold_and_default_hard_reset():
    # Dspike Eq. 2: a spike iff u_pre > V_th strictly; u_pre == V_th does not fire.
    currents = jnp.array([[0.5], [0.5], [0.25], [0.5]], jnp.float32)  # [T, N]
    kwargs = dict(decay=1.0, v_th=0.5, surrogate=Triangular(), time_axis=0)
    s, u = lif(currents, **kwargs, return_membrane=True)
    np.testing.assert_array_equal(np.asarray(s)[:, 0], [0.0, 1.0, 0.0, 1.0])
    # Hard reset is the default: after the spike at t=1 the membrane restarts from 0.
    np.testing.assert_array_equal(np.asarray(u)[:, 0], [0.5, 1.0, 0.25, 0.75])


# ---------------------------------------------------------------------------------------------
# Gradients against an unrolled JAX loop with the same surrogate
# ---------------------------------------------------------------------------------------------

SURROGATES = {
    "dspike": (Dspike(b=2.0, width=1.0), (0.0, -0.5, 0.5)),
    "triangular": (Triangular(beta=1.0), (0.0,)),
    "rectangular": (Rectangular(beta=1.0), (0.0, -0.5, 0.5)),
}


def gradient_case(reset, edges, seed, shape=(8, 4)):
    """Currents, decay, v_th, v0 and loss weights with u_pre away from the threshold and the
    surrogate's window edges (where Dspike and Rectangular jump)."""
    rng = np.random.default_rng(seed)
    n = shape[1:]
    decay = rng.uniform(0.4, 1.0, n).astype(np.float32)
    v_th = rng.uniform(0.5, 1.0, n).astype(np.float32)
    w_s = rng.normal(size=shape).astype(np.float32)
    w_u = rng.normal(size=shape).astype(np.float32)
    for _ in range(50):
        c = rng.uniform(-0.4, 1.2, shape).astype(np.float32)
        v0 = rng.uniform(-0.3, 0.8, n).astype(np.float32)
        s, u = numpy_lif(c, decay, v_th, reset, 0, v0)
        if min_distance(u, v_th, 0, edges) > MARGIN and 0 < s.sum() < s.size:
            return tuple(map(jnp.asarray, (c, decay, v_th, v0, w_s, w_u)))
    raise AssertionError("could not draw a gradient case away from the kinks")


def weighted_loss(outputs, w_s, w_u):
    s, u = outputs
    return jnp.sum(s * w_s) + jnp.sum(u * w_u)


@functools.partial(jax.jit, static_argnames=("reset", "detach_reset"))
def jsnn_value_and_grads(args, w_s, w_u, surrogate, *, reset, detach_reset):
    """Loss sum(s w_s) + sum(u_pre w_u) of lif and its gradient w.r.t. c, decay, v_th, v0."""

    def loss(c, decay, v_th, v0):
        outputs = lif(
            c,
            decay=decay,
            v_th=v_th,
            surrogate=surrogate,
            reset=reset,
            time_axis=0,
            v0=v0,
            detach_reset=detach_reset,
            return_membrane=True,
        )
        return weighted_loss(outputs, w_s, w_u)

    return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*args)


def loop_value_and_grads(args, w_s, w_u, surrogate, *, reset, detach_reset):
    """The same loss and gradients from the unrolled loop reference, run eagerly."""

    def loss(c, decay, v_th, v0):
        outputs = loop_lif(
            c, decay, v_th, v0, surrogate=surrogate, reset=reset, detach_reset=detach_reset
        )
        return weighted_loss(outputs, w_s, w_u)

    return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*args)


ARGUMENTS = ("currents", "decay", "v_th", "v0")


@pytest.mark.parametrize("name", ["dspike", "triangular"])
@pytest.mark.parametrize("reset", RESETS)
def test_gradients_match_unrolled_loop(name, reset):
    # Backpropagation through time of Dspike Eq. 1-2 / CPNG Eq. 2 with the surrogate derivative
    # in place of dH/dx; with detach_reset the reset term passes no gradient through s[t].
    surrogate, edges = SURROGATES[name]
    c, decay, v_th, v0, w_s, w_u = gradient_case(reset, edges, seed=len(name) + len(reset))
    args = (c, decay, v_th, v0)
    grads = {}
    for detach_reset in (False, True):
        options = dict(reset=reset, detach_reset=detach_reset)
        value, got = jsnn_value_and_grads(args, w_s, w_u, surrogate, **options)
        want_value, want = loop_value_and_grads(args, w_s, w_u, surrogate, **options)
        np.testing.assert_allclose(value, want_value, rtol=1e-6, atol=1e-5)
        for arg, g, w in zip(ARGUMENTS, got, want, strict=True):
            assert g.shape == w.shape, arg
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{arg} {options}")
            # The case is not trivial: every argument receives a gradient.
            assert np.all(np.isfinite(g)) and np.any(g != 0), arg
        grads[detach_reset] = got

    # detach_reset leaves the forward pass alone ...
    kwargs = dict(decay=decay, v_th=v_th, surrogate=surrogate, reset=reset, time_axis=0, v0=v0)
    kept = JIT_LIF(c, **kwargs, return_membrane=True)
    detached = JIT_LIF(c, **kwargs, detach_reset=True, return_membrane=True)
    for a, b in zip(kept, detached, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ... and changes the gradient exactly when there is a reset term to detach.
    for arg, a, b in zip(ARGUMENTS, grads[False], grads[True], strict=True):
        if reset == "none":
            np.testing.assert_array_equal(a, b, err_msg=arg)
        else:
            assert not np.allclose(a, b, rtol=1e-4, atol=1e-6), arg


def test_gradients_match_unrolled_loop_rectangular():
    # A third surrogate, with a discontinuous window (CPNG Eq. 4).
    surrogate, edges = SURROGATES["rectangular"]
    c, decay, v_th, v0, w_s, w_u = gradient_case("hard", edges, seed=11)
    args = (c, decay, v_th, v0)
    options = dict(reset="hard", detach_reset=False)
    _, got = jsnn_value_and_grads(args, w_s, w_u, surrogate, **options)
    _, want = loop_value_and_grads(args, w_s, w_u, surrogate, **options)
    for arg, g, w in zip(ARGUMENTS, got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=arg)


@pytest.mark.parametrize("parameter_shape", [(), (3, 4)])
@pytest.mark.parametrize("reset", RESETS)
def test_gradients_on_time_axis_one_with_broadcast_parameters(reset, parameter_shape):
    # Batch-major [B, T, N] as the layers call it, decay and v_th scalar (gradients summed over
    # time, batch and neurons) or one per neuron of a step [B, N] (summed over time only); the
    # reference is the time-major loop.
    surrogate, edges = SURROGATES["dspike"]
    rng = np.random.default_rng(3)
    decay = np.full(parameter_shape, 0.7, np.float32) + rng.uniform(0, 0.2, parameter_shape)
    v_th = np.full(parameter_shape, 0.8, np.float32) + rng.uniform(0, 0.2, parameter_shape)
    decay, v_th = decay.astype(np.float32), v_th.astype(np.float32)
    for _ in range(50):
        c = rng.uniform(-0.4, 1.2, (8, 3, 4)).astype(np.float32)  # [T, B, N]
        s, u = numpy_lif(c, decay, v_th, reset)
        if min_distance(u, v_th, 0, edges) > MARGIN and 0 < s.sum() < s.size:
            break
    w_s, w_u = rng.normal(size=(2, 3, 8, 4)).astype(np.float32)  # [B, T, N]

    def loss(c, decay, v_th):
        options = dict(surrogate=surrogate, reset=reset, time_axis=1, return_membrane=True)
        outputs = lif(c, decay=decay, v_th=v_th, **options)
        return weighted_loss(outputs, w_s, w_u)

    def reference(c, decay, v_th):
        zeros = jnp.zeros(c.shape[1:])
        options = dict(surrogate=surrogate, reset=reset, detach_reset=False)
        outputs = loop_lif(c, decay, v_th, zeros, **options)
        return weighted_loss([jnp.swapaxes(y, 0, 1) for y in outputs], w_s, w_u)

    args = (jnp.swapaxes(jnp.asarray(c), 0, 1), decay, v_th)
    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    want = jax.grad(reference, argnums=(0, 1, 2))(jnp.asarray(c), decay, v_th)
    want = (jnp.swapaxes(want[0], 0, 1), *want[1:])
    for arg, g, w in zip(ARGUMENTS, got, want, strict=False):
        assert g.shape == w.shape, arg
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=arg)


def test_backward_keeps_one_membrane_sized_residual(capsys):
    # The layer's custom_vjp stores u_pre only: spikes, resets and earlier membranes are
    # recomputed in the backward loop.
    c = jnp.ones((4, 9, 5))
    print_saved_residuals(lambda c: lif(c, decay=0.5, v_th=1.0, surrogate=Dspike(), time_axis=1), c)
    residuals = capsys.readouterr().out.splitlines()
    sized = [line.split()[0] for line in residuals if "[4,9,5]" in line]
    assert sized in (["f32[4,9,5]"], ["float32[4,9,5]"]), residuals


def test_bfloat16_currents_integrate_in_float32():
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.uniform(-0.5, 1.5, (2, 30, 16)), jnp.bfloat16)
    kwargs = dict(decay=0.9, v_th=1.0, surrogate=Dspike(), time_axis=1, return_membrane=True)
    s, u = lif(c, **kwargs)
    assert s.dtype == jnp.bfloat16 and u.dtype == jnp.float32
    # Exactly the float32 dynamics of the same (rounded) currents: the state never rounds.
    want_s, want_u = lif(c.astype(jnp.float32), **kwargs)
    np.testing.assert_array_equal(np.asarray(s, np.float32), want_s)
    np.testing.assert_array_equal(u, want_u)

    def loss(c):
        return jnp.sum(lif(c, **{**kwargs, "return_membrane": False}).astype(jnp.float32))

    grad = jax.grad(loss)(c)
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(grad, np.float32), jax.grad(loss)(c.astype(jnp.float32)), rtol=1e-2, atol=1e-2
    )


# ---------------------------------------------------------------------------------------------
# Properties of the dynamics (hypothesis)
# ---------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# One shape for all examples: JIT_LIF then compiles once per test (decay, v_th are traced).
PROPERTY_SHAPE = (12, 3)
currents_arrays = hnp.arrays(
    np.float32,
    PROPERTY_SHAPE,
    # XLA on CPU flushes subnormals to zero, which is no property of the neuron: leave them out.
    elements=st.floats(-3.0, 3.0, width=32, allow_subnormal=False),
)
decays = st.floats(0.01, 1.0)  # (0, 1], 1 included (IF)
thresholds = st.floats(0.05, 3.0)


@PROPERTY_SETTINGS
@given(c=currents_arrays, decay=decays, v_th=thresholds, reset=st.sampled_from(RESETS))
def test_spikes_are_binary(c, decay, v_th, reset):
    s = np.asarray(JIT_LIF(c, decay=decay, v_th=v_th, surrogate=Dspike(), reset=reset, time_axis=0))
    assert s.shape == c.shape
    assert np.all((s == 0) | (s == 1))


@PROPERTY_SETTINGS
@given(c=currents_arrays, decay=decays, v_th=thresholds)
def test_hard_reset_returns_membrane_to_zero(c, decay, v_th):
    # Dspike Eq. 2 / CPNG Eq. 2: u[t] = u_pre[t] (1 - s[t]) = 0 after a spike, so the next
    # pre-spike membrane is exactly the next input: u_pre[t+1] = decay * 0 + c[t+1].
    s, u = JIT_LIF(
        c,
        decay=decay,
        v_th=v_th,
        surrogate=Triangular(),
        reset="hard",
        time_axis=0,
        return_membrane=True,
    )
    s, u = np.asarray(s), np.asarray(u)
    fired = s[:-1] == 1
    np.testing.assert_array_equal(u[1:][fired], c[1:][fired])
    # Dspike Eq. 2: the spikes are the strict threshold of the returned membrane.
    np.testing.assert_array_equal(s, (u > np.float32(v_th)).astype(np.float32))


@PROPERTY_SETTINGS
@given(c=currents_arrays, v_th=thresholds)
def test_soft_reset_if_conserves_charge(c, v_th):
    # Soft reset (reset by subtraction) with IF (decay = 1): u_pre[t] is the sum of the inputs
    # so far minus V_th times the number of spikes before t.
    kwargs = dict(decay=1.0, v_th=v_th, surrogate=Dspike(), reset="soft", time_axis=0)
    s, u = JIT_LIF(c, **kwargs, return_membrane=True)
    s, u = np.asarray(s, np.float64), np.asarray(u, np.float64)
    earlier_spikes = np.cumsum(s, axis=0) - s
    want = np.cumsum(c.astype(np.float64), axis=0) - float(np.float32(v_th)) * earlier_spikes
    scale = 1.0 + np.max(np.cumsum(np.abs(c.astype(np.float64)), axis=0))
    np.testing.assert_allclose(u, want, rtol=0, atol=1e-6 * scale)


IF_STEPS = 20


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(v_th=st.floats(0.1, 2.0), ratio=st.floats(0.01, 1.0))
def test_if_soft_reset_constant_input_spike_count(v_th, ratio):
    # IF + soft reset with a constant input I in (0, V_th]: u_pre[t] = t I - V_th n[t-1] > V_th
    # (strict threshold) gives n[t] = ceil(t I / V_th) - 1 spikes by step t = 1..T.
    v_th32 = np.float32(v_th)
    current = np.float32(ratio * v_th)
    assume(0 < current <= v_th32)
    x = np.arange(1, IF_STEPS + 1) * (float(current) / float(v_th32))
    # Keep every t I / V_th away from an integer so float32 rounding cannot flip a spike.
    assume(np.all(np.abs(x - np.round(x)) > 1e-3 * np.maximum(1.0, x)))
    c = jnp.full((IF_STEPS, 2), current, jnp.float32)
    kwargs = dict(decay=1.0, v_th=v_th32, surrogate=Dspike(), reset="soft", time_axis=0)
    s = np.asarray(JIT_LIF(c, **kwargs))
    np.testing.assert_array_equal(np.cumsum(s[:, 0]), np.ceil(x) - 1)
    np.testing.assert_array_equal(s[:, 1], s[:, 0])


# ---------------------------------------------------------------------------------------------
# Validation at trace time
# ---------------------------------------------------------------------------------------------

C2 = np.zeros((4, 3), np.float32)  # [T, N]


def call(**overrides):
    kwargs = dict(currents=C2, decay=0.9, v_th=1.0, surrogate=Dspike(), time_axis=0)
    kwargs.update(overrides)
    currents = kwargs.pop("currents")
    return lif(currents, **kwargs)


INVALID = [
    # (overrides, error, text the message must contain: argument name and value)
    ({"decay": 0.0}, ValueError, ("decay", "0.0", "(0, 1]")),
    ({"decay": -0.1}, ValueError, ("decay", "-0.1", "(0, 1]")),
    ({"decay": 1.5}, ValueError, ("decay", "1.5", "(0, 1]")),
    ({"decay": float("nan")}, ValueError, ("decay", "nan")),
    ({"decay": np.array([0.5, 1.25, 0.9], np.float32)}, ValueError, ("decay", "1.25")),
    ({"decay": jnp.array([0.5, 0.0, 0.9])}, ValueError, ("decay", "0.")),
    ({"v_th": 0.0}, ValueError, ("v_th", "0.0", "> 0")),
    ({"v_th": -1.0}, ValueError, ("v_th", "-1.0", "> 0")),
    ({"v_th": float("nan")}, ValueError, ("v_th", "nan")),
    ({"v_th": float("inf")}, ValueError, ("v_th", "inf")),
    ({"v_th": np.array([1.0, -2.0, 1.0])}, ValueError, ("v_th", "-2.")),
    ({"time_axis": 5}, ValueError, ("time_axis", "5", "(4, 3)")),
    ({"time_axis": -5}, ValueError, ("time_axis", "-5", "(4, 3)")),
    ({"time_axis": 2}, ValueError, ("time_axis", "2", "(4, 3)")),
    ({"time_axis": -3}, ValueError, ("time_axis", "-3", "(4, 3)")),
    ({"currents": np.zeros((4, 3), np.int32)}, TypeError, ("currents", "int32")),
    ({"currents": np.zeros((4, 3), bool)}, TypeError, ("currents", "bool")),
    ({"reset": "bogus"}, ValueError, ("reset", "'bogus'", "hard")),
    ({"surrogate": lambda x: x > 0}, TypeError, ("surrogate", "Surrogate")),
    ({"surrogate": "dspike"}, TypeError, ("surrogate", "dspike")),
    ({"v0": np.zeros((4,), np.float32)}, ValueError, ("v0", "(4,)", "(3,)")),
    ({"v0": np.zeros((1, 3), np.float32)}, ValueError, ("v0", "(1, 3)", "(3,)")),
    ({"v0": np.zeros((3,), np.int32)}, TypeError, ("v0", "int32")),
    ({"decay": np.full((4,), 0.5, np.float32)}, ValueError, ("decay", "(4,)", "(3,)")),
    ({"v_th": np.full((2,), 0.5, np.float32)}, ValueError, ("v_th", "(2,)", "(3,)")),
    # Arrays that broadcast with one time step but would change its shape (spikes and the
    # membrane must keep the shape of one step of currents).
    ({"decay": np.full((2, 3), 0.5, np.float32)}, ValueError, ("decay", "(2, 3)", "(3,)")),
    ({"decay": np.full((1, 3), 0.5, np.float32)}, ValueError, ("decay", "(1, 3)", "(3,)")),
    ({"v_th": np.full((2, 3), 0.5, np.float32)}, ValueError, ("v_th", "(2, 3)", "(3,)")),
    (
        {"v_th": np.full((2, 3), 0.5, np.float32), "reset": "none"},
        ValueError,
        ("v_th", "(2, 3)", "(3,)"),
    ),
]


def case_id(overrides):
    def short(value):
        if isinstance(value, np.ndarray | jax.Array):
            return f"{value.dtype}[{'x'.join(map(str, value.shape))}]"
        return getattr(value, "__name__", repr(value))

    return ",".join(f"{key}={short(value)}" for key, value in overrides.items())


@pytest.mark.parametrize(
    ("overrides", "error", "needles"), INVALID, ids=[case_id(case[0]) for case in INVALID]
)
def test_invalid_inputs_raise_naming_argument_and_value(overrides, error, needles):
    with pytest.raises(error) as info:
        call(**overrides)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.mark.parametrize("overrides", [{"decay": 1.0}, {"v_th": 1e-3}, {"time_axis": -2}])
def test_boundary_values_are_accepted(overrides):
    assert call(**overrides).shape == C2.shape


def test_traced_parameters_do_not_raise():
    # PLIF: decay = sigmoid(w) is traced under grad/jit; validation must skip it.
    c = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 6, 3)), jnp.float32)  # [B, T, N]

    def loss(w, v_th):
        s, u = lif(c, decay=jax.nn.sigmoid(w), v_th=v_th, surrogate=Dspike(), return_membrane=True)
        return jnp.sum(s) + jnp.sum(u)

    w = jnp.array([0.0, 1.0, -1.0])
    grads = jax.grad(loss, argnums=(0, 1))(w, jnp.float32(0.6))
    assert all(np.all(np.isfinite(g)) for g in grads)
    jitted = jax.jit(lambda d, v: lif(c, decay=d, v_th=v, surrogate=Dspike()))
    np.testing.assert_array_equal(
        jitted(jnp.float32(0.7), jnp.float32(0.6)),
        lif(c, decay=0.7, v_th=0.6, surrogate=Dspike()),
    )
    jax.jit(jax.grad(loss))(w, jnp.float32(0.6))


# ---------------------------------------------------------------------------------------------
# The step, its reference scan and the final state
# ---------------------------------------------------------------------------------------------


def batch_major_case(reset, edges, seed, shape=(3, 8, 4)):
    """Batch-major ``[B, T, N]`` currents, per-neuron decay and v_th, v0 ``[B, N]`` and loss
    weights, with every u_pre away from the threshold and the surrogate's window edges."""
    rng = np.random.default_rng(seed)
    batch, _, n = shape
    decay = rng.uniform(0.4, 1.0, (n,)).astype(np.float32)
    v_th = rng.uniform(0.5, 1.0, (n,)).astype(np.float32)
    w_s = rng.normal(size=shape).astype(np.float32)
    w_state = rng.normal(size=(batch, n)).astype(np.float32)
    for _ in range(50):
        c = rng.uniform(-0.4, 1.2, shape).astype(np.float32)
        v0 = rng.uniform(-0.3, 0.8, (batch, n)).astype(np.float32)
        s, u = numpy_lif(c, decay, v_th, reset, 1, v0)
        if min_distance(u, v_th, 1, edges) > MARGIN and 0 < s.sum() < s.size:
            return tuple(map(jnp.asarray, (c, decay, v_th, v0, w_s, w_state)))
    raise AssertionError("could not draw a batch-major case away from the kinks")


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("reset", RESETS)
def test_lif_scan_is_the_oracle_of_lif(reset, detach_reset):
    # lif_scan (autodiff of lax.scan over lif_step) and lif (hand-written backward) are the same
    # function of currents, decay, v_th and v0: identical spikes and final state, matching
    # gradients, through the spikes alone and through the final state as well.
    surrogate, edges = SURROGATES["dspike"]
    c, decay, v_th, v0, w_s, w_state = batch_major_case(reset, edges, seed=len(reset))
    options = dict(surrogate=surrogate, reset=reset, detach_reset=detach_reset)

    def fast(c, decay, v_th, v0):
        spikes, state = lif(c, decay=decay, v_th=v_th, v0=v0, return_state=True, **options)
        return spikes, state

    def reference(c, decay, v_th, v0):
        state, spikes = lif_scan(c, LIFParams(decay=decay, v_th=v_th, **options), v0=v0)
        return spikes, state

    args = (c, decay, v_th, v0)
    (got_s, got_state), (want_s, want_state) = fast(*args), reference(*args)
    assert got_s.shape == want_s.shape == c.shape and got_state.shape == v0.shape
    np.testing.assert_array_equal(np.asarray(got_s), np.asarray(want_s))
    np.testing.assert_allclose(got_state, want_state, rtol=0, atol=1e-6)
    # The spikes-only call (the fast path layers use) gives the same spikes.
    np.testing.assert_array_equal(
        np.asarray(lif(c, decay=decay, v_th=v_th, v0=v0, **options)), got_s
    )

    def spike_loss(f):
        return lambda *a: jnp.sum(f(*a)[0] * w_s)

    def spike_and_state_loss(f):
        return lambda *a: jnp.sum(f(*a)[0] * w_s) + jnp.sum(f(*a)[1] * w_state)

    def spikes_only(c, decay, v_th, v0):
        return (lif(c, decay=decay, v_th=v_th, v0=v0, **options),)

    for loss, f_fast in ((spike_loss, spikes_only), (spike_and_state_loss, fast)):
        got = jax.jit(jax.grad(loss(f_fast), argnums=(0, 1, 2, 3)))(*args)
        want = jax.jit(jax.grad(loss(reference), argnums=(0, 1, 2, 3)))(*args)
        for arg, g, w in zip(ARGUMENTS, got, want, strict=True):
            assert g.shape == w.shape, arg
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{arg} {loss}")
            assert np.all(np.isfinite(g)) and np.any(g != 0), arg


@pytest.mark.parametrize("reset", RESETS)
def test_lif_step_looped_by_hand_equals_lif(reset):
    # lif_step is one step of Dspike Eq. 1-2: a Python loop of it over t is lif over [B, T, N].
    surrogate, edges = SURROGATES["triangular"]
    c, decay, v_th, v0, _, _ = batch_major_case(reset, edges, seed=7 + len(reset))
    params = LIFParams(decay=decay, v_th=v_th, surrogate=surrogate, reset=reset)
    step = jax.jit(lif_step)
    state, spikes = v0, []
    for t in range(c.shape[1]):
        state, spike = step(state, c[:, t], params)
        spikes.append(spike)
    want_s, want_u, want_state = lif(
        c,
        decay=decay,
        v_th=v_th,
        surrogate=surrogate,
        reset=reset,
        v0=v0,
        return_membrane=True,
        return_state=True,
    )
    np.testing.assert_array_equal(np.stack(spikes, axis=1), want_s)
    np.testing.assert_allclose(state, want_state, rtol=0, atol=1e-6)
    # The state after the last step is the reset of the last pre-spike membrane (Dspike Eq. 2).
    if reset == "hard":
        np.testing.assert_array_equal(state, want_u[:, -1] * (1 - want_s[:, -1]))
    # Parameters are traced arguments of the jitted step: new values, no new compilation.
    before = step._cache_size()
    step(
        v0, c[:, 0], LIFParams(decay=0.5 * decay, v_th=v_th, surrogate=Triangular(2.0), reset=reset)
    )
    assert step._cache_size() == before


@pytest.mark.parametrize("reset", RESETS)
def test_final_state_continues_the_sequence(reset):
    # lif(..., return_state=True) on the first steps, then lif(..., v0=state) on the rest, is
    # one call over the whole sequence: same spikes, and the same gradients, through the state.
    surrogate, edges = SURROGATES["dspike"]
    c, decay, v_th, v0, w_s, _ = batch_major_case(reset, edges, seed=20 + len(reset))
    kwargs = dict(decay=decay, v_th=v_th, surrogate=surrogate, reset=reset)
    whole = lif(c, v0=v0, **kwargs)

    def split(c):
        first, state = lif(c[:, :3], v0=v0, return_state=True, **kwargs)
        rest, u_pre, last = lif(
            c[:, 3:], v0=state, return_membrane=True, return_state=True, **kwargs
        )
        assert u_pre.shape == rest.shape and last.shape == state.shape == v0.shape
        return jnp.concatenate([first, rest], axis=1)

    np.testing.assert_array_equal(np.asarray(split(c)), np.asarray(whole))
    got = jax.grad(lambda c: jnp.sum(split(c) * w_s))(c)
    want = jax.grad(lambda c: jnp.sum(lif(c, v0=v0, **kwargs) * w_s))(c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.any(got[:, :3] != 0)


def test_lif_params_is_a_pytree_with_static_reset():
    params = LIFParams(decay=0.8, v_th=jnp.array([0.5, 0.6]), surrogate=Dspike(2.0), reset="soft")
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    assert paths == [".decay", ".v_th", ".surrogate.b", ".surrogate.width"]
    # reset and detach_reset are in the structure, not in the leaves.
    other = LIFParams(decay=0.8, v_th=jnp.array([0.5, 0.6]), surrogate=Dspike(2.0), reset="hard")
    assert jax.tree.structure(params) != jax.tree.structure(other)
    # Transformations rebuild it without the construction checks (a zero decay is no error).
    zeros = jax.tree.map(jnp.zeros_like, params)
    assert zeros.reset == "soft" and not zeros.detach_reset
    assert float(zeros.decay) == 0.0 and isinstance(zeros.surrogate, Dspike)
    # Built from traced values under vmap (the checks skip them): one step per decay.
    u = jnp.ones((3,))
    states, _ = jax.vmap(
        lambda d: lif_step(u, jnp.zeros(3), LIFParams(decay=d, v_th=1.0, surrogate=Dspike()))
    )(jnp.array([0.2, 0.9]))
    np.testing.assert_allclose(states, [[0.2] * 3, [0.9] * 3], rtol=1e-6)


PARAMS_INVALID = [
    ({"reset": "bogus"}, ValueError, ("reset", "'bogus'", "hard")),
    ({"decay": 0.0}, ValueError, ("decay", "0.0", "(0, 1]")),
    ({"decay": 1.5}, ValueError, ("decay", "1.5", "(0, 1]")),
    ({"decay": np.array([0.5, -1.0])}, ValueError, ("decay", "-1.")),
    ({"v_th": 0.0}, ValueError, ("v_th", "0.0", "> 0")),
    ({"v_th": -1.0}, ValueError, ("v_th", "-1.0", "> 0")),
    ({"surrogate": "dspike"}, TypeError, ("surrogate", "dspike", "Surrogate")),
    ({"detach_reset": "yes"}, TypeError, ("detach_reset", "'yes'")),
]


@pytest.mark.parametrize(
    ("overrides", "error", "needles"),
    PARAMS_INVALID,
    ids=[case_id(case[0]) for case in PARAMS_INVALID],
)
def test_lif_params_reject_bad_values(overrides, error, needles):
    kwargs = {"decay": 0.9, "v_th": 1.0, "surrogate": Dspike(), **overrides}
    with pytest.raises(error) as info:
        LIFParams(**kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_lif_step_and_scan_reject_bad_inputs():
    params = LIFParams(decay=0.9, v_th=1.0, surrogate=Dspike())
    u = jnp.zeros((2, 3))
    cases = [
        (lambda: lif_step(u, u, {"decay": 0.9}), TypeError, ("params", "LIFParams")),
        (lambda: lif_step(u, jnp.zeros((2, 4)), params), ValueError, ("current", "(2, 4)")),
        (lambda: lif_step(u.astype(jnp.int32), u, params), TypeError, ("state", "int32")),
        (
            lambda: lif_step(
                u, u, LIFParams(decay=jnp.full((4,), 0.5), v_th=1.0, surrogate=Dspike())
            ),
            ValueError,
            ("decay", "(4,)", "(2, 3)"),
        ),
        (lambda: lif_scan(jnp.zeros(5), params), ValueError, ("[B, T, ...]", "(5,)")),
        (lambda: lif_scan(jnp.zeros((2, 5, 3)), params, v0=u[:, :2]), ValueError, ("v0", "(2, 2)")),
        (lambda: lif_scan(jnp.zeros((2, 5, 3)), None), TypeError, ("params", "None")),
    ]
    for call_, error, needles in cases:
        with pytest.raises(error) as info:
            call_()
        for needle in needles:
            assert needle in str(info.value), (needle, str(info.value))


# ---------------------------------------------------------------------------------------------
# Composition with jit, vmap and grad (PLIF)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", RESETS)
def test_jit_with_static_kwargs_matches_eager(reset):
    rng = np.random.default_rng(1)
    c = jnp.asarray(rng.uniform(-0.5, 1.5, (2, 6, 3)), jnp.float32)  # [B, T, N]
    decay = jnp.asarray(rng.uniform(0.5, 1.0, (3,)), jnp.float32)
    kwargs = dict(decay=decay, v_th=0.8, surrogate=Triangular(), reset=reset, time_axis=1)
    kwargs["return_membrane"] = True
    eager = lif(c, **kwargs)
    jitted = jax.jit(functools.partial(lif, **kwargs))(c)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


@pytest.mark.parametrize("reset", RESETS)
def test_vmap_over_batch_equals_batched_call(reset):
    rng = np.random.default_rng(2)
    c = jnp.asarray(rng.uniform(-0.5, 1.5, (5, 3, 4)), jnp.float32)  # [T, B, N]
    v0 = jnp.asarray(rng.uniform(0, 0.5, (3, 4)), jnp.float32)
    kwargs = dict(decay=0.9, v_th=0.75, surrogate=Dspike(), reset=reset, return_membrane=True)
    time_major = dict(kwargs, time_axis=0)
    batched = lif(c, v0=v0, **time_major)
    mapped = jax.vmap(lambda x, u: lif(x, v0=u, **time_major), in_axes=(1, 0), out_axes=1)(c, v0)
    for a, b in zip(batched, mapped, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)
    # vmap over a leading batch axis with the time axis inside at 0 equals the batch-major
    # default (time_axis=1).
    cb = jnp.moveaxis(c, 1, 0)  # [B, T, N]
    mapped = jax.vmap(lambda x, u: lif(x, v0=u, **time_major))(cb, v0)
    direct = lif(cb, v0=v0, **kwargs)
    for a, b in zip(direct, mapped, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)


def test_vmap_over_decays_equals_separate_calls():
    # A batch of (traced) decays under vmap: no validation error, same as one call per decay.
    c = jnp.asarray(np.random.default_rng(5).uniform(-0.5, 1.5, (6, 4)), jnp.float32)
    decays = jnp.array([0.3, 0.6, 1.0], jnp.float32)
    mapped = jax.vmap(lambda d: lif(c, decay=d, v_th=0.7, surrogate=Dspike(), reset="soft"))(decays)
    for i, d in enumerate([0.3, 0.6, 1.0]):
        want = lif(c, decay=d, v_th=0.7, surrogate=Dspike(), reset="soft")
        np.testing.assert_array_equal(np.asarray(mapped[i]), np.asarray(want))


@pytest.mark.parametrize("shape", [(), (4,)])
def test_plif_gradient_through_sigmoid_logit(shape):
    # PLIF learns decay = sigmoid(w); d loss / d w = d loss / d decay * sigmoid'(w).
    rng = np.random.default_rng(4)
    c = jnp.asarray(rng.uniform(-0.2, 1.0, (10, 4)), jnp.float32)  # [T, N]
    weights = jnp.asarray(rng.normal(size=(10, 4)), jnp.float32)
    w = jnp.full(shape, 0.5, jnp.float32)

    def loss_of_decay(decay):
        kwargs = dict(v_th=0.6, surrogate=Dspike(b=2.0), time_axis=0, return_membrane=True)
        s, u = lif(c, decay=decay, **kwargs)
        return jnp.sum(s * weights) + jnp.sum(u * weights)

    grad_w = jax.jit(jax.grad(lambda w: loss_of_decay(jax.nn.sigmoid(w))))(w)
    assert grad_w.shape == shape
    assert np.all(np.isfinite(grad_w)) and np.all(grad_w != 0)
    grad_decay = jax.grad(loss_of_decay)(jax.nn.sigmoid(w))
    sig = jax.nn.sigmoid(w)
    np.testing.assert_allclose(grad_w, grad_decay * sig * (1 - sig), rtol=1e-5, atol=1e-6)


def test_public_api():
    assert jsnn.lif is lif
    assert jsnn.lif_step is lif_step and jsnn.lif_scan is lif_scan and jsnn.LIFParams is LIFParams
    assert {"lif", "lif_step", "lif_scan", "LIFParams"} <= set(jsnn.neuron.__all__)
    assert {"lif", "lif_step", "lif_scan", "LIFParams"} <= set(jsnn.__all__)
    assert isinstance(Dspike(), Surrogate)
    assert jsnn.neuron.RESETS == RESETS
