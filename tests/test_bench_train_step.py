"""The train-step benchmark runs end to end on a toy model and writes measured numbers."""

import dataclasses
import re

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks import train_step
from benchmarks.common import DataShape
from jsnn import LIF
from jsnn.run import build_model

TINY = [
    "--model",
    "fdg_toy",
    "--image-size",
    "8",
    "--channels",
    "1",
    "--T",
    "2",
    "--batch",
    "2",
    "--repeats",
    "2",
    "--remat",
    "none,block",
    "--dtype",
    "float32,bfloat16",
    "--memory-T",
    "2",
    "--memory-batch",
    "4",
    "--check",
    "1,2",
    "--budget-gib",
    "1",
    "--max-T",
    "2",
]

# Numbers as the benchmark prints them: thousands separated by commas (then no decimals).
NUMBER = r"[0-9]{1,3}(,[0-9]{3})+|[0-9]+\.[0-9]+|[0-9]+"


def _number(cell: str) -> float:
    assert re.fullmatch(NUMBER, cell), cell
    return float(cell.replace(",", ""))


def _rows(text: str, header: str) -> list[list[str]]:
    """The body rows of the first table after the line starting with ``header``."""
    lines = text[text.index(header) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_number_pattern_reads_thousands():
    assert _number("1,015") == 1015 and _number("12,345,678") == 12345678
    assert _number("0.0012") == 0.0012 and _number("3") == 3


def test_benchmark_writes_its_tables_with_measured_numbers(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    out = train_step.main([*TINY, "--results", str(results)])
    text = results.read_text()
    assert text.startswith("# Benchmark results") and text.count("## train_step, ") == 1
    assert "fdg_toy" in text and "commit " in text and "--results" in text
    # Step time: one row per remat and dtype, the spiking and the twin's steps both measured.
    rows = _rows(text, "### Step time")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("2", remat, dtype) for remat in ("none", "block") for dtype in ("float32", "bfloat16")
    ]
    for row in rows:
        snn, ann, ratio = (_number(cell) for cell in row[3:6])
        assert snn > 0 and ann > 0 and ratio > 0
        for cell in row[6:10]:
            assert _number(cell) > 0
        for pair in row[10:12]:
            assert all(_number(part) >= 0 for part in pair.split(" / "))
    assert rows[0][6:10] == ["1.00"] * 4  # no remat, float32: its own baseline
    # Memory against T, compiled at batch 4, and the largest T within the budget (the cap).
    memory = _rows(text, "### Memory of the spiking step")
    assert [row[0] for row in memory] == ["2"]
    for cell in memory[0][1:]:
        temporaries, total = re.fullmatch(r"(\S+) \((\S+)\)", cell).groups()
        assert 0 <= _number(temporaries) <= _number(total) and _number(total) > 0
    largest = _rows(text, "Largest T whose step total fits")
    assert [(row[0], row[1]) for row in largest] == [("none", "2"), ("block", "2")]
    assert _number(largest[0][2]) > 0 and largest[0][3] == "-"
    check = re.search(
        r"Check, T = 2 with the best remat \((none|block)\) against T = 1 with the naive scan "
        r".*: [0-9.]+ MiB vs [0-9.]+ MiB .*\*\*(pass|miss)\*\*\. Against jsnn's own step at "
        r"T = 1 without remat \([0-9.]+ MiB\): ratio [0-9.]+, (no more|more) memory\.",
        text,
    )
    assert check
    assert re.search(r"Time cost of remat .*: block: [0-9.]+\.", text)
    # Printed too, and returned for scripts.
    assert "### Step time" in capsys.readouterr().out
    assert len(out["times"]) == 4 and out["memory"]["compiles"] == 4


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_naive_scan_lif_is_the_same_neuron(reset):
    # The memory baseline differs from jsnn.LIF only in what its backward pass keeps.
    currents = jax.random.normal(jax.random.key(0), (3, 7, 5))  # [B, T, N]
    weights = jax.random.normal(jax.random.key(1), currents.shape)
    layer = LIF(decay=0.6, reset=reset)
    scan = train_step.ScanLIF(decay=0.6, reset=reset)

    def loss(layer, c):
        return (layer(c) * weights).sum()

    for a, b in zip(
        jax.value_and_grad(loss, argnums=1)(layer, currents),
        jax.value_and_grad(loss, argnums=1)(scan, currents),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_naive_scan_model_has_only_scan_lif_layers_with_the_recipes_neurons():
    args = train_step.parse_args(TINY)
    config = train_step._config(args, steps=2, remat="none", dtype="float32", spiking=True)
    naive = dataclasses.replace(config, method=train_step.NaiveScan())
    shape = DataShape(num_classes=10, input_shape=(8, 8, 1))
    plain, scan = (build_model(c, shape) for c in (config, naive))
    layers = [m for _, m in nnx.iter_modules(plain) if isinstance(m, LIF)]
    scans = [m for _, m in nnx.iter_modules(scan) if isinstance(m, LIF)]
    assert layers and [type(m) for m in scans] == [train_step.ScanLIF] * len(layers)
    assert all(type(m) is LIF for m in layers)
    for a, b in zip(layers, scans, strict=True):
        same = (a.reset, a.detach_reset, float(a.decay), repr(a.surrogate.get_value()))
        assert same == (b.reset, b.detach_reset, float(b.decay), repr(b.surrogate.get_value()))
    image = jax.random.uniform(jax.random.key(2), (2, 8, 8, 1))
    np.testing.assert_allclose(plain(image), scan(image), rtol=1e-5, atol=1e-6)
