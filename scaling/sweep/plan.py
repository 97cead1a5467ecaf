"""Sweep plans: a sweep config becomes a deterministic list of fully resolved cells (ARCHITECTURE sections 1, 2).

A sweep config (`sweeps/<name>.yaml`, schema `SweepConfig`) names compute budgets and axes. `plan_sweep` expands
them, in a fixed order, into cells; each cell is a complete RunConfig with its derived run (tokens, steps, M) and a
stable id (`run.run_id`, a hash of the resolved config). Impossible cells are collected with their reasons and
refused together before anything runs.

The axes and what they mean:

- ``budgets``: training compute C in FLOPs per cell; tokens D = C / M follow from the cell's model.
- ``shapes``: the model-size rule. Empty: the base model at every budget. Otherwise a list of model-key groups
  (``{d_model: 128, n_layers: 4}``), each optionally limited to some ``budgets``: several shapes per budget make an
  IsoFLOP sweep, where each cell is a (shape, tokens) pair at a fixed C, not a product of sizes and token counts.
- ``activation_ratios``: A = (top_k + n_shared) / (n_experts + n_shared). Keeps top_k and the shared experts and
  sets n_experts = (top_k + n_shared) / A - n_shared (Ling's protocol: vary E at fixed E_a and E_s); the active
  parameters and M are unchanged, the total parameters grow as A falls.
- ``granularities``: G = 2 d_model / d_expert (Ling). Sets d_expert = 2 d_model / G and scales n_experts, top_k and
  n_shared_experts by G / G_base, so A, the active and the total expert parameters stay fixed (finer experts, more
  of them).
- ``dense_baseline``: adds, per budget, shape, lr, batch and seed, the dense model of equal active width
  (one expert of width top_k * d_expert + n_shared * d_shared, no router): the reference of efficiency leverage.
- ``lr`` and ``batch``: absolute values, or factors around a centre; the centre is a value, the base config's
  value, or a fitted law read from a previous `scaling fit --json` (``lr_opt`` / ``batch_opt``, a * C^b, or the
  one ``law_name`` names, e.g. ``lr_opt_n``, a * N^b), evaluated at the cell's budget in the fit's FLOPs convention
  for the cell's model, at its size and tokens (scaling/advise/grids.py).
  Batch is in tokens per optimizer step (a whole number of sequences).
- ``axes``: any other config keys as a product (``{"train.schedule": ["cosine", "wsd"]}``).
- ``groups``: zipped axes: each group is a list of entries, each entry sets several keys together
  (``[{model.d_model: 64, train.lr: 4e-3}, {model.d_model: 96, train.lr: 3e-3}]``).
- ``seeds``: one cell per seed.

Nesting order (and so cell order): budgets, shapes, architecture variants (base, A x G, dense), batch, lr, axes,
groups, seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from scaling import branching
from scaling.compose import (
    RUN_SECTIONS,
    check_env_interpolations,
    check_keys,
    compose,
    find_config,
    find_file,
    hydra_compose,
    override_key,
    search_path,
    with_updates,
)
from scaling.config import ConfigError, ModelConfig, RunConfig
from scaling.data import DataError
from scaling.memory import ParallelPlan
from scaling.run import RunPlan, with_data_vocab
from scaling.sweep import launcher
from scaling.sweep.launcher import LauncherConfig


@dataclass
class GridAxis:
    """Values of one hyperparameter axis: absolute values, or factors around a centre."""

    values: list[float] = field(default_factory=list)
    """Absolute values (lr: learning rate; batch: tokens per optimizer step). Empty = centre x factors."""
    centre: float | None = None
    """Centre of the factors; None = the fitted law's prediction when `law` is set, else the base config's value."""
    law: str | None = None
    """Path to the JSON of a previous `scaling fit --json`; its law (`law_name`) gives the centre of each cell."""
    law_name: str | None = None
    """The law in `law` that gives the centre: None = lr_opt / batch_opt (a * C^b, at the cell's budget); any power
    law of the fit in C, N and D, read at the cell's compute, size and tokens, e.g. lr_opt_n (a * N^b: the lr by
    model size alone, the same at every budget, so a shape's cells can branch) or lr_opt_nd (a * N^b1 * D^b2)."""
    factors: list[float] = field(default_factory=lambda: [1.0])
    """Multipliers of the centre, e.g. [0.5, 1, 2]."""
    allow_undetermined: bool = False
    """Centre on `law` even when its fit judged it undetermined (refused by default: such a law's prediction is not
    a value, e.g. a wind tunnel's stage that exists to test it)."""
    law_at: str = "budget"
    """Where `law` is read: 'budget', at each cell's budget; 'shape', once per shape, at the geometric middle of the
    budgets that shape is trained at, so its cells share one value and can branch their cooldowns from one stable
    phase (train.branch; a shape spanning x10 in budget is then up to x10^(|b|/2) off the law at its ends)."""


@dataclass
class SweepConfig:
    """A sweep: compute budgets times axes (see the module docstring for what each axis means)."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"launcher": "local"}])
    """Hydra's defaults list of the schema: the launcher group (override with `launcher=slurm`)."""

    name: str = "sweep"
    """Sweep name: its folder under the results directory and its W&B group."""
    description: str = ""
    """One line on what the sweep is for (shown by --dry-run and status)."""
    base: list[str] = field(default_factory=list)
    """Hydra overrides of sweeps/train.yaml applied to every cell, e.g. ["model=tiny_moe", "train.schedule=wsd"]."""
    budgets: list[float] = field(default_factory=lambda: [3e11])
    """Training compute per cell, FLOPs (non-embedding, forward+backward; C = M * D)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds (initialisation and data order); one cell each."""
    lr: GridAxis = field(default_factory=GridAxis)
    """Learning-rate axis (peak learning rate)."""
    batch: GridAxis = field(default_factory=GridAxis)
    """Batch axis, in tokens per optimizer step."""
    activation_ratios: list[float] = field(default_factory=list)
    """Activation ratios A to sweep (reshape n_experts at fixed top_k and shared experts); empty = the base A."""
    granularities: list[float] = field(default_factory=list)
    """Granularities G = 2 d_model / d_expert to sweep (at fixed A and expert parameters); empty = the base G."""
    dense_baseline: bool = False
    """Add the dense model of equal active width at every budget, shape, lr, batch and seed."""
    shapes: list[dict[str, Any]] = field(default_factory=list)
    """Model-size rule: model-key groups (e.g. {d_model: 128, n_layers: 4}), each optionally with `budgets: [...]`
    limiting where it is used; empty = the base model everywhere."""
    axes: dict[str, list[Any]] = field(default_factory=dict)
    """Other config keys swept as a product, e.g. {"train.schedule": ["cosine", "wsd"]}."""
    groups: list[list[dict[str, Any]]] = field(default_factory=list)
    """Zipped axes: each group is a list of entries that set several keys together."""
    laws: str | None = None
    """Path to a `scaling fit --json` output (relative paths also resolve against sweeps/), used by `ladder` and
    by lr/batch axes that say `law: ${laws}`."""
    ladder: list[dict[str, Any]] = field(default_factory=list)
    """Wind tunnel: model shapes (model-key groups, spaced by a power law in size), each trained at its
    compute-optimal budget from the laws: C = (N / a)^(1/b) with `n_opt` (N = active non-embedding params), or
    C = (M / a)^(1/b) with `m_opt` (M = FLOPs per token, Ling's form). Replaces `shapes` (see `ladder_at`)."""
    ladder_at: str = "shape"
    """'shape': every ladder shape at its own compute-optimal budget (replaces `budgets`). 'budget': every one of
    `budgets` trains the ladder shape closest to compute-optimal there (the candidate whose own compute-optimal
    budget is nearest in log), so the rungs sit at the budgets you chose (a held-out rung exactly 3x beyond)."""
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """Where the cells run: `launcher=local` (this machine) or `launcher=slurm` (scaling/sweep/launcher.py)."""
    parts: list[dict[str, Any]] = field(default_factory=list)
    """Sub-sweeps: each entry overrides some of the fields above (e.g. its own lr, batch or activation_ratios);
    the sweep is the union of their cells (a cell in two parts runs once). Empty = the fields above alone."""
    config_dirs: list[str] = field(default_factory=list)
    """Folders searched for the configs named in `base` (model=..., train.yaml) and for relative law paths, first
    match wins; set by `compose_sweep` (the sweep file's folder, --config-dir or ./sweeps, then the presets).
    Empty = ./sweeps when it exists, then the presets."""
    notes: list[str] = field(default_factory=list)
    """Remarks from composing the sweep (e.g. a base replaced from the command line), shown by the dry run."""


class PlanError(ValueError):
    """A sweep with impossible cells: every cell and its reason, one per line; one line for a reason that every
    cell shares (e.g. data that is not there)."""

    def __init__(self, sweep: str, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"sweep {sweep!r}: {len(problems)} impossible cell(s); nothing was launched"]
        reasons = {reason for _, reason in problems}
        if len(problems) > 1 and len(reasons) == 1:
            lines.append(f"  every cell ({problems[0][0]}, ...): {problems[0][1]}")
        else:
            lines += [f"  {name}: {reason}" for name, reason in problems]
        super().__init__("\n".join(lines))


@dataclass
class Cell:
    """One fully resolved run of a sweep."""

    index: int
    name: str
    run: RunConfig
    plan: RunPlan
    coords: dict[str, Any]
    memory: ParallelPlan | None = None
    """How the cell uses its devices and the memory it needs on each (scaling/memory.py)."""

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def devices_per_node(self, launch: LauncherConfig) -> int:
        """The GPUs (CPU processes on CPU) the cell trains on on each of its nodes: its memory plan's, which is
        launcher.gpus_per_run unless the cell needed more (launcher.max_gpus_per_run)."""
        total = self.memory.devices if self.memory else launcher.devices_per_run(launch)
        return max(1, total // launch.nodes_per_run)

    def summary(self) -> dict:
        c = self.plan.counts
        return {
            "index": self.index, "id": self.run_id, "name": self.name, "coords": self.coords,
            "budget_flops": self.run.budget_flops, "tokens": self.plan.tokens, "steps": self.plan.steps,
            "batch_tokens": self.plan.batch_tokens, "lr": self.run.train.lr, "M": c.M,
            "params_total": c.params_total, "params_active": c.params_active,
            "activation_ratio": c.activation_ratio, "granularity": c.granularity,
            "epochs": self.plan.summary.epochs(self.plan.tokens) if self.plan.summary else None,
            "parallel": self.memory.parallel if self.memory else None,
            "devices": self.memory.devices if self.memory else None,
            "memory_per_device_bytes": self.memory.need.total if self.memory else None,
            "fits": self.memory.fits if self.memory else None,
        }


@dataclass
class SweepPlan:
    config: SweepConfig
    cells: list[Cell]
    results_dir: Path
    """The results folder every cell records under (one per sweep; the launchers take it from here)."""
    duplicates: int = 0
    """Cells dropped because an earlier cell had the same id (e.g. an axis value equal to the base)."""
    centres: list[str] = field(default_factory=list)
    """What each law-centred lr or batch axis rests on: the law, its file, verdict and convention (one line each)."""
    _predecessors: dict | None = field(default=None, init=False, repr=False, compare=False)

    def results_folder(self, given: str | Path | None = None) -> Path:
        """The plan's results folder; a launcher handed another one is refused (its cells would record in one
        folder and be claimed in the other)."""
        if given is not None and Path(given).resolve() != self.results_dir.resolve():
            raise ConfigError(f"sweep {self.name!r} was planned to record under {self.results_dir}, not {given}: plan "
                              f"it with results_dir={str(given)!r}, or launch the plan without a results folder")
        return self.results_dir

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def total_flops(self) -> float:
        """The cells' budgets as trained (tokens x M)."""
        return sum(c.plan.tokens * c.plan.counts.M for c in self.cells)

    def branch_predecessors(self) -> dict[str, tuple[str, str, int]]:
        """Each branching cell's predecessor, family and the step it starts from (branching.predecessors), worked
        out once per plan (the dry run's table, its estimates and the launcher all ask)."""
        if self._predecessors is None:
            self._predecessors = branching.predecessors([(c.run_id, c.plan.run, c.plan.steps) for c in self.cells])
        return self._predecessors

    def trained_tokens(self) -> dict[str, int]:
        """Tokens each cell trains itself (run id -> tokens): all of them, less the stable phase a branching cell
        starts from (its predecessor's state, scaling/branching.py)."""
        before = self.branch_predecessors()
        return {c.run_id: c.plan.tokens - (before[c.run_id][2] * c.plan.batch_tokens if c.run_id in before else 0)
                for c in self.cells}

    @property
    def trained_flops(self) -> float:
        """What training the cells computes (tokens each trains itself x M): total_flops less what branching
        cells share."""
        tokens = self.trained_tokens()
        return sum(tokens[c.run_id] * c.plan.counts.M for c in self.cells)

    @property
    def mfu_flops(self) -> float:
        """What the cells' steps compute as MFU counts it (flops.MFU_CONVENTION: the output head included)."""
        return sum(self.cell_mfu_flops().values())

    def cell_mfu_flops(self) -> dict[str, float]:
        """Per cell id, what its own steps compute as MFU counts it (a branching cell: its own part only)."""
        from scaling.flops import MFU_CONVENTION

        tokens = self.trained_tokens()
        return {c.run_id: tokens[c.run_id] * c.plan.counts.flops_per_token[MFU_CONVENTION] for c in self.cells}

    def to_json(self) -> str:
        return json.dumps({"sweep": self.name, "description": self.config.description, "laws": self.config.laws,
                           "cells": [c.summary() for c in self.cells]}, indent=1)


# ---- composing a sweep config ---------------------------------------------------------------------------------
def sweep_names(search: list[Path]) -> list[str]:
    """The sweep configs along a search path (every YAML but train.yaml), user folders first."""
    names = {p.stem: None for d in search for p in sorted(d.glob("*.yaml")) if p.stem != "train"}
    return list(names)


def split_overrides(overrides) -> tuple[list[str], list[str], list[str] | None]:
    """(overrides of the sweep config, run overrides appended to its base, a `base=` replacement or None).

    Run keys (`model.n_experts=16`, `train.schedule=wsd`, `model=tiny_dense`) and `base+=ENTRY` (or
    `base+=['a=1','b=2']`) extend the base; `base=[...]` replaces it."""
    sweep, appended, replaced = [], [], None
    for o in overrides:
        key = override_key(o)
        if o.startswith("base+="):
            value = o[len("base+="):]
            appended += _base_list(o, "base=" + value) if value.startswith("[") else [value]
        elif key.split(".")[0] in RUN_SECTIONS and not o.startswith("~"):
            appended.append(o)
        else:
            if key == "base" and not o.startswith("~"):
                _base_list(o, o)
                replaced = o
            sweep.append(o)
    return sweep, appended, replaced


def _base_list(given: str, override: str) -> list[str]:
    """The entries of a `base=[...]` override, parsed by Hydra's grammar; a ConfigError with the quoting fix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return [str(v) for v in OverridesParser.create().parse_override(override).value()]
    except Exception as e:
        raise ConfigError(f"{given}: not a list of quoted overrides ({_first_line(e)}): quote each entry, "
                          f"\"base=['model.n_experts=16','train.lr=1e-3']\" (or add one: base+=model.n_experts=16)"
                          ) from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def compose_sweep(config: str, overrides: list[str] | tuple[str, ...] = (),
                  config_dir: str | Path | None = None) -> SweepConfig:
    """Load a sweep config by name or path, with overrides. A name is looked up in `config_dir` (else ./sweeps),
    then in the presets; a path's own folder is searched first. The YAML needs no defaults list; its `model=...`
    and `launcher=...` choices resolve along the same search path, user folders first."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
    launcher.register()
    path = Path(config)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"sweep config {path} not found: give a sweep name (e.g. demo) or a YAML path")
        search, name = search_path(config_dir, path.resolve().parent), path.stem
    else:
        search, name = search_path(config_dir), config
        if find_config(name, search) is None or name == "train":
            names = sweep_names(search)
            near = get_close_matches(name, names, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(f"no sweep {name!r} in {', '.join(map(str, search))}: {hint}choose one of "
                              f"{', '.join(names)}, or give a YAML path")
    sweep_overrides, appended, replaced = split_overrides(overrides)
    check_keys([override_key(o) for o in sweep_overrides], SweepConfig, where=" (in the sweep's overrides)")
    sweep = hydra_compose(name, sweep_overrides, search, schema="sweep_schema")
    if not isinstance(sweep, SweepConfig):
        raise ConfigError(f"{name}: not a sweep config (its defaults list must name sweep_schema, or have none)")
    if replaced is not None:
        import yaml

        file_base = (yaml.safe_load(find_config(name, search).read_text()) or {}).get("base") or []
        dropped = [str(b) for b in file_base if str(b) not in sweep.base]
        if dropped:
            sweep.notes.append(f"{replaced} replaced the config's base, dropping {', '.join(dropped)}; to add to "
                               f"it instead, give the keys alone (model.n_experts=16) or base+=ENTRY")
    check_env_interpolations({"base": appended})
    sweep.base = [*sweep.base, *appended]
    sweep.config_dirs = [str(d) for d in search]
    if sweep.laws:  # absolute, so the plan (and `scaling verify`) finds it from anywhere
        sweep.laws = str(find_file(sweep.laws, search).resolve())
    return sweep


# ---- architecture axes ---------------------------------------------------------------------------------------
def _is_int(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


def reshape_activation(run: RunConfig, A: float) -> dict:
    """Model updates for activation ratio A at fixed top_k and shared experts."""
    from scaling.flops import activation_ratio, experts_for_activation

    m = run.model
    active = m.top_k + m.n_shared_experts
    n_experts = experts_for_activation(A, m.top_k, m.n_shared_experts)
    E = round(n_experts)
    if E < m.top_k or abs(activation_ratio(m.top_k, m.n_shared_experts, E) - A) > 0.05 * A:
        raise ConfigError(f"activation ratio A={A:g} needs n_experts = {active}/A - {m.n_shared_experts} = "
                          f"{n_experts:.2f} (with top_k={m.top_k}, n_shared_experts={m.n_shared_experts}): "
                          f"choose A = {active}/(E + {m.n_shared_experts}) for a whole E >= top_k")
    return {"model.n_experts": E}


def reshape_granularity(run: RunConfig, G: float) -> dict:
    """Model updates for granularity G at fixed activation ratio and expert parameters."""
    from scaling.flops import expert_width_for

    m = run.model
    d_expert = expert_width_for(G, m.d_model)
    factor = m.d_expert / d_expert  # = G / G_base
    scaled = {"model.top_k": m.top_k * factor, "model.n_experts": m.n_experts * factor,
              "model.n_shared_experts": m.n_shared_experts * factor}
    if not _is_int(d_expert) or not all(_is_int(v) for v in scaled.values()):
        raise ConfigError(
            f"granularity G={G:g} needs d_expert = 2*{m.d_model}/G = {d_expert:g} and top_k, n_experts, "
            f"n_shared_experts scaled by {factor:g} ({', '.join(f'{k[6:]}={v:g}' for k, v in scaled.items())}): "
            f"all must be whole numbers; choose G so they are"
        )
    updates = {"model.d_expert": round(d_expert), **{k: round(v) for k, v in scaled.items()}}
    if m.d_shared is not None:
        updates["model.d_shared"] = m.d_shared  # an explicit shared width stays as set
    return updates


def dense_equivalent(run: RunConfig) -> dict:
    """Model updates for the dense model of equal active width (the efficiency-leverage reference)."""
    from scaling.flops import d_shared

    m = run.model
    width = m.top_k * m.d_expert + m.n_shared_experts * d_shared(m)
    default = ModelConfig()  # no router: its balancing settings go back to their defaults (they would do nothing)
    return {"model.n_experts": 1, "model.top_k": 1, "model.n_shared_experts": 0, "model.d_expert": width,
            "model.d_shared": None, "model.balancing": "none", "model.aux_loss_coef": default.aux_loss_coef,
            "model.bias_update_rate": default.bias_update_rate}


# ---- lr / batch grids ----------------------------------------------------------------------------------------
def grid_values(axis: GridAxis, budget: float, base_value: float, law_name: str, model: ModelConfig,
                search: list[Path] | None = None, name: str = "lr") -> list[float]:
    """The axis's values at one budget: as given, or its centre (a value, the fitted optimum for `model` at
    `budget`: advise/grids.py, by the axis's law_name or else `law_name`, else the base config's value) times its
    factors."""
    if axis.values:
        return list(axis.values)
    if axis.law:
        from scaling.advise.grids import law_centre

        centre = law_centre(axis.law, axis.law_name or law_name, budget, model, search,
                            allow_undetermined=axis.allow_undetermined, axis=name)
    else:
        centre = axis.centre if axis.centre is not None else base_value
    return [centre * f for f in axis.factors]


def _batch_size(batch_tokens: float, seq_len: int, from_law: bool) -> int:
    sequences = batch_tokens / seq_len
    if from_law:
        return max(1, round(sequences))
    if not _is_int(sequences) or sequences < 1:
        raise ConfigError(f"batch {batch_tokens:g} tokens is not a whole number of {seq_len}-token sequences: "
                          f"use a multiple of model.seq_len")
    return round(sequences)


# ---- planning ------------------------------------------------------------------------------------------------
def _arch_variants(sweep: SweepConfig) -> list[tuple[dict, str | None]]:
    """(coords, kind) per architecture variant: kind None = base, 'A'/'G' reshapes, 'dense'."""
    As = sweep.activation_ratios or [None]
    Gs = sweep.granularities or [None]
    variants = [({"A": A, "G": G}, "reshape") for G in Gs for A in As]
    if sweep.dense_baseline:
        variants.append(({"A": 1.0, "G": None}, "dense"))
    return variants


def expand_parts(sweep: SweepConfig) -> list[SweepConfig]:
    """The sub-sweeps of `parts` as full SweepConfigs (the sweep itself when it has no parts)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not sweep.parts:
        return [sweep]
    out = []
    for i, part in enumerate(sweep.parts):
        try:
            merged = OmegaConf.merge(OmegaConf.structured(sweep), {**part, "parts": []})
            out.append(OmegaConf.to_object(merged))
        except OmegaConfBaseException as e:
            raise ConfigError(f"sweep {sweep.name!r} parts[{i}]: {str(e).splitlines()[0]}") from None
    return out


def plan_sweep(sweep: SweepConfig, results_dir: str | None = None, wandb_mode: str | None = None,
               data_required: bool = True) -> SweepPlan:
    """Expand a sweep config (all its parts) into cells; raise PlanError listing every impossible cell.

    Cells are planned against a summary of their data (`data.describe`: a manifest, or the files). With
    `data_required=False` (a dry run) data that is not on this machine is planned from data.train_tokens, or with
    its size unknown, instead of refused, and cells that would repeat their data are shown rather than refused."""
    from scaling.store import sweep_name_problem

    if problem := sweep_name_problem(sweep.name):
        raise ConfigError(f"name={sweep.name!r}: {problem}")
    if problems := launcher.check(sweep.launcher):
        raise ConfigError(f"bad launcher config: {'; '.join(problems)}")
    cells: list[Cell] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    duplicates = 0
    datasets: dict[str, Any] = {}
    centres: list[str] = []
    for part in expand_parts(sweep):
        _check_not_swept(part)
        _check_laws(part)
        part_cells, part_problems = _plan_part(part, results_dir, wandb_mode, datasets, data_required)
        problems += part_problems
        for cell in part_cells:
            if cell.run_id in seen:
                duplicates += 1
                continue
            seen.add(cell.run_id)
            cell.index = len(cells)
            cells.append(cell)
        if not part_problems:
            from scaling.advise.grids import centre_lines

            centres += [line for line in centre_lines({"lr": part.lr, "batch": part.batch}, _search(part))
                        if line not in centres]
    if problems:
        raise PlanError(sweep.name, problems)
    _make_names_unique(cells)
    if sweep.launcher.kind == "command":
        _check_command(sweep, cells)
    return SweepPlan(config=sweep, cells=cells, results_dir=_one_results_dir(sweep.name, cells, results_dir),
                     duplicates=duplicates, centres=centres)


def _check_laws(sweep: SweepConfig) -> None:
    """The law files the lr and batch axes centre on: read once, before any cell, so a missing or hand-broken file
    is one line (ConfigError), not the same error repeated for every cell."""
    from scaling.advise.grids import fit_file
    from scaling.fit.law import FitError

    for name, axis, default in (("lr", sweep.lr, "lr_opt"), ("batch", sweep.batch, "batch_opt")):
        if axis.law and not axis.values:
            try:
                fit_file(axis.law, _search(sweep)).power_law(axis.law_name or default, variables=None)
            except (FitError, ConfigError) as e:
                raise ConfigError(f"{name}.law: {e}") from None


PER_SWEEP_KEYS = ("results_dir", "sweep")
"""Run keys that are one value for a whole sweep: its folder is one folder (set them with --results-dir, name=)."""


def _check_not_swept(sweep: SweepConfig) -> None:
    swept = set(sweep.axes) | {k for group in sweep.groups for entry in group for k in entry}
    for key in PER_SWEEP_KEYS:
        if key in swept:
            fix = "--results-dir (results_dir=... in Python)" if key == "results_dir" else "the sweep's name"
            raise ConfigError(f"sweep {sweep.name!r}: {key} cannot be an axis or group key: a sweep records every "
                              f"cell in one folder; set it once with {fix}, or make separate sweeps")
    if "train.batch_size" in swept:
        raise ConfigError(f"sweep {sweep.name!r} sets train.batch_size in axes or groups, where the batch axis would "
                          f"override it: use `batch: {{values: [tokens per step, ...]}}` instead")


def _one_results_dir(name: str, cells: list[Cell], results_dir: str | None) -> Path:
    from scaling.config import resolve_results_dir, results_root

    folders = sorted({str(resolve_results_dir(c.run)) for c in cells}) or [str(results_root(results_dir))]
    if len(folders) > 1:
        raise ConfigError(f"sweep {name!r}: its cells would record under {len(folders)} results folders "
                          f"({', '.join(folders)}): give one with --results-dir")
    return Path(folders[0])


@dataclass
class _Part:
    """One part of a sweep as it is planned: its config, its base run, where its files are looked up, and the
    data summaries shared by every part (described once per data config)."""

    sweep: SweepConfig
    base: RunConfig
    search: list[Path]
    datasets: dict
    data_required: bool


def _plan_part(sweep: SweepConfig, results_dir: str | None, wandb_mode: str | None, datasets: dict,
               data_required: bool) -> tuple[list[Cell], list[tuple[str, str]]]:
    """The cells of one part (budgets x shapes x architecture variants x batch x lr x axes x groups x seeds) and
    the problems of those that cannot be planned, each (name, reason)."""
    from scaling.run import shape_tag, short_number

    sweep = _with_checked_budgets(_ladder_to_shapes(sweep) if sweep.ladder else sweep)
    part = _Part(sweep, _part_base(sweep, results_dir, wandb_mode), _search(sweep), datasets, data_required)
    cells: list[Cell] = []
    problems: list[tuple[str, str]] = []
    for budget in sweep.budgets:
        # with shapes, a budget none of them is limited to has no cells (not the base model's)
        shapes = [s for s in sweep.shapes if not s.get("budgets") or budget in s["budgets"]] if sweep.shapes else [None]
        for shape in shapes:
            for arch, kind in _arch_variants(sweep):
                label = f"C{short_number(budget)}" + (f"-{shape_tag(shape)}" if shape else "")
                try:
                    run, batches, lrs = _variant(part, budget, shape, arch, kind)
                except (ConfigError, DataError) as e:
                    variant = "dense" if kind == "dense" else "-".join(f"{k}{v:g}" for k, v in arch.items() if v)
                    problems.append((f"{label}-{variant}" if variant else label, str(e)))
                    continue
                for batch_tokens, lr, updates in _hyperparameter_points(sweep, batches, lrs):
                    try:
                        cells.append(_cell(part, run, budget, shape, kind, batch_tokens, lr, updates, len(cells)))
                    except (ConfigError, DataError) as e:
                        problems.append((f"{label}-lr{short_number(lr)}-B{batch_tokens:.0f}", str(e)))
    return cells, problems


def _with_checked_budgets(sweep: SweepConfig) -> SweepConfig:
    if not sweep.budgets:
        raise ConfigError(f"sweep {sweep.name!r} has no budgets: set budgets: [3e11, ...] (FLOPs)")
    if any(not (0 < b < math.inf) for b in sweep.budgets):
        raise ConfigError(f"sweep {sweep.name!r}: every budget must be a positive, finite number of FLOPs (got "
                          f"{', '.join(f'{b:g}' for b in sweep.budgets)})")
    return sweep


def _part_base(sweep: SweepConfig, results_dir: str | None, wandb_mode: str | None) -> RunConfig:
    """The run every cell of the part starts from: train.yaml with the part's base, in the sweep's folder."""
    base = compose(list(sweep.base) + [f"sweep={sweep.name}"], _search(sweep))
    top: dict[str, Any] = {"sweep": sweep.name}
    if results_dir:
        top["results_dir"] = results_dir
    if wandb_mode:
        top["wandb.mode"] = wandb_mode
    return with_updates(base, top)


def _variant(part: _Part, budget: float, shape: dict | None, arch: dict, kind: str | None):
    """(run, batch values, lr values) of one budget, shape and architecture variant."""
    shape_updates = {f"model.{k}": v for k, v in (shape or {}).items() if k != "budgets"}
    run = with_updates(part.base, {"budget_flops": float(budget), **shape_updates})
    if kind == "dense":
        run = with_updates(run, dense_equivalent(run))
    else:
        if arch["G"] is not None:
            run = with_updates(run, reshape_granularity(run, arch["G"]))
        if arch["A"] is not None:
            run = with_updates(run, reshape_activation(run, arch["A"]))
    sweep = part.sweep
    if run.model.vocab_size is None:  # null: the data's vocabulary, before anything counts parameters or FLOPs
        run = with_data_vocab(run, _data_summary(part, run))
    batches = grid_values(sweep.batch, _law_budget(sweep, sweep.batch, budget, shape),
                          run.train.batch_size * run.model.seq_len, "batch_opt", run.model, part.search, "batch")
    lrs = grid_values(sweep.lr, _law_budget(sweep, sweep.lr, budget, shape), run.train.lr, "lr_opt", run.model,
                      part.search, "lr")
    return run, batches, lrs


def _law_budget(sweep: SweepConfig, axis: GridAxis, budget: float, shape: dict | None) -> float:
    """The budget an axis's law is read at for a cell (GridAxis.law_at)."""
    if axis.law_at == "budget" or not shape:
        return budget
    if axis.law_at != "shape":
        raise ConfigError(f"law_at={axis.law_at!r} is not 'budget' or 'shape'")
    budgets = shape.get("budgets") or sweep.budgets
    return float(math.exp(sum(math.log(b) for b in budgets) / len(budgets)))


def _hyperparameter_points(sweep: SweepConfig, batches: list[float], lrs: list[float]):
    """(batch tokens, lr, updates) for every batch x lr x axes x groups x seed, in that nesting order."""
    axis_keys = list(sweep.axes)
    axis_product = list(itertools.product(*(sweep.axes[k] for k in axis_keys))) or [()]
    group_product = list(itertools.product(*sweep.groups)) or [()]
    for batch_tokens, lr, axis_values, group_entries, seed in itertools.product(
            batches, lrs, axis_product, group_product, sweep.seeds):
        updates = {"train.lr": float(lr), "seed": int(seed), **dict(zip(axis_keys, axis_values, strict=True))}
        for entry in group_entries:
            updates.update(entry)
        yield batch_tokens, lr, updates


def _cell(part: _Part, run: RunConfig, budget: float, shape: dict | None, kind: str | None, batch_tokens: float,
          lr: float, updates: dict, index: int) -> Cell:
    """One cell: its run with the updates and batch, its memory plan on the launcher's devices, its run plan
    against its data's summary, and its name and coordinates."""
    from scaling.run import cell_name, plan_run, shape_tag

    sweep = part.sweep
    from_law = bool(sweep.batch.law and not sweep.batch.values)
    updates = {**updates, "train.batch_size": _batch_size(batch_tokens, run.model.seq_len, from_law)}
    cell_run = with_updates(run, updates)
    parallel = _parallel_plan(cell_run, sweep.launcher)
    if parallel.fits is False and part.data_required:
        shared = (f", shared by launcher.runs_per_gpu={sweep.launcher.runs_per_gpu} cells: "
                  f"{sweep.launcher.gpu_memory_gb / sweep.launcher.runs_per_gpu:.3g} GiB each; lower runs_per_gpu"
                  if sweep.launcher.runs_per_gpu > 1 else "")
        raise ConfigError(f"too big for its GPUs (launcher.gpu_memory_gb={sweep.launcher.gpu_memory_gb:g}{shared}): "
                          f"{parallel.reason()}")
    cell_run = with_updates(cell_run, _decided(cell_run, parallel))
    plan = plan_run(cell_run, _data_summary(part, cell_run), refuse_repeats=part.data_required)
    name = cell_name(cell_run, plan.counts, plan.batch_tokens, shape, updates, several_seeds=len(sweep.seeds) > 1)
    coords = {"budget_flops": float(budget), "A": plan.counts.activation_ratio, "G": plan.counts.granularity,
              "lr": float(updates["train.lr"]), "batch_tokens": plan.batch_tokens, "seed": updates["seed"],
              "dense": kind == "dense",
              "shape": shape_tag(shape) if shape else None,
              **{k: v for k, v in updates.items() if k not in ("train.lr", "seed", "train.batch_size")}}
    return Cell(index=index, name=name, run=cell_run, plan=plan, coords=coords, memory=parallel)


def _check_command(sweep: SweepConfig, cells: list[Cell]) -> None:
    """launcher=command: the template renders for every cell (no unknown placeholder), before anything runs."""
    from scaling.config import to_dict
    from scaling.sweep.command import CommandError, cell_values, render

    for c in cells:
        values = cell_values(c.run_id, c.name, sweep.name, to_dict(c.run), c.plan.derived(), Path("results"))
        try:
            render(sweep.launcher.command or "", values)
        except CommandError as e:
            raise ConfigError(str(e)) from None


def _data_summary(part: _Part, run: RunConfig):
    """The summary of the run's data (data.describe), described once per data config of the sweep. Under
    launcher=command the trainer reads its own data: nothing is read here, and its size is data.train_tokens (or
    unknown)."""
    from scaling import data as data_mod

    if part.sweep.launcher.kind == "command":
        tokens = int(run.data.train_tokens) if run.data.train_tokens else None
        return data_mod.DataSummary(source="the trainer's own", train_tokens=[tokens], weights=[1.0],
                                    vocab_size=None, fingerprint=None, where="declared" if tokens else "missing")
    key = json.dumps(dataclasses.asdict(run.data), sort_keys=True)
    if key not in part.datasets:
        part.datasets[key] = data_mod.describe(run.data, required=part.data_required)
    return part.datasets[key]


def _decided(run: RunConfig, parallel: ParallelPlan) -> dict:
    """What the memory plan decided that the run left open (train.parallel=auto, micro_batch_size=null), as
    updates: neither enters the run id, so the cell is the same run however it is spread."""
    updates = {}
    if parallel.devices > 1 and run.train.parallel == "auto":
        updates["train.parallel"] = parallel.parallel
    if parallel.capacity is not None and run.train.micro_batch_size is None \
            and parallel.micro_batch < math.ceil(run.train.batch_size / parallel.devices):
        updates["train.micro_batch_size"] = parallel.micro_batch
    return updates


def _parallel_plan(run: RunConfig, launch: LauncherConfig) -> ParallelPlan:
    """The cell's memory and parallel plan on the devices the launcher gives each cell: with runs_per_gpu = k,
    k cells share each GPU, so each has 1/k of its memory; a cell that does not fit on gpus_per_run GPUs gets the
    fewest of launcher.device_choices that hold it (launcher.max_gpus_per_run)."""
    from scaling.memory import GIB, plan_parallel

    for i, devices in enumerate(launcher.device_choices(launch)):
        share = launch.runs_per_gpu if i == 0 else 1  # a cell given more GPUs has them to itself
        capacity = launch.gpu_memory_gb * GIB / max(1, share) if launch.gpu_memory_gb else None
        parallel = plan_parallel(run.model, run.train.batch_size, devices, run.train.parallel,
                                 launcher.runs_on_gpus(launch), capacity, run.train.micro_batch_size)
        if parallel.fits is not False:
            return parallel
    return parallel


def _search(sweep: SweepConfig) -> list[Path]:
    return [Path(d) for d in sweep.config_dirs] or search_path()


def _ladder_to_shapes(sweep: SweepConfig) -> SweepConfig:
    """A wind-tunnel ladder as shapes, each limited to its own compute-optimal budget."""
    from scaling.advise.grids import compute_optimal_budget

    if not sweep.laws:
        raise ConfigError(f"sweep {sweep.name!r} has a ladder but no laws: pass laws=PATH to a `scaling fit --json` "
                          f"output with an n_opt (or m_opt) law")
    if sweep.ladder_at not in ("shape", "budget"):
        raise ConfigError(f"ladder_at={sweep.ladder_at!r} is not 'shape' or 'budget'")
    search = _search(sweep)
    base = compose(list(sweep.base), search)
    rungs = []  # (shape, the budget it is compute-optimal at)
    for shape in sweep.ladder:
        run = with_updates(base, {f"model.{k}": v for k, v in shape.items() if k != "budgets"})
        rungs.append(({k: v for k, v in shape.items() if k != "budgets"},
                      compute_optimal_budget(run.model, sweep.laws, search)))
    if sweep.ladder_at == "shape":
        shapes = [{**shape, "budgets": [budget]} for shape, budget in rungs]
        return dataclasses.replace(sweep, ladder=[], shapes=shapes, budgets=sorted({b for _, b in rungs}))
    picked: dict[int, list[float]] = {}
    notes = list(sweep.notes)
    for budget in _with_checked_budgets(sweep).budgets:
        i = min(range(len(rungs)), key=lambda i: abs(math.log(rungs[i][1] / budget)))
        picked.setdefault(i, []).append(float(budget))
        notes.append(f"ladder at C = {budget:.3g}: {rungs[i][0]} (compute-optimal at {rungs[i][1]:.3g} by "
                     f"{sweep.laws})")
    shapes = [{**rungs[i][0], "budgets": at} for i, at in sorted(picked.items())]
    return dataclasses.replace(sweep, ladder=[], shapes=shapes, notes=notes)


def _make_names_unique(cells: list[Cell]) -> None:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.name] = counts.get(c.name, 0) + 1
    for c in cells:
        if counts[c.name] > 1:
            c.name = f"{c.name}-{c.run_id[:6]}"
