"""Dspike's Algorithm 1 in the trainer, initialisation from an ANN twin and Time Inheritance
Training (Dspike Sec. 4.3-4.4, 5.2)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import cifar, quickstart
from jsnn import surrogate, train
from jsnn.layers import LIF
from jsnn.methods import fdg
from jsnn.train.checkpoint import Checkpointer
from jsnn.train.metrics import MetricWriter


def _config(workdir, **overrides) -> train.Config:
    fields = {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False}
    return train.Config(workdir=str(workdir), **{**fields, **overrides})


def _set_temperature(model, b):
    for _, module in nnx.iter_modules(model):
        if isinstance(module, LIF):
            module.surrogate.set_value(surrogate.Dspike(b))


def test_hook_search_equals_fdg_and_three_separate_surrogate_gradients(tmp_path):
    config = _config(tmp_path, method="dspike", batch_size=8)
    dataset = train.build_dataset(config)
    model = train.build_model(config, dataset)
    state = train.TrainState.create(model, train.optim.optimizer(config, 1))
    batch = {k: jnp.asarray(v) for k, v in dataset.train(batch_size=8, seed=0)[0].items()}
    hook = train.temperature_search_hook(config, model)
    new_state, scalars = hook(state, 0, batch)

    # The same quantities by hand: the FDG of the first conv's kernel and one surrogate
    # gradient per candidate b, each from its own model.
    def loss_of_kernel(b):
        copy = state.model()
        _set_temperature(copy, b)
        graphdef, kernel, others = nnx.split(
            copy, lambda path, _: path == ("units", 0, "conv", "kernel"), ...
        )

        def loss(k):  # tree maps give the model fresh variables inside the trace
            model = nnx.merge(
                graphdef, jax.tree.map(lambda _: k, kernel), jax.tree.map(jnp.copy, others)
            )
            return train.batch_loss(model, batch, config.loss)[0]

        return loss

    kernel = model.input_layer().kernel.get_value()
    loss_at_one = loss_of_kernel(1.0)  # built outside the trace: it sets variables
    reference = jax.jit(lambda k: fdg.finite_difference_gradient(loss_at_one, k, eps=0.1))(kernel)
    expected = {
        f"cosine_b{name}": float(
            fdg.cosine_similarity(jax.grad(loss_of_kernel(b))(kernel), reference)
        )
        for name, b in (("", 1.0), ("_up", 1.2), ("_down", 0.8))
    }
    for name, value in expected.items():
        assert scalars[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    best = max(expected, key=expected.get)
    b = {"cosine_b": 1.0, "cosine_b_up": 1.2, "cosine_b_down": 0.8}[best]
    assert scalars["dspike_b"] == pytest.approx(b)
    temperatures = [
        leaf.b
        for leaf in jax.tree.leaves(
            new_state.rest, is_leaf=lambda x: isinstance(x, surrogate.Dspike)
        )
        if isinstance(leaf, surrogate.Dspike)
    ]
    assert len(temperatures) == 2 and all(float(t) == pytest.approx(b) for t in temperatures)
    # Each layer holds its own copy (the train step donates the state).
    assert len({id(t) for t in temperatures}) == 2


def test_hook_needs_dspike_and_a_known_layer(tmp_path):
    config = _config(tmp_path)
    dataset = train.build_dataset(config)
    with pytest.raises(ValueError, match="Dspike"):
        train.temperature_search_hook(
            config, train.build_model(dataclasses.replace(config, surrogate="triangular"), dataset)
        )
    with pytest.raises(ValueError, match="fdg_layer"):
        train.temperature_search_hook(
            dataclasses.replace(config, fdg_layer="stem.0.conv"), train.build_model(config, dataset)
        )
    with pytest.raises(ValueError, match="method"):
        train.Config(method="dspike", surrogate="triangular")
    with pytest.raises(ValueError, match="fdg_directions"):
        train.Config(fdg_directions=-1)
    with pytest.raises(ValueError, match="fdg_eps"):
        train.Config(fdg_eps=0.0)


def test_fit_searches_every_epoch_records_b_and_checkpoints_it(tmp_path):
    config = _config(tmp_path, method="dspike", epochs=2, fdg_directions=32)
    dataset = train.build_dataset(config)
    train.fit(config, train.build_model(config, dataset), dataset)
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    searches = [r for r in records if r["kind"] == "epoch_start"]
    assert [r["epoch"] for r in searches] == [1, 2]
    assert [r["step"] for r in searches] == [0, 22]
    for record in searches:
        assert record["dspike_b"] > 0
        assert -1 <= record["cosine_b"] <= 1 and record["search_seconds"] > 0
    # The checkpoint holds the temperature chosen last.
    template = train.TrainState.create(
        train.build_model(config, dataset), train.optim.optimizer(config, 22)
    )
    state, _ = Checkpointer(tmp_path, keep=2).restore(template)
    assert float(train.dspike.temperature(state.rest)) == pytest.approx(searches[-1]["dspike_b"])
    assert train.plot_temperature(tmp_path).stat().st_size > 0


def test_resume_at_an_epoch_boundary_writes_the_next_search_once(tmp_path):
    writer = MetricWriter(tmp_path, enabled=True, tensorboard=False)
    for kind, step in (("train", 22), ("eval", 22), ("epoch_end", 22), ("epoch_start", 22)):
        writer.write(kind, step, {"x": 1.0})
    writer.write("train", 23, {"x": 1.0})
    writer.drop_after(22)  # the state saved at step 22 precedes the epoch-start hooks
    kept = [(r["kind"], r["step"]) for r in train.read_metrics(tmp_path / "metrics.jsonl")]
    assert kept == [("train", 22), ("eval", 22), ("epoch_end", 22)]


def test_cifar_recipe_is_the_papers_pipeline():
    runs = train.stages(dataclasses.replace(cifar.RECIPES["dspike_cifar10"], workdir="w"))
    summary = [(r.workdir, r.spiking, r.steps, r.epochs, r.lr, r.init_from) for r in runs]
    assert summary == [
        ("w/ann", False, 6, 300, 0.01, None),
        ("w/T6", True, 6, 300, 0.01, "w/ann"),
        ("w/T4", True, 4, 50, 0.004, "w/T6"),
        ("w/T2", True, 2, 50, 0.004, "w/T4"),
    ]
    assert runs[0].method == "surrogate" and all(r.method == "dspike" for r in runs[1:])
    assert all(r.fdg_eps == 0.1 and r.temperature_step == 0.2 for r in runs)
    assert runs[1].surrogate_parameter is None  # Dspike's default b0 = 1
    with pytest.raises(ValueError, match="differ"):
        train.stages(dataclasses.replace(runs[1], tit_steps=(4, 6)))


def test_config_round_trips_through_json_and_the_command_line():
    recipe = cifar.RECIPES["dspike_cifar10"]
    assert train.Config.from_json(recipe.to_json()) == recipe
    config, _ = train.parse_args(
        ["--tit-steps", "3,1", "--method", "dspike", "--fdg-directions", "64"],
        {"base": train.Config()},
        description="",
        default="base",
    )
    assert (config.tit_steps, config.method, config.fdg_directions) == ((3, 1), "dspike", 64)
    config, _ = train.parse_args(
        ["--tit-steps", "none"], {"base": recipe}, description="", default="base"
    )
    assert config.tit_steps == ()


def test_time_inheritance_keeps_the_first_steps_outputs_exactly(tmp_path):
    # Dspike Sec. 4.4: the model initialised at a lower T "has exactly the same output as the
    # former model in the first T time steps".
    source = _config(tmp_path / "T4", steps=4)
    dataset = train.build_dataset(source)
    trained = train.build_model(source, dataset)
    train.fit(source, trained, dataset)
    target = dataclasses.replace(source, steps=2, workdir=str(tmp_path / "T2"))
    inherited = train.build_model(target, dataset)
    train.initialize_from(inherited, source.workdir, dataset)
    trained.eval()
    inherited.eval()
    images = jnp.asarray(dataset.test(batch_size=16)[0]["image"])
    np.testing.assert_allclose(inherited(images), trained(images)[:, :2], rtol=1e-5, atol=1e-6)


def test_ann_initialisation_copies_the_twins_weights(tmp_path):
    ann_config = _config(tmp_path / "ann", spiking=False)
    dataset = train.build_dataset(ann_config)
    ann = train.build_model(ann_config, dataset)
    train.fit(ann_config, ann, dataset)
    snn = train.build_model(_config(tmp_path / "snn"), dataset)
    train.initialize_from(snn, ann_config.workdir, dataset)
    np.testing.assert_array_equal(
        snn.input_layer().kernel.get_value(), ann.input_layer().kernel.get_value()
    )
    np.testing.assert_array_equal(snn.fc.kernel.get_value(), ann.fc.kernel.get_value())


def test_initialisation_needs_a_finished_run_of_a_matching_model(tmp_path):
    config = _config(tmp_path / "run")
    dataset = train.build_dataset(config)
    train.fit(config, train.build_model(config, dataset), dataset)
    plif = train.build_model(dataclasses.replace(config, neuron="plif"), dataset)
    with pytest.raises(ValueError, match="different spiking model"):
        train.initialize_from(plif, config.workdir, dataset)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**saved, "epochs": 3}))
    with pytest.raises(ValueError, match="not a finished run"):
        train.initialize_from(train.build_model(config, dataset), config.workdir, dataset)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        train.initialize_from(train.build_model(config, dataset), tmp_path / "nowhere", dataset)


def test_one_command_trains_the_ann_then_each_time_inheritance_round(tmp_path, capsys):
    flags = ["--workdir", str(tmp_path), "--epochs", "1", "--tit-epochs", "1", "--progress"]
    flags += ["false", "--method", "dspike", "--fdg-directions", "16", "--ann-init", "true"]
    metrics = quickstart.main([*flags, "--tit-steps", "2"])
    assert metrics["accuracy"] > 0.5
    for run in ("ann", "T4", "T2"):
        assert (tmp_path / run / "curves.png").exists(), run
    assert (tmp_path / "T2" / "temperature.png").exists()
    out = capsys.readouterr().out
    assert "| run | T | epochs | test accuracy |" in out and "Dspike temperature b" in out
    # Started again, every round resumes from its finished workdir and trains no more.
    assert quickstart.main([*flags, "--tit-steps", "2"])["accuracy"] == metrics["accuracy"]
