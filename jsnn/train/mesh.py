"""Data parallelism over every device: a one-axis mesh, replicated state, sharded batches."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: list | None = None) -> jax.sharding.Mesh:
    """A mesh with one axis, ``data``, over ``devices`` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Every array of ``tree`` copied to every device of ``mesh`` (parameters, BN statistics).

    Always a copy: the train step donates its state, which must not delete the arrays of the
    model it came from, nor an array that two leaves share.
    """
    return jax.device_put(tree, NamedSharding(mesh, P()), may_alias=False)


def shard_batch(local_batch: dict, mesh: jax.sharding.Mesh) -> dict:
    """The global batch, sharded on its leading axis, from this host's part of it."""
    sharding = NamedSharding(mesh, P("data"))
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }
