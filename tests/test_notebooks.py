"""Every notebook in notebooks/ runs top to bottom on a fresh results folder."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXPECTED = {"01_run_records.ipynb": "runs plotted", "analysis.ipynb": "figure files"}
"""A line each notebook must print: it ran to its end and did its job."""
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert EXPECTED[path.name] in outputs
