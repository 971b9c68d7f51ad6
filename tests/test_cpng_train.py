"""CPNG as a training method (jsnn.methods.cpng.CPNG): the membrane statistics it measures, the
epoch-end hook applying Algorithm 1 to a live model, the config's method switch, resuming, and
the CIFAR recipes on tfds mock data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from experiments import cifar
from jsnn import recipes, run, surrogate, train
from jsnn.config import Config, parse_args
from jsnn.layers import LIF
from jsnn.methods import cpng
from jsnn.neuron import lif


def _config(workdir, **overrides) -> Config:
    fields = {"train.epochs": 2, "train.batch_size": 64, "train.progress": False}
    fields.update({"train.tensorboard": False, "method.name": "cpng"})
    return Config().override({"train.workdir": str(workdir), **fields, **overrides})


def _first_batch(dataset, size=64) -> dict:
    return {k: jnp.asarray(v) for k, v in dataset.train(batch_size=size, seed=0)[0].items()}


def test_lif_sows_the_mean_and_std_of_its_pre_spike_membrane():
    currents = jax.random.normal(jax.random.key(0), (4, 5, 7)) * 0.4 + 0.2
    layer = LIF(surrogate=surrogate.Triangular(1.0))
    layer.record_membrane = True
    spikes, sown = nnx.capture(layer, nnx.Intermediate)(currents)
    expected_spikes, u_pre = lif(
        currents, decay=0.25, v_th=0.5, surrogate=surrogate.Triangular(1.0), return_membrane=True
    )
    np.testing.assert_array_equal(spikes, expected_spikes)
    np.testing.assert_allclose(sown["membrane_mean"][0], jnp.mean(u_pre), rtol=1e-6)
    np.testing.assert_allclose(sown["membrane_std"][0], jnp.std(u_pre), rtol=1e-6)


def test_a_layer_called_twice_pools_its_calls():
    class Twice(nnx.Module):
        def __init__(self):
            self.neuron = LIF(surrogate=surrogate.Triangular(1.0))

        def __call__(self, x):
            return self.neuron(jnp.concatenate([self.neuron(x), 2 * x], axis=-1))

    x = jax.random.normal(jax.random.key(1), (3, 4, 6)) * 0.5 + 0.3
    model = Twice()
    (mean, std), *_ = cpng.membrane_stats(model, x).values()
    sg = surrogate.Triangular(1.0)
    first = lif(x, decay=0.25, v_th=0.5, surrogate=sg, return_membrane=True)
    second = lif(
        jnp.concatenate([first[0], 2 * x], -1),
        decay=0.25,
        v_th=0.5,
        surrogate=sg,
        return_membrane=True,
    )
    # The calls' moments weighted equally (the second call has twice the neurons: the pooling
    # is exact for equal sizes, as documented).
    means = jnp.array([jnp.mean(first[1]), jnp.mean(second[1])])
    stds = jnp.array([jnp.std(first[1]), jnp.std(second[1])])
    np.testing.assert_allclose(mean, jnp.mean(means), rtol=1e-6)
    pooled = jnp.sqrt(jnp.mean(stds**2 + (means - jnp.mean(means)) ** 2))
    np.testing.assert_allclose(std, pooled, rtol=1e-5)
    assert not model.neuron.record_membrane  # the model itself is left as it was


def test_membrane_stats_leave_the_batch_statistics_alone(tmp_path):
    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
    stats = cpng.membrane_stats(model, _first_batch(dataset)["image"])
    assert list(stats) == list(cpng.spiking_layers(model))
    after = nnx.state(model, nnx.BatchStat)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )


def _betas(model) -> dict[str, float]:
    layers = cpng.spiking_layers(model).items()
    return {name: float(layer.surrogate.get_value().beta) for name, layer in layers}


def test_the_hook_records_first_then_steepens_each_layer_to_its_own_minimum(tmp_path):
    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    batch = _first_batch(dataset)
    (hook,) = config.method.epoch_end(model, config)
    # First application (records NaN): chi recorded at beta 1, beta kept.
    first = hook(model, 0, batch)
    names = list(cpng.spiking_layers(model))
    assert _betas(model) == dict.fromkeys(names, 1.0)
    for name, layer in cpng.spiking_layers(model).items():
        assert float(layer.chi_record.get_value()) == pytest.approx(first[f"chi/{name}"])
    # Records below the current chi, by a different amount per layer: each layer's beta grows
    # until its chi (on the same batch, same membranes) is back at its own record.
    targets = {name: first[f"chi/{name}"] - 0.1 * (i + 1) for i, name in enumerate(names)}
    for name, layer in cpng.spiking_layers(model).items():
        layer.chi_record.set_value(jnp.float32(targets[name]))
    second = hook(model, 1, batch)
    betas = _betas(model)
    assert all(beta > 1.0 for beta in betas.values()) and len(set(betas.values())) == len(names)
    stats = cpng.membrane_stats(model, batch["image"])
    for name, (mean, std) in stats.items():
        reached = float(cpng.chi_of_moments(mean, std, 0.5, betas[name], "triangular"))
        assert reached == pytest.approx(targets[name], abs=2e-5)
        assert second[f"chi_min/{name}"] == pytest.approx(targets[name], abs=1e-6)
        assert second[f"beta/{name}"] == pytest.approx(betas[name])
    # A record below chi_limit is floored: chi is brought to the limit, not below it.
    name = names[0]
    cpng.spiking_layers(model)[name].chi_record.set_value(jnp.float32(0.05))
    third = hook(model, 2, batch)
    assert third[f"chi_min/{name}"] == 0.2
    mean, std = cpng.membrane_stats(model, batch["image"])[name]
    beta = _betas(model)[name]
    assert float(cpng.chi_of_moments(mean, std, 0.5, beta)) == pytest.approx(0.2, abs=2e-5)


def test_the_hook_needs_its_records_and_one_controllable_surrogate(tmp_path):
    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    batch = _first_batch(dataset, 8)
    plain = run.build_model(config.override({"method.name": "surrogate"}), dataset)
    with pytest.raises(ValueError, match="ChiRecord"):
        cpng.chi_control()(plain, 0, batch)
    model = run.build_model(config, dataset)
    next(iter(cpng.spiking_layers(model).values())).surrogate.set_value(surrogate.Sigmoid())
    with pytest.raises(ValueError, match="one surrogate kind"):
        cpng.chi_control()(model, 0, batch)
    with pytest.raises(ValueError, match="chi_limit"):
        cpng.chi_control(chi_limit=1.0)


def test_switching_to_cpng_brings_its_surrogate_unless_the_config_names_one():
    assert Config().model.surrogate == "dspike"
    assert Config().override({"method.name": "cpng"}).model.surrogate == "triangular"
    arctan = Config().override({"method.name": "cpng", "model.surrogate": "arctan"})
    assert arctan.model.surrogate == "arctan"
    assert Config.from_json(arctan.to_json()) == arctan
    flat = Config().override({"surrogate": "rectangular", "method": "cpng"})  # the old names
    assert flat.model.surrogate == "rectangular"
    config, _ = parse_args(["--method", "cpng"], recipes.DIGITS, description="", default="digits")
    assert config.model.surrogate == "triangular" and config.method == cpng.CPNG()
    # Back to Dspike: its surrogate comes with it.
    assert arctan.override({"method.name": "dspike"}).model.surrogate == "dspike"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model.surrogate": "dspike"}, r"model.surrogate in \('triangular'"),
        ({"model.spiking": False}, "model.spiking=True"),
        ({"method.chi_limit": 1.0}, "chi_limit"),
        ({"method.chi_limit": -0.1}, "chi_limit"),
        ({"method.lo": 0.0}, "lo"),
        ({"method.lo": 2.0, "method.hi": 1.0}, "lo must be below hi"),
        ({"method.tol": -1e-3}, "tol"),
    ],
)
def test_bad_cpng_configs_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        Config().override({"method.name": "cpng", **changes})


@pytest.mark.parametrize(
    ("name", "loss"), [("rectangular", "mean_ce"), ("arctan", "tet"), ("triangular", "tet")]
)
def test_cpng_trains_with_each_surrogate_and_the_tet_loss(tmp_path, name, loss):
    config = _config(tmp_path, **{"model.surrogate": name, "train.loss": loss})
    metrics = run.run(config)
    assert metrics["accuracy"] > 0.8
    records = [
        r for r in train.read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch_end"
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    layers = [key.partition("/")[2] for key in records[0] if key.startswith("beta/")]
    assert len(layers) == 2
    for record in records:
        for layer in layers:
            assert 0 < record[f"chi/{layer}"] < 1 and record[f"chi_min/{layer}"] >= 0.2
            assert record[f"beta/{layer}"] > 0
    assert {type(sg).__name__.lower() for sg in _surrogates(tmp_path, config)} == {name}
    assert (tmp_path / "chi.png").exists() and (tmp_path / "beta.png").exists()


def _surrogates(workdir, config):
    """The surrogates of the final checkpoint of the run in ``workdir``."""
    from jsnn.train.checkpoint import Checkpointer

    dataset = run.build_dataset(config)
    template = train.TrainState.create(
        run.build_model(config, dataset), train.optimizer(config.train, 1)
    )
    state, _ = Checkpointer(workdir, keep=2).restore(template)
    model = state.model()
    return [layer.surrogate.get_value() for layer in cpng.spiking_layers(model).values()]


class _Crash(Exception):
    pass


def test_a_crash_at_an_epoch_end_resumes_with_the_same_chi_and_beta(tmp_path):
    def trace(workdir):
        records = train.read_metrics(workdir / "metrics.jsonl")
        return [
            {k: v for k, v in r.items() if k not in ("kind", "cpng_seconds")}
            for r in records
            if r["kind"] == "epoch_end"
        ]

    def train_once(workdir, crash_at=None):
        # chi_limit 0.9 floors every layer from the second epoch on (its chi is about 0.75), so
        # beta moves there only if the first epoch's records survive the crash.
        changes = {"train.epochs": 3, "train.checkpoint_every": 10, "method.chi_limit": 0.9}
        config = _config(workdir, **changes)
        dataset = run.build_dataset(config)
        model = run.build_model(config, dataset)
        hooks = list(config.method.epoch_end(model, config))

        def crash(model, epoch, batch):
            if epoch == crash_at:
                raise _Crash

        train.fit(config.train, model, dataset, epoch_end=[*hooks, crash])
        return model

    straight = train_once(tmp_path / "straight")
    with pytest.raises(_Crash):  # after CPNG's hook of epoch 2, before that epoch's checkpoint
        train_once(tmp_path / "resumed", crash_at=1)
    resumed = train_once(tmp_path / "resumed")
    expected, found = trace(tmp_path / "straight"), trace(tmp_path / "resumed")
    assert len(found) == len(expected) == 3
    for a, b in zip(found, expected, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert all(0 < value < 1 for key, value in expected[1].items() if key.startswith("beta/"))
    for a, b in zip(
        cpng.spiking_layers(straight).values(), cpng.spiking_layers(resumed).values(), strict=True
    ):
        assert float(a.chi_record.get_value()) == pytest.approx(float(b.chi_record.get_value()))
        assert not math.isnan(float(a.chi_record.get_value()))


@pytest.mark.parametrize("recipe", ["cpng_vgg16_cifar100", "cpng_tet_resnet19_cifar10"])
def test_the_cpng_recipes_run_on_mock_cifar(tmp_path, capsys, recipe):
    # Two epochs of one step each: the first records chi, the second applies Algorithm 1.
    flags = ["--recipe", recipe, "--method", "cpng", "--T", "2", "--train.epochs", "2"]
    flags += [
        "--train.batch-size",
        "4",
        "--train.progress",
        "false",
        "--train.tensorboard",
        "false",
    ]
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = cifar.main([*flags, "--train.workdir", str(tmp_path)])
    assert 0.0 <= metrics["accuracy"] <= 1.0
    config = Config.from_json((tmp_path / "config.json").read_text())
    assert config.method == cpng.CPNG() and config.model.surrogate == "triangular"
    assert config.train.loss == ("tet" if "tet" in recipe else "mean_ce")
    records = [
        r for r in train.read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "epoch_end"
    ]
    spiking = {"cpng_vgg16_cifar100": 13, "cpng_tet_resnet19_cifar10": 18}[recipe]
    assert len(records) == 2 and len([k for k in records[1] if k.startswith("beta/")]) == spiking
    assert "CPNG beta" in capsys.readouterr().out
    assert (tmp_path / "chi.png").exists() and (tmp_path / "beta.png").exists()
