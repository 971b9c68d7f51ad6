"""Finite-difference gradients and the temperature search against the Dspike paper's statements
(Eq. 10, Sec. 4.2 Experiments I and II, Algorithm 1) and against brute force."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import losses, neuron, surrogate
from jsnn.methods import fdg

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _data(seed=0, batch=16, features=6, classes=4):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.uniform(kx, (batch, features)), jax.random.randint(ky, (batch,), 0, classes)


def _weights(seed=1, features=6, hidden=5, classes=4):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(k1, (features, hidden)) * 0.8,
        "w2": jax.random.normal(k2, (hidden, classes)),
    }


def _snn_loss(x, labels, *, steps=4, b=1.0):
    """A tiny two-layer spiking network: linear -> LIF (Dspike(b)) -> linear, mean readout."""

    def loss(weights, temperature=b):
        currents = jnp.broadcast_to(
            x @ weights["w1"], (steps, *x.shape[:1], weights["w1"].shape[1])
        )
        spikes = neuron.lif(currents, decay=0.25, v_th=0.5, surrogate=surrogate.Dspike(temperature))
        outputs = jnp.einsum("tbh,hc->btc", spikes, weights["w2"])
        return losses.mean_output_cross_entropy(outputs, labels)

    return loss


def _ann_loss(x, labels):
    def loss(weights):
        outputs = jnp.tanh(x @ weights["w1"]) @ weights["w2"]
        return losses.mean_output_cross_entropy(outputs[:, None], labels)

    return loss


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_fdg_equals_a_python_loop_of_central_differences(chunk_size):
    x, labels = _data()
    loss = jax.jit(_snn_loss(x, labels))
    weights = _weights()
    eps = 0.1
    brute = {}
    for name, w in weights.items():
        values = np.zeros(w.size, np.float32)
        for i in range(w.size):
            step = np.zeros(w.size, np.float32)
            step[i] = eps
            step = step.reshape(w.shape)
            plus = loss({**weights, name: w + step})
            minus = loss({**weights, name: w - step})
            values[i] = (plus - minus) / (2 * eps)
        brute[name] = values.reshape(w.shape)
    found = jax.jit(
        lambda w: fdg.finite_difference_gradient(loss, w, eps=eps, chunk_size=chunk_size)
    )(weights)
    for name in weights:
        np.testing.assert_allclose(found[name], brute[name], rtol=1e-5, atol=1e-6)
    assert any(np.any(v != 0) for v in brute.values())  # eps = 0.1 flips spikes


def test_ann_fdg_points_along_the_true_gradient_for_every_eps():
    # Experiment I: > 0.99 cosine similarity for eps from 0.1 to 0.001 in an ANN.
    x, labels = _data()
    loss = _ann_loss(x, labels)
    weights = _weights()
    gradient = jax.grad(loss)(weights)
    for eps in (0.1, 0.01, 0.001):
        estimate = fdg.finite_difference_gradient(loss, weights, eps=eps)
        assert float(fdg.cosine_similarity(estimate, gradient)) > 0.99, eps


def test_snn_loss_is_flat_at_tiny_eps_and_the_fdg_sees_spikes_flip_at_large_eps():
    # Sec. 4.2: the SNN loss is piecewise constant in w (footnote 2), so its derivative is 0
    # almost everywhere; only a step large enough to flip spikes measures a change.
    x, labels = _data(batch=64)
    loss = _snn_loss(x, labels)
    weights = _weights()
    flat = fdg.finite_difference_gradient(loss, weights, eps=1e-6)
    assert float(jnp.abs(flat["w1"]).max()) == 0.0
    coarse = fdg.finite_difference_gradient(loss, weights, eps=0.1)
    assert float(jnp.abs(coarse["w1"]).max()) > 0.0
    # The surrogate gradient tracks the large-step FDG (Experiment II: eps 0.1 beats 0.001).
    surrogate_gradient = jax.grad(loss)(weights)
    fine = fdg.finite_difference_gradient(loss, weights, eps=1e-3)
    coarse_cos = fdg.cosine_similarity(coarse["w1"], surrogate_gradient["w1"])
    fine_cos = fdg.cosine_similarity(fine["w1"], surrogate_gradient["w1"])
    assert float(coarse_cos) > float(fine_cos)


def test_cosine_similarity_of_pytrees_and_of_a_zero_vector():
    a = {"x": jnp.array([1.0, 0.0]), "y": jnp.array([[0.0]])}
    b = {"x": jnp.array([1.0, 1.0]), "y": jnp.array([[0.0]])}
    np.testing.assert_allclose(fdg.cosine_similarity(a, b), 1 / np.sqrt(2), rtol=1e-6)
    zero = jax.tree.map(jnp.zeros_like, a)
    assert float(fdg.cosine_similarity(a, zero)) == 0.0


def test_directions_are_orthonormal_and_the_full_basis_gives_the_fdg():
    x, labels = _data()
    loss = _snn_loss(x, labels)
    weights = _weights()
    size = sum(w.size for w in weights.values())
    directions = fdg.random_directions(jax.random.key(3), size, 12)
    np.testing.assert_allclose(directions @ directions.T, np.eye(12), atol=1e-5)
    basis = jnp.eye(size)
    along_basis = fdg.directional_differences(loss, weights, basis, eps=0.1)
    exact = jax.flatten_util.ravel_pytree(fdg.finite_difference_gradient(loss, weights))[0]
    np.testing.assert_allclose(along_basis, exact, rtol=1e-5, atol=1e-6)


def test_sketched_cosine_is_exact_for_a_quadratic_loss_on_a_full_rotation():
    # Central differences are exact for quadratics, and a rotation keeps angles: the sketch on
    # all n orthonormal directions gives the exact cosine; on fewer it estimates it.
    a = jax.random.normal(jax.random.key(0), (20, 20))
    hessian = a @ a.T / 20

    def loss(w):
        return 0.5 * w @ hessian @ w + jnp.sum(jnp.sin(jnp.arange(20.0)) * w)

    w = jax.random.normal(jax.random.key(1), (20,))
    other = jax.random.normal(jax.random.key(2), (20,))
    exact = fdg.cosine_similarity(jax.grad(loss)(w), other)
    rotation = fdg.random_directions(jax.random.key(4), 20, 20)
    sketch = fdg.directional_differences(loss, w, rotation, eps=0.5)
    np.testing.assert_allclose(fdg.cosine_similarity(sketch, rotation @ other), exact, rtol=1e-4)


def test_vmapped_search_equals_three_separate_gradient_calls():
    x, labels = _data(batch=64)
    loss = _snn_loss(x, labels)
    weights = _weights()
    b, step = 1.0, 0.2
    result = jax.jit(lambda w: fdg.search_temperature(loss, w, b, step=step, eps=0.1))(weights)
    reference = fdg.finite_difference_gradient(lambda w: loss(w, b), weights, eps=0.1)
    cosines = [
        fdg.cosine_similarity(jax.grad(loss)(weights, candidate), reference)
        for candidate in (b, b + step, b - step)
    ]
    np.testing.assert_allclose(result["candidates"], [b, b + step, b - step], rtol=1e-6)
    np.testing.assert_allclose(result["cosines"], cosines, rtol=1e-5)
    assert float(result["b"]) == pytest.approx([b, b + step, b - step][int(np.argmax(cosines))])


def test_search_keeps_b_positive_and_keeps_the_current_b_on_ties():
    def constant_gradient(w, b):
        return jnp.sum(w)  # every b has the same gradient: a three-way tie

    w = jnp.ones(3)
    result = fdg.search_temperature(constant_gradient, w, 0.1, step=0.2)
    assert float(result["b"]) == pytest.approx(0.1)
    assert float(result["cosines"][2]) == -np.inf  # b - step = -0.1 is no candidate

    def prefers_small_b(w, b):
        # Value w0 + w1 whatever b (FDG (1, 1, 0)), as in an SNN; gradient (1, b, 0).
        return w[0] + b * w[1] + jax.lax.stop_gradient((1 - b) * w[1])

    assert float(fdg.search_temperature(prefers_small_b, w, 2.0, step=0.5)["b"]) == 1.5


def test_bad_arguments_name_the_argument():
    loss = lambda w: jnp.sum(w**2)  # noqa: E731
    w = jnp.ones(4)
    with pytest.raises(ValueError, match="eps"):
        fdg.finite_difference_gradient(loss, w, eps=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        fdg.finite_difference_gradient(loss, w, chunk_size=0)
    with pytest.raises(ValueError, match="directions"):
        fdg.directional_differences(loss, w, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="count"):
        fdg.random_directions(jax.random.key(0), 4, 5)
    with pytest.raises(ValueError, match="step"):
        fdg.search_temperature(lambda w, b: loss(w), w, 1.0, step=-0.2)


def test_perturbations_split_over_four_devices_give_the_same_fdg_at_a_quarter_of_the_work():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jsnn.methods import fdg
        from jsnn.train import data_mesh
        assert jax.device_count() == 4
        x = jax.random.uniform(jax.random.key(0), (64, 50))
        loss = lambda w: jnp.sum(jnp.heaviside(x @ w - 0.5, 0.0) * (x @ w))
        w = jax.random.normal(jax.random.key(1), (50, 30))
        mesh = data_mesh()
        single = jax.jit(lambda w: fdg.finite_difference_gradient(loss, w, chunk_size=16))
        split = jax.jit(
            lambda w: fdg.finite_difference_gradient(loss, w, chunk_size=16, mesh=mesh)
        )
        np.testing.assert_allclose(split(w), single(w), rtol=1e-10, atol=1e-10)

        def flops(function):  # per device, after partitioning
            cost = function.lower(w).compile().cost_analysis()
            return (cost[0] if isinstance(cost, list) else cost)["flops"]

        print(flops(split) / flops(single))
        """
    )
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_ENABLE_X64": "1",  # float32 sums differ in order between the two compilations
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < 0.3  # each device runs a quarter of the passes
