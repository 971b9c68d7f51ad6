"""Dspike's Algorithm 1 as a method (jsnn.methods.dspike), initialisation from an ANN twin and
Time Inheritance Training (Dspike Sec. 4.3-4.4, 5.2; jsnn.run)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import quickstart
from jsnn import losses, recipes, run, surrogate, train
from jsnn.config import Config, parse_args
from jsnn.layers import LIF
from jsnn.methods import dspike, fdg
from jsnn.train.checkpoint import Checkpointer
from jsnn.train.metrics import MetricWriter


def _config(workdir, **overrides) -> Config:
    fields = {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False}
    return Config().override({"workdir": str(workdir), **fields, **overrides})


def _set_temperature(model, b):
    for _, module in nnx.iter_modules(model):
        if isinstance(module, LIF):
            module.surrogate.set_value(surrogate.Dspike(b))


def test_hook_search_equals_fdg_and_three_separate_surrogate_gradients(tmp_path):
    config = _config(tmp_path, method="dspike", batch_size=8)
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    state = train.TrainState.create(model, train.optimizer(config.train, 1))
    batch = {k: jnp.asarray(v) for k, v in dataset.train(batch_size=8, seed=0)[0].items()}
    (hook,) = config.method.epoch_start(model, config)
    live = state.model()
    scalars = hook(live, 0, batch)

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
            return losses.batch_loss(model, batch, losses.get(config.train.loss))[0]

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
        module.surrogate.get_value().b
        for _, module in nnx.iter_modules(live)
        if isinstance(module, LIF)
    ]
    assert len(temperatures) == 2 and all(float(t) == pytest.approx(b) for t in temperatures)
    assert float(dspike.temperature(state.rest)) == 1.0  # the hook set the live model only


def test_method_needs_dspike_and_a_known_layer(tmp_path):
    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    loss = losses.get("mean_ce")
    triangular = run.build_model(config.override({"model.surrogate": "triangular"}), dataset)
    with pytest.raises(ValueError, match="Dspike"):
        dspike.temperature_search(triangular, loss)
    with pytest.raises(ValueError, match=r"layer 'stem\.0\.conv'"):
        dspike.temperature_search(run.build_model(config, dataset), loss, layer="stem.0.conv")
    with pytest.raises(ValueError, match=r"model\.surrogate='dspike'"):
        Config().override({"method.name": "dspike", "model.surrogate": "triangular"})
    with pytest.raises(ValueError, match="directions"):
        dspike.DspikeSearch(directions=-1)
    with pytest.raises(ValueError, match="eps"):
        Config().override({"method.name": "dspike", "method.eps": 0.0})


def test_fit_searches_every_epoch_records_b_and_checkpoints_it(tmp_path):
    config = _config(tmp_path, method="dspike", epochs=2, fdg_directions=32)
    run.run(config)
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    searches = [r for r in records if r["kind"] == "epoch_start"]
    assert [r["epoch"] for r in searches] == [1, 2]
    assert [r["step"] for r in searches] == [0, 22]
    for record in searches:
        assert record["dspike_b"] > 0
        assert -1 <= record["cosine_b"] <= 1 and record["search_seconds"] > 0
    # The checkpoint holds the temperature chosen last.
    dataset = run.build_dataset(config)
    template = train.TrainState.create(
        run.build_model(config, dataset), train.optimizer(config.train, 22)
    )
    state, _ = Checkpointer(tmp_path, keep=2).restore(template)
    assert float(dspike.temperature(state.rest)) == pytest.approx(searches[-1]["dspike_b"])
    assert (tmp_path / "temperature.png").stat().st_size > 0


def test_resume_at_an_epoch_boundary_writes_the_next_search_once(tmp_path):
    writer = MetricWriter(tmp_path, enabled=True, tensorboard=False)
    for kind, step in (("train", 22), ("eval", 22), ("epoch_end", 22), ("epoch_start", 22)):
        writer.write(kind, step, {"x": 1.0})
    writer.write("train", 23, {"x": 1.0})
    writer.drop_after(22)  # the state saved at step 22 precedes the epoch-start hooks
    kept = [(r["kind"], r["step"]) for r in train.read_metrics(tmp_path / "metrics.jsonl")]
    assert kept == [("train", 22), ("eval", 22), ("epoch_end", 22)]


def test_cifar_recipe_is_the_papers_pipeline():
    runs = run.stages(recipes.CIFAR["dspike_cifar10"].override({"train.workdir": "w"}))
    summary = [
        (
            r.train.workdir,
            r.model.spiking,
            r.model.time_steps,
            r.train.epochs,
            r.train.lr,
            r.init.from_workdir,
        )
        for r in runs
    ]
    assert summary == [
        ("w/ann", False, 6, 300, 0.01, None),
        ("w/T6", True, 6, 300, 0.01, "w/ann"),
        ("w/T4", True, 4, 50, 0.004, "w/T6"),
        ("w/T2", True, 2, 50, 0.004, "w/T4"),
    ]
    assert runs[0].method.name == "surrogate"
    assert all(r.method == dspike.DspikeSearch(chunk=1) for r in runs[1:])
    assert runs[1].method.eps == 0.1 and runs[1].method.b_step == 0.2
    assert runs[1].model.surrogate_function().b == 1.0  # Dspike's default b0 = 1
    with pytest.raises(ValueError, match="differ"):
        runs[1].override({"init.tit_steps": (4, 6)})


def test_config_round_trips_through_json_and_the_command_line():
    recipe = recipes.CIFAR["dspike_cifar10"]
    assert Config.from_json(recipe.to_json()) == recipe
    config, _ = parse_args(
        ["--tit-steps", "3,1", "--method", "dspike", "--fdg-directions", "64"],
        {"base": Config()},
        description="",
        default="base",
    )
    assert config.init.tit_steps == (3, 1)
    assert config.method == dspike.DspikeSearch(directions=64)
    config, _ = parse_args(
        ["--init.tit-steps", "none"], {"base": recipe}, description="", default="base"
    )
    assert config.init.tit_steps == ()


def test_time_inheritance_keeps_the_first_steps_outputs_exactly(tmp_path):
    # Dspike Sec. 4.4: the model initialised at a lower T "has exactly the same output as the
    # former model in the first T time steps".
    source = _config(tmp_path / "T4", steps=4)
    dataset = run.build_dataset(source)
    trained = run.build_model(source, dataset)
    train.fit(source.train, trained, dataset, record=source.to_dict())
    target = source.override({"steps": 2, "workdir": str(tmp_path / "T2")})
    inherited = run.build_model(target, dataset)
    run.initialize_from(inherited, source.train.workdir, dataset)
    trained.eval()
    inherited.eval()
    images = jnp.asarray(dataset.test(batch_size=16)[0]["image"])
    np.testing.assert_allclose(inherited(images), trained(images)[:, :2], rtol=1e-5, atol=1e-6)


def test_ann_initialisation_copies_the_twins_weights(tmp_path):
    ann_config = _config(tmp_path / "ann", spiking=False)
    dataset = run.build_dataset(ann_config)
    ann = run.build_model(ann_config, dataset)
    train.fit(ann_config.train, ann, dataset, record=ann_config.to_dict())
    snn = run.build_model(_config(tmp_path / "snn"), dataset)
    run.initialize_from(snn, ann_config.train.workdir, dataset)
    np.testing.assert_array_equal(
        snn.input_layer().kernel.get_value(), ann.input_layer().kernel.get_value()
    )
    np.testing.assert_array_equal(snn.fc.kernel.get_value(), ann.fc.kernel.get_value())


def test_initialisation_needs_a_finished_run_of_a_matching_model(tmp_path):
    config = _config(tmp_path / "run")
    dataset = run.build_dataset(config)
    run.run(config, dataset=dataset)
    workdir = config.train.workdir
    plif = run.build_model(config.override({"neuron": "plif"}), dataset)
    with pytest.raises(ValueError, match="different spiking model"):
        run.initialize_from(plif, workdir, dataset)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    saved["train"]["epochs"] = 3
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="not a finished run"):
        run.initialize_from(run.build_model(config, dataset), workdir, dataset)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        run.initialize_from(run.build_model(config, dataset), tmp_path / "nowhere", dataset)


def test_one_command_trains_the_ann_then_each_time_inheritance_round(tmp_path, capsys):
    flags = ["--workdir", str(tmp_path), "--epochs", "1", "--tit-epochs", "1", "--progress"]
    flags += ["false", "--method", "dspike", "--fdg-directions", "16", "--ann-init", "true"]
    metrics = quickstart.main([*flags, "--tit-steps", "2"])
    assert metrics["accuracy"] > 0.5
    for stage in ("ann", "T4", "T2"):
        assert (tmp_path / stage / "curves.png").exists(), stage
    assert (tmp_path / "T2" / "temperature.png").exists()
    out = capsys.readouterr().out
    assert "| run | T | epochs | test accuracy |" in out and "Dspike temperature b" in out
    # Started again, every round resumes from its finished workdir and trains no more.
    assert quickstart.main([*flags, "--tit-steps", "2"])["accuracy"] == metrics["accuracy"]
