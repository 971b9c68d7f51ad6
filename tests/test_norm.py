"""tdBN and time-folded BatchNorm (``jsnn.norm`` and ``jsnn.TDBatchNorm``).

Checked against a NumPy implementation of Dspike Eq. 4-5 (tdBN, Zheng et al. 2021):

    C̄ = alpha V_th (C - E[C]) / sqrt(VAR(C) + eps),    Ĉ = gamma C̄ + beta,

with E and VAR per channel over time, batch and space together, and against DSR supplement C.2
(plain BN over the time-folded ``T*B`` batch). Running statistics follow the PyTorch convention
``running = momentum * running + (1 - momentum) * batch`` with the unbiased batch variance.
"""

from __future__ import annotations

import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

import jsnn
from jsnn import norm

EPS = 1e-5
SHAPE = (4, 3, 5, 5, 6)  # [B, T, H, W, C]


def _input(seed: int, shape=SHAPE, feature_axis: int = -1) -> np.ndarray:
    """Random input with a different offset and scale per channel."""
    rng = np.random.default_rng(seed)
    channels = shape[feature_axis]
    bshape = [1] * len(shape)
    bshape[feature_axis] = channels
    loc = rng.uniform(-2, 2, channels).reshape(bshape)
    scale = rng.uniform(0.5, 3, channels).reshape(bshape)
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32)


def _affine(seed: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2, channels) * rng.choice([-1.0, 1.0], channels)
    beta = rng.normal(size=channels)
    return gamma.astype(np.float32), beta.astype(np.float32)


def _np_stats(x, feature_axis=-1):
    """E[C] and biased VAR(C) per channel over every other axis (time, batch and space)."""
    x = np.asarray(x, np.float64)
    axes = tuple(a for a in range(x.ndim) if a != feature_axis % x.ndim)
    return x.mean(axis=axes), x.var(axis=axes), x.size // x.shape[feature_axis]


def _np_tdbn(x, gamma, beta, scale, feature_axis=-1, mean=None, var=None):
    """Dspike Eq. 4 (normalise, times alpha V_th) then Eq. 5 (affine), in float64."""
    x = np.asarray(x, np.float64)
    if mean is None:
        mean, var, _ = _np_stats(x, feature_axis)
    bshape = [1] * x.ndim
    bshape[feature_axis] = x.shape[feature_axis]

    def b(v):
        return np.asarray(v, np.float64).reshape(bshape)

    c_bar = scale * (x - b(mean)) / np.sqrt(b(var) + EPS)  # Eq. 4
    return b(gamma) * c_bar + b(beta)  # Eq. 5


def _set_affine(bn: jsnn.TDBatchNorm, gamma, beta) -> None:
    bn.gamma[...] = jnp.asarray(gamma)
    bn.beta[...] = jnp.asarray(beta)


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("feature_axis", [-1, 4, 1, -3])
def test_batch_statistics_per_channel_over_time_batch_space(feature_axis):
    # Dspike Eq. 4: E and VAR per channel, over time, batch and space together.
    x = _input(0, feature_axis=feature_axis)
    mean, var = norm.batch_statistics(jnp.asarray(x), feature_axis)
    np_mean, np_var, _ = _np_stats(x, feature_axis)
    assert mean.shape == var.shape == (x.shape[feature_axis],)
    np.testing.assert_allclose(mean, np_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, np_var, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [1 / np.sqrt(2), 0.7])
def test_normalize_matches_eq_4_5(alpha):
    x = _input(1)
    gamma, beta = _affine(2, SHAPE[-1])
    mean, var = norm.batch_statistics(jnp.asarray(x))
    y = norm.normalize(
        jnp.asarray(x), mean, var, gamma=gamma, beta=beta, scale=alpha * 0.5, epsilon=EPS
    )
    np.testing.assert_allclose(y, _np_tdbn(x, gamma, beta, alpha * 0.5), rtol=1e-5, atol=1e-5)


def test_batch_statistics_bad_feature_axis():
    x = jnp.ones((2, 3, 4))
    for axis in (3, -4):
        with pytest.raises(ValueError, match="feature_axis"):
            norm.batch_statistics(x, axis)


def _tdbn(x, gamma, beta):
    mean, var = norm.batch_statistics(x)
    return norm.normalize(x, mean, var, gamma=gamma, beta=beta, scale=0.35, epsilon=EPS)


def _textbook_tdbn(x, gamma, beta):
    """Eq. 4-5 written out in jnp, two-pass variance: the reference for the gradients."""
    mean = x.mean(axis=(0, 1, 2, 3))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2, 3))
    return gamma * 0.35 * (x - mean) / jnp.sqrt(var + EPS) + beta


def test_gradients_and_tangents_match_the_textbook_formulas():
    x = jnp.asarray(_input(21))
    gamma, beta = map(jnp.asarray, _affine(22, SHAPE[-1]))
    weights = jnp.asarray(np.random.default_rng(23).normal(size=SHAPE).astype(np.float32))

    def loss(f):
        return lambda *args: jnp.sum(jnp.sin(f(*args)) * weights)

    got = jax.grad(loss(_tdbn), argnums=(0, 1, 2))(x, gamma, beta)
    want = jax.grad(loss(_textbook_tdbn), argnums=(0, 1, 2))(x, gamma, beta)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    tangents = (weights, gamma, beta)
    np.testing.assert_allclose(
        jax.jvp(_tdbn, (x, gamma, beta), tangents)[1],
        jax.jvp(_textbook_tdbn, (x, gamma, beta), tangents)[1],
        rtol=1e-4,
        atol=1e-4,
    )


def test_backward_pass_keeps_only_the_input():
    # The textbook form keeps the centred and the normalised copies of x for the backward pass
    # too; batch_statistics and normalize keep x itself and per-channel vectors only.
    x = jnp.asarray(_input(24))
    gamma, beta = map(jnp.asarray, _affine(25, SHAPE[-1]))

    def full_size(f):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            print_saved_residuals(lambda *a: jnp.sum(f(*a) ** 2), x, gamma, beta)
        shape = "f32[" + ",".join(map(str, SHAPE)) + "]"
        return [line for line in printed.getvalue().splitlines() if line.startswith(shape)]

    assert len(full_size(_textbook_tdbn)) >= 3
    kept = full_size(_tdbn)
    assert len(kept) == 2 and "argument a[0]" in kept[0]  # x, and the output for the square


def test_bfloat16_input_gives_float32_statistics_and_bfloat16_output():
    x = _input(26)
    gamma, beta = _affine(27, SHAPE[-1])
    x16 = jnp.asarray(x, jnp.bfloat16)
    mean, var = norm.batch_statistics(x16)
    assert mean.dtype == var.dtype == jnp.float32
    np_mean, np_var, _ = _np_stats(np.asarray(x16, np.float32))
    np.testing.assert_allclose(mean, np_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, np_var, rtol=1e-5, atol=1e-5)
    y = norm.normalize(x16, mean, var, gamma=gamma, beta=beta, scale=0.35, epsilon=EPS)
    assert y.dtype == jnp.bfloat16
    want = _np_tdbn(np.asarray(x16, np.float32), gamma, beta, 0.35)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=1e-2, atol=2e-2)
    bn = jsnn.TDBatchNorm(SHAPE[-1])
    assert bn(x16).dtype == jnp.bfloat16 and bn.mean[...].dtype == bn.var[...].dtype == jnp.float32


# --------------------------------------------------------------------------- TDBatchNorm module


@pytest.mark.parametrize("alpha", [1 / np.sqrt(2), 0.7])
def test_tdbn_module_matches_eq_4_5(alpha):
    # Training mode: batch statistics over [B, T, H, W] per channel, scaled by alpha * v_th.
    x = _input(3)
    gamma, beta = _affine(4, SHAPE[-1])
    bn = jsnn.TDBatchNorm(SHAPE[-1], alpha=alpha, v_th=0.5)
    _set_affine(bn, gamma, beta)
    y = bn(jnp.asarray(x))
    assert y.shape == x.shape
    np.testing.assert_allclose(y, _np_tdbn(x, gamma, beta, alpha * 0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.9, 0.8, 0.0])
def test_running_stats_recurrence_unbiased(momentum):
    # running = momentum * running + (1 - momentum) * batch, unbiased batch variance (PyTorch),
    # starting from mean 0 and variance 1.
    kwargs = {} if momentum == 0.9 else {"momentum": momentum}
    bn = jsnn.TDBatchNorm(SHAPE[-1], alpha=0.7, v_th=0.5, **kwargs)
    run_mean, run_var = np.zeros(SHAPE[-1]), np.ones(SHAPE[-1])
    for seed in (5, 6):
        x = _input(seed)
        bn(jnp.asarray(x))
        mean, var, count = _np_stats(x)
        unbiased = var * count / (count - 1)
        run_mean = momentum * run_mean + (1 - momentum) * mean
        run_var = momentum * run_var + (1 - momentum) * unbiased
        np.testing.assert_allclose(bn.mean[...], run_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.var[...], run_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_eval", [True, False])
def test_eval_mode_uses_running_stats_and_does_not_update(use_eval):
    alpha = 1 / np.sqrt(2)
    gamma, beta = _affine(7, SHAPE[-1])
    bn = jsnn.TDBatchNorm(SHAPE[-1], alpha=alpha, v_th=0.5)
    _set_affine(bn, gamma, beta)
    for seed in (8, 9):
        bn(jnp.asarray(_input(seed)))
    if use_eval:
        bn.eval()  # what model.eval() does
    else:
        bn.use_running_average = True
    assert bn.use_running_average is True
    run_mean, run_var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    x = _input(10) * 0.3 + 1.0  # statistics far from the running ones
    y = bn(jnp.asarray(x))
    expected = _np_tdbn(x, gamma, beta, alpha * 0.5, mean=run_mean, var=run_var)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bn.mean[...], run_mean)
    np.testing.assert_array_equal(bn.var[...], run_var)
    # Back to training mode: batch statistics again.
    bn.train()
    assert bn.use_running_average is False
    np.testing.assert_allclose(
        bn(jnp.asarray(x)), _np_tdbn(x, gamma, beta, alpha * 0.5), rtol=1e-5, atol=1e-5
    )


def test_constructor_use_running_average():
    bn = jsnn.TDBatchNorm(SHAPE[-1], use_running_average=True)
    x = _input(11)
    # Initial running stats (mean 0, var 1): y = gamma * alpha v_th * x / sqrt(1 + eps) + beta.
    np.testing.assert_allclose(bn(jnp.asarray(x)), 0.5 * x / np.sqrt(1 + EPS), rtol=1e-5)
    np.testing.assert_array_equal(bn.mean[...], 0.0)


@pytest.mark.parametrize("alpha", [1 / np.sqrt(2), 0.7])
def test_output_scaled_to_alpha_vth(alpha):
    # Dspike Sec. 3 / tdBN: the normalised pre-activation has per-channel std alpha V_th
    # (times |gamma|) and mean beta.
    x = _input(12)
    gamma, beta = _affine(13, SHAPE[-1])
    bn = jsnn.TDBatchNorm(SHAPE[-1], alpha=alpha, v_th=0.5)
    _set_affine(bn, gamma, beta)
    y = np.asarray(bn(jnp.asarray(x)), np.float64)
    axes = (0, 1, 2, 3)
    np.testing.assert_allclose(y.mean(axis=axes), beta, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=axes), np.abs(gamma) * alpha * 0.5, rtol=1e-4)


# --------------------------------------------------------------------------- layouts


def test_layout_independence_folded_and_time_major():
    # Statistics over time and batch together: [B, T, ...], [B*T, ...] and [T, B, ...] agree.
    x = _input(14)
    gamma, beta = _affine(15, SHAPE[-1])
    layers = [jsnn.TDBatchNorm(SHAPE[-1], alpha=0.7, v_th=0.5) for _ in range(3)]
    for bn in layers:
        _set_affine(bn, gamma, beta)
    y = layers[0](jnp.asarray(x))
    y_folded = layers[1](jnp.asarray(x.reshape(-1, *SHAPE[2:])))
    y_time_major = layers[2](jnp.asarray(x.swapaxes(0, 1)))
    np.testing.assert_allclose(y_folded.reshape(SHAPE), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_time_major.swapaxes(0, 1), y, rtol=1e-5, atol=1e-5)
    for other in layers[1:]:
        np.testing.assert_allclose(other.mean[...], layers[0].mean[...], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(other.var[...], layers[0].var[...], rtol=1e-5, atol=1e-6)


def test_time_folded_is_plain_bn_over_folded_batch():
    # DSR supplement C.2: BN over the folded T*B batch, i.e. tdBN with alpha * v_th = 1.
    x = _input(16)
    folded = x.reshape(-1, *SHAPE[2:])
    gamma, beta = _affine(17, SHAPE[-1])
    tf = jsnn.TDBatchNorm.time_folded(SHAPE[-1])
    _set_affine(tf, gamma, beta)
    flax_bn = nnx.BatchNorm(
        SHAPE[-1], momentum=0.9, epsilon=EPS, use_running_average=False, rngs=nnx.Rngs(0)
    )
    flax_bn.scale[...] = jnp.asarray(gamma)
    flax_bn.bias[...] = jnp.asarray(beta)
    y = tf(jnp.asarray(x))
    y_flax = flax_bn(jnp.asarray(folded))
    np.testing.assert_allclose(y.reshape(folded.shape), y_flax, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, _np_tdbn(x, gamma, beta, 1.0), rtol=1e-5, atol=1e-5)
    # Running mean as flax's; flax keeps the biased variance, jsnn the unbiased (PyTorch).
    np.testing.assert_allclose(tf.mean[...], flax_bn.mean[...], rtol=1e-5, atol=1e-6)
    count = folded.size // SHAPE[-1]
    np.testing.assert_allclose(
        np.asarray(tf.var[...]) - 0.9,
        (np.asarray(flax_bn.var[...]) - 0.9) * count / (count - 1),
        rtol=1e-4,
        atol=1e-6,
    )
    # tdBN with alpha * v_th = 1 is the same layer.
    td = jsnn.TDBatchNorm(SHAPE[-1], alpha=2.0, v_th=0.5)
    _set_affine(td, gamma, beta)
    np.testing.assert_allclose(td(jnp.asarray(x)), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("feature_axis", [2, -3, 1])
def test_feature_axis_other_than_last(feature_axis):
    shape = (2, 3, 4, 5, 6)
    x = _input(18, shape, feature_axis)
    channels = shape[feature_axis]
    gamma, beta = _affine(19, channels)
    bn = jsnn.TDBatchNorm(channels, alpha=0.7, v_th=0.5, feature_axis=feature_axis)
    _set_affine(bn, gamma, beta)
    y = bn(jnp.asarray(x))
    np.testing.assert_allclose(
        y, _np_tdbn(x, gamma, beta, 0.35, feature_axis=feature_axis), rtol=1e-5, atol=1e-5
    )
    mean, var, count = _np_stats(x, feature_axis)
    np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        bn.var[...], 0.9 + 0.1 * var * count / (count - 1), rtol=1e-5, atol=1e-6
    )


def test_under_nnx_jit_updates_running_stats():
    x = _input(20)
    bn = jsnn.TDBatchNorm(SHAPE[-1], alpha=0.7, v_th=0.5)
    y = nnx.jit(lambda m, x: m(x))(bn, jnp.asarray(x))
    ones, zeros = np.ones(SHAPE[-1]), np.zeros(SHAPE[-1])
    np.testing.assert_allclose(y, _np_tdbn(x, ones, zeros, 0.35), rtol=1e-5, atol=1e-5)
    mean, _, _ = _np_stats(x)
    np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("num_features", [0, -1, 2.5, True])
def test_bad_num_features(num_features):
    with pytest.raises(ValueError, match="num_features"):
        jsnn.TDBatchNorm(num_features)


@pytest.mark.parametrize("momentum", [1.0, 1.5, -0.1])
def test_bad_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        jsnn.TDBatchNorm(4, momentum=momentum)


@pytest.mark.parametrize(("alpha", "v_th"), [(0.0, 0.5), (1.0, -0.5)])
def test_bad_scale(alpha, v_th):
    with pytest.raises(ValueError, match="alpha"):
        jsnn.TDBatchNorm(4, alpha=alpha, v_th=v_th)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 4, 3), (4,)])
def test_wrong_feature_count_names_shape(shape):
    bn = jsnn.TDBatchNorm(4)
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        bn(jnp.ones(shape))


@pytest.mark.parametrize("feature_axis", [3, -4, 10])
def test_bad_feature_axis_is_value_error(feature_axis):
    # x has 3 axes: feature_axis 3, -4 and 10 do not exist.
    bn = jsnn.TDBatchNorm(4, feature_axis=feature_axis)
    with pytest.raises(ValueError, match="feature"):
        bn(jnp.ones((2, 3, 4)))
