"""Smoke test of ``python -m benchmarks.lif_layer`` at a tiny size, and of its verdicts."""

from __future__ import annotations

import re

import pytest

from benchmarks import lif_layer


def _row(text: str, framework: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {framework} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_tiny_run_times_jsnn_and_the_floor(tmp_path):
    results = tmp_path / "RESULTS.md"
    argv = ["--sizes", "64", "--steps", "8", "--batch", "2", "--repeats", "2", "--rounds", "1"]
    argv += ["--peers", "spyx", "--peers-venv", str(tmp_path / "absent"), "--results", str(results)]
    out = lif_layer.main(argv)
    text = results.read_text()
    assert text.count("## lif_layer, ") == 1 and "**n = 64**" in text
    jsnn, floor = _row(text, "jsnn"), _row(text, "floor")
    for row in (jsnn, floor):
        assert re.fullmatch(r"[0-9]+\.[0-9]", row[3]), row  # median (ms)
        assert float(row[8].replace(",", "")) >= 0, row  # XLA temp (MiB)
    assert floor[4] == "1.000" and float(jsnn[4]) > 0 and jsnn[5] == "1.00"
    assert floor[6] == "-" and re.fullmatch(r"-?[0-9]+\.[0-9]", jsnn[6])  # over own floor
    assert "Peers not run: no virtual environment" in text
    assert "- jsnn: LIF decay 0.8, v_th 1, hard reset, arctan" in text
    ours = {row["framework"]: row for row in out["results"][64]}
    assert 0 < ours["jsnn"]["spike_rate"] < 1 and ours["jsnn"]["grad_norm"] > 0


def _result(framework: str, seconds: float, variant: str = "v") -> dict:
    return {"framework": framework, "variant": variant, "median_s": seconds, "skipped": None}


def test_targets_name_the_fastest_peer_and_the_verdict():
    rows = [
        _result("jsnn", 1.1),
        _result("floor", 1.0),
        _result("spyx", 2.0, "jit"),
        _result("norse", 1.5, "torch.compile"),
        {"framework": "snntorch", "variant": "-", "skipped": "not installed"},
    ]
    lines = lif_layer.check_targets("cpu", 2048, rows)
    assert lines[0] == "- target jsnn <= 1.15x the floor at n = 2048: 1.100x, met"
    assert (
        lines[1]
        == "- target >= 1.7x faster than fastest peer (norse, torch.compile): 1.36x, missed"
    )
    assert lif_layer.check_targets("cpu", 1024, rows) == []  # only at the largest size
    gpu = lif_layer.check_targets("gpu", 16384, rows)
    assert gpu[1].endswith("(spyx, jit): 1.82x, met")
    assert gpu[2] == "- target >= 2.0x faster than spikingjelly: not measured (not run)"


def test_neuron_cost_is_measured_over_each_frameworks_own_floor():
    rows = [
        _result("jsnn", 1.1),
        _result("floor", 1.0),
        _result("torch_floor", 0.9),
        _result("spikingjelly", 1.2, "torch backend"),
        _result("spyx", 1.15, "jit"),
    ]
    assert lif_layer.over_own_floor(rows[3], rows) == pytest.approx(0.3)
    assert lif_layer.over_own_floor(rows[4], rows) == pytest.approx(0.15)
    assert lif_layer.neuron_cost(rows) == [
        "- the neuron layer over its own framework's floor: jsnn 100.0 ms, the cheapest peer "
        "150.0 ms (spyx, jit)"
    ]
    # The torch floor is no peer: never the fastest one.
    assert "torch_floor" not in lif_layer.check_targets("cpu", 2048, rows)[1]


def test_rounds_pool_every_timed_run():
    first = {**_result("spyx", 0.0), "times_s": [3.0, 1.0], "peak_mib": 10.0}
    second = {**_result("spyx", 0.0), "times_s": [2.0], "peak_mib": 30.0}
    pooled = lif_layer._pool([first, second])
    assert pooled["times_s"] == [3.0, 1.0, 2.0] and pooled["median_s"] == 2.0
    assert pooled["peak_mib"] == 30.0 and pooled["rounds"] == 2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--sizes", "0"], "positive integers"),
        (["--peers", "lava"], "subset of spyx"),
        (["--repeats", "0"], "--repeats must be > 0, got 0"),
    ],
)
def test_bad_arguments_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit):
        lif_layer.parse_args(argv)
    assert needle in capsys.readouterr().err
