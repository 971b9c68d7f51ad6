"""The trainer: config and CLI, schedules, workdir contents, resume after SIGKILL, divergence,
hooks, and the same losses on 1 and 4 devices and on 1 and 2 processes."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jsnn import surrogate, train
from jsnn.layers import SurrogateVariable
from jsnn.train.checkpoint import Checkpointer

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "train_digits.py"
# Two short epochs of the quickstart config at batch 64 (22 steps each), logging every step,
# in float64: float32 rounding differs with the number of devices (the order of the all-reduce
# sums), a membrane potential within rounding of the threshold then spikes in one run and not in
# the other, and the runs drift apart (about 1e-3 relative after 40 steps here). Dspike's
# temperature search runs before each epoch (on 16 random directions, to be quick), so the runs
# also check that it chooses the same b on every device count and after a resume.
FLAGS = [
    "--epochs", "2", "--batch-size", "64", "--log-every", "1", "--progress", "false",
    "--tensorboard", "false", "--compute-dtype", "float64", "--method", "dspike",
    "--fdg-directions", "16",
]  # fmt: skip


def _config(workdir, **overrides) -> train.Config:
    fields = {"epochs": 2, "batch_size": 64, "log_every": 1, "progress": False}
    fields["tensorboard"] = False
    return train.Config(workdir=str(workdir), **{**fields, **overrides})


def _run_child(workdir, *flags, env=None):
    """Runs the training script in a fresh interpreter (device counts are fixed at JAX start)."""
    command = [sys.executable, str(SCRIPT), *flags, "--workdir", str(workdir)]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "1", **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def _train_losses(workdir) -> list[float]:
    """The logged training losses, then the temperature search's cosines."""
    records = train.read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    searches = [r for r in records if r["kind"] == "epoch_start"]
    assert len(searches) == 2
    return [r["loss"] for r in records if r["kind"] == "train"] + [
        r[name] for r in searches for name in ("dspike_b", "cosine_b", "cosine_b_up")
    ]


def _last_eval(workdir) -> dict:
    records = train.read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    last = [record for record in records if record["kind"] == "eval"][-1]
    return {name: value for name, value in last.items() if name != "kind"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-device run of FLAGS, the baseline the other runs must match."""
    workdir = tmp_path_factory.mktemp("reference")
    result = _run_child(workdir, *FLAGS, "--checkpoint-every", "5")
    assert result.returncode == 0, result.stderr
    return workdir


def test_cli_overrides_any_field_and_the_T_alias():
    config, cluster = train.parse_args(
        ["--T", "6", "--lr", "0.1", "--grad-clip", "none", "--augment", "false"],
        {"base": train.Config()},
        description="test",
        default="base",
    )
    assert (config.steps, config.lr, config.grad_clip, config.augment) == (6, 0.1, None, False)
    assert cluster == {
        "distributed": False,
        "coordinator_address": None,
        "num_processes": None,
        "process_id": None,
    }
    with pytest.raises(SystemExit):
        train.parse_args(["--augment", "maybe"], {"b": train.Config()}, description="", default="b")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", -1),
        ("loss", "mse"),
        ("optimizer", "lamb"),
        ("lr", 0.0),
        ("remat", "all"),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        train.Config(**{field: value})


def test_partial_cluster_arguments_are_rejected():
    with pytest.raises(ValueError, match="coordinator-address"):
        train.initialize_distributed(coordinator_address="localhost:1234")


def test_warmup_then_cosine_to_zero():
    config = train.Config(epochs=10, lr=0.1, warmup_epochs=1.0)
    schedule = train.optim.learning_rate(config, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)  # linear ramp
    np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)  # peak after warm-up
    np.testing.assert_allclose(float(schedule(55)), 0.05, rtol=1e-5)  # cosine midpoint
    assert float(schedule(100)) < 1e-8


def test_fit_writes_a_workdir_a_person_can_use(tmp_path):
    config = _config(tmp_path, tensorboard=True, checkpoint_every=10)
    dataset = train.build_dataset(config)
    metrics = train.fit(config, train.build_model(config, dataset), dataset)
    assert metrics["accuracy"] > 0.7
    assert any(name.startswith("firing_rate/") for name in metrics)
    assert 0 < min(v for k, v in metrics.items() if k.startswith("firing_rate/")) < 1
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    assert {record["kind"] for record in records} == {"train", "eval"}
    assert all("samples_per_second" in r for r in records if r["kind"] == "train")
    assert list((tmp_path / "tensorboard").iterdir())
    assert Checkpointer(tmp_path, keep=2).latest_step() == 44
    assert train.plot_curves(tmp_path).stat().st_size > 0
    # A finished run started again evaluates its final state and trains no more.
    again = train.fit(config, train.build_model(config, dataset), dataset)
    assert again["accuracy"] == metrics["accuracy"]
    assert len(train.read_metrics(tmp_path / "metrics.jsonl")) == len(records)


def test_sigkill_mid_epoch_resumes_with_the_same_final_metrics(tmp_path, reference):
    # Killed while fetching step 30 (epoch 2 of 2), checkpoints every 5 steps.
    killed = _run_child(tmp_path, "--kill-at-step", "30", *FLAGS, "--checkpoint-every", "5")
    assert killed.returncode == -9
    latest = Checkpointer(tmp_path, keep=2).latest_step()
    assert 22 < latest <= 30  # resumes mid-epoch, not from the epoch start
    resumed = _run_child(tmp_path, *FLAGS, "--checkpoint-every", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {tmp_path} from step {latest}" in resumed.stdout
    assert _last_eval(tmp_path) == pytest.approx(_last_eval(reference), rel=1e-6)
    np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(reference), rtol=1e-6)


def test_four_devices_give_the_same_losses_as_one(tmp_path, reference):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = _run_child(tmp_path, *FLAGS, "--checkpoint-every", "5", env=env)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(reference), rtol=1e-4)


def test_two_processes_give_the_same_losses_as_one(tmp_path, reference):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    cluster = ["--coordinator-address", f"localhost:{port}", "--num-processes", "2"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_ENABLE_X64": "1"}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                *FLAGS,
                "--checkpoint-every",
                "5",
                *cluster,
                "--process-id",
                str(index),
                "--workdir",
                str(tmp_path),
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr
    np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(reference), rtol=1e-4)


class _PoisonedFrom:
    """A data set whose training images turn to NaN from one step on."""

    def __init__(self, dataset, step):
        self._dataset, self._step = dataset, step

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def train(self, **kwargs):
        batches, first_bad = self._dataset.train(**kwargs), self._step

        class Batches:
            def __getitem__(self, step):
                batch = dict(batches[step])
                if step >= first_bad:
                    batch["image"] = np.full_like(batch["image"], np.nan)
                return batch

        return Batches()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = _config(tmp_path, checkpoint_every=5)
    dataset = train.build_dataset(config)
    model = train.build_model(config, dataset)
    # Step 13 (index 12) is the first NaN batch; checkpoints are saved every 5 steps.
    expected = r"at step 13; .* last good checkpoint is step 10"
    with pytest.raises(train.TrainingDiverged, match=expected):
        train.fit(config, model, _PoisonedFrom(dataset, 12), devices=None)
    template = train.TrainState.create(
        train.build_model(config, dataset), train.optim.optimizer(config, 22)
    )
    state, _ = Checkpointer(tmp_path, keep=2).restore(template)
    assert int(state.step) == 10
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state.params))


def test_epoch_hooks_change_the_state_and_are_recorded(tmp_path):
    seen = []

    def temperature(state, epoch, batch):
        seen.append(jax.tree.leaves(nnx.state(state.model(), SurrogateVariable))[0])
        b = 2.0 + epoch
        rest = jax.tree.map(
            lambda leaf: surrogate.Dspike(b) if isinstance(leaf, surrogate.Dspike) else leaf,
            state.rest,
            is_leaf=lambda leaf: isinstance(leaf, surrogate.Dspike),
        )
        return state.replace(rest=rest), {"b": b}

    config = _config(tmp_path)
    dataset = train.build_dataset(config)
    train.fit(config, train.build_model(config, dataset), dataset, epoch_start=[temperature])
    assert [float(b) for b in seen] == [1.0, 2.0]  # the state carries the hook's change
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["b"] for r in records if r["kind"] == "epoch_start"] == [2.0, 3.0]


def test_ann_twin_trains_with_the_same_loop(tmp_path):
    config = dataclasses.replace(_config(tmp_path), spiking=False, epochs=1)
    dataset = train.build_dataset(config)
    metrics = train.fit(config, train.build_model(config, dataset), dataset)
    assert metrics["accuracy"] > 0.5
    assert not any(name.startswith("firing_rate/") for name in metrics)


def test_cpng_warmup_starts_at_a_tenth_of_the_learning_rate():
    # CPNG appendix A.2: warm-up over 1/20 of the epochs from 0.1 lr to lr, then cosine to 0.
    config = train.Config(epochs=20, lr=0.1, warmup_epochs=1.0, warmup_from=0.1)
    schedule = train.optim.learning_rate(config, steps_per_epoch=10)
    np.testing.assert_allclose(float(schedule(0)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
    assert float(schedule(200)) < 1e-8


def test_remat_and_compute_dtype_reach_the_model_from_the_command_line():
    config, _ = train.parse_args(
        ["--remat", "block", "--compute-dtype", "bfloat16"],
        {"base": train.Config()},
        description="test",
        default="base",
    )
    assert (config.remat, config.compute_dtype) == ("block", "bfloat16")
    model = train.build_model(config, train.build_dataset(config))
    assert model.remat == "block" and model.fc.dtype == jnp.bfloat16
    # On CPU the step keeps remat's optimisation barriers (XLA's CPU pipeline drops them).
    assert train.compiler_options("block", "cpu") == {
        "xla_disable_hlo_passes": "cse_barrier_expander"
    }
    assert train.compiler_options("none", "cpu") == train.compiler_options("block", "gpu") == {}


def test_bfloat16_step_is_close_to_float32_and_keeps_float32_state():
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = train.Config(compute_dtype=dtype)
        dataset = train.build_dataset(config)
        tx = train.optim.optimizer(config, steps_per_epoch=10)
        state = train.TrainState.create(train.build_model(config, dataset), tx)
        batch = dataset.train(batch_size=32, seed=0)[0]
        batch = {**batch, "image": jnp.asarray(batch["image"], dtype)}  # as the loop casts it
        step = jax.jit(functools.partial(train.train_step, tx=tx, loss=config.loss))
        state, metrics = step(state, batch)
        assert metrics["loss"].dtype == jnp.float32
        floats = jax.tree.leaves((state.params, state.rest, state.opt_state))
        floats = [leaf for leaf in floats if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert {leaf.dtype for leaf in floats} == {jnp.dtype("float32")}
        losses[dtype] = float(metrics["loss"])
    assert np.isfinite(losses["bfloat16"])
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)
