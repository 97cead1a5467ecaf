"""Training one run (ARCHITECTURE section 5): the loop, checkpoints, resume, divergence, and the run record.

`train(run)` plans the run (scaling/run.py), holds its claim, trains it to its budget (or resumes it), and
writes its record atomically: at the start of each attempt (running) and at its end (completed, diverged or
failed), and at every checkpoint. A finished run is never trained again. The scheduler's signals
(scaling/scheduler.py) are served at step boundaries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import platform
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling import branching, flops, scheduler, store
from scaling import precision as precision_mod
from scaling import progress as progress_line
from scaling.config import RunConfig, TrainConfig, resolve_results_dir, to_dict
from scaling.data import TokenData
from scaling.data import cache_dir as data_cache_dir
from scaling.lr_schedule import decay_steps, lr_at, stable_end
from scaling.run import RunPlan, first_provenance, now, plan_run

EMA_DECAY = 0.9
"""Smoothing of the train loss for divergence detection and the reported smoothed train loss."""
DIVERGENCE_BOUND_FACTOR = 3.0
"""A run whose smoothed train loss, or final held-out loss, exceeds this many times ln(vocab size) (the loss of
a uniform guess: 5.55 nats for bytes) has diverged, whatever its history: from the first step on."""
LOAD_WINDOW_FRACTION = 0.1
"""Expert load (tokens per expert per layer) is reported over the last tenth of the run: `expert_load` holds
each expert's share of its layer's assignments over the steps `expert_load_steps` = [from, to)."""


class Diverged(Exception):
    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step, self.reason = step, reason


def divergence_bound(run: RunConfig) -> float:
    """The absolute loss bound (nats per token) above which a run has diverged (DIVERGENCE_BOUND_FACTOR)."""
    return DIVERGENCE_BOUND_FACTOR * math.log(run.model.vocab_size)


@dataclass
class _Attempt:
    """One attempt at a run in this process: where it writes, and which rank it is."""

    plan: RunPlan
    rec_path: Path
    ckpt_path: Path
    wandb_dir: Path
    ranks: Any
    """distributed.Ranks of a multi-process run, else None."""
    console: Any
    show_progress: bool
    shards_path: Path | None = None
    """Where an FSDP run's sharded checkpoint lives (store.checkpoint_shards_path)."""
    parallel: str | None = None
    """'ddp' or 'fsdp' in a multi-process run (train.parallel, 'auto' resolved by the memory plan), else None."""
    micro_batch: int | None = None
    """Rows per forward/backward pass (train.micro_batch_size, or the memory plan's pick on a GPU), None = all."""
    precision: str = "fp32"
    """train.precision with 'auto' resolved for this device: fp32, bf16 or fp8."""
    stable_family: str | None = None
    """The family whose stable phase this run shares (scaling/branching.py), else None."""
    results_dir: Path | None = None

    @functools.cached_property
    def curve_steps(self) -> frozenset[int]:
        """The steps of this run's validation curve (`curve_steps`)."""
        return curve_steps(self.plan.run.train, self.plan.steps)

    @property
    def sharded(self) -> bool:
        return self.parallel == "fsdp"

    @property
    def main(self) -> bool:
        """Rank 0 (or the only process): it writes the record and checkpoints and shows progress."""
        return self.ranks is None or self.ranks.main

    def save(self, record: dict) -> None:
        if self.main:
            store.write_record(self.rec_path, record)


@dataclass
class _Trainer:
    """What an attempt trains with."""

    model: Any
    forward: Any
    """The model as called in the step: `model` itself, or its torch.compile'd form (same parameters)."""
    optimizer: Any
    device: Any
    state: dict
    """Step, train seconds, loss EMA, logged curve and evaluations: everything a checkpoint resumes."""
    tracker: Any = None
    pipeline: Any = None
    """train.parallel=pipeline: this rank's stages and schedule (scaling/pipelining.py), else None."""


def compile_model(model, cache_root: Path):
    """torch.compile with its caches under `cache_root`/inductor (the corpus cache: ~/.cache/scaling by default,
    persistent, and shared by a cluster's nodes when home is) instead of /tmp: a warm cache turns a 12-26 s cold
    compile into ~1.5 s. An explicit $TORCHINDUCTOR_CACHE_DIR wins."""
    import torch

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_root) / "inductor"))
    return torch.compile(model)


def _param_groups(model) -> list[dict]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]  # no decay on norm weights


def _evaluate(model, data: TokenData, run: RunConfig, device, precision: str, batch_size: int = 32,
              tokens: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) over the fixed held-out sequences: the first `tokens` of them
    (default data.val_tokens, the whole held-out set)."""
    import torch
    import torch.nn.functional as F

    x_all, y_all = data.val_sequences(tokens or run.data.val_tokens, run.model.seq_len)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), precision_mod.autocast(device, precision):
        for i in range(0, len(x_all), batch_size):
            x = torch.from_numpy(x_all[i : i + batch_size]).to(device)
            y = torch.from_numpy(y_all[i : i + batch_size]).to(device)
            logits = model(x)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def _save_checkpoint(a: _Attempt, tr: _Trainer) -> None:
    """The checkpoint of this step: one file written by rank 0, or (FSDP) every rank's shard."""
    if a.sharded:
        from scaling import sharding

        sharding.save(a.shards_path, a.ranks, tr.model, tr.optimizer, tr.state)
    elif a.main:
        _write_state(a.ckpt_path, tr)


def _write_state(path: Path, tr: _Trainer) -> None:
    """The whole training state (model, optimizer, loop state) as one file, written atomically: a checkpoint, or
    a branching family's stable state (the same format, read by `_load_checkpoint`)."""
    import torch

    payload = {"model": tr.model.state_dict(), "optimizer": tr.optimizer.state_dict(), "state": tr.state}
    store.atomic_write(path, lambda f: torch.save(payload, f))


def _remove_checkpoint(a: _Attempt) -> None:
    """After a final status: the run's checkpoint goes, unless train.keep_checkpoint (rank 0 removes it)."""
    if not a.main or a.plan.run.train.keep_checkpoint:
        return
    if a.sharded:
        from scaling import sharding

        sharding.remove(a.shards_path)
    elif a.ckpt_path.exists():
        a.ckpt_path.unlink()


def _fresh_state() -> dict:
    return {"step": 0, "train_s": 0.0, "ema": 0.0, "ema_weight": 0.0, "best_ema": math.inf,
            "curve": [], "evals": [], "resumed_from": [], "diagnostics": []}


def _load_checkpoint(a: _Attempt, model, optimizer, device) -> dict:
    """Training state from the checkpoint (model and optimizer loaded in place), or a fresh state."""
    import torch

    from scaling import sharding

    path, run_id = a.ckpt_path, a.plan.run_id
    shards = a.shards_path
    if a.sharded:
        if path.exists():
            raise store.StoreError(f"run {run_id} has a checkpoint of a single process or DDP ({path}): resume it "
                                   f"with train.parallel=ddp, or move {path} aside to restart it from step 0")
        state = sharding.load(shards, a.ranks, model, optimizer, device, run_id)
        if state is None:
            return _fresh_state()
        state["resumed_from"].append(state["step"])
        return state
    if (shards / sharding.LATEST).exists():
        raise store.StoreError(f"run {run_id} has a sharded (FSDP) checkpoint ({shards}): resume it with "
                               f"train.parallel=fsdp on as many processes as wrote it, or move {shards} aside to "
                               f"restart it from step 0")
    state = _fresh_state()
    branched = None
    if not path.exists():
        branched = _stable_start(a)
        if branched is None:
            return state
        path = branched[1]
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
    except Exception as e:
        raise store.StoreError(
            f"checkpoint {path} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
            f"move it aside to restart run {run_id} from step 0"
        ) from None
    if branched is not None:  # a shorter run's state at its decay start: this run's own history up to there
        state["resumed_from"], state["branched_from"] = [], branched[0]
        return state
    state["resumed_from"].append(state["step"])
    return state


def _stable_start(a: _Attempt) -> tuple[int, Path] | None:
    """(step, path) of the latest stable-phase state a shorter run of this run's family saved, at or before this
    run's own decay start (scaling/branching.py); None when the run does not branch or none was saved yet."""
    if a.stable_family is None:
        return None
    return branching.latest_stable(a.results_dir, a.plan.run.sweep, a.stable_family,
                                   branching.branch_step(a.plan.run, a.plan.steps))


def _save_stable(a: _Attempt, tr: _Trainer) -> None:
    """This run's state at its decay start, for the longer runs of its family (once; rank 0)."""
    path = branching.stable_path(a.results_dir, a.plan.run.sweep, a.stable_family, tr.state["step"])
    if a.main and not path.exists():
        _write_state(path, tr)


def _finished(rec_path: Path, plan: RunPlan, console) -> dict | None:
    """The record when the run is already final (never trained again), else None; unreadable: StoreError."""
    record = store.read_record(rec_path) if rec_path.exists() else None
    if record is not None and record["status"] in store.FINAL_STATUSES:
        console.print(f"run {plan.run_id} ({plan.name}) is already {record['status']}: not re-training "
                      f"(record {rec_path})")
        return record
    return None


def train(run: RunConfig, show_progress: bool = True, console=None, owner: dict | None = None,
          name: str | None = None) -> dict:
    """Train one run to its budget (or resume it) and return its record. A finished run is not trained again.
    `name`: the run's cell name in its sweep's plan (with what the sweep varies), else the run's own name.

    The run's claim (claims.py) is held while it trains, so no two processes ever write one record: `owner` is
    the claim a sweep worker already took; without one, this process takes it (ClaimError when another live
    process trains the run). In a multi-process run every rank is given the worker's owner, or rank 0 claims."""
    from contextlib import nullcontext

    from rich.console import Console

    from scaling import claims, distributed

    console = console or Console(stderr=True)
    plan = plan_run(run)
    if name:
        plan = dataclasses.replace(plan, name=name)
    results_dir = resolve_results_dir(run)
    store.check_writable(results_dir)
    rec_path = store.record_path(results_dir, run.sweep, plan.run_id)
    if (done := _finished(rec_path, plan, console)) is not None:
        claims.tidy_run(results_dir, run.sweep, done)  # what a kill after its final record left (a claim, a checkpoint)
        return done
    claiming = owner is not None or os.environ.get("RANK", "0") == "0"
    with claims.held(results_dir, run.sweep, plan.run_id, owner) if claiming else nullcontext():
        if (done := _finished(rec_path, plan, console)) is not None:  # finished while we waited for the claim
            return done
        record = store.read_record(rec_path) if rec_path.exists() else None
        ranks, rank_device = distributed.setup(run.train.device)  # several processes (torchrun), else None
        attempt = _Attempt(plan, rec_path, store.checkpoint_path(results_dir, run.sweep, plan.run_id),
                           store.wandb_dir(results_dir, run.sweep), ranks, console, show_progress,
                           store.checkpoint_shards_path(results_dir, run.sweep, plan.run_id),
                           # one process only: the ranks of a multi-process run would each pick a state
                           stable_family=branching.family(plan.run, plan.steps) if ranks is None else None,
                           results_dir=results_dir)
        clean = False
        try:
            record = _train(attempt, record, rank_device)
            clean = True
            return record
        except scheduler.Preempted:
            clean = True  # every rank stopped at the same step
            raise
        finally:
            if ranks is not None:
                distributed.teardown(clean)


def _train(a: _Attempt, record: dict | None, rank_device) -> dict:
    """Start the attempt's record, build, train, evaluate, and write the final record."""
    record = _start_record(a, record)
    tr = _build(a, record, rank_device)
    tr.tracker = _start_tracker(a, record)
    wall_start = time.perf_counter()
    try:
        if tr.state["resumed_from"] and a.main:
            a.console.print(f"run {a.plan.run_id}: resuming from checkpoint at step {tr.state['step']}/"
                            f"{a.plan.steps}")
        elif tr.state.get("branched_from") and a.main:
            a.console.print(f"run {a.plan.run_id}: branching from the stable phase at step {tr.state['step']}/"
                            f"{a.plan.steps} (saved by a shorter run of its family)")
        _train_loop(a, tr, record)
        val_loss = _final_evaluation(a, tr)
        record["status"] = "completed"
    except Diverged as e:
        record["status"], record["error"] = "diverged", store.run_error("diverged", e.step, e.reason)
        val_loss = None
    except BaseException as e:
        record["status"], record["error"] = "failed", _failure(e, tr.state["step"])
        _finish(a, tr, record, None, wall_start)
        tr.tracker.finish(exit_code=1)
        raise
    try:
        _finish(a, tr, record, val_loss, wall_start)
    except store.StoreError as e:  # e.g. a full disk: the result must not vanish unseen
        res = record["results"]
        a.console.print(f"run {a.plan.run_id} ({a.plan.name}) {record['status']}: val loss {res.get('val_loss')}, "
                        f"{res.get('steps_done')} steps, {res.get('tokens_done')} tokens, smoothed train loss "
                        f"{res.get('train_loss_smoothed')}; NOT RECORDED: {e}", highlight=False, soft_wrap=True)
        tr.tracker.finish(exit_code=1)
        raise
    _summarize(tr.tracker, record, a.plan)
    if record["status"] in store.FINAL_STATUSES:
        _remove_checkpoint(a)
    return record


def _failure(e: BaseException, step: int) -> dict:
    """The record's error for an exception that ended an attempt: a stop, Ctrl-C, or a crash."""
    interrupted = isinstance(e, (KeyboardInterrupt, scheduler.Preempted))
    reason = str(e) if isinstance(e, scheduler.Preempted) else "interrupted" if interrupted else \
        f"{type(e).__name__}: {e}"
    return store.run_error(store.INTERRUPTED if interrupted else "exception", step, reason, traceback.format_exc())


def _start_record(a: _Attempt, record: dict | None) -> dict:
    """The record of this attempt (a new one, or the last attempt's), marked running, with where it runs."""
    import torch

    run, plan = a.plan.run, a.plan
    if record is None:
        record = store.new_record(plan.run_id, run.sweep, plan.name, to_dict(run), plan.derived(),
                                  provenance=first_provenance(plan))
    record["config"], record["derived"] = to_dict(run), plan.derived()
    record["status"], record["error"] = "running", None
    record["provenance"].update({
        "host": socket.gethostname(), "pid": os.getpid(), "batch_job": scheduler.batch_job_id(),
        "restart": scheduler.restart_count(), "python": platform.python_version(),
        "torch": torch.__version__, "started": now(), "attempts": record["provenance"].get("attempts", 0) + 1,
        "processes": a.ranks.world if a.ranks else 1,
    })
    a.save(record)
    return record


def _build(a: _Attempt, record: dict, rank_device) -> _Trainer:
    """Model, optimizer and training state (from the checkpoint when there is one). A failure here (no such
    device, an unreadable checkpoint) is recorded like one in training."""
    import torch

    from scaling import device as device_mod
    from scaling.model import build_model

    run, t = a.plan.run, a.plan.run.train
    try:
        if t.threads:
            torch.set_num_threads(t.threads)
        device = rank_device or device_mod.pick(t.device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(run.seed)
        model = build_model(run.model).to(device)
        a.parallel, a.micro_batch = _memory_plan(a, device)
        a.precision = precision_mod.resolve(t.precision, device)
        precision = precision_mod.prepare(model, a.precision, t.fp8_scaling, device)  # before FSDP shards it
        if a.sharded:
            from scaling import sharding

            sharding.shard(model, mixed_precision=device.type == "cuda")
        # fused AdamW (one kernel over all parameters), on CPU too: on the 2-core CPU, interleaved A/B of the
        # compiled bench_moe models, 1.023x (small) and 1.008x (large) the default foreach AdamW; the d64 default
        # model showed no difference (73.3 vs 73.9 ms/step).
        optimizer = torch.optim.AdamW(_param_groups(model), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                      weight_decay=t.weight_decay, fused=device.type in ("cuda", "cpu"))
        state = _load_checkpoint(a, model, optimizer, device)
        forward = compile_model(model, data_cache_dir(run.data)) if t.compile else model
    except Exception as e:
        record["status"], record["error"] = "failed", store.run_error(
            "exception", 0, f"{type(e).__name__}: {e}", traceback.format_exc())
        record["provenance"]["finished"] = now()
        a.save(record)
        raise
    pipeline = _pipeline(a, model, device) if a.parallel == "pipeline" else None
    record["provenance"].update({"device": device_mod.describe(device), "resumed_from_steps": state["resumed_from"],
                                 "parallel": a.parallel, "micro_batch": a.micro_batch, "precision": precision})
    if pipeline is not None:
        record["provenance"]["pipeline_layout"] = pipeline.layout
    a.save(record)
    return _Trainer(model, forward, optimizer, device, state, pipeline=pipeline)


def _pipeline(a: _Attempt, model, device):
    """train.parallel=pipeline: this rank's stages (scaling/pipelining.py). The split is decided on rank 0 (a
    balanced split on unit times it measures) and sent to every rank, so all agree on it."""
    import torch.distributed as dist

    from scaling import pipelining
    from scaling.layout.engines import megatron_layout

    t, m = a.plan.run.train, a.plan.run.model
    rows = a.micro_batch or max(1, t.batch_size // (2 * a.ranks.world * t.pipeline_vpp))
    if t.batch_size % rows:
        raise ValueError(f"train.parallel=pipeline: train.micro_batch_size={rows} does not divide "
                         f"train.batch_size={t.batch_size} into whole micro-batches")
    a.micro_batch = rows
    seconds = [None]
    if a.main and t.pipeline_split == "balanced":
        from scaling.probe import unit_seconds

        seconds[0] = unit_seconds(m, rows, str(device))
    dist.broadcast_object_list(seconds, src=0)
    split, units = pipelining.split_of(t.pipeline_split, m, a.ranks.world * t.pipeline_vpp, t.pipeline_vpp,
                                       seconds[0])
    return pipelining.Pipeline(model, split, units, a.ranks.rank, a.ranks.world, device, t.batch_size // rows,
                               megatron_layout(split, units), seconds[0])


def _memory_plan(a: _Attempt, device) -> tuple[str | None, int | None]:
    """(parallel, micro-batch rows) of this attempt: train.parallel ('auto': the memory plan's pick against this
    device, DDP when a replica fits it or its memory is unknown, as on the CPU; None for a single process), and
    train.micro_batch_size (null: on a GPU the most rows that fit it, else all rows)."""
    import torch

    from scaling import memory

    t = a.plan.run.train
    world = a.ranks.world if a.ranks is not None else 1
    capacity = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    plan = memory.plan_parallel(a.plan.run.model, t.batch_size, world, t.parallel, device.type == "cuda", capacity,
                                t.micro_batch_size)
    parallel = None if a.ranks is None else plan.parallel  # (an explicit train.parallel is the plan's too)
    micro = t.micro_batch_size or (plan.micro_batch if capacity is not None and plan.fits else None)
    return parallel, micro


def _start_tracker(a: _Attempt, record: dict):
    """The W&B run of this (sweep, cell): rank 0 only; the same cell in two sweeps gets two W&B runs."""
    from scaling import tracking

    if not a.main:
        return tracking.NullTracker()
    plan = a.plan
    wandb_id = f"{plan.run_id}-{hashlib.sha256(plan.run.sweep.encode()).hexdigest()[:6]}"
    tracker = tracking.start(plan.run.wandb, wandb_id, plan.name, plan.run.sweep,
                             {**record["config"], "derived": record["derived"]}, plan.tags(), a.wandb_dir)
    if tracker.run_url:
        record["provenance"]["wandb_url"] = tracker.run_url
    return tracker


def _final_evaluation(a: _Attempt, tr: _Trainer) -> float:
    """The held-out loss after the last step (a run whose loss is no better than chance has diverged)."""
    run, plan = a.plan.run, a.plan
    val_loss = _evaluate(tr.model, plan.data, run, tr.device, a.precision)
    _curve_point(a, tr, plan.steps)
    tr.state["evals"].append({"step": plan.steps, "val_loss": val_loss, "val_tokens": run.data.val_tokens})
    if not math.isfinite(val_loss) or val_loss > divergence_bound(run):
        raise Diverged(plan.steps, f"held-out loss {val_loss:.4g} after the last step exceeds "
                                   f"{divergence_bound(run):.3g} ({DIVERGENCE_BOUND_FACTOR:g} x ln vocab)")
    tr.tracker.log({"val/loss": val_loss, **plan.x_axes(plan.steps)}, step=plan.steps)
    return val_loss


def _summarize(tracker, record: dict, plan: RunPlan) -> None:
    res = record["results"]
    tracker.summarize({"final/val_loss": res["val_loss"], "final/train_loss_smoothed": res["train_loss_smoothed"],
                       "final/tokens_per_s": res["tokens_per_s"], "final/mfu": res["mfu"],
                       "final/tokens": res["tokens_done"], "final/flops": res["tokens_done"] * plan.counts.M,
                       "status": record["status"]})
    tracker.finish(exit_code=0 if record["status"] == "completed" else 1)


def _finish(a: _Attempt, tr: _Trainer, record: dict, val_loss: float | None, wall_start: float) -> None:
    """The attempt's results into the record, and the record to disk."""
    from scaling import device as device_mod

    plan, state, model, ranks = a.plan, tr.state, tr.model, a.ranks
    tokens_done = plan.tokens_after(state["step"])
    tokens_per_s = tokens_done / state["train_s"] if state["train_s"] > 0 else None
    peak = device_mod.peak_flops(str(tr.device), a.precision != "fp32")
    if peak and ranks is not None:
        peak *= ranks.world
    if ranks is not None and val_loss is not None:  # every rank got here: sum their expert loads
        from scaling import distributed

        for load_E in model.expert_load_buffers():
            distributed.sum_(load_E)
    shares = [[c / max(1.0, sum(layer)) for c in layer] for layer in model.expert_load()]
    record["results"] = store.run_results(
        val_loss=val_loss,
        train_loss_smoothed=state["ema"] / state["ema_weight"] if state["ema_weight"] else None,
        steps_done=state["step"], tokens_done=tokens_done, tokens_per_s=tokens_per_s,
        mfu=flops.mfu(tokens_per_s, plan.counts, peak),
        train_s=state["train_s"], wall_s=time.perf_counter() - wall_start,
        curve=state["curve"], evals=state["evals"], expert_load=shares,
        branched_from_step=state.get("branched_from", 0),
        expert_load_steps=[min(state["step"], state.get("load_from", 0)), state["step"]],
        max_expert_load_ratio=max((max(s) * len(s) for s in shares if s), default=None),
        diagnostics=state.get("diagnostics", []),
        pipeline=pipeline_timings(tr, ranks) if tr.pipeline is not None and val_loss is not None else None,
    )
    record["provenance"]["finished"] = now()
    a.save(record)


# ---- the loop --------------------------------------------------------------------------------------------------
def _train_loop(a: _Attempt, tr: _Trainer, record: dict) -> None:
    """Optimizer steps from the state's step to the plan's last; logs, evaluates and checkpoints on the way."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    plan, state = a.plan, tr.state
    load_window_start = _load_window_start(plan)
    branch_at = branching.branch_step(plan.run, plan.steps) if a.stable_family is not None else None
    if state["step"] == 0:
        tr.model.reset_expert_load()
        state["load_from"] = 0
    show = a.show_progress and a.main
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"), TimeRemainingColumn()]
    with Progress(*columns, console=a.console, disable=not show, transient=False) as progress:
        task = progress.add_task(plan.name, total=plan.steps, completed=state["step"], loss="-", tps="-")
        while state["step"] < plan.steps:
            step = state["step"]
            if step == load_window_start:
                tr.model.reset_expert_load()
                state["load_from"] = step
            t0 = time.perf_counter()
            lr = lr_at(step, plan.steps, plan.run.train)
            loss_value, grad_norm, checkpoint_asked, stop_asked = _step(a, tr, step, lr)
            state["train_s"] += time.perf_counter() - t0
            state["step"] = done = step + 1
            smoothed = _smoothed_loss(a.plan.run, state, loss_value, step)
            tokens_per_s = plan.tokens_after(done) / state["train_s"]
            _log_point(a, tr, done, {"train_loss": loss_value, "smoothed_loss": smoothed, "lr": lr,
                                     "grad_norm": grad_norm}, tokens_per_s)
            if done == branch_at:
                _save_stable(a, tr)
            if (checkpoint_asked or stop_asked or _periodic(plan.run.train.checkpoint_every, done)) \
                    and done < plan.steps:
                _checkpoint(a, tr, record, done, stop_asked)
            progress.update(task, completed=done, loss=f"{smoothed:.3f}", tps=f"{tokens_per_s:,.0f}")


def _load_window_start(plan: RunPlan) -> int:
    """The step from which expert load is reported: the last LOAD_WINDOW_FRACTION of the run, and for WSD never
    before the decay (so the state at the decay start, which longer runs branch from, is theirs too)."""
    start = plan.steps - max(1, int(round(LOAD_WINDOW_FRACTION * plan.steps)))
    return max(start, stable_end(plan.run.train, plan.steps)) if plan.run.train.schedule == "wsd" else start


def _periodic(every: int, done: int) -> bool:
    return bool(every) and done % every == 0


def _step(a: _Attempt, tr: _Trainer, step: int, lr: float) -> tuple[float, float, bool, str | None]:
    """One optimizer step on the step's batch (this rank's rows of it, or its pipeline stages' part): (loss,
    gradient norm, checkpoint asked, stop asked), the last three agreed by every rank. Non-finite loss or
    gradients: Diverged."""
    import torch

    plan, model, device, ranks = a.plan, tr.model, tr.device, a.ranks
    for g in tr.optimizer.param_groups:
        g["lr"] = lr
    n_rows = plan.batch_size_at(step)
    x_np, y_np = plan.data.train_batch(step, n_rows, plan.run.model.seq_len, plan.run.seed)
    if tr.pipeline is not None:
        loss_value = _pipeline_pass(a, tr, x_np, y_np)
    else:
        loss_value = _rows_pass(a, tr, step, x_np, y_np)
    checkpoint_asked, stop_asked = scheduler.pending_requests()
    if ranks is not None:
        loss_value, checkpoint_asked, stop_asked = _agree(model, device, loss_value, checkpoint_asked, stop_asked,
                                                          gradients=not a.sharded)
    if not math.isfinite(loss_value):
        raise Diverged(step, f"non-finite train loss ({loss_value}) at step {step}")
    clip = plan.run.train.grad_clip or math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if a.sharded:  # the norm of sharded gradients is a DTensor
        from scaling import sharding

        grad_norm = sharding.full_value(grad_norm)
    grad_norm = float(grad_norm)
    if not math.isfinite(grad_norm):
        raise Diverged(step, f"non-finite gradient norm at step {step}")
    tr.optimizer.step()
    tr.optimizer.zero_grad(set_to_none=True)
    model.update_expert_bias()
    return loss_value, grad_norm, checkpoint_asked, stop_asked


def _rows_pass(a: _Attempt, tr: _Trainer, step: int, x_np, y_np) -> float:
    """Forward and backward of this rank's rows of the batch (all of them in one process) in micro-batches,
    gradients accumulated and weighted by their share of the global batch, the step's expert loads set for the bias
    update: this rank's share of the batch's loss."""
    import torch

    from scaling import diagnostics

    model, device, ranks, n_rows = tr.model, tr.device, a.ranks, len(x_np)
    share = 1.0
    if ranks is not None:  # this rank's rows of the global batch
        mine = ranks.rows(n_rows)
        share = len(range(n_rows)[mine]) / n_rows
        # a rank may get no rows of a last, partial batch smaller than the number of ranks; under FSDP it still
        # runs the step (every rank takes part in each block's all-gather), on one row weighted 0
        x_np, y_np = (x_np[mine], y_np[mine]) if share or not a.sharded else (x_np[:1], y_np[:1])
    micro = a.micro_batch or max(1, len(x_np))
    loss_value, loads = 0.0, None
    monitor = _monitor(a, tr, step)
    forward = model if monitor is not None else tr.forward  # the monitor's hooks are on the eager modules
    with monitor if monitor is not None else contextlib.nullcontext():
        for start in range(0, len(x_np), micro):  # gradient accumulation over micro-batches of this rank's rows
            x_BT = torch.from_numpy(x_np[start: start + micro]).to(device)
            y_BT = torch.from_numpy(y_np[start: start + micro]).to(device)
            weight = len(x_BT) / n_rows if share else 0.0  # this micro-batch's share of the global batch
            loss, step_loads = _micro_step(a, model, forward, x_BT, y_BT, weight)
            loss_value += loss * weight
            loads = step_loads if loads is None else [acc + new for acc, new in zip(loads, step_loads, strict=True)]
    if monitor is not None:
        entry = monitor.summary(step + 1)
        tr.state["diagnostics"].append(entry)
        tr.tracker.log(diagnostics.tracker_metrics(entry), step=step + 1)
    if loads is not None:
        model.set_step_loads(loads)  # what the bias update and the ranks' sum see: the whole step's load
        if not share:
            model.forget_last_load()
    else:
        for load_E in model.step_load_buffers():
            load_E.zero_()
    return loss_value


def _pipeline_pass(a: _Attempt, tr: _Trainer, x_np, y_np) -> float:
    """The schedule's forward and backward of every micro-batch of the batch on this rank's pipeline stages
    (gradients on their parameters, zeros elsewhere: _agree sums them over the ranks, as under DDP), the step's
    expert loads counted on the stages set for the bias update: the batch's loss on the rank with the last
    stage, 0 elsewhere."""
    import torch

    rows = math.gcd(len(x_np), a.micro_batch)  # a last, shorter batch: equal micro-batches that divide it
    x_BT, y_BT = torch.from_numpy(x_np).to(tr.device), torch.from_numpy(y_np).to(tr.device)
    with precision_mod.autocast(tr.device, a.precision):
        loss_value = tr.pipeline.run(x_BT, y_BT, len(x_np) // rows)
    tr.model.set_step_loads([load.clone() for load in tr.pipeline.step_loads])
    return loss_value


def pipeline_timings(tr: _Trainer, ranks) -> dict | None:
    """Every rank's mean step and per-stage forward / backward seconds, gathered (all ranks call it)."""
    import torch

    from scaling import distributed

    if tr.pipeline is None:
        return None
    mine = tr.pipeline.timings()
    table = torch.zeros(ranks.world, len(mine), dtype=torch.float64)
    table[ranks.rank] = torch.tensor(mine, dtype=torch.float64)
    distributed.sum_(table)
    rows = table.tolist()
    stages = []
    for k in range(tr.pipeline.stages_total):
        rank, chunk = k % ranks.world, k // ranks.world
        stages.append({"stage": k, "rank": rank, "forward_s": rows[rank][1 + 2 * chunk],
                       "backward_s": rows[rank][2 + 2 * chunk]})
    return {"layout": tr.pipeline.layout, "step_s": max(r[0] for r in rows), "stages": stages,
            "microbatches": tr.pipeline.microbatches, "unit_seconds": tr.pipeline.unit_seconds}


def _monitor(a: _Attempt, tr: _Trainer, step: int):
    """The diagnostics monitor of this step when one is due (every train.diagnostics_every steps, and the last)."""
    every, done = a.plan.run.train.diagnostics_every, step + 1
    if not every or (done % every and done != a.plan.steps):
        return None
    from scaling import diagnostics
    from scaling.model.fp8 import Fp8Recipe

    return diagnostics.Monitor(tr.model, Fp8Recipe(a.plan.run.train.fp8_scaling))


def _micro_step(a: _Attempt, model, forward, x_BT, y_BT, weight: float) -> tuple[float, list]:
    """Forward and backward of one micro-batch, its gradients weighted by its share of the global batch: (its
    loss, its expert loads)."""
    import torch.nn.functional as F

    m, device = a.plan.run.model, x_BT.device
    with precision_mod.autocast(device, a.precision):
        logits_BTV = forward(x_BT)
    loss = F.cross_entropy(logits_BTV.float().flatten(0, 1), y_BT.flatten())
    aux, z = model.router_losses()
    total = loss + m.aux_loss_coef * aux.to(device) + m.z_loss_coef * z.to(device)
    (total * weight).backward()
    return loss.item(), model.step_load_buffers()


def _agree(model, device, loss_share: float, checkpoint_asked: bool, stop_asked: str | None, gradients: bool):
    """Across ranks: summed gradients (= the single-process gradient; FSDP has summed them already, gradients
    False), summed expert loads, and one collective that agrees on the loss and on whether any rank was asked to
    checkpoint or stop."""
    import torch

    from scaling import distributed

    if gradients:
        distributed.sum_gradients(list(model.parameters()))
    for load_E in model.step_load_buffers():
        distributed.sum_(load_E)
    agreed = distributed.sum_(torch.tensor([loss_share, bool(checkpoint_asked), bool(stop_asked)],
                                           dtype=torch.float64, device=device))
    stop = (stop_asked or "preempted (signal to another rank)") if agreed[2] > 0 else None
    return float(agreed[0]), bool(agreed[1] > 0), stop


def _smoothed_loss(run: RunConfig, state: dict, loss_value: float, step: int) -> float:
    """The loss EMA after this step; Diverged when it left its best by `divergence_factor` or passed the bound."""
    state["ema"] = EMA_DECAY * state["ema"] + (1 - EMA_DECAY) * loss_value
    state["ema_weight"] = EMA_DECAY * state["ema_weight"] + (1 - EMA_DECAY)
    smoothed = state["ema"] / state["ema_weight"]
    factor = run.train.divergence_factor
    if smoothed > factor * state["best_ema"]:
        raise Diverged(step, f"smoothed train loss {smoothed:.3f} exceeded {factor:g}x its best "
                             f"({state['best_ema']:.3f}) at step {step}")
    if smoothed > divergence_bound(run):
        raise Diverged(step, f"smoothed train loss {smoothed:.3f} exceeded {divergence_bound(run):.3g} "
                             f"({DIVERGENCE_BOUND_FACTOR:g} x ln vocab, a uniform guess's loss) at step {step}")
    state["best_ema"] = min(state["best_ema"], smoothed)
    return smoothed


def _log_point(a: _Attempt, tr: _Trainer, done: int, point: dict, tokens_per_s: float) -> None:
    """The curve point, W&B metrics, a periodic evaluation and the log line (without a progress bar) after step
    `done`, each at its own interval."""
    plan, t, state = a.plan, a.plan.run.train, tr.state
    last = done == plan.steps
    if done % t.log_every == 0 or last or done == 1:
        state["curve"].append({"step": done, "tokens": plan.tokens_after(done), **point})
        tr.tracker.log({"train/loss": point["train_loss"], "train/smoothed_loss": point["smoothed_loss"],
                        "train/lr": point["lr"], "train/grad_norm": point["grad_norm"],
                        "train/tokens_per_s": tokens_per_s, **plan.x_axes(done)}, step=done)
    if t.eval_every and done % t.eval_every == 0 and not last:
        val = _evaluate(tr.model, plan.data, plan.run, tr.device, a.precision)
        state["evals"].append({"step": done, "val_loss": val, "val_tokens": plan.run.data.val_tokens})
        tr.tracker.log({"val/loss": val, **plan.x_axes(done)}, step=done)
    if not last and done in a.curve_steps:
        _curve_point(a, tr, done)
    if not (a.show_progress and a.main) and a.main and (done % t.log_every == 0 or last):
        a.console.print(progress_line.line(done, plan.steps, point["train_loss"], point["smoothed_loss"], point["lr"],
                                           plan.tokens_after(done), tokens_per_s), highlight=False, soft_wrap=True)


CURVE_FIRST_STEP = 16
"""The validation curve's first step; then x sqrt 2 (rounded) up to the end of the run."""
CURVE_DECAY_POINTS = 3
"""Validation-curve points inside a WSD decay, evenly spaced, after its start (so never in a branching state)."""


def curve_steps(cfg: TrainConfig, steps: int) -> frozenset[int]:
    """The steps (before the last) at which a run of `steps` steps evaluates its validation curve: 16, 23, 32, 45,
    ... (x sqrt 2, the same steps in every run: a branched run inherits its predecessor's points before the branch
    and takes the same ones after it as the unbranched run would), and for WSD CURVE_DECAY_POINTS inside the decay,
    strictly after its start (a branch point), where the loss falls fastest."""
    if not cfg.curve_val_tokens:
        return frozenset()
    out, k = set(), 0
    while (step := int(round(CURVE_FIRST_STEP * 2 ** (k / 2)))) < steps:
        out.add(step)
        k += 1
    if cfg.schedule == "wsd":
        start, span = stable_end(cfg, steps), decay_steps(cfg, steps)
        inside = {start + int(round(span * i / (CURVE_DECAY_POINTS + 1))) for i in range(1, CURVE_DECAY_POINTS + 1)}
        out |= {s for s in inside if s > start}
    return frozenset(s for s in out if 0 < s < steps)


def _curve_point(a: _Attempt, tr: _Trainer, done: int) -> None:
    """The held-out loss on the curve's slice (train.curve_val_tokens) after step `done`, into the record's evals."""
    plan = a.plan
    tokens = plan.run.train.curve_val_tokens
    if not tokens:
        return
    val = _evaluate(tr.model, plan.data, plan.run, tr.device, a.precision, tokens=tokens)
    tr.state["evals"].append({"step": done, "val_loss": val, "val_tokens": tokens})
    tr.tracker.log({"val/curve_loss": val, **plan.x_axes(done)}, step=done)


def _checkpoint(a: _Attempt, tr: _Trainer, record: dict, done: int, stop_asked: str | None) -> None:
    """Save a checkpoint (rank 0) and the progress in the record; after a stop request, stop (Preempted)."""
    scheduler.checkpoint_served()
    _save_checkpoint(a, tr)
    record["results"] = {**record.get("results", {}), "steps_done": done}  # the record shows progress
    a.save(record)
    if stop_asked:
        raise scheduler.Preempted(f"{stop_asked} at step {done}; checkpoint saved")
