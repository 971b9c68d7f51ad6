"""The one time convention of jsnn: sequences are batch-major ``[B, T, ...]``.

``jsnn.lif`` (default ``time_axis=1``), ``jsnn.lif_scan``, the ``jsnn.LIF`` layer and the losses
of ``jsnn.losses`` (default ``time_axis=1``) all read time from axis 1, so a ``[B, T, N]`` call
without ``time_axis`` gives the right numbers, and a time-major ``[T, B, N]`` array needs
``time_axis=0`` (and gives the same numbers, transposed).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

import jsnn
from jsnn import losses
from jsnn.surrogate import Dspike

B, T, N, CLASSES = 3, 7, 5, 4


def _currents(seed=0, shape=(B, T, N)):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(-0.3, 1.0, shape), jnp.float32)


KWARGS = dict(decay=0.6, v_th=0.5, surrogate=Dspike(1.0), reset="soft", return_membrane=True)


def test_lif_defaults_to_batch_major():
    c = _currents()  # [B, T, N]
    default = jsnn.lif(c, **KWARGS)
    explicit = jsnn.lif(c, time_axis=1, **KWARGS)
    time_major = jsnn.lif(jnp.swapaxes(c, 0, 1), time_axis=0, **KWARGS)  # [T, B, N]
    for d, e, m in zip(default, explicit, time_major, strict=True):
        np.testing.assert_array_equal(d, e)
        np.testing.assert_array_equal(d, jnp.swapaxes(m, 0, 1))
    spikes = np.asarray(default[0])
    # A case where the axis matters: the dynamics are not symmetric in B and T.
    assert 0 < spikes.sum() < spikes.size
    wrong_axis = jsnn.lif(c, time_axis=0, **KWARGS)[0]
    assert not np.array_equal(np.asarray(wrong_axis), spikes)


def test_lif_scan_and_layer_use_the_same_axis():
    c = _currents(1)
    spikes = jsnn.lif(c, decay=0.25, v_th=0.5, surrogate=Dspike(1.0))
    params = jsnn.LIFParams(decay=0.25, v_th=0.5, surrogate=Dspike(1.0))
    state, scanned = jsnn.lif_scan(c, params)
    assert state.shape == (B, N)  # one time step of [B, T, N]
    np.testing.assert_array_equal(scanned, spikes)
    np.testing.assert_array_equal(jsnn.LIF()(c), spikes)  # the layer's defaults are these


def test_losses_and_lif_agree_on_the_time_axis():
    lif_axis = inspect.signature(jsnn.lif).parameters["time_axis"].default
    for loss in (losses.mean_over_time, losses.mean_output_cross_entropy, losses.tet_cross_entropy):
        assert inspect.signature(loss).parameters["time_axis"].default == lif_axis == 1, loss
    # Spikes straight from lif are averaged over time by the readout (Dspike Eq. 3), without
    # either side naming the axis: the firing rate of every neuron of every example.
    spikes = jsnn.lif(_currents(2), decay=0.5, v_th=0.4, surrogate=Dspike(1.0))
    rates = losses.mean_over_time(spikes)
    assert rates.shape == (B, N)
    np.testing.assert_allclose(rates, np.asarray(spikes).sum(axis=1) / T, rtol=1e-6)
    # And the cross-entropy reads [B, T, classes] outputs of a layer on those spikes.
    w = jax.random.normal(jax.random.key(0), (N, CLASSES))
    outputs = spikes @ w  # [B, T, classes]
    labels = jnp.arange(B) % CLASSES
    loss = losses.mean_output_cross_entropy(outputs, labels)
    want = -jnp.mean(jax.nn.log_softmax(outputs.mean(axis=1))[jnp.arange(B), labels])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
