"""The durable results store: its folder layout, its run records (the one schema), and atomic writes
(ARCHITECTURE section 5). Every path under a results directory is spelled here and nowhere else.

Layout under the results directory::

    <results_dir>/<sweep>/plan.json                   the sweep's last launched plan
    <results_dir>/<sweep>/runs/<run_id>.json          the run record (the source of truth)
    <results_dir>/<sweep>/checkpoints/<run_id>.pt     the latest checkpoint of an unfinished run
    <results_dir>/<sweep>/claims/<run_id>.claim       which process trains the cell now (claims.py)
    <results_dir>/<sweep>/logs/<run_id>.log           the cell's training log
    <results_dir>/<sweep>/slurm/                      Slurm submissions and job folders (slurm.py, slurm_queue.py)
    <results_dir>/<sweep>/wandb/                      the W&B mirror's local files
    <results_dir>/<sweep>/fit/                        `scaling fit`'s outputs

A sweep name is one folder name (letters, digits, `._-`), so nothing is ever written outside the results
directory. The record schema is defined here alone (`new_record`, `run_results` and `run_error` build its sections,
`read_record` checks it). `records_frame()` turns records into a pandas DataFrame for `scaling fit` and notebooks;
a record that cannot be read is named and skipped, never overwritten.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "diverged", "failed")
"""A record is written when an attempt starts (running) and ends in one of the others."""
FINAL_STATUSES = ("completed", "diverged")
"""A run in one of these states is never trained again, and its record is never replaced."""
RUN_ORDER = ("sweep", "derived.budget_flops", "derived.activation_ratio", "derived.granularity",
             "derived.batch_tokens", "config.train.lr", "config.seed", "id")
"""The canonical order of runs, as record fields: by sweep, then its coordinates (budget, A, G, batch, lr, seed);
`scaling runs`, the fit's inputs and the notebooks list runs in it."""
INTERRUPTED = "interrupted"
"""The error kind of an attempt that was stopped (Ctrl-C, a scheduler's signal) rather than failed: it resumes."""
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A sweep name: one folder name under the results directory (no '/', no leading '.', at most 128 characters)."""
TMP_STALE_S = 3600.0
"""A temporary file of an atomic write untouched this long is a leftover of a killed writer (`tidy` removes it)."""


class StoreError(RuntimeError):
    """A results store problem (corrupt record, unreadable folder); the message names the file and the fix."""


# ---- atomic writes -------------------------------------------------------------------------------------------
def _umask() -> int:
    """This process's umask (read without changing it where Linux tells; else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary file in the same folder, fsync it, rename it over `path`, and fsync the
    folder: a crash or power cut leaves either the old file or the new one, never a half-written or empty one.
    The file gets the permissions the umask gives a new file (so a team can share a results folder). A full disk
    raises StoreError saying so."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or _is_no_space(e):
            raise _write_error(path, e) from None
        raise


def _is_no_space(e: BaseException) -> bool:
    """torch.save reports a full disk as a RuntimeError naming the errno in words, or (its zip writer cut short)
    as "unexpected pos N vs M"."""
    text = str(e)
    return getattr(e, "errno", None) == errno.ENOSPC or any(
        s in text for s in ("No space left", "file write failed", "unexpected pos"))


def _write_error(path: Path, e: BaseException) -> StoreError:
    if _is_no_space(e):
        return StoreError(f"no space left on the device writing {path}: free disk space (or pass another "
                          f"--results-dir) and run the same command again; nothing already recorded was lost")
    if isinstance(e, PermissionError) or getattr(e, "errno", None) in (errno.EACCES, errno.EROFS, errno.EPERM):
        return StoreError(f"cannot write {path} (permission denied or read-only): make the results folder "
                          f"writable or pass --results-dir DIR")
    return StoreError(f"cannot write {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (a power cut keeps it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_log(path: Path):
    """Open a log under the results folder for appending (created with the umask's permissions), never through a
    symbolic link (O_NOFOLLOW): a link planted at a log's path is refused with a StoreError naming it, and
    nothing is written to its target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise StoreError(f"the log {path} is a symbolic link: nothing is written through one; move it aside "
                             f"and run the same command again") from None
        raise _write_error(path, e) from None
    return os.fdopen(fd, "a")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def check_writable(results_dir: Path) -> None:
    """Refuse, before any compute, a results directory this process cannot create or write into (it is created,
    and a file is created and removed in it: permission bits do not tell for root or a read-only mount)."""
    root = Path(results_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise StoreError(f"cannot write under {root} ({e.strerror or type(e).__name__}): make it writable or pass "
                         f"--results-dir DIR") from None


# ---- layout --------------------------------------------------------------------------------------------------
def sweep_name_problem(name: object) -> str | None:
    """Why `name` cannot be a sweep's folder name, or None when it can."""
    if not isinstance(name, str) or not SWEEP_NAME.fullmatch(name) or name in (".", ".."):
        return (f"sweep name {name!r} is not a plain folder name: use letters, digits, '.', '_' and '-' "
                f"(no '/', no leading '.' or '-', at most 128 characters)")
    return None


def sweep_dir(results_dir: Path, sweep: str) -> Path:
    """The sweep's folder; a name that would leave the results directory (`../x`, `/abs`) is refused."""
    problem = sweep_name_problem(sweep)
    if problem:
        raise StoreError(problem)
    return Path(results_dir) / sweep


def plan_path(results_dir: Path, sweep: str) -> Path:
    return sweep_dir(results_dir, sweep) / "plan.json"


def runs_dir(results_dir: Path, sweep: str) -> Path:
    return sweep_dir(results_dir, sweep) / "runs"


def record_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return runs_dir(results_dir, sweep) / f"{run_id}.json"


def checkpoint_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return sweep_dir(results_dir, sweep) / "checkpoints" / f"{run_id}.pt"


def checkpoint_shards_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    """The folder of a sharded (FSDP) run's checkpoint: one file per rank per step (scaling/sharding.py)."""
    return sweep_dir(results_dir, sweep) / "checkpoints" / f"{run_id}.shards"


def stable_dir(results_dir: Path, sweep: str, family: str) -> Path:
    """Where the runs of one branching family keep their states at their decay starts (scaling/branching.py)."""
    return sweep_dir(results_dir, sweep) / "stable" / family


def run_file_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    """The resolved run config handed to the processes of a multi-process cell (torchrun)."""
    return sweep_dir(results_dir, sweep) / "checkpoints" / f"{run_id}.run.json"


def claims_dir(results_dir: Path, sweep: str) -> Path:
    return sweep_dir(results_dir, sweep) / "claims"


def claim_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return claims_dir(results_dir, sweep) / f"{run_id}.claim"


def log_path(results_dir: Path, sweep: str, run_id: str) -> Path:
    return sweep_dir(results_dir, sweep) / "logs" / f"{run_id}.log"


def external_paths(results_dir: Path, sweep: str, run_id: str) -> dict[str, Path]:
    """launcher=command: a cell's files for the user's trainer: `result` (the JSON it writes), `cell` (the cell as
    JSON), `checkpoints` (its own folder, the same on every attempt)."""
    folder = sweep_dir(results_dir, sweep) / "external" / run_id
    return {"result": folder / "result.json", "cell": folder / "cell.json", "checkpoints": folder / "checkpoints"}


def slurm_submissions_dir(results_dir: Path, sweep: str) -> Path:
    return sweep_dir(results_dir, sweep) / "slurm" / "submissions"


def slurm_jobs_dir(results_dir: Path, sweep: str) -> Path:
    """submitit's folder; `%j` in it becomes the job id."""
    return sweep_dir(results_dir, sweep) / "slurm" / "jobs" / "%j"


def wandb_dir(results_dir: Path, sweep: str) -> Path:
    """The folder W&B's local files go under (its own `wandb/` subfolder is created inside)."""
    return sweep_dir(results_dir, sweep)


def wandb_files(wandb_dir_: Path) -> Path:
    """Where W&B itself writes under the folder it is given (`offline-run-*`, the unreachable marker)."""
    return Path(wandb_dir_) / "wandb"


def verify_dir(results_dir: Path, sweep: str) -> Path:
    """Where `scaling verify` draws a verification sweep's figure."""
    return sweep_dir(results_dir, sweep) / "verify"


def fit_dir(results_dir: Path, sweep: str | None) -> Path:
    """Where `scaling fit` writes for one sweep of the store (`all` for every sweep at once)."""
    return sweep_dir(results_dir, sweep or "all") / "fit"


def list_sweeps(results_dir: Path) -> list[str]:
    """The sweeps under a results directory: folders holding runs/ or a plan.json."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not sweep_name_problem(p.name) and ((p / "runs").is_dir() or (p / "plan.json").is_file()))


def write_plan(results_dir: Path, sweep: str, text: str) -> Path:
    """Write a sweep's plan.json (what `scaling status` lists as its cells)."""
    path = plan_path(results_dir, sweep)
    atomic_write_text(path, text)
    return path


def read_plan(results_dir: Path, sweep: str) -> dict | None:
    """A sweep's plan.json as a dict, None when there is none; unreadable -> StoreError naming the file."""
    path = plan_path(results_dir, sweep)
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_bytes().decode())
        if not isinstance(plan, dict) or not isinstance(plan.get("cells", []), list):
            raise ValueError("not a plan")
        return plan
    except (OSError, ValueError, UnicodeDecodeError):
        raise StoreError(f"corrupt sweep plan {path}: move it aside and run `scaling sweep` again to rewrite it "
                         f"(the run records are not touched)") from None


# ---- records -------------------------------------------------------------------------------------------------
def new_record(run_id: str, sweep: str, name: str, config: dict, derived: dict, provenance: dict) -> dict:
    """A fresh record of an attempt that starts now (state 'running'). Every field a record may hold is named
    here; `results` is filled by `run_results`, `error` by `run_error`."""
    return {
        "schema": SCHEMA_VERSION,
        "id": run_id,
        "sweep": sweep,
        "name": name,
        "status": "running",
        "config": config,
        "derived": derived,
        "results": {},
        "provenance": provenance,
        "error": None,
    }


RESULT_FIELDS = ("val_loss", "train_loss_smoothed", "steps_done", "tokens_done", "tokens_per_s", "mfu", "train_s",
                 "wall_s", "curve", "evals", "expert_load", "expert_load_steps", "max_expert_load_ratio",
                 "diagnostics", "branched_from_step", "pipeline")
"""A finished attempt's `results`: held-out and smoothed train loss (nats/token), progress, speed, the logged
curve and evaluations, each expert's share of its layer's assignments over `expert_load_steps`, the FP8
quantization diagnostics (scaling/diagnostics.py; empty unless train.diagnostics_every), the step a branched
run started from (the stable-phase state of a shorter run of its family, scaling/branching.py; 0 = from scratch:
the steps before it were trained, and their time counted in train_s, by that run), and, under
train.parallel=pipeline, the layout and its measured times (the mean step's pipeline seconds, each stage's forward
and backward seconds, the unit seconds a balanced split was made from; None otherwise)."""
ERROR_KINDS = ("exception", INTERRUPTED, "diverged")


def was_interrupted(record: dict) -> bool:
    """Whether the record's last attempt was stopped rather than failed (it resumes, with or without
    --retry-failed)."""
    return record["status"] == "failed" and (record.get("error") or {}).get("kind") == INTERRUPTED


def record_config(record: dict) -> dict:
    """The record's resolved config with the schema's defaults for the fields it predates (config.with_defaults)."""
    from scaling.config import with_defaults

    return with_defaults(record.get("config") or {})


def run_results(**fields) -> dict:
    """A record's `results` section: exactly RESULT_FIELDS (a missing or unknown one is a bug: ValueError)."""
    if set(fields) != set(RESULT_FIELDS):
        raise ValueError(f"run results need exactly {RESULT_FIELDS}; got {sorted(fields)}")
    return {k: fields[k] for k in RESULT_FIELDS}


def run_error(kind: str, step: int, reason: str, traceback: str | None = None) -> dict:
    """A record's `error` section: what stopped the attempt (one line), at which step."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"error kind {kind!r} is not one of {ERROR_KINDS}")
    error = {"kind": kind, "step": step, "reason": reason.splitlines()[0] if reason else kind}
    if traceback is not None:
        error["traceback"] = traceback
    return error


def write_record(path: Path, record: dict) -> None:
    """Write a record atomically. A record already on disk in a final state (completed, diverged) is never
    replaced: that raises StoreError (two writers of one cell; claims.py keeps them apart)."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status {record.get('status')!r} is not one of {STATUSES}")
    path = Path(path)
    if path.exists():
        try:
            on_disk = json.loads(path.read_bytes().decode()).get("status")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            raise StoreError(f"corrupt run record {path}: not overwriting it; move it aside to re-run that "
                             f"cell") from None
        if on_disk in FINAL_STATUSES:
            raise StoreError(f"run record {path} is already {on_disk}: not replacing it (another process trained "
                             f"this run meanwhile)")
    text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False, default=_json_default)
    atomic_write_text(path, text)


def _json_default(o):
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable in a run record: {type(o).__name__}")


RECORD_FIELDS = {"id": str, "sweep": str, "status": str, "config": dict, "derived": dict, "results": dict,
                 "provenance": dict}
"""Every record holds these, of these types (new_record writes them all)."""
COMPLETED_DERIVED = ("params_active_non_embedding", "params_non_embedding", "tokens", "flops_per_token",
                     "budget_flops", "batch_tokens", "activation_ratio", "granularity")
"""What a fit reads from a completed record's `derived`."""


def record_problem(record: object) -> str | None:
    """Why a parsed JSON value is not a usable run record, or None."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA_VERSION:
        return f"not a scaling run record (schema {SCHEMA_VERSION})"
    for key, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(key), kind):
            return f"its {key!r} is missing or not a {kind.__name__}"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r} (one of {', '.join(STATUSES)})"
    if record["status"] == "completed":
        missing = [k for k in COMPLETED_DERIVED if k not in record["derived"]]
        if missing:
            return f"completed but derived lacks {', '.join(missing)}"
        val = record["results"].get("val_loss")
        if not isinstance(val, (int, float)) or isinstance(val, bool) or not math.isfinite(val):
            return f"completed but its results.val_loss is {val!r}"
        if not all(isinstance(record["config"].get(k), dict) for k in ("model", "train")):
            return "completed but its config lacks the model or train section"
    return None


def read_record(path: Path) -> dict:
    """Read one record; a corrupt, truncated or foreign file raises StoreError naming it (it is never
    overwritten: `write_record` refuses to replace it)."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes().decode())
    except json.JSONDecodeError as e:
        raise StoreError(f"corrupt run record {path} ({e.msg} at line {e.lineno}): move it aside to re-run that "
                         f"cell") from None
    except UnicodeDecodeError:
        raise StoreError(f"corrupt run record {path} (not UTF-8 text): move it aside to re-run that cell") from None
    except OSError as e:
        raise StoreError(f"cannot read run record {path} ({e.strerror}): fix its permissions") from None
    problem = record_problem(record)
    if problem:
        raise StoreError(f"unusable run record {path}: {problem}; move it out of runs/ to re-run that cell")
    return record


def warn(message: str) -> None:
    """Report a skipped file (the default of `iter_records`' on_error): a Python warning, one line."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def iter_records(results_dir: Path, sweep: str | None = None, on_error=warn):
    """Yield (path, record) for every readable record under results_dir (one sweep, or all). A record that
    cannot be read is passed to `on_error(message)` (one line naming the file) and skipped; `on_error=None`
    raises instead."""
    root = Path(results_dir)
    paths = sorted(runs_dir(root, sweep).glob("*.json")) if sweep else sorted(root.glob("*/runs/*.json"))
    for path in paths:
        try:
            record = read_record(path)
        except StoreError as e:
            if on_error is None:
                raise
            on_error(str(e))
            continue
        yield path, record


def records_frame(results_dir: Path, sweep: str | None = None, on_error=warn):
    """All records as a pandas DataFrame, one row per run; nested fields become dotted columns
    (`derived.tokens`, `results.val_loss`, `config.model.d_model`); lists (loss curves, loads) are left out."""
    import pandas as pd

    root = Path(results_dir)
    if not root.is_dir():
        raise StoreError(f"results directory {root} does not exist: run `scaling train` first or pass the right path")
    return pd.json_normalize([_without_lists(rec) for _, rec in iter_records(root, sweep, on_error)], sep=".")


def _without_lists(d: dict) -> dict:
    return {k: _without_lists(v) if isinstance(v, dict) else v for k, v in d.items() if not isinstance(v, list)}


CURVE_COLUMNS = ("run", "name", "sweep", "status", "budget_flops", "peak_lr", "batch_tokens", "seed",
                 "activation_ratio", "granularity", "step", "tokens", "flops", "loss", "smoothed_loss", "lr",
                 "val_loss")


def curves(results_dir: Path, sweep: str | None = None, on_error=warn):
    """Every run's training curve as one long-format DataFrame, a row per logged step: the run (id, name, sweep,
    status, budget, peak lr, batch, seed, A, G), the step, tokens and FLOPs so far (tokens x M), the train loss,
    its smoothed value, the lr at that step, and the run's final validation loss (nats per token)."""
    import pandas as pd

    rows = []
    for _, rec in iter_records(Path(results_dir), sweep, on_error):
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


DIAGNOSTICS_COLUMNS = ("run", "cell", "name", "sweep", "status", "budget_flops", "precision", "qk_norm", "fp8_scaling",
                       "seed", "step", "layer", "gemm", "kind", "format", "rel_error", "underflow", "attn_logit_max")


def diagnostics(results_dir: Path, sweep: str | None = None, on_error=warn):
    """Every run's FP8 quantization diagnostics (train.diagnostics_every; scaling/diagnostics.py) as one long-format
    DataFrame, a row per (run, step, layer, GEMM, input kind): the run (id; `cell`, its name with the precision,
    QK-norm and seed; name, sweep, status, budget, precision as set, QK-norm, FP8 scaling, seed), the GEMM input's
    format, relative quantization error and underflow fraction, and that layer's attention logit maximum then."""
    import pandas as pd

    rows = []
    for _, rec in iter_records(Path(results_dir), sweep, on_error):
        d, r, cfg = rec.get("derived") or {}, rec.get("results") or {}, record_config(rec)
        t, m = cfg["train"], cfg["model"]
        run = {"run": rec["id"], "name": rec.get("name"), "sweep": rec.get("sweep"), "status": rec["status"],
               "budget_flops": d.get("budget_flops"), "precision": t["precision"], "qk_norm": m["qk_norm"],
               "fp8_scaling": t["fp8_scaling"], "seed": cfg["seed"]}
        name = str(run["name"])  # a sweep's cell name holds what it varies; what it lacks is added
        parts = [p for p in (run["precision"], "qknorm" if run["qk_norm"] else "noqknorm", f"s{run['seed']}")
                 if p not in name.split("-")]
        run["cell"] = "-".join([name, *parts])
        for entry in r.get("diagnostics") or []:
            logits = entry.get("attn_logit_max") or []
            for g in entry.get("gemms") or []:
                layer = g.get("layer")
                rows.append({**run, "step": entry.get("step"), "layer": layer, "gemm": g.get("gemm"),
                             "kind": g.get("kind"), "format": g.get("format"), "rel_error": g.get("rel_error"),
                             "underflow": g.get("underflow"),
                             "attn_logit_max": logits[layer] if isinstance(layer, int) and layer < len(logits)
                             else None})
    return pd.DataFrame(rows, columns=list(DIAGNOSTICS_COLUMNS))
