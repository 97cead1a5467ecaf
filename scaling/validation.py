"""Validation of a run config: refuse impossible settings, and settings the rest of the config would ignore,
with a one-line error naming the key and the fix (no data or torch needed).
"""

from __future__ import annotations

import dataclasses

from scaling.config import FP8_SCALINGS, PRECISIONS, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from scaling.memory import PARALLEL_MODES


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}: set {key} to one of them")


def validate(run: RunConfig) -> None:
    """Refuse impossible settings with a one-line error naming the key and the fix (no data or torch needed).

    Checks that need the data (corpus size) or FLOPs (budget too small) happen in `run.plan_run`, still before
    any compute is spent.
    """
    _check_finite(run)
    problem = _sweep_name_problem(run.sweep)
    if problem:
        raise ConfigError(f"sweep={run.sweep!r}: {problem}")
    if not 0 <= run.seed < 2**32:
        raise ConfigError(f"seed={run.seed} must be in [0, 2**32): set seed=0, 1, ...")
    if not run.budget_flops > 0:
        raise ConfigError(f"budget_flops={run.budget_flops} must be positive (FLOPs, e.g. budget_flops=3e11)")
    _check_shape(run)
    _check_choices(run)
    _check_data(run)
    _check_consistent(run)
    _check_optimizer(run)
    _check_coefficients(run)


def _check_shape(run: RunConfig) -> None:
    """The model's and batch's sizes: positive, and shapes that fit together (heads, top-k, dense layers)."""
    m, t, d = run.model, run.train, run.data
    positive = {
        "model.d_model": m.d_model, "model.n_layers": m.n_layers, "model.n_heads": m.n_heads,
        "model.seq_len": m.seq_len, "model.n_experts": m.n_experts,
        "model.vocab_size": 1 if m.vocab_size is None else m.vocab_size,  # null: the data's (run.with_data_vocab)
        "model.top_k": m.top_k, "model.d_expert": m.d_expert, "train.batch_size": t.batch_size,
        "data.val_tokens": d.val_tokens,
        "train.micro_batch_size": 1 if t.micro_batch_size is None else t.micro_batch_size,  # null: the plan's
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    if m.d_model % m.n_heads:
        raise ConfigError(
            f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}: "
            f"pick n_heads among the divisors of d_model"
        )
    if (m.d_model // m.n_heads) % 2:
        raise ConfigError(
            f"head width d_model/n_heads = {m.d_model // m.n_heads} is odd; RoPE needs an even head width: "
            f"change model.d_model or model.n_heads"
        )
    if m.n_kv_heads is not None and (m.n_kv_heads < 1 or m.n_heads % m.n_kv_heads):
        raise ConfigError(f"model.n_kv_heads={m.n_kv_heads} must divide model.n_heads={m.n_heads}")
    if m.top_k > m.n_experts:
        raise ConfigError(
            f"model.top_k={m.top_k} > model.n_experts={m.n_experts}: a token cannot use more experts than exist; "
            f"lower top_k or raise n_experts"
        )
    if m.n_shared_experts < 0:
        raise ConfigError(f"model.n_shared_experts={m.n_shared_experts} must be >= 0")
    for key, value in (("model.d_shared", m.d_shared), ("model.d_ff_dense", m.d_ff_dense)):
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value} must be at least 1 (or null for the default)")
    if not 0 <= m.n_dense_layers <= m.n_layers:
        raise ConfigError(f"model.n_dense_layers={m.n_dense_layers} must be between 0 and model.n_layers={m.n_layers}")


def _check_choices(run: RunConfig) -> None:
    m, t = run.model, run.train
    _choice("model.score_func", m.score_func, ("softmax", "sigmoid"))
    _choice("model.balancing", m.balancing, ("aux_free", "aux_loss", "none"))
    _choice("model.dispatch", m.dispatch, ("auto", "grouped_mm", "slices"))
    _choice("train.schedule", t.schedule, ("cosine", "wsd"))
    _choice("train.wsd_decay", t.wsd_decay, ("exp", "linear"))
    _choice("wandb.mode", run.wandb.mode, ("auto", "online", "offline", "disabled"))
    _choice("train.parallel", t.parallel, PARALLEL_MODES)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.fp8_scaling", t.fp8_scaling, FP8_SCALINGS)
    if t.precision == "fp8":
        _check_fp8_shapes(m)
    if t.parallel == "pipeline":
        if t.diagnostics_every:
            raise ConfigError("train.diagnostics_every with train.parallel=pipeline is not supported (the FP8 "
                              "diagnostics hook the whole model's modules): set it to 0, or use ddp")
        if t.compile:
            raise ConfigError("train.compile=true with train.parallel=pipeline is not supported: drop train.compile")
        if t.pipeline_vpp < 1:
            raise ConfigError(f"train.pipeline_vpp={t.pipeline_vpp} must be at least 1")
        if t.pipeline_split not in ("even", "balanced"):
            from scaling.layout.engines import check_megatron_layout, parse_megatron_layout

            try:
                stages = parse_megatron_layout(t.pipeline_split)
                problems = check_megatron_layout(t.pipeline_split, len(stages), m.n_layers)
            except ValueError as e:
                problems = [str(e)]
            if problems:
                raise ConfigError(f"train.pipeline_split={t.pipeline_split!r}: {'; '.join(problems)} (or use even or "
                                  f"balanced)")
    if t.parallel == "fsdp" and t.compile:
        raise ConfigError("train.compile=true with train.parallel=fsdp is not supported yet (the blocks would need "
                          "compiling one by one before sharding): drop train.compile or use train.parallel=ddp")


def _check_fp8_shapes(m: ModelConfig) -> None:
    """FP8 GEMMs (torch._scaled_mm) need both dimensions of every quantized weight divisible by 16."""
    from scaling.flops import d_ff_dense, d_shared, head_dim, n_kv_heads

    widths = {"model.d_model": m.d_model, "model.d_expert": m.d_expert,
              "the qkv width (n_heads + 2 n_kv_heads) * head width": (m.n_heads + 2 * n_kv_heads(m)) * head_dim(m)}
    if m.n_shared_experts:
        widths["model.n_shared_experts * d_shared"] = m.n_shared_experts * d_shared(m)
    if m.n_dense_layers:
        widths["model.d_ff_dense"] = d_ff_dense(m)
    for key, width in widths.items():
        if width % 16:
            raise ConfigError(f"train.precision=fp8 needs {key} divisible by 16 for FP8 GEMMs (got {width}): pick a "
                              f"multiple of 16, or train.precision=bf16")


def _check_data(run: RunConfig) -> None:
    """The data source's settings: known names, a mixture with sources, a vocabulary the byte corpus fits.
    (A missing data.path is the data loader's to refuse: a dry run can plan without the data.)"""
    m, d = run.model, run.data
    _choice("data.source", d.source, ("stdlib", "shards", "mixture"))
    _choice("data.tokenizer", d.tokenizer, ("bytes", "bpe"))
    _choice("data.token_dtype", d.token_dtype, ("uint16", "uint32"))
    if d.source == "mixture" and not d.mixture:
        raise ConfigError("data.source=mixture needs data.mixture=[{path: FOLDER, weight: W}, ...]")
    if any(not (mix.weight > 0) or not mix.path for mix in d.mixture):
        raise ConfigError("every data.mixture entry needs a path and a positive weight")
    if d.source == "stdlib" and d.tokenizer == "bytes" and m.vocab_size is not None and m.vocab_size < 256:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is too small for the byte corpus: set it to 256")
    if d.tokenizer == "bpe" and not 260 <= d.bpe_vocab <= 65535:
        raise ConfigError(f"data.bpe_vocab={d.bpe_vocab} must be in [260, 65535] (bytes and a few merges, uint16)")
    if d.train_tokens is not None and d.train_tokens < 1:
        raise ConfigError(f"data.train_tokens={d.train_tokens} must be a positive token count (or null)")
    if not 0 < d.val_fraction < 0.5:
        raise ConfigError(f"data.val_fraction={d.val_fraction} must be in (0, 0.5)")


def _check_optimizer(run: RunConfig) -> None:
    """The schedule and AdamW settings: rates, fractions and moment decays in range."""
    t = run.train
    if not t.lr > 0:
        raise ConfigError(f"train.lr={t.lr} must be positive")
    if not 0 <= t.warmup_fraction < 1:
        raise ConfigError(f"train.warmup_fraction={t.warmup_fraction} must be in [0, 1)")
    if not 0 <= t.decay_fraction <= 1 or t.warmup_fraction + (t.decay_fraction if t.schedule == "wsd" else 0) > 1:
        raise ConfigError(
            f"train.decay_fraction={t.decay_fraction} with warmup_fraction={t.warmup_fraction} exceeds the run: "
            f"keep warmup_fraction + decay_fraction <= 1"
        )
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio={t.min_lr_ratio} must be in [0, 1]")
    if t.schedule == "wsd" and t.wsd_decay == "exp" and t.min_lr_ratio <= 0:
        raise ConfigError("train.min_lr_ratio must be > 0 for an exponential WSD decay: set it (e.g. 0.1)")
    if t.divergence_factor <= 1:
        raise ConfigError(f"train.divergence_factor={t.divergence_factor} must be > 1")
    if t.grad_clip < 0 or t.weight_decay < 0:
        raise ConfigError("train.grad_clip and train.weight_decay must be >= 0")
    for key, value in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value} must be in [0, 1) (AdamW's moment decay, e.g. 0.9 and 0.95)")


def _check_coefficients(run: RunConfig) -> None:
    """Positive scales, non-negative loss coefficients and intervals, and the grouped-matmul alignment."""
    m, t = run.model, run.train
    for key, value in (("train.eps", t.eps), ("model.init_std", m.init_std), ("model.rope_base", m.rope_base)):
        if not value > 0:
            raise ConfigError(f"{key}={value} must be positive")
    for key, value in (("model.aux_loss_coef", m.aux_loss_coef), ("model.z_loss_coef", m.z_loss_coef),
                       ("model.bias_update_rate", m.bias_update_rate)):
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    for key in ("eval_every", "curve_val_tokens", "log_every", "checkpoint_every", "diagnostics_every",
                "warmup_steps"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 0")
    if m.dispatch == "grouped_mm" and (m.d_model % 8 or m.d_expert % 8):
        raise ConfigError(
            f"model.dispatch=grouped_mm needs d_model and d_expert divisible by 8 (got {m.d_model}, {m.d_expert}): "
            f"use model.dispatch=auto or slices"
        )


def _check_finite(config, prefix: str = "") -> None:
    """Every number of a config is finite (nan or inf would slip through every comparison below)."""
    import math

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{f.name}={value} must be a finite number")


def _sweep_name_problem(name) -> str | None:
    from scaling.store import sweep_name_problem

    return sweep_name_problem(name)


def _check_consistent(run: RunConfig) -> None:
    """Refuse a setting that the rest of the config would ignore without a word (each names the fix)."""
    m, t, d = run.model, run.train, run.data
    default = {"model": ModelConfig(), "train": TrainConfig(), "data": DataConfig()}
    ignored = [  # (key, is set away from its default, the setting it needs)
        ("data.path", d.path is not None, d.source == "shards", "data.source=shards"),
        ("data.token_dtype", d.token_dtype != default["data"].token_dtype, d.source in ("shards", "mixture"),
         "data.source=shards"),
        ("data.val_path", d.val_path is not None, d.source == "shards", "data.source=shards"),
        ("data.mixture", bool(d.mixture), d.source == "mixture", "data.source=mixture"),
        ("data.tokenizer", d.tokenizer != default["data"].tokenizer, d.source == "stdlib", "data.source=stdlib"),
        ("data.bpe_vocab", d.bpe_vocab != default["data"].bpe_vocab, d.tokenizer == "bpe", "data.tokenizer=bpe"),
        ("model.d_shared", m.d_shared is not None, m.n_shared_experts > 0, "model.n_shared_experts >= 1"),
        ("model.d_ff_dense", m.d_ff_dense is not None, m.n_dense_layers > 0, "model.n_dense_layers >= 1"),
        ("model.aux_loss_coef", m.aux_loss_coef != default["model"].aux_loss_coef, m.balancing == "aux_loss",
         "model.balancing=aux_loss"),
        ("model.bias_update_rate", m.bias_update_rate != default["model"].bias_update_rate,
         m.balancing == "aux_free", "model.balancing=aux_free"),
        ("train.decay_fraction", t.decay_fraction != default["train"].decay_fraction, t.schedule == "wsd",
         "train.schedule=wsd"),
        ("train.wsd_decay", t.wsd_decay != default["train"].wsd_decay, t.schedule == "wsd", "train.schedule=wsd"),
        ("train.branch", t.branch, t.schedule == "wsd", "train.schedule=wsd (a cosine run's lr depends on its "
                                                           "length from the first step)"),
        ("train.fp8_scaling", t.fp8_scaling != default["train"].fp8_scaling,
         t.precision == "fp8" or t.diagnostics_every > 0, "train.precision=fp8 or train.diagnostics_every > 0"),
    ]
    for key, is_set, used, needs in ignored:
        if is_set and not used:
            section, field_name = key.split(".")
            value = getattr(getattr(run, section), field_name)
            raise ConfigError(f"{key}={value} has no effect without {needs}: set that too, or drop {key}")
