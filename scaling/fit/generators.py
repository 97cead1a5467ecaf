"""Sweeps drawn from known truths that are *not* the fitter's model, to test the fitter as a statistician would.

The fitter reads an lr bowl per budget and fits power laws through the bowls' optima. Real sweeps break its
assumptions in known ways, each a setting of `lr_sweep`:

- **asymmetric bowls** (`ratio`): loss climbs faster above the optimum than below it (a right/left curvature ratio
  of about 14 on Step-Law's released dense sweep). ``bowl="piecewise"``: a quadratic in ln lr with curvature
  c / sqrt(ratio) below lr* and c sqrt(ratio) above; ``bowl="exp"``: the smooth bowl
  c (exp(s d) - 1 - s d) 2 / s^2 in d = ln(lr / lr*), whose curvature grows as exp(s d) (ratio = its curvature
  one grid step above over one step below, so s = ln(ratio) / (2 step)).
- **heteroscedastic noise** (`hetero`): the noise sd grows above the optimum, sd (1 + hetero max(d, 0)), as runs
  at a high lr get less stable.
- **per-seed offsets** (`seed_offset`): every run of one seed at one budget shares an offset (its initialisation
  and data order), drawn with this sd.

The truth is known exactly: `TRUE_LR(C)` and `true_loss(C)` (the bowl's floor at each budget).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

A_LR, B_LR = 5.07, -0.26
"""The lr law measured on this project's tiny MoE (issue 11): lr* = 5.07 C^-0.26."""
LR_STEP = float(np.log(2.0))
"""The demo's lr grid: learning rates x2 apart."""


def true_lr(C):
    return A_LR * np.asarray(C, float) ** B_LR


def true_loss(C, E: float = 1.5, A: float = 300.0, alpha: float = 0.2):
    """The floor of the bowl at budget C: E + A C^-alpha."""
    return E + A * np.asarray(C, float) ** -alpha


def bowl(d: np.ndarray, curvature: float, ratio: float, form: str) -> np.ndarray:
    """Loss above the optimum at d = ln(lr / lr*)."""
    d = np.asarray(d, float)
    if form == "piecewise":
        k = np.where(d < 0, curvature / np.sqrt(ratio), curvature * np.sqrt(ratio))
        return k * d * d
    if form == "exp":
        if ratio == 1:
            return curvature * d * d
        s = np.log(ratio) / (2 * LR_STEP)
        return curvature * 2 * (np.exp(s * d) - 1 - s * d) / s**2
    raise ValueError(f"bowl form {form!r} is not 'piecewise' or 'exp'")


def lr_sweep(seed: int, budgets=(1e11, 3e11, 1e12), n_lr: int = 5, seeds: int = 2,
             sigma: tuple[float, float] = (0.02, 0.09), curvature: float = 0.12, ratio: float = 1.0,
             form: str = "piecewise", hetero: float = 0.0, seed_offset: float = 0.0,
             family: str = "A0.25-G1", params: float | None = None, floor=None) -> pd.DataFrame:
    """Runs of an lr sweep as the demo lays it out: at each budget, `n_lr` learning rates x2 apart around the true
    optimum (the grid's centre off by up to x1.65 either way), `seeds` runs each; the model grows with the budget
    (N = 1.3e5 (C / 1e11)^0.5, as a compute-optimal ladder does), or stays at `params` when given.
    The noise sd is drawn per sweep from `sigma` (the seed-to-seed spread measured here: 0.02-0.09 nats); `floor`:
    the bowl's floor as a function of C (default `true_loss`)."""
    rng = np.random.default_rng(seed)
    sd = rng.uniform(*sigma)
    rows = []
    for C in budgets:
        lr_star = float(true_lr(C))
        lrs = lr_star * np.exp(rng.uniform(-0.5, 0.5)) * 2.0 ** (np.arange(n_lr) - (n_lr - 1) / 2)
        offsets = rng.normal(0, seed_offset, seeds) if seed_offset else np.zeros(seeds)
        for lr in lrs:
            d = np.log(lr / lr_star)
            for s in range(seeds):
                noise = sd * (1 + hetero * max(d, 0.0))
                loss = (float((floor or true_loss)(C)) + float(bowl(d, curvature, ratio, form)) + offsets[s]
                        + rng.normal(0, noise))
                N = params if params is not None else 1.3e5 * (C / 1e11) ** 0.5
                rows.append({"params": N, "tokens": C / (6 * N), "flops": C, "budget": C, "loss": loss, "lr": lr,
                             "batch_tokens": 2048.0, "family": family, "seed": s})
    return pd.DataFrame(rows)


DENSE_LOSS, MOE_LOSS = (40.0, -0.12), (36.0, -0.118)
"""Leverage truths, L = k C^s per family (Ling's form of the loss-compute curve, with no floor)."""


def true_el(C, dense=DENSE_LOSS, moe=MOE_LOSS):
    """Efficiency leverage of the MoE family at C: the dense compute reaching the MoE's loss at C, over C."""
    loss = moe[0] * np.asarray(C, float) ** moe[1]
    return (loss / dense[0]) ** (1 / dense[1]) / np.asarray(C, float)


def leverage_sweep(seed: int, budgets=(1e11, 3e11, 1e12, 3e12), seeds: int = 2, **kw) -> pd.DataFrame:
    """A dense family and an MoE family (A = 0.25), each an lr sweep (`lr_sweep`, noise drawn independently) whose
    bowls' floors follow DENSE_LOSS and MOE_LOSS."""
    parts = []
    for i, (family, law, A) in enumerate((("dense", DENSE_LOSS, 1.0), ("A0.25-G1", MOE_LOSS, 0.25))):
        df = lr_sweep(seed * 2 + i, budgets=budgets, seeds=seeds, family=family,
                      floor=lambda C, k=law[0], s=law[1]: k * C**s, **kw)
        parts.append(df.assign(activation_ratio=A, granularity=1.0))
    return pd.concat(parts, ignore_index=True)


def true_envelope(C, E: float, B: float, C_b: float, alpha: float):
    """The offset power law E + B (C + C_b)^-alpha (Caballero et al. 2022): flat while C << C_b (training still on
    its early plateau), a power law with a floor beyond. Not the fitter's E + A C^-alpha."""
    return E + B * (np.asarray(C, float) + C_b) ** -alpha


def _envelope_truth(rng: np.random.Generator, budgets) -> dict:
    """An offset power law's parameters as `envelope_sweep` draws them."""
    alpha = rng.uniform(0.25, 0.45)
    return {"E": rng.uniform(0.8, 1.2), "alpha": alpha, "C_b": rng.uniform(0, min(budgets)), "B": 1.1 * 1.3e11**alpha}


def envelope_sweep(seed: int, budgets=tuple(np.geomspace(1e11, 1e12, 5)), seeds: int = 2,
                   sigma: tuple[float, float] = (0.02, 0.09)) -> tuple[pd.DataFrame, dict]:
    """A wind tunnel's rungs: one compute-optimal run per budget and seed, its loss on an offset power law
    (`true_envelope`, parameters drawn per sweep: E 0.8-1.2, alpha 0.25-0.45, C_b up to the smallest budget, the
    loss 1.1 above E at 1.3e11 FLOPs, as the CPU envelope measured here) plus seed noise of an sd drawn from `sigma`
    (0.02-0.09 nats, the seed-to-seed spread measured on the CPU). Returns (runs, truth parameters)."""
    rng = np.random.default_rng(seed)
    truth = _envelope_truth(rng, budgets)
    sd = rng.uniform(*sigma)
    rows = []
    for C in budgets:
        params = 1.3e5 * (C / 1e11) ** 0.5
        for s in range(seeds):
            rows.append({"budget": C, "flops": C, "params": params, "tokens": C / (6 * params), "seed": s,
                         "loss": float(true_envelope(C, **truth) + rng.normal(0, sd)), "family": "A0.25-G1"})
    return pd.DataFrame(rows), truth


NOISE_FALL = float(np.log(0.065 / 0.025) / np.log(8))
"""How the seed noise falls with compute on the CPU: sd 0.065 nats at 1e11 FLOPs, 0.025 at 8e11 (sd ~ C^-0.46)."""


def wind_tunnel_sweep(seed: int, budgets=tuple(np.geomspace(1e11, 8e11, 5)), centre_seeds: int = 2,
                      sigma: tuple[float, float] = (0.02, 0.09), curvature: float = 0.06, lr_miss: float = 1.4,
                      ratio: float = 1.0) -> tuple[pd.DataFrame, dict]:
    """`make wind-tunnel`'s rungs: per budget an lr bowl of four runs, x0.5, x1 (`centre_seeds` seeds) and x2 around
    an lr law that misses the true optimum by a lognormal factor of sd ln(`lr_miss`) (the wind tunnel's lr law
    held to x1.4), the floor of each bowl on an offset power law (`true_envelope`, drawn as `envelope_sweep` draws
    it), the bowl `bowl(d, curvature, ratio, "piecewise")` (curvature 0.06: a rung's x0.5 and x2 runs sat 0.01-0.08
    above its best), and seed noise whose sd at 1e11 FLOPs is drawn from `sigma` and falls as C^-NOISE_FALL, as
    measured. Returns (runs, truth parameters)."""
    rng = np.random.default_rng(seed)
    truth = _envelope_truth(rng, budgets)
    sd0 = rng.uniform(*sigma)
    rows = []
    for C in budgets:
        miss = rng.normal(0, np.log(lr_miss))
        sd = sd0 * (C / 1e11) ** -NOISE_FALL
        params = 1.3e5 * (C / 1e11) ** 0.5
        for factor, seeds in ((0.5, 1), (1.0, centre_seeds), (2.0, 1)):
            d = np.log(factor) + miss
            for s in range(seeds):
                loss = float(true_envelope(C, **truth) + bowl(d, curvature, ratio, "piecewise") + rng.normal(0, sd))
                rows.append({"budget": C, "flops": C, "params": params, "tokens": C / (6 * params), "seed": s,
                             "lr": 1e-2 * factor, "batch_tokens": 2048.0, "loss": loss, "family": "A0.25-G1"})
    return pd.DataFrame(rows), truth
