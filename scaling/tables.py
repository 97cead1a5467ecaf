"""Rich tables of plans, results and fits, for the CLI (and notebooks): rendering only, no logic."""

from __future__ import annotations


def run_plan_table(plan):
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


def run_result_line(record: dict, rec_path) -> str:
    r = record.get("results") or {}
    status = record["status"]
    if status == "diverged":
        return f"[yellow]diverged[/]: {record['error']['reason']} (record {rec_path})"
    tps = r.get("tokens_per_s")
    return (f"[green]{status}[/]: val loss {r.get('val_loss', float('nan')):.4f} nats/token, "
            f"{r.get('steps_done')} steps in {r.get('train_s', 0):.1f} s"
            + (f" ({tps:,.0f} tok/s)" if tps else "") + f"; record {rec_path}")


def sweep_table(plan, estimates: dict, workers: int):
    from rich.table import Table

    title = f"sweep {plan.name}: {len(plan.cells)} cells" + (f" — {plan.config.description}"
                                                               if plan.config.description else "")
    table = Table(title=title, title_justify="left")
    cols = ("#", "id", "cell (C, A, G, lr, batch)", "shape", "params tot/act", "M", "tokens", "steps")
    for col in cols + (("est s",) if estimates else ()):
        table.add_column(col, justify="left" if col in ("id", "shape") or col.startswith("cell") else "right")
    for c in plan.cells:
        m, k = c.run.model, c.plan.counts
        shape = f"d{m.d_model}L{m.n_layers} E{m.n_experts}k{m.top_k}" + (
            f"s{m.n_shared_experts}" if m.n_shared_experts else "")
        row = [str(c.index), c.run_id, c.name, shape, f"{k.params_total / 1e6:.3g}M/{k.params_active / 1e6:.3g}M",
               f"{k.M:.3g}", f"{c.plan.tokens:,}", str(c.plan.steps)]
        if estimates:
            row.append(f"{estimates.get(c.run_id, float('nan')):.1f}")
        table.add_row(*row)
    caption = f"total {plan.total_flops:.3g} FLOPs"
    if plan.duplicates:
        caption += f"; {plan.duplicates} duplicate cell(s) dropped"
    if estimates:
        total = sum(estimates.values())
        caption += (f"; estimated {total:.0f} s of training on this device (probe), about "
                    f"{total / max(1, min(workers, len(plan.cells))):.0f} s with {workers} worker(s)")
    table.caption = caption
    return table


def frame_table(title: str, df, columns: list[str]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = [c for c in columns if c in df.columns]
    for c in cols:
        table.add_column(c)
    for _, row in df[cols].iterrows():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table


def laws_table(report):
    from rich.table import Table

    def fmt(v):
        return f"{v:.4g}"

    table = Table(title=f"scaling laws from {report.n_runs} runs ({report.source}); optimum: {report.optimum_method}",
                  title_justify="left")
    for col in ("law", "formula", "parameters (95% bootstrap interval)", "R^2", "points"):
        table.add_column(col, overflow="fold")
    for name, law in report.laws.items():
        params = ", ".join(f"{k}={fmt(v)}" + (f" [{fmt(law.interval[k][0])}, {fmt(law.interval[k][1])}]"
                                               if k in law.interval else "") for k, v in law.params.items())
        if law.notes:
            params += " (" + "; ".join(law.notes) + ")"
        table.add_row(name, law.formula, params, "" if law.r2 is None else f"{law.r2:.3f}", str(law.n_points))
    for name, why in report.excluded.items():
        table.add_row(f"[dim]{name}[/]", "[dim]not fitted[/]", f"[dim]{why}[/]", "", "")
    if report.runs_excluded:
        table.caption = "runs excluded: " + ", ".join(f"{v} {k}" for k, v in report.runs_excluded.items())
    return table
