"""The model zoo (``jsnn.models``): every model and its ANN twin, trained one step on tiny inputs,
plus the published layouts (weight-layer counts, widths, Table S1 depths) and the helpers.

Compilation dominates on CPU: a model is compiled twice (forward + backward of the spiking
model and of its twin), at XLA's lowest backend optimisation level, in a small thread pool that
starts with the slowest models, so the compilations run on all cores while the other tests run.
Models that only repeat a sibling's blocks more often (``TRACED_ONLY``) are traced abstractly
(``jax.eval_shape``: the output and every gradient, shapes only) unless the environment sets
``JSNN_TEST_ALL_MODELS=1``, which compiles and runs them too (about three more CPU minutes).
Everything else traces abstractly or runs a tiny model.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jsnn
from jsnn import models
from jsnn.losses import mean_output_cross_entropy
from jsnn.models import common
from jsnn.models.common import NeuronSlot

BATCH, STEPS, CLASSES = 2, 2, 3
# Spatial size per model: the smallest the layout takes (flattening nets have a fixed size, the
# VGGs pool 5 times); the other global-pooling ones run on 16x16.
SIZES = {"cifarnet": 32, "vgg11": 32, "vgg16": 32, "digits_net": 8, "mnist_net": 28, "fdg_toy": 8}
CHANNELS = {"vgg11": 2, "digits_net": 1, "mnist_net": 1, "fdg_toy": 1}
# Models whose layout only repeats the blocks of a sibling more often are traced abstractly
# (the output's and every gradient's shape; nothing compiles) while their sibling trains for
# real: compiling them would add minutes of CPU time and run no other code.
TRACED_ONLY = (
    {}
    if os.environ.get("JSNN_TEST_ALL_MODELS") == "1"
    else {
        "sew_resnet34": "sew_resnet14",
        "preact_resnet32": "preact_resnet20",
        "preact_resnet44": "preact_resnet20",
        "preact_resnet56": "preact_resnet20",
        "preact_resnet110": "preact_resnet20",
        "vgg16": "vgg11",
    }
)
# The longest jobs go to the pool first, so that none of them is left running alone at the end.
SLOWEST_FIRST = ("resnet34", "preact_resnet110", "resnet18_modified", "preact_resnet18")
EXPECTED_NAMES = (
    "resnet18_modified",
    "resnet19",
    "resnet34",
    "sew_resnet14",
    "sew_resnet34",
    "preact_resnet18",
    "preact_resnet20",
    "preact_resnet32",
    "preact_resnet44",
    "preact_resnet56",
    "preact_resnet110",
    "vgg11",
    "vgg16",
    "cifarnet",
    "digits_net",
    "mnist_net",
    "fdg_toy",
)


def _fast_compile_options() -> dict:
    """XLA options that cut CPU compile time about in half; the second one does not exist in
    every jaxlib, so it is dropped where the compiler rejects it."""
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    try:
        jax.jit(lambda x: x + 1, compiler_options=options)(1.0)
    except jax.errors.JaxRuntimeError:
        del options["xla_cpu_use_fusion_emitters"]
    return options


FAST = _fast_compile_options()


def _rngs(seed: int = 0) -> nnx.Rngs:
    """Random streams on rbg keys: their initialisers compile about twice as fast as
    threefry's, and building the models is a good part of this file's time."""
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _image(name: str, seed: int = 0, steps: int | None = None) -> jax.Array:
    size, channels = SIZES.get(name, 16), CHANNELS.get(name, 3)
    shape = (BATCH, size, size, channels) if steps is None else (BATCH, steps, size, size, channels)
    return jax.random.normal(jax.random.key(seed), shape)


@functools.cache
def _spiking(name: str) -> models.Classifier:
    return models.get(name, num_classes=CLASSES, steps=STEPS, rngs=_rngs(0))


def _train_step(model: nnx.Module, x: jax.Array, labels: jax.Array, *, run: bool = True):
    """Loss, output, gradients (``nnx.value_and_grad``) and the batch statistics after one
    training-mode forward pass: compiled and run, or (``run=False``) only their shapes."""
    graphdef, state = nnx.split(model)

    def loss_fn(model, x, labels):
        out = model(x)
        per_step = out if out.ndim == 3 else out[:, None]  # an ANN output is one "step"
        return mean_output_cross_entropy(per_step, labels), out

    def step(state, x, labels):
        model = nnx.merge(graphdef, state)
        (loss, out), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, labels)
        return loss, out, grads, nnx.state(model, nnx.BatchStat)

    if not run:
        return jax.eval_shape(step, state, x, labels)
    return jax.jit(step, compiler_options=FAST)(state, x, labels)


def _shape(model: nnx.Module, x: jax.Array, method: str = "__call__") -> jax.ShapeDtypeStruct:
    """The output of ``model.method(x)``, traced abstractly (nothing compiles or runs) on a
    merged copy, so that training-mode BN updates stay inside the trace."""
    graphdef, state = nnx.split(model)
    return jax.eval_shape(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x), state, x)


def _assert_gradients(grads, params, *, finite: bool = True):
    """One gradient of the parameter's shape for every ``nnx.Param``, finite where computed."""
    flat = dict(nnx.to_flat_state(grads))
    shapes = {path: param.get_value().shape for path, param in nnx.to_flat_state(params)}
    assert {path: grad.get_value().shape for path, grad in flat.items()} == shapes
    for path, grad in flat.items():
        assert not finite or np.all(np.isfinite(np.asarray(grad.get_value()))), path


def _layers(model: nnx.Module, kind: type) -> list:
    return [module for _, module in nnx.iter_modules(model) if isinstance(module, kind)]


def _weight_layers(model: nnx.Module) -> int:
    """Convolutions wider than 1x1 plus fully connected layers: how ResNet depths are counted
    (projection shortcuts excluded)."""
    convs = [c for c in _layers(model, nnx.Conv) if c.kernel.shape[:2] != (1, 1)]
    return len(convs) + len(_layers(model, nnx.Linear))


# ----------------------------------------------------------------------------- every model


def test_registry_names_and_unknown_name():
    assert models.names() == EXPECTED_NAMES
    with pytest.raises(ValueError, match=r"'resnet50' is not known.*'resnet18_modified'"):
        models.get("resnet50", rngs=_rngs(0))
    assert isinstance(models.get("DIGITS_NET", rngs=_rngs(0)), models.ConvNet)


@dataclasses.dataclass
class Run:
    """One model trained one step from temporal input, and its twin from static input."""

    snn: models.Classifier
    snn_step: tuple
    static_shape: tuple[int, ...]
    twin: models.Classifier
    twin_step: tuple


def _run(name: str) -> Run:
    snn = _spiking(name)
    labels = jnp.arange(BATCH) % CLASSES
    run = name not in TRACED_ONLY
    snn_step = _train_step(snn, _image(name, steps=STEPS), labels, run=run)
    static_shape = _shape(snn, _image(name)).shape
    twin = models.ann_twin(name, num_classes=CLASSES, steps=STEPS, rngs=_rngs(1))
    twin_step = _train_step(twin, _image(name), labels, run=run)
    return Run(snn, snn_step, static_shape, twin, twin_step)


@pytest.fixture(scope="module")
def runs(request) -> dict[str, Future]:
    """The models the selected tests ask for, trained in a thread pool (compilation releases
    the GIL); a test waits for its own model only."""
    wanted = dict.fromkeys(
        item.callspec.params["name"]
        for item in request.session.items
        if "runs" in item.fixturenames and hasattr(item, "callspec")
    )
    first = [name for name in SLOWEST_FIRST if name in wanted]
    order = first + [name for name in wanted if name not in first]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pool = ThreadPoolExecutor(max_workers=min(4, cores or 1))
    yield {name: pool.submit(_run, name) for name in order}
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", models.names())
def test_spiking_model_trains_on_temporal_and_static_input(name, runs):
    run = runs[name].result()
    loss, out, grads, _ = run.snn_step
    assert out.shape == (BATCH, STEPS, CLASSES)
    # Static input takes the same path after direct encoding to the model's steps.
    assert run.static_shape == (BATCH, STEPS, CLASSES)
    computed = name not in TRACED_ONLY
    _assert_gradients(grads, nnx.state(run.snn, nnx.Param), finite=computed)
    if computed:
        assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(out)))
        # The input layer's gradient is not zero: the surrogate carries it through every neuron.
        (first,) = [
            g.get_value()
            for _, g in nnx.to_flat_state(grads)
            if g.get_value().ndim == 4 and g.get_value().shape[2] == run.snn.in_channels
        ]
        assert np.any(np.asarray(first) != 0)


@pytest.mark.parametrize("name", models.names())
def test_ann_twin_trains_and_initialises_the_spiking_model(name, runs):
    run = runs[name].result()
    loss, out, grads, _ = run.twin_step
    assert not run.twin.spiking
    assert out.shape == (BATCH, CLASSES)
    computed = name not in TRACED_ONLY
    assert not computed or np.isfinite(float(loss))
    _assert_gradients(grads, nnx.state(run.twin, nnx.Param), finite=computed)
    with pytest.raises(ValueError, match=r"ANN twin.*static"):
        _shape(run.twin, _image(name, steps=STEPS))

    snn = nnx.clone(run.snn)  # a copy: the cached model stays as built
    models.init_from_ann(snn, run.twin)
    snn_params = dict(nnx.to_flat_state(nnx.state(snn, nnx.Param)))
    for path, weight in nnx.to_flat_state(nnx.state(run.twin, nnx.Param)):
        np.testing.assert_array_equal(snn_params[path].get_value(), weight.get_value())


# ---------------------------------------------------------------------- published layouts


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("resnet18_modified", 20),
        ("resnet19", 19),
        ("resnet34", 34),
        ("sew_resnet14", 14),
        ("sew_resnet34", 34),
        ("preact_resnet18", 18),
        ("preact_resnet20", 20),
        ("preact_resnet32", 32),
        ("preact_resnet44", 44),
        ("preact_resnet56", 56),
        ("preact_resnet110", 110),
    ],
)
def test_resnet_depth_counts_weight_layers(name, depth):
    assert _weight_layers(_spiking(name)) == depth


def test_modified_resnet18_layout():
    """Dspike authors' layout: 3 stem convs + 16 block convs + 1 FC, three 1x1 avg-down
    shortcut convs, a 2x2 map on 32x32 inputs."""
    model = _spiking("resnet18_modified")
    convs = _layers(model, nnx.Conv)
    assert sum(c.kernel.shape[:2] == (3, 3) for c in convs) == 19
    assert sum(c.kernel.shape[:2] == (1, 1) for c in convs) == 3
    assert len(_layers(model, nnx.Linear)) == 1
    assert [unit.conv.kernel.shape[-1] for unit in model.stem] == [64, 64, 64]
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    shortcuts = [block.shortcut for stage in model.stages for block in stage]
    kinds = [None if s is None else s.kind for s in shortcuts]
    assert kinds == [None, None, "avg_down", None, "avg_down", None, "avg_down", None]
    features = _shape(model, jnp.zeros((BATCH, 32, 32, 3)), "feature_map")
    assert features.shape == (BATCH, STEPS, 2, 2, 512)


def test_cifarnet_widths():
    """128C3-256C3-P2-512C3-P2-1024C3-512C3-1024-512-classes on 32x32 inputs."""
    model = _spiking("cifarnet")
    convs = _layers(model, nnx.Conv)
    assert [c.kernel.shape for c in convs] == [
        (3, 3, 3, 128),
        (3, 3, 128, 256),
        (3, 3, 256, 512),
        (3, 3, 512, 1024),
        (3, 3, 1024, 512),
    ]
    linears = [layer.kernel.shape for layer in _layers(model, nnx.Linear)]
    assert sorted(linears) == sorted([(8 * 8 * 512, 1024), (1024, 512), (512, CLASSES)])
    assert model.layout.index("P") == 2 and model.layout[4] == "P"


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_preact_resnet_table_s1(depth):
    """DSR supplement Table S1: conv 16, then n = (depth - 2) / 6 blocks at 16, 32, 64."""
    model = _spiking(f"preact_resnet{depth}")
    n = (depth - 2) // 6
    assert [len(stage) for stage in model.stages] == [n, n, n]
    assert model.stem.kernel.shape[-1] == 16
    for stage, width in zip(model.stages, (16, 32, 64), strict=True):
        assert all(b.conv1.kernel.shape[-1] == b.conv2.kernel.shape[-1] == width for b in stage)
    assert model.output_act is None  # DSR's output neuron is off by default


def test_preact_dsr_head_and_optional_output_neuron():
    model = models.preact_resnet20(num_classes=CLASSES, output_neuron=True, rngs=_rngs(0))
    assert isinstance(model.output_act.neuron, jsnn.LIF)
    assert model.fc_norm.gamma.shape == (CLASSES,)  # BN1d between the FC and the neuron
    assert isinstance(model.pool_act.neuron, jsnn.LIF)  # the neuron after pooling


def test_vgg_layouts():
    vgg11, vgg16 = _spiking("vgg11"), _spiking("vgg16")
    widths = [c.kernel.shape[-1] for c in _layers(vgg11, nnx.Conv)]
    assert widths == [64, 128, 256, 256, 512, 512, 512, 512]
    assert len(_layers(vgg16, nnx.Conv)) == 13
    assert vgg11.layout.count("P") == vgg16.layout.count("P") == 5
    assert all(c.bias is not None for c in _layers(vgg11, nnx.Conv))  # DSR's convs have biases
    with_head = models.vgg11(num_classes=CLASSES, dropout=0.1, output_neuron=True, rngs=_rngs(0))
    assert with_head.dropout.rate == 0.1 and with_head.output_act is not None


def test_conv_init_is_kaiming_normal_fan_out():
    """The Dspike authors' init: conv weights ~ N(0, 2 / (k^2 C_out))."""
    kernel = np.asarray(_spiking("resnet18_modified").stages[3][1].unit1.conv.kernel[...])
    assert kernel.shape == (3, 3, 512, 512)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 512)), rtol=0.01)
    assert abs(kernel.mean()) < 1e-3


# ----------------------------------------------------------------------------- the blocks


def _spikes(shape, seed=0) -> jax.Array:
    return jax.random.bernoulli(jax.random.key(seed), 0.3, shape).astype(jnp.float32)


def _block(block: nnx.Module, x: jax.Array, steps: int) -> jax.Array:
    graphdef, state = nnx.split(block)
    apply = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, steps), compiler_options=FAST)
    return apply(state, x)


def test_spiking_block_outputs_spikes_and_sew_block_adds_them():
    steps, folded = 2, (2 * 2, 6, 6, 4)
    x = _spikes(folded)
    layer = dict(shortcut="conv", neuron=jsnn.LIF, norm=jsnn.TDBatchNorm, rngs=_rngs(0))
    spiking = models.BasicBlock(4, 4, 1, **layer)
    assert set(np.unique(np.asarray(_block(spiking, x, steps)))) <= {0.0, 1.0}
    sew = models.SEWBlock(4, 4, 1, **layer)
    added = np.asarray(_block(sew, x, steps)) - np.asarray(x)  # identity: out = SN(...) + x
    assert set(np.unique(added)) <= {0.0, 1.0}
    down = models.SEWBlock(4, 8, 2, **layer)
    out = np.asarray(_block(down, x, steps))
    assert out.shape == (4, 3, 3, 8) and set(np.unique(out)) <= {0.0, 1.0, 2.0}


def test_avg_down_shortcut_pools_partial_windows_like_ceil_mode():
    """AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) before the 1x1 conv (avg-down)."""
    shortcut = models.Shortcut(1, 1, 2, "avg_down", norm=lambda c: lambda x: x, rngs=_rngs(0))
    shortcut.conv.kernel[...] = jnp.ones((1, 1, 1, 1))
    x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    image = np.arange(25.0).reshape(5, 5)
    expected = np.array(
        [[image[i : i + 2, j : j + 2].mean() for j in (0, 2, 4)] for i in (0, 2, 4)]
    )
    np.testing.assert_allclose(np.asarray(shortcut(x))[0, :, :, 0], expected)


def test_neuron_slot_unfolds_the_folded_batch_and_relu_in_the_twin():
    # The zoo's internal neuron slot: folded [B*T, ...] -> [B, T, ...] -> neuron -> folded, the
    # mirror image of jsnn.TimeDistributed (the public adapter), and kept out of the public API.
    x = jax.random.normal(jax.random.key(0), (2 * 3, 5))  # B=2, T=3, folded batch-major
    layer = NeuronSlot(jsnn.LIF)
    expected = layer.neuron(x.reshape(2, 3, 5)).reshape(6, 5)
    np.testing.assert_array_equal(layer(x, 3), expected)
    np.testing.assert_array_equal(NeuronSlot(None)(x, 3), jax.nn.relu(x))
    with pytest.raises(TypeError, match=r"nnx\.Module"):
        NeuronSlot(lambda: jax.nn.relu)
    assert "NeuronSlot" not in models.__all__ and "NeuronSlot" not in common.__all__
    assert not hasattr(models, "NeuronSlot") and not hasattr(models, "Neurons")
    # The slot keeps its attribute name, so the models' state paths are unchanged.
    model = models.digits_net(num_classes=CLASSES, steps=STEPS, rngs=_rngs(0))
    assert isinstance(model.units[0].act, NeuronSlot)
    paths = {path for path, _ in nnx.to_flat_state(nnx.state(model))}
    assert ("units", 0, "act", "neuron", "v_th") in paths


# ------------------------------------------------------------ inputs, time and BN behaviour


@nnx.jit
def _forward(model, x):
    return model(x)


def test_static_input_is_direct_encoded_and_temporal_input_sets_t():
    model = models.digits_net(num_classes=CLASSES, steps=STEPS, rngs=_rngs(0))
    image = _image("digits_net")
    np.testing.assert_array_equal(
        _forward(model, image), _forward(model, jsnn.encoding.direct(image, STEPS))
    )
    longer = _forward(model, _image("digits_net", steps=5))
    assert longer.shape == (BATCH, 5, CLASSES)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (jnp.zeros((2, 8, 8)), r"static \[B, H, W, C\] or temporal"),
        (jnp.zeros((2, 8, 8, 3)), "1 channels"),
        (jnp.zeros((2, 2, 9, 9, 1)), r"8x8 images"),
        (jnp.zeros((2, 8, 8, 1), jnp.int32), "floating-point"),
    ],
)
def test_bad_inputs_name_what_was_expected(x, message):
    model = models.digits_net(rngs=_rngs(0))
    with pytest.raises((ValueError, TypeError), match=message):
        _shape(model, x)


def test_batch_statistics_update_in_train_mode_only():
    model = models.digits_net(num_classes=CLASSES, steps=STEPS, rngs=_rngs(0))
    norm = model.units[0].norm
    image = 3.0 + _image("digits_net")
    _forward(model, image)
    mean = np.asarray(norm.mean[...])
    assert np.all(mean != 0) and np.all(np.asarray(norm.var[...]) != 1)
    model.eval()
    out = _forward(model, image)
    np.testing.assert_array_equal(norm.mean[...], mean)
    model.train()
    assert not np.allclose(out, _forward(model, image))  # batch statistics differ from running


@pytest.mark.parametrize(
    ("options", "check"),
    [
        (
            dict(neuron=models.neuron_factory("if", v_th=1.0, reset="soft")),
            lambda m: (
                float(m.units[0].act.neuron.decay) == 1.0 and m.units[0].act.neuron.reset == "soft"
            ),
        ),
        (
            dict(neuron=models.neuron_factory("plif", decay=0.4)),
            lambda m: np.isclose(float(m.units[0].act.neuron.decay), 0.4),
        ),
        (
            dict(norm=jsnn.TDBatchNorm.time_folded),
            lambda m: m.units[0].norm.scale == 1.0,
        ),
        (
            dict(neuron=models.neuron_factory(surrogate="arctan")),
            lambda m: isinstance(
                m.units[0].act.neuron.surrogate.get_value(), jsnn.surrogate.ArcTan
            ),
        ),
    ],
    ids=["if-soft", "plif", "time-folded-bn", "arctan"],
)
def test_neuron_and_norm_configurations_train(options, check):
    model = models.mnist_net(num_classes=CLASSES, steps=STEPS, rngs=_rngs(0), **options)
    assert check(model)
    labels = jnp.arange(BATCH) % CLASSES
    loss, out, grads, _ = _train_step(model, _image("mnist_net"), labels)
    assert out.shape == (BATCH, STEPS, CLASSES) and np.isfinite(float(loss))
    _assert_gradients(grads, nnx.state(model, nnx.Param))
    if "plif" in str(options):
        decay_grads = [g for p, g in nnx.to_flat_state(grads) if p[-1] == "decay_logit"]
        assert len(decay_grads) == 3 and any(np.any(g.get_value() != 0) for g in decay_grads)


def test_default_configuration_is_dspike_lif_with_tdbn():
    model = _spiking("resnet19")
    neuron = model.stem[0].act.neuron
    assert isinstance(neuron, jsnn.LIF) and not neuron.learn_decay
    assert float(neuron.decay) == 0.25 and float(neuron.v_th[...]) == 0.5
    assert isinstance(neuron.surrogate.get_value(), jsnn.surrogate.Dspike)
    assert model.stem[0].norm.scale == 0.5  # tdBN: alpha * v_th
    twin = models.ann_twin("resnet19", rngs=_rngs(0))
    assert twin.stem[0].act.neuron is None and twin.stem[0].norm.scale == 1.0


# ------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(kind="srm"), ValueError, r"kind must be one of \('lif', 'if', 'plif'\)"),
        (dict(kind="if", decay=0.5), ValueError, "kind='if' has decay 1"),
        (dict(v_th=0.0), ValueError, "v_th must be finite and > 0"),
        (dict(reset="zero"), ValueError, "reset must be one of"),
        (dict(decay=1.5), ValueError, r"decay must lie in \(0, 1\]"),
        (dict(surrogate="spline"), ValueError, "surrogate name 'spline' is not known"),
        (dict(surrogate=3.0), TypeError, "surrogate must be"),
    ],
)
def test_neuron_factory_rejects_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        models.neuron_factory(**kwargs)


def test_norm_factory_kinds():
    # "tdbn": tdBN (Dspike Eq. 4-5), the normalised input scaled by alpha * v_th with alpha 1;
    # "bn": plain time-folded BN (DSR supplement C.2), scale 1 whatever v_th.
    assert models.NORM_KINDS == ("tdbn", "bn")
    for kind, v_th, scale in (("tdbn", 0.5, 0.5), ("tdbn", 0.3, 0.3), ("BN", 0.3, 1.0)):
        layer = models.norm_factory(kind, v_th=v_th)(4)
        assert isinstance(layer, jsnn.TDBatchNorm) and layer.gamma.shape == (4,)
        assert np.isclose(layer.scale, scale), (kind, v_th)
    assert models.norm_factory()(4).scale == 0.5  # the default is tdBN at the default v_th
    assert models.norm_factory("bn") == jsnn.TDBatchNorm.time_folded
    model = models.digits_net(
        num_classes=CLASSES, steps=STEPS, norm=models.norm_factory("tdbn", v_th=0.3), rngs=_rngs(0)
    )
    assert all(np.isclose(unit.norm.scale, 0.3) for unit in model.units)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="batchnorm"), r"kind must be one of \('tdbn', 'bn'\), got 'batchnorm'"),
        (dict(kind=None), r"kind must be one of \('tdbn', 'bn'\), got None"),
        (dict(v_th=0.0), "v_th must be a positive number, got 0.0"),
        (dict(v_th=float("nan")), "v_th must be a positive number, got nan"),
    ],
)
def test_norm_factory_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.norm_factory(**kwargs)


def test_neuron_factory_kinds():
    for kind, decay, learnt in (("lif", 0.25, False), ("IF", 1.0, False), ("plif", 0.5, True)):
        neuron = models.neuron_factory(kind)()
        assert np.isclose(float(neuron.decay), decay) and neuron.learn_decay is learnt


def test_init_from_ann_rejects_mismatches_and_keeps_plif_decay():
    twin = models.ann_twin("digits_net", num_classes=CLASSES, rngs=_rngs(1))
    features = twin.fc.kernel.shape[0]
    mismatch = rf"fc\.kernel: snn \({features}, 4\) vs ann \({features}, {CLASSES}\)"
    with pytest.raises(ValueError, match=mismatch):
        models.init_from_ann(models.digits_net(num_classes=4, rngs=_rngs(0)), twin)
    other = models.ann_twin("mnist_net", num_classes=CLASSES, rngs=_rngs(1))
    with pytest.raises(ValueError, match=r"hidden\.0\.kernel only in ann"):
        models.init_from_ann(models.digits_net(num_classes=CLASSES, rngs=_rngs(0)), other)
    snn = models.digits_net(num_classes=CLASSES, rngs=_rngs(0))
    with pytest.raises(ValueError, match="snn must be a spiking model"):
        models.init_from_ann(twin, snn)
    plif = models.digits_net(
        num_classes=CLASSES, neuron=models.neuron_factory("plif", decay=0.3), rngs=_rngs(0)
    )
    models.init_from_ann(plif, twin)
    np.testing.assert_array_equal(plif.fc.kernel[...], twin.fc.kernel[...])
    assert np.isclose(float(plif.units[0].act.neuron.decay), 0.3)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match=r"ANN twin .* uses ReLU"):
        models.digits_net(spiking=False, neuron=jsnn.LIF, rngs=_rngs(0))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        models.digits_net(steps=0, rngs=_rngs(0))
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        models.digits_net(num_classes=1.5, rngs=_rngs(0))
    with pytest.raises(ValueError, match="too small"):
        models.mnist_net(input_size=(8, 8), rngs=_rngs(0))
    with pytest.raises(ValueError, match="stem must be one of"):
        models.ResNet(
            stem="deep",
            widths=(8,),
            blocks=(1,),
            strides=(1,),
            num_classes=2,
            in_channels=1,
            rngs=_rngs(0),
        )
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['step'\]"):
        models.get("resnet19", step=6, rngs=_rngs(0))
    with pytest.raises(ValueError, match="dropout must lie in"):
        models.vgg11(dropout=1.0, rngs=_rngs(0))


# --------------------------------------------------------------------- remat and compute dtype

# XLA's CPU pipeline drops remat's optimisation barriers unless told not to (what the trainer
# does, jsnn.train.compiler_options); with them dropped the recomputation is merged away and
# the test would compare a model with itself.
REMAT_OPTIONS = {**FAST, "xla_disable_hlo_passes": "cse_barrier_expander"}


def test_remat_gives_the_same_loss_gradients_and_statistics():
    # A SEW ResNet: a stem conv unit and a block with a projection shortcut, both rematerialised.
    def model(**options):
        return models.ResNet(
            stem="cifar",
            widths=(4,),
            blocks=(1,),
            strides=(2,),
            block="sew",
            num_classes=CLASSES,
            in_channels=1,
            steps=STEPS,
            rngs=_rngs(0),
            **options,
        )

    x = _image("digits_net", steps=STEPS)
    labels = jnp.arange(BATCH) % CLASSES

    def step(model):
        graphdef, state = nnx.split(model)

        def run(state):
            model = nnx.merge(graphdef, state)
            loss_fn = lambda m: mean_output_cross_entropy(m(x), labels)  # noqa: E731
            loss, grads = nnx.value_and_grad(loss_fn)(model)
            return loss, grads, nnx.state(model, nnx.BatchStat)

        compiled = jax.jit(run, compiler_options=REMAT_OPTIONS).lower(state).compile()
        return compiled.as_text(), compiled(state)

    plain = step(model())[1]
    for remat in ("block", "conv"):
        hlo, got = step(model(remat=remat))
        assert "rematted_computation" in hlo  # the recomputation was compiled, not merged away
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), plain, got
        )


def test_dtype_option_computes_in_bfloat16_and_keeps_float32_parameters():
    model = models.digits_net(num_classes=CLASSES, steps=STEPS, dtype="bfloat16", rngs=_rngs(0))
    layers = _layers(model, nnx.Conv) + _layers(model, nnx.Linear)
    assert layers and all(layer.dtype == jnp.bfloat16 for layer in layers)
    params = nnx.state(model, nnx.Param)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    loss, out, grads, stats = _train_step(model, _image("digits_net"), jnp.arange(BATCH) % CLASSES)
    assert out.dtype == jnp.bfloat16 and np.isfinite(float(loss))
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(stats)} == {jnp.dtype("float32")}
    twin = models.ann_twin("digits_net", dtype=jnp.bfloat16, remat="block", rngs=_rngs(0))
    assert twin.fc.dtype == jnp.bfloat16 and twin.remat == "block"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(remat="all"), r"remat must be one of \('none', 'block', 'conv'\), got 'all'"),
        (dict(dtype="int8"), "dtype must be a floating-point dtype or None, got 'int8'"),
        (dict(dtype="half-ish"), "dtype must be a floating-point dtype or None"),
    ],
)
def test_remat_and_dtype_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        models.digits_net(rngs=_rngs(0), **options)


def test_convolutions_of_maps_smaller_than_the_kernel_are_patch_products():
    # XLA's CPU backend is ~15x slower on such maps; the zoo's conv computes them as a product
    # of the input's patches with the same kernel (same parameters, same results).
    layer = models.common.conv(8, 16, 3, bias=True, rngs=_rngs(0))
    layer.bias[...] = jnp.arange(16.0)

    def both(x, stride):
        want = jax.lax.conv_general_dilated(
            x,
            layer.kernel[...],
            (stride, stride),
            ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return layer(x), want + layer.bias[...]

    for size, stride in ((1, 1), (2, 2), (5, 1)):
        layer.strides = (stride, stride)
        x = jax.random.normal(jax.random.key(size), (3, size, size, 8))
        np.testing.assert_allclose(
            *jax.jit(both, static_argnums=1)(x, stride), rtol=1e-5, atol=1e-5
        )
        jaxpr = str(jax.make_jaxpr(lambda x: layer(x))(x))
        assert ("dot_general" in jaxpr) == (size < 3), (size, stride)
