"""Spiking ResNets: Dspike's modified ResNet-18, ResNet-19 (STBP-tdBN), ResNet-34, SEW-ResNets.

Two residual blocks, both post-activation BasicBlocks (two 3x3 convolutions):

* ``"spiking"`` (Zheng et al. 2021, STBP-tdBN; the Dspike authors' code):
  ``out = SN(BN(conv2(SN(BN(conv1(x))))) + shortcut(x))``, the neuron after the addition, so a
  block outputs spikes.
* ``"sew"`` (Fang et al., NeurIPS 2021, "Deep residual learning in spiking neural networks",
  ADD connection): ``out = SN(BN(conv2(SN(BN(conv1(x)))))) + s``, with ``s = x`` or, where the
  shape changes, ``s = SN(BN(conv1x1(x)))``: the sum of two spike tensors, so a block outputs
  integers and identity mappings are exact.

Shortcuts where the shape changes: ``"conv"`` is torchvision's conv1x1 (stride s) -> BN;
``"avg_down"`` is the modified ResNet's AvgPool(s, ceil mode, padding not counted) -> conv1x1
-> BN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Unpack

import jax
from flax import nnx

from jsnn.models.common import (
    Classifier,
    ConvUnit,
    NeuronFactory,
    NeuronSlot,
    NormFactory,
    SpikingOptions,
    avg_pool,
    conv,
    global_avg_pool,
)

__all__ = [
    "BasicBlock",
    "ResNet",
    "SEWBlock",
    "Shortcut",
    "resnet18_modified",
    "resnet19",
    "resnet34",
    "sew_resnet14",
    "sew_resnet34",
]

Stem = Literal["modified", "cifar", "imagenet"]
BlockKind = Literal["spiking", "sew"]
ShortcutKind = Literal["conv", "avg_down"]
_STEMS = ("modified", "cifar", "imagenet")
_BLOCKS = ("spiking", "sew")
_SHORTCUTS = ("conv", "avg_down")


class Shortcut(nnx.Module):
    """The projection shortcut: ``"conv"`` (conv1x1 stride s -> BN) or ``"avg_down"``
    (AvgPool(s, ceil mode, padding not counted) -> conv1x1 -> BN)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kind: ShortcutKind,
        *,
        norm: NormFactory,
        rngs: nnx.Rngs,
    ):
        self.kind = kind
        self.stride = stride
        conv_stride = stride if kind == "conv" else 1
        self.conv = conv(in_channels, out_channels, 1, stride=conv_stride, rngs=rngs)
        self.norm = norm(out_channels)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "avg_down" and self.stride > 1:
            s = self.stride
            # ceil_mode=True, count_include_pad=False: a last partial window averages what it has
            pad = ((0, -x.shape[1] % s), (0, -x.shape[2] % s))
            x = nnx.avg_pool(x, (s, s), strides=(s, s), padding=pad, count_include_pad=False)
        return self.norm(self.conv(x))


class BasicBlock(nnx.Module):
    """Spiking BasicBlock: ``SN(BN(conv2(SN(BN(conv1(x))))) + shortcut(x))`` (STBP-tdBN and
    the Dspike authors' code)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        shortcut: ShortcutKind,
        neuron: NeuronFactory | None,
        norm: NormFactory,
        rngs: nnx.Rngs,
    ):
        self.unit1 = ConvUnit(
            in_channels, out_channels, 3, stride=stride, neuron=neuron, norm=norm, rngs=rngs
        )
        self.conv2 = conv(out_channels, out_channels, 3, rngs=rngs)
        self.norm2 = norm(out_channels)
        self.shortcut = (
            Shortcut(in_channels, out_channels, stride, shortcut, norm=norm, rngs=rngs)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.act2 = NeuronSlot(neuron)

    def __call__(self, x: jax.Array, steps: int) -> jax.Array:
        out = self.norm2(self.conv2(self.unit1(x, steps)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act2(out + identity, steps)


class SEWBlock(nnx.Module):
    """SEW BasicBlock with the ADD connection (Fang et al. 2021): ``SN(BN(conv2(SN(BN(conv1(x))))))
    + s``, ``s`` the input spikes or ``SN(shortcut(x))`` where the shape changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        shortcut: ShortcutKind,
        neuron: NeuronFactory | None,
        norm: NormFactory,
        rngs: nnx.Rngs,
    ):
        self.unit1 = ConvUnit(
            in_channels, out_channels, 3, stride=stride, neuron=neuron, norm=norm, rngs=rngs
        )
        self.unit2 = ConvUnit(out_channels, out_channels, 3, neuron=neuron, norm=norm, rngs=rngs)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Shortcut(
                in_channels, out_channels, stride, shortcut, norm=norm, rngs=rngs
            )
            # SEW puts a neuron on the projection so that both summands are spikes
            self.shortcut_act = NeuronSlot(neuron)
        else:
            self.shortcut = None
            self.shortcut_act = None

    def __call__(self, x: jax.Array, steps: int) -> jax.Array:
        out = self.unit2(self.unit1(x, steps), steps)
        if self.shortcut is None:
            return out + x
        return out + self.shortcut_act(self.shortcut(x), steps)


class ResNet(Classifier):
    """A spiking ResNet of BasicBlocks; the named constructors below fix published layouts.

    * ``stem``: ``"modified"`` (three conv3x3-BN-SN, 64 channels, then AvgPool 2: Dspike's
      modified ResNet), ``"cifar"`` (one conv3x3-BN-SN with ``widths[0]`` channels:
      STBP-tdBN's ResNet-19) or ``"imagenet"`` (conv7x7/2-BN-SN, 64 channels, then MaxPool 3/2:
      torchvision's stem, as in SEW-ResNet).
    * ``widths``, ``blocks``, ``strides``: channels, number of blocks and first-block stride of
      each stage.
    * ``block``: ``"spiking"`` (:class:`BasicBlock`) or ``"sew"`` (:class:`SEWBlock`);
      ``shortcut``: ``"conv"`` or ``"avg_down"`` (:class:`Shortcut`).
    * ``hidden_features``: None for global average pooling -> FC(classes); an integer ``n`` for
      pooling -> FC(n) -> SN -> FC(classes) (ResNet-19 of STBP-tdBN, ``n = 256``).

    The last FC has no neuron: its per-step output is the model output ``[B, T, classes]``.
    """

    def __init__(
        self,
        *,
        stem: Stem,
        widths: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
        block: BlockKind = "spiking",
        shortcut: ShortcutKind = "conv",
        hidden_features: int | None = None,
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
        for name, value, allowed in (
            ("stem", stem, _STEMS),
            ("block", block, _BLOCKS),
            ("shortcut", shortcut, _SHORTCUTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not len(widths) == len(blocks) == len(strides) > 0:
            raise ValueError(
                f"widths, blocks and strides need one entry per stage, got {widths!r}, "
                f"{blocks!r}, {strides!r}"
            )
        self.stem_kind = stem
        layer = dict(neuron=neuron, norm=norm, rngs=rngs)
        if stem == "modified":
            stem_width = 64
            self.stem = nnx.List(
                [
                    ConvUnit(in_channels, 64, 3, **layer),
                    ConvUnit(64, 64, 3, **layer),
                    ConvUnit(64, 64, 3, **layer),
                ]
            )
        elif stem == "cifar":
            stem_width = widths[0]
            self.stem = nnx.List([ConvUnit(in_channels, stem_width, 3, **layer)])
        else:
            stem_width = 64
            self.stem = nnx.List([ConvUnit(in_channels, 64, 7, stride=2, **layer)])
        block_class = BasicBlock if block == "spiking" else SEWBlock
        stages = []
        channels = stem_width
        for width, count, stride in zip(widths, blocks, strides, strict=True):
            stage = []
            for i in range(count):
                stage.append(
                    block_class(
                        channels, width, stride if i == 0 else 1, shortcut=shortcut, **layer
                    )
                )
                channels = width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        if hidden_features is None:
            self.hidden = None
            self.hidden_act = None
            self.fc = nnx.Linear(channels, num_classes, rngs=rngs)
        else:
            self.hidden = nnx.Linear(channels, hidden_features, rngs=rngs)
            self.hidden_act = NeuronSlot(neuron)
            self.fc = nnx.Linear(hidden_features, num_classes, rngs=rngs)
        self._compute_in_dtype()

    def input_layer(self) -> nnx.Conv:
        return self.stem[0].conv

    def features(self, x: jax.Array, steps: int) -> jax.Array:
        for unit in self.stem:
            x = self._block(unit, x, steps)
        if self.stem_kind == "modified":
            x = avg_pool(x, 2)
        elif self.stem_kind == "imagenet":
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in self.stages:
            for block in stage:
                x = self._block(block, x, steps)
        return x

    def classify(self, x: jax.Array, steps: int) -> jax.Array:
        x = global_avg_pool(x)
        if self.hidden is not None:
            x = self.hidden_act(self.hidden(x), steps)
        return self.fc(x)


def resnet18_modified(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ResNet:
    """Dspike's "modified ResNet-18" (also called ResNet-20), from the authors' later code
    (MPBN / IM-Loss ``ResNet_Cifar_Modified``).

    Stem of three conv3x3-BN-SN (64 channels) and AvgPool 2; stages of 2 spiking BasicBlocks
    with 64/128/256/512 channels at strides 1/2/2/2 and avg-down shortcuts; global average
    pooling; FC. 20 weight layers: 3 stem convs + 16 block convs + 1 FC (the three 1x1
    shortcut convs are not counted). A 32x32 input ends at 2x2 before pooling. The code's
    zero-initialised last BN of each block is not reproduced: its spiking version replaces every
    BN by a fresh one, so the zero init is lost there too.
    """
    return ResNet(
        stem="modified",
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        strides=(1, 2, 2, 2),
        shortcut="avg_down",
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def resnet19(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ResNet:
    """ResNet-19 of STBP-tdBN (Zheng et al., AAAI 2021, Table 1).

    conv3x3(128)-BN-SN; stages of 3/3/2 spiking BasicBlocks with 128/256/512 channels at
    strides 1/2/2 (conv1x1 shortcuts); global average pooling; FC(256)-SN; FC(classes).
    1 + 16 + 2 = 19 weight layers. The TET code (brain-intelligence-lab/temporal_efficient_training,
    ``models/resnet_models.py``) has the same blocks and head but a 64-channel stem conv; this
    follows the paper's 128. tdBN's 1/sqrt(2) alpha on the two summands of a block is not
    applied: ``norm`` is one factory for every layer.
    """
    return ResNet(
        stem="cifar",
        widths=(128, 256, 512),
        blocks=(3, 3, 2),
        strides=(1, 2, 2),
        hidden_features=256,
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def resnet34(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ResNet:
    """Spiking ResNet-34 for ImageNet (Dspike's ImageNet entry; its exact layout is not public).

    Chosen layout: torchvision's ResNet-34 (He et al. 2016) with spiking BasicBlocks, the block
    of the modified ResNet-18 and of STBP-tdBN's ImageNet ResNet-34: conv7x7/2(64)-BN-SN,
    MaxPool 3/2, stages of 3/4/6/3 blocks with 64/128/256/512 channels at strides 1/2/2/2,
    conv1x1 shortcuts, global average pooling, FC.
    """
    return ResNet(
        stem="imagenet",
        widths=(64, 128, 256, 512),
        blocks=(3, 4, 6, 3),
        strides=(1, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def sew_resnet34(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ResNet:
    """SEW-ResNet-34 with ADD connections (Fang et al., NeurIPS 2021, ImageNet; the layout of
    the authors' ``sew_resnet34``): conv7x7/2(64)-BN-SN, MaxPool 3/2, stages of 3/4/6/3 SEW
    blocks with 64/128/256/512 channels at strides 1/2/2/2, conv1x1-BN-SN shortcuts, global
    average pooling, FC. CPNG's ImageNet model (69.09%)."""
    return ResNet(
        stem="imagenet",
        widths=(64, 128, 256, 512),
        blocks=(3, 4, 6, 3),
        strides=(1, 2, 2, 2),
        block="sew",
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )


def sew_resnet14(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    rngs: nnx.Rngs,
    **options: Unpack[SpikingOptions],
) -> ResNet:
    """SEW-ResNet-14: :func:`sew_resnet34` with 1/2/2/1 blocks per stage.

    The SEW paper has no 14-layer network; this is the variant that SpikingJelly-based code
    names ``sew_resnet14`` (the SEW-ResNet class with ``[1, 2, 2, 1]`` BasicBlocks): 1 stem conv
    + 12 block convs + 1 FC = 14 weight layers, same stem, widths and shortcuts as SEW-ResNet-34.
    """
    return ResNet(
        stem="imagenet",
        widths=(64, 128, 256, 512),
        blocks=(1, 2, 2, 1),
        strides=(1, 2, 2, 2),
        block="sew",
        num_classes=num_classes,
        in_channels=in_channels,
        rngs=rngs,
        **options,
    )
