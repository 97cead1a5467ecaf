"""A sweep's plan as data, for another launcher or trainer: `scaling sweep NAME --dry-run --format csv|json|jsonl`.

Each cell is its run id, cell name, index and sweep, its resolved run config (`config`: every key of the run, as a
record keeps it) and what planning derived from it (`derived`: tokens, steps, batch in sequences and tokens, warmup,
parameter and FLOP counts, exactly a run record's `derived` section, run.RunPlan.derived). JSON is a list of such
objects, JSONL one per line, CSV one row per cell with the keys flattened: config keys as they are written on a
command line (`model.d_model`, `train.lr`, `budget_flops`), derived ones under `derived.` (`derived.steps`,
`derived.flops_per_token.M`). The same names fill the placeholders of a command template.
"""

from __future__ import annotations

import csv
import io
import json

from scaling.config import to_dict
from scaling.keys import flatten

FORMATS = ("table", "csv", "json", "jsonl")
"""`--format` of a dry run: the table (default), or the cells as data."""


def cell_records(plan) -> list[dict]:
    """One object per cell of a sweep plan (sweep.plan.SweepPlan), in plan order."""
    return [{"id": c.run_id, "name": c.name, "index": c.index, "sweep": plan.name, "config": to_dict(c.run),
             "derived": c.plan.derived()} for c in plan.cells]


def cell_row(record: dict) -> dict:
    """A cell record as one flat row: id, name, index, sweep, the config's keys, then derived.* keys."""
    head = {k: record[k] for k in ("id", "name", "index", "sweep")}
    return {**head, **flatten(record["config"]), **flatten(record["derived"], "derived.")}


def render(plan, fmt: str) -> str:
    """The plan's cells in `fmt` (csv, json or jsonl) as text."""
    records = cell_records(plan)
    if fmt == "json":
        return json.dumps(records, indent=1) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    if fmt == "csv":
        rows = [cell_row(r) for r in records]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
        return out.getvalue()
    raise ValueError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
