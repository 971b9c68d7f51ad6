"""The example notebook runs from top to bottom and trains."""

import pathlib

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_digits_notebook_runs_and_learns(tmp_path):
    notebook = nbformat.read(ROOT / "examples" / "digits.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    outputs = [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]
    metrics = outputs[3][-1]["data"]["text/plain"]
    accuracy = float(metrics.split("'accuracy': ")[1].split(",")[0].rstrip("}"))
    assert accuracy > 0.85
    assert any("image/png" in output.get("data", {}) for output in outputs[4])
