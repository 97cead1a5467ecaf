"""Sweep plans: presets snapshot-tested, axes reshape the model as documented, impossible cells refused."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from scaling.compose import compose, preset_dir
from scaling.config import ConfigError
from scaling.flops import count
from scaling.sweep.plan import (
    GridAxis,
    PlanError,
    SweepConfig,
    compose_sweep,
    plan_sweep,
    reshape_activation,
    reshape_granularity,
)
from tests.inprocess import scaling

SNAPSHOTS = Path(__file__).parent / "snapshots"
PRESETS = sorted(p.stem for p in preset_dir().glob("*.yaml") if p.stem != "train")
GPU_PRESETS = {"lr_batch", "activation_ratio", "granularity", "isoflop", "wind_tunnel", "precision"}
TINY_BASE = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
             "data.val_tokens=2048"]


WIND_TUNNEL_FITS = SNAPSHOTS / "wind_tunnel_cpu"
"""The fits of stages 1-3 of a `make wind-tunnel` run (lr.json, isoflop.json, rungs.json), so that the later
stages plan as they did after it."""
WIND_TUNNEL_LAWS = {"wind_tunnel_cpu_isoflop": {"laws": "lr"}, "wind_tunnel_cpu": {"laws": "isoflop", "lr.law": "lr"},
                    "wind_tunnel_cpu_check": {"laws": "isoflop", "lr.law": "rungs"}}


def preset_plan(name, monkeypatch):
    """A preset's plan; the GPU presets' data is not on this machine, so they plan from a declared size."""
    monkeypatch.setenv("SCALING_DATA", "/data/tokens")  # GPU presets read their shards from $SCALING_DATA
    if name in GPU_PRESETS:
        return plan_sweep(compose_sweep(name, ["data.train_tokens=1e10"]), data_required=False)
    laws = [f"{key}={WIND_TUNNEL_FITS / f'{fit}.json'}" for key, fit in WIND_TUNNEL_LAWS.get(name, {}).items()]
    return plan_sweep(compose_sweep(name, laws))


def test_every_gpu_preset_exists():
    assert GPU_PRESETS | {"demo"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_plan_matches_snapshot_and_budgets(name, monkeypatch):
    plan = preset_plan(name, monkeypatch)
    cells = [[c.run_id, c.name, c.plan.tokens, c.plan.steps] for c in plan.cells]
    assert cells == [[c.run_id, c.name, c.plan.tokens, c.plan.steps] for c in preset_plan(name, monkeypatch).cells]
    assert len({c[0] for c in cells}) == len(cells) and len({c[1] for c in cells}) == len(cells)
    for c in plan.cells:  # whole steps, and tokens x M within 1% of the cell's budget
        assert c.plan.tokens * c.plan.counts.M == pytest.approx(c.run.budget_flops, rel=0.01), c.name
        if name in GPU_PRESETS:  # planned without the data: how often each cell would read 1e10 tokens
            assert c.plan.summary.where == "declared" and c.summary()["epochs"] == pytest.approx(c.plan.tokens / 1e10)
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(cells, indent=0) + "\n")
    assert path.exists(), f"no snapshot for {name}: run UPDATE_SNAPSHOTS=1 pytest {__file__}"
    assert cells == json.loads(path.read_text()), f"plan of {name} changed; if intended, UPDATE_SNAPSHOTS=1"


@pytest.mark.parametrize("name", PRESETS)
def test_a_new_defaulted_field_leaves_every_cell_id_unchanged(name, monkeypatch):
    """An upgrade that adds a config field with a default must not re-id (and so retrain) a finished sweep."""
    from scaling import config

    real = config.to_dict

    def with_new_fields(run):
        d = real(run)
        d["model"]["some_new_option"], d["train"]["another"] = 0.5, "off"  # a field every config has by default
        return d

    monkeypatch.setattr(config, "to_dict", with_new_fields)
    config._default_identity.cache_clear()
    try:
        ids = [c.run_id for c in preset_plan(name, monkeypatch).cells]
    finally:
        config._default_identity.cache_clear()
    assert ids == [c[0] for c in json.loads((SNAPSHOTS / f"{name}.json").read_text())]


def test_demo_has_the_stages_it_promises(monkeypatch):
    """The lr law over x6 of compute with 2 seeds, and the dense baseline over the centre of the same lr grid."""
    plan = preset_plan("demo", monkeypatch)
    assert sorted({c.run.budget_flops for c in plan.cells}) == [1e11, 2.5e11, 6e11]
    lrs = {1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2}
    moe = [c for c in plan.cells if not c.coords["dense"]]
    assert len(moe) == 30 and {c.run.train.lr for c in moe} == lrs and {c.run.seed for c in moe} == {0, 1}
    assert {c.plan.batch_tokens for c in plan.cells} == {2048}
    dense = [c for c in plan.cells if c.coords["dense"]]
    assert len(dense) == 9 and all(c.run.model.n_experts == 1 for c in dense) and {c.run.seed for c in dense} == {0}
    assert {c.run.train.lr for c in dense} == {2e-3, 4e-3, 8e-3}  # each at its own tuned lr: a bowl of the same grid
    # the dense baseline spends the same FLOPs per token as the MoE (same active width, no router)
    moe_M = count(compose([]).model).M
    assert all(abs(c.plan.counts.M / moe_M - 1) < 0.01 for c in dense)


def test_activation_axis_keeps_active_parameters():
    run = compose(["model.n_experts=8", "model.top_k=2", "model.n_shared_experts=1"])
    assert reshape_activation(run, 3 / 17) == {"model.n_experts": 16}
    with pytest.raises(ConfigError, match="activation ratio A=0.9"):
        reshape_activation(run, 0.9)  # would need fewer experts than top_k


def test_granularity_axis_keeps_activation_ratio_and_expert_parameters():
    from scaling.compose import with_updates

    run = compose(["model.d_model=64", "model.n_experts=8", "model.top_k=2", "model.d_expert=64"])  # G = 2
    finer = with_updates(run, reshape_granularity(run, 8))
    assert (finer.model.d_expert, finer.model.n_experts, finer.model.top_k) == (16, 32, 8)
    a, b = count(run.model), count(finer.model)
    assert a.activation_ratio == b.activation_ratio
    assert a.params_total - b.params_total == 2 * 64 * (8 - 32)  # only the routers grow (2 layers x d x E)
    with pytest.raises(ConfigError, match="whole numbers"):
        reshape_granularity(run, 3)


def test_impossible_cells_are_all_named_and_nothing_is_planned():
    sweep = SweepConfig(name="bad", base=TINY_BASE, budgets=[1e3, 2e9], granularities=[2, 3],
                        lr=GridAxis(values=[1e-3]))
    with pytest.raises(PlanError) as e:
        plan_sweep(sweep)
    message = str(e.value)
    assert "G=3" in message and "less than one optimizer step" in message
    assert len(e.value.problems) >= 3  # 1e3 at G=2, 1e3 at G=3 (reshape), 2e9 at G=3


def test_grids_from_a_fitted_law_and_factors(tmp_path):
    law = tmp_path / "fit.json"
    law.write_text(json.dumps({"laws": {"lr_opt": {"params": {"a": 1.0, "b": -0.25}},
                                        "batch_opt": {"params": {"a": 0.01, "b": 0.5}}}}))
    sweep = SweepConfig(name="law", base=TINY_BASE, budgets=[1e10],
                        lr=GridAxis(law=str(law), factors=[0.5, 1.0]), batch=GridAxis(law=str(law)))
    plan = plan_sweep(sweep)
    assert [c.run.train.lr for c in plan.cells] == pytest.approx([0.5 * 10**-2.5, 10**-2.5])  # 1.0 * C^-0.25
    assert plan.cells[0].plan.batch_tokens == 1024  # 0.01 * C^0.5 = 1000 tokens -> 16 whole sequences of 64
    with pytest.raises(ConfigError, match="^lr.law: .*bad.json: not a `scaling fit --json` output \\(no 'laws'\\)"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        plan_sweep(SweepConfig(name="law", base=TINY_BASE, budgets=[1e10], lr=GridAxis(law=str(bad))))


def test_an_lr_axis_read_from_a_law_of_size_gives_each_width_its_own_lr_at_every_budget(tmp_path):
    """law_name: lr_opt_n (a * N^b): each shape's lr from its active non-embedding parameters, the same at every
    budget (so its cells can branch); lr_opt_nd reads the cell's tokens too; a law the file lacks is refused."""
    law = tmp_path / "fit.json"
    law.write_text(json.dumps({"laws": {
        "lr_opt_n": {"kind": "power", "variables": ["N"], "params": {"a": 2.0, "b": -0.5}},
        "lr_opt_nd": {"kind": "power", "variables": ["N", "D"], "params": {"a": 2.0, "b": -0.5, "c": 0.1}}}}))
    shapes = [{"d_model": 32, "n_layers": 1}, {"d_model": 64, "n_layers": 2, "n_heads": 4}]
    plan = plan_sweep(SweepConfig(name="n", base=TINY_BASE, budgets=[2e9, 6e9], shapes=shapes,
                                  lr=GridAxis(law=str(law), law_name="lr_opt_n", factors=[0.5, 1.0])))
    for cell in plan.cells:
        N = count(cell.run.model).params_active_non_embedding
        assert cell.run.train.lr in (pytest.approx(0.5 * 2.0 * N**-0.5), pytest.approx(2.0 * N**-0.5))
    by_width = {}
    for cell in plan.cells:
        by_width.setdefault(cell.run.model.d_model, set()).add(round(cell.run.train.lr, 12))
    assert {w: len(v) for w, v in by_width.items()} == {32: 2, 64: 2}  # the same two lrs at both budgets
    nd = plan_sweep(SweepConfig(name="nd", base=TINY_BASE, budgets=[2e9], shapes=shapes[:1],
                                lr=GridAxis(law=str(law), law_name="lr_opt_nd")))
    cell = nd.cells[0]
    counts = count(cell.run.model)
    D = cell.run.budget_flops / counts.M
    assert cell.run.train.lr == pytest.approx(2.0 * counts.params_active_non_embedding**-0.5 * D**0.1)
    with pytest.raises(ConfigError, match="no usable 'lr_opt_x' law"):
        plan_sweep(SweepConfig(name="x", base=TINY_BASE, budgets=[2e9], lr=GridAxis(law=str(law), law_name="lr_opt_x")))


def test_isoflop_shapes_zipped_groups_and_seeds():
    sweep = SweepConfig(
        name="iso", base=TINY_BASE, budgets=[2e9, 6e9],
        shapes=[{"d_model": 32, "n_layers": 1}, {"d_model": 32, "n_layers": 2},
                {"d_model": 64, "n_layers": 2, "n_heads": 4, "budgets": [6e9]}],
        groups=[[{"train.lr": 1e-3, "train.schedule": "cosine"}, {"train.lr": 3e-3, "train.schedule": "wsd"}]],
        seeds=[0, 1],
    )
    plan = plan_sweep(sweep)
    assert len(plan.cells) == (2 + 3) * 2 * 2  # shapes per budget x zipped group x seeds
    pairs = {(c.run.train.lr, c.run.train.schedule) for c in plan.cells}
    assert pairs == {(1e-3, "cosine"), (3e-3, "wsd")}  # zipped, not a product
    assert all(c.coords["lr"] == c.run.train.lr for c in plan.cells)  # the lr trained, not the axis's default
    batch_in_group = dataclasses.replace(sweep, groups=[[{"train.batch_size": 8}, {"train.batch_size": 32}]])
    with pytest.raises(ConfigError, match="sets train.batch_size in axes or groups"):  # was silently overridden
        plan_sweep(batch_in_group)
    at_2e9 = {c.run.model.n_layers for c in plan.cells if c.run.budget_flops == 2e9}
    assert at_2e9 == {1, 2}
    # an IsoFLOP cell is a (shape, tokens) pair: the bigger model gets fewer tokens at the same budget
    big = [c for c in plan.cells if c.run.model.d_model == 64][0]
    small = [c for c in plan.cells if c.run.budget_flops == 6e9 and c.run.model.n_layers == 1][0]
    assert big.plan.tokens < small.plan.tokens


def test_a_budget_no_shape_is_limited_to_has_no_cells_not_the_base_models():
    # each part one shape at its own budgets: the sweep's other budgets are not filled with the base model
    sweep = SweepConfig(name="iso", base=TINY_BASE, budgets=[2e9, 6e9],
                        parts=[{"shapes": [{"d_model": 32, "n_layers": 1, "budgets": [2e9]}]},
                               {"shapes": [{"d_model": 32, "n_layers": 3, "budgets": [6e9]}]}])
    plan = plan_sweep(sweep)
    assert sorted((c.run.budget_flops, c.run.model.n_layers) for c in plan.cells) == [(2e9, 1), (6e9, 3)]


def test_parts_union_dedupes_shared_cells():
    sweep = SweepConfig(name="parts", base=TINY_BASE, budgets=[2e9],
                        parts=[{"lr": {"values": [1e-3, 3e-3]}}, {"lr": {"values": [3e-3]}, "dense_baseline": True}])
    plan = plan_sweep(sweep)
    assert len(plan.cells) == 3 and plan.duplicates == 1
    assert [c.index for c in plan.cells] == [0, 1, 2]


def test_preset_errors_name_the_fix():
    with pytest.raises(ConfigError, match="no sweep 'nope' in .*demo"):
        compose_sweep("nope")
    with pytest.raises(ConfigError, match="not found"):
        compose_sweep("/no/such/file.yaml")


# ---- a user's own configs, the Hydra way -----------------------------------------------------------------------
def test_a_user_sweep_in_dot_sweeps_runs_by_name_without_boilerplate(user_sweeps, monkeypatch):
    monkeypatch.chdir(user_sweeps)
    sweep = compose_sweep("mine")
    assert sweep.launcher.kind == "local"  # the schema's defaults came without a defaults list
    plan = plan_sweep(sweep)
    assert len(plan.cells) == 2 and {c.run.model.d_model for c in plan.cells} == {32}
    assert compose_sweep("mine", ["launcher=slurm"]).launcher.kind == "slurm"
    assert compose_sweep("demo").name == "demo"  # presets still found


def test_config_dir_is_searched_before_the_presets(user_sweeps):
    plan = plan_sweep(compose_sweep("mine", config_dir=user_sweeps / "sweeps"))
    assert {c.run.model.n_experts for c in plan.cells} == {4}
    with pytest.raises(ConfigError, match="no sweep 'mien'.*did you mean mine\\?"):
        compose_sweep("mien", config_dir=user_sweeps / "sweeps")


def test_run_keys_and_base_plus_extend_the_base_and_base_replaces_it_with_a_note(monkeypatch):
    monkeypatch.setenv("SCALING_DATA", "/data/gpt2")  # the GPU preset's data folder
    preset = compose_sweep("isoflop").base
    extended = compose_sweep("isoflop", ["model.n_experts=16", "base+=train.lr=1e-3",
                                         "base+=['model.top_k=2','train.warmup_fraction=0.02']"]).base
    assert extended == [*preset, "model.n_experts=16", "train.lr=1e-3", "model.top_k=2", "train.warmup_fraction=0.02"]
    assert "model.n_experts=64" in extended  # the preset's 64-expert MoE stays (a later entry wins)
    replaced = compose_sweep("isoflop", ["base=['model.n_experts=16']"])
    assert replaced.base == ["model.n_experts=16"]
    assert len(replaced.notes) == 1 and "dropping data.source=shards" in replaced.notes[0]
    with pytest.raises(ConfigError, match="quote each entry"):
        compose_sweep("isoflop", ["base=[model.n_experts=16]"])


@pytest.mark.parametrize("override, nearest", [("budgtes=[1e11]", "budgets"), ("launcher.partiton=gpu",
                                                                               "launcher.partition"),
                                               ("lr.factor=[1,2]", "lr.factors"), ("model.d_modle=96",
                                                                                  "model.d_model")])
def test_a_sweep_key_typo_names_the_nearest_key(override, nearest):
    with pytest.raises(ConfigError, match=f"did you mean {nearest}\\?"):
        plan_sweep(compose_sweep("demo", [override]))


def test_an_axis_key_typo_names_the_nearest_key():
    sweep = SweepConfig(name="typo", base=TINY_BASE, budgets=[1e10], axes={"train.schedul": ["cosine", "wsd"]})
    with pytest.raises(PlanError, match="did you mean train.schedule"):
        plan_sweep(sweep)


def test_sweep_files_that_would_write_elsewhere_or_leak_the_environment_are_refused(tmp_path, monkeypatch):
    """A sweep name is one folder under the results folder; `${oc.env:...}` only gives locations; a malformed
    YAML or an infinite budget is a one-line error, not a traceback."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    cases = {
        "up": ("name: ../../x\nbudgets: [2e9]\n", "not a plain folder name"),
        "abs": ("name: /tmp/elsewhere\nbudgets: [2e9]\n", "not a plain folder name"),
        "secret": ("name: run-${oc.env:SECRET_TOKEN}\nbudgets: [2e9]\n", "name takes its value from the environment"),
        "wandb": ("name: w\nbase:\n  - wandb.project=${oc.env:SECRET_TOKEN}\nbudgets: [2e9]\n",
                  "wandb.project takes its value from the environment"),
        "broken": ("name: b\nbudgets: [2e9\n", "cannot be read as YAML"),
        "inf": ("name: i\nbudgets: [.inf]\n", "positive, finite number of FLOPs"),
    }
    for stem, (text, words) in cases.items():
        path = tmp_path / f"{stem}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            plan_sweep(compose_sweep(str(path)))
        assert words in str(e.value) and "hunter2" not in str(e.value) and "\n" not in str(e.value), stem
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\nbase:\n  - data.path=${oc.env:SCALING_DATA}\nbudgets: [2e9]\n")
    monkeypatch.setenv("SCALING_DATA", "/data/tokens")
    assert compose_sweep(str(ok)).base == ["data.path=/data/tokens"]  # a location may come from the environment


def test_gpu_presets_plan_without_their_data_and_say_how_often_they_repeat_it(monkeypatch):
    """No $SCALING_DATA on this machine: a dry run plans from a declared size (or says the size is unknown), the
    table shows each cell's epochs and flags repeats; a real plan refuses, naming data.path, before anything runs."""
    from rich.console import Console

    from scaling.tables import sweep_table

    monkeypatch.delenv("SCALING_DATA", raising=False)  # (every preset's epochs: test_preset_plan_matches_snapshot)
    plan = plan_sweep(compose_sweep("lr_batch", ["data.train_tokens=1e10"]), data_required=False)
    console = Console(width=250, record=True)
    console.print(sweep_table(plan, {}))
    text = console.export_text()
    assert "epochs" in text and "1.9 (repeats)" in text and "planned against data.train_tokens=10,000,000,000" in text
    assert "40 cell(s) would repeat their data" in text
    unknown = plan_sweep(compose_sweep("isoflop"), data_required=False)
    assert {c.summary()["epochs"] for c in unknown.cells} == {None}
    with pytest.raises(PlanError, match="every cell .*needs data.path"):
        plan_sweep(compose_sweep("isoflop"))


def test_the_moe_presets_dry_runs_show_memory_and_the_parallel_plan_and_refuse_cells_too_big(monkeypatch):
    """The activation-ratio and granularity presets declare 80 GiB GPUs: every cell fits one at a micro-batch the
    plan picks (the 256-expert cells, 3.1e9 parameters, at fewer rows); on 24 GiB GPUs the largest cells are
    flagged in a dry run and refused, with their numbers, by a real plan; on 4 such GPUs per cell they shard."""
    from rich.console import Console

    from scaling.tables import sweep_table

    monkeypatch.setenv("SCALING_DATA", "/data/tokens")
    for name in ("activation_ratio", "granularity"):
        plan = plan_sweep(compose_sweep(name, ["data.train_tokens=1e11"]), data_required=False)
        assert plan.config.launcher.gpu_memory_gb == 80 and all(c.memory.fits for c in plan.cells)
        console = Console(width=300, record=True)
        console.print(sweep_table(plan, {}, wide=True))
        text = console.export_text()
        assert "memory/device" in text and "checked against 80 GiB GPUs" in text and " GiB single mb" in text
    plan = plan_sweep(compose_sweep("activation_ratio", ["data.train_tokens=1e11"]), data_required=False)
    biggest = max(plan.cells, key=lambda c: c.plan.counts.params_total)
    assert biggest.run.model.n_experts == 256 and biggest.run.train.micro_batch_size < biggest.run.train.batch_size
    assert biggest.run_id == plan_sweep(compose_sweep("activation_ratio", ["data.train_tokens=1e11",
                                                                           "launcher.gpu_memory_gb=null"]),
                                        data_required=False).cells[biggest.index].run_id  # not in the identity

    small = ["data.train_tokens=1e11", "launcher.gpu_memory_gb=24"]
    flagged = plan_sweep(compose_sweep("activation_ratio", small), data_required=False)
    too_big = [c for c in flagged.cells if c.memory.fits is False]
    assert 0 < len(too_big) < len(flagged.cells) and all(c.run.model.n_experts >= 128 for c in too_big)
    with pytest.raises(PlanError) as refused:
        plan_sweep(compose_sweep("activation_ratio", small + ["data.allow_repeat=true"]))
    reasons = [reason for _, reason in refused.value.problems if "too big" in reason]
    assert len(reasons) == len(too_big)
    assert all("too big for its GPUs (launcher.gpu_memory_gb=24)" in r for r in reasons)
    assert any("states 45.8" in r and "at least 4 devices, sharded" in r for r in reasons)  # the E = 256 cell
    sharded = plan_sweep(compose_sweep("activation_ratio", small + ["launcher.gpus_per_run=4"]), data_required=False)
    modes = {c.run.model.n_experts: c.run.train.parallel for c in sharded.cells if c.coords["budget_flops"] == 1e19}
    assert modes[256] == "fsdp" and modes[4] == "ddp" and all(c.memory.fits for c in sharded.cells)


def test_the_precision_presets_dry_run_costs_the_gpu_study(monkeypatch):
    from scaling import tables

    plan = preset_plan("precision", monkeypatch)
    assert {(c.run.train.precision, c.run.model.qk_norm) for c in plan.cells} == {
        ("bf16", True), ("bf16", False), ("fp8", True), ("fp8", False)}
    assert sorted({c.run.budget_flops for c in plan.cells}) == [1e18, 3e18, 1e19] and len(plan.cells) == 12
    caption = tables.sweep_table(plan, {}).caption
    hours = plan.mfu_flops / (989e12 * 0.35) / 3600  # MFU counts the output head too
    assert plan.mfu_flops > plan.total_flops
    assert (f"total {plan.total_flops:.3g} FLOPs; with the output head {plan.mfu_flops:.3g} FLOPs = {hours:,.0f} "
            f"H100-hours") in caption and "launcher.assumed_mfu=0.35" in caption
    assert all(c.run.train.diagnostics_every == 200 for c in plan.cells)
    assert "fp8-noqknorm" in plan.cells[3].name


@pytest.mark.parametrize("key", ["results_dir", "sweep"])
def test_a_per_sweep_key_as_an_axis_is_refused_before_anything_runs(key, tmp_path):
    """results_dir or sweep as an axis would record cells outside the folder the launcher claims them in (before
    issue 26: every cell left pending with a ClaimError, exit 0)."""
    values = [str(tmp_path / "x"), str(tmp_path / "y")] if key == "results_dir" else ["s1", "s2"]
    with pytest.raises(ConfigError, match=f"{key} cannot be an axis"):
        plan_sweep(SweepConfig(name="w", base=["train.batch_size=4"], axes={key: values}), data_required=False)
    (tmp_path / "w.yaml").write_text(f"name: w\nbase: [train.batch_size=4]\naxes: {{{key}: {json.dumps(values)}}}\n")
    out = scaling("sweep", str(tmp_path / "w.yaml"), "--no-probe", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and f"{key} cannot be an axis" in out.stderr


def _laws(tmp_path, n_opt_b=0.5):
    from scaling.compose import compose as compose_run

    n = count(compose_run(TINY_BASE).model).params_active_non_embedding  # d_model 32: compute-optimal at 4e9
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"laws": {
        "n_opt": {"formula": "a * C^b", "params": {"a": n / 4e9**n_opt_b, "b": n_opt_b}},
        "lr_opt": {"formula": "a * C^b", "params": {"a": 1e-3 * 4e9**0.25, "b": -0.25}}}}))
    return str(path)


def test_a_ladder_at_budgets_trains_the_width_closest_to_compute_optimal_at_each():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        laws = _laws(Path(tmp))
        ladder = [{"d_model": d, "d_expert": d} for d in (16, 32, 64)]
        by_shape = plan_sweep(SweepConfig(name="w", base=TINY_BASE, ladder=ladder, laws=laws), data_required=False)
        optimal = {c.run.model.d_model: c.run.budget_flops for c in by_shape.cells}
        assert optimal[32] == pytest.approx(4e9, rel=2e-3)  # ladder_at shape: each width at its own budget
        budgets = [optimal[16] * 1.2, 4.4e9, optimal[64] * 0.9, optimal[64] * 10]
        at = plan_sweep(SweepConfig(name="w", base=TINY_BASE, ladder=ladder, laws=laws, ladder_at="budget",
                                    budgets=budgets), data_required=False)
        picked = sorted((c.run.budget_flops, c.run.model.d_model) for c in at.cells)
        assert [b for b, _ in picked] == sorted(budgets)  # the budgets chosen, not the widths' own
        assert [d for _, d in picked] == [16, 32, 64, 64]  # each the width nearest compute-optimal (in log C)
        with pytest.raises(ConfigError, match="ladder_at='rung' is not 'shape' or 'budget'"):
            plan_sweep(SweepConfig(name="w", base=TINY_BASE, ladder=ladder, laws=laws, ladder_at="rung"))


def test_an_lr_law_read_per_shape_gives_a_shape_one_lr_so_its_cells_can_branch():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        laws = _laws(Path(tmp))
        shapes = [{"d_model": 32, "budgets": [2e9, 8e9]}, {"d_model": 32, "n_layers": 1, "budgets": [8e9]}]
        base = TINY_BASE + ["train.schedule=wsd", "train.warmup_steps=2", "train.branch=true"]
        per_budget = plan_sweep(SweepConfig(name="i", base=base, budgets=[2e9, 8e9], shapes=shapes,
                                            lr=GridAxis(law=laws)), data_required=False)
        per_shape = plan_sweep(SweepConfig(name="i", base=base, budgets=[2e9, 8e9], shapes=shapes,
                                           lr=GridAxis(law=laws, law_at="shape")), data_required=False)
        two = [c for c in per_shape.cells if c.run.model.n_layers == 2]
        assert len({c.run.train.lr for c in two}) == 1  # one lr for the shape: the law at sqrt(2e9 * 8e9) = 4e9
        assert two[0].run.train.lr == pytest.approx(1e-3, rel=1e-6)
        assert len({c.run.train.lr for c in per_budget.cells if c.run.model.n_layers == 2}) == 2
        assert per_shape.trained_flops < per_shape.total_flops == pytest.approx(per_budget.total_flops)
        assert per_budget.trained_flops == per_budget.total_flops  # other lrs: nothing shared


def _token_folder(folder, vocab: int):
    import numpy as np
    from test_data_shards import write_manifest_folder

    rng = np.random.default_rng(0)
    write_manifest_folder(folder, [rng.integers(0, vocab, 400_000)], [rng.integers(0, vocab, 20_000)], vocab=vocab)


def test_a_sweep_of_shards_takes_their_vocabulary_and_refuses_one_far_larger(tmp_path):
    """model.vocab_size=null (as the README says for your own tokenizer) plans every cell at the data's vocabulary
    rounded up to 64 (it crashed in the memory plan); a vocabulary 25x the data's is refused with the fix."""
    _token_folder(tmp_path / "tok", 1000)
    data = ["data.source=shards", f"data.path={tmp_path / 'tok'}", "data.val_tokens=4096", "budgets=[1e11]"]
    plan = plan_sweep(compose_sweep("demo", [*data, "model.vocab_size=null"]), data_required=False)
    assert {c.run.model.vocab_size for c in plan.cells} == {1024}
    with pytest.raises(PlanError, match="model.vocab_size=25600 but the data's tokenizer has 1,000 tokens"):
        plan_sweep(compose_sweep("demo", [*data, "model.vocab_size=25600"]), data_required=False)


def test_a_grid_centred_on_an_undetermined_law_is_refused_unless_asked_and_the_dry_run_says_what_it_rests_on(
        tmp_path):
    law = {"kind": "power", "variables": ["C"], "params": {"a": 3e-3 * 1e11**0.3, "b": -0.3},
           "verdict": {"verdict": "undetermined", "reasons": ["the fitted C span 2x"], "advice": []}}
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"convention": "M", "laws": {"lr_opt": law}}))
    sweep = tmp_path / "centred.yaml"
    sweep.write_text(f"name: centred\nbase: [model=tiny_moe]\nbudgets: [1e11]\n"
                     f"lr: {{law: {path}, factors: [0.5, 1, 2]}}\n")
    with pytest.raises(PlanError, match="lr: law 'lr_opt' of .* is undetermined \\(the fitted C span 2x\\).*"
                                          "lr.allow_undetermined=true"):
        plan_sweep(compose_sweep(str(sweep)))
    plan = plan_sweep(compose_sweep(str(sweep), ["lr.allow_undetermined=true"]))
    assert plan.centres == [f"lr centred on lr_opt (a * C^b) of {path}: judged undetermined, centred on anyway "
                            f"(allow_undetermined); C in its M convention, x0.5, x1, x2"]
    law["verdict"]["verdict"] = "weak"
    path.write_text(json.dumps({"convention": "M", "laws": {"lr_opt": law}}))
    assert "judged weak" in plan_sweep(compose_sweep(str(sweep))).centres[0]


def test_a_broken_law_file_is_one_line_before_any_cell(tmp_path):
    """Issue 31: a hand-edited fit.json the lr axis centres on was refused once per cell (a PlanError listing every
    cell with the same reason); it is read once, before the cells, and refused in one line."""
    import json

    from scaling.config import ConfigError

    law = tmp_path / "fit.json"
    law.write_text(json.dumps({"laws": {"lr_opt": {"kind": "power", "variables": ["C"],
                                                   "params": {"a": -1.0, "b": -0.12}}}}))
    sweep = tmp_path / "centred.yaml"
    sweep.write_text(f"name: centred\nbudgets: [2e9, 4e9, 8e9]\nlr:\n  law: {law}\n  factors: [0.5, 1, 2]\n")
    with pytest.raises(ConfigError, match=r"^lr.law: .*fit.json: law 'lr_opt': a power law's prefactor a must be "
                                          r"positive \(got a=-1\)") as e:
        plan_sweep(compose_sweep(str(sweep)))
    assert "\n" not in str(e.value)
