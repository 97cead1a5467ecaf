"""Run a sweep's cells on this machine (launcher=local): start the worker processes (sweep/workers.py), one per
GPU (or several, `launcher.runs_per_gpu`), or `launcher.workers` on CPU, and show their progress. The launcher
holds no state of its own: re-running the same command resumes.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from pathlib import Path

from scaling import branching, claims, store, tracking
from scaling.config import to_dict
from scaling.sweep.launcher import for_devices
from scaling.sweep.plan import SweepPlan
from scaling.sweep.workers import cells_to_run, start_workers, worker_slots


class _stop_workers_on_sigterm:
    """While the launcher runs (main thread only): SIGTERM to it asks every worker to save a checkpoint at its next
    step and stop (SIGUSR2, as a batch job's warning does), instead of dying and taking them down unsaved."""

    def __init__(self, procs, console):
        self.procs, self.console, self.received, self.previous = procs, console, False, None
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if not self.received:
            self.console.print("SIGTERM: the workers save a checkpoint at their next step and stop; run the same "
                               "command again to resume")
        self.received = True
        for p in self.procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGUSR2)
                except ProcessLookupError:
                    pass

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def launch(plan: SweepPlan, results_dir: Path | None = None, retry_failed: bool = False, console=None,
           show_progress: bool = True, stale_after: float = claims.STALE_AFTER_S) -> dict:
    """Train every cell still to do with the workers of the plan's launcher config (`workers`, `runs_per_gpu`,
    `gpus_per_run`, `device`) in the plan's results folder (`results_dir`, when given, must be that one); returns
    counts by final state. Failed cells are reported as they fail. `retry_failed`: also retry cells whose last
    attempt failed (resuming from their checkpoints)."""
    from rich.console import Console

    console = console or Console(stderr=True)
    results_dir = plan.results_folder(results_dir)
    store.check_writable(results_dir)
    store.write_plan(results_dir, plan.name, plan.to_json())
    claims.tidy(results_dir, plan.name)
    todo, failed, unreadable = cells_to_run(plan, results_dir, retry_failed,
                                            lambda message: console.print(f"[red]![/] {message}", highlight=False,
                                                                          soft_wrap=True))
    already = len(plan.cells) - len(todo) - failed - unreadable
    if not todo:
        console.print(f"sweep {plan.name}: nothing to run: {already} of {len(plan.cells)} cells already done"
                      + (f", {failed} failed (retry them with --retry-failed)" if failed else "")
                      + (f", {unreadable} with unreadable records (named above)" if unreadable else ""))
        return {"launched": 0, "unreadable": unreadable}
    wandb_folder = store.wandb_dir(results_dir, plan.name)
    tracking.reset_unreachable(wandb_folder)  # this launch tries the network again
    launcher = plan.config.launcher
    groups: dict[int, list] = {}  # cells by GPUs per cell (launcher.max_gpus_per_run), fewest first
    for c in todo:
        groups.setdefault(c.devices_per_node(launcher), []).append(c)
    counts: dict = {}
    terminated = False
    for devices in sorted(groups):
        group_launcher = for_devices(launcher, devices)
        cells = groups[devices]
        slots = worker_slots(group_launcher)[: len(cells)]
        console.print(f"sweep {plan.name}: {len(cells)} of {len(plan.cells)} cells to run ({already} done"
                      + (f"; these on {devices} device(s) each" if len(groups) > 1 else "")
                      + f"), {len(slots)} worker(s): {', '.join(s[0] for s in slots)}")
        got, terminated = _run_cells(plan, cells, slots, group_launcher, results_dir, retry_failed, stale_after,
                                     wandb_folder, console, show_progress)
        for key, n in got.items():
            counts[key] = counts.get(key, 0) + n
        if terminated:
            break
    branching.tidy(results_dir, plan.name, [(c.run_id, c.plan.run, c.plan.steps) for c in plan.cells])
    counts["launched"], counts["unreadable"] = len(todo), unreadable
    counts["terminated"] = terminated
    counts["skipped"] = len(todo) - sum(counts.get(k, 0) for k in ("completed", "diverged", "failed", "preempted"))
    return counts


def _run_cells(plan: SweepPlan, todo: list, slots, launcher, results_dir: Path, retry_failed: bool,
               stale_after: float, wandb_folder: Path, console, show_progress: bool) -> tuple[dict, bool]:
    """Train `todo` in one worker per slot of `launcher`, following them until all exit; returns (counts by final
    state, whether a SIGTERM stopped them)."""
    cells = [(c.run_id, c.name, to_dict(c.run), c.plan.derived()) for c in todo]
    procs, events = start_workers(slots, cells, results_dir,
                                  plan.name, launcher, retry_failed, stale_after, after=plan.branch_predecessors())
    terminated = _stop_workers_on_sigterm(procs, console)
    try:
        counts = _follow(plan.name, todo, procs, events, wandb_folder, console, show_progress)
    except KeyboardInterrupt:  # SIGINT, maybe to the launcher alone: the workers must not go on taking cells
        _stop_workers(procs, console)
        raise
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        terminated.restore()
    return counts, terminated.received


STOP_WAIT_S = 60.0
"""After Ctrl-C, how long the launcher waits for its workers to checkpoint and stop before it kills them."""


def _stop_workers(procs, console) -> None:
    """Ask every worker to checkpoint at its next step and stop (SIGUSR2, as on SIGTERM), and wait for them
    (STOP_WAIT_S at most, a second Ctrl-C included), so that none starts another cell after the launcher is gone."""
    alive = [p for p in procs if p.is_alive()]
    if not alive:
        return
    console.print(f"interrupted: {len(alive)} worker(s) save a checkpoint at their next step and stop")
    for p in alive:
        try:
            os.kill(p.pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass
    deadline = time.time() + STOP_WAIT_S
    for p in alive:
        while p.is_alive() and time.time() < deadline:
            try:
                p.join(timeout=max(0.0, min(1.0, deadline - time.time())))
            except KeyboardInterrupt:
                continue  # a second Ctrl-C: still let them save


SUMMARY_EVERY_S = 60.0
"""Without a terminal (a log file, nohup, a Slurm log), a summary line at least this often while cells run."""


def _follow(sweep: str, todo: list, procs, events, wandb_folder: Path, console, show_progress: bool) -> dict:
    """Show the workers' events until every worker has exited; returns counts by final state. On a terminal: a
    progress bar with an ETA by tokens, and a line per failure. Without one (output to a file): a line per finished
    cell and a summary every SUMMARY_EVERY_S, so a log can be followed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    counts = {"completed": 0, "diverged": 0, "failed": 0, "preempted": 0}
    running: dict[str, str] = {}
    tokens_of = {c.run_id: c.plan.tokens for c in todo}
    tokens_total, tokens_done, t0 = sum(tokens_of.values()), 0, time.time()
    wandb_announced = False
    plain = not console.is_terminal
    last_line = time.time()

    def state_text() -> str:
        elapsed = time.time() - t0
        eta = elapsed * (tokens_total - tokens_done) / tokens_done if tokens_done else None
        return (f"{sum(counts.values())}/{len(todo)} finished · running {len(running)} · failed {counts['failed']} · "
                f"diverged {counts['diverged']} · {elapsed:.0f} s elapsed, ETA " + ("-" if eta is None else
                                                                                    f"{eta:.0f} s"))

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}")]
    with Progress(*columns, console=console, disable=not show_progress or plain) as progress:
        task = progress.add_task(sweep, total=len(todo), state="", eta="-")
        while True:
            try:
                kind, worker, run_id, name, info, log = events.get(timeout=0.2)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    return counts
                if plain and show_progress and time.time() - last_line >= SUMMARY_EVERY_S:
                    console.print(f"{time.strftime('%H:%M:%S')} sweep {sweep}: {state_text()}", highlight=False)
                    last_line = time.time()
                continue
            if not wandb_announced and (notice := tracking.unreachable_notice(wandb_folder)):
                wandb_announced = True
                console.print(f"[yellow]warning:[/] {notice}", highlight=False, soft_wrap=True)
            if kind == "start":
                running[run_id] = name
            else:
                running.pop(run_id, None)
                counts[kind] = counts.get(kind, 0) + 1
                tokens_done += tokens_of.get(run_id, 0)
                _report_event(kind, worker, run_id, name, info, log, console)
                if plain:  # a log line, not a live display: written with --no-progress too
                    done = f"val loss {info}" if kind == "completed" else kind
                    console.print(f"{time.strftime('%H:%M:%S')} {name} ({run_id}) {done} on {worker}; {sweep}: "
                                  f"{state_text()}", highlight=False, soft_wrap=True)
                    last_line = time.time()
            elapsed = time.time() - t0
            eta = elapsed * (tokens_total - tokens_done) / tokens_done if tokens_done else None
            progress.update(task, completed=sum(counts.values()),
                            state=f"done {counts['completed']} · running {len(running)} · failed "
                                  f"{counts['failed']} · diverged {counts['diverged']}",
                            eta="-" if eta is None else f"{eta:.0f}s")


def _report_event(kind: str, worker: str, run_id: str, name: str, info: str, log: str, console) -> None:
    if kind == "failed":
        console.print(f"[red]✗ failed[/] {name} ({run_id}) on {worker}: {info}" + (f" — log {log}" if log else ""))
    elif kind == "diverged":
        console.print(f"[yellow]⚠ diverged[/] {name} ({run_id}) — log {log}")
    elif kind == "preempted":
        console.print(f"[magenta]⏸ stopped[/] {name} ({run_id}): {info}")
