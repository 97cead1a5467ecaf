"""Run configuration: the Hydra structured configs (every field with its unit and default), a run's identity,
and its dict form (as records hold it). Composition from `sweeps/` is in compose.py, validation in validation.py.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A configuration that cannot run. The message is one line: what is wrong, where, and how to fix it."""


@dataclass
class ModelConfig:
    """Shape of the decoder-only MoE transformer (ARCHITECTURE section 4)."""

    d_model: int = 64
    """Residual stream width (features)."""
    n_layers: int = 2
    """Number of transformer blocks."""
    n_heads: int = 4
    """Attention query heads; head width is d_model / n_heads."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (must divide n_heads); None = n_heads (multi-head)."""
    seq_len: int = 256
    """Context length (tokens per sequence)."""
    vocab_size: int | None = 256
    """Vocabulary size (tokens); 256 for the byte-level embedded corpus; null = the data's (its manifest's, or its
    largest token id + 1), rounded up to a multiple of 64 (GPT-2's 50257 -> 50304)."""
    n_experts: int = 8
    """Routed experts E per MoE layer. E=1 with top_k=1 is the dense baseline (no router)."""
    top_k: int = 2
    """Routed experts each token is sent to (E_a)."""
    d_expert: int = 128
    """Hidden width of one routed expert (SwiGLU features)."""
    n_shared_experts: int = 0
    """Always-active shared experts E_s per MoE layer."""
    d_shared: int | None = None
    """Hidden width of one shared expert (features); None = d_expert."""
    n_dense_layers: int = 0
    """The first n_dense_layers blocks use a dense SwiGLU FFN instead of MoE (DeepSeek / Ling 'first-k dense')."""
    d_ff_dense: int | None = None
    """Hidden width of those dense FFNs (features); None = (top_k + n_shared_experts) * d_expert (same active width)."""
    score_func: str = "softmax"
    """Router scores: 'softmax' (Mixtral, DeepSeek-V2) or 'sigmoid' (DeepSeek-V3, Ling 2.0)."""
    norm_topk: bool = True
    """Renormalise the k selected scores to sum to 1."""
    balancing: str = "aux_free"
    """Load balancing: 'aux_free' (per-expert selection bias, DeepSeek-V3), 'aux_loss' (Switch loss), 'none'."""
    aux_loss_coef: float = 0.01
    """Weight of the auxiliary balancing loss (used when balancing='aux_loss')."""
    bias_update_rate: float = 0.003
    """Step of the aux-free bias update per optimizer step (score units; used when balancing='aux_free').
    Measured on the tiny MoE (2 seeds, 3e11 and 1e12 FLOPs): 0.001 leaves one expert with ~4x its fair share at
    3e11; 0.003 keeps every expert within 1.2x at no loss cost against no balancing; 0.01 costs ~0.05 nats."""
    z_loss_coef: float = 0.001
    """Weight of the router z-loss (mean squared log-sum-exp of router logits); 0 disables it."""
    qk_norm: bool = True
    """RMSNorm on queries and keys (per head, before RoPE)."""
    rope_base: float = 10000.0
    """RoPE base frequency."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of every weight matrix."""
    tie_embeddings: bool = False
    """Share the input embedding with the output head."""
    dispatch: str = "auto"
    """Expert dispatch: 'grouped_mm' (one grouped matmul), 'slices' (a matmul per contiguous slice), 'auto'."""


@dataclass
class MixtureSource:
    """One prepared folder (or glob) of a data mixture and its share of the training tokens."""

    path: str = ""
    """A folder or glob of token shards, as data.path takes."""
    weight: float = 1.0
    """Relative share of training rows drawn from this source (weights need not sum to 1)."""
    val_path: str | None = None
    """Its validation shards when data.path's rule does not find them (see data.val_path)."""


@dataclass
class DataConfig:
    """Where tokens come from (ARCHITECTURE section 6)."""

    source: str = "stdlib"
    """'stdlib' (the embedded corpus built from this Python's standard library), 'shards' (token files at
    data.path) or 'mixture' (several shard folders, weighted: data.mixture)."""
    path: str | None = None
    """For source='shards': a folder of token shards (a `scaling data prepare` folder with its manifest.json, or
    files named *train*.bin / *val*.bin, flat uint16/uint32 or llm.c-headered) or a glob of training shards."""
    val_path: str | None = None
    """Validation shards (folder or glob) when data.path is a glob; None = the glob with 'train' -> 'val'."""
    token_dtype: str = "uint16"
    """For headerless shards without a manifest: 'uint16' or 'uint32'."""
    mixture: list[MixtureSource] = field(default_factory=list)
    """For source='mixture': the sources and weights, e.g. [{path: /data/web, weight: 0.7}, {path: /data/code,
    weight: 0.3}]; every folder must come from the same tokenizer."""
    tokenizer: str = "bytes"
    """For source='stdlib': 'bytes' (vocab 256) or 'bpe' (a byte-level BPE of data.bpe_vocab tokens trained on the
    corpus once and cached; set model.vocab_size to it, or null to take it from the data)."""
    bpe_vocab: int = 4096
    """For tokenizer='bpe': the BPE vocabulary size (tokens, specials included)."""
    train_tokens: float | None = None
    """Training tokens the data holds, declared for planning when it is not on this machine (a dry run then says
    how often each cell would repeat it); ignored when the data or its manifest is present."""
    cache_dir: str | None = None
    """Where the built embedded corpus is cached; None = $SCALING_CACHE or ~/.cache/scaling."""
    val_fraction: float = 0.01
    """Fraction of the embedded corpus held out for validation (the tail; by document for tokenizer='bpe')."""
    val_tokens: int = 81920
    """Tokens scored by the held-out loss: the first val_tokens of the validation split, as contiguous
    non-overlapping sequences of model.seq_len (the same set for every run, whatever its batch size)."""
    allow_repeat: bool = False
    """Allow a run to see more tokens than the training split holds (the record then shows the epoch count)."""

    def __post_init__(self):
        self.mixture = [m if isinstance(m, MixtureSource) else MixtureSource(**m) for m in self.mixture or []]


PRECISIONS = ("auto", "fp32", "bf16", "fp8")
"""train.precision's values."""
FP8_SCALINGS = ("tensorwise", "rowwise")
"""train.fp8_scaling's values (scaling/model/fp8.py)."""


@dataclass
class TrainConfig:
    """Optimisation of one run."""

    batch_size: int = 16
    """Sequences per optimizer step (batch in tokens = batch_size * model.seq_len)."""
    lr: float = 3e-3
    """Peak learning rate."""
    schedule: str = "cosine"
    """'cosine' (linear warmup, cosine to min_lr_ratio * lr) or 'wsd' (warmup, stable, decay; Ling)."""
    warmup_fraction: float = 0.05
    """Fraction of the steps spent in linear warmup (unless warmup_steps is set)."""
    warmup_steps: int = 0
    """Steps of linear warmup when > 0, whatever the run's length (instead of warmup_fraction). Runs that branch
    their cooldowns from one stable phase (`branch`) need the same warmup in steps."""
    decay_fraction: float = 0.2
    """For schedule='wsd': fraction of the steps spent decaying at the end."""
    wsd_decay: str = "exp"
    """For schedule='wsd': shape of the decay, 'exp' (exponential, Ling) or 'linear'."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
    branch: bool = False
    """For schedule='wsd': share the warmup-stable phase with the runs of the same sweep and results folder that
    differ only in budget (Hagele et al. 2024): start from the latest stable-phase checkpoint a shorter one saved
    (results/<sweep>/stable/), and save this run's own at its decay start for longer ones. Not part of the run's
    id: a branched run trains what the unbranched one would, to float rounding (scaling/branching.py)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (norm weights get none)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    eval_every: int = 0
    """Steps between held-out evaluations of the whole held-out set during the run (0 = only at the end)."""
    curve_val_tokens: int = 8192
    """The validation curve: the held-out loss on the first curve_val_tokens of the held-out set at steps 16, 23, 32,
    45, ... (x sqrt 2: the same steps in every run, so branched runs share them), at three points inside a WSD
    decay and at the end; the record's `evals` (each says its val_tokens). 0 = no curve."""
    log_every: int = 10
    """Steps between loss-curve points in the record and W&B."""
    checkpoint_every: int = 50
    """Steps between checkpoints (0 = none); a killed run resumes from the last one."""
    keep_checkpoint: bool = False
    """Keep the final checkpoint after the run completes (otherwise it is deleted to save disk)."""
    divergence_factor: float = 2.0
    """The run is marked diverged when the smoothed train loss exceeds this factor times its best value."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    compile: bool = False
    """torch.compile the training forward/backward. Measured on the 2-core CPU with the default tiny MoE (batch 16):
    62k -> 78k tokens/s in steady state (1.26x), but a whole 1e12-FLOP run took 15.3 s eager, 29.9 s compiled from
    a cold cache and 14.2 s from the warm on-disk cache: a cold compile costs more than a small cell, so off by
    default; worth it for long runs. Its cache lives under the corpus cache (`<cache_dir>/inductor`), so it
    persists and, on a cluster with a shared home, is shared by every node."""
    threads: int | None = None
    """CPU threads for torch (None = torch's default)."""
    micro_batch_size: int | None = None
    """Rows per forward/backward pass on each device: a step's rows (batch_size, split over the processes) go
    through in micro-batches of this many, their gradients accumulated, so the update is the whole batch's
    (aux-loss balancing sees each micro-batch's own balance; aux-free balancing the step's summed load). None:
    the memory plan's pick on a GPU of known memory (the most rows that fit), else all rows at once."""
    precision: str = "auto"
    """Number formats of training: 'fp32'; 'bf16' (autocast: matmuls in bf16, reductions, norms and the loss in
    fp32; on the CPU too); 'fp8' (bf16, with the inputs of every linear layer's GEMMs and of the expert GEMMs in
    FP8 as train.fp8_scaling says, the router and output head kept in bf16: torchao's float8 training on GPUs with
    FP8 tensor cores (compute capability >= 8.9), emulated elsewhere with the same casts and scales: the numerics of
    FP8 at the speed of the base precision; scaling/model/fp8.py); 'auto' (bf16 on CUDA, fp32 on the CPU)."""
    fp8_scaling: str = "tensorwise"
    """For train.precision=fp8 (and the diagnostics): 'tensorwise' (one scale per GEMM input; output gradients in
    E5M2) or 'rowwise' (one scale per row along each GEMM's reduction dimension; everything E4M3). Scales are
    powers of two."""
    diagnostics_every: int = 0
    """Steps between FP8 quantization diagnostics (0 = none): per layer and GEMM input kind the relative
    quantization error and the fraction of values that underflow to zero under the FP8 recipe (also in a bf16 or
    fp32 run: what FP8 would do to it), the QKV projection's gradient underflow and the attention logit maximum
    (scaling/diagnostics.py); in the record's results.diagnostics and W&B."""
    parallel: str = "auto"
    """How a run on several processes (launcher.gpus_per_run > 1, torchrun) spreads over them: 'ddp' (a full
    replica per device, gradients all-reduced), 'fsdp' (FSDP2: parameters, gradients and AdamW state sharded, each
    block gathered when it runs; sharded checkpoints), or 'auto' (the memory plan's pick: DDP when a replica fits
    the device, else FSDP; scaling/memory.py), or 'pipeline' (the layers split over the processes as pipeline
    stages, 1F1B, each rank keeping a replica: scaling/pipelining.py). A single process
    ignores it."""
    pipeline_split: str = "balanced"
    """train.parallel=pipeline: how the layers are split over the stages: 'balanced' (scaling/layout's balanced
    split on unit times measured on this device), 'even' (the engines' default), or a Megatron-style layout
    string, e.g. 'Et*3|t*3|t*2L' (E embedding, t decoder layer, L head + loss; stages split by |)."""
    pipeline_vpp: int = 1
    """train.parallel=pipeline: virtual stages per process (interleaved 1F1B when > 1)."""


@dataclass
class WandbConfig:
    """Weights & Biases mirror of a run (the results directory stays the source of truth)."""

    mode: str = "auto"
    """'auto' (online with an API key, else offline), 'online', 'offline' or 'disabled'."""
    project: str = "scaling"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); None = the account's default."""


@dataclass
class RunConfig:
    """One training run: a model, a budget in FLOPs and how to spend it."""

    budget_flops: float = 3e11
    """Training compute C in FLOPs (non-embedding, forward+backward; see flops.py). Tokens D = C / M."""
    seed: int = 0
    """Seed for initialisation and data order."""
    sweep: str = "single"
    """Sweep this run belongs to (its folder under results_dir)."""
    results_dir: str | None = None
    """Root of the results store; None = $SCALING_RESULTS or ./results."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


IDENTITY_EXCLUDED = ("results_dir", "wandb", "sweep")
"""Top-level fields that do not change what is trained, so they do not enter the run id."""


TRAIN_FIELDS_NOT_IN_IDENTITY = ("eval_every", "curve_val_tokens", "log_every", "checkpoint_every", "keep_checkpoint",
                                "device", "threads", "compile", "parallel", "micro_batch_size", "diagnostics_every",
                                "branch", "pipeline_split", "pipeline_vpp")
"""Bookkeeping fields of TrainConfig that do not change the trained model either."""


DATA_FIELDS_NOT_IN_IDENTITY = ("cache_dir", "train_tokens")


def register_configs() -> None:
    """Register the structured configs with Hydra's ConfigStore (the schemas of sweeps/*.yaml)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)


ENV_LOCATIONS = ("data.path", "data.val_path", "data.cache_dir", "results_dir")
"""The only keys whose value may come from the environment (`${oc.env:SCALING_DATA}`): locations on this machine.
Everything else (names, W&B fields, settings) must be written out, so no resolved environment value (a token,
a user name) ever reaches a folder name, a record or W&B."""


def results_root(override: str | None = None) -> Path:
    """The results directory: an explicit value > $SCALING_RESULTS > ./results."""
    return Path(override or os.environ.get("SCALING_RESULTS") or "results")


def resolve_results_dir(run: RunConfig) -> Path:
    return results_root(run.results_dir)


def to_dict(run: RunConfig) -> dict:
    return dataclasses.asdict(run)


@functools.cache
def _default_dict() -> dict:
    return to_dict(RunConfig())


def with_defaults(config: dict) -> dict:
    """A resolved config's dict form (a record's `config`) with the schema's default for every field it lacks (a
    record written before the field existed), so that no reader re-types a default."""
    defaults = _default_dict()
    out = {**defaults, **config}
    for section, fields in defaults.items():
        if isinstance(fields, dict):
            out[section] = {**fields, **(config.get(section) or {})}
    return out


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its dict form (as stored in a record); unknown keys are an error."""
    sub = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "wandb": WandbConfig}
    kwargs = {k: (sub[k](**v) if k in sub else v) for k, v in d.items()}
    return RunConfig(**kwargs)


def override_value(v, nested: bool = False) -> str:
    """A value as Hydra's override grammar reads it back unchanged (strings quoted unless plainly safe; lists and
    dicts, e.g. data.mixture, as Hydra's [a, b] and {key: value})."""
    import re

    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(override_value(x, nested=True) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {override_value(x, nested=True)}" for k, x in v.items()) + "}"
    s = str(v)
    safe = r"[A-Za-z0-9_./+-]+" if nested else r"[A-Za-z0-9_./:+-]+"
    if re.fullmatch(safe, s) and s.lower() not in ("null", "true", "false"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identity_overrides(config: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """Every field of a resolved config (a record's `config`) that determines what is trained, as `key=value`
    overrides that `compose` turns back into the same model, data and optimisation (keys in `skip` left out)."""
    run = from_dict(config)
    lines = []
    for section, fields in identity_dict(run).items():
        if not isinstance(fields, dict):
            continue
        for key, value in fields.items():
            name = f"{section}.{key}"
            if name not in skip:
                lines.append(f"{name}={override_value(value)}")
    return lines


def identity_dict(run: RunConfig) -> dict:
    """The part of the config that determines what is trained (every such field, defaults included)."""
    d = to_dict(run)
    for k in IDENTITY_EXCLUDED:
        d.pop(k)
    for k in TRAIN_FIELDS_NOT_IN_IDENTITY:
        d["train"].pop(k)
    for k in DATA_FIELDS_NOT_IN_IDENTITY:
        d["data"].pop(k)
    return d


IDENTITY_VERSION = 2
"""Bumped only on purpose: when a default that enters identities changes meaning (a new default value of an
existing field), so that cells trained under the old default are not taken for the new ones. Adding a field with a
default does not need it (test_config pins the defaults' fingerprint, so a changed default fails until bumped)."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _default_identity() -> tuple:
    return tuple(sorted(_flat(identity_dict(RunConfig())).items(), key=lambda kv: kv[0]))


def identity_key(run: RunConfig) -> dict:
    """What a run id hashes: IDENTITY_VERSION and the identity fields whose values differ from the schema's
    defaults (dotted keys). A field added to the schema with a default leaves every existing id unchanged."""
    defaults = dict(_default_identity())
    changed = {k: v for k, v in _flat(identity_dict(run)).items() if k not in defaults or defaults[k] != v}
    return {"identity_version": IDENTITY_VERSION, **changed}
