"""Spike functions: the exact Heaviside step forward, a surrogate derivative backward.

A spike function maps ``x = u - v_th`` (membrane potential minus threshold) to spikes. The forward
pass is the step of Dspike Eq. 2 (a spike iff ``x > 0``, strictly); the backward pass replaces the
step's zero-almost-everywhere derivative by the surrogate's ``derivative(x)``, through
``jax.custom_vjp``.

Surrogates are pytrees whose leaves are their shape parameters (arrays), so a surrogate can be
passed through ``jit``, ``vmap`` (a batch of temperatures in one call), ``lax.scan`` and stored per
layer as data. Every surrogate derivative integrates to 1 over ``x`` (CPNG Sec. 3: the property
of the delta function that the surrogates share). Shape parameters get no gradient: methods such
as the Dspike temperature search and CPNG set them between epochs.

Dtypes follow :mod:`jsnn.dtypes`: a surrogate's parameters keep the dtype they were built with
and are cast to the compute dtype of ``x`` where they meet it, so a float64 parameter never
promotes a float32 computation; ``derivative(x)`` and the spikes have the dtype of ``x``.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jsnn._checks import concrete, floating_array
from jsnn.dtypes import cast_parameters, compute_dtype

__all__ = [
    "ArcTan",
    "Dspike",
    "Rectangular",
    "Sigmoid",
    "Surrogate",
    "Triangular",
    "get",
    "kind",
    "names",
    "spike",
]


def _shape_parameter(owner: str, name: str, value) -> jax.Array:
    """Converts a shape parameter to a float array; rejects non-positive values when concrete."""
    array = jnp.asarray(value, dtype=jnp.result_type(float))
    host = concrete(array)
    if host is not None and not (np.all(np.isfinite(host)) and np.all(host > 0)):
        raise ValueError(f"{owner}: {name} must be finite and > 0, got {value!r}")
    return array


class Surrogate(abc.ABC):
    """A spike function with a surrogate derivative; subclasses name their shape parameters.

    Calling ``sg(x)`` returns spikes ``H(x)`` with the dtype of ``x``; in the backward pass the
    cotangent is multiplied by ``sg.derivative(x)``.
    """

    parameters: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_with_keys(
            cls, cls._flatten_with_keys, cls._unflatten, cls._flatten
        )
        if "derivative" in cls.__dict__:  # every subclass's formula runs under the policy
            cls.derivative = _in_compute_dtype(cls.__dict__["derivative"])

    def _flatten(self):
        return tuple(getattr(self, name) for name in self.parameters), None

    def _flatten_with_keys(self):
        keyed = tuple(
            (jax.tree_util.GetAttrKey(name), getattr(self, name)) for name in self.parameters
        )
        return keyed, None

    @classmethod
    def _unflatten(cls, _, leaves):
        # Transformations rebuild pytrees with tracers or sentinels as leaves: skip validation.
        surrogate = object.__new__(cls)
        for name, leaf in zip(cls.parameters, leaves, strict=True):
            setattr(surrogate, name, leaf)
        return surrogate

    @abc.abstractmethod
    def derivative(self, x: jax.Array) -> jax.Array:
        """The surrogate derivative dH/dx used in the backward pass."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return spike(floating_array("x (u - v_th)", x), self)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)}" for name in self.parameters)
        return f"{type(self).__name__}({values})"


def _in_compute_dtype(derivative):
    """``derivative(self, x)`` computed with ``x`` and the parameters in the compute dtype of
    ``x`` (:mod:`jsnn.dtypes`), returned in the dtype of ``x``."""

    @functools.wraps(derivative)
    def in_compute_dtype(self, x):
        x = jnp.asarray(x)
        dtype = compute_dtype(x.dtype)
        return derivative(cast_parameters(self, dtype), x.astype(dtype)).astype(x.dtype)

    return in_compute_dtype


@jax.custom_vjp
def spike(x: jax.Array, surrogate: Surrogate) -> jax.Array:
    """Heaviside step H(x) (1 iff x > 0, Dspike Eq. 2) with ``surrogate.derivative`` as gradient.

    NaN stays NaN: ``NaN > 0`` is false, and a diverged network would otherwise stop spiking
    and give finite, wrong outputs instead of a NaN loss.
    """
    return jnp.where(jnp.isnan(x), x, (x > 0).astype(x.dtype))


def _spike_fwd(x, surrogate):
    return spike(x, surrogate), (x, surrogate)


def _spike_bwd(residuals, cotangent):
    x, surrogate = residuals
    grad_x = (cotangent * surrogate.derivative(x)).astype(x.dtype)
    return grad_x, jax.tree.map(jnp.zeros_like, surrogate)


spike.defvjp(_spike_fwd, _spike_bwd)


class Rectangular(Surrogate):
    """Rectangular window: ``beta`` on ``|x| < 1/(2 beta)``, 0 elsewhere.

    CPNG Eq. 4; Dspike Eq. 7 with ``a = 1/beta`` (``beta = 1`` is the straight-through estimator
    on ``u in [0, 1]`` for ``v_th = 0.5``).
    """

    parameters = ("beta",)

    def __init__(self, beta=1.0):
        self.beta = _shape_parameter("Rectangular", "beta", beta)

    def derivative(self, x):
        return jnp.where(jnp.abs(x) < 0.5 / self.beta, self.beta, 0.0)


class Triangular(Surrogate):
    """Triangle: ``beta (1 - beta |x|)`` on ``|x| < 1/beta``, 0 elsewhere.

    CPNG Eq. 3; Dspike Eq. 8 (``gamma max(0, 1 - |u/v_th - 1|)``) with ``beta = gamma = 1/v_th``.
    """

    parameters = ("beta",)

    def __init__(self, beta=1.0):
        self.beta = _shape_parameter("Triangular", "beta", beta)

    def derivative(self, x):
        return self.beta * jnp.maximum(0.0, 1.0 - self.beta * jnp.abs(x))


class ArcTan(Surrogate):
    """Arctangent: ``beta / (1 + (pi beta x)^2)`` (CPNG Eq. 4); ``beta`` is its peak value."""

    parameters = ("beta",)

    def __init__(self, beta=1.0):
        self.beta = _shape_parameter("ArcTan", "beta", beta)

    def derivative(self, x):
        return self.beta / (1.0 + (math.pi * self.beta * x) ** 2)


class Sigmoid(Surrogate):
    """Derivative of ``sigmoid(alpha x)``: ``alpha s (1 - s)`` with ``s = sigmoid(alpha x)``."""

    parameters = ("alpha",)

    def __init__(self, alpha=4.0):
        self.alpha = _shape_parameter("Sigmoid", "alpha", alpha)

    def derivative(self, x):
        # The derivative is even; the small side of the sigmoid keeps float32 tails precise.
        s = jax.nn.sigmoid(-self.alpha * jnp.abs(x))
        return self.alpha * s * (1.0 - s)


def _sech2(z):
    """sech^2(z) = 4 e^{-2|z|} / (1 + e^{-2|z|})^2: no overflow for large |z|."""
    e = jnp.exp(-2.0 * jnp.abs(z))
    return 4.0 * e / (1.0 + e) ** 2


def _half_b_over_tanh(b):
    """b / (2 tanh(b/2)), finite for all b > 0: its Taylor series 1 + b^2/12 below b = 1e-2."""
    small = b < 1e-2
    safe_b = jnp.where(small, 1.0, b)
    return jnp.where(small, 1.0 + b * b / 12.0, safe_b / (2.0 * jnp.tanh(safe_b / 2.0)))


class Dspike(Surrogate):
    """Dspike (Li et al., NeurIPS 2021): derivative of the tanh curve of Eq. 12 on a window.

    Eq. 12, ``Dspike(u, b) = (tanh(b (u - 0.5)) + tanh(b/2)) / (2 tanh(b/2))`` on ``u in [0, 1]``,
    rises from 0 to 1 around ``v_th = 0.5``. Written in ``x = u - v_th`` on the window
    ``|x| <= width/2`` its derivative is::

        b sech^2(b x / width) / (2 width tanh(b/2))

    and 0 outside (the curve is clipped), so it integrates to 1. ``width = 1`` with ``v_th = 0.5``
    is exactly the paper's window. ``b`` is the temperature: ``b -> 0+`` gives the slope
    ``1/width`` of the straight-through estimator, ``b -> inf`` the step (Lemma 4.1).
    """

    parameters = ("b", "width")

    def __init__(self, b=1.0, width=1.0):
        self.b = _shape_parameter("Dspike", "b", b)
        self.width = _shape_parameter("Dspike", "width", width)

    def derivative(self, x):
        inside = jnp.abs(x) <= 0.5 * self.width
        slope = _half_b_over_tanh(self.b) * _sech2(self.b * x / self.width) / self.width
        return jnp.where(inside, slope, 0.0)


_BY_NAME: dict[str, type[Surrogate]] = {
    "rectangular": Rectangular,
    "triangular": Triangular,
    "arctan": ArcTan,
    "sigmoid": Sigmoid,
    "dspike": Dspike,
}


def names() -> tuple[str, ...]:
    """The names :func:`get` accepts."""
    return tuple(_BY_NAME)


def kind(name: str) -> type[Surrogate]:
    """The surrogate class of a name (case-insensitive), without building one (no arrays)."""
    cls = _BY_NAME.get(str(name).lower())
    if cls is None:
        raise ValueError(f"surrogate name {name!r} is not known; expected one of {names()}")
    return cls


def get(name: str, **parameters) -> Surrogate:
    """Builds a surrogate from its name (case-insensitive), e.g. ``get("dspike", b=2.0)``."""
    cls = kind(name)
    try:
        return cls(**parameters)
    except TypeError as error:
        raise TypeError(
            f"surrogate {name!r} takes the parameters {cls.parameters}, got {tuple(parameters)}"
        ) from error
