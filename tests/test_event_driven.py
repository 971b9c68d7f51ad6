"""Event-driven learning (jsnn.methods.event_driven) against the paper's own statements (Eq. 3,
6, 8, 11, Sec. 3.2) and against plain NumPy loops of the forward and backward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.methods import event_driven as ed

TAUS = {"tau_m": 5.0, "tau_s": 3.0, "tau_grad": 2.5}  # the MNIST config


def _kernels(steps, kind="exp"):
    a_m, a_s, a_g = (1 - 1 / TAUS[name] for name in ("tau_m", "tau_s", "tau_grad"))
    k = np.arange(1, steps + 1)
    eps = TAUS["tau_m"] / (TAUS["tau_m"] - TAUS["tau_s"]) * (a_m**k - a_s**k)
    kappa = a_g**k if kind == "exp" else eps - np.concatenate([[0.0], eps[:-1]])
    return eps, kappa


def _numpy_forward(currents, v_th=1.0):
    """The potential as the PSP kernel summed over the inputs since the last spike."""
    batch, steps = currents.shape[:2]
    flat = currents.reshape(batch, steps, -1)
    eps, h = _kernels(steps)
    spikes, du, dut = (np.zeros_like(flat) for _ in range(3))
    for b in range(batch):
        for n in range(flat.shape[2]):
            start, u_last = 0, 0.0
            for t in range(steps):
                window = range(start, t + 1)
                u = sum(eps[t - tau] * flat[b, tau, n] for tau in window)
                dut[b, t, n] = sum(h[t - tau] * flat[b, tau, n] for tau in window)
                du[b, t, n] = u - u_last
                if u >= v_th:
                    spikes[b, t, n], start, u_last = 1.0, t + 1, 0.0
                else:
                    u_last = u
    return tuple(a.reshape(currents.shape) for a in (spikes, du, dut))


def _numpy_time_gradients(ct, spikes, du, dut, kind="exp", max_dudt_inv=123456789.0):
    """(e, r) of the backward pass, spike by spike over each window."""
    shape = spikes.shape
    ct, spikes, du, dut = (a.reshape(shape[0], shape[1], -1) for a in (ct, spikes, du, dut))
    eps, kappa = _kernels(shape[1], kind)
    slope = dut if kind == "exp" else du
    e, r = np.zeros_like(spikes), np.zeros_like(spikes)
    with np.errstate(divide="ignore"):
        for b in range(spikes.shape[0]):
            for n in range(spikes.shape[2]):
                previous = -1
                for t_k in np.flatnonzero(spikes[b, :, n]):
                    delta = -ct[b, t_k, n]
                    p_w = delta * np.clip(-1 / du[b, t_k, n], -4, 0)
                    p_in = delta * np.clip(-1 / slope[b, t_k, n], -max_dudt_inv, 0)
                    for tau in range(previous + 1, t_k + 1):
                        e[b, tau, n] = p_w * eps[t_k - tau]
                        r[b, tau, n] = -p_in * kappa[t_k - tau]
                    previous = t_k
    return e.reshape(shape), r.reshape(shape)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_kernels_are_the_discrete_forms_of_eq_3_and_eq_12():
    eps = np.asarray(ed.psp_kernel(400, tau_m=5.0, tau_s=3.0, dtype=jnp.float32))
    assert eps[0] > 0 and abs(eps.sum() - 5.0) < 1e-4  # Eq. 3's normalisation: sum = tau_m
    np.testing.assert_allclose(eps[:20], _kernels(20)[0], rtol=1e-6)
    h = ed.grad_kernel(20, **TAUS)
    np.testing.assert_allclose(h, (1 - 1 / 2.5) ** np.arange(1, 21), rtol=1e-6)
    psp = ed.grad_kernel(20, **TAUS, kind="psp")
    np.testing.assert_allclose(psp, _kernels(20, "psp")[1], rtol=1e-5, atol=1e-7)
    assert psp[0] > 0 and psp[-1] < 0  # the PSP rises, then falls


def test_srm_forward_is_the_psp_over_each_window(x64):
    currents = np.random.default_rng(0).uniform(-0.2, 0.9, size=(3, 10, 4))
    trace = ed.srm_forward(jnp.asarray(currents), **TAUS)
    spikes, du, dut = _numpy_forward(currents)
    assert spikes.sum() > 5 and trace.spikes.dtype == jnp.float64
    np.testing.assert_array_equal(trace.spikes, spikes)
    np.testing.assert_allclose(trace.delta_u, du, atol=1e-12)
    np.testing.assert_allclose(trace.delta_u_t, dut, atol=1e-12)


def _dense_grads(x, w, ct, **options):
    _, pullback = jax.vjp(lambda x, w: ed.srm_layer(x, w, **TAUS, **options), x, w)
    return pullback(ct)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"grad_kernel": "psp"},
        {"input_grad_scale": 0.85},
        {"labels": np.array([1, 0, 2]), "supervise": "end"},
        {"labels": np.array([2, 2, 0]), "supervise": "last_rising"},
    ],
    ids=["exp", "psp", "damped", "supervised-end", "supervised-last-rising"],
)
def test_the_dense_backward_equals_a_numpy_loop(x64, options):
    rng = np.random.default_rng(1)
    x = (rng.uniform(size=(3, 8, 5)) < 0.5).astype(np.float64)
    w = rng.normal(0.4, 0.5, size=(5, 3))
    ct = rng.normal(size=(3, 8, 3))
    spikes = ed.srm_layer(jnp.asarray(x), jnp.asarray(w), **TAUS, **options)
    # The forward and its increments, with the supervisory spike as the contract states.
    ref_spikes, du, dut = _numpy_forward(x @ w)
    if "labels" in options:
        for b, n in enumerate(options["labels"]):
            if options["supervise"] == "end":
                t = 7
                du[b, t, n], dut[b, t, n] = max(du[b, t, n], 1 / 3), max(dut[b, t, n], 1 / 3)
            else:
                rising = np.flatnonzero(du[b, :, n] > 0.05)
                t = rising[-1] if rising.size else 0
            ref_spikes[b, t, n] = float(du[b, t, n] != 0)
    np.testing.assert_array_equal(spikes, ref_spikes)
    dx, dw = _dense_grads(jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct), **options)
    kind = options.get("grad_kernel", "exp")
    e, r = _numpy_time_gradients(ct, ref_spikes, du, dut, kind)
    np.testing.assert_allclose(dw, np.einsum("bti,btn->in", x, e), atol=1e-12)
    scale = options.get("input_grad_scale", 1.0)
    np.testing.assert_allclose(dx, -scale * x * (r @ w.T), atol=1e-12)


def test_the_conv_backward_equals_a_numpy_loop(x64):
    rng = np.random.default_rng(2)
    x = (rng.uniform(size=(2, 6, 5, 5, 2)) < 0.4).astype(np.float64)
    w = rng.normal(0.3, 0.4, size=(3, 3, 2, 2))
    ct = rng.normal(size=(2, 6, 3, 3, 2))
    synapse = ed.conv()
    _, pullback = jax.vjp(lambda x, w: ed.srm_layer(x, w, synapse=synapse, **TAUS), x, w)
    dx, dw = pullback(jnp.asarray(ct))
    currents = np.zeros((2, 6, 3, 3, 2))
    for i, j in np.ndindex(3, 3):
        currents[:, :, i, j] = np.einsum("btijc,ijco->bto", x[:, :, i : i + 3, j : j + 3], w)
    spikes, du, dut = _numpy_forward(currents)
    assert spikes.sum() > 3
    e, r = _numpy_time_gradients(ct, spikes, du, dut)
    ref_dw, ref_dr = np.zeros_like(w), np.zeros_like(x)
    for i, j in np.ndindex(3, 3):
        ref_dw += np.einsum("btijc,bto->ijco", x[:, :, i : i + 3, j : j + 3], e[:, :, i, j])
        ref_dr[:, :, i : i + 3, j : j + 3] += np.einsum("ijco,bto->btijc", w, r[:, :, i, j])
    np.testing.assert_allclose(dw, ref_dw, atol=1e-12)
    np.testing.assert_allclose(dx, -x * ref_dr, atol=1e-12)


def _output_spike_time_gradients(spikes):
    """dL/dt_k at each output spike for L = sum of spikes: -1 at every spike."""
    return -float(np.sum(spikes))


def test_a_spikes_input_time_gradients_sum_to_its_own_eq_6(x64):
    rng = np.random.default_rng(3)
    x = (rng.uniform(size=(4, 10, 6)) < 0.5).astype(np.float64)
    w = rng.uniform(0.1, 0.6, size=(6, 4))  # positive: du/dt > 0 at every spike
    spikes = ed.srm_layer(jnp.asarray(x), jnp.asarray(w), **TAUS)
    dx, _ = _dense_grads(jnp.asarray(x), jnp.asarray(w), jnp.ones_like(spikes))
    # The loss is the spike count: dL/ds = 1, so dL/dt_k = -1 at every spike; the returned
    # cotangent is -dL/dt_x, whose sum over the inputs is minus that of the spikes' dL/dt.
    assert spikes.sum() > 10
    np.testing.assert_allclose(-np.sum(dx), _output_spike_time_gradients(spikes), rtol=1e-10)


@pytest.mark.parametrize("pool", ["none", "adjusted", "max", "average"])
def test_the_gradient_sum_is_the_same_in_every_layer_eq_8(x64, pool):
    rng = np.random.default_rng(4)
    images = rng.uniform(0.2, 1.0, size=(2, 8, 6, 6, 1))
    w1 = rng.uniform(0.05, 0.3, size=(3, 3, 1, 4))
    w2 = rng.uniform(0.05, 0.4, size=(6 * 6 * 4 // (1 if pool == "none" else 4), 3))

    def pooled(s):
        if pool == "adjusted":
            return ed.adjusted_avg_pool(s, 2)
        if pool == "max":
            return jax.lax.reduce_window(
                s, -jnp.inf, jax.lax.max, (1, 1, 2, 2, 1), (1, 1, 2, 2, 1), "VALID"
            )
        if pool == "average":
            return jnp.mean(s.reshape(*s.shape[:2], 3, 2, 3, 2, 4), axis=(3, 5))
        return s

    def network(images, w1, w2):
        hidden = ed.srm_layer(images, w1, synapse=ed.conv(padding=1), **TAUS)
        flat = pooled(hidden).reshape(2, 8, -1)
        return hidden, ed.srm_layer(flat, w2, **TAUS)

    hidden, out = network(jnp.asarray(images), jnp.asarray(w1), jnp.asarray(w2))
    assert out.sum() > 5 and hidden.sum() > 20
    d_images = jax.grad(lambda v: jnp.sum(network(v, jnp.asarray(w1), jnp.asarray(w2))[1]))(
        jnp.asarray(images)
    )
    # The inputs' time gradients (minus the returned cotangent) against the output spikes'.
    ratio = -float(np.sum(d_images)) / _output_spike_time_gradients(out)
    if pool == "average":
        assert ratio < 0.9  # plain average pooling loses what falls on silent positions
    else:
        assert ratio == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("kind", ["exp", "psp"])
@pytest.mark.parametrize("w_early", [0.6, -0.3])
def test_the_sign_of_an_inputs_time_gradient_eq_11(x64, kind, w_early):
    # An early input (step 0, on the falling side of the PSP at the output spike) and one at
    # step 8 that makes the neuron fire there (distance 0, the rising side).
    x = np.zeros((1, 10, 2))
    x[0, 0, 0], x[0, 8, 1] = 1.0, 1.0
    w = np.array([[w_early], [4.0]])
    spikes = ed.srm_layer(jnp.asarray(x), jnp.asarray(w), **TAUS, grad_kernel=kind)
    assert np.flatnonzero(spikes[0, :, 0]).tolist() == [8]
    ct = np.zeros((1, 10, 1))
    ct[0, 8, 0] = -1.0  # dL/dt_k = +1: the spike should come later
    dx, _ = _dense_grads(jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct), grad_kernel=kind)
    dt_early, dt_late = -float(dx[0, 0, 0]), -float(dx[0, 8, 1])
    assert np.sign(dt_late) == 1.0  # the rising side: sign(dL/dt_k) sign(w)
    expected = np.sign(w_early) * (1.0 if kind == "exp" else -1.0)  # psp: reversed when falling
    assert np.sign(dt_early) == expected


def test_adjusted_average_pooling_splits_a_windows_gradient_over_its_spikes():
    x = jnp.zeros((1, 1, 4, 4, 1)).at[0, 0, 0, 0, 0].set(1.0).at[0, 0, 0, 1, 0].set(1.0)
    pooled, pullback = jax.vjp(lambda v: ed.adjusted_avg_pool(v, 2), x)
    np.testing.assert_allclose(pooled[0, 0, :, :, 0], [[0.5, 0.0], [0.0, 0.0]])
    (g,) = pullback(jnp.ones_like(pooled))
    # rho(0.5) = 1/(4 * 0.5) = 1/2 on each of the window's positions; silent windows get 0.
    np.testing.assert_allclose(g[0, 0, :2, :2, 0], [[0.5, 0.5], [0.5, 0.5]])
    assert float(jnp.abs(g[0, 0, 2:]).sum()) == 0.0
    assert float(jnp.sum(g * x)) == pytest.approx(1.0)  # the spikes keep the window's sum


def test_count_loss_is_the_authors_one_sided_count_error():
    spikes = jnp.zeros((2, 5, 3)).at[0, :4, 0].set(1.0).at[0, :2, 1].set(1.0).at[1, :, 2].set(1.0)
    labels = jnp.array([0, 1])
    loss, grad = jax.value_and_grad(
        lambda s: ed.count_loss(s, labels, desired_count=5, undesired_count=1)
    )(spikes)
    # Sample 0: label 0 fires 4 of 5 (delta -1/5), class 1 fires 2 > 1 (+1/5), class 2 none
    # (0 < 1, not penalised). Sample 1: label 1 silent (-1), class 2 fires 5 (+4/5).
    deltas = np.array([[-0.2, 0.2, 0.0], [0.0, -1.0, 0.8]])
    assert float(loss) == pytest.approx(5 / 2 * np.sum(deltas**2))
    np.testing.assert_allclose(grad, np.broadcast_to(deltas[:, None, :], (2, 5, 3)), atol=1e-6)


def test_a_conv_pool_dense_count_network_trains_under_jit_with_traced_labels():
    rng = np.random.default_rng(5)
    images = jnp.asarray(rng.uniform(size=(4, 5, 8, 8, 1)), jnp.float32)
    params = {
        "conv": jnp.asarray(rng.normal(0.3, 0.2, size=(5, 5, 1, 6)), jnp.float32),
        "dense": jnp.asarray(rng.normal(0.2, 0.2, size=(96, 10)), jnp.float32),
    }

    @jax.jit
    def loss_fn(params, images, labels):
        hidden = ed.srm_layer(images, params["conv"], synapse=ed.conv(padding=2), **TAUS)
        flat = ed.adjusted_avg_pool(hidden, 2).reshape(4, 5, -1)
        out = ed.srm_layer(flat, params["dense"], **TAUS, labels=labels)
        return ed.count_loss(out, labels, desired_count=5, undesired_count=1)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, images, jnp.array([1, 3, 5, 7]))
    assert bool(jnp.isfinite(loss)) and loss.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(g))) and g.dtype == jnp.float32 for g in grads.values())
    assert float(jnp.abs(grads["dense"]).sum()) > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ed.psp_kernel(4, tau_m=3.0, tau_s=3.0), "tau_m and tau_s must differ"),
        (lambda: ed.psp_kernel(4, tau_m=1.0, tau_s=3.0), "tau_m must be a number > 1"),
        (lambda: ed.grad_kernel(4, tau_m=5.0, tau_s=3.0, tau_grad=0.5), "tau_grad"),
        (lambda: ed.grad_kernel(4, **TAUS, kind="sigmoid"), "grad_kernel must be one of"),
        (lambda: ed.adjusted_avg_pool(jnp.ones((1, 1, 5, 4, 1)), 2), "divisible by window=2"),
        (lambda: ed.adjusted_avg_pool(jnp.ones((1, 1, 4, 4, 1)), 0), "window"),
        (
            lambda: ed.srm_layer(jnp.ones((2, 3, 4)), jnp.ones((4, 3)), **TAUS, labels=[0, 3]),
            r"labels must lie in \[0, 3\)",
        ),
        (lambda: ed.srm_layer(jnp.ones((2, 3, 4)), jnp.ones((4, 3)), synapse=3, **TAUS), "synapse"),
        (
            lambda: ed.srm_layer(jnp.ones((2, 3, 4)), jnp.ones((4, 3)), **TAUS, supervise="first"),
            "supervise must be one of",
        ),
        (lambda: ed.conv(stride=0), "stride"),
        (
            lambda: ed.count_loss(
                jnp.ones((2, 3, 4)), jnp.array([0, 4]), desired_count=5, undesired_count=1
            ),
            r"labels must lie in \[0, 4\)",
        ),
    ],
)
def test_bad_arguments_name_the_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_weight_standardisation_centres_and_scales_each_output_channel():
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 4, 5)) * 2 + 1
    gain, offset = jnp.arange(1.0, 6.0), jnp.full(5, 0.5)
    w = np.asarray(ed.standardize(kernel, gain, offset)).reshape(-1, 5)
    np.testing.assert_allclose(w.mean(0), 0.5, atol=1e-5)
    np.testing.assert_allclose(w.std(0, ddof=1), np.arange(1.0, 6.0), rtol=1e-3)


def _net(architecture="4C3p1-P2-12", learn_scale=True, **options):
    from flax import nnx

    neurons = {**TAUS, "v_th": 1.0, **options}
    return ed.EventDrivenNet(
        architecture,
        input_shape=(8, 8, 1),
        num_classes=3,
        steps=6,
        neurons=neurons,
        rngs=nnx.Rngs(0),
        learn_scale=learn_scale,
    )


def test_the_initialisation_finds_each_layers_target_rate():
    net = _net()
    images = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1))
    scales = ed.initialize_scales(net, images, avg_spike_init=1.0)
    assert len(scales) == 3 and all(0.05 <= s <= 500 for s in scales)
    # The first layer's spikes over the last third of the window, per neuron, meet the target
    # 1.2 * 1.0 * (6 - 4) / 6 = 0.4 to within the search's last step.
    spikes = net.layers[0](net.encode(images), net.neurons)
    rate = float(jnp.mean(jnp.sum(spikes[:, 4:], axis=1)))
    assert 0.25 < rate < 0.6
    out = net(images, jnp.array([0, 1, 2] * 5 + [0]))
    assert out.shape == (16, 6, 3) and set(np.unique(out)) <= {0.0, 1.0}


def test_the_trainer_hands_labels_to_a_model_that_takes_them():
    from jsnn import losses

    net = _net()
    seen = []

    class Spy:
        takes_labels = True

        def __call__(self, images, labels):
            seen.append(labels)
            return net(images, labels)

    batch = {"image": jnp.ones((2, 8, 8, 1)), "label": jnp.array([2, 0])}
    losses.batch_loss(Spy(), batch, losses.get("mean_ce"))
    np.testing.assert_array_equal(seen[0], [2, 0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: _net("4C3p1-P3-12"), "does not pool by 3"),
        (lambda: _net("4C3-x-12"), "is not nCk"),
        (lambda: _net("12-4C3"), "conv after a dense"),
        (lambda: ed.EventDriven(tau_m=2.0, tau_s=2.0), "tau_m and tau_s must differ"),
        (lambda: ed.EventDriven(supervise="first"), "supervise"),
        (lambda: ed.EventDriven(input_grad_scale=0.0), "input_grad_scale"),
    ],
)
def test_bad_networks_and_options_name_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_digits_recipe_is_the_quickstarts_event_driven_run():
    # test_quickstart.py trains this config to >= 97%.
    from jsnn import recipes
    from jsnn.config import Config

    recipe = recipes.EVENT_DRIVEN["event_driven_digits"]
    assert recipe.override({"train.workdir": "runs/quickstart"}) == Config().override(
        {"method.name": "event_driven"}
    )


def test_the_experiment_trains_mnist_on_mock_data(tmp_path, capsys):
    import tensorflow_datasets as tfds

    from experiments import event_driven

    flags = ["--dataset", "mnist", "--train.epochs", "1", "--train.batch-size", "4"]
    flags += ["--train.progress", "false", "--train.tensorboard", "false"]
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = event_driven.main([*flags, "--train.workdir", str(tmp_path)])
    assert 0.0 <= metrics["accuracy"] <= 1.0
    out = capsys.readouterr().out
    assert "event-driven initialisation" in out and "final test accuracy" in out
    from jsnn.config import Config

    config = Config.from_json((tmp_path / "config.json").read_text())
    assert config.method.architecture == "15C5-P2-40C5-P2-300" and config.train.lr == 5e-4


@pytest.mark.parametrize(
    ("recipe", "shape", "layers"),
    [
        ("event_driven_mnist", (28, 28, 1), 4),
        ("event_driven_fashion_mnist", (28, 28, 1), 4),
        ("event_driven_nmnist", (34, 34, 2), 3),
    ],
)
def test_the_papers_networks_build_for_their_data(recipe, shape, layers):
    from flax import nnx

    from jsnn import recipes

    method = recipes.EVENT_DRIVEN[recipe].method
    net = ed.EventDrivenNet(
        method.architecture,
        input_shape=shape,
        num_classes=10,
        steps=2,
        neurons=method.neuron_options(),
        rngs=nnx.Rngs(0),
        learn_scale=method.learn_scale,
    )
    assert len([stage for stage in net.stages() if stage[0] != "pool"]) == layers
    assert isinstance(net.output.gain, nnx.Param)


def test_the_cifar_recipes_keep_the_standardisation_scales_fixed():
    # The authors' norm_grad 0 (their CIFAR configs): gain and offset are state, not
    # parameters the optimizer moves. (The VGG itself is too large to build in a unit test.)
    from flax import nnx

    from jsnn import recipes

    for name in ("event_driven_cifar10", "event_driven_cifar100"):
        method = recipes.EVENT_DRIVEN[name].method
        assert method.architecture.count("C3") == 8 and not method.learn_scale
        net = _net(learn_scale=method.learn_scale)
        assert isinstance(net.output.gain, ed.ScaleConstant)
        assert not any(
            "gain" in str(path) for path, _ in nnx.to_flat_state(nnx.state(net, nnx.Param))
        )
