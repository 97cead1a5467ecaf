"""The one reader of a fit's JSON (fit.json, or a published-laws file such as sweeps/published/ling_moe.json): its laws
and the FLOPs convention their C is in. Numbers only: a law is rebuilt from its kind and parameters
(`fit/law.py`), never evaluated from text.

A file without a `convention` (the published-laws presets), or with one that names no run convention (a fit of a
CSV: "as given (CSV)"), is read in the M convention, the trainer's own (flops.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scaling.fit.law import FitError, LawFit, laws_from_json
from scaling.flops import CONVENTIONS

DEFAULT_CONVENTION = "M"
POWER_VARIABLES = ("C", "N", "D")
"""The variables a law read back into a run can have (advise/compute.law_variables gives a run's values)."""


@dataclass(frozen=True)
class FitFile:
    """What a fit's JSON says to the code that turns laws into runs."""

    path: Path
    laws: dict[str, LawFit]
    convention: str = DEFAULT_CONVENTION
    """The FLOPs convention of every C in the laws (one of flops.CONVENTIONS)."""
    payload: dict = field(default_factory=dict, repr=False)
    """The whole JSON object (recommendation, verification, ...), as read."""

    def power_law(self, name: str, variables: tuple[str, ...] | None = ("C",)) -> LawFit:
        """The law `name` of the form a * C^b (`variables` None: a power law in any of C, N and D, e.g. lr_opt_n,
        a * N^b); a FitError naming the file when it has none."""
        law = self.laws.get(name)
        usable = law is not None and law.kind == "power" and (
            law.variables == variables if variables is not None else set(law.variables) <= set(POWER_VARIABLES))
        if not usable:
            form = "a * C^b" if variables == ("C",) else "a power law in " + ", ".join(variables or POWER_VARIABLES)
            raise FitError(f"law file {self.path} has no usable {name!r} law ({form}): regenerate it with "
                           f"`scaling fit`")
        return law


def read_fit(path: str | Path, search: list[Path] | None = None) -> FitFile:
    """Read a fit's JSON. A relative path also resolves along the config search path (`published/ling_moe.json` is a
    preset); a missing, unreadable or malformed file is a FitError naming it and the fix."""
    from scaling.compose import find_file

    p = find_file(path, search) if search is not None else Path(path)
    try:
        payload = json.loads(p.read_text())
    except FileNotFoundError:
        raise FitError(f"laws file {p} not found: run `scaling fit SWEEP` first (it writes fit.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FitError(f"laws file {p} is not readable JSON ({type(e).__name__}): regenerate it with "
                       f"`scaling fit`") from None
    try:
        laws = laws_from_json(payload)
    except FitError as e:
        raise FitError(f"{p}: {e}") from None
    convention = payload.get("convention")
    return FitFile(path=p, laws=laws, payload=payload,
                   convention=convention if convention in CONVENTIONS else DEFAULT_CONVENTION)
