"""The CIFAR entry point runs Dspike's recipe end to end (on tfds mock data, at toy size)."""

import dataclasses

import tensorflow_datasets as tfds

from experiments import cifar
from jsnn import recipes, run
from jsnn.config import Config


@dataclasses.dataclass
class _CifarShape:
    num_classes: int
    input_shape: tuple = (32, 32, 3)


def test_cifar_recipe_trains_the_modified_resnet18_on_mock_cifar(tmp_path, capsys):
    # One round (no ANN, no TIT) with the temperature search on 8 random directions: the exact
    # FDG of the 1728 first-layer weights is too slow for a test on two CPU cores.
    flags = ["--T", "2", "--epochs", "1", "--batch-size", "4", "--progress", "false"]
    flags += ["--ann-init", "false", "--tit-steps", "none", "--fdg-directions", "8"]
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        metrics = cifar.main([*flags, "--workdir", str(tmp_path)])
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # 3 stem LIF layers + 2 in each of the 8 basic blocks.
    assert len([name for name in metrics if name.startswith("firing_rate/")]) == 19
    config = Config.from_json((tmp_path / "config.json").read_text())
    assert (config.model.name, config.train.lr, config.data.cutout) == (
        "resnet18_modified",
        0.01,
        16,
    )
    assert config.model.time_steps == 2 and config.method.directions == 8
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "Dspike temperature b" in out
    assert (tmp_path / "temperature.png").exists()


def test_every_recipe_builds_its_model_for_its_data_shape():
    for name, config in recipes.CIFAR.items():
        assert config.data.name in ("cifar10", "cifar100"), name
        model = run.build_model(config, _CifarShape(num_classes=100))
        assert model.num_classes == 100 and model.in_channels == 3, name
