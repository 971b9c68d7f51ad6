"""What every model of the zoo shares: configuration, the neuron slot, input folding, ANN twins.

**Time layout.** A spiking model takes ``[B, T, H, W, C]`` (already temporal, e.g. event frames)
or static ``[B, H, W, C]``, which it direct-encodes (:func:`jsnn.encoding.direct`) to its
``steps``. It folds the input once to ``[B*T, H, W, C]`` (batch-major, so the reshape keeps a
batch sharding) and keeps that folded layout between layers: convolutions, linear layers,
pooling and batch norm act on it directly, and only the neuron slot (:class:`NeuronSlot`, an
internal part of the zoo) unfolds to ``[B, T, ...]`` around the neuron, which scans over time,
and folds back. The last layer's per-step output is unfolded once to ``[B, T, classes]``. T is
read from the input, so a model runs at any T (Time Inheritance Training raises it after
training); ``steps`` is only the T that static input is encoded to.

Why the folded layout rather than :class:`jsnn.TimeDistributed` (the public time adapter, which
folds around a stateless layer: the opposite of the neuron slot) around every stateless layer:
the layers are then the very same ``nnx.Conv`` / ``nnx.Linear`` / norm modules, at the same
attribute paths, in a spiking model and in its ANN twin (which has no time axis at all), so
``nnx.state(twin, nnx.Param)`` copies into the spiking model without renaming (see
:func:`init_from_ann`); and a model has exactly one fold and one unfold per neuron layer, both
free reshapes of contiguous batch-major arrays.

**Configuration.** Every model takes ``num_classes``, ``in_channels``, ``steps`` (T),
``neuron`` (a zero-argument factory called once per neuron layer, default
``functools.partial(jsnn.LIF)``: LIF, decay 0.25, ``v_th`` 0.5, Dspike; build others with
:func:`neuron_factory`), ``norm`` (a factory ``num_features -> module``, default
:class:`jsnn.TDBatchNorm`, tdBN; ``jsnn.TDBatchNorm.time_folded`` is plain time-folded BN;
:func:`norm_factory` builds either from a name),
``spiking``, ``remat``, ``dtype`` and ``rngs``. ``spiking=False`` builds the model's ANN
twin: ReLU in every neuron slot, time-folded BN (scale 1) unless ``norm`` is given, input
``[B, H, W, C]``, output ``[B, classes]``; its parameters have the spiking model's names and
shapes (PLIF's learnt decays aside), so :func:`init_from_ann` initialises a spiking model from
a trained twin.

**Memory and precision.** ``remat`` trades compute for memory in training:
``"none"`` (default) keeps every intermediate of the forward pass for the backward pass;
``"block"`` keeps only the input of each residual block (each conv unit in the nets without
blocks) and recomputes the rest of the block in the backward pass (``nnx.remat`` saving
nothing); ``"conv"`` does the same but keeps the convolution and linear outputs
(``jax.checkpoint_policies.dots_saveable``), so the backward pass recomputes only the norms and
neurons. Results are the same with each (the recomputation repeats the same operations).
``dtype`` (default None: the parameters' float32, or whatever the input promotes to) is the
dtype convolutions and linear layers compute in, e.g. ``jnp.bfloat16``; parameters stay
float32 (their gradients too), norms compute their statistics in float32 at least
(:mod:`jsnn.norm`) and return their input's dtype.

**Initialisation.** Convolutions draw from N(0, 2 / (k^2 C_out)) (Kaiming normal, fan-out),
as in the Dspike authors' modified ResNet (their public code), in DSR's PreAct-ResNet and
VGG and in the torchvision layouts that SEW-ResNet and SpikingJelly's spiking VGG adapt;
conv biases start at 0. Linear layers keep Flax's defaults (LeCun normal, zero bias); norms
start at gamma 1, beta 0.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, TypedDict

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from jsnn._checks import floating_array, positive_float, positive_int
from jsnn.encoding import direct
from jsnn.layers import LIF, TDBatchNorm
from jsnn.surrogate import Surrogate
from jsnn.surrogate import get as get_surrogate

__all__ = [
    "NEURON_KINDS",
    "NORM_KINDS",
    "REMAT_KINDS",
    "REMAT_POLICIES",
    "Classifier",
    "ConvUnit",
    "NeuronFactory",
    "NormFactory",
    "Remat",
    "SpikingOptions",
    "avg_pool",
    "conv",
    "global_avg_pool",
    "init_from_ann",
    "neuron_factory",
    "norm_factory",
]

NeuronFactory = Callable[[], nnx.Module]
NormFactory = Callable[[int], nnx.Module]
NEURON_KINDS: tuple[str, ...] = ("lif", "if", "plif")
NORM_KINDS: tuple[str, ...] = ("tdbn", "bn")
Remat = Literal["none", "block", "conv"]
# What a rematerialised block keeps for the backward pass (None: nothing but its input).
REMAT_POLICIES: Mapping[str, Callable[..., bool] | None] = MappingProxyType(
    {"block": None, "conv": jax.checkpoint_policies.dots_saveable}
)
REMAT_KINDS: tuple[str, ...] = ("none", *REMAT_POLICIES)


class SpikingOptions(TypedDict, total=False):
    """The keyword arguments every model constructor shares besides its data shape and rngs."""

    steps: int
    neuron: NeuronFactory | None
    norm: NormFactory | None
    spiking: bool
    remat: Remat
    dtype: DTypeLike | None


def neuron_factory(
    kind: str = "lif",
    *,
    decay: float | None = None,
    v_th: float = 0.5,
    reset: str = "hard",
    surrogate: Surrogate | str | None = None,
    detach_reset: bool = False,
) -> NeuronFactory:
    """A neuron factory for the models from plain values (e.g. a config file).

    ``kind`` is ``"lif"`` (decay 0.25 unless given), ``"if"`` (decay 1; any other decay is an
    error) or ``"plif"`` (a learnt decay per layer, starting at ``decay``, 0.5 unless given).
    ``surrogate`` is a :class:`jsnn.surrogate.Surrogate`, a name for :func:`jsnn.surrogate.get`
    (default parameters), or None for :class:`jsnn.LIF`'s default ``Dspike(1)``. Bad values raise
    here, naming the argument, not when a model is built.
    """
    name = str(kind).lower()
    if name not in NEURON_KINDS:
        raise ValueError(f"kind must be one of {NEURON_KINDS}, got {kind!r}")
    if name == "if":
        if decay is not None and decay != 1.0:
            raise ValueError(f"kind='if' has decay 1 (no leak), got decay={decay!r}")
        decay = 1.0
    elif decay is None:
        decay = 0.5 if name == "plif" else 0.25
    if isinstance(surrogate, str):
        surrogate = get_surrogate(surrogate)
    elif surrogate is not None and not isinstance(surrogate, Surrogate):
        raise TypeError(
            f"surrogate must be a jsnn.surrogate.Surrogate, a surrogate name or None, "
            f"got {surrogate!r}"
        )
    factory = functools.partial(
        LIF,
        decay=decay,
        v_th=v_th,
        reset=reset,
        surrogate=surrogate,
        detach_reset=detach_reset,
        learn_decay=name == "plif",
    )
    factory()  # LIF checks decay, v_th and reset: fail now rather than inside a model
    return factory


def norm_factory(kind: str = "tdbn", *, v_th: float = 0.5) -> NormFactory:
    """A norm factory for the models from plain values (e.g. a config file).

    ``kind`` is ``"tdbn"``, tdBN (Dspike Eq. 4-5) scaling the normalised input by
    ``alpha * v_th`` with ``alpha = 1`` (pass the neurons' ``v_th``), or ``"bn"``, plain
    time-folded BatchNorm (:meth:`jsnn.TDBatchNorm.time_folded`, DSR supplement C.2), which has
    no ``v_th`` and ignores it. Bad values raise here, naming the argument.
    """
    name = str(kind).lower()
    if name not in NORM_KINDS:
        raise ValueError(f"kind must be one of {NORM_KINDS}, got {kind!r}")
    if name == "bn":
        return TDBatchNorm.time_folded
    return functools.partial(TDBatchNorm, v_th=positive_float("v_th", v_th))


class NeuronSlot(nnx.Module):
    """Where a model of the zoo has a neuron layer: the neuron on the folded ``[B*T, ...]``
    batch, or ReLU in an ANN twin. Internal to :mod:`jsnn.models` (not exported).

    ``NeuronSlot(factory)`` holds ``factory()`` as ``.neuron``; calling it with the folded input
    and T unfolds to ``[B, T, ...]``, runs the neuron (the only step that scans over time) and
    folds back. ``NeuronSlot(None)`` is a ReLU, the ANN twin's activation at the same place.
    It is the mirror image of :class:`jsnn.TimeDistributed`, the public time adapter, which
    takes ``[B, T, ...]`` and folds around a stateless layer; networks built outside the zoo
    use that, with :class:`jsnn.LIF` on ``[B, T, ...]`` directly.
    """

    def __init__(self, neuron: NeuronFactory | None):
        if neuron is None:
            self.neuron = None
            return
        module = neuron()
        if not isinstance(module, nnx.Module):
            raise TypeError(
                f"neuron must be a zero-argument factory returning an nnx.Module, "
                f"got a factory returning {type(module).__name__}"
            )
        self.neuron = module

    def __call__(self, x: jax.Array, steps: int) -> jax.Array:
        if self.neuron is None:
            return jax.nn.relu(x)
        sequences = x.reshape(x.shape[0] // steps, steps, *x.shape[1:])
        return self.neuron(sequences).reshape(x.shape)


_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _convolve(lhs, rhs, window_strides, padding, **options) -> jax.Array:
    """``lax.conv_general_dilated`` for :func:`conv`'s convolutions (NHWC, no dilation, no
    groups), except on maps smaller than the kernel, which are one matrix product of the
    input's patches instead.

    XLA's CPU backend has no fast path for those: a 3x3 convolution of eight 2x2 maps with 512
    channels (the last stage of the modified ResNet-18 and of the VGGs on 32x32 inputs) took
    200 ms on two cores where the patch product takes 12 ms; it was most of a training step.
    The results are the same up to rounding, the parameters the same.
    """
    window = rhs.shape[:2]
    if lhs.shape[1] >= window[0] and lhs.shape[2] >= window[1]:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)
    patches = jax.lax.conv_general_dilated_patches(
        lhs, window, window_strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # The patches' features run over (input channel, kernel row, kernel column).
    kernel = jnp.transpose(rhs, (2, 0, 1, 3)).reshape(-1, rhs.shape[-1])
    return jnp.dot(patches, kernel, preferred_element_type=options.get("preferred_element_type"))


def conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = False,
) -> nnx.Conv:
    """A square convolution with PyTorch's symmetric padding (``kernel // 2`` by default), so
    that strided layers see the same pixels as the reference implementations."""
    pad = kernel // 2 if padding is None else padding
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=bias,
        kernel_init=_conv_init,
        conv_general_dilated=_convolve,
        rngs=rngs,
    )


class ConvUnit(nnx.Module):
    """conv -> norm -> neurons (ReLU in an ANN twin), on the folded batch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        neuron: NeuronFactory | None,
        norm: NormFactory,
        rngs: nnx.Rngs,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
    ):
        self.conv = conv(
            in_channels, out_channels, kernel, stride=stride, padding=padding, bias=bias, rngs=rngs
        )
        self.norm = norm(out_channels)
        self.act = NeuronSlot(neuron)

    def __call__(self, x: jax.Array, steps: int) -> jax.Array:
        return self.act(self.norm(self.conv(x)), steps)


def avg_pool(x: jax.Array, window: int, stride: int | None = None, padding: int = 0) -> jax.Array:
    """Average pooling with PyTorch's defaults (stride = window, padding counted as zeros)."""
    stride = window if stride is None else stride
    return nnx.avg_pool(
        x, (window, window), strides=(stride, stride), padding=((padding, padding),) * 2
    )


def global_avg_pool(x: jax.Array) -> jax.Array:
    """``[N, H, W, C] -> [N, C]``: PyTorch's ``AdaptiveAvgPool2d(1)`` and flatten.

    An empty map (the input was too small for the model's poolings) is an error, not NaN.
    """
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(
            f"the last feature map is empty, shape {x.shape[1:]}: the input is too small for "
            f"this model's downsampling"
        )
    return jnp.mean(x, axis=(1, 2))


class Classifier(nnx.Module, abc.ABC):
    """Base of the zoo's models: input checks, direct encoding, folding and unfolding.

    A subclass builds its layers (after calling :meth:`_configure`) and implements
    :meth:`features` (folded input to the last feature map) and :meth:`classify` (that map to
    the per-step class scores), both on the folded ``[B*T, ...]`` batch with T passed along
    for the neuron layers (T = 1 in an ANN twin, whose activations ignore it).
    """

    def _configure(
        self,
        *,
        num_classes: int,
        in_channels: int,
        options: Mapping[str, Any],
        input_size: Sequence[int] | None = None,
    ) -> tuple[NeuronFactory | None, NormFactory]:
        """Checks and stores the shared configuration (``options`` holds the constructor's
        :class:`SpikingOptions`); returns the neuron factory (None, i.e. ReLU, in an ANN twin)
        and the norm factory the layers are built with."""
        unknown = set(options) - set(SpikingOptions.__annotations__)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}; "
                f"the shared options are {sorted(SpikingOptions.__annotations__)}"
            )
        steps = options.get("steps", 4)
        neuron = options.get("neuron")
        norm = options.get("norm")
        spiking = options.get("spiking", True)
        remat = options.get("remat", "none")
        if remat not in REMAT_KINDS:
            raise ValueError(f"remat must be one of {REMAT_KINDS}, got {remat!r}")
        self.remat = remat
        self.dtype = _float_dtype(options.get("dtype"))
        self.num_classes = positive_int("num_classes", num_classes)
        self.in_channels = positive_int("in_channels", in_channels)
        self.steps = positive_int("steps", steps)
        if not isinstance(spiking, bool):
            raise TypeError(f"spiking must be True or False, got {spiking!r}")
        self.spiking = spiking
        if input_size is None:
            self.input_size = None
        else:
            size = tuple(input_size)
            if len(size) != 2:
                raise ValueError(f"input_size must be (height, width), got {input_size!r}")
            self.input_size = tuple(positive_int("input_size", s) for s in size)
        if norm is not None and not callable(norm):
            raise TypeError(f"norm must be a factory num_features -> module, got {norm!r}")
        if not spiking:
            if neuron is not None:
                raise ValueError(
                    "neuron is for spiking models; the ANN twin (spiking=False) uses ReLU"
                )
            return None, TDBatchNorm.time_folded if norm is None else norm
        if neuron is None:
            neuron = functools.partial(LIF)
        elif not callable(neuron):
            raise TypeError(f"neuron must be a zero-argument factory, got {neuron!r}")
        return neuron, TDBatchNorm if norm is None else norm

    def _compute_in_dtype(self) -> None:
        """Sets the ``dtype`` option on every convolution and linear layer; a subclass calls it
        once its layers are built."""
        for _, module in nnx.iter_modules(self):
            if isinstance(module, nnx.Conv | nnx.Linear):
                module.dtype = self.dtype

    def _block(self, block: nnx.Module, x: jax.Array, steps: int) -> jax.Array:
        """``block(x, steps)``, rematerialised in the backward pass as ``remat`` says."""
        if self.remat == "none":
            return block(x, steps)
        remat = nnx.remat(lambda block, x: block(x, steps), policy=REMAT_POLICIES[self.remat])
        return remat(block, x)

    @abc.abstractmethod
    def input_layer(self) -> nnx.Conv:
        """The convolution that sees the input: the "first layer" whose weights Dspike's
        temperature search differentiates by finite differences."""

    @abc.abstractmethod
    def features(self, x: jax.Array, steps: int) -> jax.Array:
        """The last feature map of the folded input (before pooling and the classifier)."""

    @abc.abstractmethod
    def classify(self, x: jax.Array, steps: int) -> jax.Array:
        """The per-step class scores ``[B*T, classes]`` of the last feature map."""

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, T, classes]`` (spiking) or ``[B, classes]`` (ANN twin) class scores: the last
        layer's per-step output, to be averaged over time by the loss (Dspike Eq. 3)."""
        folded, steps = self._fold(x)
        return self._unfold(self.classify(self.features(folded, steps), steps), steps)

    def feature_map(self, x: jax.Array) -> jax.Array:
        """The last feature map, ``[B, T, h, w, c]`` (spiking) or ``[B, h, w, c]`` (ANN twin)."""
        folded, steps = self._fold(x)
        return self._unfold(self.features(folded, steps), steps)

    def _fold(self, x) -> tuple[jax.Array, int]:
        x = floating_array("x", x)
        if self.spiking:
            if x.ndim == 4:
                x = direct(x, self.steps)
            elif x.ndim != 5:
                raise ValueError(
                    f"x must be static [B, H, W, C] or temporal [B, T, H, W, C], "
                    f"got shape {x.shape}"
                )
            steps = x.shape[1]
        elif x.ndim == 4:
            x = x[:, None]
            steps = 1
        else:
            raise ValueError(
                f"the ANN twin (spiking=False) takes static [B, H, W, C] input, got shape {x.shape}"
            )
        image = x.shape[2:]
        if image[-1] != self.in_channels:
            raise ValueError(
                f"x must have {self.in_channels} channels on its last axis (NHWC), "
                f"got shape {x.shape}"
            )
        if self.input_size is not None and image[:2] != self.input_size:
            raise ValueError(
                f"x must be {self.input_size[0]}x{self.input_size[1]} images "
                f"(input_size), got shape {x.shape}"
            )
        return x.reshape(x.shape[0] * steps, *image), steps

    def _unfold(self, y: jax.Array, steps: int) -> jax.Array:
        if not self.spiking:
            return y
        return y.reshape(y.shape[0] // steps, steps, *y.shape[1:])


def _float_dtype(dtype: DTypeLike | None) -> jnp.dtype | None:
    if dtype is None:
        return None
    try:
        value = jnp.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"dtype must be a floating-point dtype or None, got {dtype!r}") from error
    if not jnp.issubdtype(value, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype or None, got {dtype!r}")
    return value


def _weights(model: nnx.Module) -> dict[tuple, nnx.Variable]:
    """The model's ``nnx.Param`` by path, without those inside neurons (PLIF's learnt decay),
    which an ANN twin does not have."""
    neuron_paths = [
        (*path, "neuron")
        for path, module in nnx.iter_modules(model)
        if isinstance(module, NeuronSlot) and module.neuron is not None
    ]
    return {
        path: variable
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if not any(path[: len(prefix)] == prefix for prefix in neuron_paths)
    }


def init_from_ann(snn: Classifier, ann: Classifier) -> None:
    """Copies the weights of a (trained) ANN twin into the spiking model, in place.

    Every ``nnx.Param`` of ``ann`` (conv and linear weights, norm gamma and beta) replaces the
    parameter at the same path in ``snn``; the neurons' own parameters (PLIF's decay) and all
    batch statistics stay as they are, since the spiking layers see spikes, not ReLU outputs,
    and collect their own statistics. Raises ValueError naming the differing paths when the
    two parameter structures do not match.
    """
    for name, model, spiking in (("snn", snn, True), ("ann", ann, False)):
        if not isinstance(model, Classifier) or model.spiking is not spiking:
            kind = "a spiking model" if spiking else "an ANN twin (spiking=False)"
            raise ValueError(
                f"{name} must be {kind} of jsnn.models, got {type(model).__name__}"
                + (f" with spiking={model.spiking}" if isinstance(model, Classifier) else "")
            )
    target, source = _weights(snn), _weights(ann)
    problems = [f"{_dotted(p)} only in snn" for p in target.keys() - source.keys()]
    problems += [f"{_dotted(p)} only in ann" for p in source.keys() - target.keys()]
    problems += [
        f"{_dotted(p)}: snn {target[p].shape} vs ann {source[p].shape}"
        for p in target.keys() & source.keys()
        if target[p].shape != source[p].shape
    ]
    if problems:
        shown = "; ".join(sorted(problems)[:8])
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(
            f"the ANN's parameters do not match the spiking model's: {shown}{more}. "
            f"Build the twin with the same constructor and shape arguments and spiking=False."
        )
    for path, variable in target.items():
        variable.set_value(source[path].get_value())


def _dotted(path: tuple) -> str:
    return ".".join(str(key) for key in path)
