"""CPNG: per-layer surrogate width controlled by the share of non-zero gradients, chi
("Efficient Surrogate Gradients for Training Spiking Neural Networks", ICLR 2023 submission).

Every spiking layer's pre-spike membrane potentials are summarised by a normal distribution
(mean and standard deviation over the batch, every time step and every neuron of the layer).
chi (Eq. 6) is its mass inside the surrogate's effective domain around the threshold: the
share of membrane potentials that get a gradient. Once per epoch Algorithm 1 records each
layer's smallest chi and, where chi has risen above it, steepens the surrogate (a larger
beta) until chi is back at that minimum, never letting chi fall below ``chi_limit``.

The math is in functions of arrays and numbers (:func:`chi`, :func:`solve_beta`,
:func:`update`); the surrogates are jsnn's ``Triangular``, ``Rectangular`` and ``ArcTan``, whose
width parameter is ``beta``. As a training method (``--method.name cpng``, :class:`CPNG`) it is
an epoch-end hook (:func:`chi_control`): each spiking layer's pre-spike membrane statistics on
the epoch's last training batch (Sec. 4.3, appendix A.2), Algorithm 1 on them, and each layer's
new ``beta`` set in its surrogate; the smallest chi of every layer is kept in the model's state
(:class:`ChiRecord`), so checkpoints hold it and a resumed run goes on from it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.scipy.special import ndtr

from jsnn._checks import concrete, positive_float
from jsnn._fields import option
from jsnn.dtypes import cast_parameters, compute_dtype
from jsnn.layers import LIF
from jsnn.methods.base import Hook, Method
from jsnn.surrogate import kind

__all__ = [
    "CPNG",
    "METHOD",
    "SURROGATES",
    "ChiRecord",
    "MembraneStats",
    "chi",
    "chi_control",
    "chi_of_moments",
    "half_width",
    "membrane_stats",
    "solve_beta",
    "spiking_layers",
    "update",
]

# The surrogates whose width CPNG controls: each has one shape parameter, beta (Sec. 3).
SURROGATES: tuple[str, ...] = ("triangular", "rectangular", "arctan")

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
    steps, neurons) inside the effective domain ``v_th +- half_width(beta, surrogate)``, in the
    compute dtype of ``u_pre`` (:mod:`jsnn.dtypes`: ``v_th`` and ``beta`` are cast to it)."""
    _check_beta(beta)
    u_pre = jnp.asarray(u_pre)
    dtype = compute_dtype(u_pre.dtype)
    u_pre = u_pre.astype(dtype)
    v_th, beta = cast_parameters((v_th, beta), dtype)
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


class ChiRecord(nnx.Variable):
    """A spiking layer's smallest chi so far (Algorithm 1's ``chi_recorder[l]``); NaN until
    CPNG first measures the layer. Model state, so checkpoints keep it."""


def spiking_layers(model: nnx.Module) -> dict[str, LIF]:
    """The model's LIF layers by dotted path (``"stages.0.0.neuron1.neuron"``), in order."""
    return {
        ".".join(map(str, path)): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, LIF)
    }


def _layer_name(path) -> str:
    return ".".join(str(key.key) for key in path if isinstance(key, jax.tree_util.DictKey))


def membrane_stats(model: nnx.Module, images: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
    """``{layer: (mean, std)}``: the pre-spike membrane statistics of every LIF layer of
    ``model`` on ``images``, in one forward pass in training mode (batch norm normalises with
    the batch's statistics, as in the training step) on a copy: ``model``'s running statistics
    are left alone. A layer called more than once pools its calls (equal sizes)."""
    copy = nnx.merge(*nnx.split(model), copy=True)
    copy.train(record_membrane=True)  # modules without the attribute are left alone
    _, sown = nnx.capture(copy, nnx.Intermediate)(images)
    calls: dict[str, dict[str, list]] = {}
    for path, value in jax.tree_util.tree_leaves_with_path(sown):
        name, _, statistic = _layer_name(path).rpartition(".")
        if statistic in ("membrane_mean", "membrane_std"):
            calls.setdefault(name, {}).setdefault(statistic, []).append(value)
    stats = {}
    for name, found in calls.items():
        means, stds = jnp.stack(found["membrane_mean"]), jnp.stack(found["membrane_std"])
        mean = jnp.mean(means)
        # The law of total variance over the calls: within-call plus between-call variance.
        stats[name] = (mean, jnp.sqrt(jnp.mean(stds**2 + (means - mean) ** 2)))
    return stats


def chi_control(
    *, chi_limit: float = 0.2, lo: float = 1e-3, hi: float = 1e3, tol: float = 1e-5
) -> Hook:
    """An epoch-end hook (:data:`jsnn.methods.base.Hook`) applying Algorithm 1 once, on the
    given (last) batch of the epoch: every LIF layer's membrane statistics
    (:func:`membrane_stats`), :func:`update` with each layer's :class:`ChiRecord` and current
    ``beta``, and the new ``beta`` set in each layer's surrogate.

    The first time a layer is measured (its record NaN: the run's first epoch, or a model
    initialised from a run without CPNG) is Algorithm 1's epoch 0: chi is recorded, beta kept.
    The statistics are those of the model after the epoch's last step (the paper stores them
    during that step's forward pass, one update earlier). Records per layer ``chi/<layer>``
    (chi at the epoch's beta, the paper's Fig. 3), ``chi_min/<layer>`` (the record) and
    ``beta/<layer>`` (the new beta, Fig. 4), and ``cpng_seconds``.
    """
    if not 0 <= chi_limit < 1:
        raise ValueError(f"chi_limit must lie in [0, 1), got {chi_limit!r}")

    @functools.partial(jax.jit, static_argnums=0)
    def measure(graphdef, state, images):
        return membrane_stats(nnx.merge(graphdef, state), images)

    def hook(model: nnx.Module, epoch: int, batch: dict) -> dict[str, float]:
        start = time.perf_counter()
        layers = spiking_layers(model)
        if not layers:
            raise ValueError("CPNG needs a model with LIF layers (model.spiking), it has none")
        surrogates = {name: layer.surrogate.get_value() for name, layer in layers.items()}
        kinds = {type(sg).__name__.lower() for sg in surrogates.values()}
        if len(kinds) != 1 or not kinds <= set(SURROGATES):
            raise ValueError(
                f"CPNG controls the beta of one surrogate kind among {SURROGATES}, the model's "
                f"layers have {sorted(kinds)}"
            )
        (surrogate,) = kinds
        found = jax.device_get(measure(*nnx.split(model), batch["image"]))
        stats, betas, records = {}, {}, {}
        for name, layer in layers.items():
            if name not in found:
                raise ValueError(f"LIF layer {name!r} was not called by the model's forward pass")
            v_th = np.asarray(layer.v_th.get_value())
            if v_th.size != 1:
                raise ValueError(
                    f"CPNG's chi (Eq. 6) takes one threshold per layer; layer {name!r} has "
                    f"v_th of shape {v_th.shape}"
                )
            mean, std = (float(value) for value in found[name])
            stats[name] = MembraneStats(mean, std, float(v_th))
            betas[name] = float(surrogates[name].beta)
            records[name] = float(_record(layer).get_value())
        first = any(math.isnan(record) for record in records.values())
        new_records, new_betas = update(
            {} if first else records,
            stats,
            betas,
            epoch=0 if first else epoch,
            chi_limit=chi_limit,
            surrogate=surrogate,
            lo=lo,
            hi=hi,
            tol=tol,
        )
        scalars = {}
        for name, layer in layers.items():
            chi_now = chi_of_moments(*stats[name][:2], stats[name].v_th, betas[name], surrogate)
            _record(layer).set_value(jnp.asarray(new_records[name], jnp.float32))
            layer.surrogate.set_value(type(surrogates[name])(beta=new_betas[name]))
            scalars[f"chi/{name}"] = float(chi_now)
            scalars[f"chi_min/{name}"] = new_records[name]
            scalars[f"beta/{name}"] = new_betas[name]
        scalars["cpng_seconds"] = time.perf_counter() - start
        if jax.process_index() == 0:
            chis = [scalars[f"chi/{name}"] for name in layers]
            values = list(new_betas.values())
            print(
                f"epoch {epoch + 1}: CPNG beta {min(values):.3f} to {max(values):.3f} over "
                f"{len(layers)} layers (chi {min(chis):.3f} to {max(chis):.3f}; "
                f"{scalars['cpng_seconds']:.2f} s)"
            )
        return scalars

    return hook


def _record(layer: LIF) -> ChiRecord:
    record = getattr(layer, "chi_record", None)
    if not isinstance(record, ChiRecord):
        raise ValueError(
            "CPNG keeps each layer's smallest chi in a ChiRecord variable, which this model's "
            "LIF layers lack: build the model with CPNG's neuron factory (CPNG().neurons)"
        )
    return record


def _records(workdir: pathlib.Path) -> list[dict]:
    """The hook's records of the run in ``workdir``, one per epoch."""
    from jsnn.train.metrics import read_metrics

    records = [
        record
        for record in read_metrics(workdir / "metrics.jsonl")
        if record["kind"] == "epoch_end" and "cpng_seconds" in record
    ]
    if not records:
        raise ValueError(f"{workdir} has no CPNG records (epoch_end with cpng_seconds)")
    return records


def _by_layer(record: dict, prefix: str) -> dict[str, float]:
    """``{layer: value}`` of the ``prefix/<layer>`` entries of one record."""
    return {key.partition("/")[2]: v for key, v in record.items() if key.startswith(prefix + "/")}


@dataclasses.dataclass(frozen=True)
class CPNG(Method):
    """Algorithm 1 after every epoch: each spiking layer's surrogate steepened (a larger beta)
    wherever its chi rose above its smallest so far, and widened where chi fell below
    ``chi_limit``. beta starts at the surrogate's (``--model.surrogate-options beta=1``, the
    paper's initial 1.0); the surrogate is triangular unless the config names another of
    :data:`SURROGATES`. Works with any loss (``--train.loss tet``)."""

    name = "cpng"
    settings = MappingProxyType({"model.surrogate": "triangular"})

    chi_limit: float = option(0.2, "chi never falls below this share (Algorithm 1's chi_limit)")
    lo: float = option(1e-3, "smallest beta the binary search may return")
    hi: float = option(1e3, "largest beta the binary search may return")
    tol: float = option(1e-5, "the binary search stops when chi is this close to its target")

    def __post_init__(self):
        if not 0 <= self.chi_limit < 1:
            raise ValueError(f"chi_limit must lie in [0, 1), got {self.chi_limit!r}")
        for name in ("lo", "hi", "tol"):
            positive_float(name, getattr(self, name))
        if not self.lo < self.hi:
            raise ValueError(f"lo must be below hi, got lo={self.lo!r}, hi={self.hi!r}")

    def check(self, config: Any) -> None:
        if config.model.surrogate not in SURROGATES or not config.model.spiking:
            raise ValueError(
                f"method 'cpng' controls the width of a spiking model's surrogate: it needs "
                f"model.surrogate in {SURROGATES} and model.spiking=True, got "
                f"{config.model.surrogate!r} and {config.model.spiking!r}"
            )

    def neurons(self, config: Any, neuron: Callable[[], nnx.Module]) -> Callable[[], nnx.Module]:
        """``neuron`` with a :class:`ChiRecord` (NaN: nothing measured yet) on every layer."""

        def with_record() -> nnx.Module:
            layer = neuron()
            layer.chi_record = ChiRecord(jnp.array(jnp.nan, jnp.float32))
            return layer

        return with_record

    def epoch_end(self, model: nnx.Module, config: Any) -> Sequence[Hook]:
        return (chi_control(chi_limit=self.chi_limit, lo=self.lo, hi=self.hi, tol=self.tol),)

    def plots(self, workdir: pathlib.Path) -> list[pathlib.Path]:
        """``chi.png``: every layer's chi over the epochs (the paper's Fig. 3, right), and
        ``beta.png``: every layer's final beta (Fig. 4), the layers named, in the model's
        module order."""
        from matplotlib.figure import Figure

        from jsnn.train.metrics import save_figure

        records = _records(workdir)
        epochs = [record["epoch"] for record in records]
        chis = [_by_layer(record, "chi") for record in records]
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        for layer in chis[-1]:
            axis.plot(epochs, [chi[layer] for chi in chis], label=layer)
        axis.set_xlabel("epoch")
        axis.set_ylabel("chi: share of membrane potentials with a gradient", fontsize="small")
        if len(chis[-1]) <= 20:
            axis.legend(fontsize="x-small")
        paths = [save_figure(figure, workdir, "chi.png")]

        betas = _by_layer(records[-1], "beta")
        figure = Figure(figsize=(max(5, 0.4 * len(betas)), 6))
        axis = figure.subplots()
        axis.bar(range(len(betas)), list(betas.values()))
        axis.set_xticks(range(len(betas)), list(betas), rotation=90, fontsize="x-small")
        axis.set_ylabel("final beta")
        paths.append(save_figure(figure, workdir, "beta.png"))
        return paths


METHOD = CPNG
