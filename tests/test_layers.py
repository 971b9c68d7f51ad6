"""Flax NNX shells (``jsnn.LIF``, ``jsnn.TDBatchNorm``, ``jsnn.TimeDistributed``).

Checks that the LIF layer is the pure ``jsnn.lif`` (Dspike Eq. 1-2) on ``[B, T, N]`` inputs with
the defaults of the Dspike code (decay 0.25, v_th 0.5, hard reset, Dspike(b=1)), that its
surrogate is non-trainable state that methods (Dspike's temperature search, CPNG) can replace
without retracing, and that a small network (Linear -> tdBN -> LIF -> Linear, readout of Dspike
Eq. 3 with cross-entropy) trains under ``nnx.jit`` in graph mode, tree mode and plain
``jax.jit`` on split state.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jsnn
from jsnn import encoding, losses, models, norm
from jsnn.layers import SurrogateVariable
from jsnn.surrogate import Dspike, Sigmoid, Triangular

B, T, N_IN, N_HID, N_OUT = 6, 4, 5, 8, 3


def _currents(seed, shape=(B, T, N_HID), loc=0.3, scale=0.4):
    rng = np.random.default_rng(seed)
    return jnp.asarray(loc + scale * rng.standard_normal(shape), jnp.float32)


def _tree_allclose(a, b, **kwargs):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(x, y, **kwargs)


# --------------------------------------------------------------------------- LIF layer

_LIF_CASES = {
    # name: (layer kwargs, lif kwargs); the first checks the documented defaults.
    "defaults": ({}, dict(decay=0.25, v_th=0.5, surrogate=Dspike(1.0), reset="hard")),
    "IF": (dict(decay=1.0), dict(decay=1.0, v_th=0.5, surrogate=Dspike(1.0), reset="hard")),
    "soft": (
        dict(decay=0.5, v_th=0.3, surrogate=Triangular(2.0), reset="soft"),
        dict(decay=0.5, v_th=0.3, surrogate=Triangular(2.0), reset="soft"),
    ),
    "none_detach": (
        dict(decay=0.8, surrogate=Sigmoid(3.0), reset="none", detach_reset=True),
        dict(decay=0.8, v_th=0.5, surrogate=Sigmoid(3.0), reset="none", detach_reset=True),
    ),
    "per_neuron": (
        dict(decay=np.linspace(0.2, 1.0, N_HID), v_th=np.linspace(0.3, 0.7, N_HID)),
        dict(
            decay=np.linspace(0.2, 1.0, N_HID),
            v_th=np.linspace(0.3, 0.7, N_HID),
            surrogate=Dspike(1.0),
            reset="hard",
        ),
    ),
}


@pytest.mark.parametrize("case", list(_LIF_CASES))
def test_lif_layer_equals_pure_lif(case):
    # Dspike Eq. 1-2 through jsnn.lif over the time axis 1 of [B, T, N]: spikes and gradients.
    layer_kwargs, lif_kwargs = _LIF_CASES[case]
    layer = jsnn.LIF(**layer_kwargs)
    x = _currents(0)
    weights = _currents(1, loc=0.0, scale=1.0)

    def pure(c):
        return jsnn.lif(c, time_axis=1, **lif_kwargs)

    def weighted(f, c):
        return jnp.sum(f(c) * weights)

    @jax.jit
    def spikes_and_grads(c):
        return [(f(c), jax.grad(functools.partial(weighted, f))(c)) for f in (layer, pure)]

    (spikes_layer, grad_layer), (spikes_pure, grad_pure) = spikes_and_grads(x)
    np.testing.assert_array_equal(spikes_layer, spikes_pure)
    assert spikes_layer.shape == x.shape
    assert 0 < float(jnp.mean(spikes_pure)) < 1  # some neurons fire, some do not
    np.testing.assert_allclose(grad_layer, grad_pure, rtol=1e-6, atol=1e-7)
    assert np.any(np.asarray(grad_pure) != 0)


def test_lif_defaults():
    # The Dspike authors' code: decay 0.25, v_th 0.5, hard reset,
    # Dspike(b=1) on the window u in [0, 1].
    layer = jsnn.LIF()
    assert float(layer.decay) == 0.25
    assert float(layer.v_th[...]) == 0.5
    assert layer.reset == "hard"
    assert layer.detach_reset is False
    surrogate = layer.surrogate.get_value()
    assert isinstance(layer.surrogate, SurrogateVariable)
    assert isinstance(surrogate, Dspike)
    assert float(surrogate.b) == 1.0
    assert float(surrogate.width) == 1.0
    assert len(jax.tree.leaves(nnx.state(layer, nnx.Param))) == 0  # nothing to train


@pytest.mark.parametrize(
    ("decay", "expected"),
    [
        # Constant current 0.3, v_th 0.5, hard reset. IF: u = 0.3, 0.6 (spike, reset to 0), ...
        (1.0, [0, 1, 0, 1, 0, 1]),
        # decay 0.25: u -> 0.3 / (1 - 0.25) = 0.4 < 0.5, never fires.
        (0.25, [0, 0, 0, 0, 0, 0]),
        # decay 0.8: u = 0.3, 0.54 (spike), 0.3, 0.54 (spike), ...
        (0.8, [0, 1, 0, 1, 0, 1]),
    ],
)
def test_lif_hand_computed(decay, expected):
    layer = jsnn.LIF(decay=decay)
    spikes = layer(jnp.full((1, 6, 1), 0.3, jnp.float32))
    np.testing.assert_array_equal(spikes[0, :, 0], expected)


def test_plif_learns_decay():
    # PLIF (Fang et al. 2021): decay = sigmoid(w), w an nnx.Param with sigmoid(w) = initial decay.
    layer = jsnn.LIF(learn_decay=True, decay=0.5)
    params = nnx.state(layer, nnx.Param)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 1
    assert isinstance(layer.decay_logit, nnx.Param)
    np.testing.assert_allclose(jax.nn.sigmoid(leaves[0]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(layer.decay, 0.5, rtol=1e-6)
    x = _currents(2)
    weights = _currents(3, loc=0.0, scale=1.0)
    reference = jsnn.lif(x, decay=0.5, v_th=0.5, surrogate=Dspike(1.0), time_axis=1)
    np.testing.assert_array_equal(layer(x), reference)

    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) * weights)))(layer)
    g = float(jax.tree.leaves(grads)[0])
    assert g != 0.0 and np.isfinite(g)

    # The same gradient through the pure lif with decay = sigmoid(w).
    def pure(w):
        spikes = jsnn.lif(x, decay=jax.nn.sigmoid(w), v_th=0.5, surrogate=Dspike(1.0), time_axis=1)
        return jnp.sum(spikes * weights)

    np.testing.assert_allclose(g, jax.jit(jax.grad(pure))(jnp.float32(0.0)), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learn_decay=True, decay=1.0),
        dict(learn_decay=True, decay=np.array([0.5, 0.5])),
        dict(decay=0.0),
        dict(decay=-0.1),
        dict(decay=1.5),
        dict(decay=np.nan),
        dict(decay=np.array([0.5, 1.2])),
        dict(v_th=0.0),
        dict(v_th=-1.0),
        dict(v_th=np.inf),
        dict(reset="hardd"),
        dict(reset=None),
    ],
    ids=repr,
)
def test_lif_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=r"decay|v_th|reset"):
        jsnn.LIF(**kwargs)


@pytest.mark.parametrize("surrogate", [jax.nn.sigmoid, "dspike", Dspike])
def test_lif_surrogate_must_be_surrogate(surrogate):
    with pytest.raises(TypeError, match="surrogate"):
        jsnn.LIF(surrogate=surrogate)


# --------------------------------------------------------------------------- surrogate as state


class SurrogateNet(nnx.Module):
    """Linear -> LIF -> Linear -> LIF -> Linear: two layers whose surrogates methods replace."""

    def __init__(self, rngs: nnx.Rngs, surrogate=None):
        kwargs = {} if surrogate is None else {"surrogate": surrogate}
        self.fc1 = jsnn.TimeDistributed(nnx.Linear(N_IN, N_HID, rngs=rngs))
        self.lif1 = jsnn.LIF(**kwargs)
        self.fc2 = jsnn.TimeDistributed(nnx.Linear(N_HID, N_HID, rngs=rngs))
        self.lif2 = jsnn.LIF(**kwargs)
        self.out = jsnn.TimeDistributed(nnx.Linear(N_HID, N_OUT, rngs=rngs))

    def __call__(self, x):
        return self.out(self.lif2(self.fc2(self.lif1(self.fc1(x)))))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    static = jnp.asarray(rng.normal(size=(B, N_IN)), jnp.float32)
    labels = jnp.asarray(np.arange(B) % N_OUT, jnp.int32)
    return encoding.direct(static, T), labels  # Dspike Sec. 5: direct encoding


def _loss(model, x, y):
    # Dspike Eq. 3 readout (mean over time of the last layer's output) + cross-entropy.
    return losses.mean_output_cross_entropy(model(x), y)


_TRACES: list[None] = []


@nnx.jit
def _grad_step(model, x, y):
    _TRACES.append(None)  # Python side effect: runs once per trace
    return nnx.grad(_loss)(model, x, y)


def test_surrogate_is_state_not_param():
    model = SurrogateNet(nnx.Rngs(0))
    surrogates = nnx.state(model, SurrogateVariable)
    assert set(surrogates.keys()) == {"lif1", "lif2"}
    for layer in (model.lif1, model.lif2):
        assert isinstance(layer.surrogate.get_value(), Dspike)
    # Not an optimizer parameter: not in the Param state, no gradient for it.
    param_leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert len(param_leaves) == 6  # three kernels, three biases
    assert "lif1" not in nnx.state(model, nnx.Param)
    x, y = _data()
    grads = _grad_step(model, x, y)
    assert len(jax.tree.leaves(nnx.state(grads, SurrogateVariable))) == 0
    # An optimizer step changes the weights but leaves the surrogates alone.
    kernel_before = np.asarray(model.fc1.layer.kernel[...])
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    nnx.jit(lambda o, m, g: o.update(m, g))(optimizer, model, grads)
    assert not np.array_equal(model.fc1.layer.kernel[...], kernel_before)
    for layer in (model.lif1, model.lif2):
        surrogate = layer.surrogate.get_value()
        assert isinstance(surrogate, Dspike)
        assert float(surrogate.b) == 1.0 and float(surrogate.width) == 1.0


def test_replacing_surrogate_changes_gradient_without_retracing():
    # Dspike's temperature search / CPNG set the surrogate between epochs: the compiled step must
    # see the new shape parameters as data (no retrace) and give the new surrogate's gradient.
    x, y = _data()
    model = SurrogateNet(nnx.Rngs(0))
    before = len(_TRACES)
    grads_b1 = _grad_step(model, x, y)
    traced = len(_TRACES)
    assert traced - before <= 1
    for layer in (model.lif1, model.lif2):
        layer.surrogate.set_value(Dspike(3.0))
    grads_b3 = _grad_step(model, x, y)
    assert len(_TRACES) == traced  # no retrace
    assert float(model.lif1.surrogate.get_value().b) == 3.0
    # The hidden layer's gradient goes through the surrogate, so it changes.
    assert not np.allclose(grads_b1["fc1"]["layer"]["kernel"], grads_b3["fc1"]["layer"]["kernel"])
    # ... and equals that of a model built with Dspike(3.0) from the start.
    fresh = SurrogateNet(nnx.Rngs(0), surrogate=Dspike(3.0))
    _tree_allclose(grads_b3, _grad_step(fresh, x, y), rtol=1e-5, atol=1e-6)
    # Sanity: the b=1 gradient equals a fresh default model's.
    _tree_allclose(grads_b1, _grad_step(SurrogateNet(nnx.Rngs(0)), x, y), rtol=1e-5, atol=1e-6)


def test_surrogate_replaced_inside_nnx_jit():
    # A method run under nnx.jit reads the surrogate and replaces it; the change is kept.
    @nnx.jit
    def anneal(model, factor):
        for layer in (model.lif1, model.lif2):
            old = layer.surrogate.get_value()
            layer.surrogate.set_value(Dspike(old.b * factor, old.width))

    model = SurrogateNet(nnx.Rngs(0))
    anneal(model, jnp.float32(2.0))
    anneal(model, jnp.float32(1.5))
    for layer in (model.lif1, model.lif2):
        surrogate = layer.surrogate.get_value()
        assert isinstance(surrogate, Dspike)
        np.testing.assert_allclose(surrogate.b, 3.0)
        np.testing.assert_allclose(surrogate.width, 1.0)


# --------------------------------------------------------------------------- firing-rate mode


def _firing_rates(model, x):
    """Module path -> the firing rates ``nnx.capture`` collects from one call of ``model``."""
    _, intermediates = nnx.capture(model, nnx.Intermediate)(x)
    rates = {}
    for path, rate in jax.tree_util.tree_leaves_with_path(intermediates):
        keys = tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))
        assert keys[-1] == "firing_rate", path
        rates.setdefault(keys[:-1], []).append(float(rate))
    return rates


def test_eval_mode_records_one_firing_rate_per_lif_layer():
    # record_firing_rate is a mode flag set through Flax's idiom, with no isinstance(LIF) loop:
    # model.eval(record_firing_rate=True) reaches every LIF layer of a zoo model, and passes over
    # an ANN twin (no LIF, no attribute of that name) without error.
    snn = models.digits_net(steps=3, rngs=nnx.Rngs(0))
    ann = models.ann_twin(models.digits_net, rngs=nnx.Rngs(0))
    x = 6.0 * jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    lif_paths = {path for path, m in nnx.iter_modules(snn) if isinstance(m, jsnn.LIF)}
    assert len(lif_paths) == 2
    assert _firing_rates(snn, x) == {}  # off by default

    snn.eval(record_firing_rate=True)
    assert snn.units[0].norm.use_running_average is True  # still eval mode
    rates = _firing_rates(snn, x)
    assert set(rates) == lif_paths and all(len(calls) == 1 for calls in rates.values())
    # Each is its layer's mean spike: the first layer's, recomputed from its own input.
    folded = encoding.direct(x, 3).reshape(12, 8, 8, 1)
    spikes = nnx.capture(snn.units[0], nnx.Intermediate)(folded, 3)[0]
    first = rates[("units", 0, "act", "neuron")][0]
    np.testing.assert_allclose(first, jnp.mean(spikes), rtol=1e-6)
    assert all(0 < calls[0] < 1 for calls in rates.values()), rates

    ann.eval(record_firing_rate=True)  # no LIF: nothing set, nothing raised
    assert ann.units[0].norm.use_running_average is True
    assert _firing_rates(ann, x) == {}
    assert ann(x).shape == (4, 10)

    snn.train(record_firing_rate=False)
    assert _firing_rates(snn, x) == {}
    assert snn.units[0].norm.use_running_average is False


# --------------------------------------------------------------------------- training


class TrainNet(nnx.Module):
    """TimeDistributed(Linear) -> tdBN -> LIF -> TimeDistributed(Linear)."""

    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = jsnn.TimeDistributed(nnx.Linear(N_IN, N_HID, rngs=rngs))
        self.bn = jsnn.TDBatchNorm(N_HID, alpha=1.0, v_th=0.5)
        self.lif = jsnn.LIF()
        self.out = jsnn.TimeDistributed(nnx.Linear(N_HID, N_OUT, rngs=rngs))

    def __call__(self, x):
        return self.out(self.lif(self.bn(self.fc1(x))))


STEPS = 8


def _train_step(model, optimizer, x, y, graph=None):
    loss, grads = nnx.value_and_grad(_loss, graph=graph)(model, x, y)
    optimizer.update(model, grads)
    return loss


def _train(mode):
    x, y = _data(1)
    if mode == "tree_context":
        with nnx.set_graph_mode(False):
            model = TrainNet(nnx.Rngs(0))
            optimizer = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
            step = nnx.jit(_train_step)
            values = [float(step(model, optimizer, x, y)) for _ in range(STEPS)]
        return model, values
    model = TrainNet(nnx.Rngs(0))
    if mode == "graph":
        optimizer = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
        step = nnx.jit(_train_step)
    else:  # tree mode by argument
        optimizer = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param, graph=False)
        step = nnx.jit(lambda m, o, x, y: _train_step(m, o, x, y, graph=False), graph=False)
    values = [float(step(model, optimizer, x, y)) for _ in range(STEPS)]
    return model, values


@pytest.fixture(scope="module")
def graph_run():
    return _train("graph")


def test_training_decreases_loss_and_updates_bn(graph_run):
    model, values = graph_run
    assert np.all(np.isfinite(values))
    assert values[-1] < values[0] - 0.05, values
    # Running statistics left their initial values (mean 0, variance 1) under nnx.jit.
    assert np.all(np.asarray(model.bn.mean[...]) != 0.0)
    assert not np.allclose(model.bn.var[...], 1.0)
    assert model.bn.use_running_average is False
    # The running variance (a mix of positive unbiased batch variances) stays finite and > 0.
    assert np.all(np.isfinite(model.bn.var[...])) and np.all(np.asarray(model.bn.var[...]) > 0)


def test_eval_uses_running_stats(graph_run):
    model, _ = graph_run
    model = nnx.clone(model)
    x, _ = _data(1)
    model.eval()
    assert model.bn.use_running_average is True
    mean, var = np.asarray(model.bn.mean[...]), np.asarray(model.bn.var[...])
    h = model.fc1(x)
    expected = norm.normalize(
        h,
        jnp.asarray(mean),
        jnp.asarray(var),
        gamma=model.bn.gamma[...],
        beta=model.bn.beta[...],
        scale=0.5,
        epsilon=model.bn.epsilon,
    )
    np.testing.assert_allclose(model.bn(h), expected, rtol=1e-5, atol=1e-6)
    # Eval output does not depend on the rest of the batch.
    np.testing.assert_allclose(model.bn(h[:2]), expected[:2], rtol=1e-5, atol=1e-6)
    out = nnx.jit(lambda m, x: m(x))(model, x)  # the whole model, compiled, in eval mode
    assert out.shape == (B, T, N_OUT)
    np.testing.assert_array_equal(model.bn.mean[...], mean)
    np.testing.assert_array_equal(model.bn.var[...], var)
    model.train()
    assert model.bn.use_running_average is False


@pytest.mark.parametrize("mode", ["tree_argument", "tree_context"])
def test_tree_mode_matches_graph_mode(graph_run, mode):
    graph_model, graph_values = graph_run
    model, values = _train(mode)
    np.testing.assert_allclose(values, graph_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bn.mean[...], graph_model.bn.mean[...], rtol=1e-5, atol=1e-6)
    _tree_allclose(
        nnx.state(model, nnx.Param), nnx.state(graph_model, nnx.Param), rtol=1e-4, atol=1e-6
    )


def test_plain_jax_jit_on_split_state(graph_run):
    _, graph_values = graph_run
    x, y = _data(1)
    model = TrainNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss = _train_step(model, optimizer, x, y)
        return loss, nnx.state((model, optimizer))

    values = []
    for _ in range(STEPS):
        loss, state = step(state, x, y)
        values.append(float(loss))
    np.testing.assert_allclose(values, graph_values, rtol=1e-5, atol=1e-6)
    nnx.update((model, optimizer), state)
    assert np.all(np.asarray(model.bn.mean[...]) != 0.0)


# --------------------------------------------------------------------------- TimeDistributed


def test_time_distributed_conv_equals_per_step():
    conv = nnx.Conv(3, 4, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    layer = jsnn.TimeDistributed(conv)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 6, 6, 3)), jnp.float32)
    y = nnx.jit(lambda m, x: m(x))(layer, x)
    per_step = jnp.stack([conv(x[:, t]) for t in range(x.shape[1])], axis=1)
    assert y.shape == (2, 3, 6, 6, 4)
    np.testing.assert_allclose(y, per_step, rtol=1e-5, atol=1e-5)


def test_time_distributed_linear_and_errors():
    linear = nnx.Linear(N_IN, N_OUT, rngs=nnx.Rngs(1))
    layer = jsnn.TimeDistributed(linear)
    x, _ = _data(2)
    np.testing.assert_allclose(
        layer(x), linear(x), rtol=1e-5, atol=1e-6
    )  # Linear maps the last axis
    with pytest.raises(ValueError, match="shape"):
        layer(jnp.ones((N_IN,)))
