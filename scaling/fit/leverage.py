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

from scaling.fit.powerlaw import FitError, LawFit, fit_power_law, percentile_interval, r_squared


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


def saturating_activation(A, A_start: float, A_max: float):
    """Clark et al.'s transform: 1/Ahat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max."""
    shift = 1.0 / (1.0 / A_start - 1.0 / A_max)
    return 1.0 / (1.0 / (np.asarray(A, float) + shift) + 1.0 / A_max)


def ling_el(A, G, C, k: LingELCoefficients = LING_PUBLISHED):
    """Ling's joint efficiency-leverage law EL(A, G, C)."""
    logG = np.log(np.asarray(G, float)) / math.log(k.log_base_G)
    logC = np.log(np.asarray(C, float)) / math.log(k.log_base_C)
    exponent = k.a + k.d * logC + k.gamma * logG**2 + k.beta * logG
    return saturating_activation(A, k.A_start, k.A_max) ** exponent


def best_granularity(k: LingELCoefficients = LING_PUBLISHED) -> float:
    """The G that maximises EL (for Ahat < 1, the minimum of gamma (log G)^2 + beta log G): G = base^(-beta/2gamma)."""
    if k.gamma <= 0:
        raise FitError("EL has no interior optimum in G (gamma <= 0)")
    return k.log_base_G ** (-k.beta / (2 * k.gamma))


# ---- leverage from runs ------------------------------------------------------------------------------------------
def family_curves(df: pd.DataFrame, n_boot: int = 200) -> dict[str, LawFit]:
    """Per family (a 'family' column: one MoE configuration, or 'dense'): L(C) = k * C^-s on its best loss per
    budget."""
    fits = {}
    for family, g in df.groupby("family"):
        best = g.groupby("budget")["loss"].min()
        if len(best) < 2:
            continue
        fit = fit_power_law(f"loss_{family}", {"C": best.index.to_numpy(float)}, best.to_numpy(float),
                            n_boot=n_boot)
        fits[str(family)] = fit
    return fits


def compute_for_loss(fit: LawFit, loss: float) -> float:
    """Inverse of L = a * C^b (b < 0): the compute at which the family reaches `loss`."""
    return (loss / fit.params["a"]) ** (1.0 / fit.params["b"])


def efficiency_leverage(curves: dict[str, LawFit], family: str, budget: float, dense: str = "dense") -> float:
    """EL of `family` at `budget`: dense compute for the loss the family reaches at that budget, over the budget."""
    if dense not in curves:
        raise FitError("efficiency leverage needs a dense baseline family with runs at >= 2 budgets")
    fit = curves[family]
    loss = fit.params["a"] * budget ** fit.params["b"]
    return compute_for_loss(curves[dense], loss) / budget


def matched_hyperparameters(df: pd.DataFrame) -> pd.DataFrame:
    """Only the runs at (lr, batch) settings that every family has, when there are such settings: a family swept
    over a whole grid must not be compared, by its best cell, with one run once per budget."""
    if not {"lr", "batch_tokens"} <= set(df.columns) or df[["lr", "batch_tokens"]].isna().any().any():
        return df
    settings = [set(zip(g["lr"], g["batch_tokens"], strict=True)) for _, g in df.groupby("family")]
    common = set.intersection(*settings)
    if not common:
        return df
    keep = [(lr, b) in common for lr, b in zip(df["lr"], df["batch_tokens"], strict=True)]
    return df[keep]


def leverage_table(df: pd.DataFrame, dense: str = "dense",
                   curves: dict[str, LawFit] | None = None) -> pd.DataFrame:
    """EL of every MoE family at each budget it was run at, with its activation ratio and granularity (runs at
    matched hyperparameters when the families share some). `curves`: the families' loss-compute curves, when
    already fitted on those runs."""
    df = matched_hyperparameters(df)
    curves = curves if curves is not None else family_curves(df)
    rows = []
    for family, g in df.groupby("family"):
        if str(family) == dense or str(family) not in curves:
            continue
        for budget in sorted(g["budget"].unique()):
            rows.append({"family": family, "activation_ratio": float(g["activation_ratio"].iloc[0]),
                         "granularity": float(g["granularity"].iloc[0]), "budget": float(budget),
                         "el": efficiency_leverage(curves, str(family), float(budget), dense)})
    return pd.DataFrame(rows)


def fit_el_vs_activation(table: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> LawFit:
    """EL = Ahat^alpha with Clark's transform (A_start, A_max fitted, A_max bounded above by 1e20), least squares
    in log EL."""
    A = table["activation_ratio"].to_numpy(float)
    el = table["el"].to_numpy(float)
    if len(np.unique(A)) < 5 or np.any(el <= 0):
        raise FitError(f"leverage: {len(np.unique(A))} activation ratio(s) with a positive EL; the saturating law "
                       f"has 3 parameters, need at least 5")
    logEL = np.log(el)

    def solve(a, y, starts):
        def obj(t):
            alpha, log_start, log_max = t
            if log_start >= log_max:
                return 1e9
            pred = alpha * np.log(saturating_activation(a, math.exp(log_start), math.exp(log_max)))
            return float(np.sum((pred - y) ** 2))

        best = min((minimize(obj, s, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-8,
                                                                     "fatol": 1e-12}) for s in starts),
                   key=lambda r: r.fun)
        return best.x

    starts = [(-0.5, math.log(0.01), math.log(1e3)), (-1.0, math.log(0.05), math.log(10.0)),
              (-0.3, math.log(0.001), math.log(1e6))]
    alpha, ls, lm = solve(A, logEL, starts)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):  # warm-started from the full fit
        idx = rng.integers(0, len(A), len(A))
        if len(np.unique(A[idx])) >= 4:
            boots.append(solve(A[idx], logEL[idx], [(alpha, ls, lm)]))
    boots = np.array(boots)
    pred = alpha * np.log(saturating_activation(A, math.exp(ls), math.exp(lm)))
    params = {"alpha": float(alpha), "A_start": float(math.exp(ls)), "A_max": float(math.exp(lm))}
    interval = {}
    if len(boots):
        interval = {"alpha": percentile_interval(boots[:, 0]), "A_start": percentile_interval(np.exp(boots[:, 1])),
                    "A_max": percentile_interval(np.exp(boots[:, 2]))}
    return LawFit("leverage", "Ahat^alpha, 1/Ahat = 1/(A + (1/A_start - 1/A_max)^-1) + 1/A_max", params, interval,
                  r_squared(logEL, pred), len(A))


def el_vs_compute(curves: dict[str, LawFit], family: str, dense: str = "dense") -> LawFit:
    """EL(C) of a family, derived (not fitted) from the two loss-compute curves L = k C^s:
    EL = C_dense(L_family(C)) / C = (k_f / k_d)^(1/s_d) * C^(s_f / s_d - 1); intervals from their bootstraps."""
    if dense not in curves or family not in curves:
        raise FitError(f"leverage_compute: needs loss-compute curves of {family!r} and the dense baseline")
    f, d = curves[family], curves[dense]

    def derive(pf, pd_):
        return (pf["a"] / pd_["a"]) ** (1 / pd_["b"]), pf["b"] / pd_["b"] - 1

    a, b = derive(f.params, d.params)
    interval = {}
    n = min(len(f.samples.get("a", [])), len(d.samples.get("a", [])))
    if n:
        sa, sb = derive({k: v[:n] for k, v in f.samples.items()}, {k: v[:n] for k, v in d.samples.items()})
        interval = {"a": percentile_interval(sa), "b": percentile_interval(sb)}
    return LawFit("leverage_compute", "a * C^b", {"a": float(a), "b": float(b)}, interval, None,
                  min(f.n_points, d.n_points), notes=[f"derived from the curves of {family} and {dense}"])


def fit_el_vs_granularity(table: pd.DataFrame) -> tuple[LawFit, float]:
    """ln EL = c0 + c1 ln G + c2 (ln G)^2 (+ c3 ln C when several budgets), least squares; the best G is where the
    parabola peaks, G* = exp(-c1 / (2 c2)) (needs c2 < 0: a U-shaped loss, as Ling finds)."""
    G = table["granularity"].to_numpy(float)
    if len(np.unique(G)) < 3:
        raise FitError(f"leverage_granularity: {len(np.unique(G))} granularities, need at least 3")
    g, y = np.log(G), np.log(table["el"].to_numpy(float))
    cols = [np.ones_like(g), g, g * g]
    names = ["c0", "c1", "c2"]
    if table["budget"].nunique() > 1:
        cols.append(np.log(table["budget"].to_numpy(float)))
        names.append("c3")
    X = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    params = dict(zip(names, map(float, coef), strict=True))
    if params["c2"] >= 0:
        raise FitError("leverage_granularity: EL does not peak in G over the swept range (no interior optimum)")
    best = float(np.exp(-params["c1"] / (2 * params["c2"])))
    formula = "exp(c0 + c1 ln G + c2 (ln G)^2" + (" + c3 ln C)" if "c3" in params else ")")
    return LawFit("leverage_granularity", formula, params, {}, r_squared(y, X @ coef), len(y)), best


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
    logC = np.log(t["budget"].to_numpy(float)) / math.log(log_base_C)
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
    return LawFit("ling_joint", f"Ahat^(a + d log{log_base_C:g} C + gamma (log{log_base_G:g} G)^2 + "
                  f"beta log{log_base_G:g} G)", params, {}, r_squared(y, pred), len(y))


def coefficients_from_fit(fit: LawFit, log_base_C: float = 10.0, log_base_G: float = 2.0) -> LingELCoefficients:
    return LingELCoefficients(**fit.params, log_base_C=log_base_C, log_base_G=log_base_G)
