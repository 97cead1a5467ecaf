"""One run (ARCHITECTURE section 5): a RunConfig and its budget in FLOPs become tokens, steps and a record.

`plan_run(run)` derives everything (params, M, tokens D = C / M, steps) and refuses impossible runs before any
compute. `train(run)` trains, checkpoints, resumes, detects divergence and writes the run record atomically.
A run does not know whether it is part of a sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from scaling import __version__, flops, scheduler, store
from scaling import progress as progress_line
from scaling.config import ConfigError, RunConfig, identity_key, resolve_results_dir, to_dict
from scaling.data import DataError, TokenData
from scaling.data import cache_dir as data_cache_dir
from scaling.schedule import lr_at, warmup_steps

EMA_DECAY = 0.9
"""Smoothing of the train loss for divergence detection and the reported smoothed train loss."""
DIVERGENCE_BOUND_FACTOR = 3.0
"""A run whose smoothed train loss, or final held-out loss, exceeds this many times ln(vocab size) (the loss of
a uniform guess: 5.55 nats for bytes) has diverged, whatever its history: from the first step on."""
LOAD_WINDOW_FRACTION = 0.1
"""Expert load (tokens per expert per layer) is reported over the last tenth of the run: `expert_load` holds
each expert's share of its layer's assignments over the steps `expert_load_steps` = [from, to)."""


@dataclass
class RunPlan:
    """A run with every derived quantity resolved; no compute spent yet."""

    run: RunConfig
    run_id: str
    name: str
    counts: flops.ModelCounts
    batch_tokens: int
    steps: int
    tokens: int
    """Training tokens: whole sequences, steps - 1 full batches plus a last batch of `last_batch_size` sequences."""
    last_batch_size: int
    data: TokenData | None

    @property
    def flops_per_token(self) -> float:
        return self.counts.M

    def batch_size_at(self, step: int) -> int:
        """Sequences in optimizer step `step` (0-based): the full batch, except a possibly smaller last one."""
        return self.last_batch_size if step == self.steps - 1 else self.run.train.batch_size

    def tokens_after(self, steps_done: int) -> int:
        full = min(steps_done, self.steps - 1) * self.batch_tokens
        return full + (self.last_batch_size * self.run.model.seq_len if steps_done >= self.steps else 0)

    def derived(self) -> dict:
        c = self.counts
        return {
            **{k: v for k, v in c.as_dict().items() if k != "flops_per_token"},
            "flops_per_token": c.flops_per_token,
            "budget_flops": self.run.budget_flops,
            "flops": self.tokens * c.M,
            "tokens": self.tokens,
            "steps": self.steps,
            "batch_size": self.run.train.batch_size,
            "batch_tokens": self.batch_tokens,
            "last_batch_size": self.last_batch_size,
            "seq_len": self.run.model.seq_len,
            "warmup_steps": warmup_steps(self.run.train, self.steps),
            "epochs": self.tokens / len(self.data.train) if self.data is not None else None,
            "data_fingerprint": self.data.fingerprint if self.data is not None else None,
        }


def run_id(run: RunConfig) -> str:
    """Stable id: a short hash of what determines what is trained, as it differs from the schema's defaults
    (config.identity_key), so a new defaulted field leaves every id unchanged."""
    blob = json.dumps(identity_key(run), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def short_number(x: float) -> str:
    """3e11, 1.5e-3: the compact form used in cell names."""
    mantissa, exp = f"{x:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def cell_name(run: RunConfig, counts: flops.ModelCounts, batch_tokens: int) -> str:
    """Readable cell name, e.g. C3e11-A0.25-G1-lr3e-3-B4k."""
    batch = f"{batch_tokens // 1024}k" if batch_tokens % 1024 == 0 else str(batch_tokens)
    return (f"C{short_number(run.budget_flops)}-A{counts.activation_ratio:.3g}-G{counts.granularity:.3g}"
            f"-lr{short_number(run.train.lr)}-B{batch}")


def plan_run(run: RunConfig, data: TokenData | None = None, check_data: bool = True) -> RunPlan:
    """Derive tokens and steps from the budget; refuse what cannot run (with the numbers and the fix).

    `check_data=False` plans without opening the data (no corpus-size or vocabulary checks; for plans of
    presets whose data lives elsewhere, e.g. snapshot tests of GPU presets)."""
    from scaling import data as data_mod

    counts = flops.count(run.model)
    batch_tokens = run.train.batch_size * run.model.seq_len
    tokens_exact = flops.tokens_for_budget(run.budget_flops, counts.M)
    # Whole sequences (within half a sequence of D = C / M), in whole optimizer steps: full batches and a last,
    # possibly smaller one, so the spent compute tokens * M matches the budget even when there are few steps.
    sequences = int(round(tokens_exact / run.model.seq_len))
    steps = math.ceil(sequences / run.train.batch_size)
    if sequences < run.train.batch_size:
        need = counts.M * batch_tokens
        raise ConfigError(
            f"budget_flops={run.budget_flops:.3g} buys {tokens_exact:.0f} tokens at M={counts.M:.4g} FLOPs/token, "
            f"less than one optimizer step of {batch_tokens} tokens: raise budget_flops to at least {need:.3g} "
            f"or lower train.batch_size"
        )
    tokens = sequences * run.model.seq_len
    if abs(tokens * counts.M - run.budget_flops) > 0.01 * run.budget_flops:
        raise ConfigError(
            f"budget_flops={run.budget_flops:.3g} buys {tokens_exact:.0f} tokens, {sequences} whole sequences of "
            f"{run.model.seq_len}: {abs(tokens * counts.M / run.budget_flops - 1):.1%} off the budget: raise "
            f"budget_flops or shorten model.seq_len"
        )
    if check_data:
        data = data or data_mod.load(run.data)
        check_fits(run, tokens, data)
    rid = run_id(run)
    return RunPlan(run=run, run_id=rid, name=cell_name(run, counts, batch_tokens), counts=counts,
                   batch_tokens=batch_tokens, steps=steps, tokens=tokens,
                   last_batch_size=sequences - (steps - 1) * run.train.batch_size, data=data)


def check_fits(run: RunConfig, tokens: int, data: TokenData) -> None:
    """The data has the tokens the run needs, in the model's vocabulary."""
    if data.vocab_size > run.model.vocab_size:
        raise DataError(
            f"the data holds token ids up to {data.vocab_size - 1} but model.vocab_size={run.model.vocab_size}: "
            f"set model.vocab_size={data.vocab_size}"
        )
    if tokens > len(data.train) and not run.data.allow_repeat:
        raise DataError(
            f"the run needs {tokens:,} training tokens but the {run.data.source} training split holds "
            f"{len(data.train):,} ({tokens / len(data.train):.2f} epochs): lower budget_flops, use more data, "
            f"or set data.allow_repeat=true"
        )
    if len(data.train) < run.model.seq_len + 2:
        raise DataError(f"the training split holds {len(data.train)} tokens, fewer than one sequence: use more data")


# ---- provenance ----------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    """Git commit of the source checkout (with '+dirty' for local changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


# ---- training ------------------------------------------------------------------------------------------------
class Diverged(Exception):
    def __init__(self, step: int, reason: str):
        super().__init__(reason)
        self.step, self.reason = step, reason


class Preempted(Exception):
    """Training stopped at a step boundary on a scheduler's request (its warning signal); a checkpoint was saved,
    so the next attempt resumes there."""


_REQUESTS = {"checkpoint": False, "stop": None}
"""Asked by signal handlers, served by the training loop at the next step boundary (see handle_scheduler_signals)."""


def request_checkpoint() -> None:
    """Save a checkpoint at the next step boundary and go on training."""
    _REQUESTS["checkpoint"] = True


def request_stop(reason: str) -> None:
    """Save a checkpoint at the next step boundary and stop (Preempted); a process that asked takes no new run."""
    _REQUESTS["stop"] = reason


def stop_requested() -> str | None:
    return _REQUESTS["stop"]


def handle_scheduler_signals() -> None:
    """In a batch job's training process: SIGTERM (a cancel or pre-emption is coming) saves a checkpoint at the
    next step and goes on; SIGUSR2 (Slurm's time-limit / pre-emption warning, as submitit asks for it) saves one
    and stops, so the requeued job resumes from it. Call from the main thread."""
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: request_checkpoint())
    signal.signal(signal.SIGUSR2, lambda signum, frame: request_stop(f"preempted ({signal.Signals(signum).name})"))


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


def _evaluate(model, data: TokenData, run: RunConfig, device, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats per token) over the fixed held-out sequences."""
    import torch
    import torch.nn.functional as F

    x_all, y_all = data.val_sequences(run.data.val_tokens, run.model.seq_len)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(x_all), batch_size):
            x = torch.from_numpy(x_all[i : i + batch_size]).to(device)
            y = torch.from_numpy(y_all[i : i + batch_size]).to(device)
            logits = model(x)
            total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def _autocast(device):
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    import torch

    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}
    store.atomic_write(path, lambda f: torch.save(payload, f))


def _load_checkpoint(path: Path, model, optimizer, device, run_id: str) -> dict:
    """Training state from the checkpoint (model and optimizer loaded in place), or a fresh state."""
    import torch

    state = {"step": 0, "train_s": 0.0, "ema": 0.0, "ema_weight": 0.0, "best_ema": math.inf,
             "curve": [], "evals": [], "resumed_from": []}
    if not path.exists():
        return state
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
    state["resumed_from"].append(state["step"])
    return state


def divergence_bound(run: RunConfig) -> float:
    """The absolute loss bound (nats per token) above which a run has diverged (DIVERGENCE_BOUND_FACTOR)."""
    return DIVERGENCE_BOUND_FACTOR * math.log(run.model.vocab_size)


def _finished(rec_path: Path, plan: RunPlan, console) -> dict | None:
    """The record when the run is already final (never trained again), else None; unreadable: StoreError."""
    record = store.read_record(rec_path) if rec_path.exists() else None
    if record is not None and record["status"] in store.FINAL_STATUSES:
        console.print(f"run {plan.run_id} ({plan.name}) is already {record['status']}: not re-training "
                      f"(record {rec_path})")
        return record
    return None


def train(run: RunConfig, show_progress: bool = True, console=None, owner: dict | None = None) -> dict:
    """Train one run to its budget (or resume it) and return its record. A finished run is not trained again.

    The run's claim (claims.py) is held while it trains, so no two processes ever write one record: `owner` is
    the claim a sweep worker already took; without one, this process takes it (ClaimError when another live
    process trains the run). In a multi-process run every rank is given the worker's owner, or rank 0 claims."""
    from contextlib import nullcontext

    from rich.console import Console

    from scaling import claims

    console = console or Console(stderr=True)
    plan = plan_run(run)
    results_dir = resolve_results_dir(run)
    store.check_writable(results_dir)
    rec_path = store.record_path(results_dir, run.sweep, plan.run_id)
    ckpt_path = store.checkpoint_path(results_dir, run.sweep, plan.run_id)
    if (done := _finished(rec_path, plan, console)) is not None:
        return done
    claiming = owner is not None or os.environ.get("RANK", "0") == "0"
    with claims.held(results_dir, run.sweep, plan.run_id, owner) if claiming else nullcontext():
        if (done := _finished(rec_path, plan, console)) is not None:  # finished while we waited for the claim
            return done
        record = store.read_record(rec_path) if rec_path.exists() else None
        from scaling import distributed

        ranks, rank_device = distributed.setup(run.train.device)  # several processes (torchrun), else None
        clean = False
        try:
            record = _train(run, plan, record, rec_path, ckpt_path, results_dir, ranks, rank_device, show_progress,
                            console)
            clean = True
            return record
        except Preempted:
            clean = True  # every rank stopped at the same step
            raise
        finally:
            if ranks is not None:
                distributed.teardown(clean)


def _train(run, plan, record, rec_path, ckpt_path, results_dir, ranks, rank_device, show_progress, console) -> dict:
    import torch

    from scaling import device as device_mod
    from scaling import tracking
    from scaling.model import build_model

    main = ranks is None or ranks.main
    save = (lambda rec: store.write_record(rec_path, rec)) if main else (lambda rec: None)  # rank 0 writes
    show_progress = show_progress and main
    if record is None:
        record = store.new_record(
            plan.run_id, run.sweep, plan.name, to_dict(run), plan.derived(),
            provenance={"code_version": code_version(), "data_fingerprint": plan.data.fingerprint,
                        "seed": run.seed, "created": _now(), "attempts": 0},
        )
    record["config"], record["derived"] = to_dict(run), plan.derived()
    record["status"], record["error"] = "running", None
    record["provenance"].update({
        "host": socket.gethostname(), "pid": os.getpid(), "batch_job": scheduler.batch_job_id(),
        "restart": scheduler.restart_count(), "python": platform.python_version(),
        "torch": torch.__version__, "started": _now(), "attempts": record["provenance"].get("attempts", 0) + 1,
        "processes": ranks.world if ranks else 1,
    })
    save(record)

    t = run.train
    try:  # a failure here (no such device, unreadable checkpoint) is recorded like one in training
        if t.threads:
            torch.set_num_threads(t.threads)
        device = rank_device or device_mod.pick(t.device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(run.seed)
        model = build_model(run.model).to(device)
        # fused AdamW (one kernel over all parameters), on CPU too: on the 2-core CPU, interleaved A/B of the
        # compiled bench_moe models, 1.023x (small) and 1.008x (large) the default foreach AdamW; the d64 default
        # model showed no difference (73.3 vs 73.9 ms/step).
        optimizer = torch.optim.AdamW(_param_groups(model), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                      weight_decay=t.weight_decay, fused=device.type in ("cuda", "cpu"))
        state = _load_checkpoint(ckpt_path, model, optimizer, device, plan.run_id)
    except Exception as e:
        record["status"] = "failed"
        record["error"] = {"kind": "exception", "step": 0, "reason": f"{type(e).__name__}: {e}".splitlines()[0],
                           "traceback": traceback.format_exc()}
        record["provenance"]["finished"] = _now()
        save(record)
        raise
    if state["resumed_from"] and main:
        console.print(f"run {plan.run_id}: resuming from checkpoint at step {state['step']}/{plan.steps}")
    record["provenance"].update({"device": device_mod.describe(device), "resumed_from_steps": state["resumed_from"]})
    save(record)

    tags = [f"C={short_number(run.budget_flops)}", f"A={plan.counts.activation_ratio:.3g}",
            f"G={plan.counts.granularity:.3g}", f"lr={short_number(t.lr)}", f"B={plan.batch_tokens}"]
    # The same cell may sit in two sweeps (same run id, two records): one W&B run per (sweep, cell).
    wandb_id = f"{plan.run_id}-{hashlib.sha256(run.sweep.encode()).hexdigest()[:6]}"
    tracker = tracking.start(run.wandb, wandb_id, plan.name, run.sweep,
                             {**record["config"], "derived": record["derived"]}, tags,
                             store.wandb_dir(results_dir, run.sweep)) if main else tracking.NullTracker()
    if tracker.run_url:
        record["provenance"]["wandb_url"] = tracker.run_url
    wall_start = time.perf_counter()
    try:
        # same parameters; records use `model`
        forward = compile_model(model, data_cache_dir(run.data)) if t.compile else model

        def on_checkpoint(step: int) -> None:  # the record shows progress while the run goes on
            record["results"] = {**record.get("results", {}), "steps_done": step}
            save(record)

        _train_loop(plan, model, forward, optimizer, state, device, ckpt_path, tracker, show_progress, console,
                    on_checkpoint, ranks)
        val_loss = _evaluate(model, plan.data, run, device)
        state["evals"].append({"step": plan.steps, "val_loss": val_loss})
        if not math.isfinite(val_loss) or val_loss > divergence_bound(run):
            raise Diverged(plan.steps, f"held-out loss {val_loss:.4g} after the last step exceeds "
                                       f"{divergence_bound(run):.3g} ({DIVERGENCE_BOUND_FACTOR:g} x ln vocab)")
        record["status"] = "completed"
        tracker.log({"val/loss": val_loss, **_x_axes(plan, plan.steps)}, step=plan.steps)
    except Diverged as e:
        record["status"] = "diverged"
        record["error"] = {"kind": "diverged", "step": e.step, "reason": e.reason}
        val_loss = None
    except BaseException as e:
        record["status"] = "failed"
        interrupted = isinstance(e, (KeyboardInterrupt, Preempted))
        reason = str(e) if isinstance(e, Preempted) else "interrupted" if interrupted else f"{type(e).__name__}: {e}"
        record["error"] = {"kind": "interrupted" if interrupted else "exception", "step": state["step"],
                           "reason": reason.splitlines()[0], "traceback": traceback.format_exc()}
        _finish(record, save, state, plan, model, device, None, wall_start, ranks)
        tracker.finish(exit_code=1)
        raise
    try:
        _finish(record, save, state, plan, model, device, val_loss, wall_start, ranks)
    except store.StoreError as e:  # e.g. a full disk: the result must not vanish unseen
        res = record["results"]
        console.print(f"run {plan.run_id} ({plan.name}) {record['status']}: val loss {res.get('val_loss')}, "
                      f"{res.get('steps_done')} steps, {res.get('tokens_done')} tokens, smoothed train loss "
                      f"{res.get('train_loss_smoothed')}; NOT RECORDED: {e}", highlight=False, soft_wrap=True)
        tracker.finish(exit_code=1)
        raise
    res = record["results"]
    tracker.summarize({"final/val_loss": res["val_loss"], "final/train_loss_smoothed": res["train_loss_smoothed"],
                       "final/tokens_per_s": res["tokens_per_s"], "final/mfu": res["mfu"],
                       "final/tokens": res["tokens_done"], "final/flops": res["tokens_done"] * plan.counts.M,
                       "status": record["status"]})
    tracker.finish(exit_code=0 if record["status"] == "completed" else 1)
    if main and record["status"] in store.FINAL_STATUSES and ckpt_path.exists() and not t.keep_checkpoint:
        ckpt_path.unlink()
    return record


def _finish(record, save, state, plan: RunPlan, model, device, val_loss, wall_start, ranks=None) -> None:
    from scaling import device as device_mod

    tokens_done = plan.tokens_after(state["step"])
    tokens_per_s = tokens_done / state["train_s"] if state["train_s"] > 0 else None
    peak = device_mod.peak_flops(str(device), device.type == "cuda")
    if peak and ranks is not None:
        peak *= ranks.world
    if ranks is not None and val_loss is not None:  # every rank got here: sum their expert loads
        from scaling import distributed

        for load_E in model.expert_load_buffers():
            distributed.sum_(load_E)
    loads = model.expert_load()
    shares = [[c / max(1.0, sum(layer)) for c in layer] for layer in loads]
    record["results"] = {
        "val_loss": val_loss,
        "train_loss_smoothed": state["ema"] / state["ema_weight"] if state["ema_weight"] else None,
        "steps_done": state["step"],
        "tokens_done": tokens_done,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * plan.counts.M / peak if tokens_per_s and peak else None,
        "train_s": state["train_s"],
        "wall_s": time.perf_counter() - wall_start,
        "curve": state["curve"],
        "evals": state["evals"],
        "expert_load": shares,
        "expert_load_steps": [min(state["step"], state.get("load_from", 0)), state["step"]],
        "max_expert_load_ratio": max((max(s) * len(s) for s in shares if s), default=None),
    }
    record["provenance"]["finished"] = _now()
    save(record)


def _x_axes(plan: RunPlan, steps_done: int) -> dict:
    """The W&B x-axes of a logged point (tracking.X_AXES): tokens seen and FLOPs spent after `steps_done` steps."""
    tokens = plan.tokens_after(steps_done)
    return {"tokens": tokens, "flops": tokens * plan.counts.M}


def _train_loop(plan: RunPlan, model, forward, optimizer, state: dict, device, ckpt_path: Path, tracker,
                show_progress: bool, console, on_checkpoint=None, ranks=None) -> None:
    import torch
    import torch.nn.functional as F
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from scaling import distributed

    run, t = plan.run, plan.run.train
    m = run.model
    load_window_start = plan.steps - max(1, int(round(LOAD_WINDOW_FRACTION * plan.steps)))
    if state["step"] == 0:
        model.reset_expert_load()
        state["load_from"] = 0

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        task = progress.add_task(plan.name, total=plan.steps, completed=state["step"], loss="-", tps="-")
        while state["step"] < plan.steps:
            step = state["step"]
            if step == load_window_start:
                model.reset_expert_load()
                state["load_from"] = step
            t0 = time.perf_counter()
            lr = lr_at(step, plan.steps, t)
            for g in optimizer.param_groups:
                g["lr"] = lr
            n_rows = plan.batch_size_at(step)
            x_np, y_np = plan.data.train_batch(step, n_rows, m.seq_len, run.seed)
            if ranks is not None:  # this rank's rows of the global batch
                x_np, y_np = x_np[ranks.rows(n_rows)], y_np[ranks.rows(n_rows)]
            share = len(x_np) / n_rows
            if share:  # (a rank may get no rows of a last, partial batch smaller than the number of ranks)
                x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
                with _autocast(device):
                    logits = forward(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                aux, z = model.router_losses()
                total = loss + m.aux_loss_coef * aux.to(device) + m.z_loss_coef * z.to(device)
                (total * share if ranks is not None else total).backward()
            else:
                loss = torch.zeros(())
                for load_E in model.step_load_buffers():
                    load_E.zero_()
            checkpoint_asked, stop_asked = _REQUESTS["checkpoint"], _REQUESTS["stop"]
            if ranks is None:
                loss_value = loss.item()
            else:  # summed gradients = the single-process gradient; one more collective agrees on the rest
                distributed.sum_gradients(list(model.parameters()))
                for load_E in model.step_load_buffers():
                    distributed.sum_(load_E)
                agreed = distributed.sum_(torch.tensor([loss.item() * share, bool(checkpoint_asked),
                                                        bool(stop_asked)], dtype=torch.float64, device=device))
                loss_value = float(agreed[0])
                checkpoint_asked = bool(agreed[1] > 0)
                stop_asked = (stop_asked or "preempted (signal to another rank)") if agreed[2] > 0 else None
            if not math.isfinite(loss_value):
                raise Diverged(step, f"non-finite train loss ({loss_value}) at step {step}")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip else math.inf)
            grad_norm = float(grad_norm)
            if not math.isfinite(grad_norm):
                raise Diverged(step, f"non-finite gradient norm at step {step}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.update_expert_bias()
            state["train_s"] += time.perf_counter() - t0
            state["step"] = step + 1

            state["ema"] = EMA_DECAY * state["ema"] + (1 - EMA_DECAY) * loss_value
            state["ema_weight"] = EMA_DECAY * state["ema_weight"] + (1 - EMA_DECAY)
            smoothed = state["ema"] / state["ema_weight"]
            if smoothed > t.divergence_factor * state["best_ema"]:
                raise Diverged(step, f"smoothed train loss {smoothed:.3f} exceeded {t.divergence_factor:g}x its best "
                                     f"({state['best_ema']:.3f}) at step {step}")
            if smoothed > divergence_bound(run):
                raise Diverged(step, f"smoothed train loss {smoothed:.3f} exceeded {divergence_bound(run):.3g} "
                                     f"({DIVERGENCE_BOUND_FACTOR:g} x ln vocab, a uniform guess's loss) at step {step}")
            state["best_ema"] = min(state["best_ema"], smoothed)

            done = state["step"]
            tokens_per_s = plan.tokens_after(done) / state["train_s"]
            if done % t.log_every == 0 or done == plan.steps or done == 1:
                point = {"step": done, "tokens": plan.tokens_after(done), "train_loss": loss_value,
                         "smoothed_loss": smoothed, "lr": lr, "grad_norm": grad_norm}
                state["curve"].append(point)
                tracker.log({"train/loss": loss_value, "train/smoothed_loss": smoothed, "train/lr": lr,
                             "train/grad_norm": grad_norm, "train/tokens_per_s": tokens_per_s,
                             **_x_axes(plan, done)}, step=done)
            if t.eval_every and done % t.eval_every == 0 and done < plan.steps:
                val = _evaluate(model, plan.data, run, device)
                state["evals"].append({"step": done, "val_loss": val})
                tracker.log({"val/loss": val, **_x_axes(plan, done)}, step=done)
            periodic = t.checkpoint_every and done % t.checkpoint_every == 0
            if (periodic or checkpoint_asked or stop_asked) and done < plan.steps:
                _REQUESTS["checkpoint"] = False
                if ranks is None or ranks.main:
                    _save_checkpoint(ckpt_path, model, optimizer, state)
                if on_checkpoint is not None:
                    on_checkpoint(done)
                if stop_asked:
                    raise Preempted(f"{stop_asked} at step {done}; checkpoint saved")
            progress.update(task, completed=done, loss=f"{smoothed:.3f}", tps=f"{tokens_per_s:,.0f}")
            if not show_progress and (ranks is None or ranks.main) and (done % t.log_every == 0 or done == plan.steps):
                console.print(progress_line.line(done, plan.steps, loss_value, smoothed, lr, plan.tokens_after(done),
                                                 tokens_per_s), highlight=False, soft_wrap=True)
