"""The trainer: schedules, workdir contents, resume after SIGKILL, divergence, hooks on a live
model, a pluggable gradient, and the same losses on 1 and 4 devices and on 1 and 2 processes.
(The config and its command line: test_config.py.)"""

from __future__ import annotations

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

from jsnn import losses, run, surrogate, train
from jsnn.config import Config
from jsnn.layers import LIF
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
    "--train.epochs", "2", "--train.batch-size", "64", "--train.log-every", "1",
    "--train.progress", "false", "--train.tensorboard", "false",
    "--train.compute-dtype", "float64", "--method.name", "dspike", "--method.directions", "16",
]  # fmt: skip


def _config(workdir, **overrides) -> Config:
    fields = {"epochs": 2, "batch_size": 64, "log_every": 1, "progress": False}
    fields["tensorboard"] = False
    return Config().override({"workdir": str(workdir), **fields, **overrides})


def _run_child(workdir, *flags, env=None):
    """Runs the training script in a fresh interpreter (device counts are fixed at JAX start)."""
    command = [sys.executable, str(SCRIPT), *flags, "--train.workdir", str(workdir)]
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
    result = _run_child(workdir, *FLAGS, "--train.checkpoint-every", "5")
    assert result.returncode == 0, result.stderr
    return workdir


def test_warmup_then_cosine_to_zero():
    config = train.TrainConfig(epochs=10, lr=0.1, warmup_epochs=1.0)
    schedule = train.optim.learning_rate(config, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(5)), 0.05, rtol=1e-6)  # linear ramp
    np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)  # peak after warm-up
    np.testing.assert_allclose(float(schedule(55)), 0.05, rtol=1e-5)  # cosine midpoint
    assert float(schedule(100)) < 1e-8


def test_fit_writes_a_workdir_a_person_can_use(tmp_path):
    config = _config(tmp_path, tensorboard=True, checkpoint_every=10)
    dataset = run.build_dataset(config)
    metrics = train.fit(config.train, run.build_model(config, dataset), dataset)
    assert metrics["accuracy"] > 0.7
    assert any(name.startswith("firing_rate/") for name in metrics)
    assert 0 < min(v for k, v in metrics.items() if k.startswith("firing_rate/")) < 1
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2  # the section
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    assert {record["kind"] for record in records} == {"train", "eval"}
    assert all("samples_per_second" in r for r in records if r["kind"] == "train")
    assert list((tmp_path / "tensorboard").iterdir())
    assert Checkpointer(tmp_path, keep=2).latest_step() == 44
    assert _plot_keeps_the_backend(lambda: train.plot_curves(tmp_path)).stat().st_size > 0
    # A finished run started again evaluates its final state and trains no more.
    again = train.fit(config.train, run.build_model(config, dataset), dataset)
    assert again["accuracy"] == metrics["accuracy"]
    assert len(train.read_metrics(tmp_path / "metrics.jsonl")) == len(records)


def _plot_keeps_the_backend(plot):
    """Runs ``plot`` with a backend other than Agg selected (as a notebook has its own): the
    backend and pyplot's figures must be as they were."""
    import matplotlib
    from matplotlib import pyplot

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        result = plot()
        assert matplotlib.get_backend() == "svg" and not pyplot.get_fignums()
    finally:
        matplotlib.use(before)
    return result


def test_sigkill_mid_epoch_resumes_with_the_same_final_metrics(tmp_path, reference):
    # Killed while fetching step 30 (epoch 2 of 2), checkpoints every 5 steps.
    killed = _run_child(tmp_path, "--kill-at-step", "30", *FLAGS, "--train.checkpoint-every", "5")
    assert killed.returncode == -9
    latest = Checkpointer(tmp_path, keep=2).latest_step()
    assert 22 < latest <= 30  # resumes mid-epoch, not from the epoch start
    resumed = _run_child(tmp_path, *FLAGS, "--train.checkpoint-every", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {tmp_path} from step {latest}" in resumed.stdout
    assert _last_eval(tmp_path) == pytest.approx(_last_eval(reference), rel=1e-6)
    np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(reference), rtol=1e-6)


def test_four_devices_give_the_same_losses_as_one(tmp_path, reference):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = _run_child(tmp_path, *FLAGS, "--train.checkpoint-every", "5", env=env)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(_train_losses(tmp_path), _train_losses(reference), rtol=1e-4)


def test_cpng_measures_the_same_membranes_on_four_devices_as_on_one(tmp_path):
    # CPNG's membrane pass on the epoch's last batch, sharded over the devices, and its
    # Algorithm 1 (chi_limit 0.9 re-solves every beta at the second epoch).
    flags = [*FLAGS[:-4], "--method.name", "cpng", "--method.chi-limit", "0.9"]
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    traces = []
    for workdir, extra in ((tmp_path / "one", {}), (tmp_path / "four", env)):
        result = _run_child(workdir, *flags, env=extra)
        assert result.returncode == 0, result.stderr
        records = train.read_metrics(workdir / "metrics.jsonl")
        ends = [r for r in records if r["kind"] == "epoch_end"]
        traces.append([v for r in ends for k, v in sorted(r.items()) if "/" in k])
    assert len(traces[0]) == 2 * 3 * 2  # two epochs, chi, chi_min and beta of two layers
    np.testing.assert_allclose(traces[1], traces[0], rtol=1e-6)


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
                "--train.checkpoint-every",
                "5",
                *cluster,
                "--process-id",
                str(index),
                "--train.workdir",
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
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    # Step 13 (index 12) is the first NaN batch; checkpoints are saved every 5 steps.
    expected = r"at step 13; .* last good checkpoint is step 10"
    with pytest.raises(train.TrainingDiverged, match=expected):
        train.fit(config.train, model, _PoisonedFrom(dataset, 12), devices=None)
    template = train.TrainState.create(
        run.build_model(config, dataset), train.optimizer(config.train, 22)
    )
    state, _ = Checkpointer(tmp_path, keep=2).restore(template)
    assert int(state.step) == 10
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(state.params))


def _temperatures(model) -> list[float]:
    return [
        float(module.surrogate.get_value().b)
        for _, module in nnx.iter_modules(model)
        if isinstance(module, LIF)
    ]


def test_epoch_hooks_change_the_live_model_and_are_recorded(tmp_path):
    seen = []

    def temperature(model, epoch, batch):
        assert batch["image"].shape[0] == 64  # the epoch's first training batch
        seen.append(_temperatures(model))
        for _, module in nnx.iter_modules(model):
            if isinstance(module, LIF):
                module.surrogate.set_value(surrogate.Dspike(2.0 + epoch))
        return {"b": 2.0 + epoch}

    def after(model, epoch, batch):
        seen.append(_temperatures(model))
        last = dataset.train(batch_size=64, seed=config.train.seed)[22 * epoch + 21]
        np.testing.assert_array_equal(np.asarray(batch["image"]), last["image"])

    config = _config(tmp_path)
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    train.fit(config.train, model, dataset, epoch_start=[temperature], epoch_end=[after])
    # The state carries the hook's change into the epoch, its end hooks and the next epoch.
    assert [set(b) for b in seen] == [{1.0}, {2.0}, {2.0}, {3.0}]
    assert set(_temperatures(model)) == {3.0}  # and the trained model returned in place
    records = train.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["b"] for r in records if r["kind"] == "epoch_start"] == [2.0, 3.0]
    assert not [r for r in records if r["kind"] == "epoch_end"]  # None records nothing


def test_a_hook_may_not_change_the_models_structure(tmp_path):
    def grow(model, epoch, batch):
        model.extra = nnx.Param(jnp.zeros(3))

    config = _config(tmp_path, epochs=1)
    dataset = run.build_dataset(config)
    with pytest.raises(ValueError, match="structure changed"):
        train.fit(config.train, run.build_model(config, dataset), dataset, epoch_start=[grow])


def test_a_hook_evaluating_the_model_changes_neither_its_statistics_nor_its_mode(tmp_path):
    def evaluate(model, epoch, batch):
        model.eval()
        model(batch["image"])  # eval mode: the running statistics are read, not updated

    config = _config(tmp_path / "plain", epochs=1)
    dataset = run.build_dataset(config)
    plain = run.build_model(config, dataset)
    train.fit(config.train, plain, dataset)
    hooked = run.build_model(config, dataset)
    config = _config(tmp_path / "hooked", epochs=1)
    train.fit(config.train, hooked, dataset, epoch_start=[evaluate], epoch_end=[evaluate])
    for a, b in zip(
        jax.tree.leaves(nnx.state(plain)), jax.tree.leaves(nnx.state(hooked)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert all(not getattr(m, "use_running_average", False) for _, m in nnx.iter_modules(hooked))


def test_train_model_copies_do_not_write_into_the_state():
    config = Config()
    dataset = run.build_dataset(config)
    state = train.TrainState.create(
        run.build_model(config, dataset), train.optimizer(config.train, 1)
    )
    model = state.model()
    for _, module in nnx.iter_modules(model):
        if isinstance(module, LIF):
            module.surrogate.set_value(surrogate.Dspike(5.0))
    model(jnp.asarray(dataset.train(batch_size=8, seed=0)[0]["image"]))  # BN statistics move
    assert set(_temperatures(state.model())) == {1.0}
    fresh = nnx.state(run.build_model(config, dataset), nnx.BatchStat)
    kept = nnx.state(state.model(), nnx.BatchStat)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(fresh), strict=True)
    )


def test_a_pluggable_gradient_replaces_autodiff_in_the_step():
    config = Config()
    dataset = run.build_dataset(config)
    tx = train.optimizer(config.train, steps_per_epoch=10)
    batch = dataset.train(batch_size=32, seed=0)[0]
    batch = {**batch, "image": jnp.asarray(batch["image"])}
    loss = losses.get("mean_ce")
    calls = []

    def zero_gradient(f, params):
        calls.append(1)
        value_aux, grads = jax.value_and_grad(f, has_aux=True)(params)
        return value_aux, jax.tree.map(jnp.zeros_like, grads)

    start = train.TrainState.create(run.build_model(config, dataset), tx)
    same, metrics = train.train_step(start, batch, tx=tx, loss=loss, gradient=zero_gradient)
    moved, reference = train.train_step(start, batch, tx=tx, loss=loss)
    assert calls == [1]
    np.testing.assert_allclose(float(metrics["loss"]), float(reference["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(same.params), jax.tree.leaves(start.params), strict=True):
        np.testing.assert_array_equal(a, b)  # Adam moves nothing on zero gradients
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(moved.params), jax.tree.leaves(start.params), strict=True)
    )


def test_eval_reports_the_configured_loss_not_a_re_derived_one(tmp_path):
    config = _config(tmp_path, loss="tet", epochs=1)
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    tx = train.optimizer(config.train, steps_per_epoch=1)
    state = train.TrainState.create(model, tx)
    batch = next(iter(dataset.test(batch_size=50)))
    batch = {name: jnp.asarray(value) for name, value in batch.items()}
    result = train.eval_step(state, batch, loss=losses.get("tet"))
    copy = state.model()
    copy.eval()
    outputs = losses.as_sequence(copy(batch["image"]))
    real = np.asarray(batch["mask"]) > 0
    expected = losses.tet_cross_entropy(outputs[real], batch["label"][real])
    np.testing.assert_allclose(
        float(result["loss_sum"] / result["count"]), float(expected), rtol=1e-5
    )
    assert float(result["count"]) == real.sum()


def test_ann_twin_trains_with_the_same_loop(tmp_path):
    config = _config(tmp_path, spiking=False, epochs=1)
    dataset = run.build_dataset(config)
    metrics = train.fit(config.train, run.build_model(config, dataset), dataset)
    assert metrics["accuracy"] > 0.5
    assert not any(name.startswith("firing_rate/") for name in metrics)


def test_cpng_warmup_starts_at_a_tenth_of_the_learning_rate():
    # CPNG appendix A.2: warm-up over 1/20 of the epochs from 0.1 lr to lr, then cosine to 0.
    config = train.TrainConfig(epochs=20, lr=0.1, warmup_epochs=1.0, warmup_from=0.1)
    schedule = train.optim.learning_rate(config, steps_per_epoch=10)
    np.testing.assert_allclose(float(schedule(0)), 0.01, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 0.1, rtol=1e-6)
    assert float(schedule(200)) < 1e-8


def test_bfloat16_step_is_close_to_float32_and_keeps_float32_state():
    final = {}
    for dtype in ("float32", "bfloat16"):
        config = Config().override({"train.compute_dtype": dtype})
        dataset = run.build_dataset(config)
        tx = train.optimizer(config.train, steps_per_epoch=10)
        state = train.TrainState.create(run.build_model(config, dataset), tx)
        batch = dataset.train(batch_size=32, seed=0)[0]
        batch = {**batch, "image": jnp.asarray(batch["image"], dtype)}  # as the loop casts it
        step = jax.jit(functools.partial(train.train_step, tx=tx, loss=losses.get("mean_ce")))
        state, metrics = step(state, batch)
        assert metrics["loss"].dtype == jnp.float32
        floats = jax.tree.leaves((state.params, state.rest, state.opt_state))
        floats = [leaf for leaf in floats if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert {leaf.dtype for leaf in floats} == {jnp.dtype("float32")}
        final[dtype] = float(metrics["loss"])
    assert np.isfinite(final["bfloat16"])
    np.testing.assert_allclose(final["bfloat16"], final["float32"], rtol=0.05)
