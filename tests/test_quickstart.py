"""The README's main job: the quickstart trains a spiking CNN on the bundled digits."""

import numpy as np

from experiments import quickstart
from jsnn import train
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
