"""The FP8 loss gap: how much FP8 training loses against its base precision, per configuration, and whether that
gap grows with compute (pandas, numpy, scipy; no torch).

A **pair** is an FP8 run and the run with the same resolved config but for train.precision (same model, budget,
lr, batch and seed: common random numbers, so the seed's own noise largely cancels) in bf16 (or, where there is
no bf16 run, fp32). Its gap is `loss(fp8) - loss(base)` in nats. Pairs are grouped by **configuration**: the
family (MoE structure; QK-norm off shows as '-noqknorm') and the FP8 scaling.

Per configuration:

- the **mean gap** over its pairs with a Student-t 95% interval (n - 1 degrees of freedom; the pairs' gaps are
  independent draws). An interval that contains 0 is the verdict "no significant gap", with how large a gap the
  data still allow;
- when the gap is significant, every pair's gap has its sign and there are pairs at >= 3 budgets, the law
  ``gap = a * C^b`` (fitted in log space, `powerlaw.fit_power_law`: Student-t intervals on a and b, judged like
  every law): b's interval says whether the gap grows with compute (b > 0), shrinks (b < 0), or neither is
  resolved. An FP8 run better than its base (gap < 0 throughout) gets the law of -gap, and says so.

The FP8 runs' diagnostics travel along (scaling/diagnostics.py): the QKV gradient underflow and the attention logit
maximum of each run at their peak over its diagnostics steps and layers, averaged over the configuration's pairs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from scaling.fit.law import FitError, LawFit
from scaling.fit.powerlaw import fit_power_law

BASES = ("bf16", "fp32")
"""An FP8 run's base precision, in order of preference (FP8 training keeps everything else in bf16)."""
MIN_BUDGETS_FOR_LAW = 3
LEVEL = 0.95


def pair_key(config: dict) -> str:
    """What an FP8 run and its base share: the identity of the resolved config without train.precision."""
    from scaling.config import from_dict, identity_dict

    ident = identity_dict(from_dict(config))
    ident["train"].pop("precision", None)
    return json.dumps(ident, sort_keys=True, default=str)


def gap_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per FP8 run with a base run of the same config: configuration, base, C, budget, seed, the two losses,
    the gap and the FP8 run's diagnostics. FitError when there is no pair (with what is missing)."""
    if "precision" not in df.columns or not (df["precision"] == "fp8").any():
        raise FitError("no runs with train.precision=fp8")
    if "config" not in df.columns:
        raise FitError("FP8 gaps need run records (their configs pair FP8 runs with their base runs), not a CSV")
    keys = df["config"].map(pair_key)
    bases = {}
    for base in reversed(BASES):  # bf16 overwrites fp32
        rows = df[df["precision"] == base]
        bases.update({k: (base, i) for k, i in zip(keys[rows.index], rows.index, strict=True)})
    out = []
    for i in df.index[df["precision"] == "fp8"]:
        match = bases.get(keys[i])
        if match is None:
            continue
        base, j = match
        r, b = df.loc[i], df.loc[j]
        out.append({"configuration": configuration(r), "base": base, "C": float(r["flops"]),
                    "budget": float(r["budget"]), "seed": r.get("seed"), "loss_fp8": float(r["loss"]),
                    "loss_base": float(b["loss"]), "gap": float(r["loss"] - b["loss"]),
                    "qkv_grad_underflow": r.get("qkv_grad_underflow"), "attn_logit_max": r.get("attn_logit_max"),
                    "attn_logit_max_base": b.get("attn_logit_max"), "fp8_id": r["id"], "base_id": b["id"]})
    if not out:
        n = int((df["precision"] == "fp8").sum())
        raise FitError(f"none of the {n} FP8 runs has a bf16 or fp32 run of the same config to compare with: sweep "
                       f"train.precision over [bf16, fp8]")
    return pd.DataFrame(out)


def configuration(row) -> str:
    """The configuration an FP8 gap belongs to: the family without its precision, and the FP8 scaling."""
    scaling = row["config"]["train"]["fp8_scaling"]  # defaults filled in (store.record_config)
    return f"{row['arch']}, {scaling}"


def mean_interval(gaps: np.ndarray, level: float = LEVEL) -> tuple[float, list[float] | None]:
    """The mean of independent gaps and its Student-t interval (n - 1 dof); no interval from one gap."""
    from scipy.stats import t

    gaps = np.asarray(gaps, float)
    mean = float(gaps.mean())
    if len(gaps) < 2:
        return mean, None
    half = float(t.ppf(0.5 + level / 2, len(gaps) - 1)) * float(gaps.std(ddof=1)) / math.sqrt(len(gaps))
    return mean, [mean - half, mean + half]


def law_name(config: str) -> str:
    return f"fp8_gap[{config}]"


def gap_law(name: str, pairs: pd.DataFrame, sign: float) -> LawFit:
    """gap = a C^b (sign > 0), or -gap = a C^b (sign < 0), over the pairs (each pair a point)."""
    fit = fit_power_law(name, {"C": pairs["C"].to_numpy(float)}, sign * pairs["gap"].to_numpy(float), n_boot=0)
    fit.notes.append("the loss gap fp8 - base, nats" if sign > 0 else
                     "FP8 below its base throughout: the law is of base - fp8 (nats)")
    return fit


def summarize(config: str, pairs: pd.DataFrame, level: float = LEVEL) -> tuple[dict, LawFit | None]:
    """One configuration's row of the precision table, and its gap law when the data support one."""
    gaps = pairs["gap"].to_numpy(float)
    mean, interval = mean_interval(gaps, level)
    n_budgets = int(pairs["budget"].nunique())
    row = {"configuration": config, "base": ", ".join(sorted(pairs["base"].unique())), "pairs": len(pairs),
           "budgets": n_budgets, "C_min": float(pairs["C"].min()), "C_max": float(pairs["C"].max()),
           "mean_gap": mean, "gap_lo": interval[0] if interval else None, "gap_hi": interval[1] if interval else None,
           "law": None, "b": None, "b_lo": None, "b_hi": None,
           "qkv_grad_underflow": _mean(pairs["qkv_grad_underflow"]), "attn_logit_max": _mean(pairs["attn_logit_max"]),
           "attn_logit_max_base": _mean(pairs["attn_logit_max_base"])}
    if interval is None:
        row["verdict"] = "undetermined"
        row["reading"] = f"one pair (gap {mean:+.4g} nats): add seeds or budgets for an interval"
        return row, None
    lo, hi = interval
    if lo <= 0 <= hi:
        bound = max(abs(lo), abs(hi))
        row["verdict"] = "no significant gap"
        row["reading"] = (f"no significant gap: mean {mean:+.3g} nats, 95% [{lo:+.3g}, {hi:+.3g}] over {len(pairs)} "
                          f"pairs at {n_budgets} budget(s); FP8 costs less than {bound:.3g} nats here")
        return row, None
    sign = 1.0 if mean > 0 else -1.0
    row["verdict"] = "fp8 worse" if sign > 0 else "fp8 better"
    text = (f"FP8 {'worse' if sign > 0 else 'better'} by {abs(mean):.3g} nats (95% [{abs(lo if sign > 0 else hi):.3g},"
            f" {abs(hi if sign > 0 else lo):.3g}])")
    if n_budgets < MIN_BUDGETS_FOR_LAW or np.any(sign * gaps <= 0):
        why = (f"pairs at {n_budgets} budget(s), a law needs {MIN_BUDGETS_FOR_LAW}" if n_budgets < MIN_BUDGETS_FOR_LAW
               else "some pairs' gaps have the other sign")
        row["reading"] = f"{text}; no law of the gap with compute ({why})"
        return row, None
    law = gap_law(law_name(config), pairs, sign)
    b, (b_lo, b_hi) = law.params["b"], law.interval["b"]
    row.update({"law": law.name, "b": b, "b_lo": b_lo, "b_hi": b_hi})
    trend = ("grows with compute" if b_lo > 0 else "shrinks with compute" if b_hi < 0 else
             "no trend with compute resolved")
    row["reading"] = f"{text}; gap = {law.params['a']:.3g} C^{b:.3g}, b 95% [{b_lo:.3g}, {b_hi:.3g}]: {trend}"
    return row, law


def _mean(values) -> float | None:
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(v.mean()) if len(v) else None


def precision_gaps(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, LawFit]]:
    """(the precision table: one row per configuration; the pairs; the gap laws by name). FitError without pairs."""
    pairs = gap_pairs(df)
    rows, laws = [], {}
    for config, group in pairs.groupby("configuration", sort=True):
        row, law = summarize(str(config), group)
        rows.append(row)
        if law is not None:
            laws[law.name] = law
    return pd.DataFrame(rows), pairs, laws
