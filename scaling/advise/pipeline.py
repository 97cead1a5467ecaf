"""One fit from its inputs to its files, for the CLI, notebooks and cluster jobs alike: choose the sweep, load its
runs (fit/inputs.py), fit every law (fit/report.py), recommend a run at a target budget (advise/recommend.py), and
write fit.json, recommended.overrides, verify.yaml and the figures (advise/outputs.py).

    from scaling.advise.pipeline import FitOptions, fit_sweep
    result = fit_sweep("results", FitOptions(sweep="demo", target_flops=3e12))
    result.report.laws, result.recommendation.items, result.written["fit"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scaling.fit.columns import BUDGET_TOLERANCE
from scaling.fit.inputs import InputError, Runs, load_runs
from scaling.fit.report import FitReport


@dataclass
class FitOptions:
    """What to fit and what to write (the options of `scaling fit`)."""

    sweep: str | None = None
    """The sweep to fit: its folder under the results directory, or its W&B group with a wandb: source; may be
    omitted when there is only one (several are refused unless all_sweeps)."""
    all_sweeps: bool = False
    """Pool the runs of every sweep (their losses must be comparable: same data)."""
    source: str | None = None
    """A CSV of runs, or wandb:ENTITY/PROJECT (runs `scaling` logged; with mapping, any trainer's: their config keys
    dotted and summary metrics as columns) (default: the results directory)."""
    mapping: str | None = None
    """Read the CSV's columns under our names: 'params=Model Size,flops=Training FLOP' (the columns and their units
    are listed below and in docs/guide/fit.md)."""
    seq_len: int | None = None
    """Sequence length when the CSV's batch is in sequences."""
    budget_tolerance: float = BUDGET_TOLERANCE
    """A CSV without a budget column: runs whose FLOPs lie within this fraction of each other share a budget (one lr
    bowl per size), as a trainer logs the tokens each run saw, slightly off the nominal count."""
    optimum: str = "quadratic"
    """How a budget's optimum is read: quadratic, or near-optimal[:TOL] (default TOL 0.0025)."""
    convention: str = "M"
    """FLOPs convention of C (flops.CONVENTIONS)."""
    bootstrap: int = 1000
    """Run-level resamples for the intervals (0: Student-t intervals from the fitted points alone)."""
    allow_mixed_data: bool = False
    """Fit runs of different data sets together."""
    target_flops: float | None = None
    """Recommend lr, batch, A, G, size, tokens and loss for a run of this many FLOPs (and judge the laws there;
    default 3x the largest budget)."""
    memory_per_gpu_gb: float | None = None
    """With target_flops: memory of one GPU, GiB (80 for an H100); the recommended activation ratio is then the
    best the leverage law allows whose model fits (advise/affordable.py)."""
    gpus: int = 1
    """With memory_per_gpu_gb: how many such GPUs the recommended run gets."""
    output: Path | None = None
    """Folder of the outputs (default: <results>/<sweep>/fit, or ./fit for other sources)."""
    verify_at: float | None = None
    """Budget of the verification sweep written to verify.yaml (default 3x the largest fitted budget)."""
    verify_lr_factors: tuple[float, ...] | None = None
    """Factors of the predicted lr the verification sweep trains (default 0.5, 1, 2)."""
    verify_seeds: tuple[int, ...] | None = None
    """Seeds of the verification sweep (default: as swept)."""
    plots: bool = True
    """Write the figures (PNG and SVG) to the output folder."""


@dataclass
class FitResult:
    """A finished fit: what was fitted, recommended and written."""

    sweep: str | None
    runs: Runs
    report: FitReport
    recommendation: object | None
    out_dir: Path
    written: dict = field(default_factory=dict)
    """Paths written (fit, overrides, verify, figures), why a verification sweep was not written, and the fit.json
    object itself (payload); see outputs.write_fit_outputs."""


def only_sweep(results_dir: Path) -> str | None:
    """The one sweep of the results folder (None when there is none: loading says why); several are refused
    (pooling them must be asked for)."""
    from scaling.store import list_sweeps

    sweeps = list_sweeps(results_dir)
    if len(sweeps) <= 1:
        return sweeps[0] if sweeps else None
    raise InputError(f"{len(sweeps)} sweeps under {results_dir} ({', '.join(sweeps)}): name the one to fit, or pass "
                     f"--all to pool them")


def no_law_reason(runs: Runs, report: FitReport) -> str:
    n_budgets = runs.df["budget"].nunique()
    first = next(iter(report.excluded.values()), "")
    left_out = "; ".join(f"{n} {why}" for why, n in runs.excluded.items())
    return (f"no law can be fitted from {len(runs.df)} runs at {n_budgets} budget(s)" + (f" ({first})" if first else "")
            + (f" after leaving out {left_out} (named in the notes)" if left_out else "")
            + ": sweep more budgets or learning rates")


def fit_sweep(results_dir: Path, options: FitOptions, progress=None) -> FitResult:
    """Load, fit, recommend and write. Bad input (no runs, nothing fittable, a bad option): InputError or
    ValueError, raised before anything is written. `progress(stage)`: told each stage as it starts."""
    say = progress or (lambda stage: None)
    import warnings

    import numpy as np

    from scaling.advise.outputs import default_output_dir, write_fit_outputs
    from scaling.fit.optima import parse_method
    from scaling.fit.report import fit_all
    from scaling.flops import CONVENTIONS

    o = options
    parse_method(o.optimum)  # a bad option fails before any data is read
    if o.source is None and o.convention not in CONVENTIONS:
        raise InputError(f"--convention {o.convention!r} is not one of {', '.join(CONVENTIONS)}")
    sweep = o.sweep
    if sweep is not None and o.all_sweeps:
        raise InputError(f"give a sweep ({sweep!r}) or --all, not both")
    if sweep is None and not o.all_sweeps and o.source is None:
        sweep = only_sweep(Path(results_dir))
    runs = load_runs(o.source, Path(results_dir), sweep, o.mapping, o.seq_len, o.convention, o.allow_mixed_data,
                     o.budget_tolerance)
    # Resamples at the edge of a law's range overflow or divide by zero; every law keeps such values as inf or NaN
    # and says what it dropped, so numpy's RuntimeWarnings are noise on the user's terminal, not news.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        say(f"{len(runs.df)} runs from {runs.source}")
        report = fit_all(runs, optimum=o.optimum, n_boot=o.bootstrap, target_flops=o.target_flops, progress=say)
    if not report.laws and report.optima is None and report.precision is None:
        raise InputError(no_law_reason(runs, report))
    recommendation = None
    if o.target_flops is not None:
        from scaling.advise.recommend import recommend

        recommendation = recommend(report, runs.df, o.target_flops, memory_per_gpu_gb=o.memory_per_gpu_gb,
                                   gpus=o.gpus)
    out_dir = Path(o.output) if o.output else default_output_dir(Path(results_dir), sweep, o.source)
    verify: dict = {"budget_flops": o.verify_at, "seeds": tuple(int(s) for s in o.verify_seeds) if o.verify_seeds
                    else None}
    if o.verify_lr_factors:
        verify["lr_factors"] = tuple(o.verify_lr_factors)
    say("writing fit.json" + (", the recommendation" if recommendation else "") + (" and figures" if o.plots else ""))
    written = write_fit_outputs(report, runs, out_dir, recommendation, plots=o.plots, verify=verify)
    return FitResult(sweep, runs, report, recommendation, out_dir, written)
