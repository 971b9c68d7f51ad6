"""The dtype policy (jsnn.dtypes) over every public function of the core: x64 on and off,
float32, float64 and bfloat16 inputs, parameters given as Python floats, float32 or float64.

For each combination: the forward pass, ``jax.grad``, ``jax.jit`` and ``jax.vmap`` run; outputs
and gradients have the dtypes the policy states; results agree with a float64 reference to the
input dtype's precision. Inputs are multiples of 1/16 (exact in bfloat16), so every dtype sees
the same values and the spikes, which are discontinuous, agree exactly.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jsnn
from jsnn import encoding, losses, norm, surrogate
from jsnn.dtypes import compute_dtype
from jsnn.methods import cpng, fdg

PARAMETER_KINDS = ("python", "float32", "float64")
TOLERANCE = {jnp.float64: 1e-10, jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def _parameter(value: float, kind: str):
    if kind == "python":
        return value
    return np.asarray(value, np.float32 if kind == "float32" else np.float64)


def _inputs(shape, dtype, seed=0) -> jax.Array:
    values = np.random.default_rng(seed).integers(-8, 24, size=shape) / 16
    return jnp.asarray(values).astype(dtype)


# Each case: (name, input shape, f(x, parameter kind) -> an array, the dtype its output takes
# for an input dtype, whether the parameter kind matters).
def _spikes(name, value):
    return lambda x, kind: surrogate.get(name, **{_PARAM[name]: _parameter(value, kind)})(x)


def _derivative(name, value):
    return lambda x, kind: surrogate.get(
        name, **{_PARAM[name]: _parameter(value, kind)}
    ).derivative(x)


_PARAM = {"rectangular": "beta", "triangular": "beta", "arctan": "beta", "sigmoid": "alpha"}
_PARAM["dspike"] = "b"


def _lif(x, kind, **options):
    sg = surrogate.Triangular(_parameter(2.0, kind))
    return jsnn.lif(
        x, decay=_parameter(0.25, kind), v_th=_parameter(0.5, kind), surrogate=sg, **options
    )


def _lif_scan(x, kind):
    params = jsnn.LIFParams(
        decay=_parameter(0.25, kind),
        v_th=_parameter(0.5, kind),
        surrogate=surrogate.Dspike(_parameter(2.0, kind)),
        reset="soft",
    )
    return jsnn.lif_scan(x, params)[1]


def _normalize(x, kind):
    mean, var = norm.batch_statistics(x)
    gamma = _parameter(1.5, kind)
    if kind != "python":  # a vector over the channels
        gamma = np.full(x.shape[-1], gamma, gamma.dtype)
    return norm.normalize(
        x, mean, var, gamma=gamma, beta=_parameter(0.25, kind), scale=_parameter(0.5, kind)
    )


def _loss(name):
    labels = jnp.array([0, 3, 1])
    return lambda x, kind: losses.get(name)(x, labels)


def _chi(x, kind):
    return cpng.chi(x, _parameter(0.5, kind), _parameter(1.5, kind))


def _finite_difference(x, kind):
    def loss(w):  # a loss computed in float32 at least, as a model's is
        return jnp.sum(jnp.sin(w.astype(compute_dtype(w.dtype))) * _parameter(2.0, kind))

    # A dyadic step, so that the float32 rounding of w +- eps adds no error of its own.
    return fdg.finite_difference_gradient(loss, x, eps=0.125, chunk_size=8)


def _same(dtype):
    return dtype


CASES: list[tuple[str, tuple, Callable, Callable, bool]] = [
    ("dspike spikes", (3, 4), _spikes("dspike", 2.0), _same, True),
    *[(f"{name} derivative", (3, 4), _derivative(name, 2.0), _same, True) for name in _PARAM],
    ("lif spikes", (2, 5, 3), _lif, _same, True),
    (
        "lif membrane",
        (2, 5, 3),
        lambda x, k: _lif(x, k, return_membrane=True)[1],
        compute_dtype,
        True,
    ),
    ("lif_scan spikes", (2, 5, 3), _lif_scan, _same, True),
    ("normalize", (4, 2, 3), _normalize, _same, True),
    ("mean_ce loss", (3, 2, 4), _loss("mean_ce"), compute_dtype, False),
    ("tet loss", (3, 2, 4), _loss("tet"), compute_dtype, False),
    ("direct encoding", (3, 4), lambda x, k: encoding.direct(x, 3), _same, False),
    ("chi", (4, 6), _chi, compute_dtype, True),
    ("finite-difference gradient", (5,), _finite_difference, _same, True),
]

COMBINATIONS = [
    (x64, dtype)
    for x64, dtype in itertools.product((False, True), (jnp.float32, jnp.float64, jnp.bfloat16))
    if x64 or dtype != jnp.float64
]


def _forward_and_grad(f: Callable, kind: str) -> Callable:
    """``x -> (f(x, kind), d sum(f(x, kind)) / dx)``."""

    def total(x):
        out = f(x, kind)
        return jnp.sum(out).astype(jnp.float32), out

    def both(x):
        (_, out), grad = jax.value_and_grad(total, has_aux=True)(x)
        return out, grad

    return both


@functools.cache
def _reference(case: int):
    """Case ``case`` in float64: the same input values (every dtype holds them exactly), the
    parameters as float64."""
    _, shape, f, _, _ = CASES[case]
    with jax.enable_x64(True):
        out, grad = jax.jit(_forward_and_grad(f, "float64"))(_inputs(shape, jnp.float64))
        return np.asarray(out, np.float64), np.asarray(grad, np.float64)


def _close(found, expected, dtype):
    tolerance = TOLERANCE[dtype]
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(
        np.asarray(found, np.float64), expected, rtol=tolerance, atol=tolerance * scale
    )


# Weights are never bfloat16 (the compute dtype is the activations'): the finite-difference
# gradient of bfloat16 weights is not a case.
MATRIX = [
    pytest.param(case, x64, dtype, id=f"{case[0]}-{x64}-{jnp.dtype(dtype).name}")
    for case in CASES
    for x64, dtype in COMBINATIONS
    if not (case[0] == "finite-difference gradient" and dtype == jnp.bfloat16)
]


@pytest.mark.parametrize(("case", "x64", "dtype"), MATRIX)
def test_the_dtype_policy_holds(case, x64, dtype):
    name, shape, f, output_dtype, has_parameters = case
    reference, reference_grad = _reference(CASES.index(case))
    kinds = PARAMETER_KINDS if has_parameters else ("python",)

    @jax.jit  # one program for the whole combination: compiling is most of the test's time
    def program(x, flipped):
        mapped = jax.vmap(lambda v: f(v, "python"))(jnp.stack([x, flipped]))
        return mapped, [_forward_and_grad(f, kind)(x) for kind in kinds]

    with jax.enable_x64(x64):
        x, flipped = _inputs(shape, dtype), _inputs(shape, dtype, seed=1)
        expected_dtype = jnp.dtype(output_dtype(x.dtype))
        mapped, results = program(x, flipped)
        if x64:  # without jit too, where Python floats become float64 arrays
            eager = f(flipped, "python")
            assert eager.dtype == expected_dtype, (name, eager.dtype)
            _close(mapped[1], np.asarray(eager, np.float64), dtype)
    # vmap, and forward and gradient for every kind of parameter.
    assert mapped.dtype == expected_dtype
    _close(mapped[0], reference, dtype)
    for kind, (out, grad) in zip(kinds, results, strict=True):
        assert out.dtype == expected_dtype, (name, kind, out.dtype)
        assert grad.dtype == x.dtype, (name, kind, grad.dtype)
        _close(out, reference, dtype)
        _close(grad, reference_grad, dtype)


def test_the_lif_backward_runs_in_x64_mode_with_a_python_float_surrogate():
    # The reproduction of a defect: float32 currents with Dspike(1.0), whose b is float64
    # under x64, once failed in the backward loop (carry types float32 and float64).
    with jax.enable_x64(True):
        c = jnp.ones((4, 3), jnp.float32) * 0.4
        sg = surrogate.Dspike(1.0)
        assert sg.b.dtype == jnp.float64
        grad = jax.grad(lambda c: jsnn.lif(c, decay=0.25, v_th=0.5, surrogate=sg).sum())(c)
        assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad)))


def test_lif_step_keeps_its_state_dtype_in_a_scan_with_float64_parameters():
    with jax.enable_x64(True):
        params = jsnn.LIFParams(
            decay=np.float64(0.25), v_th=np.float64(0.5), surrogate=surrogate.Triangular(1.0)
        )
        currents = _inputs((6, 2, 3), jnp.float32)
        state, spikes = jax.lax.scan(
            lambda u, c: jsnn.lif_step(u, c, params), jnp.zeros((2, 3), jnp.float32), currents
        )
        assert state.dtype == spikes.dtype == jnp.float32


def test_poisson_spikes_take_the_dtype_of_the_rates():
    for x64, dtype in COMBINATIONS:
        with jax.enable_x64(x64):
            rates = jnp.abs(_inputs((3, 4), dtype)) / 2
            spikes = encoding.poisson(jax.random.key(0), rates, 5)
            assert spikes.dtype == rates.dtype and spikes.shape == (3, 5, 4)
