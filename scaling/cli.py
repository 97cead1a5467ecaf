"""The `scaling` command line. Thin: parse, call library functions, print. Heavy imports happen inside commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="A laboratory for Mixture-of-Experts scaling laws: train, sweep and fit small MoE models. Results go to "
         "stdout, progress and logs to stderr.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OVERRIDES_HELP = (
    "Hydra overrides, e.g. budget_flops=1e12 train.lr=4e-3 model.n_experts=16 model=tiny_dense "
    "wandb.mode=disabled. Keys are documented in scaling/config.py; --show-config prints them resolved."
)


def _version(value: bool) -> None:
    if value:
        from scaling import __version__

        print(f"scaling {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """A laboratory for Mixture-of-Experts scaling laws."""


RESULTS_HELP = "Results directory (default: $SCALING_RESULTS or ./results)."
CONFIG_DIR_HELP = ("Folder of your own configs (sweep YAMLs, model/, launcher/), searched before the presets "
                   "(default: ./sweeps when it exists).")
SHOW_CONFIG_HELP = "Print the resolved config (YAML) on stdout and exit; Hydra's `--cfg job` does the same."


def _wants_config(show_config: bool, cfg: str | None) -> bool:
    if cfg is not None and cfg != "job":
        _fail(f"--cfg {cfg!r}: only `--cfg job` (the resolved config) is supported")
    return show_config or cfg == "job"


def _print_yaml(config) -> None:
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(OmegaConf.structured(config)), end="")


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def train(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the derived run (params, M, tokens, steps); train nothing."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the live progress bar (stderr)."),
    overrides_file: str | None = typer.Option(None, "--overrides-file", help="A file of key=value overrides, one "
                                              "per line (e.g. a `scaling fit` recommendation), applied first."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    config_dir: str | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    show_config: bool = typer.Option(False, "--show-config", help=SHOW_CONFIG_HELP),
    cfg: str | None = typer.Option(None, "--cfg", hidden=True),
) -> None:
    """Train one MoE run to a compute budget (FLOPs) and record it under the results directory."""
    _fast_cpu_matmuls()
    from scaling.compose import compose, search_path, with_updates
    from scaling.config import ConfigError, resolve_results_dir
    from scaling.data import DataError
    from scaling.store import StoreError, record_path
    from scaling.tables import run_plan_table, run_result_line

    out, err = _console(stderr=False), _console()
    try:
        run = compose(_read_overrides_file(overrides_file, list(overrides or [])) + list(overrides or []),
                      search_path(config_dir))
        if results_dir is not None:
            run = with_updates(run, {"results_dir": results_dir})
        if _wants_config(show_config, cfg):
            _print_yaml(run)
            return
        from scaling.data import describe
        from scaling.run import plan_run

        plan = plan_run(run, describe(run.data, required=False) if dry_run else None)
    except (ConfigError, DataError, StoreError) as e:
        _fail(str(e))
    out.print(run_plan_table(plan))
    if dry_run:
        return
    rec_path = record_path(resolve_results_dir(run), run.sweep, plan.run_id)
    from scaling.claims import ClaimError
    from scaling.train import train as train_run

    try:
        record = train_run(run, show_progress=progress, console=err)
    except (ConfigError, DataError, StoreError, ClaimError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; re-run the same command to resume (record {rec_path})", code=130)
    except Exception as e:
        _fail(f"run {plan.run_id} failed: {type(e).__name__}: {e} (record {rec_path})", code=1)
    out.print(run_result_line(record, rec_path), soft_wrap=True)
    if record["status"] == "diverged":
        raise typer.Exit(3)


def _fast_cpu_matmuls() -> None:
    """The commands that train switch MKL to its AVX-512 kernels on AMD CPUs first (scaling/cpu_blas.py)."""
    from scaling import cpu_blas

    cpu_blas.enable()


TABLE_WIDTH = 100
"""Columns of a table printed to a pipe or a log without $COLUMNS (a terminal's own width otherwise)."""
WIDE_WIDTH = 250
WIDE_HELP = "Every column, long texts inside the tables (up to 250 columns; default: short columns, notes below)."


def _console(stderr: bool = True, wide: bool = False):
    """A rich console. Results (stdout): the terminal's width ($COLUMNS, else TABLE_WIDTH when not a terminal:
    logs, pipes), WIDE_WIDTH with `wide`. Progress and messages (stderr): WIDE_WIDTH when not a terminal, so a
    log keeps each message on one line."""
    import os

    from rich.console import Console

    console = Console(stderr=stderr)
    if wide or (stderr and not console.is_terminal):
        console.width = WIDE_WIDTH
    elif not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = TABLE_WIDTH
    return console


def _read_overrides_file(path: str | None, given: list[str] | None = None) -> list[str]:
    """`key=value` lines (blank lines and # comments skipped); plain strings for Hydra, never evaluated. A setting
    the file marks missing (a recommendation no law could complete) must be in `given` (the command line)."""
    if path is None:
        return []
    from pathlib import Path

    from scaling.advise.recommend import missing_settings
    from scaling.config import ConfigError

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"--overrides-file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--overrides-file {path}: not a text file of key=value lines") from None
    keys = {item.split("=", 1)[0].lstrip("+~") for item in given or []}
    gaps = [k for k in missing_settings(lines) if k not in keys]
    if gaps:
        raise ConfigError(f"--overrides-file {path} has no {', '.join(gaps)} (no law supports it: see the file): "
                          f"give {' '.join(f'{k}=VALUE' for k in gaps)} on the command line")
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _results_dir(option: str | None):
    from scaling.config import results_root

    return results_root(option)


WORKER_FLAGS = {"workers": "launcher.workers", "runs_per_gpu": "launcher.runs_per_gpu",
                "gpus_per_run": "launcher.gpus_per_run", "device": "launcher.device"}
"""`scaling sweep` flags that are shorthands for launcher config keys (one set of worker settings)."""


@app.command()
def sweep(
    config: str = typer.Argument(..., help="Sweep name (./sweeps/NAME.yaml or --config-dir, else a preset such "
                                 "as demo) or a YAML path."),
    overrides: list[str] | None = typer.Argument(None, help="Hydra overrides of the sweep config, e.g. "
                                                 "'budgets=[1e11,3e11]' name=my_sweep; run keys "
                                                 "(model.n_experts=16, train.schedule=wsd) and base+=ENTRY add "
                                                 "to its base, base=[...] replaces it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (cells, totals, time estimate); no runs."),
    fmt: str = typer.Option("table", "--format", help="With --dry-run: table, or every cell's resolved config and "
                            "derived quantities as csv, json or jsonl on stdout, for another launcher or trainer "
                            "(scaling/sweep/export.py)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes on CPU "
                                       "(launcher.workers, default 1)."),
    runs_per_gpu: int | None = typer.Option(None, "--runs-per-gpu", min=1, help="Cells run side by side on each "
                                            "GPU (launcher.runs_per_gpu, default 1)."),
    gpus_per_run: int | None = typer.Option(None, "--gpus-per-run", min=1, help="GPUs per cell (torchrun, data "
                                            "parallel; on CPU: processes per cell; launcher.gpus_per_run)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also retry cells whose last attempt failed."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Time a few steps per model for the estimate."),
    device: str | None = typer.Option(None, "--device", help="auto (all visible GPUs, else CPU) or cpu "
                                      "(launcher.device)."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    wandb_mode: str | None = typer.Option(None, "--wandb", help="W&B mode for every cell: auto, online, "
                                             "offline or disabled (default: the config's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the live progress display."),
    wait: bool = typer.Option(False, "--wait", help="launcher=slurm: follow the submitted cells until they "
                              "settle (Ctrl-C stops following; the jobs go on)."),
    config_dir: str | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
    show_config: bool = typer.Option(False, "--show-config", help=SHOW_CONFIG_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
    cfg: str | None = typer.Option(None, "--cfg", hidden=True),
) -> None:
    """Plan a sweep of MoE runs (budgets x axes), print it, and train every cell not yet done: here
    (launcher=local, the default) or as a Slurm job array (launcher=slurm; see README, Running on a Slurm
    cluster)."""
    _fast_cpu_matmuls()  # the launcher's own probes train a few steps
    from scaling.sweep.export import FORMATS

    if fmt not in FORMATS:
        _fail(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "table" and not dry_run:
        _fail(f"--format {fmt} writes the plan as data: add --dry-run (nothing is trained then)")
    flags = {"workers": workers, "runs_per_gpu": runs_per_gpu, "gpus_per_run": gpus_per_run, "device": device}
    worker_overrides = [f"{WORKER_FLAGS[k]}={v}" for k, v in flags.items() if v is not None]
    out, console = _console(stderr=False, wide=wide), _console()
    results = _results_dir(results_dir)
    plan, sweep_cfg = _plan(config, list(overrides or []) + worker_overrides, config_dir, results, wandb_mode,
                            _wants_config(show_config, cfg), console, data_required=not dry_run)
    if plan is None:
        return
    if fmt != "table":
        import sys

        from scaling.sweep.export import render

        sys.stdout.write(render(plan, fmt))
        return
    slurm = sweep_cfg.launcher.kind == "slurm"
    if slurm and not dry_run:
        from scaling.sweep.slurm import SlurmError, require_slurm

        try:
            require_slurm()
        except SlurmError as e:
            _fail(str(e))
    from scaling.sweep.estimate import estimate_sweep_seconds, sweep_wall_seconds
    from scaling.tables import sweep_table

    external = sweep_cfg.launcher.kind == "command"  # your trainer: timing ours would say nothing of it
    estimates = estimate_sweep_seconds(plan) if probe and not external else {}
    wall = sweep_wall_seconds(estimates, sweep_cfg.launcher) if estimates else None
    out.print(sweep_table(plan, estimates, wall, wide=wide))
    if dry_run:
        return
    if slurm:
        _submit_to_slurm(plan, retry_failed, wait, progress, config, console)
    else:
        _launch_here(plan, retry_failed, progress, config, out, console)


def _plan(config: str, overrides: list[str], config_dir, results, wandb_mode, show_config: bool, console,
          data_required: bool = True):
    """(plan, sweep config) of `scaling sweep`, or (None, config) after printing the config; bad input exits 2.
    A dry run (data_required=False) plans data that is not on this machine from data.train_tokens."""
    from scaling.config import ConfigError
    from scaling.data import DataError
    from scaling.store import StoreError
    from scaling.sweep.plan import PlanError, compose_sweep, plan_sweep

    try:
        sweep_cfg = compose_sweep(config, overrides, config_dir)
        if show_config:
            _print_yaml(sweep_cfg)
            return None, sweep_cfg
        for note in sweep_cfg.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        return plan_sweep(sweep_cfg, results_dir=str(results), wandb_mode=wandb_mode,
                          data_required=data_required), sweep_cfg
    except PlanError as e:
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (ConfigError, DataError, StoreError) as e:
        _fail(str(e))


def _launch_here(plan, retry_failed: bool, progress: bool, config: str, out, console) -> None:
    from scaling.store import StoreError
    from scaling.sweep.local import launch

    try:
        counts = launch(plan, retry_failed=retry_failed, console=console, show_progress=progress)
    except StoreError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; re-run the same command to resume (state: `scaling status {plan.name}`)", code=130)
    if counts.get("terminated"):
        _fail(f"stopped on SIGTERM with checkpoints saved; re-run the same command to resume (state: `scaling status "
              f"{plan.name}`)", code=143)
    _show_final_status(plan.results_dir, plan.name, f"scaling sweep {config} --retry-failed", out, console)
    if counts.get("skipped"):
        console.print(f"{counts['skipped']} cell(s) were taken by another launcher")


def _submit_to_slurm(plan, retry_failed: bool, wait: bool, progress: bool, config: str, console) -> None:
    from scaling.store import StoreError
    from scaling.sweep.slurm import SlurmError, submit
    from scaling.sweep.slurm import wait as follow

    try:
        sub = submit(plan, retry_failed=retry_failed)
    except (SlurmError, StoreError) as e:
        _fail(str(e))
    busy = f"; {sub['busy']} cell(s) already queued or running" if sub["busy"] else ""
    if sub["job"] is None:
        console.print(f"sweep {plan.name}: nothing to submit{busy}")
    else:
        arrays = (f"Slurm job array {sub['job']} ({sub['tasks']} task(s), {sub['time_min']} min limit each)"
                  if len(sub["jobs"]) == 1 else f"{len(sub['jobs'])} Slurm job arrays {', '.join(sub['jobs'])} "
                  f"({sub['tasks']} task(s), limits up to {sub['time_min']} min)")
        console.print(f"sweep {plan.name}: submitted {sub['cells']} cell(s) as {arrays}{busy}. Follow it with "
                      f"`scaling status {plan.name}`")
    print(" ".join(sub["jobs"]))  # stdout: the job ids alone, for scripts
    if not wait:
        return
    try:
        follow(plan.results_dir, plan.name, [c.run_id for c in plan.cells], console=console, show_progress=progress)
    except KeyboardInterrupt:
        _fail(f"stopped following; the jobs go on (`scaling status {plan.name}`)", code=130)
    _show_final_status(plan.results_dir, plan.name, f"scaling sweep {config} launcher=slurm --retry-failed",
                       _console(stderr=False), console)


def _show_final_status(results, sweep: str, retry_command: str, out, console) -> None:
    """The sweep's status table (stdout); exit 1 when cells failed, naming the command that retries them."""
    from scaling.sweep.status import cell_states, counts
    from scaling.tables import status_table, unreadable_lines

    states = cell_states(results, sweep)
    n = counts(states)
    out.print(status_table(sweep, states))
    for line in unreadable_lines(states):
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    if n["corrupt"]:
        console.print(f"{n['corrupt']} cell(s) have unreadable records (named above), left untouched: move them "
                      f"aside to re-run those cells")
    if n["failed"]:
        console.print(f"{n['failed']} cell(s) failed: see their logs; `{retry_command}` retries them")
    if n["failed"] or n["corrupt"]:
        raise typer.Exit(1)


@app.command()
def bench(
    overrides: list[str] | None = typer.Argument(None, help="Model/train overrides, e.g. model.d_model=128 "
                                                 "model.n_layers=4 train.batch_size=16 (with --sweep: the sweep's "
                                                 "overrides)."),
    sweep_name: str | None = typer.Option(None, "--sweep", help="Time every distinct model shape of this sweep "
                                          "config instead (on a GPU: keep each shape's MFU for the sweep's GPU "
                                          "plans)."),
    compile_model: bool = typer.Option(False, "--compile", help="Time the torch.compile'd step."),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Timed rounds (of 4 steps each)."),
    config_dir: str | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
) -> None:
    """Training-step speed of a model on this device: tokens/s, step time, MFU (FLOPs from flops.py over the
    device's peak). On a known GPU the MFU is kept per GPU and shape (scaling/gpus.py), and dry runs for that GPU
    cost those shapes at it."""
    _fast_cpu_matmuls()
    from scaling.compose import compose, search_path
    from scaling.config import ConfigError
    from scaling.probe import bench as bench_run
    from scaling.probe import bench_shapes

    if sweep_name:
        console = _console()
        plan, _ = _plan(sweep_name, overrides or [], config_dir, _results_dir(None), None, False, console,
                        data_required=False)

        def report(i: int, n: int, r: dict) -> None:
            m, t = r["run"].model, r["run"].train
            shape = f"d{m.d_model}L{m.n_layers} E{m.n_experts}k{m.top_k} x{t.micro_batch_size or t.batch_size}"
            if "error" in r:
                print(f"[{i}/{n}] {shape}: failed: {r['error']}", flush=True)
                return
            mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] else "MFU unknown (no peak)"
            kept = f", kept for {r['kept_for']}" if r["kept_for"] else ""
            print(f"[{i}/{n}] {shape}: {r['tokens_per_s']:,.0f} tokens/s, step {r['step_s'] * 1e3:.1f} ms, "
                  f"{mfu}{kept}", flush=True)

        results = bench_shapes([c.run for c in plan.cells], rounds=rounds, compile=compile_model, report=report)
        kept = [r for r in results if r.get("kept_for")]
        print(f"{len(results)} shape(s) of {plan.name} timed on {results[0].get('device', '?') if results else '-'}"
              + (f"; the MFU of {len(kept)} kept for {kept[0]['kept_for']}-costed plans" if kept else
                 "; nothing kept (MFU is kept on a known GPU only)"))
        if any("error" in r for r in results):
            raise typer.Exit(1)
        return
    try:
        run = compose(overrides or [], search_path(config_dir))
    except ConfigError as e:
        _fail(str(e))
    r = bench_run(run, rounds=rounds, compile=compile_model)
    how = ", ".join(str(v) for k, v in r["precision"].items() if k in ("precision", "linear"))
    print(f"device {r['device']}; batch {r['rows']} x {run.model.seq_len} tokens; {how}"
          + (" (compiled)" if compile_model else ""))
    if not r["device_str"].startswith("cuda"):
        from scaling import cpu_blas

        print(f"CPU matmuls: {cpu_blas.state().reason}")
    peak = r["peak"]
    print(f"step {r['step_s'] * 1e3:.1f} ms (min {r['step_s_min'] * 1e3:.1f}, max {r['step_s_max'] * 1e3:.1f}); "
          f"{r['tokens_per_s']:,.0f} tokens/s; {r['flops_per_token']:,.0f} FLOPs/token with the head; "
          + (f"MFU {r['mfu']:.1%} of a peak of {peak / 1e9:,.0f} GFLOP/s" if r["mfu"] else "MFU unknown (no peak)")
          + (f"; kept for {r['kept_for']} plans of this shape" if r["kept_for"] else ""))


@app.command()
def layout(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    overrides_file: str | None = typer.Option(None, "--overrides-file", help="A file of key=value overrides (e.g. "
                                              "a `scaling fit` recommendation), applied first."),
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="GPUs of the run (default: one pipeline)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", min=1, help="GPUs per node."),
    memory_per_gpu: float = typer.Option(80.0, "--memory-per-gpu", help="GiB of memory per GPU."),
    pp: int | None = typer.Option(None, "--pp", min=1, help="Pipeline stages (default: the fewest that fit)."),
    vpp: int = typer.Option(1, "--vpp", min=1, help="Virtual stages per rank (interleaved 1F1B when > 1)."),
    ep: int = typer.Option(1, "--ep", min=1, help="Expert-parallel ranks the routed experts are divided over."),
    micro_batches: int | None = typer.Option(None, "--micro-batches", min=1, help="Micro-batches per step "
                                             "(default: the batch over data-parallel ranks)."),
    micro_batch_rows: int = typer.Option(1, "--micro-batch-rows", min=1, help="Sequences per micro-batch."),
    mtp: int = typer.Option(0, "--mtp", min=0, help="Multi-token-prediction blocks after the decoder layers."),
    recompute: bool = typer.Option(False, "--recompute", help="Full activation recomputation."),
    tflops: float = typer.Option(346.0, "--tflops", help="Sustained TFLOP/s of one GPU (default: an H100's bf16 "
                                 "peak at 35% MFU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the layout as one JSON object instead."),
    config_dir: str | None = typer.Option(None, "--config-dir", help=CONFIG_DIR_HELP),
) -> None:
    """Lay a run out on a pipeline: the engines' even split against one balanced for the embedding, the head and
    the loss, each simulated, and the balanced one as Megatron-Core and torchtitan settings."""
    import json

    from scaling.compose import compose, search_path
    from scaling.config import ConfigError
    from scaling.layout.engines import torchtitan_toml
    from scaling.layout.plan import Cluster, LayoutError, plan_layout

    try:
        run = compose(_read_overrides_file(overrides_file, list(overrides or [])) + list(overrides or []),
                      search_path(config_dir))
        cluster = Cluster(gpus=gpus, gpus_per_node=gpus_per_node, memory_per_gpu_gb=memory_per_gpu, pp=pp, vpp=vpp,
                          ep=ep, microbatches=micro_batches, microbatch_rows=micro_batch_rows, mtp_layers=mtp,
                          recompute=recompute, flops_per_s=tflops * 1e12)
        plan = plan_layout(run.model, run.train.batch_size, cluster)
    except (ConfigError, LayoutError) as e:
        _fail(str(e))
    if as_json:
        print(json.dumps(plan.to_json(), indent=1))
        return
    out = _console(stderr=False)
    _print_layout(plan, out)
    out.print("torchtitan:\n" + torchtitan_toml(plan.torchtitan_fields()), highlight=False, soft_wrap=True,
              markup=False)


def _print_layout(plan, out) -> None:
    """A layout's table, its notes and its Megatron-Core flags (the flags on one line, to paste)."""
    from scaling.tables import layout_table

    out.print(layout_table(plan))
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False)
    out.print("Megatron-Core: " + " ".join(plan.megatron_flags()), highlight=False, soft_wrap=True, markup=False)


@app.command()
def status(
    sweep: str | None = typer.Argument(None, help="Sweep name (its folder under the results directory)."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per cell (state, detail, steps, "
                                 "log) instead of the table."),
    state: str | None = typer.Option(None, "--state", help="Only cells in these states, comma-separated: "
                                     "completed, diverged, failed, running, queued, interrupted, pending, corrupt."),
    budgets: bool = typer.Option(False, "--by-budget", help="One row per budget: its cells by state."),
    watch: float | None = typer.Option(None, "--watch", help="Print again every this many seconds until no cell "
                                       "is running or queued (Ctrl-C stops watching; nothing else stops)."),
) -> None:
    """Per-cell state of a sweep (or a summary of every sweep): done, running, queued (Slurm), failed, pending,
    with Slurm job ids and log paths."""
    import json
    import time

    from scaling.store import StoreError
    from scaling.sweep.status import by_budget, cell_states, moving, parse_states, sweep_counts
    from scaling.tables import budget_status_table, status_table, sweeps_table, unreadable_lines

    console = _console(stderr=False)
    results = _results_dir(results_dir)
    try:
        wanted = parse_states(state)
    except ValueError as e:
        _fail(str(e))
    if (wanted or budgets or watch) and sweep is None:
        _fail("--state, --by-budget and --watch need a sweep name")
    if watch is not None and not watch > 0:
        _fail(f"--watch {watch}: give a positive number of seconds")
    try:
        while True:
            if sweep is None:
                console.print(sweeps_table(results, sweep_counts(results)))
                return
            states = cell_states(results, sweep)
            shown = [s for s in states if wanted is None or s["state"] in wanted]
            if as_json:
                for cell in shown:
                    print(json.dumps(cell))
            elif budgets:
                console.print(budget_status_table(sweep, by_budget(shown)))
            else:
                console.print(status_table(sweep, shown, total=len(states)))
                for line in unreadable_lines(shown):
                    console.print(line, soft_wrap=True, highlight=False, markup=False)
            if watch is None or not moving(states):
                return
            time.sleep(watch)
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/]")
    except StoreError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        return


@app.command()
def cancel(
    sweep: str = typer.Argument(..., help="Sweep name (its folder under the results directory)."),
    cells: str | None = typer.Option(None, "--cells", help="Only the array tasks of these cells (run ids, "
                                     "comma-separated, as `scaling status` lists them)."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
) -> None:
    """Cancel a sweep's queued and running Slurm array tasks (scancel). Nothing recorded is lost: records and
    checkpoints stay, the cells checkpoint as they stop, and the next `scaling sweep` resumes them."""
    import shutil
    import subprocess

    from scaling.store import StoreError
    from scaling.sweep.slurm_queue import cancel as cancel_tasks

    if shutil.which("scancel") is None:
        _fail("scaling cancel needs Slurm (scancel not on PATH): run it on the cluster's login node")
    results = _results_dir(results_dir)
    ids = [c.strip() for c in cells.split(",") if c.strip()] if cells else None
    try:
        cancelled = cancel_tasks(results, sweep, ids)
    except StoreError as e:
        _fail(str(e))
    except subprocess.CalledProcessError as e:
        _fail(f"scancel refused: {(e.stderr or b'').decode(errors='replace').strip()[:300]}")
    console = _console(stderr=False)
    if not cancelled:
        console.print(f"sweep {sweep}: no queued or running Slurm task to cancel")
        return
    console.print(f"sweep {sweep}: cancelled {len(cancelled)} array task(s) ({', '.join(cancelled)}); records and "
                  f"checkpoints are kept: `scaling sweep` resumes the unfinished cells", highlight=False)


@app.command()
def runs(
    sweep: str | None = typer.Argument(None, help="Sweep name; all sweeps when omitted."),
    fmt: str = typer.Option("table", "--format", help="table, csv, parquet or json (csv, parquet and json hold "
                            "every column)."),
    columns: str | None = typer.Option(None, "--columns", help="Table columns to add, comma-separated record "
                                       "fields (e.g. results.tokens_per_s,config.model.d_model), or 'all'."),
    output: str | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
) -> None:
    """Every run record as one table (a pandas DataFrame: scaling.store.records_frame), sorted by sweep coordinates, or
    exported as CSV/Parquet/JSON."""
    import sys

    from scaling import store
    from scaling.tables import RunsColumnsError, runs_frame

    if fmt not in ("table", "csv", "parquet", "json"):
        _fail(f"--format {fmt!r} is not one of table, csv, parquet, json")
    if fmt == "parquet" and not output:
        _fail("--format parquet is binary: give --output FILE.parquet")
    try:
        df = store.records_frame(_results_dir(results_dir), sweep, on_error=_report_skipped)
    except store.StoreError as e:
        _fail(str(e))
    if df.empty:
        _fail(f"no run records{' in sweep ' + sweep if sweep else ''} under {_results_dir(results_dir)}")
    try:
        shown = runs_frame(df, columns.split(",") if columns else [], every=fmt != "table")
    except RunsColumnsError as e:
        _fail(str(e))
    if fmt == "table":
        text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    elif fmt == "csv":
        text = shown.to_csv(index=False)
    elif fmt == "json":
        text = shown.to_json(orient="records", indent=1)
    else:
        shown.to_parquet(output, index=False)
        return
    if output:
        from pathlib import Path

        from scaling.store import atomic_write_text

        atomic_write_text(Path(output), text)
    else:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


@app.command()
def diagnostics(
    sweep: str | None = typer.Argument(None, help="Sweep name; all sweeps when omitted."),
    cell: str | None = typer.Option(None, "--cell", help="Only the cells whose name (with its precision, QK-norm "
                                    "and seed: C1e12-...-fp8-noqknorm-s0) contains this text."),
    step: str = typer.Option("last", "--step", help="In the table: each run's 'last' or 'first' diagnostics step."),
    fmt: str = typer.Option("table", "--format", help="table (per run and layer), or csv (every step, layer, GEMM "
                            "and input kind)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Write the CSV to this file instead of stdout."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """FP8 quantization diagnostics of the runs (train.diagnostics_every): per layer the attention logit maximum,
    the QKV gradient underflow and the worst GEMM inputs (scaling.store.diagnostics gives the whole frame)."""
    import sys

    from scaling import store
    from scaling.tables import diagnostics_table

    if fmt not in ("table", "csv") or step not in ("last", "first"):
        _fail(f"--format {fmt!r} / --step {step!r}: the format is table or csv, the step last or first")
    try:
        df = store.diagnostics(_results_dir(results_dir), sweep, on_error=_report_skipped)
    except store.StoreError as e:
        _fail(str(e))
    if cell:
        df = df[df["cell"].astype(str).str.contains(cell, regex=False)]
    if df.empty:
        which = (" in sweep " + sweep if sweep else "") + (f" for cells with {cell!r}" if cell else "")
        _fail(f"no FP8 diagnostics{which} under {_results_dir(results_dir)}: train with train.diagnostics_every=N")
    if fmt == "table":
        _console(stderr=False, wide=wide).print(diagnostics_table(df, step))  # a result: stdout
        return
    text = df.to_csv(index=False)
    if output:
        from pathlib import Path

        store.atomic_write_text(Path(output), text)
    else:
        sys.stdout.write(text)


def _report_skipped(message: str) -> None:
    """One line on stderr for a file a command skipped (an unreadable record), and it goes on with the rest."""
    from rich.markup import escape

    _console(stderr=True).print(f"[yellow]skipped:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        _fail(f"{what} {text!r}: give comma-separated numbers, e.g. 0.5,1,2")
    if not values:
        _fail(f"{what} {text!r}: give at least one number")
    return values


def _fit_help(name: str, extra: str = "") -> str:
    """The help of a `scaling fit` option: its FitOptions field's docstring (advise/pipeline.py), read once."""
    from scaling.fielddocs import field_docs

    return field_docs("scaling.advise.pipeline", "FitOptions")[name] + extra


FIT_PROGRESS_AFTER_S = 2.0
"""`scaling fit` names each stage it starts on stderr once it has run this long (a quick fit prints none)."""


def _csv_columns() -> str:
    from scaling.fit.columns import CSV_COLUMNS

    return " Columns: " + "; ".join(f"{name}: {text}" for name, text in CSV_COLUMNS.items()) + "."


def _conventions() -> str:
    from scaling.flops import CONVENTIONS

    return f" One of {', '.join(CONVENTIONS)}."


@app.command()
def fit(
    sweep: str | None = typer.Argument(None, help=_fit_help("sweep")),
    all_sweeps: bool = typer.Option(False, "--all", help=_fit_help("all_sweeps")),
    source: str | None = typer.Option(None, "--from", help=_fit_help("source")),
    mapping: str | None = typer.Option(None, "--map", help=_fit_help("mapping", _csv_columns())),
    seq_len: int | None = typer.Option(None, "--seq-len", help=_fit_help("seq_len")),
    budget_tolerance: float | None = typer.Option(None, "--budget-tolerance", help=_fit_help("budget_tolerance")),
    optimum: str = typer.Option("quadratic", "--optimum", help=_fit_help("optimum")),
    convention: str = typer.Option("M", "--convention", help=_fit_help("convention", _conventions())),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help=_fit_help("bootstrap")),
    allow_mixed_data: bool = typer.Option(False, "--allow-mixed-data", help=_fit_help("allow_mixed_data")),
    target_flops: float | None = typer.Option(None, "--target-flops", help=_fit_help("target_flops")),
    memory_per_gpu_gb: float | None = typer.Option(None, "--memory-per-gpu", help=_fit_help("memory_per_gpu_gb")),
    gpus: int = typer.Option(1, "--gpus", min=1, help=_fit_help("gpus")),
    output: str | None = typer.Option(None, "--output", "-o", help=_fit_help("output")),
    verify_at: float | None = typer.Option(None, "--verify-at", help=_fit_help("verify_at")),
    verify_lr_factors: str | None = typer.Option(None, "--verify-lrs", help=_fit_help("verify_lr_factors",
                                                                                      " Comma-separated.")),
    verify_seeds: str | None = typer.Option(None, "--verify-seeds", help=_fit_help("verify_seeds", " E.g. 0,1.")),
    plots: bool = typer.Option(True, "--plots/--no-plots", help=_fit_help("plots")),
    wandb_mode: str | None = typer.Option(None, "--wandb", help="Also log the fit (laws table, verdicts, figures) "
                                          "to W&B as a run in the sweep's group: auto, online or offline."),
    as_json: bool = typer.Option(False, "--json", help="Print fit.json on stdout instead of tables."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Fit scaling laws (lr and batch optima, loss vs compute, L(N, D), IsoFLOP, MoE leverage), each with its
    interval and verdict; recommend a run; write the sweep that verifies the predictions."""
    params = dict(locals())  # first: the command's parameters alone
    import dataclasses
    import json
    import sys
    import time

    from scaling.advise.pipeline import FitOptions, fit_sweep
    from scaling.fit.inputs import InputError
    from scaling.store import StoreError
    from scaling.tables import fit_summary

    given = {f.name: params[f.name] for f in dataclasses.fields(FitOptions) if params[f.name] is not None}
    if wandb_mode is not None and wandb_mode not in ("auto", "online", "offline"):
        _fail(f"--wandb {wandb_mode!r} is not one of auto, online, offline")
    if memory_per_gpu_gb is not None and target_flops is None:
        _fail("--memory-per-gpu needs --target-flops C: the memory limit is judged for the run recommended there")
    seeds = _floats(verify_seeds, "--verify-seeds")
    given.update(verify_lr_factors=_floats(verify_lr_factors, "--verify-lrs"),
                 verify_seeds=tuple(int(s) for s in seeds) if seeds else None)
    results = _results_dir(results_dir)
    err, t0 = _console(), time.time()

    def progress(stage: str) -> None:  # on stderr, once the fit has taken a while: a fit of minutes, stage by stage
        if time.time() - t0 >= FIT_PROGRESS_AFTER_S:
            err.print(f"[dim]fit {time.time() - t0:5.1f}s: {stage}[/]", highlight=False, soft_wrap=True)

    try:
        result = fit_sweep(results, FitOptions(**given), progress=progress)
    except (InputError, StoreError, ValueError) as e:
        _fail(str(e))
    if wandb_mode is not None:
        where = _log_fit_to_wandb(wandb_mode, result)
        _console().print(f"logged the fit to W&B ({where})" if where else "the fit was not logged to W&B "
                         "(disabled by WANDB_MODE, or W&B could not start: see above)", highlight=False)
    if as_json:
        sys.stdout.write(json.dumps(result.written["payload"], indent=1, allow_nan=False) + "\n")
        return
    console = _console(stderr=False, wide=wide)
    for item in fit_summary(result, wide=wide):
        console.print(item, highlight=False, soft_wrap=isinstance(item, str))  # a message keeps its line
    if memory_per_gpu_gb is not None and result.written.get("overrides"):
        _show_layout(result.written["overrides"], gpus, memory_per_gpu_gb, console)


def _show_layout(overrides_path, gpus: int, memory_per_gpu_gb: float, console) -> None:
    """`scaling fit --target-flops C --gpus N --memory-per-gpu GB`: the recommended run laid out on that cluster's
    pipeline (`scaling layout --overrides-file` of it), or one line saying why it cannot be."""
    from scaling.compose import compose
    from scaling.config import ConfigError
    from scaling.layout.plan import Cluster, LayoutError, plan_layout

    try:
        run = compose(_read_overrides_file(str(overrides_path), ["train.lr=unused"]))  # no layout depends on the lr
        plan = plan_layout(run.model, run.train.batch_size, Cluster(gpus=gpus, memory_per_gpu_gb=memory_per_gpu_gb))
    except (ConfigError, LayoutError) as e:
        console.print(f"layout of the recommended run: not made ({e})", highlight=False, soft_wrap=True)
        return
    _print_layout(plan, console)
    console.print(f"(scaling layout --overrides-file {overrides_path} --gpus {gpus} --memory-per-gpu "
                  f"{memory_per_gpu_gb:g} for the options: --pp, --vpp, --ep, --mtp, --recompute, --json)",
                  highlight=False, soft_wrap=True, markup=False)


@app.command("next")
def next_rung(
    sweep: str = typer.Argument(..., help="The fitted sweep (its folder under the results directory)."),
    fit_json: str | None = typer.Option(None, "--fit", help="The fit whose advice to follow (default: "
                                        "<results>/<sweep>/fit/fit.json, as `scaling fit SWEEP` wrote it)."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Write the next sweep that the fit's verdicts advise (a budget above the largest, wider lr grids, more
    seeds) as next.yaml beside fit.json, and show it as a dry run. Train it with `scaling sweep PATH`, then
    `scaling fit SWEEP` fits the old and new runs together."""
    from pathlib import Path

    from scaling.advise.outputs import write_next_sweep
    from scaling.fit.inputs import InputError
    from scaling.store import StoreError
    from scaling.tables import sweep_table

    results = _results_dir(results_dir)
    console, out = _console(), _console(stderr=False, wide=wide)
    try:
        path, config = write_next_sweep(results, sweep, Path(fit_json) if fit_json else None)
    except (InputError, StoreError, ValueError) as e:
        _fail(str(e))
    if path is None:
        out.print(f"{sweep}: no law's verdict asks for more runs; nothing written", highlight=False)
        return
    plan, _ = _plan(str(path), [], None, results, None, False, console, data_required=False)
    out.print(sweep_table(plan, {}, wide=wide))
    out.print(f"wrote {path}: {config['description']}\ntrain it with `scaling sweep {path}`, then refit with "
              f"`scaling fit {sweep}`", highlight=False, soft_wrap=True)


def _log_fit_to_wandb(mode: str, result) -> str | None:
    """The fit as a W&B run in the sweep's group, in the project (and entity) its runs were logged to."""
    from scaling.config import WandbConfig
    from scaling.tracking import log_fit

    wandb_cfg = WandbConfig(mode=mode)
    df = result.runs.df
    if "config" in df.columns and len(df):
        logged = df["config"].iloc[0].get("wandb") or {}
        wandb_cfg.project = logged.get("project") or wandb_cfg.project
        wandb_cfg.entity = logged.get("entity")
    return log_fit(wandb_cfg, result.sweep or "all", result.written["payload"], result.written.get("figures") or [],
                   result.out_dir)


@app.command()
def verify(
    sweep: str = typer.Argument(..., help="A trained verification sweep (from a fit's verify.yaml, e.g. "
                                "demo-verify) or wind-tunnel ladder."),
    laws: list[str] | None = typer.Option(None, "--laws", help="The fit JSON to predict with (default: the sweep's "
                                          "own `laws`). Repeat it to combine fits: each law comes from the first "
                                          "file that has it (a wind tunnel: the rungs' loss law, then the lr "
                                          "stage's lr law)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=200, help="Run-level resamples of the measured optima."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per budget instead of the table."),
    results_dir: str | None = typer.Option(None, "--results-dir", help=RESULTS_HELP),
    wide: bool = typer.Option(False, "--wide", help=WIDE_HELP),
) -> None:
    """Check a fit's predictions by training: per budget of the sweep, the predicted optimum lr and loss (95%)
    against the measured ones, and whether each held."""
    import sys
    from pathlib import Path

    from scaling.advise.verify import check_predictions, verification_figure
    from scaling.fit.inputs import InputError
    from scaling.store import StoreError
    from scaling.tables import verify_table

    results = _results_dir(results_dir)
    try:
        paths = [Path(p) for p in laws or []]
        table = check_predictions(results, sweep, paths or None, n_boot=bootstrap)
        figures = verification_figure(results, sweep, table, paths or None)
    except (InputError, StoreError) as e:
        _fail(str(e))
    if as_json:
        sys.stdout.write(table.to_json(orient="records", indent=1) + "\n")
        return
    console = _console(stderr=False, wide=wide)
    console.print(verify_table(f"predictions checked by training ({sweep}): predicted [95%] against measured "
                               f"[95%]", table, wide=wide))
    for _, r in table.iterrows():
        parts = []
        if r.get("lr_ratio") == r.get("lr_ratio") and r.get("lr_ratio") is not None:
            parts.append(f"lr predicted {r['lr_predicted']:.3g}, measured {r['lr_measured']:.3g} "
                         f"(x{max(r['lr_ratio'], 1 / r['lr_ratio']):.2f} apart)")
        if r.get("loss_error") == r.get("loss_error") and r.get("loss_error") is not None:
            parts.append(f"loss predicted {r['loss_predicted']:.4g}, measured {r['loss_measured']:.4g} "
                         f"({r['loss_error']:+.3f} nats)")
        if parts:
            console.print(f"C = {r['C']:.3g}: " + "; ".join(parts), highlight=False, soft_wrap=True)
    if figures:
        names = sorted({str(f.with_suffix("")) for f in figures})
        _console(stderr=True).print(f"wrote {len(figures)} figure files: {', '.join(names)} (.png, .svg)",
                                    highlight=False, soft_wrap=True)


data_app = typer.Typer(help="Token data: prepare your own corpus as shards a sweep can train on.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    inputs: list[str] = typer.Argument(..., help="Text, JSONL (.gz/.zst), Parquet files, folders of them, or a "
                                       "Hugging Face dataset saved with save_to_disk."),
    out: str = typer.Option(..., "--out", help="Folder to write (shards, tokenizer.json, manifest.json); a rerun "
                            "with the same inputs resumes it."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="A tokenizer.json, a folder holding one, or a "
                                         "model name already in the local Hugging Face cache (never downloaded)."),
    train_bpe: int | None = typer.Option(None, "--train-bpe", metavar="VOCAB", help="Train a byte-level BPE of "
                                         "VOCAB tokens on the training documents instead (saved beside the shards)."),
    text_key: str = typer.Option("text", "--text-key", help="JSONL field / Parquet or dataset column of the text."),
    eot_token: str | None = typer.Option(None, "--eot-token", help="The document separator (default: the "
                                         "tokenizer's end-of-text, e.g. <|endoftext|>)."),
    shard_tokens: float = typer.Option(1e8, "--shard-tokens", help="Tokens per shard (llm.c: 1e8)."),
    val_fraction: float = typer.Option(0.01, "--val-fraction", help="Fraction of documents held out."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Tokenizer processes (default: every core)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with MB/s (stderr)."),
) -> None:
    """Tokenize documents into llm.c-format shards with a held-out split and a manifest (data.source=shards,
    data.path=OUT trains on it)."""
    from scaling.data import DataError
    from scaling.data.prepare import PrepareOptions, prepare
    from scaling.tables import manifest_line

    opts = PrepareOptions(inputs=list(inputs), out=out, tokenizer=tokenizer, train_bpe=train_bpe, text_key=text_key,
                          eot_token=eot_token, shard_tokens=int(shard_tokens), val_fraction=val_fraction,
                          workers=workers, show_progress=progress)
    try:
        manifest = prepare(opts)
    except DataError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; rerun the same command to resume (finished shards are kept in {out})", code=130)
    _console(stderr=False).print(manifest_line(manifest, out), highlight=False, soft_wrap=True)


if __name__ == "__main__":  # last: every command (the data group too) is registered by now
    app()
