"""A run's config in sections: validation, dotted overrides, JSON, the command line and the flat
flags and ``config.json`` of earlier versions; the method registry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from jsnn import methods, recipes, train
from jsnn.config import Config, DataConfig, InitConfig, ModelConfig, parse_args
from jsnn.methods.dspike import DspikeSearch
from jsnn.methods.surrogate import PlainSurrogate


def _parse(argv, recipe=None):
    return parse_args(argv, {"base": recipe or Config()}, description="test", default="base")


def test_cli_overrides_any_field_by_section_and_by_its_old_flat_flag():
    new, cluster = _parse(
        [
            "--model.time-steps", "6", "--train.lr", "0.1", "--train.grad-clip", "none",
            "--data.augment", "false", "--model.surrogate-options", "b=2.0",
        ]
    )  # fmt: skip
    old, _ = _parse(["--T", "6", "--lr", "0.1", "--grad-clip", "none", "--augment", "false"])
    assert (new.model.time_steps, new.train.lr, new.train.grad_clip) == (6, 0.1, None)
    assert new.data.augment is False and new.model.surrogate_function().b == 2.0
    assert old == new.override({"model.surrogate_options": {}})
    assert cluster == {
        "distributed": False,
        "coordinator_address": None,
        "num_processes": None,
        "process_id": None,
    }
    assert _parse(["--steps", "3", "--model", "mnist_net", "--dataset", "mnist"])[0].model.name == (
        "mnist_net"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--data.augment", "maybe"],
        ["--train.epochs", "many"],
        ["--train.epochs", "0"],
        ["--model.surrogate-options", "b"],
        ["--method.name", "nonexistent"],
        ["--method.eps", "0.1"],  # not an option of the plain method
        ["--surrogate-parameter", "2"],
    ],
)
def test_bad_command_lines_end_as_a_usage_error_naming_the_problem(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        _parse(argv)
    assert stop.value.code == 2
    assert argv[0].lstrip("-").split(".")[-1].split("-")[0] in capsys.readouterr().err


def test_help_lists_every_field_of_every_section_and_of_the_chosen_method():
    result = subprocess.run(
        [sys.executable, "-m", "experiments.quickstart", "--method.name", "dspike", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for section, cls in (
        ("data", DataConfig),
        ("model", ModelConfig),
        ("train", train.TrainConfig),
        ("init", InitConfig),
        ("method", DspikeSearch),
    ):
        for name in (field.name for field in dataclasses.fields(cls)):
            assert f"--{section}.{name.replace('_', '-')}" in result.stdout, (section, name)
    assert "--fdg-eps" in result.stdout and "--T" in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train.epochs": 0}, "epochs"),
        ({"train.batch_size": -1}, "batch_size"),
        ({"train.loss": "mse"}, "loss"),
        ({"train.optimizer": "lamb"}, "optimizer"),
        ({"train.lr": 0.0}, "lr"),
        ({"model.remat": "all"}, "remat"),
        ({"model.norm": "ln"}, "norm"),
        ({"model.name": "resnet1000"}, "model.name"),
        ({"model.surrogate": "erf"}, "surrogate"),
        ({"model.v_th": -1.0}, "v_th"),
        ({"data.name": "svhn"}, "data.name"),
        ({"data.cutout": -2}, "data.cutout"),
        ({"init.tit_steps": (0,)}, "tit_steps"),
        ({"model.spiking": False, "init.ann": True}, "spiking"),
        ({"train.nonsense": 1}, "nonsense"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_config_values_name_the_field(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Config().override(change)


def test_override_switches_methods_and_keeps_unchanged_options():
    config = Config().override({"method.name": "dspike", "method.eps": 0.05})
    assert config.method == DspikeSearch(eps=0.05)
    assert config.override({"method.chunk": 4}).method == DspikeSearch(eps=0.05, chunk=4)
    assert config.override({"fdg_chunk": 4}).method.chunk == 4  # its old flat name
    assert config.override({"method.name": "surrogate"}).method == PlainSurrogate()


def test_every_recipe_round_trips_through_json():
    for name, recipe in recipes.RECIPES.items():
        assert Config.from_json(recipe.to_json()) == recipe, name
        json.loads(recipe.to_json())  # plain JSON types only


def test_flat_config_json_of_earlier_versions_still_reads():
    flat = {
        "dataset": "digits",
        "model": "digits_net",
        "steps": 6,
        "surrogate": "dspike",
        "surrogate_parameter": 2.0,
        "method": "dspike",
        "fdg_eps": 0.05,
        "temperature_step": 0.2,
        "fdg_layer": None,
        "fdg_chunk": 16,
        "fdg_directions": 0,
        "init_from": None,
        "ann_init": False,
        "tit_steps": [],
        "epochs": 3,
        "lr": 0.1,
        "workdir": "runs/old",
    }
    config = Config.from_json(json.dumps(flat))
    assert config.model.time_steps == 6 and config.model.surrogate_function().b == 2.0
    assert config.method == DspikeSearch(eps=0.05) and config.train.epochs == 3
    plain = Config.from_json(json.dumps({**flat, "method": "surrogate"}))
    assert plain.method == PlainSurrogate()  # the search's stored options are dropped


def test_methods_are_found_by_name_or_dotted_path():
    assert set(methods.names()) >= {"dspike", "surrogate"}
    assert "fdg" not in methods.names() and "base" not in methods.names()
    assert methods.get("dspike") is DspikeSearch
    assert methods.get("jsnn.methods.surrogate") is PlainSurrogate
    for name in ("fdg", "nonexistent", "json"):
        with pytest.raises(ValueError, match="not known"):
            methods.get(name)


def test_the_trainer_names_no_method():
    import pathlib

    root = pathlib.Path(train.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text().lower()
        assert "methods" not in text and "dspike" not in text, path.name


def test_a_method_is_one_module_found_by_the_command_line_and_config_json(tmp_path, monkeypatch):
    package = tmp_path / "mymethods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "schedule.py").write_text(
        "import dataclasses\n"
        "from jsnn.methods import Method\n\n\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Schedule(Method):\n"
        '    name = "mymethods.schedule"\n'
        "    step: float = 0.2\n\n\n"
        "METHOD = Schedule\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config, _ = _parse(["--method.name", "mymethods.schedule", "--method.step", "0.5"])
    assert type(config.method).__name__ == "Schedule" and config.method.step == 0.5
    assert Config.from_json(config.to_json()) == config
