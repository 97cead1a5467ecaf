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


def leverage_table(df: pd.DataFrame, dense: str = "dense") -> pd.DataFrame:
    """EL of every MoE family at each budget it was run at, with its activation ratio and granularity (runs at
    matched hyperparameters when the families share some)."""
    df = matched_hyperparameters(df)
    curves = family_curves(df)
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
