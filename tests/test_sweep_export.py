"""A dry run's plan as data (csv, json, jsonl): every cell's resolved config and derived quantities, complete
enough to rebuild the run and its id."""

import csv
import io
import json

import pytest

from scaling.config import from_dict
from scaling.run import run_id
from scaling.sweep.plan import compose_sweep, plan_sweep
from tests.inprocess import scaling


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_dry_run_exports_every_cell_for_another_launcher(fmt):
    out = scaling("sweep", "demo", "--dry-run", "--no-probe", "--format", fmt)
    assert out.returncode == 0, out.stderr
    plan = plan_sweep(compose_sweep("demo"), data_required=False)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert [r["id"] for r in rows] == [c.run_id for c in plan.cells]
        first, cell = rows[0], plan.cells[0]
        assert float(first["train.lr"]) == cell.run.train.lr and int(first["derived.steps"]) == cell.plan.steps
        assert int(first["train.batch_size"]) * int(first["model.seq_len"]) == int(first["derived.batch_tokens"])
        assert float(first["derived.flops_per_token.M"]) == cell.plan.counts.M
        return
    cells = json.loads(out.stdout) if fmt == "json" else [json.loads(line) for line in out.stdout.splitlines()]
    assert len(cells) == len(plan.cells)
    for exported, cell in zip(cells, plan.cells, strict=True):
        assert exported["id"] == cell.run_id == run_id(from_dict(exported["config"]))  # the whole resolved run
        assert exported["name"] == cell.name and exported["derived"]["tokens"] == cell.plan.tokens


def test_a_format_without_a_dry_run_or_an_unknown_one_is_refused():
    out = scaling("sweep", "demo", "--format", "csv")
    assert out.returncode == 2 and "add --dry-run" in out.stderr
    out = scaling("sweep", "demo", "--dry-run", "--format", "xml")
    assert out.returncode == 2 and "not one of table, csv, json, jsonl" in out.stderr
