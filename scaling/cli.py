"""The `scaling` command line. Thin: parse, call library functions, print. Heavy imports happen inside commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="A laboratory for Mixture-of-Experts scaling laws: train, sweep and fit small MoE models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OVERRIDES_HELP = (
    "Hydra overrides, e.g. budget_flops=1e12 train.lr=4e-3 model.n_experts=16 model=tiny_dense "
    "results_dir=/tmp/r wandb.mode=disabled. Keys are documented in scaling/config.py."
)


@app.callback()
def main() -> None:
    """A laboratory for Mixture-of-Experts scaling laws."""


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def train(
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the derived run (params, M, tokens, steps); train nothing."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the live progress bar."),
) -> None:
    """Train one MoE run to a compute budget (FLOPs) and record it under the results directory."""
    from rich.console import Console

    from scaling.config import ConfigError, compose, resolve_results_dir
    from scaling.data import DataError
    from scaling.store import StoreError, record_path

    console = Console(stderr=True)
    try:
        run = compose(overrides or [])
        from scaling.train import plan_run

        plan = plan_run(run)
    except (ConfigError, DataError, StoreError) as e:
        _fail(str(e))
    console.print(_plan_table(plan))
    if dry_run:
        return
    rec_path = record_path(resolve_results_dir(run), run.sweep, plan.run_id)
    from scaling.train import train as train_run

    try:
        record = train_run(run, show_progress=progress, console=console)
    except (ConfigError, DataError, StoreError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; re-run the same command to resume (record {rec_path})", code=130)
    except Exception as e:
        _fail(f"run {plan.run_id} failed: {type(e).__name__}: {e} (record {rec_path})", code=1)
    console.print(_result_line(record, rec_path))
    if record["status"] == "diverged":
        raise typer.Exit(3)


def _plan_table(plan):
    from rich.table import Table

    c, d = plan.counts, plan
    table = Table(title=f"run {plan.run_id}  {plan.name}", show_header=False, title_justify="left")
    rows = [
        ("params total / active", f"{c.params_total:,} / {c.params_active:,}"),
        ("non-embedding total / active", f"{c.params_non_embedding:,} / {c.params_active_non_embedding:,}"),
        ("activation ratio A / granularity G", f"{c.activation_ratio:.4g} / {c.granularity:.3g}"),
        ("M (FLOPs/token, fwd+bwd)", f"{c.M:,.0f}"),
        ("budget C / spent tokens*M", f"{plan.run.budget_flops:.4g} / {d.tokens * c.M:.4g}"),
        ("tokens D / steps / batch", f"{d.tokens:,} / {d.steps:,} / {d.batch_tokens:,} tokens"),
        ("lr / schedule", f"{plan.run.train.lr:g} / {plan.run.train.schedule}"),
        ("data", f"{plan.data.fingerprint} ({len(plan.data.train):,} train tokens)"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


def _result_line(record: dict, rec_path) -> str:
    r = record.get("results") or {}
    status = record["status"]
    if status == "diverged":
        return f"[yellow]diverged[/]: {record['error']['reason']} (record {rec_path})"
    tps = r.get("tokens_per_s")
    return (f"[green]{status}[/]: val loss {r.get('val_loss', float('nan')):.4f} nats/token, "
            f"{r.get('steps_done')} steps in {r.get('train_s', 0):.1f} s"
            + (f" ({tps:,.0f} tok/s)" if tps else "") + f"; record {rec_path}")


if __name__ == "__main__":
    app()
