"""MoE efficiency leverage (ARCHITECTURE section 3).

EL of an MoE configuration at a budget C is C_dense / C_moe for the same loss, each read off its family's fitted
loss-compute curve L(C) = k_X * C^-s_X (Ling fits this form, without an irreducible term). EL = 1 for A = 1.

Ling's joint law (arXiv 2507.17702, Eq. 13, Table 2):
    EL(A, G, C) = Ahat^(alpha + gamma (log G)^2 + beta log G),   alpha = a + d log C,
    1/Ahat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max        (Clark et al.'s saturating transform).
The paper does not state the log bases; log10 for C with log2 for G is the only reading that reproduces its
claims (EL about 7.2 at A = 3.1%, G = 12, C = 1e22; best G about 11), so the bases are settings here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from scaling.fit.law import FitError, LawFit, ling_joint, saturating_activation
from scaling.fit.powerlaw import fit_power_law, r_squared
from scaling.fit.uncertainty import MIN_RESAMPLES, percentile_interval, stream, t_draws, undetermined


@dataclass(frozen=True)
class LingELCoefficients:
    a: float = 1.23
    d: float = -0.0761
    gamma: float = 0.0167
    beta: float = -0.117
    A_start: float = 0.0163
    A_max: float = 5.28e16
    log_base_C: float = 10.0
    log_base_G: float = 2.0


LING_PUBLISHED = LingELCoefficients()


def ling_el(A, G, C, k: LingELCoefficients = LING_PUBLISHED):
    """Ling's joint efficiency-leverage law EL(A, G, C) with coefficients k (the form lives in law.py)."""
    params = {f: getattr(k, f) for f in ("a", "d", "gamma", "beta", "A_start", "A_max")}
    return ling_joint(params, {"A": A, "G": G, "C": C}, ("A", "G", "C"),
                      {"log_base_C": k.log_base_C, "log_base_G": k.log_base_G})


def best_granularity(k: LingELCoefficients = LING_PUBLISHED) -> float:
    """The G that maximises EL (for Ahat < 1, the minimum of gamma (log G)^2 + beta log G): G = base^(-beta/2gamma)."""
    if k.gamma <= 0:
        raise FitError("EL has no interior optimum in G (gamma <= 0)")
    return k.log_base_G ** (-k.beta / (2 * k.gamma))


def peak_granularity(law: LawFit) -> float:
    """The G at which a fitted leverage law peaks: EL(G) = exp(c0 + c1 ln G + c2 (ln G)^2) at exp(-c1 / 2 c2), Ling's
    joint law at `best_granularity`."""
    if law.kind == "ling_joint":
        return best_granularity(coefficients_from_fit(law))
    if law.kind == "el_granularity" and law.params.get("c2", 0) < 0:
        return float(np.exp(-law.params["c1"] / (2 * law.params["c2"])))
    raise FitError(f"{law.name} has no peak in G")


# ---- leverage from runs ------------------------------------------------------------------------------------------
DENSE = "dense"


def _setting_means(g: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> tuple[float, np.ndarray | None]:
    """Best seed-mean loss over the (lr, batch) settings of one family at one budget, with resamples of the seeds
    (None when no setting has two seeds)."""
    cells = [c["loss"].to_numpy(float) for _, c in g.groupby(["lr", "batch_tokens"])]
    value = min(float(c.mean()) for c in cells)
    if n_boot <= 0 or max(len(c) for c in cells) < 2:
        return value, None
    reps = np.min([c[rng.integers(0, len(c), (n_boot, len(c)))].mean(axis=1) for c in cells], axis=0)
    return value, reps


def family_losses(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                  optima: dict | None = None) -> tuple[pd.DataFrame, dict, str]:
    """Each family's loss per budget, with run-level resamples: (table, {family: (n budgets, R) array}, how).

    how = 'tuned' when every family has an lr grid (>= 3 learning rates) at every budget: each family at its own
    tuned lr (its bowl's minimum; `optima`: the families' `optima.lr_grid_optima`, computed here when not given);
    otherwise 'matched': only the (lr, batch) settings every family ran, each family's best seed-mean loss among
    them (a family swept over a grid must not be compared, by its best cell, with one run once per budget)."""
    from scaling.fit.optima import lr_grid_optima

    has_grid = {"lr", "batch_tokens"} <= set(df.columns) and df[["lr", "batch_tokens"]].notna().all().all()
    optima = lr_grid_optima(df, n_boot, seed) if optima is None and has_grid else (optima or {})
    rows, reps = [], {}
    if has_grid and all(str(f) in optima for f in df["family"].unique()):
        for family in sorted(optima):
            best, rep = optima[family].per_budget()
            rows.append(best.assign(family=family))
            if rep is not None:
                reps[family] = rep
        return pd.concat(rows, ignore_index=True), reps, "tuned"
    sub = matched_hyperparameters(df) if has_grid else df
    for family, g in sub.groupby("family"):
        fam_reps = []
        rng = np.random.default_rng(stream(seed, "settings", family))
        for budget, gb in g.groupby("budget"):
            if has_grid:
                value, r = _setting_means(gb, rng, n_boot)
            else:
                value, r = float(gb["loss"].min()), None
            rows.append({"family": family, "budget": budget, "C": float(gb["flops"].median()), "loss": value,
                         "n_runs": len(gb)})
            fam_reps.append(r)
        if all(r is not None for r in fam_reps):
            reps[str(family)] = np.array(fam_reps)
    return pd.DataFrame(rows), reps, "matched"


def family_curves(losses: pd.DataFrame, replicates: dict | None = None, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, LawFit]:
    """Per family: L(C) = a * C^b (b < 0; Ling's form, no floor) through its loss per budget, refitted per
    run-level resample when there are resamples (Student-t otherwise). Families with < 3 budgets are left out."""
    fits = {}
    for family, g in losses.groupby("family"):
        if g["C"].nunique() < 3:
            continue
        rep = (replicates or {}).get(str(family))
        fits[str(family)] = fit_power_law(f"loss_{family}", {"C": g["C"].to_numpy(float)}, g["loss"].to_numpy(float),
                                          n_boot=n_boot, seed=stream(seed, "curve", family), replicates=rep)
    return fits


def _paired(f: LawFit, d: LawFit) -> tuple[dict, dict] | None:
    n = min(len(f.samples.get("a", [])), len(d.samples.get("a", [])))
    if not n:
        return None
    return {k: np.asarray(v)[:n] for k, v in f.samples.items()}, {k: np.asarray(v)[:n] for k, v in d.samples.items()}


def efficiency_leverage(curves: dict[str, LawFit], family: str, C: float, dense: str = DENSE,
                        level: float = 0.95) -> tuple[float, list[float] | None]:
    """EL of `family` at compute C: dense compute for the loss the family reaches at C, over C; and its interval
    over the two curves' resamples."""
    if dense not in curves:
        raise FitError("efficiency leverage needs a dense baseline family with runs at >= 3 budgets")
    f, d = curves[family], curves[dense]
    value = float(d.inverse(f.value(C=C)) / C)
    pairs = _paired(f, d)
    if pairs is None:
        return value, None
    sf, sd = pairs
    el = d.inverse(f.evaluate(sf, C=C), params=sd) / C
    el = el[np.isfinite(el) & (el > 0)]
    return value, (percentile_interval(el, level) if len(el) else None)


def matched_hyperparameters(df: pd.DataFrame) -> pd.DataFrame:
    """Only the runs at (lr, batch) settings that every family has, when there are such settings."""
    if not {"lr", "batch_tokens"} <= set(df.columns) or df[["lr", "batch_tokens"]].isna().any().any():
        return df
    settings = [set(zip(g["lr"], g["batch_tokens"], strict=True)) for _, g in df.groupby("family")]
    common = set.intersection(*settings)
    if not common:
        return df
    keep = [(lr, b) in common for lr, b in zip(df["lr"], df["batch_tokens"], strict=True)]
    return df[keep]


def leverage_table(df: pd.DataFrame, dense: str = DENSE, n_boot: int = 1000, seed: int = 0,
                   curves: dict[str, LawFit] | None = None, losses: pd.DataFrame | None = None,
                   replicates: dict | None = None) -> pd.DataFrame:
    """EL of every MoE family at each budget it was run at, with its 95% interval; the loss gap to the dense
    baseline at that budget (dense - MoE, measured, no curve involved) with its run-level interval; and what the
    intervals allow one to say (`resolved`)."""
    if curves is None or losses is None:
        losses, replicates, _ = family_losses(df, n_boot=n_boot, seed=seed)
        curves = family_curves(losses, replicates, n_boot=n_boot, seed=seed)
    reps_at = {}
    for family, g in losses.groupby("family"):
        rep = (replicates or {}).get(str(family))
        if rep is not None:
            reps_at[str(family)] = dict(zip(g["budget"], rep, strict=True))
    rows = []
    meta = df.groupby("family")[["activation_ratio", "granularity"]].first()
    dense_loss = losses[losses["family"] == dense].set_index("budget")["loss"]
    for family, g in losses.groupby("family"):
        if str(family) == dense or str(family) not in curves:
            continue
        for _, r in g.sort_values("budget").iterrows():
            el, interval = efficiency_leverage(curves, str(family), float(r["C"]), dense)
            gap_iv = None
            mine, theirs = reps_at.get(str(family), {}), reps_at.get(dense, {})
            if r["budget"] in mine and r["budget"] in theirs:
                n = min(len(mine[r["budget"]]), len(theirs[r["budget"]]))
                diff = theirs[r["budget"]][:n] - mine[r["budget"]][:n]
                diff = diff[np.isfinite(diff)]
                gap_iv = percentile_interval(diff) if len(diff) >= MIN_RESAMPLES else None
            gap = float(dense_loss.get(r["budget"], np.nan) - r["loss"])
            rows.append({"family": family, "activation_ratio": float(meta.loc[family, "activation_ratio"]),
                         "granularity": float(meta.loc[family, "granularity"]), "budget": float(r["budget"]),
                         "C": float(r["C"]), "el": el, "el_lo": interval[0] if interval else np.nan,
                         "el_hi": interval[1] if interval else np.nan, "loss_gap": gap,
                         "loss_gap_lo": gap_iv[0] if gap_iv else np.nan,
                         "loss_gap_hi": gap_iv[1] if gap_iv else np.nan,
                         "resolved": resolution(interval, gap_iv)})
    return pd.DataFrame(rows)


def resolution(interval: list[float] | None, gap: list[float] | None = None) -> str:
    """What the EL interval (and the measured loss gap's) let one say: MoE ahead, dense ahead, or not resolved."""
    parts = []
    if interval is None:
        parts.append("EL: no interval")
    elif interval[0] > 1:
        parts.append("EL > 1 (MoE ahead)")
    elif interval[1] < 1:
        parts.append("EL < 1 (dense ahead)")
    else:
        parts.append(f"EL = 1 not excluded (resolves only EL outside [{interval[0]:.2g}, {interval[1]:.2g}])")
    if gap is not None:
        if gap[0] > 0:
            parts.append("MoE's loss lower at this budget")
        elif gap[1] < 0:
            parts.append("dense loss lower at this budget")
        else:
            parts.append(f"no loss gap resolved (95% within [{gap[0]:+.3f}, {gap[1]:+.3f}] nats)")
    return "; ".join(parts)


def _t_samples(theta: np.ndarray, residual_fn, dof: int, seed: int, names: list[str],
               n: int = 2000) -> tuple[np.ndarray | None, list[str]]:
    """Student-t draws around a nonlinear least-squares estimate (numerical Jacobian of the residuals), and the
    parameters the data cannot determine (then no draws: a pseudo-inverse would give them a point interval)."""
    r0 = residual_fn(theta)
    eps = 1e-6 * np.maximum(1.0, np.abs(theta))
    J = np.column_stack([(residual_fn(theta + e) - r0) / h for e, h in zip(np.diag(eps), eps, strict=True)])
    blind = undetermined(J, names)
    if dof < 1 or blind:
        return None, blind
    cov = (r0 @ r0 / dof) * np.linalg.pinv(J.T @ J)
    return t_draws(theta, cov, dof, n, np.random.default_rng(seed)), blind


def fit_el_vs_activation(table: pd.DataFrame, seed: int = 0) -> LawFit:
    """EL = Ahat^alpha with Clark's transform (A_start, A_max fitted), least squares in log EL, Student-t interval
    (n - 3 dof)."""
    A = table["activation_ratio"].to_numpy(float)
    el = table["el"].to_numpy(float)
    if len(np.unique(A)) < 5 or np.any(el <= 0):
        raise FitError(f"leverage: {len(np.unique(A))} activation ratio(s) with a positive EL; the saturating law "
                       f"has 3 parameters, need at least 5")
    logEL = np.log(el)

    def residuals(t):
        alpha, log_start, log_max = t
        return alpha * np.log(saturating_activation(A, math.exp(log_start), math.exp(log_max))) - logEL

    def obj(t):
        return 1e9 if t[1] >= t[2] else float(np.sum(residuals(t) ** 2))

    starts = [(-0.5, math.log(0.01), math.log(1e3)), (-1.0, math.log(0.05), math.log(10.0)),
              (-0.3, math.log(0.001), math.log(1e6))]
    best = min((minimize(obj, s, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-12})
                for s in starts), key=lambda r: r.fun)
    theta = best.x
    draws, blind = _t_samples(theta, residuals, len(A) - 3, seed, ["alpha", "A_start", "A_max"])
    samples = {} if draws is None else {"alpha": draws[:, 0], "A_start": np.exp(draws[:, 1]),
                                        "A_max": np.exp(draws[:, 2])}
    params = {"alpha": float(theta[0]), "A_start": float(math.exp(theta[1])), "A_max": float(math.exp(theta[2]))}
    return LawFit("leverage", "el_activation", ("A",), params,
                  {k: percentile_interval(v) for k, v in samples.items()}, r_squared(logEL, residuals(theta) + logEL),
                  len(A), samples=samples, method=f"Student-t (linearised), {len(A) - 3} dof" if samples else "none",
                  fitted_range={"A": [float(A.min()), float(A.max())]},
                  diagnostics={"dof": len(A) - 3, "undetermined": blind},
                  notes=[f"the data cannot determine {', '.join(blind)}: no interval"] if blind else [])


def el_vs_compute(curves: dict[str, LawFit], family: str, dense: str = DENSE) -> LawFit:
    """EL(C) of a family, derived (not fitted) from the two loss-compute curves L = k C^s:
    EL = C_dense(L_family(C)) / C = (k_f / k_d)^(1/s_d) * C^(s_f / s_d - 1); resamples from the curves' own."""
    if dense not in curves or family not in curves:
        raise FitError(f"leverage_compute: needs loss-compute curves of {family!r} and the dense baseline")
    f, d = curves[family], curves[dense]

    def derive(pf, pd_):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # extreme resamples: inf, kept as such
            return (pf["a"] / pd_["a"]) ** (1 / pd_["b"]), pf["b"] / pd_["b"] - 1

    a, b = derive(f.params, d.params)
    samples, interval = {}, {}
    pairs = _paired(f, d)
    if pairs is not None:
        sa, sb = derive(*pairs)
        samples = {"a": sa, "b": sb}
        interval = {"a": percentile_interval(sa), "b": percentile_interval(sb)}
    lo = max(f.fitted_range["C"][0], d.fitted_range["C"][0])
    hi = min(f.fitted_range["C"][1], d.fitted_range["C"][1])
    return LawFit("leverage_compute", "power", ("C",), {"a": float(a), "b": float(b)}, interval, None,
                  min(f.n_points, d.n_points), notes=[f"derived from the curves of {family} and {dense}"],
                  samples=samples, method=f"from the two curves' resamples ({f.method})" if samples else "none",
                  fitted_range={"C": [lo, hi]}, diagnostics={"dof": min(f.n_points, d.n_points) - 2})


def fit_el_vs_granularity(table: pd.DataFrame, seed: int = 0) -> tuple[LawFit, float]:
    """ln EL = c0 + c1 ln G + c2 (ln G)^2 (+ c3 ln C when several budgets), least squares (Student-t interval);
    the best G is where the parabola peaks, G* = exp(-c1 / (2 c2)) (needs c2 < 0: a U-shaped loss, as Ling finds)."""
    G = table["granularity"].to_numpy(float)
    if len(np.unique(G)) < 3:
        raise FitError(f"leverage_granularity: {len(np.unique(G))} granularities, need at least 3")
    g, y = np.log(G), np.log(table["el"].to_numpy(float))
    cols = [np.ones_like(g), g, g * g]
    names = ["c0", "c1", "c2"]
    if table["C"].nunique() > 1:
        cols.append(np.log(table["C"].to_numpy(float)))
        names.append("c3")
    X = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    params = dict(zip(names, map(float, coef), strict=True))
    if params["c2"] >= 0:
        raise FitError("leverage_granularity: EL does not peak in G over the swept range (no interior optimum)")
    dof = len(y) - len(names)
    samples = {}
    if dof >= 1:
        resid = y - X @ coef
        draws = t_draws(coef, (resid @ resid / dof) * np.linalg.pinv(X.T @ X), dof, 2000,
                        np.random.default_rng(seed))
        samples = {n: draws[:, j] for j, n in enumerate(names)}
    ranges = {"G": [float(G.min()), float(G.max())]}
    if "c3" in params:
        ranges["C"] = [float(table["C"].min()), float(table["C"].max())]
    fit = LawFit("leverage_granularity", "el_granularity", ("G", "C") if "c3" in params else ("G",), params,
                 {k: percentile_interval(v) for k, v in samples.items()}, r_squared(y, X @ coef), len(y),
                 samples=samples, method=f"Student-t, {dof} dof" if samples else "none", fitted_range=ranges,
                 diagnostics={"dof": dof})
    return fit, peak_granularity(fit)


def _ling_exponent(theta, A, logG, logC):
    a, d, gamma, beta, log_start, log_max = theta
    ahat = saturating_activation(A, math.exp(log_start), math.exp(log_max))
    return (a + d * logC + gamma * logG**2 + beta * logG) * np.log(ahat)


def fit_ling_joint(table: pd.DataFrame, log_base_C: float = 10.0, log_base_G: float = 2.0,
                   max_el: float = 6.0, delta: float = 1e-3) -> LawFit:
    """Ling's joint law EL(A, G, C) by Huber loss (summed) on ln EL, BFGS from several starts, on the points with
    EL < max_el (Ling holds larger EL out). Needs >= 3 values each of A and G and >= 2 budgets."""
    from scipy.special import huber

    t = table[table["el"] < max_el]
    A = t["activation_ratio"].to_numpy(float)
    logG = np.log(t["granularity"].to_numpy(float)) / math.log(log_base_G)
    logC = np.log(t["C"].to_numpy(float)) / math.log(log_base_C)
    if len(t) < 7 or len(np.unique(A)) < 3 or len(np.unique(logG)) < 3 or len(np.unique(logC)) < 2:
        raise FitError(f"ling_joint: {len(t)} points with {len(np.unique(A))} activation ratios, "
                       f"{len(np.unique(logG))} granularities and {len(np.unique(logC))} budgets (EL < {max_el:g}); "
                       f"need >= 7 points, 3 A, 3 G and 2 budgets")
    y = np.log(t["el"].to_numpy(float))

    def obj(theta):
        if theta[4] >= theta[5]:
            return 1e9
        return float(np.sum(huber(delta, _ling_exponent(theta, A, logG, logC) - y)))

    starts = [(1.2, -0.07, 0.02, -0.1, math.log(0.016), math.log(1e3)),
              (0.5, 0.0, 0.01, -0.05, math.log(0.05), math.log(10.0)),
              (1.0, -0.05, 0.0, 0.0, math.log(0.005), math.log(1e6))]
    best = min((minimize(obj, s, method="Nelder-Mead", options={"maxiter": 20000, "maxfev": 20000, "xatol": 1e-9,
                                                                 "fatol": 1e-14}) for s in starts),
               key=lambda r: r.fun)
    best = minimize(obj, best.x, method="BFGS")  # polish
    a, d, gamma, beta, ls, lm = best.x
    params = {"a": float(a), "d": float(d), "gamma": float(gamma), "beta": float(beta),
              "A_start": float(math.exp(ls)), "A_max": float(math.exp(lm))}
    pred = _ling_exponent(best.x, A, logG, logC)
    return LawFit("ling_joint", "ling_joint", ("A", "G", "C"), params, {}, r_squared(y, pred), len(y),
                  notes=["no interval (a 6-parameter Huber fit)"], method="none",
                  constants={"log_base_C": log_base_C, "log_base_G": log_base_G},
                  fitted_range={"A": [float(A.min()), float(A.max())], "C": [float(t["C"].min()), float(t["C"].max())]},
                  diagnostics={"dof": len(y) - 6})


def coefficients_from_fit(fit: LawFit) -> LingELCoefficients:
    return LingELCoefficients(**fit.params, log_base_C=fit.constants.get("log_base_C", 10.0),
                              log_base_G=fit.constants.get("log_base_G", 2.0))
