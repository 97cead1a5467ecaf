"""How far each law can be trusted: a verdict (reliable, weak or undetermined) from stated criteria, with the
reasons and the sweep that would settle what is missing.

A law is judged at a compute budget: the target of a recommendation, or, without one, DEFAULT_JUDGE_FACTOR times
the largest fitted budget (the next rung of a x3 ladder). Each criterion below gives a level; the verdict is the
worst of them. The thresholds are module constants, so a reader sees exactly what "reliable" means:

criterion (where it applies)                                  reliable        weak          undetermined
compute range of the fitted budgets (largest / smallest)      >= 10x          >= 3x         < 3x
budgets with an lr bowl whose vertex is inside the grid (lr)   all, >= 3       >= 3          < 3
95% interval at the judged budget, hyperparameter/size laws    <= x1.5         <= x4         wider, or none
  (hi / value and value / lo)
95% interval at the judged budget, loss laws                   <= 2%           <= 10%        wider, or none
  (half-width / value)
extrapolation (judged / largest fitted), against the span     <= span         <= span^2     further
scatter about the law vs the runs' noise (chi2, p < 0.05)      consistent      in excess
degrees of freedom left to test the form (n - p)               >= 1            0
parameters at a bound (a loss floor E ~ 0, alpha at a bound)   none            some
held-out check (refit without the largest budget)              inside the 95%  outside

Ranges are compared with 2% slack (a nominal 10x sweep spans 9.99x in spent FLOPs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scaling.fit.law import LawFit
from scaling.fit.uncertainty import LACK_OF_FIT_P

LEVELS = ("reliable", "weak", "undetermined")
RANGE_RELIABLE, RANGE_WEAK = 10.0, 3.0
MIN_INTERIOR = 3
FACTOR_RELIABLE, FACTOR_WEAK = 1.5, 4.0
LOSS_RELIABLE, LOSS_WEAK = 0.02, 0.10
EL_RELIABLE, EL_WEAK = 1.25, 2.0
"""Efficiency leverage at one budget: its 95% interval within x1.25 (reliable) or x2 (weak) of the value."""
DEFAULT_JUDGE_FACTOR = 3.0
SLACK = 0.02
HYPERPARAMETER_LAWS = ("lr_opt", "batch_opt")
HELD_OUT_ITEMS = {"lr_opt": "lr", "batch_opt": "batch_tokens", "loss_vs_compute": "loss", "n_opt": "n_opt"}
"""The item of the held-out check (fit/report.held_out_check) each law is tested by."""


def fmt(x: float) -> str:
    return f"{x:.3g}"


ACTIONS = ("add_budget", "widen_lr", "add_lrs", "add_seed")
"""What an advice asks a sweep to do, as data (scaling/advise/next_sweep.py turns them into the next sweep):
add_budget {"C"}: a budget at C (the fit's convention); widen_lr {"C", "budget", "direction": down|up, "lr"}: learning
rates beyond the swept edge `lr` at that budget; add_lrs {"C", "budget"}: learning rates on both sides; add_seed
{"C", "budget"}: one more seed at every lr of that budget."""


class _Judgement:
    def __init__(self):
        self.level = 0
        self.reasons: list[str] = []
        self.advice: list[str] = []
        self.actions: list[dict] = []

    def add(self, level: str, reason: str, advice: str | None = None, action: dict | None = None) -> None:
        self.level = max(self.level, LEVELS.index(level))
        if level != "reliable":
            self.reasons.append(reason)
        if advice:
            self.advise(advice, action)

    def advise(self, advice: str, action: dict | None = None) -> None:
        """What would help, without lowering the verdict; `action`: the same as data (ACTIONS)."""
        if advice not in self.advice:
            self.advice.append(advice)
        if action is not None and action not in self.actions:
            self.actions.append(action)

    def result(self, at: dict) -> dict:
        verdict = LEVELS[self.level]
        reasons = self.reasons or ["every criterion met"]
        return {"verdict": verdict, "reasons": reasons, "advice": self.advice, "actions": self.actions,
                "judged_at": at}


def _next_budget(law: LawFit) -> dict | None:
    """The action of "add a budget": the next rung of a x3 ladder above the largest fitted C."""
    hi = law.fitted_range.get("C", [0, 0])[1]
    return {"kind": "add_budget", "C": float(f"{DEFAULT_JUDGE_FACTOR * hi:.3g}")} if hi > 0 else None


def judged_point(law: LawFit, target_flops: float | None) -> dict[str, float]:
    """Where a law is judged: C = the target (or 3x the largest fitted C); D 3x its largest; the activation ratio A
    at its smallest (the sparsest swept, where a recommendation goes and EL ~ 1 is no longer easy); other variables at
    their largest fitted value."""
    at = {}
    for var in law.variables:
        lo_hi = law.fitted_range.get(var)
        if lo_hi is None:
            continue
        if var == "C":
            at[var] = float(target_flops) if target_flops else DEFAULT_JUDGE_FACTOR * lo_hi[1]
        elif var == "D":
            at[var] = DEFAULT_JUDGE_FACTOR * lo_hi[1]
        elif var == "A":  # leverage is recommended at the sparsest A swept, where it is largest and least certain
            at[var] = lo_hi[0]
        else:
            at[var] = lo_hi[1]
    return at


def _range(j: _Judgement, law: LawFit) -> None:
    var = "C" if "C" in law.fitted_range else next(iter(law.fitted_range), None)
    if var is None:
        return
    lo, hi = law.fitted_range[var]
    span = hi / lo if lo > 0 else float("inf")
    text = f"the fitted {var} span {span:.3g}x ({fmt(lo)} to {fmt(hi)})"
    advice = f"add a budget above {fmt(hi * 3)}" if var == "C" else None
    action = _next_budget(law) if var == "C" else None
    if span < RANGE_WEAK * (1 - SLACK):
        j.add("undetermined", f"{text}; a law needs >= {RANGE_WEAK:g}x", advice, action)
    elif span < RANGE_RELIABLE * (1 - SLACK):
        j.add("weak", f"{text}; reliable needs >= {RANGE_RELIABLE:g}x", advice, action)


def _extrapolation(j: _Judgement, law: LawFit, at: dict, held_out: dict | None = None) -> None:
    """A law is trusted about as far beyond its data as its data reach: an extrapolation up to the fitted span
    (judged C / largest fitted C <= largest / smallest fitted C) is reliable, up to its square weak. And no further
    than its measured held-out error allows: refitted without the largest budget, the law missed that budget by
    e from an extrapolation of f_h; an error that grows with the log of the distance reaches
    e ln(factor) / ln(f_h) at the judged point, and is held to the same limits as the interval."""
    factor = law.extrapolation(**at)
    if factor <= 1.0:
        return
    if held_out and held_out.get("relative_error") is not None and held_out.get("extrapolation", 1.0) > 1 + SLACK:
        missed = abs(np.log1p(held_out["relative_error"]))
        grown = missed * np.log(factor) / np.log(held_out["extrapolation"])
        if law.kind in ("saturating", "chinchilla"):
            limits, shown = (np.log1p(LOSS_RELIABLE), np.log1p(LOSS_WEAK)), f"{np.expm1(grown):.1%}"
        else:
            limits, shown = (np.log(FACTOR_RELIABLE), np.log(FACTOR_WEAK)), f"x{np.exp(grown):.3g}"
        text = (f"refitted without the largest budget, the law missed it by {held_out['relative_error']:+.1%} from a "
                f"x{held_out['extrapolation']:.3g} extrapolation; at x{factor:.3g} that error grows to about {shown}")
        if grown > limits[1]:
            j.add("undetermined", text, "add budgets towards the target", _next_budget(law))
        elif grown > limits[0]:
            j.add("weak", text, "add budgets towards the target", _next_budget(law))
    spans = [hi / lo for var, (lo, hi) in law.fitted_range.items() if var in at and lo > 0]
    span = max(spans) if spans else 1.0
    where = ", ".join(f"{k} = {fmt(v)}" for k, v in at.items())
    text = f"judged at {where}, {factor:.3g}x beyond the fitted range, which spans {span:.3g}x"
    if factor > span**2 * (1 + SLACK):
        j.add("undetermined", f"{text} (weak up to {span**2:.3g}x)", f"add budgets towards {where}",
              _next_budget(law))
    elif factor > span * (1 + SLACK):
        j.add("weak", f"{text} (reliable up to {span:.3g}x)", f"add budgets towards {where}", _next_budget(law))


def _interval_factor(j: _Judgement, law: LawFit, at: dict, relative: bool) -> None:
    p = law.predict(**at)
    where = ", ".join(f"{k} = {fmt(v)}" for k, v in at.items())
    if p.interval is None:
        j.add("undetermined", f"no interval at {where} ({'; '.join(law.notes) or law.method})",
              "add budgets or seeds so the law has an interval", _next_budget(law))
        return
    lo, hi = p.interval
    if relative:
        half = max(hi - p.value, p.value - lo) / abs(p.value) if p.value else float("inf")
        text = f"95% interval at {where} is [{fmt(lo)}, {fmt(hi)}], +-{half:.1%} of {fmt(p.value)}"
        level = "reliable" if half <= LOSS_RELIABLE else "weak" if half <= LOSS_WEAK else "undetermined"
        limit = LOSS_RELIABLE if level == "weak" else LOSS_WEAK
        j.add(level, f"{text} (limit {limit:.0%})")
        return
    if p.value <= 0 or lo <= 0:
        j.add("undetermined", f"95% interval at {where} reaches zero or below ([{fmt(lo)}, {fmt(hi)}])")
        return
    factor = max(hi / p.value, p.value / lo)
    text = f"95% interval at {where} is [{fmt(lo)}, {fmt(hi)}], x{factor:.3g} around {fmt(p.value)}"
    level = "reliable" if factor <= FACTOR_RELIABLE else "weak" if factor <= FACTOR_WEAK else "undetermined"
    limit = FACTOR_RELIABLE if level == "weak" else FACTOR_WEAK
    j.add(level, f"{text} (limit x{limit:g})")


def _model_form(j: _Judgement, law: LawFit, at: dict) -> None:
    """Model-form error: the law's plausible other forms (its diagnostics' "forms": a loss law without its floor,
    an lr law through symmetric bowls), fitted to the same data. When one of them lands outside this law's 95%
    interval at the judged point, the interval does not carry the dominant error, and the verdict says so."""
    forms = (law.diagnostics or {}).get("forms") or {}
    p = law.predict(**at)
    if not forms or p.interval is None:
        return
    lo, hi = p.interval
    where = ", ".join(f"{k} = {fmt(v)}" for k, v in at.items())
    own = (law.diagnostics or {}).get("held_out_error")
    for name, form in forms.items():
        other = LawFit.from_dict(name, form).value(**at)
        if lo <= other <= hi:
            continue
        text = (f"model form: {name} gives {fmt(other)} at {where}, outside this law's 95% interval "
                f"[{fmt(lo)}, {fmt(hi)}]")
        if own is not None and form.get("held_out_error") is not None:
            text += (f" (error at the held-out largest budget: this form {own:+.2%}, "
                     f"{name} {form['held_out_error']:+.2%})")
        j.add("weak", text, "add budgets beyond the largest, where the forms part", _next_budget(law))


def fixed_variable(law: LawFit) -> tuple[str, float] | None:
    """("N", value) when the law is one of C whose N never moved (C moved only through D), ("D", value) the other
    way round; None when both moved, or the law says nothing of what moved."""
    moved = (law.diagnostics or {}).get("moved")
    if not moved or "C" not in law.variables:
        return None
    for fixed, other in (("N", "D"), ("D", "N")):
        (lo, hi), (o_lo, o_hi) = moved[fixed], moved[other]
        if hi <= lo * (1 + SLACK) and o_hi > o_lo * (1 + SLACK):
            return fixed, float(lo)
    return None


def _moved(j: _Judgement, law: LawFit) -> None:
    """A law of C claims that both N and D may grow; when one never moved, C moved through the other alone."""
    fixed = fixed_variable(law)
    if fixed is None:
        return
    var, value = fixed
    other = "D" if var == "N" else "N"
    j.add("weak", f"C moved only through {other} ({var} = {fmt(value)} in every run): {law.name}(C) holds at "
                  f"that {var}; at another {var} it is unsupported",
          f"sweep several {'model sizes' if var == 'N' else 'token counts'} per budget (a ladder or IsoFLOP "
          f"sweep)" + (", or use lr_opt_nd" if law.name == "lr_opt" else ""))


def _fit_quality(j: _Judgement, law: LawFit) -> None:
    d = law.diagnostics or {}
    if d.get("undetermined"):
        j.add("undetermined", f"the data cannot determine {', '.join(d['undetermined'])} (a direction of the "
                              f"parameters no point moves)", f"widen the swept range of {', '.join(law.variables)}")
    lof = d.get("lack_of_fit") or {}
    excess = lof.get("p") is not None and lof["p"] < LACK_OF_FIT_P
    if law.kind == "saturating" and d.get("curvature") == "concave" and not excess:
        hi = law.fitted_range.get("C", [0, 0])[1]
        j.add("undetermined", f"the losses bend the other way from {law.formula} (concave in log-log: they fall "
                              f"faster as C grows, an early-training transient; the law only bends towards a "
                              f"floor), so beyond the fitted budgets it extrapolates its form, not the data",
              f"add budgets above {fmt(hi)}, where the losses start to flatten", _next_budget(law))
        return
    if excess and d.get("pinned"):
        hi = law.fitted_range.get("C", [0, 0])[1]
        shape = (" (concave in log-log: the losses fall faster as C grows, an early-training transient rather than "
                 "an approach to a floor)" if d.get("curvature") == "concave" else "")
        j.add("undetermined", f"the losses do not follow {law.formula} over the fitted budgets{shape}: with "
                              f"{'; '.join(d['pinned'])}, they still scatter {lof['birge']:.2g}x beyond the runs' "
                              f"noise (chi2 {lof['chi2']:.3g} on {lof['dof']} dof)",
              f"add budgets above {fmt(hi)}, where the losses start to flatten", _next_budget(law))
        return
    if excess:
        j.add("weak", f"the points scatter about the law {lof['birge']:.2g}x more than the runs' noise explains "
                      f"(chi2 {lof['chi2']:.3g} on {lof['dof']} dof, p = {lof['p']:.2g}); intervals widened by that",
              "check the law's form, or add seeds")
    if d.get("dof") == 0 and not lof.get("dof"):
        j.add("weak", f"{law.n_points} points for {law.n_points} parameters: the form itself is not tested",
              "add a budget", _next_budget(law))
    for p in d.get("pinned") or []:
        j.add("weak", p, "add budgets above the largest: the loss is not yet bending towards a floor",
              _next_budget(law))


def _held_out(j: _Judgement, item: dict | None, what: str) -> None:
    """The held-out budget's measurement against the interval a measurement should fall in (the law's, widened by
    the measurement's own noise)."""
    if not item or item.get("interval") is None:
        return
    lo, hi = item["interval"]
    if not lo <= item["achieved"] <= hi:
        j.add("weak", f"held-out check: {what} predicted {fmt(item['predicted'])}, a measurement expected in "
                      f"[{fmt(lo)}, {fmt(hi)}], measured {fmt(item['achieved'])}", "add budgets or seeds")


def _optima(j: _Judgement, groups: pd.DataFrame | None) -> None:
    if groups is None or groups.empty:
        return
    n_int = int(groups["interior"].sum())
    for _, g in groups.iterrows():
        where = f"C = {fmt(g['C'])}"
        at = {"C": float(g["C"]), "budget": float(g.get("budget", g["C"]))}
        if g["edge"] == "below":
            j.add("weak", f"the lr optimum at {where} is at or below the lowest lr swept ({fmt(g['lr_min'])})",
                  f"widen lr downwards at {where} (below {fmt(g['lr_min'])})",
                  {"kind": "widen_lr", **at, "direction": "down", "lr": float(g["lr_min"])})
        elif g["edge"] == "above":
            j.add("weak", f"the lr optimum at {where} is at or above the highest lr swept ({fmt(g['lr_max'])})",
                  f"widen lr upwards at {where} (above {fmt(g['lr_max'])})",
                  {"kind": "widen_lr", **at, "direction": "up", "lr": float(g["lr_max"])})
        elif g["edge"] == "none":
            j.add("weak", f"no upward lr bowl at {where} (the best run stands in)",
                  f"add learning rates or seeds at {where}", {"kind": "add_lrs", **at})
        spread = g.get("seed_sd")
        spread = spread if spread is not None and np.isfinite(spread) else g.get("noise_sd")
        gap = g.get("step_gap")
        if spread is not None and gap is not None and np.isfinite(spread) and np.isfinite(gap):
            if spread / np.sqrt(max(1, g["n_seeds"])) > gap:
                j.advise(f"add a seed at {where}: spread {spread:.2g} nats against a {gap:.2g} gap between "
                         f"neighbouring learning rates", {"kind": "add_seed", **at})
    if n_int < MIN_INTERIOR:
        j.add("undetermined", f"{n_int} of {len(groups)} budgets have an lr bowl with its vertex inside the swept "
                              f"range (need {MIN_INTERIOR})")


def judge(law: LawFit, target_flops: float | None = None, groups: pd.DataFrame | None = None,
          held_out: dict | None = None) -> dict:
    """The verdict of one law (see the module docstring), judged at the target (or 3x the largest budget)."""
    j = _Judgement()
    at = judged_point(law, target_flops)
    key = HELD_OUT_ITEMS.get(law.name)
    item = (held_out or {}).get(key) if key else None
    _range(j, law)
    _extrapolation(j, law, at, item)
    _interval_factor(j, law, at, relative=law.kind in ("saturating", "chinchilla"))
    _model_form(j, law, at)
    _moved(j, law)
    _fit_quality(j, law)
    if law.name in HYPERPARAMETER_LAWS:
        _optima(j, groups if law.name == "lr_opt" else None)
    _held_out(j, item, key or law.name)
    return j.result(at)


def el_verdict(el: float, interval: list[float] | None) -> str:
    """reliable / weak / undetermined for one efficiency leverage with its interval."""
    if interval is None or not np.all(np.isfinite(interval)) or interval[0] <= 0:
        return "undetermined"
    factor = max(interval[1] / el, el / interval[0])
    return "reliable" if factor <= EL_RELIABLE else "weak" if factor <= EL_WEAK else "undetermined"
