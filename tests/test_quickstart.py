"""The README's main job: the quickstart trains a spiking CNN on the bundled digits."""

import numpy as np

from experiments import quickstart
from jsnn import train
from jsnn.config import Config
from jsnn.data import load_digits


def test_digits_split_is_fixed_stratified_and_scaled():
    first, second = load_digits(), load_digits()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert first["train_images"].shape[1:] == (8, 8, 1)
    assert len(first["train_images"]) + len(first["test_images"]) == 1797
    assert first["train_images"].min() >= 0.0 and first["train_images"].max() <= 1.0
    train_share = np.bincount(first["train_labels"]) / len(first["train_labels"])
    test_share = np.bincount(first["test_labels"]) / len(first["test_labels"])
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_quickstart_reaches_98_percent_on_the_digits(capsys, tmp_path):
    # The README's main job, whole: 15 epochs (about a minute on two CPU cores).
    workdir = tmp_path / "quickstart"
    metrics = quickstart.main(["--workdir", str(workdir), "--progress", "false"])
    assert metrics["accuracy"] >= 0.98
    out = capsys.readouterr().out
    assert "epoch 15/15: test loss" in out and "final test accuracy" in out
    assert (workdir / "curves.png").exists()


def test_quickstart_with_the_temperature_search_still_reaches_98_percent(tmp_path):
    # Dspike's Algorithm 1 on the digits net: the exact FDG of the first layer (288 weights,
    # 576 forward passes) before each of the 15 epochs.
    workdir = tmp_path / "dspike"
    metrics = quickstart.main(
        ["--workdir", str(workdir), "--progress", "false", "--method", "dspike"]
    )
    assert metrics["accuracy"] >= 0.98
    searches = [
        r for r in train.read_metrics(workdir / "metrics.jsonl") if r["kind"] == "epoch_start"
    ]
    assert [r["epoch"] for r in searches] == list(range(1, 16))
    assert all(r["dspike_b"] > 0 for r in searches)
    assert len({r["dspike_b"] for r in searches}) > 1  # the temperature moves
    assert (workdir / "temperature.png").exists()


def test_quickstart_with_cpng_reaches_98_percent_and_traces_chi_and_beta(tmp_path):
    # CPNG's Algorithm 1 after each of the 15 epochs; switching to it brings the triangular
    # surrogate (the quickstart's own is Dspike).
    workdir = tmp_path / "cpng"
    metrics = quickstart.main(
        ["--workdir", str(workdir), "--progress", "false", "--method", "cpng"]
    )
    assert metrics["accuracy"] >= 0.98
    controls = [
        r for r in train.read_metrics(workdir / "metrics.jsonl") if r["kind"] == "epoch_end"
    ]
    assert [r["epoch"] for r in controls] == list(range(1, 16))
    layers = [key.partition("/")[2] for key in controls[0] if key.startswith("beta/")]
    assert layers == ["units.0.act.neuron", "units.1.act.neuron"]
    for record in controls:
        for layer in layers:
            assert record[f"chi_min/{layer}"] <= controls[0][f"chi/{layer}"] + 1e-6
            assert record[f"chi_min/{layer}"] >= 0.2 and record[f"beta/{layer}"] > 0
    assert (workdir / "chi.png").exists() and (workdir / "beta.png").exists()


def test_quickstart_with_event_driven_gradients_reaches_97_percent(tmp_path, capsys):
    # The spike-time gradients of Zhu et al. on the digits: the method's own network and
    # count loss, its weight-scale initialisation, 15 epochs (about 40 s on two CPU cores).
    workdir = tmp_path / "event_driven"
    flags = ["--workdir", str(workdir), "--progress", "false", "--method", "event_driven"]
    metrics = quickstart.main(flags)
    assert metrics["accuracy"] >= 0.97
    out = capsys.readouterr().out
    assert "event-driven initialisation: weight scales" in out
    config = Config.from_json((workdir / "config.json").read_text())
    assert config.method.name == "event_driven" and config.model.time_steps == 5
    assert (config.train.optimizer, config.train.grad_clip) == ("adamw", 1.0)
