"""Pre-activation spiking ResNets of DSR (Meng et al., CVPR 2022): PreAct-ResNet-18 and the
PreAct-ResNet-20/32/44/56/110 of its supplement's Table S1.

Layout from the official code (qymeng94/DSR ``cifar/modules/preresnet.py``) and supplement
C.3: pre-activation BasicBlocks (He et al., ECCV 2016) whose ReLUs are
spiking neurons, then the DSR head: BN -> SN -> average pooling -> SN ("spiking neurons after
pooling") -> FC -> BN1d -> SN ("after the last fully connected classifier", with "an additional
BN operation" before it).

That last neuron belongs to the DSR method, which reads the network output as the (weighted)
firing rate of the output layer. It is optional (``output_neuron``, default off): without it
the output is the per-step ``BN1d(FC(.))``, to be averaged over time like every other model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

import jax
from flax import nnx

from jsnn.models.common import (
    Classifier,
    NeuronFactory,
    NeuronSlot,
    NormFactory,
    SpikingOptions,
    conv,
    global_avg_pool,
)

__all__ = [
    "PreActBlock",
    "PreActResNet",
    "preact_resnet18",
    "preact_resnet20",
    "preact_resnet32",
    "preact_resnet44",
    "preact_resnet56",
    "preact_resnet110",
]


class PreActBlock(nnx.Module):
    """``s = SN(BN1(x)); out = conv2(SN(BN2(conv1(s)))) + shortcut(s)`` (DSR's PreActBlock).

    As in the DSR code the shortcut takes the spikes ``s`` (identity, or a conv1x1 with bias
    where the shape changes) and the block convolutions have biases.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        neuron: NeuronFactory | None,
        norm: NormFactory,
        rngs: nnx.Rngs,
    ):
        self.norm1 = norm(in_channels)
        self.act1 = NeuronSlot(neuron)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, bias=True, rngs=rngs)
        self.norm2 = norm(out_channels)
        self.act2 = NeuronSlot(neuron)
        self.conv2 = conv(out_channels, out_channels, 3, bias=True, rngs=rngs)
        self.shortcut = (
            conv(in_channels, out_channels, 1, stride=stride, bias=True, rngs=rngs)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def __call__(self, x: jax.Array, steps: int) -> jax.Array:
        spikes = self.act1(self.norm1(x), steps)
        out = self.conv2(self.act2(self.norm2(self.conv1(spikes)), steps))
        return out + (spikes if self.shortcut is None else self.shortcut(spikes))


class PreActResNet(Classifier):
    """A pre-activation spiking ResNet with DSR's head.

    conv3x3(``widths[0]``, no bias); stages of ``blocks[i]`` :class:`PreActBlock` with
    ``widths[i]`` channels, the first at stride ``strides[i]``; BN -> SN -> global average
    pooling -> SN -> FC -> BN1d, then SN if ``output_neuron`` (DSR's rate output; default off).
    The DSR code pools with AvgPool(4), which is global pooling on its 32x32 inputs.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
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
        if not len(widths) == len(blocks) == len(strides) > 0:
            raise ValueError(
                f"widths, blocks and strides need one entry per stage, got {widths!r}, "
                f"{blocks!r}, {strides!r}"
            )
        self.stem = conv(in_channels, widths[0], 3, rngs=rngs)
        stages = []
        channels = widths[0]
        for width, count, stride in zip(widths, blocks, strides, strict=True):
            stage = []
            for i in range(count):
                stride_i = stride if i == 0 else 1
                stage.append(
                    PreActBlock(channels, width, stride_i, neuron=neuron, norm=norm, rngs=rngs)
                )
                channels = width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.norm = norm(channels)
        self.act = NeuronSlot(neuron)
        self.pool_act = NeuronSlot(neuron)
        self.fc = nnx.Linear(channels, num_classes, rngs=rngs)
        self.fc_norm = norm(num_classes)
        self.output_act = NeuronSlot(neuron) if output_neuron else None
        self._compute_in_dtype()

    def input_layer(self) -> nnx.Conv:
        return self.stem

    def features(self, x: jax.Array, steps: int) -> jax.Array:
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                x = self._block(block, x, steps)
        return self.act(self.norm(x), steps)

    def classify(self, x: jax.Array, steps: int) -> jax.Array:
        out = self.fc_norm(self.fc(self.pool_act(global_avg_pool(x), steps)))
        return out if self.output_act is None else self.output_act(out, steps)


def preact_resnet18(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    output_neuron: bool = False,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> PreActResNet:
    """DSR's CIFAR PreAct-ResNet-18 (``resnet18_lif`` / ``resnet18_if``):
    conv3x3(64), stages of 2 blocks with 64/128/256/512 channels at strides 1/2/2/2, DSR head.
    """
    return PreActResNet(
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        strides=(1, 2, 2, 2),
        output_neuron=output_neuron,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def _table_s1(depth: int):
    blocks = (depth - 2) // 6

    def build(
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        output_neuron: bool = False,
        rngs: nnx.Rngs,
        **options: Unpack[SpikingOptions],
    ) -> PreActResNet:
        return PreActResNet(
            widths=(16, 32, 64),
            blocks=(blocks,) * 3,
            strides=(1, 2, 2),
            output_neuron=output_neuron,
            num_classes=num_classes,
            in_channels=in_channels,
            rngs=rngs,
            **options,
        )

    build.__name__ = build.__qualname__ = f"preact_resnet{depth}"
    build.__doc__ = (
        f"PreAct-ResNet-{depth} of DSR's supplement, Table S1: conv3x3(16), then {blocks} "
        f"pre-activation blocks of two 3x3 convolutions at each of 16/32/64 channels (strides "
        f"1/2/2), average pooling, FC; 1 + 6 * {blocks} + 1 = {depth} weight layers. With the "
        f"extra neurons and BN of DSR's head, as for PreAct-ResNet-18 (supplement C.3)."
    )
    return build


preact_resnet20 = _table_s1(20)
preact_resnet32 = _table_s1(32)
preact_resnet44 = _table_s1(44)
preact_resnet56 = _table_s1(56)
preact_resnet110 = _table_s1(110)
