"""The torchrun entry point of one cell, run as a plain process (one rank): it trains the cell in its file and
exits 0; a wrong command line exits 2 with the usage."""

import json
import subprocess
import sys

from scaling import store
from scaling.compose import compose
from scaling.config import to_dict
from scaling.run import plan_run

TINY = ["budget_flops=2e9", "model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64",
        "train.batch_size=4", "data.val_tokens=2048", "wandb.mode=disabled", "sweep=cell"]


def test_a_wrong_command_line_shows_the_usage():
    out = subprocess.run([sys.executable, "-m", "scaling.sweep.run_cell"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "usage: torchrun" in out.stderr


def test_the_cell_in_the_file_is_trained_and_recorded(tmp_path):
    run = compose(TINY + [f"results_dir={tmp_path}"])
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps({"run": to_dict(run), "owner": None}))
    out = subprocess.run([sys.executable, "-m", "scaling.sweep.run_cell", str(cell)], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    record = store.read_record(store.record_path(tmp_path, "cell", plan_run(run).run_id))
    assert record["status"] == "completed" and record["provenance"]["processes"] == 1
