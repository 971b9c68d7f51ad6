"""The model zoo: spiking ResNets, SEW-ResNets, PreAct-ResNets, VGGs, CIFARNet and small nets
(Dspike's FDG toy among them), each with its ANN twin.

Build a model by name or by its constructor::

    from flax import nnx
    from jsnn import models

    snn = models.get("resnet19", num_classes=100, steps=6, rngs=nnx.Rngs(0))
    plif = models.get("vgg11", neuron=models.neuron_factory("plif"), rngs=nnx.Rngs(0))
    ann = models.ann_twin("resnet19", num_classes=100, rngs=nnx.Rngs(0))
    models.init_from_ann(snn, ann)  # after training the ANN

A spiking model maps ``[B, H, W, C]`` (direct-encoded to its ``steps``) or ``[B, T, H, W, C]``
to ``[B, T, classes]``, the last layer's per-step output for
:func:`jsnn.losses.mean_output_cross_entropy`. Every constructor takes ``num_classes``,
``in_channels``, ``steps``, ``neuron``, ``norm``, ``spiking`` and ``rngs`` (see
:mod:`jsnn.models.common` for the time layout and the defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from jsnn.models.common import (
    NEURON_KINDS,
    NORM_KINDS,
    REMAT_KINDS,
    Classifier,
    ConvUnit,
    NeuronFactory,
    NormFactory,
    SpikingOptions,
    init_from_ann,
    neuron_factory,
    norm_factory,
)
from jsnn.models.preact import (
    PreActBlock,
    PreActResNet,
    preact_resnet18,
    preact_resnet20,
    preact_resnet32,
    preact_resnet44,
    preact_resnet56,
    preact_resnet110,
)
from jsnn.models.resnet import (
    BasicBlock,
    ResNet,
    SEWBlock,
    Shortcut,
    resnet18_modified,
    resnet19,
    resnet34,
    sew_resnet14,
    sew_resnet34,
)
from jsnn.models.small import ConvNet, Identity, cifarnet, digits_net, fdg_toy, mnist_net
from jsnn.models.vgg import VGG, VGG_LAYOUTS, vgg11, vgg16

__all__ = [
    "NEURON_KINDS",
    "NORM_KINDS",
    "REMAT_KINDS",
    "VGG",
    "VGG_LAYOUTS",
    "BasicBlock",
    "Classifier",
    "ConvNet",
    "ConvUnit",
    "Identity",
    "NeuronFactory",
    "NormFactory",
    "PreActBlock",
    "PreActResNet",
    "ResNet",
    "SEWBlock",
    "Shortcut",
    "SpikingOptions",
    "ann_twin",
    "cifarnet",
    "digits_net",
    "fdg_toy",
    "get",
    "init_from_ann",
    "mnist_net",
    "names",
    "neuron_factory",
    "norm_factory",
    "preact_resnet18",
    "preact_resnet20",
    "preact_resnet32",
    "preact_resnet44",
    "preact_resnet56",
    "preact_resnet110",
    "resnet18_modified",
    "resnet19",
    "resnet34",
    "sew_resnet14",
    "sew_resnet34",
    "vgg11",
    "vgg16",
]

_CONSTRUCTORS: Mapping[str, Callable[..., Classifier]] = MappingProxyType(
    {
        "resnet18_modified": resnet18_modified,
        "resnet19": resnet19,
        "resnet34": resnet34,
        "sew_resnet14": sew_resnet14,
        "sew_resnet34": sew_resnet34,
        "preact_resnet18": preact_resnet18,
        "preact_resnet20": preact_resnet20,
        "preact_resnet32": preact_resnet32,
        "preact_resnet44": preact_resnet44,
        "preact_resnet56": preact_resnet56,
        "preact_resnet110": preact_resnet110,
        "vgg11": vgg11,
        "vgg16": vgg16,
        "cifarnet": cifarnet,
        "digits_net": digits_net,
        "mnist_net": mnist_net,
        "fdg_toy": fdg_toy,
    }
)


def names() -> tuple[str, ...]:
    """The model names :func:`get` accepts."""
    return tuple(_CONSTRUCTORS)


def _constructor(name: str) -> Callable[..., Classifier]:
    constructor = _CONSTRUCTORS.get(str(name).lower())
    if constructor is None:
        raise ValueError(f"model name {name!r} is not known; expected one of {names()}")
    return constructor


def get(name: str, **kwargs) -> Classifier:
    """Builds the model ``name`` (case-insensitive) with the constructor's keyword arguments,
    e.g. ``get("preact_resnet20", num_classes=100, steps=5, rngs=nnx.Rngs(0))``."""
    return _constructor(name)(**kwargs)


def ann_twin(model: str | Callable[..., Classifier], **kwargs) -> Classifier:
    """The ANN twin of a model given by name or constructor, from the spiking model's keyword
    arguments: ``steps``, ``neuron`` and ``norm`` are dropped (the twin has no time axis, uses
    ReLU and plain time-folded BN); everything else, shapes included, is passed on with
    ``spiking=False``. Its parameters then match the spiking model's (:func:`init_from_ann`).
    To give the twin another norm, call the constructor with ``spiking=False, norm=...``.
    """
    constructor = _constructor(model) if isinstance(model, str) else model
    for key in ("steps", "neuron", "norm", "spiking"):
        kwargs.pop(key, None)
    return constructor(spiking=False, **kwargs)
