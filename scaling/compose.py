"""Composing configs: `compose(overrides)` composes `train.yaml` along the search path (a user's --config-dir
or ./sweeps first, then the presets shipped with the package), checks every override's key against the schema (a
typo gets "did you mean"), and validates the result (validation.py): an impossible or inconsistent setting fails
here, with a one-line message naming the key and the fix, before any compute is spent.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from scaling.config import ENV_LOCATIONS, ConfigError, RunConfig, override_value, register_configs
from scaling.validation import validate

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


def find_config(name: str, search: list[Path]) -> Path | None:
    """The first `<dir>/<name>.yaml` along the search path."""
    return next((d / f"{name}.yaml" for d in search if (d / f"{name}.yaml").is_file()), None)


def find_file(path: str | Path, search: list[Path]) -> Path:
    """A file named in a config (a law JSON): as given when it exists or is absolute, else the first match along
    the search path (`published/ling_moe.json` is in the presets); unchanged when found nowhere (its reader reports)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return next((d / p for d in search if (d / p).exists()), p)


def _declares(path: Path, schema: str) -> bool:
    """Whether a YAML's own defaults list already names `schema` (the boilerplate older configs carry)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8): a config is YAML text; fix or replace the file"
                          ) from None
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
    searchpath = "hydra.searchpath=[" + ",".join(override_value(f"file://{d}") for d in search[1:]) + "]"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(search[0]), version_base="1.3"):
            cfg = compose_(config_name=entry, overrides=[searchpath, *overrides])
        check_env_interpolations(OmegaConf.to_container(cfg, resolve=False))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {_one_line(e)} (the keys and their meaning: scaling/config.py)") from None
    except UnicodeDecodeError:  # a binary file where a YAML config (or a group's option) was expected
        raise ConfigError(f"a config file of {config_name} is not UTF-8 text (a binary file?): a config is YAML "
                          f"text; fix or replace it") from None
    except Exception as e:  # hydra's own composition errors (missing group option, bad syntax)
        if type(e).__module__.startswith(("hydra", "omegaconf")):
            raise ConfigError(f"bad config: {_one_line(e)}{_shadowing_folder(str(e), search)}") from None
        raise
    finally:
        GlobalHydra.instance().clear()


def _shadowing_folder(message: str, search: list[Path]) -> str:
    """Hydra reads `KEY=VALUE` as a config-group choice when a folder KEY is on the search path: name it."""
    import re

    m = re.search(r"Could not override '([\w]+)'\. No match in the defaults list", message)
    folders = [d / m.group(1) for d in search if (d / m.group(1)).is_dir()] if m else []
    if not folders:
        return ""
    return (f" (the folder {folders[0]} on the config search path makes Hydra read {m.group(1)}= as a choice of "
            f"config: rename that folder)")


_ENV_INTERPOLATION = r"\$\{\s*(oc\.env|env)\s*:"
_INTERPOLATION = r"\$\{([^{}]*)\}"


def check_env_interpolations(node, key: str = "") -> None:
    """Refuse `${oc.env:...}` anywhere but in ENV_LOCATIONS (also inside `base` entries such as
    `data.path=${oc.env:SCALING_DATA}`), and any other key interpolating a location (`wandb.project=${results_dir}`,
    `${data.path}`, `${.cache_dir}`): a location may hold an environment value, which must not be copied into a
    name, a record or W&B. `node` is the composed config, unresolved."""
    import re

    if isinstance(node, dict):
        for k, v in node.items():
            check_env_interpolations(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for item in node:
            check_env_interpolations(item, key)
    elif isinstance(node, str) and "${" in node:
        target = override_key(node) if "=" in node and key.split(".")[-1] == "base" else key
        if target in ENV_LOCATIONS:
            return
        if re.search(_ENV_INTERPOLATION, node):
            raise ConfigError(f"{target} takes its value from the environment ({node!r}): write the value out; only "
                              f"{', '.join(ENV_LOCATIONS)} may come from the environment (names, records and W&B "
                              f"never hold environment values)")
        leaves = {location.split(".")[-1] for location in ENV_LOCATIONS}
        for inner in re.findall(_INTERPOLATION, node):
            if leaves & set(re.findall(r"[A-Za-z_]\w*", inner)):
                raise ConfigError(f"{target} interpolates a location ({node!r}): write the value out; the locations "
                                  f"({', '.join(ENV_LOCATIONS)}) may come from the environment and are never copied "
                                  f"into other keys (names, records and W&B never hold environment values)")


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
    from omegaconf.errors import OmegaConfBaseException

    check_keys(updates, RunConfig)
    try:
        new = _updated(run, updates) if _plain(updates) else _updated_whole(run, updates)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {_one_line(e)} (the keys and their meaning: scaling/config.py)") from None
    validate(new)
    return new


def _plain(updates: dict) -> bool:
    """Updates of top-level keys or of one field of a section, no interpolation: the fast path applies."""
    return all(key.count(".") <= 1 and key not in RUN_SECTIONS and not (isinstance(v, str) and "${" in v)
               for key, v in updates.items())


@functools.cache
def _schema_node(cls):
    """An OmegaConf node of the schema `cls`, reused to type-check and convert values (its own values do not
    matter: each update is read back right after it is set)."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(cls)


def _typed(cls, updates: dict) -> dict:
    """The updates converted and type-checked as the schema `cls` types them (OmegaConf's rules)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    node, out = _schema_node(cls), {}
    for key, value in updates.items():
        OmegaConf.update(node, key, value, merge=False)
        typed = node[key]
        out[key] = OmegaConf.to_object(typed) if isinstance(typed, (DictConfig, ListConfig)) else typed
    return out


def _updated(run: RunConfig, updates: dict) -> RunConfig:
    """The fast path: each section touched is replaced by a copy with its typed updates (about 20x faster than a
    node of the whole run, which a sweep of hundreds of cells would build twice per cell)."""
    by_section: dict[str, dict] = {}
    top = {}
    for key, value in updates.items():
        section, _, field = key.partition(".")
        if field:
            by_section.setdefault(section, {})[field] = value
        else:
            top[key] = value
    changes = _typed(RunConfig, top) if top else {}
    for section, fields in by_section.items():
        current = getattr(run, section)
        changes[section] = dataclasses.replace(current, **_typed(type(current), fields))
    return dataclasses.replace(run, **changes)


def _updated_whole(run: RunConfig, updates: dict) -> RunConfig:
    """Deeper keys and interpolations: through an OmegaConf node of the whole run."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(run)
    for key, value in updates.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return OmegaConf.to_object(cfg)


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
