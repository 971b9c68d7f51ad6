"""jsnn: spiking neural networks in JAX and Flax NNX."""

from jsnn import encoding, layers, losses, neuron, norm, surrogate
from jsnn.layers import LIF, TDBatchNorm, TimeDistributed
from jsnn.neuron import lif

__version__ = "0.1.0"

__all__ = [
    "LIF",
    "TDBatchNorm",
    "TimeDistributed",
    "encoding",
    "layers",
    "lif",
    "losses",
    "neuron",
    "norm",
    "surrogate",
]
