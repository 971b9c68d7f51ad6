"""Tests of ``jsnn.surrogate`` against the statements of the Dspike and CPNG papers.

Papers: Dspike (Li et al., NeurIPS 2021) Eq. 2 (the firing step), Eq. 7
(rectangular surrogate), Eq. 8 (triangular surrogate), Eq. 12 (the Dspike curve) and Lemma 4.1 with
its proof (Eq. 13-14); CPNG Eq. 3-4 (triangle, rectangular and arctan surrogates in ``beta``) and
its statement that every surrogate integrates to 1 over ``x`` (the property of the delta function).

Every reference formula below is written out in NumPy in the paper's own variables (``u``,
``V_th``, ``a``, ``gamma``, ``b``, ``beta``) and is independent of the code under test.
"""

from __future__ import annotations

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate

from jsnn import surrogate
from jsnn.surrogate import ArcTan, Dspike, Rectangular, Sigmoid, Surrogate, Triangular

ALL_DEFAULTS = [Rectangular(), Triangular(), ArcTan(), Sigmoid(), Dspike()]
ALL_IDS = ["rectangular", "triangular", "arctan", "sigmoid", "dspike"]

# x = u - v_th on a grid whose points are exact in float32 (step 1/64), edges of windows included.
X_GRID = np.arange(-256, 257, dtype=np.float64) / 64.0


# Jitted with the surrogate as an argument: one compilation per surrogate type and shape.
_derivative_jit = jax.jit(lambda sg, x: sg.derivative(x))
_grad_of_spikes_jit = jax.jit(lambda sg, x: jax.grad(lambda v: jnp.sum(sg(v)))(x))


def _bucketed(fn, sg: Surrogate, x) -> np.ndarray:
    """fn(sg, x) on float32 1-d ``x`` zero-padded to a few fixed sizes (fewer compilations)."""
    x = np.asarray(x, np.float32).ravel()
    size = next(n for n in (1024, 32768, 524288) if n >= x.size)
    padded = np.zeros(size, np.float32)
    padded[: x.size] = x
    return np.asarray(fn(sg, jnp.asarray(padded)), dtype=np.float64)[: x.size]


def _derivative(sg: Surrogate, x) -> np.ndarray:
    """The surrogate derivative at float32 ``x`` as float64 NumPy."""
    return _bucketed(_derivative_jit, sg, x)


def _grad_of_spikes(sg: Surrogate, x) -> np.ndarray:
    """jax.grad of sum(sg(x)): the backward pass of the spike function."""
    return _bucketed(_grad_of_spikes_jit, sg, x)


# --- Paper formulas, written independently in NumPy ------------------------------------------


def dspike_eq7(u, v_th, a):
    """Dspike Eq. 7: dy/du = (1/a) sign(|u - V_th| < a/2)."""
    return (1.0 / a) * (np.abs(u - v_th) < a / 2.0)


def dspike_eq8(u, v_th, gamma):
    """Dspike Eq. 8: dy/du = gamma max(0, 1 - |u/V_th - 1|)."""
    return gamma * np.maximum(0.0, 1.0 - np.abs(u / v_th - 1.0))


def dspike_eq12(u, b):
    """Dspike Eq. 12: (tanh(b(u - 0.5)) + tanh(b/2)) / (2 tanh(b/2)) on 0 <= u <= 1."""
    return (np.tanh(b * (u - 0.5)) + np.tanh(b / 2.0)) / (2.0 * np.tanh(b / 2.0))


def dspike_eq12_jnp(u, b):
    """Dspike Eq. 12 in jax.numpy, to be differentiated with jax.grad."""
    return (jnp.tanh(b * (u - 0.5)) + jnp.tanh(b / 2.0)) / (2.0 * jnp.tanh(b / 2.0))


def dspike_window_derivative(x, b, width):
    """d/dx of Eq. 12 rescaled to the window |x| <= width/2: b sech^2(bx/w) / (2 w tanh(b/2))."""
    inside = np.abs(x) <= width / 2.0
    return np.where(inside, b / np.cosh(b * x / width) ** 2 / (2.0 * width * np.tanh(b / 2.0)), 0)


def cpng_triangle(x, beta, nu=0.0):
    """CPNG Eq. 3: beta (1 - beta |x - nu|) if |x - nu| < 1/beta else 0."""
    return np.where(np.abs(x - nu) < 1.0 / beta, beta * (1.0 - beta * np.abs(x - nu)), 0.0)


def cpng_rectangular(x, beta, nu=0.0):
    """CPNG Eq. 4 (left): beta if |x - nu| < 1/(2 beta) else 0."""
    return np.where(np.abs(x - nu) < 1.0 / (2.0 * beta), beta, 0.0)


def cpng_arctan(x, beta, nu=0.0):
    """CPNG Eq. 4 (right): beta / (1 + (pi beta (x - nu))^2)."""
    return beta / (1.0 + (np.pi * beta * (x - nu)) ** 2)


def sigmoid_derivative(x, alpha):
    """d/dx sigmoid(alpha x) = alpha e^{-alpha|x|} / (1 + e^{-alpha|x|})^2 (even function)."""
    e = np.exp(-alpha * np.abs(x))
    return alpha * e / (1.0 + e) ** 2


# --- 1. Forward: the exact Heaviside step of Dspike Eq. 2 --------------------------------------


@pytest.mark.parametrize("sg", ALL_DEFAULTS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
def test_forward_is_strict_heaviside_step_with_dtype_of_x(sg, dtype):
    """Eq. 2: y = 1 iff u > V_th, i.e. x > 0 strictly; spikes keep the dtype of x."""
    x = jnp.asarray([-3.0, -0.5, -1e-3, -0.0, 0.0, 1e-3, 0.25, 0.5, 7.0], dtype)
    y = sg(x)
    assert y.dtype == dtype
    assert y.shape == x.shape
    expected = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float64)
    np.testing.assert_array_equal(np.asarray(y, np.float64), expected)


@pytest.mark.parametrize("sg", ALL_DEFAULTS, ids=ALL_IDS)
def test_forward_accepts_python_floats(sg):
    """A Python float x gives a float array spike (0 at exactly the threshold)."""
    assert float(sg(0.3)) == 1.0
    assert float(sg(0.0)) == 0.0
    assert float(sg(-0.3)) == 0.0
    assert jnp.issubdtype(sg(0.3).dtype, jnp.floating)


@settings(max_examples=60, deadline=None)
@given(
    # Subnormals are left out: XLA on CPU/GPU flushes them to zero, so 1e-45 > 0 is False there.
    x=hnp.arrays(
        np.float32, (16,), elements=st.floats(width=32, allow_nan=True, allow_subnormal=False)
    ),
    index=st.integers(0, len(ALL_DEFAULTS) - 1),
)
def test_forward_property_spikes_are_zero_one_and_equal_x_positive(x, index):
    """For arbitrary float32 x (inf included) sg(x) is 0/1 and equals x > 0; a NaN potential
    stays NaN (a diverged network must not look like a silent one)."""
    y = np.asarray(ALL_DEFAULTS[index](jnp.asarray(x)))
    assert y.dtype == np.float32
    finite = ~np.isnan(x)
    assert set(np.unique(y[finite])).issubset({0.0, 1.0})
    np.testing.assert_array_equal(y[finite], (x[finite] > 0).astype(np.float32))
    assert np.isnan(y[~finite]).all()


# --- 2. Backward: the surrogate derivatives of the papers --------------------------------------


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
def test_rectangular_matches_dspike_eq7(a):
    """Dspike Eq. 7 with V_th = 0.5 is Rectangular(beta = 1/a) in x = u - V_th (strict edges)."""
    v_th = 0.5
    u = X_GRID + v_th  # the edges u = V_th +- a/2 are on the grid
    sg = Rectangular(1.0 / a)
    expected = dspike_eq7(u, v_th, a)
    np.testing.assert_allclose(_derivative(sg, X_GRID), expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(_grad_of_spikes(sg, X_GRID), expected, rtol=1e-6, atol=0)


def test_rectangular_a1_is_straight_through_estimator_on_unit_interval():
    """Dspike after Eq. 7: V_th = 0.5, a = 1 gives gradient 1 for 0 < u < 1 and 0 outside."""
    u = np.linspace(-1.0, 2.0, 301)
    inside = (u > 0.0) & (u < 1.0)
    g = _grad_of_spikes(Rectangular(1.0), u - 0.5)
    np.testing.assert_array_equal(g[inside], 1.0)
    np.testing.assert_array_equal(g[(u < 0.0) | (u > 1.0)], 0.0)


@pytest.mark.parametrize("v_th", [0.25, 0.5, 1.0, 2.0])
def test_triangular_matches_dspike_eq8(v_th):
    """Dspike Eq. 8 with gamma = 1/V_th is Triangular(beta = 1/V_th) in x = u - V_th."""
    gamma = 1.0 / v_th
    u = X_GRID + v_th
    sg = Triangular(1.0 / v_th)
    expected = dspike_eq8(u, v_th, gamma)
    np.testing.assert_allclose(_derivative(sg, X_GRID), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_grad_of_spikes(sg, X_GRID), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("cls", "reference"),
    [(Triangular, cpng_triangle), (Rectangular, cpng_rectangular), (ArcTan, cpng_arctan)],
    ids=["triangle-eq3", "rectangular-eq4", "arctan-eq4"],
)
@pytest.mark.parametrize("beta", [0.25, 1.0, 2.0, 4.0])
def test_cpng_eq3_eq4(cls, reference, beta):
    """CPNG Eq. 3-4 in beta with nu = V_th: grad of the spike equals f(u) at x = u - nu."""
    nu = 1.0
    u = X_GRID + nu
    expected = reference(u, beta, nu)
    sg = cls(beta)
    np.testing.assert_allclose(_derivative(sg, X_GRID), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_grad_of_spikes(sg, X_GRID), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [Triangular, Rectangular, ArcTan])
@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_cpng_beta_is_the_maximum_gradient(cls, beta):
    """CPNG after Eq. 4: beta is the maximum value of the surrogate gradient (reached at x = 0)."""
    d = _derivative(cls(beta), X_GRID)
    assert d.max() == pytest.approx(beta, rel=1e-6)
    assert d[X_GRID == 0.0][0] == pytest.approx(beta, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0, 10.0])
def test_sigmoid_is_derivative_of_sigmoid(alpha):
    """Sigmoid(alpha): d/dx sigmoid(alpha x), checked in closed form and by finite differences."""
    x = np.linspace(-3.0, 3.0, 241)
    expected = sigmoid_derivative(x, alpha)
    sg = Sigmoid(alpha)
    # float32: alpha s (1 - s) loses relative accuracy where s -> 1 (x > 0 tail), so the tolerance
    # is absolute, relative to the peak alpha/4.
    atol = 1e-6 * alpha
    np.testing.assert_allclose(_derivative(sg, x), expected, rtol=1e-5, atol=atol)
    np.testing.assert_allclose(_grad_of_spikes(sg, x), expected, rtol=1e-5, atol=atol)
    h = 1e-6
    finite_difference = (
        1.0 / (1.0 + np.exp(-alpha * (x + h))) - 1.0 / (1.0 + np.exp(-alpha * (x - h)))
    ) / (2 * h)
    np.testing.assert_allclose(_derivative(sg, x), finite_difference, rtol=1e-4, atol=atol)


_eq12_slope = jax.jit(jax.vmap(jax.grad(dspike_eq12_jnp), in_axes=(0, None)))


@pytest.mark.parametrize("b", [0.5, 1.0, 3.0, 8.0])
def test_dspike_is_jax_grad_of_eq12_on_paper_window(b):
    """Dspike(b), width 1, V_th = 0.5 is d/du of Eq. 12 on 0 <= u <= 1 and 0 outside (Eq. 11)."""
    u = np.linspace(0.0, 1.0, 257)
    eq12_slope = _eq12_slope(jnp.asarray(u, jnp.float32), jnp.float32(b))
    x = (u - 0.5).astype(np.float32)
    sg = Dspike(b)
    np.testing.assert_allclose(_derivative(sg, x), eq12_slope, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(_grad_of_spikes(sg, x), eq12_slope, rtol=2e-4, atol=1e-6)
    # float64 finite differences of Eq. 12: an independent check of the same slope.
    h = 1e-6
    fd = (dspike_eq12(u + h, b) - dspike_eq12(u - h, b)) / (2 * h)
    np.testing.assert_allclose(_derivative(sg, x), fd, rtol=1e-4, atol=1e-6)
    # Eq. 11 clips the curve outside [0, 1]: zero gradient there.
    outside = np.array([-1.0, -0.75, -0.51, 0.51, 0.75, 1.0], np.float32)
    np.testing.assert_array_equal(_grad_of_spikes(sg, outside), 0.0)


@pytest.mark.parametrize("b", [0.5, 2.0, 8.0])
@pytest.mark.parametrize("width", [0.25, 0.5, 2.0, 3.0])
def test_dspike_width_matches_rescaled_formula(b, width):
    """width != 1: b sech^2(b x/width) / (2 width tanh(b/2)) on |x| <= width/2, edges included."""
    x = np.linspace(-width, width, 257)  # contains 0 and both edges +-width/2
    expected = dspike_window_derivative(x.astype(np.float32).astype(np.float64), b, width)
    sg = Dspike(b, width=width)
    np.testing.assert_allclose(_derivative(sg, x), expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(_grad_of_spikes(sg, x), expected, rtol=2e-5, atol=1e-7)
    edges = np.array([-width / 2, width / 2], np.float32)
    assert np.all(_derivative(sg, edges) > 0), "Eq. 12 holds on the closed window"


@pytest.mark.parametrize("b", [1e-3, 5e-3, 0.0099, 0.0101, 0.02, 0.1])
def test_dspike_small_but_finite_b_matches_formula(b):
    """For small b the normalisation b / (2 tanh(b/2)) still follows the formula (no jump)."""
    b32 = float(np.float32(b))
    x = np.linspace(-1.0, 1.0, 257)
    expected = dspike_window_derivative(x, b32, 1.0)
    np.testing.assert_allclose(_derivative(Dspike(b), x), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("sg", ALL_DEFAULTS, ids=ALL_IDS)
def test_vjp_scales_cotangent(sg):
    """Backward pass: grad of sum(g * sg(x)) is g * derivative(x), elementwise."""
    x = jnp.asarray(X_GRID / 4.0, jnp.float32)  # [-1, 1]
    g = jnp.linspace(-2.0, 3.0, x.size, dtype=jnp.float32)
    expected = np.asarray(g) * _derivative(sg, x)
    got = jax.jit(jax.grad(lambda v, s: jnp.sum(g * s(v))))(x, sg)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    via_vjp = jax.jit(lambda v, s, c: jax.vjp(s, v)[1](c)[0])(x, sg, g)
    np.testing.assert_allclose(via_vjp, expected, rtol=1e-6, atol=1e-7)
    assert np.max(np.abs(np.asarray(got))) > 0.1  # the window is hit: not vacuous


_grad_low_precision = jax.jit(jax.grad(lambda v, sg: jnp.sum(sg(v).astype(jnp.float32))))


@pytest.mark.parametrize("sg", [Rectangular(), Dspike()], ids=str)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_gradient_keeps_low_precision_dtype(sg, dtype):
    """The cotangent of x has the dtype of x and equals the surrogate derivative."""
    x = jnp.asarray([-0.4, -0.1, 0.0, 0.1, 0.4], dtype)
    got = _grad_low_precision(x, sg)
    assert got.dtype == dtype
    expected = np.asarray(_derivative_jit(sg, x).astype(dtype), np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-2)


@pytest.mark.parametrize("sg", [Dspike(1.5, 0.8), ArcTan(2.0), Sigmoid(3.0)], ids=str)
def test_shape_parameters_get_zero_gradient(sg):
    """Shape parameters are set between epochs (Dspike temperature search, CPNG): zero gradient."""
    x = jnp.linspace(-0.5, 0.5, 11, dtype=jnp.float32)

    def loss(surr, v):
        return jnp.sum(jnp.tanh(3.0 * v) * surr(v)) + jnp.sum(surr(v * 2.0) ** 2)

    grad_sg, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(sg, x)
    assert type(grad_sg) is type(sg)
    for leaf in jax.tree.leaves(grad_sg):
        np.testing.assert_array_equal(leaf, 0.0)
    assert np.max(np.abs(np.asarray(grad_x))) > 0  # x does get a gradient

    # Building the surrogate from a differentiated scalar b: still zero through the spike.
    if isinstance(sg, Dspike):
        db = jax.jit(jax.grad(lambda b: jnp.sum(jnp.tanh(3.0 * x) * Dspike(b)(x))))(1.5)
        assert float(db) == 0.0


# --- 3. Every surrogate integrates to 1 (CPNG Sec. 3) ------------------------------------------


def _integrand(sg):
    """f(x) evaluated in float32 by the code under test, for scipy.integrate.quad."""

    def f(x):
        x = float(np.clip(x, -1e30, 1e30))
        return float(_derivative_jit(sg, jnp.float32(x)))

    return f


@pytest.mark.parametrize(
    ("sg", "support", "breakpoints"),
    [
        *[(Rectangular(beta), 1 / (2 * beta), [0.5 / beta]) for beta in (0.3, 1.0, 5.0)],
        *[(Triangular(beta), 1 / beta, [0.0]) for beta in (0.3, 1.0, 5.0)],
        *[
            (Dspike(b, width), width / 2, [0.0])
            for b, width in [(1e-3, 1.0), (0.5, 1.0), (1.0, 1.0), (4.0, 1.0), (3.0, 0.4), (2, 3.0)]
        ],
        *[(ArcTan(beta), math.inf, None) for beta in (0.3, 1.0, 5.0)],
        *[(Sigmoid(alpha), math.inf, None) for alpha in (0.5, 4.0, 20.0)],
    ],
    ids=str,
)
def test_every_surrogate_integrates_to_one(sg, support, breakpoints):
    """CPNG: the surrogate gradient satisfies int_{-inf}^{+inf} f(x) dx = 1, like the delta."""
    f = _integrand(sg)
    if math.isinf(support):
        total, _ = integrate.quad(f, -math.inf, math.inf, epsabs=1e-6, epsrel=1e-6)
    else:
        # Integrate past the support (the tails must be exactly 0), with the kinks as breakpoints.
        lo, hi = -2.0 * support, 2.0 * support
        points = sorted({*breakpoints, *(-p for p in breakpoints), -support, support})
        total, _ = integrate.quad(f, lo, hi, points=points, epsabs=1e-6, epsrel=1e-6)
        assert f(-1.01 * support) == 0.0
        assert f(1.01 * support) == 0.0
    assert total == pytest.approx(1.0, abs=1e-4)


# --- 4. Dspike Lemma 4.1 (proof Eq. 13-14) ------------------------------------------------------

U_FINE = np.linspace(0.0, 1.0, 400_001)  # u in [0, 1] with u = 0.5 on the grid


def _integrated_curve(sg, u, v_th=0.5):
    """The Dspike curve recovered from the surrogate: cumulative integral of f(u - V_th) from 0."""
    d = _derivative(sg, (u - v_th).astype(np.float32))
    assert np.all(np.isfinite(d))
    return integrate.cumulative_trapezoid(d, u, initial=0.0)


@pytest.mark.parametrize("b", [1e-2, 1e-6, 1e-30, 1e-40, 1e-45])
@pytest.mark.parametrize("width", [1.0, 0.5, 2.0])
def test_lemma41_small_b_gives_identity_slope(b, width):
    """Lemma 4.1, b -> 0+: slope 1/width on the window, 0 outside, all finite (denormal b too)."""
    sg = Dspike(b, width=width)
    x = np.linspace(-width, width, 401)
    inside = np.abs(x) <= width / 2
    d = _derivative(sg, x)
    g = _grad_of_spikes(sg, x)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(g))
    # Relative deviation from the identity slope is ~b^2/12, plus float32 rounding (~1 ulp).
    tol = 1e-4 if b >= 1e-2 else 1e-6
    np.testing.assert_allclose(d[inside], 1.0 / width, rtol=tol)
    np.testing.assert_allclose(g[inside], 1.0 / width, rtol=tol)
    np.testing.assert_array_equal(d[~inside], 0.0)


@pytest.mark.parametrize("b", [1e-6, 1e-30, 1e-40])
def test_lemma41_small_b_integrated_curve_tends_to_identity(b):
    """Lemma 4.1 / Eq. 13: lim_{b->0+} Dspike(x) = x on [0, 1]."""
    curve = _integrated_curve(Dspike(b), U_FINE)
    assert np.max(np.abs(curve - U_FINE)) < 1e-5


@pytest.mark.parametrize("b", [1e3, 1e4])
def test_lemma41_large_b_integrated_curve_tends_to_step(b):
    """Lemma 4.1 / Eq. 14: lim_{b->inf} Dspike(x) is 0 below 0.5, 1/2 at 0.5 and 1 above."""
    sg = Dspike(b)
    x = np.linspace(-1.0, 1.0, 2001, dtype=np.float32)
    assert np.all(np.isfinite(_derivative(sg, x))) and np.all(np.isfinite(_grad_of_spikes(sg, x)))
    u = U_FINE
    curve = _integrated_curve(sg, u)
    delta = 20.0 / b
    np.testing.assert_allclose(curve[u < 0.5 - delta], 0.0, atol=1e-3)
    np.testing.assert_allclose(curve[u > 0.5 + delta], 1.0, atol=1e-3)
    assert curve[u == 0.5][0] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("b", [1e6, 1e20, 3e38])
@pytest.mark.parametrize("width", [1.0, 0.5])
def test_lemma41_huge_b_is_finite_delta_peak(b, width):
    """b -> inf: the derivative is a finite peak b/(2 width) at x = 0 and 0 away from it."""
    sg = Dspike(b, width=width)
    x = np.linspace(-1.0, 1.0, 2001, dtype=np.float32)  # contains exactly 0
    d = _derivative(sg, x)
    g = _grad_of_spikes(sg, x)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(g))
    assert np.all(d >= 0)
    peak = d[x == 0][0]
    b32 = float(np.float32(b))
    assert peak == pytest.approx(b32 / (2 * width), rel=1e-6)
    assert g[x == 0][0] == pytest.approx(peak, rel=1e-6)
    np.testing.assert_array_equal(d[np.abs(x) >= 0.01], 0.0)


@pytest.mark.parametrize("b", [0.5, 1.0, 3.0, 8.0])
def test_integrated_surrogate_equals_eq12(b):
    """At moderate b, integrating the surrogate from u = 0 reproduces the Eq. 12 curve itself."""
    u = np.linspace(0.0, 1.0, 20_001)
    curve = _integrated_curve(Dspike(b), u)
    np.testing.assert_allclose(curve, dspike_eq12(u, b), atol=1e-5)


# --- 5. jit / grad / vmap / scan ---------------------------------------------------------------


def test_jit_with_surrogate_argument_traces_once():
    """Shape parameters are array leaves: new temperatures reuse the compiled function."""

    @jax.jit
    @chex.assert_max_traces(n=1)  # a second trace raises
    def grad_of_spikes(x, sg):
        return jax.grad(lambda v: jnp.sum(sg(v)))(x)

    x = jnp.linspace(-0.45, 0.45, 7, dtype=jnp.float32)
    bw = [(1.0, 1.0), (2.0, 1.0), (3.0, 0.8)]
    g1, g2, g3 = (grad_of_spikes(x, Dspike(b, width=w)) for b, w in bw)
    expected = [dspike_window_derivative(np.asarray(x, np.float64), b, w) for b, w in bw]
    for got, want in zip([g1, g2, g3], expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
    assert np.max(np.abs(np.asarray(g1) - np.asarray(g2))) > 1e-2


def _vmap_setup():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1.0, 1.0, (6, 3)), jnp.float32)
    w = jnp.asarray(rng.uniform(-0.15, 0.15, (3, 4)), jnp.float32)
    target = jnp.asarray(rng.uniform(0.0, 1.0, (6, 4)), jnp.float32)

    def loss(w, sg):
        spikes = sg(x @ w)  # pre-activations lie inside the Dspike window |x| <= 1/2
        return jnp.sum((spikes - target) ** 2)

    assert np.max(np.abs(np.asarray(x @ w))) < 0.5
    return w, loss


def test_vmap_over_three_temperatures_equals_separate_calls():
    """vmap over b = 0.8, 1.0, 1.2 gives three different gradients, each equal to its own call."""
    w, loss = _vmap_setup()
    bs = jnp.array([0.8, 1.0, 1.2], jnp.float32)
    batched = jax.jit(jax.vmap(lambda b: jax.grad(loss)(w, Dspike(b))))(bs)
    assert batched.shape == (3, *w.shape)
    grad_loss = jax.jit(jax.grad(loss))
    for i, b in enumerate([0.8, 1.0, 1.2]):
        separate = grad_loss(w, Dspike(b))
        np.testing.assert_allclose(batched[i], separate, rtol=1e-6, atol=1e-7)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert np.max(np.abs(np.asarray(batched[i]) - np.asarray(batched[j]))) > 1e-3


def test_vmap_over_surrogate_pytree_and_jit():
    """A batched pytree of surrogates (vmapped over its leaves) inside jit matches the formula."""
    bs = jnp.array([0.5, 2.0, 6.0], jnp.float32)
    widths = jnp.array([1.0, 0.5, 2.0], jnp.float32)
    x = jnp.linspace(-0.6, 0.6, 13, dtype=jnp.float32)
    # A surrogate whose leaves carry a batch axis, rebuilt from its tree structure.
    batch = jax.tree.unflatten(jax.tree.structure(Dspike()), [bs, widths])
    got = jax.jit(jax.vmap(lambda sg: jax.grad(lambda v: jnp.sum(sg(v)))(x)))(batch)
    for i in range(3):
        expected = dspike_window_derivative(
            np.asarray(x, np.float64), float(bs[i]), float(widths[i])
        )
        np.testing.assert_allclose(got[i], expected, rtol=2e-5, atol=1e-7)


def _lif_loss(sg, inputs, carry_surrogate):
    """A leaky integrate-and-fire loop (Dspike Eq. 1-2 with hard reset) scanned over time."""

    def step(carry, c):
        if carry_surrogate:
            u, surr = carry
        else:
            u, surr = carry, sg
        u = 0.5 * u + c
        s = surr(u - 0.5)
        u = u * (1.0 - s)
        return ((u, surr) if carry_surrogate else u), s

    init = (jnp.zeros(inputs.shape[1:]), sg) if carry_surrogate else jnp.zeros(inputs.shape[1:])
    _, spikes = jax.lax.scan(step, init, inputs)
    return jnp.sum(spikes * jnp.arange(1.0, inputs.shape[0] + 1.0)[:, None])


def _lif_loss_unrolled(sg, inputs):
    u = jnp.zeros(inputs.shape[1:])
    total = 0.0
    for t in range(inputs.shape[0]):
        u = 0.5 * u + inputs[t]
        s = sg(u - 0.5)
        u = u * (1.0 - s)
        total = total + jnp.sum(s) * (t + 1.0)
    return total


_lif_grad = jax.jit(jax.grad(_lif_loss, argnums=1), static_argnums=2)
_lif_grad_unrolled = jax.jit(jax.grad(_lif_loss_unrolled, argnums=1))


@pytest.mark.parametrize(
    ("sg", "carry_surrogate"),
    [(Dspike(2.0), False), (Dspike(2.0), True), (Triangular(1.5), False)],
    ids=["dspike-captured", "dspike-carry", "triangular-captured"],
)
def test_scan_with_surrogate_captured_or_carried(sg, carry_surrogate):
    """lax.scan through the spike function gives the gradient of the unrolled Python loop."""
    rng = np.random.default_rng(1)
    inputs = jnp.asarray(rng.uniform(0.0, 0.6, (5, 4)), jnp.float32)
    got = _lif_grad(sg, inputs, carry_surrogate)
    expected = _lif_grad_unrolled(sg, inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(np.asarray(got))) > 0.1


@pytest.mark.parametrize(
    ("sg", "keys", "values"),
    [
        (Rectangular(2.0), ["beta"], [2.0]),
        (Triangular(0.5), ["beta"], [0.5]),
        (ArcTan(3.0), ["beta"], [3.0]),
        (Sigmoid(5.0), ["alpha"], [5.0]),
        (Dspike(2.5, width=0.75), ["b", "width"], [2.5, 0.75]),
    ],
    ids=ALL_IDS,
)
def test_surrogate_is_pytree_of_its_parameters(sg, keys, values):
    """The leaves are the shape parameters (float arrays), keyed by their attribute names."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(sg)
    assert [path[-1].name for path, _ in leaves_with_path] == keys
    assert [float(leaf) for _, leaf in leaves_with_path] == values
    assert all(jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) for v in jax.tree.leaves(sg))
    # Rebuilding from new leaves gives a working surrogate of the same type with those parameters.
    doubled = jax.tree.map(lambda p: 2.0 * p, sg)
    assert type(doubled) is type(sg)
    reference = type(sg)(*[2.0 * v for v in values])
    np.testing.assert_allclose(
        _derivative(doubled, X_GRID), _derivative(reference, X_GRID), rtol=1e-6
    )
    rebuilt = jax.tree.unflatten(treedef, jax.tree.leaves(sg))
    np.testing.assert_array_equal(_derivative(rebuilt, X_GRID), _derivative(sg, X_GRID))


# --- 6. Lookup by name -------------------------------------------------------------------------


def test_get_dspike_with_parameter():
    sg = surrogate.get("dspike", b=2.0)
    assert isinstance(sg, Dspike)
    assert float(sg.b) == 2.0
    assert float(sg.width) == 1.0


@pytest.mark.parametrize("name", ["DSpike", "DSPIKE", "Dspike"])
def test_get_is_case_insensitive(name):
    sg = surrogate.get(name, b=3.0, width=0.5)
    assert isinstance(sg, Dspike)
    assert (float(sg.b), float(sg.width)) == (3.0, 0.5)


def test_names_cover_all_surrogates_and_build_with_defaults():
    assert set(surrogate.names()) == {"rectangular", "triangular", "arctan", "sigmoid", "dspike"}
    for name in surrogate.names():
        sg = surrogate.get(name)
        assert isinstance(sg, Surrogate)
        assert type(sg).__name__.lower() == name
        assert float(sg(jnp.float32(0.1))) == 1.0


@pytest.mark.parametrize(
    ("name", "params", "cls"),
    [("arctan", {"beta": 3.0}, ArcTan), ("Sigmoid", {"alpha": 2.0}, Sigmoid)],
)
def test_get_passes_parameters(name, params, cls):
    sg = surrogate.get(name, **params)
    assert type(sg) is cls
    np.testing.assert_allclose(_derivative(sg, X_GRID), _derivative(cls(**params), X_GRID))


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="superspike") as info:
        surrogate.get("superspike")
    for name in surrogate.names():
        assert name in str(info.value)


@pytest.mark.parametrize(("name", "params"), [("dspike", {"beta": 2.0}), ("sigmoid", {"b": 1})])
def test_get_wrong_parameter_name_is_type_error(name, params):
    with pytest.raises(TypeError):
        surrogate.get(name, **params)


# --- 7. Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "parameter", "value"),
    [
        (lambda: Rectangular(0), "beta", "0"),
        (lambda: Rectangular(0.0), "beta", "0.0"),
        (lambda: Triangular(-1), "beta", "-1"),
        (lambda: ArcTan(float("nan")), "beta", "nan"),
        (lambda: Sigmoid(float("inf")), "alpha", "inf"),
        (lambda: Sigmoid(-2.0), "alpha", "-2.0"),
        (lambda: Dspike(b=0), "b", "0"),
        (lambda: Dspike(b=-0.5), "b", "-0.5"),
        (lambda: Dspike(b=float("-inf")), "b", "-inf"),
        (lambda: Dspike(width=-1), "width", "-1"),
        (lambda: Dspike(width=float("nan")), "width", "nan"),
        (lambda: surrogate.get("triangular", beta=0.0), "beta", "0.0"),
    ],
)
def test_invalid_shape_parameter_raises_value_error_naming_it(build, parameter, value):
    with pytest.raises(ValueError) as info:
        build()
    message = str(info.value)
    assert re.search(rf"\b{parameter}\b", message), message
    assert value in message, message


def test_invalid_entry_in_parameter_array_raises():
    with pytest.raises(ValueError, match=r"\bb\b"):
        Dspike(np.array([1.0, 0.0, 2.0]))


@pytest.mark.parametrize("sg", ALL_DEFAULTS, ids=ALL_IDS)
@pytest.mark.parametrize(
    "x", [jnp.arange(3), np.arange(3, dtype=np.int8), 1, jnp.array([True, False])], ids=repr
)
def test_non_float_x_raises_type_error(sg, x):
    """x = u - v_th must be floating point: an integer/bool x has no gradient to carry."""
    with pytest.raises(TypeError, match="x"):
        sg(x)


def test_traced_parameters_do_not_raise():
    """Building a surrogate from a traced b (in jit, vmap, grad) must not validate it eagerly."""
    x = jnp.float32(0.1)
    jit_value = jax.jit(lambda b: Dspike(b).derivative(x))(jnp.float32(2.0))
    np.testing.assert_allclose(jit_value, Dspike(2.0).derivative(x), rtol=1e-6)
    vmapped = jax.jit(jax.vmap(lambda b: Dspike(b, width=b).derivative(x)))(
        jnp.array([0.5, 1.0, 2.0])
    )
    assert vmapped.shape == (3,)
    jax.jit(jax.grad(lambda b: Dspike(b).derivative(x)))(2.0)
    classes = (Rectangular, Triangular, ArcTan, Sigmoid)
    spikes = jax.jit(lambda p: [cls(p)(x) for cls in classes])(jnp.float32(1.0))
    assert [float(y) for y in spikes] == [1.0] * len(classes)
