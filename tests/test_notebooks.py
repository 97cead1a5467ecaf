"""Every notebook in notebooks/ runs top to bottom on a results folder of synthetic records (no training): the
demo sweep, its fit (by the CLI) and its verification sweep."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from synthetic import write_precision_sweep, write_sweep

EXPECTED = {"01_run_records.ipynb": "runs plotted", "analysis.ipynb": "verdicts shown: ",
            "02_precision.ipynb": "configurations compared: 2"}
"""A line each notebook must print: it ran to its end and did its job."""
NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb") / "results"
    write_sweep(root, "demo", (1e11, 3e11, 1e12), (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2))
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "fit", "demo", "--results-dir", str(root),
                          "--bootstrap", "200", "--no-plots"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    write_sweep(root, "demo-verify", (3e12,), (1.5e-3, 3e-3, 6e-3), seed=1,
                laws=str(root / "demo" / "fit" / "fit.json"))
    write_precision_sweep(root, "precision_cpu")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, results, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("SCALING_RESULTS", str(results))
    monkeypatch.setenv("SCALING_SWEEP", "demo")
    monkeypatch.setenv("SCALING_PRECISION_SWEEP", "precision_cpu")
    before = sorted(p.name for p in results.glob("*/runs/*.json"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert EXPECTED[path.name] in outputs
    assert sorted(p.name for p in results.glob("*/runs/*.json")) == before  # nothing was trained
    if path.name == "analysis.ipynb":
        assert "curve points" in outputs and "verdict: " in outputs


def test_analysis_notebook_refuses_to_train_unasked(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_RESULTS", str(tmp_path))
    nb = nbformat.read(Path(__file__).parent.parent / "notebooks" / "analysis.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(Exception, match="TRAIN = True"):
        client.execute()
    assert not list(tmp_path.glob("*/runs/*.json"))
