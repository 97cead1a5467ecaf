"""The durable results store: one JSON record per run, written atomically (ARCHITECTURE section 5).

Layout under the results directory::

    <results_dir>/<sweep>/runs/<run_id>.json         the run record (the source of truth)
    <results_dir>/<sweep>/checkpoints/<run_id>.pt    the latest checkpoint of an unfinished run
    <results_dir>/<sweep>/wandb/                      the W&B mirror's local files

The record schema is defined here and nowhere else (`new_record`). Records do not depend on analysis; `load()`
turns them into a pandas DataFrame for `scaling fit` and notebooks.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("planned", "running", "completed", "diverged", "failed")
FINAL_STATUSES = ("completed", "diverged")
"""A run in one of these states is never trained again."""


class StoreError(RuntimeError):
    """A results store problem (corrupt record, unreadable folder); the message names the file and the fix."""


# ---- atomic writes -------------------------------------------------------------------------------------------
def atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary file in the same folder, fsync, then rename it over `path`:
    a crash leaves either the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ---- paths ---------------------------------------------------------------------------------------------------
def sweep_dir(results_dir: Path, sweep: str) -> Path:
    return Path(results_dir) / sweep


def record_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return sweep_dir(results_dir, sweep) / "runs" / f"{run_id}.json"


def checkpoint_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return sweep_dir(results_dir, sweep) / "checkpoints" / f"{run_id}.pt"


# ---- records -------------------------------------------------------------------------------------------------
def new_record(run_id: str, sweep: str, name: str, config: dict, derived: dict, provenance: dict) -> dict:
    """A fresh record in state 'planned'. Every field a record may hold is named here."""
    return {
        "schema": SCHEMA_VERSION,
        "id": run_id,
        "sweep": sweep,
        "name": name,
        "status": "planned",
        "config": config,
        "derived": derived,
        "results": {},
        "provenance": provenance,
        "error": None,
    }


def write_record(path: Path, record: dict) -> None:
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status {record.get('status')!r} is not one of {STATUSES}")
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False, allow_nan=False, default=_json_default))


def _json_default(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable in a run record: {type(o).__name__}")


def read_record(path: Path) -> dict:
    """Read one record; a corrupt or foreign file raises StoreError naming it (it is never overwritten)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(
            f"corrupt run record {path} ({e.msg} at line {e.lineno}): move it aside to re-run that cell"
        ) from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA_VERSION or "status" not in record:
        raise StoreError(f"{path} is not a scaling run record (schema {SCHEMA_VERSION}): move it out of runs/")
    return record


def iter_records(results_dir: Path, sweep: str | None = None):
    """Yield (path, record) for every record under results_dir (one sweep, or all)."""
    root = Path(results_dir)
    pattern = f"{sweep}/runs/*.json" if sweep else "*/runs/*.json"
    for path in sorted(root.glob(pattern)):
        yield path, read_record(path)


def load(results_dir: Path, sweep: str | None = None):
    """All records as a pandas DataFrame, one row per run; nested fields become dotted columns
    (`derived.tokens`, `results.val_loss`, `config.model.d_model`); lists (loss curves, loads) are left out."""
    import pandas as pd

    root = Path(results_dir)
    if not root.is_dir():
        raise StoreError(f"results directory {root} does not exist: run `scaling train` first or pass the right path")
    return pd.json_normalize([_without_lists(rec) for _, rec in iter_records(root, sweep)], sep=".")


def _without_lists(d: dict) -> dict:
    return {k: _without_lists(v) if isinstance(v, dict) else v for k, v in d.items() if not isinstance(v, list)}


CURVE_COLUMNS = ("run", "name", "sweep", "status", "budget_flops", "peak_lr", "batch_tokens", "seed",
                 "activation_ratio", "granularity", "step", "tokens", "flops", "loss", "smoothed_loss", "lr",
                 "val_loss")


def curves(results_dir: Path, sweep: str | None = None):
    """Every run's training curve as one long-format DataFrame, a row per logged step: the run (id, name, sweep,
    status, budget, peak lr, batch, seed, A, G), the step, tokens and FLOPs so far (tokens x M), the train loss,
    its smoothed value, the lr at that step, and the run's final validation loss (nats per token)."""
    import pandas as pd

    rows = []
    for _, rec in iter_records(Path(results_dir), sweep):
        d, r, cfg = rec.get("derived") or {}, rec.get("results") or {}, rec.get("config") or {}
        M = (d.get("flops_per_token") or {}).get("M")
        run = {"run": rec["id"], "name": rec.get("name"), "sweep": rec.get("sweep"), "status": rec["status"],
               "budget_flops": d.get("budget_flops"), "peak_lr": (cfg.get("train") or {}).get("lr"),
               "batch_tokens": d.get("batch_tokens"), "seed": cfg.get("seed"),
               "activation_ratio": d.get("activation_ratio"), "granularity": d.get("granularity"),
               "val_loss": r.get("val_loss")}
        for p in r.get("curve") or []:
            rows.append({**run, "step": p.get("step"), "tokens": p.get("tokens"),
                         "flops": p["tokens"] * M if M and p.get("tokens") is not None else None,
                         "loss": p.get("train_loss"), "smoothed_loss": p.get("smoothed_loss"), "lr": p.get("lr")})
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
