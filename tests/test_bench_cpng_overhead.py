"""The CPNG overhead benchmark runs end to end at toy sizes and reports consistent shares."""

import re

import pytest

from benchmarks import cpng_overhead


def test_cpng_overhead_reports_the_hook_as_a_share_of_an_epoch(tmp_path):
    results = tmp_path / "RESULTS.md"
    out = cpng_overhead.main(
        ["--T", "1", "--batch", "2", "--repeats", "1", "--results", str(results)]
    )
    rows = out["rows"]
    assert set(rows) == {"digits net", "VGG-16, CIFAR-100"}
    for row in rows.values():
        assert row["step"] > 0 and row["hook"] > 0 and row["pass"] > 0
        expected = row["hook"] / (row["steps"] * row["step"] + row["hook"])
        assert row["share"] == pytest.approx(expected)
    vgg = rows["VGG-16, CIFAR-100"]
    assert (vgg["layers"], vgg["steps"], vgg["extrapolated_steps"]) == (13, 25_000, 195)
    assert rows["digits net"]["layers"] == 2 and "extrapolated_share" not in rows["digits net"]
    text = results.read_text()
    assert "## cpng_overhead" in text and "at batch 256, extrapolated" in text
    assert re.search(r"\| digits net \| 4 \| 32 \| 2 \|", text)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        cpng_overhead.parse_args(["--repeats", "0"])
