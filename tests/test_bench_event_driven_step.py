"""The event-driven step benchmark runs end to end at toy sizes; its BPTT twin is the same
network's forward pass."""

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks import event_driven_step as bench
from jsnn.methods import event_driven as ed


def test_the_bptt_twin_spikes_exactly_as_the_event_driven_network():
    net = ed.EventDrivenNet(
        "4C3p1-P2-12",
        input_shape=(8, 8, 1),
        num_classes=10,
        steps=6,
        neurons=bench.METHOD.neuron_options(),
        rngs=nnx.Rngs(0),
    )
    images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    ed.initialize_scales(net, images, avg_spike_init=1.0)
    spikes = net(images)
    assert float(spikes.sum()) > 0
    np.testing.assert_array_equal(bench.BPTTNet(net)(images), spikes)


def test_the_benchmark_reports_both_steps(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = bench.main(["--T", "2", "--batch", "2", "--repeats", "1", "--results", str(results)])
    assert set(out["rows"]) == {2}
    for row in out["rows"].values():
        assert row["event-driven"]["median"] > 0 and row["BPTT"]["median"] > 0
    assert "## event_driven_step" in results.read_text()
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "0"])
