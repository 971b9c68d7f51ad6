"""Plain convolutional spiking networks: CIFARNet, the small nets for 8x8 digits and MNIST, and
the toy model of Dspike's finite-difference study.

Each is a stack of conv-BN-SN units and 2x2 average poolings, a flatten (so the input size is
fixed, ``input_size``), fully connected hidden layers FC -> SN (no norm, as in the published
layouts) and a last FC whose per-step output is the model output. The FDG toy has no norm at all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, Unpack

import jax
from flax import nnx

from jsnn.layers import LIF
from jsnn.models.common import Classifier, ConvUnit, NeuronSlot, SpikingOptions, avg_pool
from jsnn.surrogate import Rectangular

__all__ = ["ConvNet", "ConvSpec", "Identity", "cifarnet", "digits_net", "fdg_toy", "mnist_net"]

# (output channels, kernel size, padding) of a conv unit, or "P" for a 2x2 average pooling.
ConvSpec = tuple[int, int, int] | Literal["P"]


class ConvNet(Classifier):
    """conv-BN-SN units and poolings as ``layout`` lists them, flatten, FC -> SN for each width
    in ``hidden``, FC(classes). ``input_size`` fixes the flattened width."""

    def __init__(
        self,
        *,
        layout: Sequence[ConvSpec],
        hidden: Sequence[int],
        input_size: Sequence[int],
        num_classes: int,
        in_channels: int,
        rngs: nnx.Rngs,
        **options: Unpack[SpikingOptions],
    ):
        neuron, norm = self._configure(
            num_classes=num_classes,
            in_channels=in_channels,
            options=options,
            input_size=input_size,
        )
        self.layout = tuple(layout)
        height, width = self.input_size
        channels = in_channels
        units = []
        for entry in self.layout:
            if entry == "P":
                height, width = height // 2, width // 2
            else:
                out, kernel, padding = entry
                units.append(
                    ConvUnit(
                        channels, out, kernel, padding=padding, neuron=neuron, norm=norm, rngs=rngs
                    )
                )
                height, width = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
                channels = out
            if height < 1 or width < 1:
                raise ValueError(
                    f"input_size {self.input_size} is too small for the layout {self.layout}"
                )
        self.units = nnx.List(units)
        features = height * width * channels
        layers, acts = [], []
        for size in hidden:
            layers.append(nnx.Linear(features, size, rngs=rngs))
            acts.append(NeuronSlot(neuron))
            features = size
        self.hidden = nnx.List(layers)
        self.hidden_acts = nnx.List(acts)
        self.fc = nnx.Linear(features, num_classes, rngs=rngs)
        self._compute_in_dtype()

    def input_layer(self) -> nnx.Conv:
        return self.units[0].conv

    def features(self, x: jax.Array, steps: int) -> jax.Array:
        units = iter(self.units)
        for entry in self.layout:
            x = avg_pool(x, 2) if entry == "P" else self._block(next(units), x, steps)
        return x

    def classify(self, x: jax.Array, steps: int) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer, act in zip(self.hidden, self.hidden_acts, strict=True):
            x = act(layer(x), steps)
        return self.fc(x)


def cifarnet(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: Sequence[int] = (32, 32),
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ConvNet:
    """CIFARNet of Wu et al., "Direct training for spiking neural networks: faster, larger,
    better" (AAAI 2019): 128C3-256C3-P2-512C3-P2-1024C3-512C3-FC1024-FC512-FC(classes), with
    tdBN and LIF neurons where the paper had NeuNorm, and average pooling."""
    return ConvNet(
        layout=(
            (128, 3, 1),
            (256, 3, 1),
            "P",
            (512, 3, 1),
            "P",
            (1024, 3, 1),
            (512, 3, 1),
        ),
        hidden=(1024, 512),
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def digits_net(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (8, 8),
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ConvNet:
    """The quickstart's net for scikit-learn's 8x8 digits (``experiments/quickstart.py``):
    conv3x3(32)-BN-SN, conv3x3(64)-BN-SN, P2, FC(classes)."""
    return ConvNet(
        layout=((32, 3, 1), (64, 3, 1), "P"),
        hidden=(),
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def mnist_net(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (28, 28),
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ConvNet:
    """The MNIST net of the event-driven learning paper (Zhu et al., NeurIPS 2022; its
    ``MNIST.yaml``): 15C5-P2-40C5-P2-FC300-FC(classes), unpadded
    convolutions, here with BN and LIF neurons."""
    return ConvNet(
        layout=((15, 5, 0), "P", (40, 5, 0), "P"),
        hidden=(300,),
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


class Identity(nnx.Module):
    """A norm slot that does nothing: ``Identity(num_features)(x) == x`` (a model without norm)."""

    def __init__(self, num_features: int):
        self.num_features = num_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def fdg_toy(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: Sequence[int] = (8, 8),
    padding: int = 1,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ConvNet:
    """The toy model of Dspike's finite-difference study (Li et al., NeurIPS 2021, Sec. 4.2,
    Experiments I-III): conv3x3(6)-SN, 2x2 average pooling, FC(classes), no norm.

    The conv has no bias, so the first layer is exactly the paper's ``in_channels * 6 * 3 * 3``
    weights (54 for grey images: 108 forward passes for one FDG, Eq. 10). ``padding`` 1 (the
    default) keeps an 8x8 digit's border pixels in the 8x8 map, pooled to 4x4x6 = 96 features;
    ``padding=0`` gives a 6x6 map. The neuron is LIF (decay 0.25, ``v_th`` 0.5) with the
    paper's rectangular surrogate, ``a = 1`` (``Rectangular(1)``: derivative 1 on
    ``|u - v_th| < 1/2``), unless ``neuron`` is given; ``spiking=False`` gives the ReLU
    ANN of Experiment I. ``norm`` is :class:`Identity` unless given (the paper has none).
    """
    options = dict(options)
    if options.get("norm") is None:
        options["norm"] = Identity
    if options.get("spiking", True) and options.get("neuron") is None:
        options["neuron"] = functools.partial(LIF, surrogate=Rectangular(1.0))
    return ConvNet(
        layout=((6, 3, padding), "P"),
        hidden=(),
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )
