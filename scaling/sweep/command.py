"""Your trainer, our sweep (`launcher=command`): each cell runs a command built from a template, under the same
claims, logs, resume rules and records as `scaling train`, and its result is read from a small JSON the trainer
writes.

The template (`launcher.command`) is split like a shell line (shlex) and never run by a shell: each word may hold
placeholders, replaced by the cell's values as text, so a value can never become a second argument or a command.

- ``{train.lr}``, ``{model.d_model}``, ``{budget_flops}``, ``{seed}`` ...: any key of the cell's resolved run
  config (as `scaling sweep --dry-run --format csv` lists them);
- ``{derived.steps}``, ``{derived.tokens}``, ``{derived.batch_size}``, ``{derived.batch_tokens}``,
  ``{derived.warmup_steps}``, ``{derived.flops_per_token.M}`` ...: what planning derived (a run record's `derived`);
- ``{run_id}``, ``{name}``, ``{sweep}``; ``{result_path}`` (where the trainer writes its result),
  ``{config_path}`` (the cell as JSON: {"id", "name", "sweep", "config", "derived"}), ``{checkpoint_dir}`` (a
  folder of the cell's own, the same on every attempt: keep checkpoints there to resume after a kill).

The same paths are in the environment: SCALING_RESULT, SCALING_CELL, SCALING_CHECKPOINT_DIR, SCALING_RUN_ID.

**The result contract.** The trainer writes a JSON object to `result_path` and exits 0:
``{"val_loss": 2.87}`` at least (the final held-out loss, nats per token, > 0); optionally ``"tokens"`` (training
tokens it saw), ``"diverged": true`` (the run blew up: recorded as diverged), ``"train_loss"`` (the last smoothed
training loss) and ``"curve"``, a list of ``{"step": int, "val_loss": float}`` (held-out loss during training; kept
as the record's `evals`). Exit 0 without a valid result, or a non-zero exit, records the attempt as failed (its
output is in the cell's log). A cell killed with its launcher is claimed again by the next launch and its command
run again (with the same checkpoint_dir).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from pathlib import Path

from scaling import store

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class CommandError(ValueError):
    """A template or a trainer's result that cannot be used; the message names the problem and the fix."""


def cell_values(run_id: str, name: str, sweep: str, config: dict, derived: dict, results: Path) -> dict[str, str]:
    """Every placeholder's text for one cell (its files under the results folder `results`)."""
    from scaling.keys import flatten

    paths = store.external_paths(results, sweep, run_id)
    values = {k: _text(v) for k, v in {**flatten(config), **flatten(derived, "derived.")}.items()}
    values.update(run_id=run_id, id=run_id, name=name, sweep=sweep, result_path=str(paths["result"]),
                  config_path=str(paths["cell"]), checkpoint_dir=str(paths["checkpoints"]))
    return values


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        return f"{value:.6g}"  # 3e+11, not 300000000000.0
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def render(template: str, values: dict[str, str]) -> list[str]:
    """The command's argument list: the template split like a shell line, each placeholder replaced by its text.
    An unknown placeholder is a CommandError naming it (and the nearest known one)."""
    import difflib

    try:
        words = shlex.split(template)
    except ValueError as e:
        raise CommandError(f"launcher.command is not a command line ({e}): quote it like a shell line") from None
    if not words:
        raise CommandError("launcher.command is empty: give the trainer's command, e.g. "
                           "'python train.py --lr {train.lr} --steps {derived.steps} --out {result_path}'")

    def one(match):
        key = match.group(1)
        if key not in values:
            near = difflib.get_close_matches(key, list(values), n=1)
            hint = f" (did you mean {{{near[0]}}}?)" if near else ""
            raise CommandError(f"launcher.command: unknown placeholder {{{key}}}{hint}; see `scaling sweep NAME "
                               f"--dry-run --format csv` for every key")
        return values[key]

    return [PLACEHOLDER.sub(one, w) for w in words]


def read_result(path: Path) -> dict:
    """The trainer's result, checked against the contract (module docstring); CommandError when unusable."""
    try:
        result = json.loads(Path(path).read_bytes().decode())
    except FileNotFoundError:
        raise CommandError(f"the trainer exited 0 but wrote no result to {path}: it must write "
                           f'{{"val_loss": ...}} there (see scaling/sweep/command.py)') from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"the trainer's result {path} is not JSON ({type(e).__name__})") from None
    if not isinstance(result, dict):
        raise CommandError(f"the trainer's result {path} is not a JSON object")
    loss = result.get("val_loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss <= 0:
        if not result.get("diverged"):
            raise CommandError(f"the trainer's result {path} has no usable val_loss ({loss!r}): a positive finite "
                               f"number of nats per token")
    tokens = result.get("tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or tokens <= 0):
        raise CommandError(f"the trainer's result {path}: tokens {tokens!r} is not a positive number")
    curve = result.get("curve") or []
    if not isinstance(curve, list) or not all(isinstance(p, dict) and isinstance(p.get("step"), int)
                                              and isinstance(p.get("val_loss"), (int, float)) for p in curve):
        raise CommandError(f"the trainer's result {path}: curve must be a list of {{\"step\": int, \"val_loss\": "
                           f"number}}")
    return result


def record_of(record: dict, result: dict, wall_s: float) -> dict:
    """The cell's record (as new_record made it) completed, or marked diverged, from the trainer's result."""
    diverged = bool(result.get("diverged"))
    loss = None if diverged else float(result["val_loss"])
    tokens = result.get("tokens")
    record["results"] = store.run_results(
        val_loss=loss, train_loss_smoothed=result.get("train_loss"), steps_done=record["derived"].get("steps"),
        tokens_done=int(tokens) if tokens is not None else record["derived"].get("tokens"), tokens_per_s=None,
        mfu=None, train_s=wall_s, wall_s=wall_s, curve=[],
        evals=[{"step": p["step"], "val_loss": float(p["val_loss"])} for p in result.get("curve") or []],
        expert_load=None, expert_load_steps=None, max_expert_load_ratio=None, diagnostics=[], branched_from_step=0,
        pipeline=None)
    record["status"] = "diverged" if diverged else "completed"
    if diverged:
        record["error"] = store.run_error("diverged", record["derived"].get("steps") or 0,
                                          "the trainer reported divergence")
    return record


def run_cell(template: str, run_dict: dict, derived: dict, name: str, results: Path, sweep: str, run_id: str,
             env: dict | None = None) -> dict:
    """Run the trainer for one cell (the caller holds its claim and has redirected output to its log) and return
    its final record, written; a non-zero exit or an unusable result writes a failed record and raises."""
    import os
    import subprocess

    from scaling.sweep.workers import die_with_parent

    paths = store.external_paths(results, sweep, run_id)
    paths["checkpoints"].mkdir(parents=True, exist_ok=True)
    paths["result"].unlink(missing_ok=True)  # a result left by an earlier, killed attempt is not this one's
    store.atomic_write_text(paths["cell"], json.dumps({"id": run_id, "name": name, "sweep": sweep,
                                                       "config": run_dict, "derived": derived}, indent=1))
    values = cell_values(run_id, name, sweep, run_dict, derived, results)
    argv = render(template, values)
    record = store.new_record(run_id, sweep, name, run_dict, derived, {"trainer": argv[0], "command": argv})
    path = store.record_path(results, sweep, run_id)
    store.write_record(path, record)
    print(f"$ {shlex.join(argv)}", flush=True)
    start = time.time()
    code = subprocess.run(argv, preexec_fn=die_with_parent, env={
        **os.environ, **(env or {}), "SCALING_RESULT": values["result_path"], "SCALING_CELL": values["config_path"],
        "SCALING_CHECKPOINT_DIR": values["checkpoint_dir"], "SCALING_RUN_ID": run_id}).returncode
    wall = time.time() - start
    try:
        if code != 0:
            raise CommandError(f"the trainer exited with code {code} (its output: the cell's log)")
        record = record_of(record, read_result(paths["result"]), wall)
    except CommandError as e:
        record["status"], record["error"] = "failed", store.run_error("exception", 0, str(e))
        store.write_record(path, record)
        raise
    store.write_record(path, record)
    return record
