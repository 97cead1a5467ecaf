"""A fit's outputs, written in one place for the CLI, notebooks and cluster jobs alike: fit.json (every law with
its verdict and resamples, the optima, the leverage table, the recommendation), recommended.overrides, the
verification sweep verify.yaml, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

from scaling.fit.inputs import Runs
from scaling.fit.report import FitReport, json_safe


def default_output_dir(results_dir: Path, sweep: str | None, source: str | None) -> Path:
    """<results>/<sweep>/fit for a sweep of the results store, ./fit for a CSV or W&B source."""
    from scaling.store import fit_dir

    return fit_dir(results_dir, sweep) if source is None else Path("fit")


def write_fit_outputs(report: FitReport, runs: Runs, out_dir: Path, recommendation=None, plots: bool = True,
                      verify: dict | None = None) -> dict[str, object]:
    """Write everything a fit produces under `out_dir`; returns what was written (paths, and why a verification
    sweep could not be written) and the fit.json object itself ("payload"). `verify`: keyword arguments of
    `verify.verification_sweep`, or None for none."""
    from scaling.store import atomic_write_text

    out_dir = Path(out_dir)
    written: dict[str, object] = {}
    payload = report.as_json()
    if recommendation is not None:
        payload["recommendation"] = json_safe(recommendation.as_dict())
        path = out_dir / "recommended.overrides"
        atomic_write_text(path, "\n".join(recommendation.overrides) + "\n")
        written["overrides"] = path
    fit_json = out_dir / "fit.json"
    if verify is not None and "config" in runs.df.columns:
        from scaling.advise.verify import verification_sweep, write_sweep_yaml
        from scaling.fit.inputs import InputError

        try:
            config = verification_sweep(report, runs.df, fit_json, **verify)
            payload["verification"] = config
            written["verify"] = write_sweep_yaml(out_dir / "verify.yaml", config)
            written["verify_name"] = config["name"]
        except InputError as e:
            written["verify_skipped"] = str(e)
    atomic_write_text(fit_json, json.dumps(payload, indent=1, allow_nan=False))
    written["fit"], written["payload"] = fit_json, payload
    if plots:
        from scaling.fit.plots import plot_all

        written["figures"] = plot_all(report, runs.df, out_dir)
    return written
