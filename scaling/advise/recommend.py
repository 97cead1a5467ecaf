"""From fitted laws to the hyperparameters of a run at a target budget, each with its interval, its source and
its verdict.

An item whose law is judged undetermined is never shown as a value: it is listed as missing, with the reasons and
the sweep that would settle it. The recommendation is also written as Hydra overrides that
`scaling train --overrides-file` reads (plain `key=value` lines, never evaluated): the swept family's whole model,
data and optimisation config (so the recommended run is the sweep's run, scaled), then the budget, lr, batch and
expert counts; a weak item is preceded by a `#` line that says why, and a hyperparameter no law supports is a
`# missing: KEY ...` line (MISSING_PREFIX) that `scaling train --overrides-file` refuses unless KEY is given on the
command line. Runs without a config (a CSV, another trainer's W&B) get no overrides file: `values` are the
recommended numbers for the user's own trainer (recommended.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scaling.advise import compute
from scaling.advise.family import config_overrides, family_model, largest_run
from scaling.fit.law import FitError
from scaling.fit.leverage import peak_granularity
from scaling.fit.report import FitReport
from scaling.fit.verdict import fixed_variable

MISSING_PREFIX = "# missing: "
"""An overrides line `# missing: train.lr (why) ...`: a setting the recommendation cannot give."""


def missing_settings(lines: list[str]) -> list[str]:
    """The keys an overrides file marks missing (MISSING_PREFIX lines), in order."""
    return [line.strip()[len(MISSING_PREFIX):].split(" ", 1)[0] for line in lines
            if line.strip().startswith(MISSING_PREFIX)]


@dataclass
class Recommendation:
    target_flops: float
    items: dict[str, dict] = field(default_factory=dict)
    """name -> {"value", "interval" ([lo, hi] or None), "source", "verdict", "reasons"}."""
    missing: dict[str, dict] = field(default_factory=dict)
    """name -> {"why": ..., "advice": [...]}: what no law supports, and which sweep would settle it."""
    overrides: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What stands between the recommendation and a run (e.g. the data holds too few tokens)."""
    memory_limit: dict | None = None
    """Under --memory-per-gpu/--gpus: the affordable A (advise/affordable.py: chosen, unconstrained, EL given up)."""

    def as_dict(self) -> dict:
        return {"target_flops": self.target_flops, "items": self.items, "missing": self.missing,
                "overrides": self.overrides, "warnings": self.warnings, "memory_limit": self.memory_limit}

    def values(self, convention: str) -> list[str]:
        """The recommendation as YAML lines for any trainer: each supported quantity's value (its interval,
        verdict and law in a comment), then what is missing and why, as comments."""
        lines = [f"# the run `scaling fit` recommends at C = {self.target_flops:.6g} FLOPs ({convention} convention);"
                 f" params_active = active non-embedding parameters, batch_tokens = tokens per optimizer step",
                 f"target_flops: {self.target_flops:.6g}"]
        for name, item in self.items.items():
            iv = item.get("interval")
            where = f"95% [{iv[0]:.4g}, {iv[1]:.4g}], " if iv else ""
            lines.append(f"{name}: {item['value']:.6g}  # {where}{item.get('verdict', '')}, {item['source']}")
        for name, miss in self.missing.items():
            lines.append(f"# {name}: missing ({miss['why']})")
        return [line.replace("\n", " ") for line in lines]


def recommend(report: FitReport, runs: pd.DataFrame, target_flops: float, level: float = 0.95,
              memory_per_gpu_gb: float | None = None, gpus: int = 1) -> Recommendation:
    """The run at `target_flops` (C in the fit's FLOPs convention) that the laws support; with
    `memory_per_gpu_gb`, its activation ratio is the best the fitted leverage allows on `gpus` such GPUs."""
    if not target_flops > 0:
        raise ValueError(f"--target-flops {target_flops} must be a positive number of FLOPs")
    rec = Recommendation(target_flops=target_flops)
    C = target_flops
    laws = report.laws

    def from_law(item: str, law: str, why_missing: str, **at):
        if law not in laws:
            rec.missing[item] = {"why": report.excluded.get(law, why_missing), "advice": []}
            return
        fit = laws[law]
        verdict = fit.verdict or {"verdict": "undetermined", "reasons": ["not judged"], "advice": []}
        if verdict["verdict"] == "undetermined":
            rec.missing[item] = {"why": f"{law} is undetermined: {'; '.join(verdict['reasons'])}",
                                 "advice": verdict["advice"]}
            return
        p = fit.predict(level, **at)
        rec.items[item] = {"value": p.value, "interval": p.interval, "source": f"{law} ({fit.formula})",
                           "verdict": verdict["verdict"],
                           "reasons": verdict["reasons"] if verdict["verdict"] != "reliable" else [],
                           "extrapolation": fit.extrapolation(**at)}

    from_law("lr", "lr_opt", "no lr_opt law", C=C)
    from_law("batch_tokens", "batch_opt", "no batch_opt law", C=C)
    from_law("loss", "loss_vs_compute", "no loss_vs_compute law", C=C)
    if "n_opt" in laws and "d_opt" in laws:
        from_law("params_active", "n_opt", "", C=C)
        from_law("tokens", "d_opt", "", C=C)
    elif "chinchilla" in laws:
        _chinchilla_allocation(rec, laws["chinchilla"], C)
    else:
        why = report.excluded.get("n_opt") or report.excluded.get("chinchilla") or "no allocation law"
        for item in ("params_active", "tokens"):
            rec.missing[item] = {"why": f"no allocation law (IsoFLOP or L(N, D)): {why}",
                                 "advice": ["sweep several model sizes per budget (an IsoFLOP sweep)"]}
    _refuse_other_sizes(rec, laws)
    family = _architecture(rec, report, runs, C)
    fam = runs[runs["family"] == family]
    if memory_per_gpu_gb is not None:
        _memory_limited(rec, report, fam, C, memory_per_gpu_gb, gpus)
    if "params_active" in rec.items and "params_total" in fam.columns:
        ratio = float((fam["params_total"] / fam["params"]).median())
        rec.items["params_total"] = {"value": rec.items["params_active"]["value"] * ratio, "interval": None,
                                     "source": f"params_active x {ratio:.3g} (total/active of {family})",
                                     "verdict": rec.items["params_active"]["verdict"], "reasons": []}
    for item in [k for k, v in rec.items.items() if v.get("verdict") == "undetermined"]:
        it = rec.items.pop(item)  # never shown as a value, whichever path put it there
        rec.missing[item] = {"why": f"{it['source']} is undetermined", "advice": list(it.get("reasons") or [])}
    rec.overrides = _overrides(rec, fam, report.convention)
    return rec


def _refuse_other_sizes(rec: Recommendation, laws: dict) -> None:
    """A law of C measured at one model size (its C moved only through D) says nothing at another: where the
    recommended size differs from it by more than 10%, its item is refused, not shown as a value."""
    size = rec.items.get("params_active", {}).get("value")
    if size is None:
        return
    for item, law in (("lr", "lr_opt"), ("batch_tokens", "batch_opt"), ("loss", "loss_vs_compute")):
        fixed = fixed_variable(laws[law]) if law in laws and item in rec.items else None
        if fixed and fixed[0] == "N" and abs(size / fixed[1] - 1) > 0.1:
            del rec.items[item]
            rec.missing[item] = {"why": f"{law} was measured at N = {fixed[1]:.3g} alone (its C moved only "
                                        f"through D); the recommended run has N = {size:.3g}",
                                 "advice": ["sweep several model sizes per budget (a ladder or IsoFLOP sweep)"]}


def _chinchilla_allocation(rec: Recommendation, law, C: float) -> None:
    """The compute-optimal point of L(N, D) with C = 6 N D (no interval: the fit has none)."""
    p = law.params
    # argmin_N E + A/N^alpha + B/(C/6N)^beta: N = G (C/6)^(beta/(alpha+beta)), G = (alpha A / beta B)^(1/(a+b))
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    n = G * (C / 6) ** (p["beta"] / (p["alpha"] + p["beta"]))
    verdict = (law.verdict or {}).get("verdict", "weak")
    src = "compute-optimal point of chinchilla with C = 6 N D"
    for item, value in (("params_active", n), ("tokens", C / (6 * n))):
        rec.items[item] = {"value": value, "interval": None, "source": src, "verdict": verdict,
                           "reasons": ["no interval"]}
    if "loss" not in rec.items:
        rec.items["loss"] = {"value": law.value(N=n, D=C / (6 * n)), "interval": None,
                             "source": "chinchilla at that point", "verdict": verdict, "reasons": ["no interval"]}
        rec.missing.pop("loss", None)


def _architecture(rec: Recommendation, report: FitReport, runs: pd.DataFrame, C: float) -> str:
    """A and G: the best measured MoE configuration when its leverage is resolved, else the sweep's own."""
    family = report.family or str(runs["family"].value_counts().idxmax())
    src = "as swept (no leverage measured against a dense baseline)"
    lev = report.leverage
    if lev is not None and not lev.empty:
        top = lev[lev["budget"] == lev["budget"].max()]
        best = top.loc[top["el"].idxmax()]
        el_iv = None if np.isnan(best["el_lo"]) else [float(best["el_lo"]), float(best["el_hi"])]
        if best["verdict"] != "undetermined" and el_iv is not None and el_iv[0] > 1:
            family = str(best["family"])
            src = f"best measured efficiency leverage (EL {best['el']:.3g} [{el_iv[0]:.3g}, {el_iv[1]:.3g}] at C = " \
                  f"{best['C']:.3g})"
        else:
            src = f"as swept: the measured leverage does not single out a configuration ({best['resolved']})"
    fam = runs[runs["family"] == family]
    for col in ("activation_ratio", "granularity"):
        if col in fam.columns and fam[col].notna().any():
            rec.items[col] = {"value": float(fam[col].iloc[0]), "interval": None, "source": src,
                              "verdict": "as swept", "reasons": []}
    for law, item in (("leverage_granularity", "granularity"), ("ling_joint", "granularity")):
        fit = report.laws.get(law)
        if fit is None or (fit.verdict or {}).get("verdict") == "undetermined":
            continue
        try:
            value = peak_granularity(fit)
        except FitError:
            continue
        rec.items[item] = {"value": value, "interval": None, "source": f"{law} (EL peak in G)",
                           "verdict": fit.verdict["verdict"], "reasons": fit.verdict["reasons"]}
        if law == "ling_joint" and "activation_ratio" in rec.items:
            el = fit.value(A=rec.items["activation_ratio"]["value"], G=value, C=C)
            rec.items["efficiency_leverage"] = {"value": el, "interval": None, "source": "ling_joint at (A, G, C)",
                                                "verdict": fit.verdict["verdict"], "reasons": []}
    return family


def _leverage_law(report: FitReport):
    """The EL law a memory-limited choice reads: Ling's joint law, else EL(A); None when neither is usable."""
    for name in ("ling_joint", "leverage"):
        fit = report.laws.get(name)
        if fit is not None and (fit.verdict or {}).get("verdict") != "undetermined":
            return fit
    return None


def _memory_limited(rec: Recommendation, report: FitReport, fam: pd.DataFrame, C: float, memory_gb: float,
                    gpus: int) -> None:
    """A (and n_experts) from the leverage law among the configurations that fit the GPUs (advise/affordable.py)."""
    from scaling.advise.affordable import affordable_activation, scale_model

    if not (memory_gb > 0 and gpus >= 1):
        raise ValueError(f"--memory-per-gpu {memory_gb} and --gpus {gpus} must be positive")
    item = "activation_ratio"
    law = _leverage_law(report)
    row = largest_run(fam)
    if law is None:
        why = report.excluded.get("leverage") or "no usable efficiency-leverage law (EL(A) or ling_joint)"
        rec.missing[f"{item} (memory-limited)"] = {"why": why, "advice": [
            "sweep activation ratios against a dense baseline (sweeps/activation_ratio.yaml)"]}
        return
    model = family_model(row)
    if model is None:
        rec.missing[f"{item} (memory-limited)"] = {"why": "the runs came without configs (a CSV, W&B): no model "
                                                          "to size", "advice": ["fit the sweep's own records"]}
        return
    if "params_active" in rec.items:
        model = scale_model(model, rec.items["params_active"]["value"])
    else:
        rec.warnings.append("no allocation law: the memory limit is judged at the swept family's own model size")
    seq_len = model.seq_len
    rows = round(rec.items["batch_tokens"]["value"] / seq_len) if "batch_tokens" in rec.items \
        else int(row["config"]["train"]["batch_size"])
    G = rec.items.get("granularity", {}).get("value") or 2 * model.d_model / model.d_expert
    result = affordable_activation(law, model, max(1, rows), C, G, memory_gb, gpus)
    rec.memory_limit = result
    chosen = result["chosen"]
    if chosen is None:
        rec.missing[f"{item} (memory-limited)"] = {"why": result["why"], "advice": []}
        return
    verdict = law.verdict or {"verdict": "weak", "reasons": ["not judged"]}
    shape = result["shape"]
    rec.items[item] = {
        "value": chosen["A"], "interval": None, "verdict": verdict["verdict"], "reasons": verdict.get("reasons", []),
        "source": f"best EL of {law.name} among the A in its fitted range whose d{shape['d_model']}L"
                  f"{shape['n_layers']} model fits {gpus} x {memory_gb:g} GiB ({chosen['parallel']}, micro-batch "
                  f"{chosen['micro_batch']}, {chosen['memory_per_gpu_gib']:.3g} GiB per GPU; scaling/memory.py)"}
    rec.items["n_experts"] = {"value": chosen["n_experts"], "interval": None, "verdict": verdict["verdict"],
                              "reasons": [], "source": f"A = {shape['top_k']}+{shape['n_shared_experts']} active "
                                                       f"of E+{shape['n_shared_experts']}"}
    rec.items["efficiency_leverage"] = {"value": chosen["el"], "interval": None, "verdict": verdict["verdict"],
                                        "reasons": [], "source": f"{law.name} at the memory-limited A"}
    if result["binds"]:
        best = result["unconstrained"]
        rec.warnings.append(
            f"memory binds: A = {chosen['A']:.3g} (E = {chosen['n_experts']}, {chosen['params_total']:.3g} "
            f"parameters) instead of the law's best A = {best['A']:.3g} (E = {best['n_experts']}, "
            f"{best['params_total']:.3g} parameters, {best['memory_per_gpu_gib']:.3g} GiB per GPU): EL "
            f"{chosen['el']:.3g} instead of {best['el']:.3g}, {result['el_given_up']:.3g}x given up")


def _overrides(rec: Recommendation, fam: pd.DataFrame, convention: str) -> list[str]:
    """Hydra overrides for `scaling train`: the family's config (from its run at the largest budget), then the
    budget (in the trainer's M convention), lr and batch in sequences; weak items commented."""
    lines: list[str] = []
    row = largest_run(fam)
    family_lines = config_overrides(row)
    if family_lines is None:
        return []  # no config to scale (a CSV): overrides would train the default model; see `values`
    config = row["config"]
    lines.append(f"# the swept family's model, data and optimisation (from run {row['id']})")
    lines += family_lines
    budget = compute.budget_flops(rec.target_flops, family_model(row), convention)
    if abs(budget / rec.target_flops - 1) > 1e-3:
        lines.append(f"# target C = {rec.target_flops:.6g} in the fit's convention = {budget:.6g} in the "
                     f"trainer's M convention")
    lines.append(f"budget_flops={budget:.6g}")

    def weak_note(item):
        it = rec.items[item]
        if it.get("verdict") == "weak":
            lines.append(f"# {item}: weak ({'; '.join(it['reasons'])})")

    if rec.memory_limit and rec.memory_limit.get("chosen"):
        lines.append(f"# activation ratio {rec.items['activation_ratio']['value']:.4g}: the best the leverage law "
                     f"allows in {rec.memory_limit['gpus']} x {rec.memory_limit['memory_per_gpu_gb']:g} GiB")
        lines.append(f"model.n_experts={rec.items['n_experts']['value']}")
    def missing(item, key):
        miss = rec.missing.get(item) or {"why": "no law", "advice": []}
        advice = f"; settle it: {'; '.join(miss['advice'])}" if miss.get("advice") else ""
        lines.append(f"{MISSING_PREFIX}{key} ({miss['why']}{advice}); `scaling train` refuses this file unless "
                     f"{key}=VALUE is given on its command line")

    if "lr" in rec.items:
        weak_note("lr")
        lines.append(f"train.lr={rec.items['lr']['value']:.6g}")
    else:
        missing("lr", "train.lr")
    seq = fam["seq_len"].dropna() if "seq_len" in fam.columns else pd.Series(dtype=float)
    if len(seq):
        seq_len = int(seq.iloc[0])
        if "batch_tokens" in rec.items:
            weak_note("batch_tokens")
            lines.append(f"train.batch_size={max(1, round(rec.items['batch_tokens']['value'] / seq_len))}")
        else:
            why = (rec.missing.get("batch_tokens") or {}).get("why", "no batch law")
            lines.append(f"# train.batch_size: as swept ({why})")
            lines.append(f"train.batch_size={config['train']['batch_size']}")
    if row is not None and "data_tokens" in fam.columns and pd.notna(row.get("data_tokens")) and config is not None:
        per_token = float(row["flops_M"] / row["tokens"]) if pd.notna(row.get("flops_M")) else None
        if per_token and not config["data"].get("allow_repeat"):
            need = budget / per_token
            if need > row["data_tokens"]:
                rec.warnings.append(f"the recommended run needs {need:,.0f} training tokens at the swept model's "
                                    f"{per_token:,.0f} FLOPs/token; its data holds {row['data_tokens']:,.0f} "
                                    f"({need / row['data_tokens']:.2f} epochs): use more data or add "
                                    f"data.allow_repeat=true")
    return lines
