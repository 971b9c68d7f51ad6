"""jsnn: spiking neural networks in JAX and Flax NNX."""

from jsnn import dtypes, encoding, layers, losses, neuron, norm, surrogate
from jsnn.layers import LIF, TDBatchNorm, TimeDistributed
from jsnn.neuron import LIFParams, lif, lif_scan, lif_step

__version__ = "0.1.0"

__all__ = [
    "LIF",
    "LIFParams",
    "TDBatchNorm",
    "TimeDistributed",
    "dtypes",
    "encoding",
    "layers",
    "lif",
    "lif_scan",
    "lif_step",
    "losses",
    "neuron",
    "norm",
    "surrogate",
]
