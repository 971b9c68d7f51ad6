"""The temperature-search cost benchmark runs end to end at toy sizes and times the hook's
search."""

import re

import jax
import numpy as np

from benchmarks import common, fdg_cost
from jsnn import run, train
from jsnn.methods import dspike

TINY = [
    "--model",
    "digits_net",
    "--image-size",
    "8",
    "--channels",
    "1",
    "--T",
    "1",
    "--batch",
    "2",
    "--repeats",
    "1",
    "--search-repeats",
    "1",
    "--max-passes",
    "8",
    "--directions",
    "2,8",
    "--chunks",
    "2",
    "--chunk",
    "2",
    "--memory-batch",
    "0",
    "--check-batch",
    "4",
]

# common.fmt drops the decimals from 1,000 up.
NUMBER = r"[0-9]{1,3}(,[0-9]{3})+|[0-9]{1,3}\.[0-9]+"


def _number(cell: str) -> float:
    assert re.fullmatch(NUMBER, cell), cell
    return float(cell.replace(",", ""))


def _row(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {name}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_benchmark_writes_its_table_with_measured_and_extrapolated_rows(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    out = fdg_cost.main([*TINY, "--results", str(results)])
    cost = out["cost"]
    rows = {row.name: row for row in cost["rows"]}
    assert cost["size"] == 288 and cost["weights"] == 4  # --max-passes 8: 4 of 288 weights
    step = rows["training step (median of 1)"]
    assert step.how == "measured" and step.seconds > 0 and step.compile_s > 0
    subset = rows["exact FDG search, first 4 of 288 weights"]
    assert (subset.passes, subset.chunk, subset.how) == (8, 2, "measured")
    whole = rows["exact FDG search, all 288 weights"]
    assert whole.passes == 576 and whole.how.startswith("extrapolated") and whole.compile_s is None
    assert whole.seconds > subset.seconds  # 576 passes cost more than 8
    assert rows["random-direction search, k = 2"].how == "measured"
    assert rows["random-direction search, k = 8"].how.startswith("extrapolated")
    assert set(cost["per_pass"]) == {"exact, chunk 2", "random k = 2, chunk 2"}
    assert cost["memory"] == []  # --memory-batch 0
    assert cost["check"]["batch"] == 4 and cost["check"]["step"] > 0
    assert cost["check"]["forward"] > 0
    # The section: every cell of the searches' rows a number, the step its own unit.
    text = results.read_text()
    assert text.startswith("# Benchmark results") and text.count("## fdg_cost, ") == 1
    assert "--results" in text and "digits_net" in text and "commit " in text
    assert "python -m benchmarks.fdg_cost" in text
    assert _row(text, "training step")[6] == "1.00"
    for name in ("exact FDG search, first 4 of 288 weights", "exact FDG search, all 288 weights"):
        for cell in _row(text, name)[5:9]:
            _number(cell)
    assert "Compiled, not run" not in text and "Check at batch 4" in text
    # Printed too; a later section is appended under the same header.
    assert "### Cost of one temperature search" in capsys.readouterr().out
    common.append_results(results, "## fdg_cost, later\n")
    text = results.read_text()
    assert text.count("# Benchmark results") == 1 and text.count("## fdg_cost, ") == 2


def test_timed_search_is_the_hooks_search():
    args = fdg_cost.parse_args(TINY)
    config = fdg_cost.config_for(args).override({"method.chunk": 8})
    digits = run.build_dataset(config.override({"data.name": "digits"}))
    model = run.build_model(config, digits)
    search = fdg_cost.Search(config, model)
    mesh = train.data_mesh(jax.devices()[:1])
    state = train.replicate(train.TrainState.create(model, train.optimizer(config.train, 10)), mesh)
    batch = train.shard_batch(digits.train(batch_size=16, seed=0)[0], mesh)
    key = jax.random.fold_in(jax.random.key(config.train.seed), 0)  # the hook's key at epoch 0
    timed = search.random(chunk=8)(state, batch, search.directions(key, 16))
    method = config.method
    hook = dspike.temperature_search(
        state.model(),
        search.loss,
        eps=method.eps,
        b_step=method.b_step,
        chunk=8,
        directions=16,
        seed=config.train.seed,
    )
    live = state.model()
    scalars = hook(live, 0, batch)
    np.testing.assert_allclose(
        timed["cosines"],
        [scalars["cosine_b"], scalars["cosine_b_up"], scalars["cosine_b_down"]],
        rtol=1e-5,
        atol=1e-6,
    )
    assert float(timed["b"]) == scalars["dspike_b"] == float(dspike.temperature(live))
    gradients = jax.jit(search.gradients)(state, batch)  # b, b + 0.2, b - 0.2
    assert jax.tree.leaves(gradients)[0].shape == (3, search.size)
