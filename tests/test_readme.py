"""The README's commands and code run as written."""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_api_tour_runs_as_written():
    blocks = _blocks("python")
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["grads"].shape == (3, 5)
    assert namespace["spikes"].shape == (8, 100, 32)
    # "Writing a method": the example method ran its hook before each of the two epochs.
    assert namespace["metrics"]["accuracy"] > 0.5
    workdir = pathlib.Path(namespace["config"].train.workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["dspike_b"] for r in records if r["kind"] == "epoch_start"] == [1.0, 1.5]


def test_ci_runs_exactly_the_readme_test_command():
    commands = [block.strip() for block in _blocks("bash")]
    test_command = commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command


def test_main_job_command_names_the_quickstart():
    main_job = _blocks("bash")[0]
    assert "python -m experiments.quickstart" in main_job
    assert (ROOT / "experiments" / "quickstart.py").exists()
