"""The README's main job: the quickstart trains a spiking CNN on the bundled digits."""

import numpy as np

from experiments import quickstart
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


def test_quickstart_learns_the_digits_in_two_epochs(capsys):
    accuracy = quickstart.main(["--epochs", "2"])
    assert accuracy > 0.8  # chance is 0.1; two epochs reach about 0.9
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "samples/s" in out
