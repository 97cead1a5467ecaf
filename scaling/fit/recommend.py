"""From fitted laws to the hyperparameters of a run at a target budget, each with an interval and its source.

Every item says where it comes from (the law, or "best measured" when only the runs can speak) and is left out
with the reason when nothing supports it. The recommendation is also written as Hydra overrides that
`scaling train --overrides-file` reads (plain `key=value` lines, never evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.fit.report import FitReport, main_family


@dataclass
class Recommendation:
    target_flops: float
    items: dict[str, dict] = field(default_factory=dict)
    """name -> {"value", "interval" ([lo, hi] or None), "source"}."""
    missing: dict[str, str] = field(default_factory=dict)
    """name -> why there is no recommendation for it."""
    overrides: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"target_flops": self.target_flops, "items": self.items, "missing": self.missing,
                "overrides": self.overrides}


def _power(C):
    return lambda p: p["a"] * C ** p["b"]


def recommend(report: FitReport, runs: pd.DataFrame, target_flops: float, level: float = 0.95) -> Recommendation:
    if not target_flops > 0:
        raise ValueError(f"--target-flops {target_flops} must be a positive number of FLOPs")
    rec = Recommendation(target_flops=target_flops)
    C = target_flops
    laws = report.laws

    def from_law(item: str, law: str, fn, why_missing: str):
        if law in laws:
            value, interval = laws[law].predict(fn, level)
            rec.items[item] = {"value": value, "interval": interval, "source": f"{law} ({laws[law].formula})"}
        else:
            rec.missing[item] = report.excluded.get(law, why_missing)

    from_law("lr", "lr_opt", _power(C), "no lr_opt law")
    from_law("batch_tokens", "batch_opt", _power(C), "no batch_opt law")
    from_law("loss", "loss_vs_compute", lambda p: p["E"] + p["A"] * C ** -p["alpha"], "no loss_vs_compute law")

    # model size and tokens: IsoFLOP laws first, then the compute-optimal point of L(N, D)
    if "n_opt" in laws and "d_opt" in laws:
        from_law("params_active", "n_opt", _power(C), "")
        from_law("tokens", "d_opt", _power(C), "")
    elif "chinchilla" in laws:
        p = laws["chinchilla"].params
        # argmin_N E + A/N^alpha + B/(C/6N)^beta: N = G (C/6)^(beta/(alpha+beta)), G = (alpha A / beta B)^(1/(a+b))
        G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
        n = G * (C / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))
        src = "compute-optimal point of chinchilla with C = 6 N D"
        rec.items["params_active"] = {"value": n, "interval": None, "source": src}
        rec.items["tokens"] = {"value": C / (6 * n), "interval": None, "source": src}
        if "loss" not in rec.items:
            loss = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / (C / (6 * n)) ** p["beta"]
            rec.items["loss"] = {"value": loss, "interval": None, "source": "chinchilla at that point"}
            rec.missing.pop("loss", None)
    else:
        why = report.excluded.get("n_opt") or report.excluded.get("chinchilla") or "no allocation law"
        rec.missing["params_active"] = rec.missing["tokens"] = f"no allocation law (IsoFLOP or L(N, D)): {why}"

    # architecture: the best measured MoE configuration (leverage), else the runs' own
    family = main_family(runs)
    if report.leverage is not None and not report.leverage.empty:
        top = report.leverage[report.leverage["budget"] == report.leverage["budget"].max()]
        best = top.loc[top["el"].idxmax()]
        family = str(best["family"])
        src = f"best measured efficiency leverage (EL {best['el']:.3g} at C = {best['budget']:.3g})"
    else:
        src = "as swept (no leverage measured against a dense baseline)"
    fam = runs[runs["family"] == family]
    for col in ("activation_ratio", "granularity"):
        if col in fam.columns and fam[col].notna().any():
            rec.items[col] = {"value": float(fam[col].iloc[0]), "interval": None, "source": src}
    if "leverage_granularity" in laws:
        p = laws["leverage_granularity"].params
        rec.items["granularity"] = {"value": float(np.exp(-p["c1"] / (2 * p["c2"]))), "interval": None,
                                    "source": "leverage_granularity (EL peak in G)"}
    if "ling_joint" in laws:  # the fitted joint law knows the best G at any budget, and the EL at the target
        from scaling.fit.leverage import best_granularity, coefficients_from_fit, ling_el

        k = coefficients_from_fit(laws["ling_joint"])
        rec.items["granularity"] = {"value": best_granularity(k), "interval": None,
                                    "source": "ling_joint (EL peak in G)"}
        if "activation_ratio" in rec.items:
            el = float(ling_el(rec.items["activation_ratio"]["value"], rec.items["granularity"]["value"], C, k))
            rec.items["efficiency_leverage"] = {"value": el, "interval": None, "source": "ling_joint at (A, G, C)"}
    if "params_active" in rec.items and "params_total" in fam.columns:
        ratio = float((fam["params_total"] / fam["params"]).median())
        rec.items["params_total"] = {"value": rec.items["params_active"]["value"] * ratio, "interval": None,
                                     "source": f"params_active x {ratio:.3g} (total/active of {family})"}

    rec.overrides = _overrides(rec, fam)
    return rec


def _overrides(rec: Recommendation, fam: pd.DataFrame) -> list[str]:
    """Hydra overrides for `scaling train` (budget, lr, batch in sequences, expert counts for A)."""
    lines = [f"budget_flops={rec.target_flops:.6g}"]
    if "lr" in rec.items:
        lines.append(f"train.lr={rec.items['lr']['value']:.6g}")
    seq = fam["seq_len"].dropna() if "seq_len" in fam.columns else pd.Series(dtype=float)
    if "batch_tokens" in rec.items and len(seq):
        seq_len = int(seq.iloc[0])
        lines.append(f"model.seq_len={seq_len}")
        lines.append(f"train.batch_size={max(1, round(rec.items['batch_tokens']['value'] / seq_len))}")
    if {"n_experts", "top_k", "n_shared_experts"} <= set(fam.columns) and fam["top_k"].notna().all():
        row = fam.iloc[0]
        lines += [f"model.n_experts={int(row['n_experts'])}", f"model.top_k={int(row['top_k'])}",
                  f"model.n_shared_experts={int(row['n_shared_experts'])}"]
    return lines


def recommendation_table(rec: Recommendation):
    from rich.table import Table

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, (float, int, np.floating)) else str(v)

    table = Table(title=f"recommendation at C = {rec.target_flops:.3g} FLOPs", title_justify="left")
    for col in ("quantity", "value", "95% interval", "from"):
        table.add_column(col, overflow="fold")
    for name, item in rec.items.items():
        interval = f"[{fmt(item['interval'][0])}, {fmt(item['interval'][1])}]" if item["interval"] else ""
        table.add_row(name, fmt(item["value"]), interval, item["source"])
    for name, why in rec.missing.items():
        table.add_row(f"[dim]{name}[/]", "[dim]-[/]", "", f"[dim]{why}[/]")
    return table
