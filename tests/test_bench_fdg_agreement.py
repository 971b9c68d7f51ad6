"""The agreement benchmark runs end to end at toy sizes, and its parts decide as the hook does."""

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common, fdg_agreement
from jsnn import run, train
from jsnn.methods import dspike

TINY = [
    "--epochs",
    "2",
    "--batches",
    "1",
    "--directions",
    "4",
    "--keys",
    "2",
    "--T",
    "1",
    "--batch-size",
    "16",
    "--b-grid",
    "0.1,4",
]


def _row(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {name}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_benchmark_counts_agreement_at_the_runs_b_and_over_the_grid(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    out = fdg_agreement.main([*TINY, "--results", str(results)])
    agreement = out["agreement"]
    assert agreement["points"] == 2 and agreement["ks"] == [4] and agreement["size"] == 288
    decisions = agreement["decisions"]
    assert len(decisions) == 2 * 3  # the run's b and a grid of 2, at each of 2 points
    assert [d["own_b"] for d in decisions] == [True, False, False] * 2
    for d in decisions:
        assert len(d["picks"][4]) == 2 and all(p in range(3) for p in d["picks"][4])
        assert d["best"] == int(np.argmax(d["cosines"])) and d["margin"] >= 0
    grid_low = [d for d in decisions if d["b"] == np.float32(0.1)]
    assert all(d["valid"] == 2 and d["cosines"][2] == -np.inf for d in grid_low)  # 0.1 - 0.2
    # The probe decides at the run's b what the method's own hook then sets.
    assert agreement["exact_b"] == agreement["hook_b"] and len(agreement["hook_b"]) == 2
    assert agreement["times"]["exact"] > 0 and agreement["times"][4] > 0
    # The section.
    text = results.read_text()
    assert text.startswith("# Benchmark results") and text.count("## fdg_agreement, ") == 1
    assert "python -m benchmarks.fdg_agreement" in text and "commit " in text
    random4 = _row(text, "random directions, k = 4")
    assert re.fullmatch(r"[01]\.[0-9]{3} \([0-4]/4; [0-9.]+-[0-9.]+\)", random4[4]), random4
    assert re.fullmatch(r"[01]\.[0-9]{3} \([0-9]+/8; [0-9.]+-[0-9.]+\)", random4[5]), random4
    assert float(random4[3]) > 0
    assert _row(text, "exact FDG (all 288 weights)")[1] == "576"
    assert _row(text, "baseline: always b+0.2")[4].endswith(")")
    assert "### Agreement with the exact search" in capsys.readouterr().out
    common.append_results(results, "## fdg_agreement, later\n")
    text = results.read_text()
    assert text.count("# Benchmark results") == 1 and text.count("## fdg_agreement, ") == 2
    assert text.index("### Agreement") < text.index("## fdg_agreement, later")


def test_parts_decide_as_the_hooks_search():
    args = fdg_agreement.parse_args(TINY)
    config = fdg_agreement.config_for(args).override({"method.chunk": 8})
    dataset = run.build_dataset(config)
    model = run.build_model(config, dataset)
    parts = fdg_agreement.Parts(config, model)
    mesh = train.data_mesh(jax.devices()[:1])
    batch = train.shard_batch(dataset.train(batch_size=16, seed=0)[0], mesh)
    state = nnx.state(model)
    candidates, gradients = parts.gradients(state, batch, jnp.asarray([1.0, 0.1]))
    np.testing.assert_allclose(candidates, [[1.0, 1.2, 0.8], [0.1, 0.3, -0.1]], rtol=1e-6)
    key = jax.random.fold_in(jax.random.key(config.train.seed), 0)  # the hook's key at epoch 0
    directions = parts.directions(key, 16)
    exact = parts.choose(candidates, gradients, parts.reference(state, batch))
    sketch = parts.sketch(state, batch, directions)
    sketched = parts.choose(candidates, gradients, sketch, directions)
    method = config.method
    for k, decided in ((0, exact), (16, sketched)):
        live = run.build_model(config, dataset)  # the hook sets b on the model it searches
        hook = dspike.temperature_search(
            live,
            parts.loss,
            eps=method.eps,
            b_step=method.b_step,
            chunk=8,
            directions=k,
            seed=config.train.seed,
        )
        scalars = hook(live, 0, batch)
        cosines = [scalars["cosine_b"], scalars["cosine_b_up"], scalars["cosine_b_down"]]
        np.testing.assert_allclose(decided["cosines"][0], cosines, rtol=1e-4, atol=1e-6)
        assert float(decided["b"][0]) == scalars["dspike_b"]
        assert decided["cosines"][1, 2] == -np.inf  # b - 0.2 <= 0 is no candidate
        assert float(decided["b"][1]) in (float(np.float32(0.1)), float(np.float32(0.3)))
