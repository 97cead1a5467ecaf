"""Runs to fit, from the results store or from any CSV, as one canonical table (pandas, numpy; no torch).

Canonical columns: `params` (N), `tokens` (D), `flops` (C: tokens x FLOPs per token under the chosen convention;
every law is fitted against it), `budget` (the planned budget of the run's cell in the trainer's M convention, which
groups runs; for a CSV, C), `loss`, and when known `lr`, `batch_tokens`, `activation_ratio`, `granularity`,
`family` (one MoE configuration, or 'dense'; '-noqknorm' when QK-norm is off, and '-fp8', '-bf16' or '-fp32' for an
explicit train.precision), `group`; from the results store also `config` (the resolved run config), `flops_M`,
`data_tokens` (the training split's size), `arch` (the family without its precision), `precision` (as trained:
fp32, bf16 or fp8) and the peak FP8 diagnostics (`qkv_grad_underflow`, `attn_logit_max`). Diverged, failed and
unfinished runs, and runs with a non-finite loss, are excluded and counted by reason; records of different data
fingerprints are refused unless asked for (their losses are not comparable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scaling import store
from scaling.fit.columns import BUDGET_TOLERANCE, CSV_COLUMNS, REQUIRED_CSV
from scaling.keys import flatten

OPTIONAL_CSV = tuple(c for c in CSV_COLUMNS if c not in REQUIRED_CSV)


class InputError(ValueError):
    """Runs that cannot be fitted as given; one line naming the problem and the fix."""


@dataclass
class Runs:
    df: pd.DataFrame
    source: str
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    convention: str = "M"
    """The FLOPs convention of the `flops` column (C)."""


def parse_map(text: str | None) -> dict[str, str]:
    """'params=Model Size,flops=Training FLOP' -> {'Model Size': 'params', 'Training FLOP': 'flops'}; a NAME that is
    not one of CSV_COLUMNS is refused (with the nearest one), as is a NAME or COLUMN given twice."""
    import difflib

    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        ours, sep, theirs = (x.strip() for x in item.partition("="))
        if not sep or not ours or not theirs:
            raise InputError(f"--map item {item!r} is not NAME=COLUMN (e.g. --map 'params=Model Size')")
        if ours not in CSV_COLUMNS:
            near = difflib.get_close_matches(ours, list(CSV_COLUMNS), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise InputError(f"--map {item!r}: {ours!r} is not a column scaling reads ({hint}one of "
                             f"{', '.join(CSV_COLUMNS)})")
        if ours in out.values() or theirs in out:
            raise InputError(f"--map {item!r}: {ours if ours in out.values() else theirs!r} is mapped twice")
        out[theirs] = ours
    return out


def _family(A: float, G: float, n_experts: int) -> str:
    return "dense" if n_experts == 1 else f"A{A:.3g}-G{G:.3g}"


def _arch(family: str, qk_norm: bool) -> str:
    """The family with what else changes the model's training: QK-norm off shows as '-noqknorm' (as in cell
    names)."""
    return family if qk_norm else f"{family}-noqknorm"


def _with_precision(arch: str, precision_setting: str) -> str:
    """A family of runs trains in one precision: an explicit train.precision joins the name ('auto' does not)."""
    return arch if precision_setting == "auto" else f"{arch}-{precision_setting}"


def _peak_diagnostics(results: dict) -> tuple[float | None, float | None]:
    """(QKV gradient underflow, attention logit max) of a run at their peak over its diagnostics steps and layers
    (both rise while the lr is high and fall as it decays: the last step understates what training went through)."""
    under, logit = [], []
    for entry in results.get("diagnostics") or []:
        under += [v for v in entry.get("qkv_grad_underflow") or [] if v is not None]
        logit += [v for v in entry.get("attn_logit_max") or [] if v is not None]
    return (max(under) if under else None), (max(logit) if logit else None)


def from_store(results_dir: Path, sweep: str | None = None, convention: str = "M",
               allow_mixed_data: bool = False) -> Runs:
    """The completed runs of the results store (one sweep, or all); an unreadable record is skipped, counted among
    the exclusions and named in the notes (one line each)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(f"results directory {root} does not exist: run `scaling sweep` first or pass --results-dir")
    where = f"sweep {sweep!r} of {root}" if sweep else str(root)
    unreadable: list[str] = []
    records, invalid = [], []
    for path, rec in store.iter_records(root, sweep, on_error=unreadable.append):
        problem = fit_problem(rec) if rec.get("status") == "completed" else None
        if problem:
            invalid.append(f"{path}: {problem}: not fitted (a record edited or written by hand? correct the "
                           f"field, or move the file out of runs/ to re-run that cell)")
        else:
            records.append(rec)
    excluded = {k: v for k, v in (("unreadable record", len(unreadable)), ("invalid record", len(invalid))) if v}
    runs = _from_records(records, where, convention, allow_mixed_data,
                         empty="run `scaling sweep` first, or check --results-dir / SWEEP", excluded=excluded)
    runs.notes.extend(f"skipped: {m}" for m in unreadable + invalid)
    return runs


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def fit_problem(rec: dict) -> str | None:
    """Why a completed record cannot be fitted (a field a fit reads of the wrong type or out of range), or None:
    its held-out loss, its counts and FLOPs, its budget, batch and lr, and its model's expert counts."""
    d, r = rec.get("derived") or {}, rec.get("results") or {}
    try:
        cfg = store.record_config(rec)  # the schema's defaults for fields a record predates
    except (TypeError, ValueError, AttributeError) as e:
        return f"config is not a run config ({type(e).__name__})"
    if not _positive(r.get("val_loss")):
        return f"results.val_loss {r.get('val_loss')!r} is not a positive number (nats per token)"
    for key in ("tokens", "params_active_non_embedding", "params_non_embedding", "budget_flops", "batch_tokens",
                "activation_ratio", "granularity"):
        if not _positive(d.get(key)):
            return f"derived.{key} {d.get(key)!r} is not a positive number"
    per_token = d.get("flops_per_token")
    if not isinstance(per_token, dict) or not per_token or not all(map(_positive, per_token.values())):
        return f"derived.flops_per_token {per_token!r} is not a mapping of conventions to positive numbers"
    model, train = cfg.get("model") or {}, cfg.get("train") or {}
    for key in ("n_experts", "top_k"):
        if not isinstance(model.get(key), int) or isinstance(model.get(key), bool) or model[key] < 1:
            return f"config.model.{key} {model.get(key)!r} is not a whole number >= 1"
    if not _positive(train.get("lr")):
        return f"config.train.lr {train.get('lr')!r} is not a positive number"
    return None


def _from_records(records, where: str, convention: str, allow_mixed_data: bool, empty: str,
                  excluded: dict | None = None) -> Runs:
    """Runs from run records (the store's, or rebuilt from W&B): completed ones kept, the rest counted by status;
    records of different data sets refused unless `allow_mixed_data`."""
    rows, excluded = [], dict(excluded or {})
    for rec in records:
        if rec["status"] != "completed":
            excluded[rec["status"]] = excluded.get(rec["status"], 0) + 1
            continue
        rows.append(_row(rec, convention))
    if not rows and not excluded:
        raise InputError(f"no run records in {where}: {empty}")
    if not rows:
        raise InputError(f"all {sum(excluded.values())} runs in {where} are "
                         f"{', '.join(f'{v} {k}' for k, v in excluded.items())}: nothing to fit")
    # In a canonical order (sweep coordinates, then id), not the store's file order: run ids are hashes, and a fit's
    # resamples must not change when ids do (an id scheme change once moved a verdict across its threshold).
    order = [RECORD_COLUMNS[field] for field in store.RUN_ORDER]
    df = pd.DataFrame(rows).sort_values(order, kind="stable", na_position="first").reset_index(drop=True)
    fingerprints = df["fingerprint"].dropna().unique()
    if len(fingerprints) > 1 and not allow_mixed_data:
        raise InputError(f"runs from {len(fingerprints)} different data sets ({', '.join(fingerprints)}) are not "
                         f"comparable: fit one sweep (scaling fit SWEEP) or pass --allow-mixed-data")
    runs = Runs(df=df, source=where, excluded=excluded, convention=convention,
                notes=[f"N = active non-embedding parameters; C = tokens x FLOPs/token ({convention} convention)"])
    return _drop_bad_losses(runs)


RECORD_COLUMNS = {"sweep": "group", "derived.budget_flops": "budget", "derived.activation_ratio": "activation_ratio",
                  "derived.granularity": "granularity", "derived.batch_tokens": "batch_tokens",
                  "config.train.lr": "lr", "config.seed": "seed", "id": "id"}
"""The canonical table's column of each record field of store.RUN_ORDER (runs from records come in that order)."""


def _row(rec: dict, convention: str) -> dict:
    """One completed run record as a row of the canonical table."""
    d, r, cfg = rec["derived"], rec["results"], store.record_config(rec)
    m, t = cfg["model"], cfg["train"]
    setting = t["precision"]
    arch = _arch(_family(d["activation_ratio"], d["granularity"], m["n_experts"]), m["qk_norm"])
    qkv_underflow, logit_max = _peak_diagnostics(r)
    if convention not in d["flops_per_token"]:
        raise InputError(f"FLOPs convention {convention!r} not in record {rec['id']}: choose one of "
                         f"{', '.join(d['flops_per_token'])}")
    return {
        "id": rec["id"], "group": rec["sweep"], "params": d["params_active_non_embedding"],
        "params_total": d["params_non_embedding"], "tokens": d["tokens"],
        "flops": d["tokens"] * d["flops_per_token"][convention], "budget": d["budget_flops"],
        "loss": r.get("val_loss"), "lr": t["lr"], "batch_tokens": d["batch_tokens"],
        "activation_ratio": d["activation_ratio"], "granularity": d["granularity"],
        "family": _with_precision(arch, setting), "arch": arch,
        "precision": (rec.get("provenance") or {}).get("precision", {}).get("precision", setting),
        "qkv_grad_underflow": qkv_underflow, "attn_logit_max": logit_max,
        "fingerprint": d.get("data_fingerprint"), "seq_len": d.get("seq_len"), "n_experts": m["n_experts"],
        "top_k": m["top_k"], "n_shared_experts": m["n_shared_experts"],
        "flops_M": d["tokens"] * d["flops_per_token"]["M"] if "M" in d["flops_per_token"] else None,
        "data_tokens": d["tokens"] / d["epochs"] if d.get("epochs") else None,
        "config": cfg, "seed": cfg["seed"],
    }


def from_csv(path: Path, mapping: dict[str, str] | None = None, seq_len: int | None = None,
             budget_tolerance: float = BUDGET_TOLERANCE) -> Runs:
    """The runs of a CSV, one row per run, its columns read under our names by `mapping` (CSV_COLUMNS)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CSV {path} not found")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    return from_table(raw, path, mapping, seq_len, budget_tolerance)


def from_table(raw: pd.DataFrame, path, mapping: dict[str, str] | None = None, seq_len: int | None = None,
               budget_tolerance: float = BUDGET_TOLERANCE, excluded: dict[str, int] | None = None) -> Runs:
    """Runs of any trainer as a table, one row per run (a CSV, or another team's W&B runs), read as CSV_COLUMNS
    say; `path` names the source in messages."""
    mapping = mapping or {}
    for theirs in mapping:
        if theirs not in raw.columns:
            raise InputError(f"{path}: --map names column {theirs!r}, which it does not have "
                             f"(has {', '.join(map(str, raw.columns))})")
    shadowed = [c for c in raw.columns if c in mapping.values() and c not in mapping]
    df = raw.drop(columns=shadowed).rename(columns=mapping)  # a mapped column wins over one of the same name
    notes = [f"column {c!r} replaced by the one --map names" for c in shadowed]
    missing = [c for c in REQUIRED_CSV if c not in df.columns]
    if "tokens" not in df.columns and "flops" not in df.columns:
        missing.append("tokens or flops")
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, raw.columns))}); "
                         f"rename with --map, e.g. --map 'params=Model Size,flops=Training FLOP'")
    keep = [c for c in (*REQUIRED_CSV, *OPTIONAL_CSV) if c in df.columns]
    df = df[keep].copy()
    df, bad_rows = _usable_rows(df)
    excluded = {**(excluded or {}), **bad_rows}
    if df.empty:
        raise InputError(f"{path}: no row is usable ({', '.join(f'{v} {k}' for k, v in excluded.items())}): "
                         f"every numeric column must hold positive numbers")
    if "tokens" not in df.columns:
        df["tokens"] = df["flops"] / (6 * df["params"])
        notes.append("tokens = flops / (6 * params): the CSV has no tokens column")
    if "flops" not in df.columns:
        df["flops"] = 6 * df["params"] * df["tokens"]
        notes.append("flops = 6 * params * tokens: the CSV has no flops column")
    if "batch_tokens" not in df.columns and "batch" in df.columns:
        if seq_len is None and "seq_len" not in df.columns:
            raise InputError(f"{path}: 'batch' is in sequences; give --seq-len or a seq_len column (or batch_tokens)")
        df["batch_tokens"] = df["batch"] * (df["seq_len"] if "seq_len" in df.columns else seq_len)
    notes += _check_params_are_active(df)
    if "seed" in df.columns and pd.to_numeric(df["seed"], errors="coerce").isna().any():
        df["seed"] = pd.factorize(df["seed"].astype(str))[0]  # seeds named by text: numbered in order of appearance
        notes.append("seed: not all numbers, numbered by their labels")
    df["family"] = df["group"].astype(str) if "group" in df.columns else "all"
    df, grouped = nominal_budgets(df, budget_tolerance)
    notes.append(grouped)
    df["id"] = [f"row{i}" for i in range(len(df))]
    return _drop_bad_losses(Runs(df=df, source=str(path), notes=notes, convention="as given (CSV)",
                                 excluded=excluded))


def _within(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Labels of groups of `values` each spanning at most x(1 + tolerance): sorted, a group starts at its smallest
    value and takes every next one up to that bound (never chained further, so a dense grid of distinct values is
    not merged into one)."""
    order = np.argsort(values, kind="stable")
    labels = np.empty(len(values), dtype=int)
    label, start = -1, -np.inf
    for i in order:
        if values[i] > start * (1 + tolerance):
            label, start = label + 1, values[i]
        labels[i] = label
    return labels


def nominal_budgets(df: pd.DataFrame, tolerance: float = BUDGET_TOLERANCE) -> tuple[pd.DataFrame, str]:
    """Runs grouped as a sweep planned them. The runs of one family and size whose FLOPs lie within `tolerance` of
    each other (by the `budget` column when there is one) are one cell, read at their median tokens and FLOPs (a
    trainer logs what each run saw, a few tenths of a percent apart), so an lr bowl is one group; then cells of
    different sizes share a budget (the median of their FLOPs) when those lie within `tolerance`, as an IsoFLOP
    sweep's do. Returns (the runs, a line saying how they were grouped)."""
    if not 0 <= tolerance < 1:
        raise InputError(f"--budget-tolerance {tolerance}: give a fraction in [0, 1), e.g. 0.02")
    df = df.copy()
    given = "budget" in df.columns
    cell = np.zeros(len(df), dtype=int)
    key = (df["budget"] if given else df["flops"]).to_numpy(float)
    for idx in df.groupby(["family", "params"]).indices.values():
        cell[idx] = _within(key[idx], tolerance) + cell.max() + 1
    spread = 0.0
    for col in ("tokens", "flops"):
        g = df.groupby(cell)[col]
        spread = max(spread, float((g.transform("max") / g.transform("min")).max() - 1))
        df[col] = g.transform("median").to_numpy(float)
    if given:
        how = "by the budget column"
    else:
        df["budget"] = df.groupby(_within(df["flops"].to_numpy(float), tolerance))["flops"].transform("median")
        how = f"by FLOPs within {tolerance:.3g} of each other"
    line = f"runs grouped into {df['budget'].nunique()} budget(s) {how}"
    if spread > 0:
        line += f"; each size's tokens and FLOPs at a budget read as their median (they differed by up to {spread:.2%})"
    return df, line


def _check_params_are_active(df: pd.DataFrame) -> list[str]:
    """A note when flops and tokens are both given and flops / (6 params tokens) is far from 1: `params` is then
    likely the total count of an MoE (C = 6 N D holds with the active count)."""
    if not {"flops", "tokens"} <= set(df.columns):
        return []
    ratio = float(np.median(df["flops"] / (6 * df["params"] * df["tokens"])))
    if 0.5 <= ratio <= 2:
        return []
    return [f"flops / (6 * params * tokens) is {ratio:.3g}, not about 1: is params the active non-embedding count? "
            f"(an MoE's total count understates its sparsity; the laws use N as given)"]


POSITIVE_CSV = ("params", "tokens", "flops", "loss", "lr", "batch_tokens", "batch", "seq_len", "activation_ratio",
                "granularity", "experts", "top_k", "budget")
"""CSV columns that must hold positive, finite numbers in a usable row (a loss is in nats: > 0)."""


def _usable_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows every numeric column of which holds a positive finite number (as floats: 6 N D overflows int64 at
    ~1e18), and the others counted by their first reason (`lr not a number`, `loss not positive`)."""
    excluded: dict[str, int] = {}
    usable = np.ones(len(df), dtype=bool)
    for col in POSITIVE_CSV:
        if col not in df.columns:
            continue
        values = pd.to_numeric(df[col], errors="coerce").astype(float)
        not_number = values.isna().to_numpy() | ~np.isfinite(values.to_numpy())
        not_positive = ~not_number & (values.to_numpy() <= 0)
        for reason, bad in ((f"{col} not a finite number", not_number), (f"{col} not positive", not_positive)):
            new = bad & usable
            if new.any():
                excluded[reason] = int(new.sum())
                usable &= ~new
        df[col] = values
    return df[usable].reset_index(drop=True), excluded


def _drop_bad_losses(runs: Runs) -> Runs:
    bad = ~np.isfinite(runs.df["loss"].to_numpy(float))
    if bad.any():
        runs.excluded["non-finite loss"] = runs.excluded.get("non-finite loss", 0) + int(bad.sum())
        runs.df = runs.df[~bad].reset_index(drop=True)
    if runs.df.empty:
        raise InputError(f"{runs.source}: no run has a finite loss ({runs.excluded}): nothing to fit")
    return runs


def load_runs(source: str | None, results_dir: Path, sweep: str | None = None, mapping: str | None = None,
              seq_len: int | None = None, convention: str = "M", allow_mixed_data: bool = False,
              budget_tolerance: float = BUDGET_TOLERANCE) -> Runs:
    """The runs of `source`: None = the results store, a .csv path, or wandb:ENTITY/PROJECT; `sweep` limits the
    store or the W&B project to one sweep (None = all of them)."""
    if source is None:
        return from_store(results_dir, sweep, convention, allow_mixed_data)
    if source.startswith("wandb:") and mapping:
        return from_wandb_mapped(source.removeprefix("wandb:"), parse_map(mapping), sweep, seq_len, budget_tolerance)
    if source.startswith("wandb:"):
        return from_wandb(source.removeprefix("wandb:"), sweep, convention, allow_mixed_data)
    if sweep is not None:
        raise InputError(f"a CSV has no sweeps: drop SWEEP ({sweep!r}) or select its rows in the CSV")
    return from_csv(Path(source), parse_map(mapping), seq_len, budget_tolerance)


def from_wandb(project: str, sweep: str | None = None, convention: str = "M", allow_mixed_data: bool = False) -> Runs:
    """Runs logged to W&B by `scaling` (their config holds the record's config and its derived quantities), of
    one sweep (its W&B group) or all; the same checks as the results store's (data sets, statuses)."""
    api_runs = _wandb_runs(project, sweep)
    where = f"W&B project {project!r}" + (f", sweep {sweep!r}" if sweep else "")
    return _from_records((rec for rec in map(record_from_wandb, api_runs) if rec is not None), where, convention,
                         allow_mixed_data, empty="no finished `scaling` training runs with a val/loss")


def _wandb_runs(project: str, group: str | None) -> list:
    """The runs of a W&B project (of one group when given), or an InputError saying why they cannot be read."""
    try:
        import wandb

        return list(wandb.Api().runs(project, filters={"group": group} if group else None))
    except Exception as e:  # no network, no key, no such project
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise InputError(f"cannot read W&B project {project!r} ({reason})") from None


def from_wandb_mapped(project: str, mapping: dict[str, str], group: str | None = None, seq_len: int | None = None,
                      budget_tolerance: float = BUDGET_TOLERANCE) -> Runs:
    """Any team's W&B runs (not logged by `scaling`), read as a CSV would be: each finished run one row of its
    config (nested keys dotted, e.g. optimizer.lr) and its summary's numbers, `mapping` naming which of them are our
    columns (--map loss=val/loss,lr=optimizer.lr,...); runs of one W&B group when `group` is given; unfinished runs
    counted by state."""
    rows, excluded = [], {}
    for run in _wandb_runs(project, group):
        if run.state != "finished":
            excluded[f"W&B {run.state}"] = excluded.get(f"W&B {run.state}", 0) + 1
            continue
        summary = {k: v for k, v in dict(run.summary).items() if isinstance(v, (int, float, str))}
        rows.append({**flatten(dict(run.config), unwrap=True), **summary, "wandb_run": run.id})
    where = f"W&B project {project!r}" + (f", group {group!r}" if group else "")
    if not rows:
        raise InputError(f"no finished runs in {where}" + (f" ({excluded})" if excluded else ""))
    return from_table(pd.DataFrame(rows), where, mapping, seq_len, budget_tolerance, excluded)


def record_from_wandb(wb_run) -> dict | None:
    """A W&B run of `scaling train` as a run record (config, derived, results), or None for other runs (a fit)."""
    cfg, summary = dict(wb_run.config), dict(wb_run.summary)
    derived = cfg.pop("derived", None)
    sweep = wb_run.group or cfg.get("sweep")
    if not derived or getattr(wb_run, "job_type", None) == "fit" or sweep is None:
        return None
    finished = wb_run.state == "finished" and summary.get("val/loss") is not None
    return {"id": wb_run.id, "sweep": sweep, "config": cfg, "derived": derived,
            "status": "completed" if finished else wb_run.state, "results": {"val_loss": summary.get("val/loss")}}
