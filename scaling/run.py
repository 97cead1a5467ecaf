"""A run before it trains (ARCHITECTURE section 5): a RunConfig and its budget in FLOPs become tokens, steps, an
id, a readable name and the provenance its record starts with. Pure arithmetic and no torch, so the sweep
planner, `scaling train --dry-run`, the launchers and `run_cell` use it without loading the trainer.

`plan_run(run)` derives everything (params, M, tokens D = C / M, steps) and refuses impossible runs (with the
numbers and the fix) before any compute. A run does not know whether it is part of a sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from scaling import __version__, flops
from scaling.config import ConfigError, RunConfig, identity_key
from scaling.data import DataError, DataSummary, TokenData
from scaling.lr_schedule import stable_end, warmup_steps


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
    """The tokens it trains on; None for a plan made from a summary (a sweep's plan, a dry run)."""
    summary: DataSummary | None = None
    """What planning knew of the data (token counts, vocabulary, fingerprint), whether or not it is here."""

    def batch_size_at(self, step: int) -> int:
        """Sequences in optimizer step `step` (0-based): the full batch, except a possibly smaller last one."""
        return self.last_batch_size if step == self.steps - 1 else self.run.train.batch_size

    def tokens_after(self, steps_done: int) -> int:
        full = min(steps_done, self.steps - 1) * self.batch_tokens
        return full + (self.last_batch_size * self.run.model.seq_len if steps_done >= self.steps else 0)

    def x_axes(self, steps_done: int) -> dict:
        """The x-axes of a logged point (tracking.X_AXES): tokens seen and FLOPs spent after `steps_done` steps."""
        tokens = self.tokens_after(steps_done)
        return {"tokens": tokens, "flops": tokens * self.counts.M}

    def tags(self) -> list[str]:
        """The cell's coordinates as tracker tags: C, A, G, lr and batch tokens."""
        return [f"C={short_number(self.run.budget_flops)}", f"A={self.counts.activation_ratio:.3g}",
                f"G={self.counts.granularity:.3g}", f"lr={short_number(self.run.train.lr)}",
                f"B={self.batch_tokens}"]

    def derived(self) -> dict:
        """The record's `derived` section: every quantity the plan resolved."""
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
            "epochs": self.summary.epochs(self.tokens) if self.summary is not None else None,
            "data_fingerprint": self.summary.fingerprint if self.summary is not None else None,
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


NAME_KEYS = {"train.lr": "lr", "model.d_model": "d", "model.n_layers": "L", "train.schedule": "", "seed": "s",
             "train.precision": "", "model.qk_norm": "qknorm"}
"""How a swept key shows in a cell name: its short name ('' for the value alone); a boolean shows as the short name
or 'no' + it (qknorm, noqknorm); any other key as its last part = value."""


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def shape_tag(shape: dict) -> str:
    """d{d_model}L{n_layers} of a sweep's shape (other shape keys are in the cell's config; the id tells cells
    apart)."""
    tag = "".join(f"{NAME_KEYS['model.' + k]}{_fmt(shape[k])}" for k in ("d_model", "n_layers") if k in shape)
    return tag or "shape"


def cell_name(run: RunConfig, counts: flops.ModelCounts, batch_tokens: int, shape: dict | None = None,
              updates: dict | None = None, several_seeds: bool = False) -> str:
    """Readable cell name, e.g. C3e11-A0.25-G1-lr3e-3-B4k: the budget, A, G, lr and batch, then (in a sweep) its
    shape, the other keys it sets (`updates`: fp8, noqknorm, wsd, n_experts=16) and its seed when it has several.
    The one place names are spelled."""
    batch = f"{batch_tokens // 1024}k" if batch_tokens % 1024 == 0 else str(batch_tokens)
    parts = [f"C{short_number(run.budget_flops)}-A{counts.activation_ratio:.3g}-G{counts.granularity:.3g}"
             f"-lr{short_number(run.train.lr)}-B{batch}"]
    if shape:
        parts.append(shape_tag(shape))
    for key, value in (updates or {}).items():
        if key in ("train.lr", "train.batch_size", "seed"):
            continue
        short = NAME_KEYS.get(key, key.split(".")[-1])
        if isinstance(value, bool):
            parts.append(short if value else f"no{short}")
        else:
            parts.append(f"{short}{_fmt(value)}" if short in ("d", "L", "") else f"{short}={_fmt(value)}")
    if several_seeds:
        parts.append(f"s{run.seed}")
    return "-".join(parts)


def plan_run(run: RunConfig, data: TokenData | DataSummary | None = None, refuse_repeats: bool = True) -> RunPlan:
    """Derive tokens and steps from the budget; refuse what cannot run (with the numbers and the fix).

    `data`: the tokens to train on (loaded from run.data when None), or a DataSummary to plan without them (a
    sweep's plan; a dry run of data that is not on this machine, whose unknown counts are then not checked).
    `refuse_repeats=False` (dry runs) plans a run that would repeat its data without data.allow_repeat, so the
    plan can show how often."""
    from scaling import data as data_mod

    if data is None:
        data = data_mod.load(run.data)
    summary = data.summary() if isinstance(data, TokenData) else data
    run = with_data_vocab(run, summary)
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
    _check_schedule(run, steps)
    if abs(tokens * counts.M - run.budget_flops) > 0.01 * run.budget_flops:
        raise ConfigError(
            f"budget_flops={run.budget_flops:.3g} buys {tokens_exact:.0f} tokens, {sequences} whole sequences of "
            f"{run.model.seq_len}: {abs(tokens * counts.M / run.budget_flops - 1):.1%} off the budget: raise "
            f"budget_flops or shorten model.seq_len"
        )
    check_fits(run, tokens, summary, refuse_repeats)
    return RunPlan(run=run, run_id=run_id(run), name=cell_name(run, counts, batch_tokens), counts=counts,
                   batch_tokens=batch_tokens, steps=steps, tokens=tokens,
                   last_batch_size=sequences - (steps - 1) * run.train.batch_size,
                   data=data if isinstance(data, TokenData) else None, summary=summary)


def _check_schedule(run: RunConfig, steps: int) -> None:
    """An absolute warmup (train.warmup_steps) must end before the decay (WSD) or the run (cosine) begins."""
    t = run.train
    room = stable_end(t, steps) if t.schedule == "wsd" else steps - 1
    if warmup_steps(t, steps) > room:
        raise ConfigError(f"train.warmup_steps={t.warmup_steps} does not fit a run of {steps} steps (budget_flops="
                          f"{run.budget_flops:.3g}), whose {'decay' if t.schedule == 'wsd' else 'last step'} starts "
                          f"at step {room}: lower train.warmup_steps or raise the budget")


VOCAB_MULTIPLE = 64
"""model.vocab_size=null takes the data's vocabulary rounded up to this (GPT-2's 50257 -> 50304, as nanoGPT)."""


def with_data_vocab(run: RunConfig, summary: DataSummary) -> RunConfig:
    """The run with model.vocab_size resolved: as set, or (null) the data's, rounded up to VOCAB_MULTIPLE."""
    import dataclasses

    if run.model.vocab_size is not None:
        return run
    if summary.vocab_size is None:
        raise ConfigError("model.vocab_size=null takes the vocabulary from the data, which is not on this machine "
                          "(and has no manifest here): set model.vocab_size")
    vocab = -(-summary.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=vocab))


VOCAB_PAD_MAX = 1024
"""A model's vocabulary may exceed its tokenizer's by padding (to a multiple of 64, or 128 x tensor-parallel ranks
in Megatron) but by fewer than this many rows: more is a vocabulary of another tokenizer, whose extra embedding and
head rows every FLOP and parameter count the laws use would include."""


def check_fits(run: RunConfig, tokens: int, data: DataSummary, refuse_repeats: bool = True) -> None:
    """The data has the tokens the run needs, in the model's vocabulary (what is unknown is not checked)."""
    if data.vocab_size is not None and data.vocab_size > run.model.vocab_size:
        raise DataError(
            f"the data holds token ids up to {data.vocab_size - 1} but model.vocab_size={run.model.vocab_size}: "
            f"set model.vocab_size={data.vocab_size} (or null to take the data's)"
        )
    if data.vocab_is_tokenizer and data.vocab_size is not None \
            and run.model.vocab_size - data.vocab_size >= VOCAB_PAD_MAX:
        raise DataError(
            f"model.vocab_size={run.model.vocab_size} but the data's tokenizer has {data.vocab_size:,} tokens: the "
            f"{run.model.vocab_size - data.vocab_size:,} extra rows of the embedding and output head would enter "
            f"every FLOP and parameter count; set model.vocab_size=null (the data's, rounded up to {VOCAB_MULTIPLE})"
        )
    epochs = data.epochs(tokens)
    if refuse_repeats and epochs is not None and epochs > 1 and not run.data.allow_repeat:
        of = " of its most-repeated source" if len(data.weights) > 1 else ""
        raise DataError(
            f"the run needs {tokens:,} training tokens but the {run.data.source} training split holds "
            f"{data.total_train_tokens:,} ({epochs:.2f} epochs{of}): lower budget_flops, use more data, or set "
            f"data.allow_repeat=true"
        )
    if any(n is not None and n < run.model.seq_len + 2 for n in data.train_tokens):
        raise DataError(f"a training split holds {min(data.train_tokens):,} tokens, fewer than one sequence: use "
                        f"more data")


# ---- provenance ----------------------------------------------------------------------------------------------
def now() -> str:
    """The current UTC time as records write it (ISO 8601, seconds)."""
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


def first_provenance(plan: RunPlan) -> dict:
    """What a new record's provenance holds before its first attempt (each attempt adds where it ran): the data
    by fingerprint, and for prepared data its tokenizer (not its folder: a location, maybe from $SCALING_DATA)."""
    provenance = {"code_version": code_version(), "data_fingerprint": plan.data.fingerprint if plan.data else None,
                  "seed": plan.run.seed, "created": now(), "attempts": 0}
    if plan.data is not None and plan.data.notes.get("tokenizer"):
        provenance["data_tokenizer"] = plan.data.notes["tokenizer"]
    return provenance
