"""`scaling fit` as a user runs it: on the results store, on CSVs, and on bad input (one-line errors)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaling import store
from tests.inprocess import scaling


def run(*args):
    """`scaling fit ARGS` in this process (tests/inprocess.py; test_run checks that a fit imports no torch)."""
    return scaling("fit", *args)


def one_line_error(out) -> str:
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def synthetic_sweep_csv(path, n_per_budget=25, noise=0.002, seed=0):
    """lr x batch grids at 5 budgets around known optima lr* = 0.3 C^-0.125, B* = 0.3 C^0.33 tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in np.logspace(17, 19, 5):
        lr_opt, b_opt = 0.3 * C**-0.125, 0.3 * C**0.33
        params = 0.1 * C**0.5
        for lr in lr_opt * np.geomspace(0.25, 4, 5):
            for b in b_opt * np.geomspace(0.25, 4, 5):
                loss = 1.8 + 30 * C**-0.08 + 0.02 * np.log(lr / lr_opt) ** 2 + 0.01 * np.log(b / b_opt) ** 2
                rows.append({"N": params, "C": C, "loss": loss * np.exp(rng.normal(0, noise)), "lr": lr,
                             "batch_tokens": b})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_fit_a_csv_with_renamed_columns_recovers_the_optima(tmp_path):
    csv = tmp_path / "runs.csv"
    synthetic_sweep_csv(csv)
    out = run("--from", str(csv), "--map", "params=N,flops=C", "--json", "-o", str(tmp_path / "fit"),
              "--bootstrap", "200")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    lr, b = report["laws"]["lr_opt"], report["laws"]["batch_opt"]
    assert lr["formula"] == "a * C^b" and lr["params"]["b"] == pytest.approx(-0.125, abs=0.01)
    assert b["params"]["b"] == pytest.approx(0.33, abs=0.01)
    assert lr["interval"]["b"][0] <= -0.125 <= lr["interval"]["b"][1]
    assert "loss_vs_compute" in report["laws"]
    assert any("tokens = flops / (6 * params)" in n for n in report["notes"])
    assert json.loads((tmp_path / "fit" / "fit.json").read_text()) == report
    held = report["held_out"]  # refit without the largest budget, predicted there
    assert held["budget"] == pytest.approx(1e19)
    assert abs(held["lr"]["relative_error"]) < 0.1 and abs(held["batch_tokens"]["relative_error"]) < 0.1
    assert abs(held["loss"]["relative_error"]) < 0.02
    table = run("--from", str(csv), "--map", "params=N,flops=C", "-o", str(tmp_path / "fit2"), "--bootstrap", "50",
                "--no-plots")  # (figures: test_figures_are_written)
    assert table.returncode == 0 and "lr_opt" in table.stdout and "not fitted" in table.stdout


def test_fit_the_results_store_excludes_diverged_runs(tmp_path):
    cells = [(C, lr, "completed") for C in (1e11, 3e11, 1e12) for lr in (1e-3, 3e-3, 1e-2)] + [(1e12, 1.0, "diverged")]
    for i, (C, lr, status) in enumerate(cells):
        rec = store.new_record(f"r{i}", "s", f"c{i}", {"model": {"n_experts": 8}, "train": {"lr": lr}},
                               {"params_active_non_embedding": 1e5, "params_non_embedding": 4e5, "tokens": C / 1e6,
                                "flops_per_token": {"M": 1e6}, "budget_flops": C, "batch_tokens": 4096,
                                "activation_ratio": 0.25, "granularity": 1.0, "data_fingerprint": "x"}, {})
        loss = 2.0 + 0.1 * (C / 1e11) ** -0.2 + 0.05 * np.log(lr / 3e-3) ** 2
        rec.update(status=status, results={"val_loss": loss if status == "completed" else None})
        store.write_record(store.record_path(tmp_path, "s", f"r{i}"), rec)
    out = run("s", "--results-dir", str(tmp_path), "--json", "-o", str(tmp_path / "fit"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["n_runs"] == 9 and report["excluded"]["runs"] == {"diverged": 1}
    assert report["laws"]["lr_opt"]["params"]["b"] == pytest.approx(0.0, abs=1e-6)  # lr* = 3e-3 at every budget
    assert "batch_opt" in report["excluded"]["laws"]  # one batch size: not fitted, and it says why


def test_bad_inputs_are_one_line_errors(tmp_path):
    assert "does not exist" in one_line_error(run("--results-dir", str(tmp_path / "none")))
    (tmp_path / "empty").mkdir()
    assert "no run records" in one_line_error(run("--results-dir", str(tmp_path / "empty")))

    rec = store.new_record("r0", "s", "c", {}, {}, {})
    rec["status"] = "diverged"
    store.write_record(store.record_path(tmp_path / "div", "s", "r0"), rec)
    assert "all 1 runs" in one_line_error(run("--results-dir", str(tmp_path / "div")))

    csv = tmp_path / "a.csv"
    pd.DataFrame({"params": [1e8, 2e8], "flops": [1e18, 1e18], "loss": [float("nan"), float("nan")]}).to_csv(csv)
    assert "no row is usable (2 loss not a finite number)" in one_line_error(run("--from", str(csv)))
    pd.DataFrame({"size": [1e8], "loss": [3.0]}).to_csv(csv, index=False)
    msg = one_line_error(run("--from", str(csv)))
    assert "missing column(s) params" in msg and "--map" in msg
    pd.DataFrame({"params": [1e8, 2e8], "flops": [-1e18, 0], "loss": [3.0, 2.9]}).to_csv(csv, index=False)
    assert "no row is usable (2 flops not positive)" in one_line_error(run("--from", str(csv)))
    assert "not found" in one_line_error(run("--from", str(tmp_path / "missing.csv")))
    assert "not 'quadratic'" in one_line_error(run("--from", str(csv), "--optimum", "argmin"))
    assert "--memory-per-gpu needs --target-flops" in one_line_error(run("--from", str(csv), "--memory-per-gpu", "80"))


def test_unusable_csv_rows_are_excluded_and_counted_and_fit_json_stays_valid(tmp_path):
    """One non-numeric lr, a negative and a zero loss among 125 rows: those rows are left out, counted by reason,
    and the laws are fitted from the rest (before: an argmax of an empty sequence, E = nan, a KeyError)."""
    csv = tmp_path / "runs.csv"
    synthetic_sweep_csv(csv)
    df = pd.read_csv(csv)
    df["lr"] = df["lr"].astype(object)
    df.loc[3, "lr"], df.loc[7, "loss"], df.loc[11, "loss"] = "abc", -1.0, 0.0
    df.to_csv(csv, index=False)
    out = run("--from", str(csv), "--map", "params=N,flops=C", "--json", "-o", str(tmp_path / "fit"),
              "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["excluded"]["runs"] == {"loss not positive": 2, "lr not a finite number": 1}
    assert report["n_runs"] == 122 and "lr_opt" in report["laws"] and "loss_vs_compute" in report["laws"]
    json.loads((tmp_path / "fit" / "fit.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))


def test_too_few_budgets_still_show_the_optima_and_figures_and_refuse_only_the_laws(tmp_path):
    """One or two budgets: no law, but the per-budget optima, the bowls figure and a full --json."""
    csv = tmp_path / "two.csv"
    lrs = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    pd.DataFrame({"params": [1e8] * 10, "flops": [1e18] * 5 + [3e18] * 5,
                  "loss": [3.0, 2.9, 2.85, 2.9, 3.1, 2.8, 2.7, 2.66, 2.72, 2.9],
                  "lr": lrs * 2}).to_csv(csv, index=False)
    out = run("--from", str(csv), "-o", str(tmp_path / "fit"))
    assert out.returncode == 0, out.stderr
    assert "optima per budget" in out.stdout and "no law can be fitted from 10 runs at 2 budget(s)" in out.stdout
    assert (tmp_path / "fit" / "lr_bowls.png").exists()
    report = json.loads(run("--from", str(csv), "-o", str(tmp_path / "fit2"), "--json").stdout)
    assert report["laws"] == {} and len(report["optima"]) == 2 and "lr_opt" in report["excluded"]["laws"]
    assert report["optima"][0]["lr"] == pytest.approx(4e-3, rel=0.3) and report["optima"][0]["interior"]
    one = tmp_path / "one.csv"  # no lr grid and one budget: nothing to show at all
    pd.DataFrame({"params": [1e8] * 2, "flops": [1e18] * 2, "loss": [3.0, 2.9]}).to_csv(one, index=False)
    msg = one_line_error(run("--from", str(one), "-o", str(tmp_path / "fit3")))
    assert "no law can be fitted from 2 runs at 1 budget(s)" in msg


def test_recommendation_at_a_target_budget(tmp_path):
    csv = tmp_path / "runs.csv"
    synthetic_sweep_csv(csv)
    out = run("--from", str(csv), "--map", "params=N,flops=C", "--json", "-o", str(tmp_path / "fit"),
              "--bootstrap", "200", "--target-flops", "1e21")
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)["recommendation"]
    lr = rec["items"]["lr"]
    assert lr["value"] == pytest.approx(0.3 * 1e21**-0.125, rel=0.1)  # the law the data came from
    assert lr["interval"][0] < lr["value"] < lr["interval"][1]
    assert rec["items"]["batch_tokens"]["value"] == pytest.approx(0.3 * 1e21**0.33, rel=0.15)
    assert "loss" in rec["items"] and rec["items"]["loss"]["value"] > 1.8
    assert "params_active" in rec["missing"]  # one size per budget: no allocation law, and it says so
    assert not (tmp_path / "fit" / "recommended.overrides").exists()  # no config: it would train the default model
    values = (tmp_path / "fit" / "recommended.yaml").read_text().splitlines()
    assert values[1] == "target_flops: 1e+21" and values[2].startswith(f"lr: {lr['value']:.6g}  # 95% [")
    assert any(line.startswith("# params_active: missing (") for line in values)
    # 100x beyond budgets that span 100x, at 0.2% noise: trusted, and how far it reaches is recorded
    assert rec["items"]["lr"]["verdict"] == "reliable" and rec["items"]["lr"]["extrapolation"] == pytest.approx(100)
    bad = run("--from", str(csv), "--map", "params=N,flops=C", "--target-flops", "-5", "-o", str(tmp_path / "x"))
    assert "must be a positive number of FLOPs" in one_line_error(bad)


def test_train_reads_an_overrides_file(tmp_path):
    f = tmp_path / "rec.overrides"
    f.write_text("# a recommendation\nbudget_flops=1e12\ntrain.lr=0.004\n\n")
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "train", "--dry-run", "--overrides-file", str(f),
                          "seed=3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "C1e12-A0.25-G1-lr4e-3-B4k" in out.stdout  # the cell the file (and seed=3 after it) describes


def test_figures_are_written(tmp_path):
    csv = tmp_path / "runs.csv"
    synthetic_sweep_csv(csv)
    out = run("--from", str(csv), "--map", "params=N,flops=C", "-o", str(tmp_path / "fit"), "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    for name in ("loss_vs_compute", "optima_vs_compute", "lr_batch_losses"):
        for ext in ("png", "svg"):
            path = tmp_path / "fit" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
    none = run("--from", str(csv), "--map", "params=N,flops=C", "-o", str(tmp_path / "fit2"), "--no-plots",
               "--bootstrap", "0")
    assert none.returncode == 0 and not list((tmp_path / "fit2").glob("*.png"))


def test_integer_columns_do_not_overflow(tmp_path):
    """6 * N * D with N and D read as int64 overflows past 9.2e18 FLOPs: flops must come out positive."""
    from scaling.fit.inputs import from_csv

    csv = tmp_path / "ints.csv"
    pd.DataFrame({"N": [1_000_000_000, 2_000_000_000], "D": [100_000_000_000, 50_000_000_000],
                  "loss": [2.5, 2.4]}).to_csv(csv, index=False)
    runs = from_csv(csv, {"N": "params", "D": "tokens"})
    assert list(runs.df["flops"]) == [6e20, 6e20]


def test_runs_from_a_wandb_project(monkeypatch, tmp_path):
    """`--from wandb:ENTITY/PROJECT` reads the config and summary `scaling` logs to each W&B run (wandb.Api faked:
    no network here), keeps to the named sweep (its W&B group), skips fit runs, and refuses mixed data sets as the
    results store does."""
    import types

    from synthetic import write_sweep

    from scaling.fit.inputs import InputError, load_runs

    def as_wandb(rec, state="finished", job_type="train"):
        return types.SimpleNamespace(id=rec["id"], group=rec["sweep"], state=state, job_type=job_type,
                                     summary={"val/loss": rec["results"]["val_loss"]},
                                     config={**rec["config"], "derived": rec["derived"]})

    demo = write_sweep(tmp_path, "demo", [1e11, 3e11], [2e-3, 4e-3], seeds=(0,))
    other = write_sweep(tmp_path, "other", [1e11], [2e-3], seeds=(0,))
    for rec in other:
        rec["derived"]["data_fingerprint"] = "another-corpus"
    wb_runs = [as_wandb(r) for r in demo] + [as_wandb(r) for r in other]
    wb_runs += [as_wandb(demo[0], state="crashed"), types.SimpleNamespace(
        id="fit1", group="demo", state="finished", job_type="fit", summary={}, config={"sweep": "demo"})]

    class Api:
        def runs(self, project, filters=None):
            assert project == "me/scaling"
            group = (filters or {}).get("group")
            return [r for r in wb_runs if group is None or r.group == group]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    runs = load_runs("wandb:me/scaling", results_dir=None, sweep="demo")
    assert sorted(runs.df["loss"]) == sorted(r["results"]["val_loss"] for r in demo)
    assert runs.excluded == {"crashed": 1} and set(runs.df["group"]) == {"demo"}
    assert sorted(runs.df["budget"]) == [1e11, 1e11, 3e11, 3e11]
    with pytest.raises(InputError, match="different data sets"):
        load_runs("wandb:me/scaling", results_dir=None)  # both sweeps: two corpora
    assert len(load_runs("wandb:me/scaling", results_dir=None, allow_mixed_data=True).df) == 5

    class Broken:
        def runs(self, project, filters=None):
            raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Broken))
    with pytest.raises(InputError, match="cannot read W&B project"):
        load_runs("wandb:me/scaling", results_dir=None)


def test_fit_without_a_sweep_refuses_to_pool_several_and_picks_the_only_one(tmp_path):
    from synthetic import write_sweep

    write_sweep(tmp_path, "demo", [1e11, 3e11, 1e12], [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], seeds=(0,))
    only = run("--results-dir", str(tmp_path), "--bootstrap", "0", "--no-plots")
    assert only.returncode == 0, only.stderr
    assert (tmp_path / "demo" / "fit" / "fit.json").exists()
    write_sweep(tmp_path, "other", [1e11, 3e11, 1e12], [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], seeds=(0,))
    line = one_line_error(run("--results-dir", str(tmp_path), "--bootstrap", "0", "--no-plots"))
    assert "2 sweeps" in line and "demo, other" in line and "--all" in line
    pooled = run("--results-dir", str(tmp_path), "--bootstrap", "0", "--no-plots", "--all", "--json")
    assert pooled.returncode == 0, pooled.stderr
    assert json.loads(pooled.stdout)["n_runs"] == 30
    assert "not both" in one_line_error(run("demo", "--all", "--results-dir", str(tmp_path)))


def test_a_corrupt_record_is_named_and_the_fit_goes_on_without_it(tmp_path):
    """One garbage record among a sweep's 30 used to stop the whole fit (with a traceback that did not name it)."""
    from synthetic import write_sweep

    recs = write_sweep(tmp_path, "s", [1e11, 3e11, 1e12], [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2])
    bad = store.record_path(tmp_path, "s", recs[4]["id"])
    bad.write_bytes(b"\xff\xfe\x00 not a record")
    out = run("s", "--results-dir", str(tmp_path), "--json", "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["n_runs"] == 29 and report["excluded"]["runs"] == {"unreadable record": 1}
    assert any(str(bad) in note and "not UTF-8" in note for note in report["notes"])
    assert bad.read_bytes() == b"\xff\xfe\x00 not a record"


def test_runs_from_records_come_in_an_order_ids_cannot_change(tmp_path):
    """Run ids are hashes: a change of id scheme reordered the store's files, the bootstrap drew other resamples,
    and the demo's lr verdict moved across its threshold. Runs are put in sweep-coordinate order instead."""
    import random

    from synthetic import write_sweep

    from scaling.fit.inputs import from_store

    recs = write_sweep(tmp_path / "a", "s", [1e11, 3e11], [1e-3, 2e-3, 4e-3])
    random.Random(0).shuffle(recs)
    for i, rec in enumerate(recs):  # the same runs under other ids, so in another file order
        rec = {**rec, "id": f"{i:02d}{rec['id']}"[::-1]}
        store.write_record(store.record_path(tmp_path / "b", "s", rec["id"]), rec)
    cols = ["budget", "lr", "seed", "loss"]
    a, b = from_store(tmp_path / "a", "s").df[cols], from_store(tmp_path / "b", "s").df[cols]
    pd.testing.assert_frame_equal(a, b)


def test_another_teams_wandb_runs_are_read_with_a_map_like_a_csv(monkeypatch):
    """`--from wandb:PROJECT --map ...`: runs their own trainer logged (nested config, W&B's {"value": x} wrappers,
    summary metrics), read as a CSV's rows, jittered tokens grouped into bowls, unfinished runs counted."""
    import types

    from synthetic import A_LR, B_LR

    from scaling.fit.inputs import load_runs

    rng = np.random.default_rng(0)
    wb_runs = []
    for C in (1e17, 3e17, 1e18):
        N = 1e7 * (C / 1e17) ** 0.5
        for lr in A_LR * C**B_LR * 2.0 ** np.arange(-2, 3):
            D = C / (6 * N) * (1 + rng.uniform(-0.004, 0.004))
            loss = 2.0 + 20 * C**-0.08 + 0.12 * np.log(lr / (A_LR * C**B_LR)) ** 2
            wb_runs.append(types.SimpleNamespace(
                id=f"r{len(wb_runs)}", group="ladder", state="finished", job_type=None,
                config={"model": {"value": {"n_params": N}}, "optim": {"value": {"peak_lr": lr}}},
                summary={"tokens_seen": D, "eval/loss": loss, "_step": 100}))
    wb_runs.append(types.SimpleNamespace(id="x", group="ladder", state="crashed", job_type=None, config={},
                                         summary={}))

    class Api:
        def runs(self, project, filters=None):
            return wb_runs

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    runs = load_runs("wandb:them/ladder", results_dir=None,
                     mapping="params=model.n_params,lr=optim.peak_lr,tokens=tokens_seen,loss=eval/loss")
    assert len(runs.df) == 15 and runs.excluded == {"W&B crashed": 1}
    assert runs.df.groupby(["params", "tokens"]).ngroups == 3  # one bowl per budget despite the jitter
    assert any(n.startswith("runs grouped into 3 budget(s)") for n in runs.notes)



def test_a_long_fit_names_its_stages_on_stderr(tmp_path, monkeypatch):
    from synthetic import write_sweep

    from scaling import cli

    write_sweep(tmp_path, "s", (1e11, 3e11, 1e12), (1e-3, 2e-3, 4e-3, 8e-3), seeds=(0,))
    quick = scaling("fit", "s", "--results-dir", tmp_path, "--no-plots", "--bootstrap", "50")
    assert quick.returncode == 0 and "fit " not in quick.stderr  # nothing for a fit of a second
    monkeypatch.setattr(cli, "FIT_PROGRESS_AFTER_S", 0.0)  # as a fit of minutes shows them
    slow = scaling("fit", "s", "--results-dir", tmp_path, "--no-plots", "--bootstrap", "50")
    stages = [line for line in slow.stderr.splitlines() if line.startswith("fit ")]
    assert [s.split(": ", 1)[1].split(" ")[0] for s in stages][:3] == ["12", "lr", "loss"], slow.stderr
    assert stages[-1].endswith("writing fit.json")


def test_a_recommendation_for_a_cluster_shows_its_pipeline_layout(tmp_path):
    """--target-flops with --memory-per-gpu and --gpus: the recommended run laid out on that cluster (issue 32)."""
    from tests.synthetic import write_sweep

    write_sweep(tmp_path, "s", (1e11, 3e11, 1e12), (1e-3, 4e-3, 1.6e-2), seeds=(0,))
    out = run("s", "--results-dir", str(tmp_path), "--target-flops", "1e15", "--memory-per-gpu", "80", "--gpus",
              "8", "--bootstrap", "50")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "pipeline:" in text and "--pipeline-model-parallel-layout" in text
    assert "scaling layout --overrides-file" in text
