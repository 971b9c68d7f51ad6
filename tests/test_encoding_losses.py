"""Input encoders (``jsnn.encoding``) and readout losses (``jsnn.losses``).

Encoders: direct encoding (Dspike Sec. 5: the analog image is fed at each of the T steps) and
Poisson rate coding (a Bernoulli spike with probability x at every step). Losses: the readout of
Dspike Eq. 3 / CPNG Eq. 5, ``y = (1/T) sum_t c_net[t]``, followed by cross-entropy, and the TET
loss (cross-entropy at every step, averaged over time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jsnn import encoding, losses

# --------------------------------------------------------------------------- direct


@pytest.mark.parametrize("shape", [(3,), (2, 5), (2, 4, 4, 3)])
@pytest.mark.parametrize("num_steps", [1, 4, np.int64(3)])
def test_direct_repeats_input(shape, num_steps):
    # Dspike Sec. 5: the same analog input at every time step, [B, ...] -> [B, T, ...].
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    y = encoding.direct(jnp.asarray(x), num_steps)
    assert y.shape == (shape[0], int(num_steps), *shape[1:])
    assert y.dtype == x.dtype
    for t in range(int(num_steps)):
        np.testing.assert_array_equal(y[:, t], x)


@pytest.mark.parametrize("num_steps", [0, -1, 2.5, True, None])
def test_direct_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        encoding.direct(jnp.ones((2, 3)), num_steps)


# --------------------------------------------------------------------------- poisson


# One input shape for every Poisson sample below: the Bernoulli sampler compiles once per shape.
RATES = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
BATCH, STEPS = 1000, 40


def _uniform_rates(seed):
    return np.random.default_rng(seed).uniform(size=(BATCH, 4)).astype(np.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_poisson_binary_shape_dtype(dtype):
    x = jnp.asarray(_uniform_rates(0), dtype)
    s = encoding.poisson(jax.random.key(1), x, STEPS)
    assert s.shape == (BATCH, STEPS, 4)
    assert s.dtype == dtype
    assert set(np.unique(np.asarray(s, np.float32))) <= {0.0, 1.0}


def test_poisson_rate():
    # P(spike at a step) = x: empirical rate within 5 standard errors of x.
    x = jnp.asarray(np.tile(RATES, (BATCH, 1)))
    s = np.asarray(encoding.poisson(jax.random.key(2), x, STEPS))
    n = BATCH * STEPS
    empirical = s.mean(axis=(0, 1))
    stderr = np.sqrt(RATES * (1 - RATES) / n)
    assert np.all(np.abs(empirical - RATES) <= 5 * stderr + 1e-12), empirical
    assert np.all(s[..., 0] == 0)  # x = 0 never spikes
    assert np.all(s[..., 3] == 1)  # x = 1 always spikes
    # The T steps are independent draws, not one draw repeated: for x = 0.5, consecutive
    # steps agree about half the time.
    agree = (s[:, 1:, 2] == s[:, :-1, 2]).mean()
    assert abs(agree - 0.5) < 5 * np.sqrt(0.25 / (BATCH * (STEPS - 1)))
    # The expected spike count over the T steps is T * x.
    counts = s.sum(axis=1).mean(axis=0)
    np.testing.assert_allclose(counts, STEPS * RATES, atol=5 * STEPS * stderr.max() + 1e-6)


def test_poisson_same_key_same_result():
    x = jnp.asarray(_uniform_rates(3))
    a = encoding.poisson(jax.random.key(4), x, STEPS)
    b = encoding.poisson(jax.random.key(4), x, STEPS)
    c = encoding.poisson(jax.random.key(5), x, STEPS)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("bad", [-0.1, 1.1, np.nan])
def test_poisson_out_of_range(bad):
    x = jnp.asarray([[0.2, bad, 0.5]], jnp.float32)
    with pytest.raises(ValueError, match="x"):
        encoding.poisson(jax.random.key(0), x, 3)


@pytest.mark.parametrize("x", [np.array([[0, 1]], np.int32), np.array([[True, False]])])
def test_poisson_integer_input_is_type_error(x):
    with pytest.raises(TypeError, match="x"):
        encoding.poisson(jax.random.key(0), x, 3)


@pytest.mark.parametrize("num_steps", [0, 2.5, True])
def test_poisson_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        encoding.poisson(jax.random.key(0), jnp.full((2, 3), 0.5), num_steps)


def test_poisson_under_jit():
    # Traced rates cannot be checked: no error under jit, same samples as eagerly.
    x = jnp.asarray(_uniform_rates(6))
    s = jax.jit(encoding.poisson, static_argnums=2)(jax.random.key(7), x, STEPS)
    assert s.shape == (BATCH, STEPS, 4)
    np.testing.assert_array_equal(s, encoding.poisson(jax.random.key(7), x, STEPS))


# --------------------------------------------------------------------------- losses


def _np_ce(logits, labels):
    """Mean over the batch of -log softmax(logits)[label], in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels].mean()


def _outputs(seed, batch=5, steps=4, classes=10, scale=3.0):
    rng = np.random.default_rng(seed)
    outputs = (scale * rng.normal(size=(batch, steps, classes))).astype(np.float32)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    return outputs, labels


def _layout(outputs, time_axis):
    """[B, T, C] outputs laid out with time on ``time_axis`` (0/-3: [T, B, C])."""
    return outputs.swapaxes(0, 1) if time_axis % 3 == 0 else outputs


@pytest.mark.parametrize("time_axis", [1, 0, -2, -3])
def test_mean_output_cross_entropy(time_axis):
    # Dspike Eq. 3 / CPNG Eq. 5: CE of the time-mean of the last layer's outputs.
    outputs, labels = _outputs(0)
    arranged = jnp.asarray(_layout(outputs, time_axis))
    loss = losses.mean_output_cross_entropy(arranged, jnp.asarray(labels), time_axis=time_axis)
    mean_logits = outputs.astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(loss, _np_ce(mean_logits, labels), rtol=1e-5)
    optax_loss = optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(mean_logits, jnp.float32), jnp.asarray(labels)
    ).mean()
    np.testing.assert_allclose(loss, optax_loss, rtol=1e-5)
    np.testing.assert_allclose(
        losses.mean_over_time(arranged, time_axis), mean_logits, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("time_axis", [1, 0, -2, -3])
def test_tet_cross_entropy(time_axis):
    # TET: (1/T) sum_t CE(outputs[t], label).
    outputs, labels = _outputs(1)
    arranged = jnp.asarray(_layout(outputs, time_axis))
    loss = losses.tet_cross_entropy(arranged, jnp.asarray(labels), time_axis=time_axis)
    expected = np.mean([_np_ce(outputs[:, t], labels) for t in range(outputs.shape[1])])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_tet_equals_mean_output_for_constant_outputs():
    outputs, labels = _outputs(2, steps=1)
    constant = jnp.asarray(np.repeat(outputs, 6, axis=1))
    tet = losses.tet_cross_entropy(constant, jnp.asarray(labels))
    mean = losses.mean_output_cross_entropy(constant, jnp.asarray(labels))
    np.testing.assert_allclose(tet, mean, rtol=1e-6)
    np.testing.assert_allclose(tet, _np_ce(outputs[:, 0], labels), rtol=1e-5)


def test_tet_greater_than_mean_output_for_random_outputs():
    # Jensen: CE is convex in the logits, so mean_t CE(o_t) >= CE(mean_t o_t).
    outputs, labels = _outputs(3)
    tet = losses.tet_cross_entropy(jnp.asarray(outputs), jnp.asarray(labels))
    mean = losses.mean_output_cross_entropy(jnp.asarray(outputs), jnp.asarray(labels))
    assert tet > mean + 1e-3


_PROPERTY_SHAPE = (3, 4, 5)  # [B, T, classes], fixed so that the jitted losses compile once
_both_losses = jax.jit(
    lambda o, y: (losses.tet_cross_entropy(o, y), losses.mean_output_cross_entropy(o, y))
)


@settings(max_examples=60, deadline=None)
@given(
    outputs=hnp.arrays(np.float32, _PROPERTY_SHAPE, elements=st.floats(-20, 20, width=32)),
    labels=hnp.arrays(np.int32, (_PROPERTY_SHAPE[0],), elements=st.integers(0, 4)),
)
def test_tet_at_least_mean_output_property(outputs, labels):
    # Jensen's inequality for the convex CE, for any outputs and labels.
    tet, mean = (float(v) for v in _both_losses(jnp.asarray(outputs), jnp.asarray(labels)))
    assert tet >= mean - 1e-4 * (1 + abs(mean))


@pytest.mark.parametrize("loss", [losses.mean_output_cross_entropy, losses.tet_cross_entropy])
def test_loss_gradients_finite_and_jittable(loss):
    outputs, labels = _outputs(4)
    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(outputs), jnp.asarray(labels))
    np.testing.assert_allclose(value, loss(jnp.asarray(outputs), jnp.asarray(labels)), rtol=1e-6)
    assert grad.shape == outputs.shape
    assert np.all(np.isfinite(grad))
    # Softmax gradients sum to zero over the classes.
    np.testing.assert_allclose(np.asarray(grad).sum(axis=-1), 0.0, atol=1e-6)


@pytest.mark.parametrize("loss", [losses.mean_output_cross_entropy, losses.tet_cross_entropy])
def test_loss_errors(loss):
    outputs, labels = _outputs(5)
    outputs = jnp.asarray(outputs)
    with pytest.raises(TypeError, match="labels"):
        loss(outputs, jnp.asarray(labels, jnp.float32))
    with pytest.raises(ValueError, match="labels"):
        loss(outputs, jnp.asarray(labels[:-1]))
    with pytest.raises(ValueError, match="labels"):
        loss(outputs, jnp.asarray(labels)[:, None])
    with pytest.raises(ValueError, match="outputs"):
        loss(outputs[:, 0], jnp.asarray(labels))
    with pytest.raises(ValueError, match="outputs"):
        loss(outputs[..., None], jnp.asarray(labels))
    for bad_axis in (2, -1, 3):
        with pytest.raises(ValueError, match="time_axis"):
            loss(outputs, jnp.asarray(labels), time_axis=bad_axis)
    # time_axis=0 means [T, B, C]: the labels must match axis 1 (here T=4 != B=5).
    with pytest.raises(ValueError, match="labels"):
        loss(outputs, jnp.asarray(labels), time_axis=0)
