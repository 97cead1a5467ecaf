"""The fitter on published data nobody here made (analysis/reference, with its sources in its README)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.fit.loss_laws import fit_chinchilla, fit_isoflop_laws

REFERENCE = Path(__file__).resolve().parents[1] / "analysis" / "reference"


def scaling_fit_json(*args, tmp_path):
    out = subprocess.run([sys.executable, "-m", "scaling.cli", "fit", *args, "--json", "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_steplaw_dense_file_with_their_near_optimal_protocol(tmp_path):
    """Step-Law's protocol on their released dense file: lr = 77.7 N^-0.766 D^0.197, B = 0.209 D^0.613 (file-level;
    the paper's 1.79 N^-0.713 D^0.307 and 0.58 D^0.571 come from more runs than were released)."""
    report = scaling_fit_json("--from", str(REFERENCE / "steplaw" / "dense_lr_bs_loss.csv"),
                              "--map", "params=N,tokens=D,loss=smooth loss,batch=bs", "--seq-len", "2048",
                              "--optimum", "near-optimal", "--bootstrap", "200", tmp_path=tmp_path)
    lr, bs = report["laws"]["lr_opt_nd"], report["laws"]["batch_opt_d"]
    assert lr["n_points"] == 129
    assert lr["params"]["b"] == pytest.approx(-0.766, abs=0.02)
    assert lr["params"]["c"] == pytest.approx(0.197, abs=0.02)
    assert bs["params"]["b"] == pytest.approx(0.613, abs=0.02)
    assert lr["params"]["a"] == pytest.approx(77.7, rel=0.05) and bs["params"]["a"] == pytest.approx(0.209, rel=0.05)
    assert lr["interval"]["b"][0] < lr["params"]["b"] < lr["interval"]["b"][1]


def test_epoch_chinchilla_approach_3():
    """Epoch AI's refit: E = 1.817, alpha = 0.348, beta = 0.366 (Huber 1e-3 on log loss, summed, grid of starts),
    on the runs minus the five with the fewest tokens per parameter, as Besiroglu et al. do."""
    df = pd.read_csv(REFERENCE / "chinchilla" / "svg_extracted_data.csv")
    N = df["Model Size"].to_numpy(float)
    D = df["Training FLOP"].to_numpy(float) / (6 * N)
    keep = np.argsort(D / N)[5:]
    fit = fit_chinchilla(N[keep], D[keep], df["loss"].to_numpy(float)[keep])
    assert fit.params["E"] == pytest.approx(1.817, rel=0.02)
    assert fit.params["alpha"] == pytest.approx(0.348, rel=0.02)
    assert fit.params["beta"] == pytest.approx(0.366, rel=0.02)


def test_isoflop_approach_2_on_epoch_chinchilla_budgets():
    df = pd.read_csv(REFERENCE / "isoflops" / "epochai_chinchilla.csv")
    n_fit, d_fit, optima = fit_isoflop_laws(df[["budget", "params", "tokens", "loss"]], n_boot=200)
    assert len(optima) >= 5
    assert 0.4 < n_fit.params["b"] < 0.6  # Chinchilla: N_opt ~ C^0.5
    assert n_fit.params["b"] + d_fit.params["b"] == pytest.approx(1.0, abs=0.02)  # C ~ N D


def test_epoch_chinchilla_envelope_below_its_largest_budget_predicts_the_largest():
    """The wind tunnel on published data: each budget's IsoFLOP minimum (Chinchilla's runs as Epoch AI extracted
    them, 6e18-1e21 FLOPs, 8 budgets), E + A C^-alpha through them, predicted at the held-out 3e21 (3x): 2.204
    against the 2.203 measured there, inside the 95% interval [2.13, 2.29] (judged weak: +-4% is wider than the 2%
    a reliable loss law needs)."""
    from scaling.fit.loss_laws import fit_loss_vs_compute, isoflop_optima
    from scaling.fit.verdict import judge

    df = pd.read_csv(REFERENCE / "isoflops" / "epochai_chinchilla.csv")
    envelope = isoflop_optima(df[["budget", "params", "tokens", "loss"]]).sort_values("budget")
    C, L = envelope["budget"].to_numpy(float), envelope["loss"].to_numpy(float)
    assert len(C) == 9 and C[-1] == 3e21
    law = fit_loss_vs_compute(C[:-1], L[:-1], seed=0)
    p = law.predict(C=C[-1])
    assert abs(p.value - L[-1]) < 0.01 and p.interval[0] <= L[-1] <= p.interval[1]
    verdict = judge(law, C[-1])
    assert verdict["verdict"] == "weak" and "+-4.0%" in verdict["reasons"][0]


def test_steplaw_moe_groups_are_keyed_by_configuration_not_by_size(tmp_path):
    """Step-Law's MoE file holds configurations that share N: grouped by (N, D) alone they pooled into 59
    near-optimal runs; keyed by their structure (experts, top-k, activation ratio) there are 84."""
    base = "params=N,tokens=D,loss=smooth loss,batch=bs"
    args = ("--from", str(REFERENCE / "steplaw" / "moe_lr_bs_loss.csv"), "--seq-len", "2048", "--optimum",
            "near-optimal", "--bootstrap", "20", "--no-plots")
    by_size = scaling_fit_json(*args, "--map", base, tmp_path=tmp_path / "a")
    by_config = scaling_fit_json(*args, "--map", base + ",experts=nume,top_k=topk,activation_ratio=Na/N",
                                 tmp_path=tmp_path / "b")
    assert by_size["laws"]["lr_opt"]["n_points"] == 59 and by_config["laws"]["lr_opt"]["n_points"] == 84
    # every run at N = 2.15e9 (+-0.13%): no exponent of N can be read from them
    assert "N varies by only x1.003" in by_config["excluded"]["laws"]["lr_opt_nd"]


def _clark_s_base():
    """The last step of Clark et al.'s S-Base runs (k = 1, a routed layer every other block) and their dense runs
    (flop_increase 1, seed 42) as E = 1."""
    df = pd.read_csv(REFERENCE / "routing" / "curves.csv.gz")
    last = df.loc[df.groupby("hyper_id")["step"].idxmax()]
    s_base = (last["router_type"] == "S-Base") & (last["k"] == 1) & (last["routing_frequency"] == 0.5)
    dense = (last["router_type"] == "Dense") & (last["flop_increase"] == 1) & (last["seed"] == 42)
    return last[s_base | dense]


def test_clark_unified_routing_law_on_their_released_runs():
    """S-Base: a = -0.082, c = 0.009, d = 1.104 (Table 3), reproduced within 0.01 from the released runs, every
    published coefficient inside its 95% interval; EL(N = 130M, E = 64) ~ 4.4 by the published law."""
    from scaling.fit.law import LawFit
    from scaling.fit.routing import CLARK_S_BASE, fit_routing_law, routing_leverage

    runs = _clark_s_base()
    assert len(runs) == 58
    law = fit_routing_law(runs["dense_parameter_count"], runs["num_experts"], runs["loss_validation"])
    for k in ("a", "c", "d"):
        assert law.params[k] == pytest.approx(CLARK_S_BASE[k], abs=0.01), k
    for k, v in CLARK_S_BASE.items():
        assert law.interval[k][0] <= v <= law.interval[k][1], k
    published, _ = routing_leverage(LawFit("clark", "routing", ("N", "E"), CLARK_S_BASE), 1.3e8, 64)
    el, (lo, hi) = routing_leverage(law, 1.3e8, 64)
    assert published == pytest.approx(4.4, abs=0.05) and lo <= published <= hi and 1 < lo < el < hi


def test_steplaw_lr_lines_are_read_near_their_optimum_not_by_their_far_field():
    """Each of Step-Law's 17 dense (N, D) groups at its best batch size: an lr line of 12 learning rates. Read with
    the asymmetric bowl on the 5 nearest its best, the vertex lands near their own near-optimal lr (the mean ln lr of
    runs within 0.25% of the best): median x1.13, at worst x1.69, with a median curvature ratio of 3 (steeper above
    lr*). Fitted to all 12 (the far field included), the same bowl pinned its ratio at 30 and missed by a median
    x1.83 (x4.3 at worst)."""
    from scaling.fit.optima import group_optima

    df = pd.read_csv(REFERENCE / "steplaw" / "dense_lr_bs_loss.csv")
    errors, ratios = [], []
    for (N, D), g in df.groupby(["N", "D"]):
        line = g[g["bs"] == g.loc[g["smooth loss"].idxmin(), "bs"]]
        line = pd.DataFrame({"params": N, "tokens": D, "lr": line["lr"], "batch_tokens": 1.0,
                             "loss": line["smooth loss"]})
        near = g[g["smooth loss"] <= g["smooth loss"].min() * 1.0025]
        opt = group_optima(line, ["params", "tokens"], n_boot=0).groups.iloc[0]
        errors.append(abs(np.log(opt["lr"]) - np.log(near["lr"]).mean()))
        ratios.append(opt.get("curvature_ratio", np.nan))
    assert len(errors) == 17 and np.median(errors) < np.log(1.2) and max(errors) < np.log(2.0), np.exp(errors)
    assert np.nanmedian(ratios) > 1  # their bowls climb faster above lr* than below it
