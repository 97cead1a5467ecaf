"""Config composition and validation: impossible settings fail at load with a one-line error naming the key."""

import json
from pathlib import Path

import pytest

from scaling.compose import compose
from scaling.config import ConfigError, from_dict, identity_dict, to_dict
from scaling.run import plan_run, run_id


def test_defaults_compose_to_the_tiny_moe():
    run = compose([])
    assert (run.model.d_model, run.model.n_layers, run.model.n_experts, run.model.top_k) == (64, 2, 8, 2)
    assert run.budget_flops == 3e11
    assert run.model.balancing == "aux_free"


def test_overrides_and_model_group():
    run = compose(["budget_flops=1e12", "train.lr=4e-3", "model=tiny_dense"])
    assert run.budget_flops == 1e12 and run.train.lr == 4e-3
    assert (run.model.n_experts, run.model.top_k, run.model.d_expert) == (1, 1, 256)


@pytest.mark.parametrize(
    "override, key",
    [
        (["model.top_k=9"], "model.top_k"),
        (["model.d_model=66"], "model.d_model"),
        (["model.n_kv_heads=3"], "model.n_kv_heads"),
        (["model.score_func=relu"], "model.score_func"),
        (["model.n_dense_layers=5"], "model.n_dense_layers"),
        (["budget_flops=-1"], "budget_flops"),
        (["train.schedule=linear"], "train.schedule"),
        (["data.source=mixture"], "data.mixture"),
        (["data.source=parquet"], "data.source"),
        (["data.tokenizer=bpe", "data.bpe_vocab=100"], "data.bpe_vocab"),
        (["model.no_such_key=1"], "no_such_key"),
        (["model.d_model=abc"], "d_model"),
        (["model=no_such_model"], "no_such_model"),
    ],
)
def test_impossible_settings_fail_with_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        compose(override)
    message = str(e.value)
    assert key in message
    assert "\n" not in message


def test_budget_too_small_for_one_step():
    run = compose(["budget_flops=1e6"])
    with pytest.raises(ConfigError, match="less than one optimizer step.*raise budget_flops"):
        plan_run(run)


def test_corpus_too_small_for_the_tokens():
    from scaling.data import DataError

    run = compose(["budget_flops=1e15"])
    with pytest.raises(DataError, match="training tokens.*data.allow_repeat=true"):
        plan_run(run)
    plan = plan_run(compose(["budget_flops=1e15", "data.allow_repeat=true"]))
    assert plan.derived()["epochs"] > 1


def test_run_id_is_stable_and_ignores_bookkeeping():
    a = compose(["train.lr=2e-3"])
    b = compose(["train.lr=2e-3", "results_dir=/elsewhere", "train.log_every=3", "wandb.mode=offline"])
    c = compose(["train.lr=4e-3"])
    assert run_id(a) == run_id(b) != run_id(c)
    assert identity_dict(a) == identity_dict(b)


IDENTITY_DEFAULTS = Path(__file__).parent / "snapshots" / "identity_defaults.json"
"""The identity fields' defaults under IDENTITY_VERSION: a changed default changes what every id that relies on it
means, so it must come with a bumped IDENTITY_VERSION (then rewrite the file). A new field may join with any
default (ids only hash what differs from the defaults), and is added to the file."""


def test_a_changed_default_needs_a_bumped_identity_version():
    from scaling import config

    pinned = json.loads(IDENTITY_DEFAULTS.read_text())
    now = json.loads(json.dumps(dict(config._default_identity()), default=str))
    changed = {k: (v, now.get(k, "(removed)")) for k, v in pinned["defaults"].items() if now.get(k, "(removed)") != v}
    assert not changed or config.IDENTITY_VERSION != pinned["identity_version"], (
        f"defaults that enter run ids changed ({changed}): bump config.IDENTITY_VERSION and rewrite "
        f"{IDENTITY_DEFAULTS.name}")
    assert not changed and config.IDENTITY_VERSION == pinned["identity_version"], f"rewrite {IDENTITY_DEFAULTS.name}"
    added = sorted(set(now) - set(pinned["defaults"]))
    assert not added, f"new identity fields {added}: add their defaults to {IDENTITY_DEFAULTS.name}"


def test_run_id_hashes_what_differs_from_the_defaults():
    from scaling import config

    assert config.identity_key(compose([])) == {"identity_version": config.IDENTITY_VERSION}
    assert config.identity_key(compose(["train.lr=2e-3", "seed=1"])) == {
        "identity_version": config.IDENTITY_VERSION, "train.lr": 2e-3, "seed": 1}


def test_dict_round_trip():
    run = compose(["model.n_shared_experts=1"])
    assert from_dict(to_dict(run)) == run


@pytest.mark.parametrize(
    "override, nearest",
    [
        ("+train.warmup_step=100", "train.warmup_steps"),  # a `+` key is checked too (it was dropped silently)
        ("model.d_modle=96", "model.d_model"),
        ("train.lrr=1e-3", "train.lr"),
        ("budget_flop=1e12", "budget_flops"),
    ],
)
def test_an_unknown_key_names_the_nearest_real_one(override, nearest):
    with pytest.raises(ConfigError, match=f"unknown config key .*did you mean {nearest}\\?"):
        compose([override])


def test_with_updates_checks_keys_too():
    from scaling.compose import with_updates

    with pytest.raises(ConfigError, match="did you mean train.schedule"):
        with_updates(compose([]), {"train.schedul": "wsd"})


@pytest.mark.parametrize(
    "overrides, key, needs",
    [
        (["data.path=/tmp"], "data.path", "data.source=shards"),
        (["data.token_dtype=uint32"], "data.token_dtype", "data.source=shards"),
        (["data.source=shards", "data.tokenizer=bpe"], "data.tokenizer", "data.source=stdlib"),
        (["model.d_shared=64"], "model.d_shared", "n_shared_experts"),
        (["model.d_ff_dense=64"], "model.d_ff_dense", "n_dense_layers"),
        (["model.aux_loss_coef=0.1"], "model.aux_loss_coef", "balancing=aux_loss"),
        (["model.balancing=aux_loss", "model.bias_update_rate=0.01"], "model.bias_update_rate", "aux_free"),
        (["train.decay_fraction=0.3"], "train.decay_fraction", "train.schedule=wsd"),
        (["train.wsd_decay=linear"], "train.wsd_decay", "train.schedule=wsd"),
    ],
)
def test_a_setting_that_would_be_ignored_fails_with_the_fix(overrides, key, needs):
    with pytest.raises(ConfigError, match=f"{key}=.* has no effect without .*{needs}"):
        compose(overrides)


def test_the_same_settings_with_what_they_need_compose():
    run = compose(["model.n_shared_experts=1", "model.d_shared=64", "train.schedule=wsd", "train.decay_fraction=0.3",
                   "model.balancing=aux_loss", "model.aux_loss_coef=0.1"])
    assert (run.model.d_shared, run.train.decay_fraction, run.model.aux_loss_coef) == (64, 0.3, 0.1)


def test_a_users_model_in_sweeps_beside_the_cwd_composes_with_the_presets(tmp_path, monkeypatch):
    (tmp_path / "sweeps" / "model").mkdir(parents=True)
    (tmp_path / "sweeps" / "model" / "wide.yaml").write_text("d_model: 96\nn_heads: 4\nd_expert: 96\n")
    monkeypatch.chdir(tmp_path)
    run = compose(["model=wide"])
    assert (run.model.d_model, run.model.d_expert, run.model.n_experts) == (96, 96, 8)  # the rest: the schema's
    assert compose(["model=tiny_dense"]).model.n_experts == 1  # the presets are still there


def test_config_dir_must_exist(tmp_path):
    from scaling.compose import search_path

    with pytest.raises(ConfigError, match="--config-dir .* is not a folder"):
        search_path(tmp_path / "nope")
    assert search_path(tmp_path)[0] == tmp_path.resolve()


@pytest.mark.parametrize("override, words", [
    ("seed=-1", "seed=-1 must be in [0, 2**32)"),
    ("train.beta1=1.5", "train.beta1=1.5 must be in [0, 1)"),
    ("train.beta2=1.0", "train.beta2=1.0 must be in [0, 1)"),
    ("model.init_std=-1", "model.init_std=-1.0 must be positive"),
    ("train.eps=0", "train.eps=0.0 must be positive"),
    ("train.grad_clip=nan", "train.grad_clip=nan must be a finite number"),
    ("train.divergence_factor=nan", "train.divergence_factor=nan must be a finite number"),
    ("budget_flops=inf", "budget_flops=inf must be a finite number"),
    ("model.z_loss_coef=-0.1", "model.z_loss_coef=-0.1 must be >= 0"),
    ("sweep=../../x", "not a plain folder name"),
    ("sweep=/tmp/abs", "not a plain folder name"),
    ("train.precision=fp16", "train.precision='fp16' is not one of auto, fp32, bf16, fp8"),
    ("train.fp8_scaling=blockwise", "train.fp8_scaling='blockwise' is not one of tensorwise, rowwise"),
    ("train.fp8_scaling=rowwise", "train.fp8_scaling=rowwise has no effect without train.precision=fp8 or "
                                  "train.diagnostics_every > 0"),
    ("train.diagnostics_every=-1", "train.diagnostics_every=-1 must be >= 0"),
])
def test_settings_that_would_fail_after_writing_a_record_fail_at_load(override, words):
    """Each of these used to pass validation and fail later (after a record was written), or silently switch a
    safeguard off (divergence_factor=nan), or write outside the results folder (sweep=../../x)."""
    with pytest.raises(ConfigError) as e:
        compose([override])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_fp8_needs_gemm_widths_divisible_by_16_and_says_which():
    with pytest.raises(ConfigError, match=r"train.precision=fp8 needs model.d_expert divisible by 16 .*got 40.*"
                                          r"train.precision=bf16"):
        compose(["train.precision=fp8", "model.d_expert=40"])
    compose(["train.precision=bf16", "model.d_expert=40"])  # bf16 has no such need
    assert compose(["train.precision=fp8"]).train.precision == "fp8"


def test_environment_values_only_in_locations(tmp_path, monkeypatch):
    """`${oc.env:...}` may give a location (data.path, results_dir); a name or W&B field from the environment
    (a token, a user name) would reach folder names, plan.json and W&B, so it is refused."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    for override in ("sweep=${oc.env:SECRET_TOKEN}", "wandb.project=${oc.env:SECRET_TOKEN}",
                     "wandb.entity=${oc.env:SECRET_TOKEN}"):
        with pytest.raises(ConfigError, match="takes its value from the environment") as e:
            compose([override])
        assert "hunter2" not in str(e.value)
    monkeypatch.setenv("MY_RESULTS", str(tmp_path))
    assert compose(["results_dir=${oc.env:MY_RESULTS}"]).results_dir == str(tmp_path)


def test_a_location_is_never_copied_into_another_key(tmp_path, monkeypatch):
    """A location may hold an environment value (results_dir=${oc.env:DB_PASSWORD}); a key interpolating it would
    carry the secret into records and W&B: refused, in a run's overrides, a sweep's base and a sweep's command
    line, before anything resolves. Locations may interpolate each other."""
    from scaling.sweep.plan import compose_sweep

    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    for leak in ("wandb.project=${results_dir}", "wandb.project=run-${data.path}", "wandb.entity=${.cache_dir}",
                 "wandb.project=${oc.select:data.val_path,x}"):
        with pytest.raises(ConfigError, match="interpolates a location") as e:
            compose(["results_dir=${oc.env:DB_PASSWORD}", leak])
        assert "hunter2" not in str(e.value)
    sweep = tmp_path / "leak.yaml"
    sweep.write_text("name: leak\nbase:\n  - results_dir=${oc.env:DB_PASSWORD}\n  - wandb.project=${results_dir}\n"
                     "budgets: [2e9]\n")
    with pytest.raises(ConfigError, match="wandb.project interpolates a location"):
        compose_sweep(str(sweep))
    with pytest.raises(ConfigError, match="wandb.project interpolates a location"):
        compose_sweep("demo", ["wandb.project=${results_dir}"])
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    run = compose(["results_dir=${oc.env:MY_DATA}", "data.cache_dir=${results_dir}"])
    assert run.data.cache_dir == str(tmp_path)


def test_identity_overrides_round_trip_a_mixture():
    """recommended.overrides and verification runs rebuild a run from its record: lists of sources included."""
    from scaling.config import identity_overrides

    run = compose(["data.source=mixture", "data.mixture=[{path: '/data/web v2:x', weight: 0.7}, "
                   "{path: /data/code, weight: 0.3, val_path: /data/code/val}]"])
    again = compose(identity_overrides(to_dict(run)))
    assert again.data.mixture == run.data.mixture and identity_dict(again) == identity_dict(run)


def test_no_preset_folder_shadows_a_config_key(tmp_path, monkeypatch):
    """A folder on the config search path is a config group to Hydra: one named like a key (sweeps/laws/ did,
    so `scaling sweep wind_tunnel laws=PATH` failed) makes `KEY=VALUE` unusable. The presets' folders are the
    groups alone, and a user's folder that shadows a key is named in the error."""
    import dataclasses

    from scaling.compose import preset_dir
    from scaling.config import RunConfig
    from scaling.sweep.plan import SweepConfig, compose_sweep
    from tests.inprocess import scaling

    keys = {f.name for cls in (SweepConfig, RunConfig) for f in dataclasses.fields(cls)}
    folders = {p.name for p in preset_dir().iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders & keys <= {"model", "launcher"}, folders & keys
    laws = preset_dir() / "published" / "ling_moe.json"
    assert compose_sweep("wind_tunnel", [f"laws={laws}"]).laws == str(laws)
    (tmp_path / "sweeps" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    out = scaling("sweep", "demo", "name=x", "--dry-run", "--no-probe")
    assert out.returncode == 2 and "sweeps/name on the config search path" in out.stderr


def test_updates_of_a_run_are_typed_as_a_whole_node_types_them():
    """with_updates' fast path (a section at a time) gives exactly what an OmegaConf node of the whole run gives,
    conversions included (an int for a float field), and refuses what it refuses."""
    from scaling.compose import _updated, _updated_whole, compose, with_updates

    run = compose([])
    for updates in ({"budget_flops": 3, "seed": 2, "train.lr": 1, "model.d_model": 96},
                    {"data.source": "shards", "data.path": "/a", "model.d_shared": None,
                     "train.micro_batch_size": 4, "sweep": "s", "results_dir": "r"},
                    {"wandb.mode": "disabled", "model.qk_norm": False, "train.precision": "bf16"}):
        fast, whole = _updated(run, updates), _updated_whole(run, updates)
        assert fast == whole and type(fast.budget_flops) is type(whole.budget_flops), updates
    for bad in ({"train.lr": "fast"}, {"model.d_model": None}, {"seed": 1.5}):
        with pytest.raises(ConfigError, match="bad config"):
            with_updates(run, bad)


def test_a_binary_config_file_is_one_line(tmp_path):
    """Issue 31: a binary sweep YAML (or a fit's verify.yaml overwritten with bytes) ended in UnicodeDecodeError."""
    from scaling.sweep.plan import compose_sweep

    path = tmp_path / "verify.yaml"
    path.write_bytes(b"name: v\n\xd5\xff\x00\x81 budgets")
    with pytest.raises(ConfigError, match=r"verify.yaml is not a text file \(not UTF-8\)"):
        compose_sweep(str(path))
