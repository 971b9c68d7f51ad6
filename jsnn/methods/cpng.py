"""CPNG: per-layer surrogate width controlled by the share of non-zero gradients, chi
("Efficient Surrogate Gradients for Training Spiking Neural Networks", ICLR 2023 submission).

Every spiking layer's pre-spike membrane potentials are summarised by a normal distribution
(mean and standard deviation over the batch, every time step and every neuron of the layer).
chi (Eq. 6) is its mass inside the surrogate's effective domain around the threshold: the
share of membrane potentials that get a gradient. Once per epoch Algorithm 1 records each
layer's smallest chi and, where chi has risen above it, steepens the surrogate (a larger
beta) until chi is back at that minimum, never letting chi fall below ``chi_limit``.

This module holds the math as functions of arrays and numbers; the surrogates are jsnn's
``Triangular``, ``Rectangular`` and ``ArcTan``, whose width parameter is ``beta``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jsnn._checks import concrete, positive_float
from jsnn.surrogate import kind

__all__ = ["MembraneStats", "chi", "chi_of_moments", "half_width", "solve_beta", "update"]

# Half-width of the effective domain times beta: the support |x| < 1/(2 beta) of the
# rectangular window; the triangle's support |x| < 1/beta; and for surrogates whose derivative
# is nowhere 0 (arctan, ...), the paper's interval rule [v_th - 1/beta, v_th + 1/beta] (Sec. 5.2).
_HALF_WIDTH = {"rectangular": 0.5}


def half_width(beta, surrogate: str = "triangular"):
    """The half-width of the effective domain of ``surrogate`` with width parameter ``beta``:
    ``1/(2 beta)`` for the rectangular window (its support), ``1/beta`` for the triangle (its
    support) and for every other surrogate (the paper's interval rule, Sec. 5.2)."""
    name = kind(surrogate).__name__.lower()
    return _HALF_WIDTH.get(name, 1.0) / beta


def chi_of_moments(mean, std, v_th, beta, surrogate: str = "triangular") -> jax.Array:
    """Eq. 6 from the fitted normal's moments: ``Phi((v_th + h - mean) / std) - Phi((v_th - h -
    mean) / std)`` with ``h = half_width(beta, surrogate)``, ``Phi`` the standard normal CDF.

    The paper prints the density's normaliser as ``sqrt(2 pi sigma)``; the normal density has
    ``sqrt(2 pi) sigma``, which is what integrates to 1 and what is used here.
    """
    h = half_width(beta, surrogate)
    return ndtr((v_th + h - mean) / std) - ndtr((v_th - h - mean) / std)


def _check_beta(beta) -> None:
    values = concrete(beta)
    if values is not None and not np.all((values > 0) & np.isfinite(values)):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")


def chi(u_pre: jax.Array, v_th, beta, surrogate: str = "triangular") -> jax.Array:
    """Eq. 6 for one layer: the mass of the normal distribution fitted to its pre-spike
    membrane potentials ``u_pre`` (mean and standard deviation over all of them: batch, time
    steps, neurons) inside the effective domain ``v_th +- half_width(beta, surrogate)``."""
    _check_beta(beta)
    u_pre = jnp.asarray(u_pre)
    std = jnp.std(u_pre)
    spread = concrete(std)
    if spread is not None and not spread > 0:
        raise ValueError(
            f"u_pre has zero variance (all {u_pre.size} values equal): chi needs a spread of "
            "membrane potentials"
        )
    return chi_of_moments(jnp.mean(u_pre), std, v_th, beta, surrogate)


@functools.partial(jax.jit, static_argnames=("surrogate", "max_steps"))
def _bisect(mean, std, v_th, chi_target, lo, hi, tol, surrogate: str, max_steps: int = 200):
    """Bisection in log beta for chi(beta) = chi_target; chi falls monotonically in beta."""

    def error(log_beta):
        return chi_of_moments(mean, std, v_th, jnp.exp(log_beta), surrogate) - chi_target

    def unfinished(carry):
        *_, mid, step = carry
        return (jnp.abs(error(mid)) > tol) & (step < max_steps)

    def halve(carry):
        low, high, mid, step = carry
        too_wide = error(mid) > 0  # chi above the target: beta must grow
        low, high = jnp.where(too_wide, mid, low), jnp.where(too_wide, high, mid)
        return low, high, (low + high) / 2, step + 1

    low, high = jnp.log(lo), jnp.log(hi)
    start = (low, high, (low + high) / 2, 0)
    return jnp.exp(jax.lax.while_loop(unfinished, halve, start)[2])


def solve_beta(
    mean: float,
    std: float,
    v_th: float,
    chi_target: float,
    surrogate: str = "triangular",
    *,
    lo: float = 1e-3,
    hi: float = 1e3,
    tol: float = 1e-5,
) -> float:
    """The beta in ``[lo, hi]`` whose chi (:func:`chi_of_moments`) is ``chi_target``: the
    binary search of Algorithm 1, done on ``log beta`` (chi falls monotonically in beta).

    Tolerance: the result's chi is within ``tol`` of ``chi_target`` (checked in float32,
    whose CDF is good to about 1e-7, so ``tol`` should stay above 1e-6), unless the target
    lies outside what ``[lo, hi]`` can reach: then the nearer bound is returned (``lo`` when
    even ``chi(lo)`` is below the target, ``hi`` when even ``chi(hi)`` is above it).
    """
    for name, value in (("mean", mean), ("std", std), ("v_th", v_th)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not std > 0:
        raise ValueError(f"std must be > 0 (a layer with zero membrane variance), got {std!r}")
    if not 0 < chi_target < 1:
        raise ValueError(f"chi_target must lie in (0, 1), got {chi_target!r}")
    lo, hi, tol = (positive_float(name, v) for name, v in (("lo", lo), ("hi", hi), ("tol", tol)))
    if not lo < hi:
        raise ValueError(f"lo must be below hi, got lo={lo!r}, hi={hi!r}")
    kind(surrogate)  # an unknown name fails here
    at_lo = float(chi_of_moments(mean, std, v_th, lo, surrogate))
    at_hi = float(chi_of_moments(mean, std, v_th, hi, surrogate))
    if at_lo <= chi_target:
        return lo
    if at_hi >= chi_target:
        return hi
    return float(_bisect(mean, std, v_th, chi_target, lo, hi, tol, surrogate))


class MembraneStats(NamedTuple):
    """One layer's pre-spike membrane summary: its mean and standard deviation, and ``v_th``."""

    mean: float
    std: float
    v_th: float


def update(
    records: Mapping[str, float],
    stats: Mapping[str, MembraneStats],
    betas: Mapping[str, float],
    *,
    epoch: int,
    chi_limit: float = 0.2,
    surrogate: str = "triangular",
    **search,
) -> tuple[dict[str, float], dict[str, float]]:
    """One application of Algorithm 1 to every layer: ``(records, betas)`` after epoch
    ``epoch`` (from 0), from the layers' smallest chi so far (``records``, empty at epoch 0),
    their membrane ``stats`` and current ``betas``. ``search`` goes to :func:`solve_beta`.

    - Epoch 0: each layer's chi (Eq. 6, at its current beta) is recorded; beta is kept.
    - Later: the record becomes ``max(min(record, chi), chi_limit)``, the running minimum never
      below ``chi_limit``; where it differs from the current chi, beta is re-solved so that
      chi equals it: a larger beta where chi rose, a smaller one where chi fell below the limit.

    Plain Python over the layers (it runs once per epoch, on a few numbers per layer). One
    choice differs from the letter of Algorithm 1, which floors the record only at the next
    epoch (it tests the record before taking the new minimum): here a chi below ``chi_limit``
    is floored at once, as the paper's text says ("the beta may decrease to force chi back
    above chi_limit").
    """
    if not 0 <= chi_limit < 1:
        raise ValueError(f"chi_limit must lie in [0, 1), got {chi_limit!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    if set(stats) != set(betas) or (epoch and set(records) != set(stats)):
        raise ValueError(
            f"records, stats and betas must name the same layers, got {sorted(records)}, "
            f"{sorted(stats)} and {sorted(betas)}"
        )
    new_records, new_betas = dict(records), dict(betas)
    for layer, (mean, std, v_th) in stats.items():
        if not std > 0:
            raise ValueError(f"layer {layer!r} has zero membrane variance (std {std!r})")
        _check_beta(betas[layer])
        current = float(chi_of_moments(mean, std, v_th, betas[layer], surrogate))
        if epoch == 0:
            new_records[layer] = current
            continue
        target = max(min(records[layer], current), chi_limit)
        new_records[layer] = target
        if target != current:
            new_betas[layer] = solve_beta(mean, std, v_th, target, surrogate, **search)
    return new_records, new_betas
