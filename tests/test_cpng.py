"""CPNG's chi (Eq. 6), the binary search for beta and Algorithm 1, against the paper's
statements and independent references (a Gaussian sample, scipy's normal CDF)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from jsnn import surrogate
from jsnn.methods import cpng


@pytest.mark.parametrize(
    ("name", "half"), [("triangular", 1.0), ("rectangular", 0.5), ("arctan", 1.0)]
)
def test_chi_is_the_share_of_a_gaussian_sample_inside_the_effective_domain(name, half):
    mean, std, v_th, beta = 0.3, 0.4, 0.5, 2.0
    sample = np.random.default_rng(0).normal(mean, std, size=(64, 6, 512))
    inside = np.mean(np.abs(sample - v_th) < half / beta)
    value = float(cpng.chi(jnp.asarray(sample), v_th, beta, name))
    sampling_error = np.sqrt(inside * (1 - inside) / sample.size)
    assert abs(value - inside) < 5 * sampling_error + 1e-3  # the fit's mean/std, too
    exact = stats.norm.cdf(v_th + half / beta, mean, std) - stats.norm.cdf(
        v_th - half / beta, mean, std
    )
    np.testing.assert_allclose(
        float(cpng.chi_of_moments(mean, std, v_th, beta, name)), exact, rtol=1e-5
    )


def test_the_effective_domain_is_where_the_surrogate_has_gradient():
    beta = 2.5
    for name in ("triangular", "rectangular"):
        h = cpng.half_width(beta, name)
        derivative = surrogate.get(name, beta=beta).derivative
        assert float(derivative(jnp.float32(h * 0.999))) > 0
        assert float(derivative(jnp.float32(h * 1.001))) == 0


def test_chi_falls_with_beta_and_tends_to_one_for_wide_surrogates():
    betas = jnp.geomspace(1e-2, 1e2, 50)
    values = np.asarray(cpng.chi_of_moments(0.2, 0.5, 0.5, betas))
    assert np.all(np.diff(values) <= 0) and np.all(np.diff(values[values < 0.999]) < 0)
    assert values[0] > 0.999 and values[-1] < 0.02  # beta -> 0 gives chi -> 1 (Sec. 4.2)


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(-1.0, 1.5),
    std=st.floats(0.05, 2.0),
    target=st.floats(0.05, 0.95),
    name=st.sampled_from(["triangular", "rectangular", "arctan"]),
)
def test_solve_beta_reaches_the_target_within_its_tolerance(mean, std, target, name):
    lo, hi, tol = 1e-3, 1e3, 1e-5
    beta = cpng.solve_beta(mean, std, 0.5, target, name, lo=lo, hi=hi, tol=tol)
    reached = float(cpng.chi_of_moments(mean, std, 0.5, beta, name))
    if lo < beta < hi:
        assert abs(reached - target) <= tol
    else:  # clipped: the target is out of the bounds' reach
        assert (beta == lo and reached <= target) or (beta == hi and reached >= target)


def test_solve_beta_clips_at_its_bounds():
    # At beta = 1 chi is tiny for a distribution far below the threshold: no beta in [1, 2]
    # reaches a chi of 0.5.
    assert cpng.solve_beta(-3.0, 0.1, 0.5, 0.5, lo=1.0, hi=2.0) == 1.0
    assert cpng.solve_beta(0.5, 0.1, 0.5, 0.01, lo=0.5, hi=2.0) == 2.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cpng.chi(jnp.ones((4, 3)), 0.5, 1.0), "zero variance"),
        (lambda: cpng.chi(jnp.arange(4.0), 0.5, 0.0), "beta"),
        (lambda: cpng.chi(jnp.arange(4.0), 0.5, 1.0, "erf"), "surrogate name"),
        (lambda: cpng.solve_beta(0.0, 1.0, 0.5, 1.0), "chi_target"),
        (lambda: cpng.solve_beta(0.0, 1.0, 0.5, 0.0), "chi_target"),
        (lambda: cpng.solve_beta(0.0, 0.0, 0.5, 0.5), "std"),
        (lambda: cpng.solve_beta(0.0, 1.0, 0.5, 0.5, lo=2.0, hi=1.0), "lo"),
        (lambda: cpng.solve_beta(0.0, 1.0, 0.5, 0.5, "erf"), "surrogate name"),
        (lambda: cpng.update({}, {}, {}, epoch=0, chi_limit=1.0), "chi_limit"),
        (lambda: cpng.update({}, {}, {}, epoch=0, chi_limit=-0.1), "chi_limit"),
        (
            lambda: cpng.update({}, {"a": cpng.MembraneStats(0.0, 0.0, 0.5)}, {"a": 1.0}, epoch=0),
            "zero membrane variance",
        ),
        (
            lambda: cpng.update({}, {"a": cpng.MembraneStats(0.0, 1.0, 0.5)}, {"a": -1.0}, epoch=0),
            "beta",
        ),
    ],
)
def test_bad_arguments_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _stats_with_chi(chi_value, beta=1.0, std=0.5, v_th=0.5):
    """Stats of a layer centred on the threshold whose chi at ``beta`` is ``chi_value``."""
    # chi = 2 Phi(h / std) - 1 for a distribution centred at v_th, h = 1 / beta.
    std = (1 / beta) / stats.norm.ppf((1 + chi_value) / 2)
    return cpng.MembraneStats(v_th, float(std), v_th)


def test_algorithm_1_branches_on_a_hand_made_sequence_of_epochs():
    betas = {"a": 1.0, "b": 1.0}
    # Epoch 0 records chi and keeps beta.
    records, betas = cpng.update(
        {}, {"a": _stats_with_chi(0.6), "b": _stats_with_chi(0.5)}, betas, epoch=0
    )
    assert records == pytest.approx({"a": 0.6, "b": 0.5}, abs=1e-6) and betas == {"a": 1, "b": 1}
    # Epoch 1: a's chi rose to 0.8, so beta grows until chi is back at its minimum 0.6; b's chi
    # fell to 0.4, which becomes its new minimum with beta kept.
    stats_1 = {"a": _stats_with_chi(0.8), "b": _stats_with_chi(0.4)}
    records, betas = cpng.update(records, stats_1, betas, epoch=1)
    assert records == pytest.approx({"a": 0.6, "b": 0.4}, abs=1e-6)
    assert betas["a"] > 1.0 and betas["b"] == 1.0
    assert float(cpng.chi_of_moments(*stats_1["a"][:3], betas["a"])) == pytest.approx(0.6, abs=1e-5)
    # Epoch 2: b's chi fell below chi_limit 0.2: the record is floored and beta shrinks to
    # bring chi back up to the limit.
    stats_2 = {"a": cpng.MembraneStats(*stats_1["a"]), "b": _stats_with_chi(0.1)}
    records, betas = cpng.update(records, stats_2, betas, epoch=2, chi_limit=0.2)
    assert records["b"] == 0.2 and betas["b"] < 1.0
    assert float(cpng.chi_of_moments(*stats_2["b"][:3], betas["b"])) == pytest.approx(0.2, abs=1e-5)
    # a's distribution did not move, so its chi at the new beta already equals its minimum.
    assert records["a"] == pytest.approx(0.6, abs=1e-5)


def test_the_chi_limit_floor_holds_over_many_epochs():
    rng = np.random.default_rng(1)
    records, betas = cpng.update({}, {"a": _stats_with_chi(0.5)}, {"a": 1.0}, epoch=0)
    for epoch in range(1, 30):
        layer = cpng.MembraneStats(rng.normal(0.5, 0.3), rng.uniform(0.05, 3.0), 0.5)
        records, betas = cpng.update(records, {"a": layer}, betas, epoch=epoch, chi_limit=0.3)
        assert records["a"] >= 0.3
        reached = float(cpng.chi_of_moments(*layer, betas["a"]))
        assert reached >= 0.3 - 1e-5 or betas["a"] == 1e-3  # floored unless beta hit its bound


def test_layers_with_different_membrane_distributions_get_different_betas():
    stats_0 = {"narrow": _stats_with_chi(0.5), "wide": _stats_with_chi(0.5)}
    records, betas = cpng.update({}, stats_0, {"narrow": 1.0, "wide": 1.0}, epoch=0)
    later = {"narrow": _stats_with_chi(0.9), "wide": _stats_with_chi(0.7)}
    _, betas = cpng.update(records, later, betas, epoch=1)
    assert betas["narrow"] > betas["wide"] > 1.0


def test_chi_runs_under_jit():
    u = jax.random.normal(jax.random.key(0), (8, 4, 16)) * 0.3 + 0.4
    jitted = jax.jit(cpng.chi, static_argnums=3)
    np.testing.assert_allclose(jitted(u, 0.5, 1.5, "triangular"), cpng.chi(u, 0.5, 1.5), rtol=1e-6)
