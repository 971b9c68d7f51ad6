"""Spiking VGG-11 and VGG-16 with average pooling.

Layouts of Simonyan & Zisserman (2015), configurations A and D, as DSR builds them
(qymeng94/DSR ``cifar/modules/vgg.py``): every conv3x3 (with bias) is
followed by BN and a neuron, every max pooling becomes a 2x2 average pooling, and one fully
connected layer remains ("We only keep one fully connected layer", DSR supplement C.3). DSR
applies ``AdaptiveAvgPool(7)`` and an FC over 512*7*7 inputs; on its 48x48 DVS frames the
last feature map is 1x1, so that is an FC on the globally pooled 512 channels, which this
implementation uses for every input size. DSR's VGG-11 adds Dropout(0.1) after each neuron
(``dropout``, default 0 here) and ends in FC -> BN1d -> SN, its rate output
(``output_neuron``, default off, so that the output is the FC's per-step output).

Dspike reports VGG-16 on ImageNet without a public layout; this VGG-16 is the same
construction with configuration D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal, Unpack

import jax
from flax import nnx

from jsnn.models.common import (
    Classifier,
    ConvUnit,
    NeuronSlot,
    SpikingOptions,
    avg_pool,
    global_avg_pool,
)

__all__ = ["VGG", "VGG_LAYOUTS", "vgg11", "vgg16"]

# Output channels of each conv3x3; "P" is a 2x2 average pooling.
VGG_LAYOUTS: Mapping[str, tuple[int | Literal["P"], ...]] = MappingProxyType(
    {
        "vgg11": (64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"),
        "vgg16": (
            *(64, 64, "P", 128, 128, "P"),
            *(256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"),
        ),
    }
)


class VGG(Classifier):
    """A spiking VGG: conv3x3-BN-SN units and 2x2 average poolings as ``layout`` lists them,
    global average pooling, FC(classes); optional Dropout after each neuron and DSR's
    BN1d -> SN output (``output_neuron``)."""

    def __init__(
        self,
        *,
        layout: Sequence[int | Literal["P"]],
        dropout: float = 0.0,
        output_neuron: bool = False,
        num_classes: int,
        in_channels: int,
        rngs: nnx.Rngs,
        **options: Unpack[SpikingOptions],
    ):
        neuron, norm = self._configure(
            num_classes=num_classes,
            in_channels=in_channels,
            options=options,
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.layout = tuple(layout)
        units = []
        channels = in_channels
        for entry in self.layout:
            if entry == "P":
                continue
            if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
                raise ValueError(
                    f"layout entries must be channel counts or 'P' (pooling), got {entry!r}"
                )
            units.append(
                ConvUnit(channels, entry, 3, bias=True, neuron=neuron, norm=norm, rngs=rngs)
            )
            channels = entry
        if not units:
            raise ValueError(f"layout needs at least one convolution, got {layout!r}")
        self.units = nnx.List(units)
        # Dropout on the folded batch draws a new mask per time step, as DSR's does.
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
        self.fc = nnx.Linear(channels, num_classes, rngs=rngs)
        if output_neuron:
            self.fc_norm = norm(num_classes)
            self.output_act = NeuronSlot(neuron)
        else:
            self.fc_norm = None
            self.output_act = None
        self._compute_in_dtype()

    def input_layer(self) -> nnx.Conv:
        return self.units[0].conv

    def features(self, x: jax.Array, steps: int) -> jax.Array:
        units = iter(self.units)
        for entry in self.layout:
            if entry == "P":
                x = avg_pool(x, 2)
                continue
            x = self._block(next(units), x, steps)
            if self.dropout is not None:
                x = self.dropout(x)
        return x

    def classify(self, x: jax.Array, steps: int) -> jax.Array:
        out = self.fc(global_avg_pool(x))
        if self.output_act is None:
            return out
        return self.output_act(self.fc_norm(out), steps)


def vgg11(
    *,
    num_classes: int = 10,
    in_channels: int = 2,
    dropout: float = 0.0,
    output_neuron: bool = False,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> VGG:
    """VGG-11 (configuration A) of DSR for DVS-CIFAR10: 2 input channels (event
    polarities) by default. DSR trains it with ``dropout=0.1`` and ``output_neuron=True``."""
    return VGG(
        layout=VGG_LAYOUTS["vgg11"],
        dropout=dropout,
        output_neuron=output_neuron,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def vgg16(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    dropout: float = 0.0,
    output_neuron: bool = False,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> VGG:
    """VGG-16 (configuration D) with average pooling, for ImageNet by default (Dspike's
    ImageNet VGG-16; its exact layout is not public)."""
    return VGG(
        layout=VGG_LAYOUTS["vgg16"],
        dropout=dropout,
        output_neuron=output_neuron,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )
