"""Cooldowns branched from one stable phase (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond
Fixed Training Durations"): under the WSD schedule, runs that differ only in their budget follow the same learning
rate until the first of them starts its decay, so a data-scaling or L(N, D) sweep need not train each length from
step 0.

A run with `train.branch` belongs to a *family*: the runs of its sweep and results folder with the same identity
except the budget and the decay's shape (decay_fraction, wsd_decay, min_lr_ratio), and the same warmup in steps.
Each saves its training state where its decay starts (`stable_end`) under results/<sweep>/stable/<family>/; a run
of the family that starts from step 0 instead loads the latest such state at or before its own decay start and
trains on from there. What it then trains is what it would have trained from step 0, to float rounding: the data
of a step depends only on the step and the seed, the learning rate only on the step until the decay, and every
other piece of state (model, optimizer, expert biases, loss average, curve) is in the checkpoint. Each branch keeps
its own record, FLOPs and tokens; `trained_steps` says what each trains itself (the plan's compute saved).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from scaling import store
from scaling.config import RunConfig, identity_key
from scaling.lr_schedule import stable_end, warmup_steps

DECAY_FIELDS = ("budget_flops", "train.decay_fraction", "train.wsd_decay", "train.min_lr_ratio")
"""Identity fields that do not change a WSD run before its decay: runs differing only in them share a family."""

_STEP_FILE = re.compile(r"^step(\d{9})\.pt$")


def family(run: RunConfig, steps: int) -> str | None:
    """The key of the runs that share this run's warmup and stable phase (a run of `steps` steps); None when the
    run does not branch (train.branch off, or not WSD)."""
    if not (run.train.branch and run.train.schedule == "wsd"):
        return None
    key = {k: v for k, v in identity_key(run).items() if k not in DECAY_FIELDS}
    key["warmup_steps_resolved"] = warmup_steps(run.train, steps)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stable_path(results_dir: Path, sweep: str, key: str, step: int) -> Path:
    """Where a family's training state after `step` optimizer steps is kept."""
    return store.stable_dir(results_dir, sweep, key) / f"step{step:09d}.pt"


def latest_stable(results_dir: Path, sweep: str, key: str, at_most: int) -> tuple[int, Path] | None:
    """(step, path) of the family's latest saved state at or before step `at_most` (a run's decay start), or
    None. Only files this module names are considered (a partial write is a hidden temporary file)."""
    folder = store.stable_dir(results_dir, sweep, key)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name)) and p.is_file()
             and not p.is_symlink()]
    found = [(s, p) for s, p in found if 0 < s <= at_most]
    return max(found) if found else None


def branch_step(run: RunConfig, steps: int) -> int:
    """The step where this run's decay starts: where it saves its state for the longer runs of its family."""
    return stable_end(run.train, steps)


def predecessors(cells: list[tuple[str, RunConfig, int]]) -> dict[str, tuple[str, str, int]]:
    """For cells given as (run id, run, steps): each branching cell's run id -> (the run id of the sibling with
    the next earlier decay start, their family, that sibling's decay start). Running them in that order, each from
    its predecessor's state, trains every family's stable phase once (a sweep's workers wait for a predecessor's
    state rather than train the same steps again)."""
    out = {}
    for key, members in _by_family(cells).items():
        for (start, _, before), (_, _, run_id) in zip(members, members[1:], strict=False):
            out[run_id] = (before, key, start)
    return out


def _by_family(cells: list[tuple[str, RunConfig, int]]) -> dict[str, list[tuple[int, int, str]]]:
    """The branching cells of (run id, run, steps) by family, each family's as (decay start, steps, run id) in
    order of decay start."""
    chains: dict[str, list[tuple[int, int, str]]] = {}
    for run_id, run, steps in cells:
        key = family(run, steps)
        if key is not None:
            chains.setdefault(key, []).append((branch_step(run, steps), steps, run_id))
    return {key: sorted(members) for key, members in chains.items()}


def trained_steps(cells: list[tuple[str, RunConfig, int]]) -> dict[str, int]:
    """For cells given as (run id, run, steps): the optimizer steps each trains when every branching one starts
    from its predecessor's state (`predecessors`); a cell that does not branch trains all its steps."""
    before = predecessors(cells)
    return {run_id: steps - (before[run_id][2] if run_id in before else 0) for run_id, _, steps in cells}


def tidy(results_dir: Path, sweep: str, cells: list[tuple[str, RunConfig, int]]) -> list[Path]:
    """Remove the saved stable states of each family of these cells (run id, run, steps) whose runs all have a
    final record: no run of it will start again. Returns the folders removed."""
    removed = []
    for key, members in _by_family(cells).items():
        folder = store.stable_dir(results_dir, sweep, key)
        if not folder.is_dir() or folder.is_symlink() or not all(_final(results_dir, sweep, r) for *_, r in members):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _final(results_dir: Path, sweep: str, run_id: str) -> bool:
    path = store.record_path(results_dir, sweep, run_id)
    try:
        return path.exists() and store.read_record(path)["status"] in store.FINAL_STATUSES
    except store.StoreError:
        return False
