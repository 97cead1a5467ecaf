"""The wind tunnel end to end on CPU: a ladder sweep built from a fit's laws, then predicted vs achieved loss."""

import json
import subprocess
import sys

import pytest

from scaling.advise.recommend import missing_settings
from scaling.compose import compose
from scaling.flops import count
from tests.inprocess import scaling

BASE = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "wandb.mode=disabled"]
LADDER = [{"d_model": 32, "n_layers": 1}, {"d_model": 32, "n_layers": 2}, {"d_model": 48, "n_layers": 2}]


@pytest.mark.slow
def test_ladder_sweep_and_wind_tunnel_check(tmp_path):
    n_small = count(compose([*BASE, "model.n_layers=1"]).model).params_active_non_embedding
    laws = {"laws": {  # N_opt = a C^0.5 puts the smallest rung at 2e9 FLOPs
        "n_opt": {"formula": "a * C^b", "params": {"a": n_small / 2e9**0.5, "b": 0.5}},
        "lr_opt": {"formula": "a * C^b", "params": {"a": 0.3, "b": -0.125}},
        "loss_vs_compute": {"formula": "E + A * C^-alpha", "params": {"E": 1.0, "A": 2000.0, "alpha": 0.3}},
    }}
    (tmp_path / "fit.json").write_text(json.dumps(laws))
    (tmp_path / "wind.yaml").write_text(
        "defaults:\n  - sweep_schema\n  - _self_\nname: wind\n"  # the older form, schema named, still works
        f"laws: {tmp_path / 'fit.json'}\nbase: {json.dumps(BASE)}\nladder: {json.dumps(LADDER)}\n"
        "lr: {law: '${laws}'}\n")
    cli = [sys.executable, "-m", "scaling.cli"]
    out = subprocess.run([*cli, "sweep", str(tmp_path / "wind.yaml"), "--results-dir", str(tmp_path / "r"),
                          "--no-probe", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    check = scaling("verify", "wind", "--results-dir", tmp_path / "r", "--json")  # in this process
    assert check.returncode == 0, check.stderr
    rows = json.loads(check.stdout)
    assert len(rows) == 3
    budgets = [r["budget"] for r in rows]
    assert budgets[0] == pytest.approx(2e9, rel=0.01) and budgets == sorted(budgets)  # bigger rungs, more compute
    for r in rows:
        assert r["loss_predicted"] == pytest.approx(1.0 + 2000.0 * r["C"] ** -0.3)
        assert r["loss_error"] == pytest.approx(r["loss_measured"] - r["loss_predicted"])
        assert r["loss_held"] is None  # a hand-written law has no resamples: no interval to hold to
        assert r["lr_predicted"] == pytest.approx(0.3 * r["C"] ** -0.125)
    table = scaling("verify", "wind", "--results-dir", tmp_path / "r")
    assert table.returncode == 0 and "predictions checked by training" in table.stdout
    missing = scaling("verify", "nope", "--results-dir", tmp_path / "r")
    assert missing.returncode == 2 and "names no laws" in missing.stderr


def test_a_ladder_without_laws_is_refused():
    from scaling.config import ConfigError
    from scaling.sweep.plan import SweepConfig, plan_sweep

    with pytest.raises(ConfigError, match="ladder but no laws"):
        plan_sweep(SweepConfig(name="w", base=BASE, ladder=LADDER))


@pytest.mark.slow
def test_sweep_fit_recommend_and_verify_end_to_end(tmp_path):
    """The loop a user runs, from the CLI on a tiny model: an lr sweep at 3 budgets, `scaling fit` (laws with
    verdicts, a recommendation that trains the swept model, verify.yaml), the verification sweep, and the check."""
    cli = [sys.executable, "-m", "scaling.cli"]
    results = tmp_path / "r"

    def ok(*args, timeout=300):
        out = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    (tmp_path / "e2e.yaml").write_text(
        "name: e2e\n"
        f"base: {json.dumps(BASE)}\nbudgets: [2e9, 4e9, 8e9]\n"
        "lr: {values: [2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]}\n")
    ok("sweep", str(tmp_path / "e2e.yaml"), "--results-dir", str(results), "--no-probe", "--no-progress",
       "--workers", "2")
    fit = ok("fit", "e2e", "--results-dir", str(results), "--target-flops", "2.4e10", "--bootstrap", "200")
    out_dir = results / "e2e" / "fit"
    payload = json.loads((out_dir / "fit.json").read_text())
    assert payload["laws"]["lr_opt"]["verdict"]["verdict"] in ("reliable", "weak", "undetermined")
    assert len(payload["optima"]) == 3 and "samples" in payload["laws"]["lr_opt"]
    assert "verify the predictions by training there" in fit.stdout
    overrides = (out_dir / "recommended.overrides").read_text()
    assert "model.d_model=32" in overrides and "data.val_tokens=2048" in overrides  # the swept model, not defaults
    gaps = missing_settings(overrides.splitlines())  # an lr law too uncertain to give a value: the user's own
    assert gaps == ([] if "lr" in payload["recommendation"]["items"] else ["train.lr"])
    if gaps:
        refused = subprocess.run([*cli, "train", "--dry-run", "--overrides-file",
                                  str(out_dir / "recommended.overrides")], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "give train.lr=VALUE on the command line" in refused.stderr
    dry = ok("train", "--dry-run", "--overrides-file", str(out_dir / "recommended.overrides"),
             f"results_dir={tmp_path / 'rec'}", *[f"{k}=0.004" for k in gaps])
    tiny_M = count(compose(BASE).model).M
    assert f"{tiny_M:,.0f}" in dry.stdout and "2.4e+10" in dry.stdout  # the swept tiny model, at the target budget
    assert not (tmp_path / "rec").exists()
    ok("sweep", str(out_dir / "verify.yaml"), "--results-dir", str(results), "--no-probe", "--no-progress",
       "--workers", "2")
    check = json.loads(ok("verify", "e2e-verify", "--results-dir", str(results), "--json").stdout)
    [row] = check
    assert row["C"] == pytest.approx(2.4e10, rel=0.02) and row["n_runs"] == 3
    assert row["lr_predicted"] == pytest.approx(payload["laws"]["lr_opt"]["params"]["a"] * row["C"]
                                                ** payload["laws"]["lr_opt"]["params"]["b"], rel=1e-6)
    assert row["loss_measured"] > 0 and "loss_predicted" in row
    table = ok("verify", "e2e-verify", "--results-dir", str(results))
    assert "predictions checked by training" in table.stdout


def _law_file(path, laws: dict, convention: str | None = None):
    payload = {"laws": laws, **({"convention": convention} if convention else {})}
    path.write_text(json.dumps(payload))
    return path


def test_verify_combines_fits_and_reads_the_loss_as_its_law_was_fitted(tmp_path):
    """A wind tunnel's check: the loss law from the rungs' fit (its points were runs at an lr law's value), the lr
    law from another fit; the measured loss is then the mean of the runs at the predicted lr, not the bowl's
    minimum, and the figure shows both."""
    from synthetic import loss_at, write_sweep

    from scaling.advise.verify import check_predictions, verification_figure
    from scaling.fit.inputs import InputError
    from scaling.fit.report import LOSS_POINTS_AT_LR

    C = 3e12
    lr = 5.07 * C**-0.26
    root = tmp_path / "r"
    write_sweep(root, "check", budgets=(C,), lrs=(lr / 2, lr, lr * 2), seeds=(0, 1), noise=0.0)
    rungs = {"formula": "E + A * C^-alpha", "params": {"E": 1.0, "A": 80.0, "alpha": 0.15},
             "diagnostics": {"points": {"C": [1e11, 3e11, 1e12], "loss": [2.8, 2.6, 2.4],
                                        "read_as": LOSS_POINTS_AT_LR}}}
    first = _law_file(tmp_path / "rungs.json", {"loss_vs_compute": rungs})
    second = _law_file(tmp_path / "lr.json", {
        "lr_opt": {"formula": "a * C^b", "params": {"a": 5.07, "b": -0.26}},
        "loss_vs_compute": {"formula": "E + A * C^-alpha", "params": {"E": 2.0, "A": 1.0, "alpha": 0.1}}})
    row = check_predictions(root, "check", [first, second], n_boot=200).iloc[0]
    assert row["loss_predicted"] == pytest.approx(1.0 + 80.0 * row["C"] ** -0.15)  # the first file's loss law
    assert row["lr_predicted"] == pytest.approx(5.07 * row["C"] ** -0.26)  # the second's lr law
    assert row["loss_read_as"] == "mean of 2 run(s) at the predicted lr"
    assert row["loss_measured"] == pytest.approx(loss_at(C, lr), abs=1e-9)  # noise 0: the bowl's floor itself
    figures = verification_figure(root, "check", check_predictions(root, "check", [first, second], n_boot=200),
                                  [first, second])
    assert {f.name for f in figures} == {"verification.png", "verification.svg"}
    flipped = check_predictions(root, "check", [second, first], n_boot=200).iloc[0]
    assert flipped["loss_predicted"] == pytest.approx(2.0 + row["C"] ** -0.1)
    assert flipped["loss_read_as"] == "lr bowl minimum"  # that law's points say nothing of how they were read
    other = _law_file(tmp_path / "other.json", {"lr_opt": {"formula": "a * C^b", "params": {"a": 1, "b": -0.2}}},
                      convention="6N_total")
    with pytest.raises(InputError, match="count FLOPs differently"):
        check_predictions(root, "check", [first, other])
