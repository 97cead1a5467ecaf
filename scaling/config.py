"""Run configuration: Hydra structured configs, composition from `sweeps/`, and validation.

Every field carries a docstring with its unit. `compose(overrides)` composes `train.yaml` along the search path
(a user's --config-dir or ./sweeps first, then the presets shipped with the package), checks every override's key
against the schema (a typo gets "did you mean"), and validates the result: an impossible or inconsistent setting
fails here, with a one-line message naming the key and the fix, before any compute is spent.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_PRESETS = Path(__file__).resolve().parent.parent / "sweeps"
"""The presets of a source checkout (the repo's top-level sweeps/)."""
INSTALLED_PRESETS = Path(__file__).resolve().parent / "presets"
"""The same presets inside an installed wheel (pyproject.toml maps sweeps/ to the package scaling.presets)."""
USER_CONFIG_DIR = Path("sweeps")
"""A user's own configs, searched before the presets when this folder exists in the working directory."""


def preset_dir() -> Path:
    """The shipped presets (train.yaml, the sweeps, model/, laws/): the checkout's sweeps/, else the installed copy."""
    return SOURCE_PRESETS if (SOURCE_PRESETS / "train.yaml").is_file() else INSTALLED_PRESETS


def search_path(config_dir: str | Path | None = None, *first: Path) -> list[Path]:
    """Folders searched for configs, the first holding a name wins: `first` (e.g. a sweep file's own folder), then
    `config_dir` (--config-dir; else ./sweeps when it exists), then the presets. Duplicates dropped."""
    if config_dir is not None and not Path(config_dir).is_dir():
        raise ConfigError(f"--config-dir {config_dir} is not a folder: give the folder holding your sweep YAMLs "
                          f"(and their model/, launcher/ groups)")
    user = Path(config_dir) if config_dir is not None else USER_CONFIG_DIR
    dirs = [*first, *([user] if user.is_dir() else []), preset_dir()]
    return list(dict.fromkeys(d.resolve() for d in dirs))


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
    vocab_size: int = 256
    """Vocabulary size (tokens); 256 for the byte-level embedded corpus."""
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
class DataConfig:
    """Where tokens come from (ARCHITECTURE section 6)."""

    source: str = "stdlib"
    """'stdlib' (the embedded corpus built from this Python's standard library) or 'shards' (token files)."""
    path: str | None = None
    """For source='shards': a folder holding train.bin and val.bin (flat uint16/uint32, optional llm.c header)."""
    token_dtype: str = "uint16"
    """For headerless shards: 'uint16' or 'uint32'."""
    cache_dir: str | None = None
    """Where the built embedded corpus is cached; None = $SCALING_CACHE or ~/.cache/scaling."""
    val_fraction: float = 0.01
    """Fraction of the embedded corpus held out for validation (the tail)."""
    val_tokens: int = 81920
    """Tokens scored by the held-out loss: the first val_tokens of the validation split, as contiguous
    non-overlapping sequences of model.seq_len (the same set for every run, whatever its batch size)."""
    allow_repeat: bool = False
    """Allow a run to see more tokens than the training split holds (the record then shows the epoch count)."""


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
    """Fraction of the steps spent in linear warmup."""
    decay_fraction: float = 0.2
    """For schedule='wsd': fraction of the steps spent decaying at the end."""
    wsd_decay: str = "exp"
    """For schedule='wsd': shape of the decay, 'exp' (exponential, Ling) or 'linear'."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
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
    """Steps between held-out evaluations during the run (0 = only at the end)."""
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
TRAIN_FIELDS_NOT_IN_IDENTITY = ("eval_every", "log_every", "checkpoint_every", "keep_checkpoint", "device", "threads",
                                "compile")
"""Bookkeeping fields of TrainConfig that do not change the trained model either."""
DATA_FIELDS_NOT_IN_IDENTITY = ("cache_dir",)


def register_configs() -> None:
    """Register the structured configs with Hydra's ConfigStore (the schemas of sweeps/*.yaml)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)


def find_config(name: str, search: list[Path]) -> Path | None:
    """The first `<dir>/<name>.yaml` along the search path."""
    return next((d / f"{name}.yaml" for d in search if (d / f"{name}.yaml").is_file()), None)


def find_file(path: str | Path, search: list[Path]) -> Path:
    """A file named in a config (a law JSON): as given when it exists or is absolute, else the first match along
    the search path (`laws/ling_moe.json` is in the presets); unchanged when found nowhere (its reader reports)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return next((d / p for d in search if (d / p).exists()), p)


def _declares(path: Path, schema: str) -> bool:
    """Whether a YAML's own defaults list already names `schema` (the boilerplate older configs carry)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path} cannot be read as YAML ({_one_line(e)}): fix the file") from None
    defaults = doc.get("defaults") if isinstance(doc, dict) else None
    return isinstance(defaults, list) and schema in defaults


def hydra_compose(config_name: str, overrides: list[str] | tuple[str, ...], search: list[Path],
                  schema: str | None = None):
    """Compose `config_name` (the first `<dir>/<name>.yaml` along `search`) with Hydra overrides and return the
    typed object (a dataclass). Config groups (`model=wide`, `launcher=mycluster`) resolve along the same path, so
    a user's folder composes with the presets. `schema` (a ConfigStore name) types the result when the file's
    own defaults list does not name it. Every Hydra / OmegaConf error becomes a one-line ConfigError."""
    from hydra import compose as compose_
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    path = find_config(config_name, search)
    if path is None:
        raise ConfigError(f"no {config_name}.yaml in {', '.join(map(str, search))}: check the name, or pass "
                          f"--config-dir DIR")
    defaults = [config_name, "_self_"]
    if schema and not _declares(path, schema):
        defaults.insert(0, schema)
    entry = f"_scaling_entry_{config_name}"
    ConfigStore.instance().store(name=entry, node={"defaults": defaults})
    searchpath = "hydra.searchpath=[" + ",".join(_override_value(f"file://{d}") for d in search[1:]) + "]"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(search[0]), version_base="1.3"):
            cfg = compose_(config_name=entry, overrides=[searchpath, *overrides])
        check_env_interpolations(OmegaConf.to_container(cfg, resolve=False))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {_one_line(e)} (the keys and their meaning: scaling/config.py)") from None
    except Exception as e:  # hydra's own composition errors (missing group option, bad syntax)
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            raise ConfigError(f"bad config: {_one_line(e)}") from None
        raise
    finally:
        GlobalHydra.instance().clear()


ENV_LOCATIONS = ("data.path", "data.cache_dir", "results_dir")
"""The only keys whose value may come from the environment (`${oc.env:SCALING_DATA}`): locations on this machine.
Everything else (names, W&B fields, settings) must be written out, so no resolved environment value (a token,
a user name) ever reaches a folder name, a record or W&B."""
_ENV_INTERPOLATION = r"\$\{\s*(oc\.env|env)\s*:"


def check_env_interpolations(node, key: str = "") -> None:
    """Refuse `${oc.env:...}` anywhere but in ENV_LOCATIONS (also inside `base` entries such as
    `data.path=${oc.env:SCALING_DATA}`); `node` is the composed config, unresolved."""
    import re

    if isinstance(node, dict):
        for k, v in node.items():
            check_env_interpolations(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for item in node:
            check_env_interpolations(item, key)
    elif isinstance(node, str) and re.search(_ENV_INTERPOLATION, node):
        target = override_key(node) if "=" in node and key.split(".")[-1] == "base" else key
        if target not in ENV_LOCATIONS:
            raise ConfigError(f"{target} takes its value from the environment ({node!r}): write the value out; only "
                              f"{', '.join(ENV_LOCATIONS)} may come from the environment (names, records and W&B "
                              f"never hold environment values)")


RUN_SECTIONS = ("model", "data", "train", "wandb")
"""The sections of a run config; a sweep's overrides of these keys apply to every cell (appended to its base)."""


def override_key(override: str) -> str:
    """The key an override sets: `+train.x=1` -> train.x, `~model.d_shared` -> model.d_shared, `model@a=b` -> model."""
    key = override.split("=", 1)[0].lstrip("~+").strip()
    return key.split("@", 1)[0]


@functools.cache
def schema_keys(cls) -> tuple[frozenset[str], frozenset[str]]:
    """(keys, open keys) of a dataclass schema, dotted: `model.d_model`, ...; an open key (a list or dict field,
    e.g. `base`, `axes`) accepts any sub-key. Section names (`model`) are keys too (group choices). Cached: every
    `with_updates` of a sweep's planning checks against it."""
    import typing

    keys, open_keys = set(), set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        keys.add(f.name)
        if dataclasses.is_dataclass(kind):
            sub, sub_open = schema_keys(kind)
            keys |= {f"{f.name}.{k}" for k in sub}
            open_keys |= {f"{f.name}.{k}" for k in sub_open}
        elif typing.get_origin(kind) in (list, dict):
            open_keys.add(f.name)
    return frozenset(keys), frozenset(open_keys)


def nearest_key(key: str, known: set[str]) -> str | None:
    """The real key a typo most likely meant (`model.d_modle` -> model.d_model), or None."""
    import difflib

    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if near:
        return near[0]
    section, _, leaf = key.rpartition(".")
    same_section = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == section}
    near = difflib.get_close_matches(leaf, sorted(same_section), n=1, cutoff=0.5)
    return same_section[near[0]] if near else None


def check_keys(keys, schema, where: str = "") -> None:
    """Refuse a key the schema does not have, naming the nearest real one (`did you mean model.d_model?`).
    `hydra.*` keys are Hydra's own and pass."""
    known, open_keys = schema_keys(schema)
    for key in keys:
        if key in known or key.startswith("hydra.") or any(key.startswith(k + ".") for k in open_keys):
            continue
        near = nearest_key(key, known)
        hint = f"did you mean {near}?" if near else "no key is close"
        raise ConfigError(f"unknown config key {key!r}{where}: {hint} (every key and its meaning: scaling/config.py; "
                          f"`--show-config` prints a resolved config)")


def compose(overrides: list[str] | tuple[str, ...] = (), search: list[Path] | None = None) -> RunConfig:
    """Compose a RunConfig from `train.yaml` (the presets', or a user's along `search`) plus Hydra overrides
    (`key=value`); every key checked against the schema, the result validated."""
    check_keys([override_key(o) for o in overrides], RunConfig, where=" (in the run's overrides)")
    run = hydra_compose("train", overrides, search or search_path(), schema="run_schema")
    validate(run)
    return run


def with_updates(run: RunConfig, updates: dict) -> RunConfig:
    """A copy of `run` with dotted-key updates (`{"train.lr": 3e-3, "model.d_model": 96}`), type-checked
    against the schema (an unknown key or a wrong type is a ConfigError) and validated."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_keys(updates, RunConfig)
    try:
        cfg = OmegaConf.structured(run)
        for key, value in updates.items():
            OmegaConf.update(cfg, key, value, merge=False)
        new = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {_one_line(e)} (the keys and their meaning: scaling/config.py)") from None
    validate(new)
    return new


def _one_line(e: BaseException) -> str:
    """Hydra / OmegaConf errors span lines and hide the useful part in their cause: keep what speaks to the user."""
    parts = []
    while e is not None and len(parts) < 3:
        text = str(e).split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        keep = [line for line in lines
                if not line.startswith(("full_key", "object_type", "reference_type", "To append", "See http"))
                and "$VALUE" not in line and line != "None"]
        keep = [f"choose one of {line.split(':')[0].split()[-1]}:" if line.startswith("Available options") else line
                for line in keep]
        if keep:
            parts.append(" ".join(keep).rstrip(";:. "))
        e = e.__cause__ or e.__context__
    return ": ".join(dict.fromkeys(parts))  # drop repeats, keep order


def results_root(override: str | None = None) -> Path:
    """The results directory: an explicit value > $SCALING_RESULTS > ./results."""
    return Path(override or os.environ.get("SCALING_RESULTS") or "results")


def resolve_results_dir(run: RunConfig) -> Path:
    return results_root(run.results_dir)


def to_dict(run: RunConfig) -> dict:
    return dataclasses.asdict(run)


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from its dict form (as stored in a record); unknown keys are an error."""
    sub = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "wandb": WandbConfig}
    kwargs = {k: (sub[k](**v) if k in sub else v) for k, v in d.items()}
    return RunConfig(**kwargs)


def _override_value(v) -> str:
    """A value as Hydra's override grammar reads it back unchanged (strings quoted unless plainly safe)."""
    import re

    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z0-9_./:+-]+", s) and s.lower() not in ("null", "true", "false"):
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
                lines.append(f"{name}={_override_value(value)}")
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
        "model.seq_len": m.seq_len, "model.vocab_size": m.vocab_size, "model.n_experts": m.n_experts,
        "model.top_k": m.top_k, "model.d_expert": m.d_expert, "train.batch_size": t.batch_size,
        "data.val_tokens": d.val_tokens,
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
    m, t, d = run.model, run.train, run.data
    _choice("model.score_func", m.score_func, ("softmax", "sigmoid"))
    _choice("model.balancing", m.balancing, ("aux_free", "aux_loss", "none"))
    _choice("model.dispatch", m.dispatch, ("auto", "grouped_mm", "slices"))
    _choice("data.source", d.source, ("stdlib", "shards"))
    _choice("data.token_dtype", d.token_dtype, ("uint16", "uint32"))
    _choice("train.schedule", t.schedule, ("cosine", "wsd"))
    _choice("train.wsd_decay", t.wsd_decay, ("exp", "linear"))
    _choice("wandb.mode", run.wandb.mode, ("auto", "online", "offline", "disabled"))


def _check_data(run: RunConfig) -> None:
    m, d = run.model, run.data
    if d.source == "shards" and not d.path:
        raise ConfigError("data.source=shards needs data.path=FOLDER holding train.bin and val.bin")
    if d.source == "stdlib" and m.vocab_size < 256:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is too small for the byte corpus: set it to 256")
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
    for key in ("eval_every", "log_every", "checkpoint_every"):
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
        ("data.token_dtype", d.token_dtype != default["data"].token_dtype, d.source == "shards",
         "data.source=shards"),
        ("model.d_shared", m.d_shared is not None, m.n_shared_experts > 0, "model.n_shared_experts >= 1"),
        ("model.d_ff_dense", m.d_ff_dense is not None, m.n_dense_layers > 0, "model.n_dense_layers >= 1"),
        ("model.aux_loss_coef", m.aux_loss_coef != default["model"].aux_loss_coef, m.balancing == "aux_loss",
         "model.balancing=aux_loss"),
        ("model.bias_update_rate", m.bias_update_rate != default["model"].bias_update_rate,
         m.balancing == "aux_free", "model.balancing=aux_free"),
        ("train.decay_fraction", t.decay_fraction != default["train"].decay_fraction, t.schedule == "wsd",
         "train.schedule=wsd"),
        ("train.wsd_decay", t.wsd_decay != default["train"].wsd_decay, t.schedule == "wsd", "train.schedule=wsd"),
    ]
    for key, is_set, used, needs in ignored:
        if is_set and not used:
            section, field_name = key.split(".")
            value = getattr(getattr(run, section), field_name)
            raise ConfigError(f"{key}={value} has no effect without {needs}: set that too, or drop {key}")
