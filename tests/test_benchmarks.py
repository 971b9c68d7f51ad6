"""The temperature-search benchmark runs end to end at toy sizes and measures the hook's search."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, fdg_search
from jsnn import train
from jsnn.train.optim import optimizer

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
    "--agreement-epochs",
    "2",
    "--agreement-batches",
    "1",
    "--agreement-directions",
    "4",
    "--agreement-keys",
    "2",
    "--agreement-T",
    "1",
    "--agreement-batch-size",
    "16",
    "--agreement-b-grid",
    "0.1,4",
]

# _fmt drops the decimals from 1,000 up.
NUMBER = r"[0-9]{1,3}(,[0-9]{3})+|[0-9]{1,3}\.[0-9]+"


def _number(cell: str) -> float:
    assert re.fullmatch(NUMBER, cell), cell
    return float(cell.replace(",", ""))


def _row(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {name}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_benchmark_writes_its_tables_with_measured_numbers(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    out = fdg_search.main([*TINY, "--results", str(results)])
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert text.count("## fdg_search, ") == 1
    assert "--results" in text and "digits_net" in text and "commit " in text
    # Part 1: the step, the measured and the extrapolated searches, every cell a number.
    step = _row(text, "training step")
    assert step[3] == "measured" and _number(step[5]) > 0
    assert step[6] == "1.00"
    subset = _row(text, "exact FDG search, first 4 of 288 weights")
    assert subset[1] == "8" and subset[3] == "measured"
    whole = _row(text, "exact FDG search, all 288 weights")
    assert whole[1] == "576" and whole[3].startswith("extrapolated")
    assert _row(text, "random-direction search, k = 2")[3] == "measured"
    assert _row(text, "random-direction search, k = 8")[3].startswith("extrapolated")
    for row in (subset, whole):
        for cell in row[5:9]:
            _number(cell)
    assert _number(whole[5]) > _number(subset[5])  # 576 passes cost more than 8
    assert "Compiled, not run" not in text  # --memory-batch 0
    assert "Check at batch 4" in text
    # Part 2: agreement counts at the run's b (2 points x 2 keys) and over the b grid.
    random4 = _row(text, "random directions, k = 4")
    assert re.fullmatch(r"[01]\.[0-9]{3} \([0-4]/4; [0-9.]+-[0-9.]+\)", random4[4]), random4
    assert re.fullmatch(r"[01]\.[0-9]{3} \([0-9]+/8; [0-9.]+-[0-9.]+\)", random4[5]), random4
    assert _number(random4[3]) > 0
    assert _row(text, "exact FDG (all 288 weights)")[1] == "576"
    assert _row(text, "baseline: always b+0.2")[4].endswith(")")
    # Printed too; a later section is appended under the same header.
    assert "### Agreement with the exact search" in capsys.readouterr().out
    assert out["agreement"]["points"] == 2
    assert len(out["agreement"]["decisions"]) == 2 * 3  # the run's b and a grid of 2
    common.append_results(results, "## fdg_search, later\n")
    text = results.read_text()
    assert text.count("# Benchmark results") == 1 and text.count("## fdg_search, ") == 2
    assert text.index("### Agreement") < text.index("## fdg_search, later")


def test_timed_searches_and_their_parts_are_the_hooks_search():
    config = train.Config(method="dspike", steps=1, fdg_chunk=8)
    dataset = train.build_dataset(config)
    model = train.build_model(config, dataset)
    searches = fdg_search.Searches(config, model)
    hooks = {
        k: train.temperature_search_hook(dataclasses.replace(config, fdg_directions=k), model)
        for k in (0, 16)
    }
    mesh = train.data_mesh(jax.devices()[:1])
    state = train.replicate(train.TrainState.create(model, optimizer(config, 10)), mesh)
    batch = train.shard_batch(dataset.train(batch_size=16, seed=0)[0], mesh)
    candidates, gradients = jax.jit(searches.candidate_gradients)(
        state, batch, jnp.asarray([1.0, 0.1])
    )
    np.testing.assert_allclose(candidates, [[1.0, 1.2, 0.8], [0.1, 0.3, -0.1]], rtol=1e-6)
    key = jax.random.fold_in(jax.random.key(config.seed), 0)  # the hook's key at epoch 0
    directions = searches.directions(key, 16)
    exact = fdg_search.candidate_cosines(
        candidates,
        gradients,
        jax.jit(searches.reference, static_argnames="chunk")(state, batch, chunk=8),
    )
    sketched = fdg_search.candidate_cosines(
        candidates,
        gradients,
        jax.jit(searches.sketch, static_argnames="chunk")(state, batch, directions, chunk=8),
        directions,
    )
    searched = searches.random(chunk=8)(state, batch, directions)  # what part 1 times
    for k, parts in ((0, exact), (16, sketched)):
        _, scalars = hooks[k](state, 0, batch)
        cosines = [scalars["cosine_b"], scalars["cosine_b_up"], scalars["cosine_b_down"]]
        np.testing.assert_allclose(parts[0], cosines, rtol=1e-4, atol=1e-6)
        assert float(candidates[0, int(np.argmax(parts[0]))]) == scalars["dspike_b"]
        assert parts[1, 2] == -np.inf  # b - 0.2 <= 0 is no candidate
    assert float(searched["b"]) == scalars["dspike_b"]
    np.testing.assert_allclose(searched["cosines"], cosines, rtol=1e-5)
