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
        ("precision", _precision_text(plan.run.train)),
        ("data", _summary_text(plan.summary) + f"; this run reads it {_epochs(plan)} time(s)"),
        ("memory, one device (est.)", _one_device_memory(plan.run)),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table


def _precision_text(t) -> str:
    what = {"auto": "auto (bf16 on CUDA, fp32 on the CPU)", "fp32": "fp32", "bf16": "bf16 autocast",
            "fp8": f"fp8 ({t.fp8_scaling}; real FP8 GEMMs on FP8 tensor cores, emulated elsewhere), bf16 otherwise"}
    diagnostics = f"; FP8 diagnostics every {t.diagnostics_every} steps" if t.diagnostics_every else ""
    return what[t.precision] + diagnostics


def _one_device_memory(run) -> str:
    from scaling.memory import GIB, need

    rows = run.train.micro_batch_size or run.train.batch_size
    gpu, cpu = (need(run.model, rows, 1, "ddp", on_gpu).total / GIB for on_gpu in (True, False))
    return f"{gpu:.3g} GiB on a GPU (bf16), {cpu:.3g} GiB on the CPU (fp32), {rows} rows per pass (scaling/memory.py)"


def run_result_line(record: dict, rec_path) -> str:
    r = record.get("results") or {}
    status = record["status"]
    if status == "diverged":
        return f"[yellow]diverged[/]: {record['error']['reason']} (record {rec_path})"
    tps = r.get("tokens_per_s")
    return (f"[green]{status}[/]: val loss {r.get('val_loss', float('nan')):.4f} nats/token, "
            f"{r.get('steps_done')} steps in {r.get('train_s', 0):.1f} s"
            + (f" ({tps:,.0f} tok/s)" if tps else "") + f"; record {rec_path}")


def sweep_table(plan, estimates: dict, wall: tuple[float, int] | None = None, wide: bool = False):
    """The plan, cell by cell, with its resolved base and totals; `wall` = (estimated seconds, cells at once).
    Short columns by default (counts with SI prefixes; a cell too big for its devices marked ✗ and explained
    below); `wide` adds the run ids, shapes, M, epochs (shown anyway when a cell repeats its data) and the memory
    plan's layout per cell."""
    from scaling.sweep.estimate import GPU_STUDY_FLOPS, cell_gpu_hours

    title = f"sweep {plan.name}: {len(plan.cells)} cells" + (f" — {plan.config.description}"
                                                               if plan.config.description else "")
    gpu_plan = plan.total_flops >= GPU_STUDY_FLOPS or plan.config.launcher.gpu_memory_gb is not None
    cell_hours = cell_gpu_hours(plan) if gpu_plan else {}
    too_big = [f"#{c.index} {c.name}: {c.memory.summary()}" for c in plan.cells if c.memory and c.memory.fits is False]
    if len(plan.cells) > TABLE_CELLS:
        table = _budget_rollup(plan, title, cell_hours, estimates)
    else:
        table = _cell_table(plan, title, cell_hours, estimates, wide)
    caption = (f"base: {' '.join(plan.config.base) or '(none: train.yaml as is)'}\n{data_line(plan)}\n"
               + "".join(f"{line}\n" for line in plan.centres) + f"total {plan.total_flops:.3g} FLOPs")
    branched = len(plan.branch_predecessors())
    if branched:
        saved = plan.total_flops - plan.trained_flops
        caption += (f", of which {plan.trained_flops:.3g} trained: {branched} cell(s) branch their cooldown from a "
                    f"shorter run's stable phase (train.branch), saving {saved:.3g} FLOPs "
                    f"({saved / plan.total_flops:.0%})")
    if gpu_plan:
        caption += f"; with the output head {plan.mfu_flops:.3g} FLOPs = " + gpu_hours_line(plan, cell_hours)
    if plan.duplicates:
        caption += f"; {plan.duplicates} duplicate cell(s) dropped"
    caption += "\n" + memory_line(plan)
    if plan.config.launcher.kind == "slurm":
        caption += "\n" + slurm_line(plan)
    caption += "".join(f"\n  ✗ {line}" for line in too_big[:TABLE_CELLS])
    if len(too_big) > TABLE_CELLS:
        caption += f"\n  ✗ ... {len(too_big) - TABLE_CELLS} more"
    repeating = [c for c in plan.cells if c.plan.summary and (c.plan.summary.epochs(c.plan.tokens) or 0) > 1
                 and not c.run.data.allow_repeat]
    if repeating:
        caption += (f"\n{len(repeating)} cell(s) would repeat their data (epochs > 1): training them needs more "
                    f"data or data.allow_repeat=true")
    if estimates and wall:
        seconds, at_once = wall
        caption += (f"; estimated {sum(estimates.values()):.0f} s of training on this device (probe), about "
                    f"{seconds:.0f} s with {plan.config.launcher.workers} worker(s) ({at_once} cell(s) at once)")
    table.caption = caption
    table.caption_justify = "left"
    return table


def _si(x: float) -> str:
    """A count in 3 significant digits with an SI prefix: 460k, 1.51G."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


def slurm_line(plan) -> str:
    """launcher=slurm: the job array a submission of every cell would ask for (sweep/slurm.array_plan)."""
    from scaling.sweep.slurm import array_plan

    a, launcher = array_plan(plan), plan.config.launcher
    if not a["tasks"]:
        return "slurm: no cells"
    lo, hi = a["cell_min"]
    per_cell = (f"launcher.time_per_cell_min={launcher.time_per_cell_min}" if launcher.time_per_cell_min else
                f"each cell's own limit, {lo}-{hi} min: its estimate x1.5 + 10 min" if launcher.gpus_per_task else
                f"{hi} min per cell on CPU tasks")
    if len(a["arrays"]) == 1:
        line = (f"slurm: {a['tasks']} array task(s) of up to {a['most_cells']} cells ({a['lanes']} side by side x "
                f"launcher.cells_per_lane={launcher.cells_per_lane} in turn), each limited to {a['time_min']:,} min "
                f"({per_cell}, summed over the cells a lane runs in turn), requeued after a limit at most "
                f"launcher.max_requeues={launcher.max_requeues} times")
    else:
        parts = [f"{x['cells']} cells of {x['devices']} GPU(s) in {x['tasks']} task(s) of {x['time_min']:,} min"
                 for x in a["arrays"]]
        line = (f"slurm: {len(a['arrays'])} job arrays, one per GPU count per cell and cell length (Slurm gives an "
                f"array one time limit): {'; '.join(parts)} ({per_cell}, summed over the cells a lane runs in turn; "
                f"launcher.cells_per_lane={launcher.cells_per_lane}), requeued after a limit at most "
                f"launcher.max_requeues={launcher.max_requeues} times")
    if a["used_gpu_h"] is not None:
        line += (f"; one round of limits reserves {a['reserved_gpu_h']:,.0f} GPU-hours, for about "
                 f"{a['used_gpu_h']:,.0f} GPU-hours of training (GPU h column; a cell longer than its limit goes on "
                 f"after a requeue)")
    if a["too_long"]:
        line += (f"\n  ! {len(a['too_long'])} cell(s) need longer than their limit x (max_requeues + 1) "
                 f"(e.g. {a['too_long'][0]}): raise launcher.time_per_cell_min or launcher.max_requeues, or they "
                 f"stop unfinished")
    return line


def _cell_table(plan, title: str, cell_hours: dict, estimates: dict, wide: bool):
    """The plan one row per cell (sweep_table's table up to TABLE_CELLS cells)."""
    from rich.table import Table

    from scaling.memory import GIB

    table = Table(title=title, title_justify="left")
    epochs = wide or any(c.plan.summary and (c.plan.summary.epochs(c.plan.tokens) or 0) > 1 for c in plan.cells)
    cols = ("#", *(("id",) if wide else ()), "cell (C, A, G, lr, batch)", *(("shape",) if wide else ()),
            "params tot/act", *(("M",) if wide else ()), "tokens", "steps", *(("epochs",) if epochs else ()),
            "memory/device" if wide else "GiB/dev")
    for col in cols + (("GPU h",) if cell_hours else ()) + (("est s",) if estimates else ()):
        table.add_column(col, justify="left" if col in ("id", "shape") or col.startswith("cell") else "right",
                         no_wrap=True)
    for c in plan.cells:
        m, k = c.run.model, c.plan.counts
        shape = f"d{m.d_model}L{m.n_layers} E{m.n_experts}k{m.top_k}" + (
            f"s{m.n_shared_experts}" if m.n_shared_experts else "")
        if wide:
            memory = c.memory.summary() if c.memory else "?"
            row = [str(c.index), c.run_id, c.name, shape, f"{k.params_total / 1e6:.3g}M/{k.params_active / 1e6:.3g}M",
                   f"{k.M:.3g}", f"{c.plan.tokens:,}", str(c.plan.steps), _epochs(c.plan), memory]
        else:
            memory = f"{c.memory.need.total / GIB:.3g}" if c.memory else "?"
            if c.memory and c.memory.fits is False:
                memory += " ✗"
            row = [str(c.index), c.name, f"{_si(k.params_total)}/{_si(k.params_active)}", _si(c.plan.tokens),
                   str(c.plan.steps), *((_epochs(c.plan),) if epochs else ()), memory]
        if cell_hours:
            row.append(f"{cell_hours[c.run_id]:.3g}")
        if estimates:
            row.append(f"{estimates.get(c.run_id, float('nan')):.1f}")
        table.add_row(*row)
    return table


TABLE_CELLS = 200
"""A plan of more cells is shown one row per budget (a table of thousands of rows is read by no one, and takes
seconds to draw); `scaling sweep --dry-run --format csv` lists every cell."""


def _budget_rollup(plan, title: str, cell_hours: dict, estimates: dict):
    """The plan one row per budget: its cells, their sizes, tokens and steps (ranges), the most memory per device,
    the GPU-hours and the estimated seconds."""
    from rich.table import Table

    from scaling.memory import GIB

    table = Table(title=f"{title} (one row per budget; `--format csv` lists every cell)", title_justify="left")
    cols = ["budget", "cells", "params tot", "tokens", "steps", "GiB/dev (most)"]
    cols += ["GPU h"] if cell_hours else []
    cols += ["est s"] if estimates else []
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    by_budget: dict[float, list] = {}
    for c in plan.cells:
        by_budget.setdefault(c.run.budget_flops, []).append(c)

    def span(values, fmt=_si) -> str:
        lo, hi = min(values), max(values)
        return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"

    for budget in sorted(by_budget):
        cells = by_budget[budget]
        memory = [c.memory.need.total / GIB for c in cells if c.memory]
        over = sum(1 for c in cells if c.memory and c.memory.fits is False)
        row = [f"{budget:.3g}", str(len(cells)), span([c.plan.counts.params_total for c in cells]),
               span([c.plan.tokens for c in cells]), span([c.plan.steps for c in cells], str),
               (f"{max(memory):.3g}" if memory else "?") + (f" ✗{over}" if over else "")]
        if cell_hours:
            row.append(f"{sum(cell_hours[c.run_id] for c in cells):.3g}")
        if estimates:
            row.append(f"{sum(estimates.get(c.run_id, 0.0) for c in cells):.0f}")
        table.add_row(*row)
    return table


def gpu_hours_line(plan, cell_hours: dict[str, float]) -> str:
    """The plan's GPU-hours on launcher.gpu and what they rest on: how many cells were costed at an MFU measured
    by `scaling bench --sweep` (gpus.py), the rest at launcher.assumed_mfu."""
    from scaling.gpus import GPU_BF16_PEAK
    from scaling.sweep.estimate import cell_mfu

    launcher = plan.config.launcher
    mfu = cell_mfu(plan)
    measured = [m for m, known in mfu.values() if known]
    line = (f"{sum(cell_hours.values()):,.0f} {launcher.gpu}-hours (GPU h per cell above: its FLOPs with the output "
            f"head over a {GPU_BF16_PEAK[launcher.gpu] / 1e12:,.0f} TFLOP/s bf16 peak at ")
    if not measured:
        return line + (f"launcher.assumed_mfu={launcher.assumed_mfu:g}; an assumption: `scaling bench --sweep "
                       f"{plan.name}` on the GPU measures it)")
    return line + (f"the MFU measured on {launcher.gpu} for {len(measured)} of {len(mfu)} cells "
                   f"({min(measured):.0%}-{max(measured):.0%}), launcher.assumed_mfu={launcher.assumed_mfu:g} for "
                   f"the rest)")


def memory_line(plan) -> str:
    """The sweep's parallel plan: devices per cell, DDP/FSDP counts, and the cells too big for the devices."""
    from collections import Counter

    from scaling.memory import USABLE_FRACTION

    cells = [c for c in plan.cells if c.memory]
    if not cells:
        return "memory: not planned"
    launcher = plan.config.launcher
    devices = cells[0].memory.devices
    modes = Counter(c.memory.parallel for c in cells)
    peak = max(cells, key=lambda c: c.memory.need.total)
    line = (f"memory (scaling/memory.py, est.): {devices} device(s) per cell, "
            + ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
            + f"; most per device {peak.memory.need.total / 2**30:.3g} GiB ({peak.name})")
    if launcher.gpu_memory_gb is None:
        return line + "; not checked against a device: set launcher.gpu_memory_gb=80 (GiB per GPU) to check it"
    big = [c for c in cells if c.memory.fits is False]
    line += f"; checked against {launcher.gpu_memory_gb:g} GiB GPUs ({USABLE_FRACTION:.0%} usable)"
    if launcher.runs_per_gpu > 1:
        line += (f", {launcher.runs_per_gpu} cells per GPU (launcher.runs_per_gpu): "
                 f"{launcher.gpu_memory_gb / launcher.runs_per_gpu:.3g} GiB each")
    if big:
        fewer = "fewer cells per GPU (launcher.runs_per_gpu) or " if launcher.runs_per_gpu > 1 else ""
        line += (f"\n{len(big)} cell(s) do not fit their devices (memory column): training them needs {fewer}more "
                 f"GPUs per cell (launcher.gpus_per_run, nodes_per_run; train.parallel=auto shards when needed)")
    return line


def _epochs(run_plan) -> str:
    """How many times the cell reads its (most-repeated) data: '0.012', '3.1 (repeats)', or '?' if unknown."""
    e = run_plan.summary.epochs(run_plan.tokens) if run_plan.summary else None
    return "?" if e is None else f"{e:.2g}" + (" (repeats)" if e > 1 else "")


def data_line(plan) -> str:
    """Where the sweep's data stands: its fingerprint and tokens, or why its size is declared or unknown."""
    summaries = {c.plan.summary.fingerprint or c.plan.summary.source: c.plan.summary for c in plan.cells
                 if c.plan.summary is not None}
    return "\n".join("data " + _summary_text(s) for s in summaries.values()) or "data: none"


def _summary_text(s) -> str:
    if s.where == "missing":
        return (f"({s.source}): not on this machine; declare its size with data.train_tokens=N to see how often "
                f"each run repeats it")
    if s.where == "declared":
        return f"({s.source}): not on this machine; planned against data.train_tokens={s.total_train_tokens:,}"
    return (f"{s.fingerprint}: {s.total_train_tokens:,} training tokens"
            + (" (from its manifest)" if s.where == "manifest" else ""))


def frame_table(title: str, df, columns: list[str]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    cols = [c for c in columns if c in df.columns]
    for c in cols:
        table.add_column(c)
    for _, row in df[cols].iterrows():
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return table


def _g(v) -> str:
    return "" if v is None or (isinstance(v, float) and v != v) else f"{v:.4g}"


def _iv(lo, hi) -> str:
    return "" if lo is None or hi is None or lo != lo or hi != hi else f"[{lo:.3g}, {hi:.3g}]"


VERDICT_STYLE = {"reliable": "green", "weak": "yellow", "undetermined": "red"}


class Notes:
    """Long texts (a verdict's reasons, a law's source) as numbered notes printed below a table, so the table itself
    keeps to short columns and fits a 100-column terminal; `--wide` puts them back in the table."""

    def __init__(self):
        self.lines: list[str] = []

    def ref(self, text: str) -> str:
        """The note's mark for a table cell ('' for no text); the text joins the notes."""
        if not text:
            return ""
        self.lines.append(text)
        return f"({len(self.lines)})"

    def renderables(self) -> list:
        """The notes as one grid, each text indented under its own first line; nothing without notes."""
        from rich.markup import escape
        from rich.table import Table

        if not self.lines:
            return []
        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(overflow="fold")
        for i, line in enumerate(self.lines, 1):
            grid.add_row(f"({i})", escape(line))
        return [grid]


def laws_table(report, wide: bool = False) -> list:
    """The fitted laws (parameters, R^2, points, verdict) and those not fitted, with why: a table and its notes."""
    from rich.markup import escape
    from rich.table import Table

    def fmt(v):
        return f"{v:.4g}"

    notes = Notes()
    table = Table(title=f"scaling laws from {report.n_runs} runs ({report.source}); optimum: {report.optimum_method}",
                  title_justify="left")
    cols = ("law", "formula", "parameters (95% interval)" if wide else "parameters", "R^2", "n",
            "verdict (judged at)" if wide else "verdict", *(() if wide else ("note",)))
    for col in cols:
        table.add_column(col, overflow="fold")
    for name, law in report.laws.items():
        with_iv = ", ".join(f"{k}={fmt(v)}" + (f" [{fmt(law.interval[k][0])}, {fmt(law.interval[k][1])}]"
                                                if k in law.interval else "") for k, v in law.params.items())
        v = law.verdict or {}
        at = ", ".join(f"{k} = {x:.3g}" for k, x in (v.get("judged_at") or {}).items())
        level = v.get("verdict", "")
        reasons = "; ".join(v["reasons"]) if level != "reliable" and v.get("reasons") else ""
        style = VERDICT_STYLE.get(level, "white")
        r2 = "" if law.r2 is None else f"{law.r2:.3f}"
        if wide:
            params = with_iv + (f" ({law.method})" if law.method else "")
            verdict = f"[{style}]{level}[/] ({at})" + (": " + escape(reasons) if reasons else "")
            table.add_row(name, law.formula, escape(params), r2, str(law.n_points), verdict)
        else:
            short = ", ".join(f"{k}={fmt(v)}" for k, v in law.params.items())
            note = f"{name}: {with_iv}" + (f" ({law.method})" if law.method else "") + \
                f"; {level} at {at}" + (f": {reasons}" if reasons else "")
            table.add_row(name, law.formula, escape(short), r2, str(law.n_points), f"[{style}]{level}[/]",
                          notes.ref(note))
    for name, why in report.excluded.items():
        if wide:
            table.add_row(f"[dim]{name}[/]", "[dim]not fitted[/]", f"[dim]{escape(why)}[/]", "", "", "")
        else:
            table.add_row(f"[dim]{name}[/]", "[dim]not fitted[/]", "", "", "", "", notes.ref(f"{name}: {why}"))
    if report.runs_excluded:
        table.caption = "runs excluded: " + ", ".join(f"{v} {k}" for k, v in report.runs_excluded.items())
    return [table, *notes.renderables()]


def optima_table(report, wide: bool = False) -> list:
    """Per budget (model size, tokens): the optimum lr, batch and loss with run-level 95% intervals (model size,
    tokens and the runs' noise with `wide`)."""
    from rich.table import Table

    o = report.optima
    notes = Notes()
    table = Table(title=f"optima per budget ({report.family}; bowl vertex, 95% run-level interval)",
                  title_justify="left")
    varies_batch = o["batch_tokens"].nunique() > 1
    cols = ["C (FLOPs)", *(["params", "tokens"] if wide else []), "runs", "lr*", "lr 95%", "lr swept"]
    cols += ["batch*", "batch 95%"] if varies_batch else []
    cols += ["loss*", "loss 95%", *(["noise (nats)"] if wide else []), "note"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for _, r in o.iterrows():
        note = r["note"] or ("" if r["interior"] else f"optimum on the grid edge ({r['edge']})")
        noise = r.get("seed_sd")
        if noise is None or noise != noise:
            noise = r.get("noise_sd")
        row = [f"{r['C']:.3g}", *([f"{r['params']:.3g}", f"{r['tokens']:.3g}"] if wide else []),
               str(int(r["n_runs"])), _g(r["lr"]), _iv(r["lr_lo"], r["lr_hi"]), f"{r['lr_min']:.3g}..{r['lr_max']:.3g}"]
        row += [_g(r["batch_tokens"]), _iv(r["batch_tokens_lo"], r["batch_tokens_hi"])] if varies_batch else []
        row += [_g(r["loss"]), _iv(r["loss_lo"], r["loss_hi"]), *([_g(noise)] if wide else []),
                note if wide else notes.ref(f"C = {r['C']:.3g}: {note}" if note else "")]
        table.add_row(*row)
    return [table, *notes.renderables()]


def leverage_table(report, wide: bool = False) -> list:
    """Efficiency leverage of each configuration per budget, with its interval, loss gap and verdict; the reading
    as notes below unless `wide`."""
    from rich.markup import escape
    from rich.table import Table

    notes = Notes()
    table = Table(title="efficiency leverage against the dense baseline (EL = C_dense / C_moe at equal loss; gap = "
                        "dense - MoE loss, nats)", title_justify="left")
    cols = ("family", "A", "G", "C (FLOPs)", "EL", "EL 95%", "gap", "gap 95%", "verdict", "reading") if wide else \
        ("family", "C (FLOPs)", "EL [95%]", "gap [95%]", "verdict", "note")
    for c in cols:
        table.add_column(c, overflow="fold", no_wrap=c not in ("family", "reading"))
    for _, r in report.leverage.iterrows():
        el, el_iv = _g(r["el"]), _iv(r["el_lo"], r["el_hi"])
        gap, gap_iv = _g(r["loss_gap"]), _iv(r.get("loss_gap_lo"), r.get("loss_gap_hi"))
        verdict = f"[{VERDICT_STYLE.get(r['verdict'], 'white')}]{r['verdict']}[/]"
        if wide:
            table.add_row(str(r["family"]), f"{r['activation_ratio']:.3g}", f"{r['granularity']:.3g}",
                          f"{r['C']:.3g}", el, el_iv, gap, gap_iv, verdict, escape(r["resolved"]))
        else:
            table.add_row(str(r["family"]), f"{r['C']:.3g}", f"{el} {el_iv}", f"{gap} {gap_iv}", verdict,
                          notes.ref(f"{r['family']} at C = {r['C']:.3g}: {r['resolved']}"))
    return [table, *notes.renderables()]


def precision_table(report, wide: bool = False) -> list:
    """The FP8 loss gap per configuration (fit/precision_gap.py), with the FP8 runs' diagnostics; the reading as
    notes below unless `wide`."""
    from rich.markup import escape
    from rich.table import Table

    notes = Notes()
    table = Table(title="FP8 against its base precision: loss gap fp8 - base (nats) per configuration, paired runs",
                  title_justify="left")
    for c in ("configuration", "base", "pairs", "budgets", "mean gap", "gap 95%", "QKV grad underflow (peak)",
              "logit max (peak) fp8 / base", "verdict"):
        table.add_column(c, overflow="fold")
    for _, r in report.precision.iterrows():
        under = r.get("qkv_grad_underflow")
        logits = f"{_g(r.get('attn_logit_max'))} / {_g(r.get('attn_logit_max_base'))}"
        style = "green" if r["verdict"] == "no significant gap" else "yellow"
        verdict = escape(r["reading"]) if wide else f"{escape(r['verdict'])} " + notes.ref(
            f"{r['configuration']}: {r['reading']}")
        table.add_row(str(r["configuration"]), str(r["base"]), str(int(r["pairs"])), str(int(r["budgets"])),
                      f"{r['mean_gap']:+.3g}", _iv(r["gap_lo"], r["gap_hi"]),
                      "" if under is None or under != under else f"{under:.2%}", logits, f"[{style}]{verdict}[/]")
    return [table, *notes.renderables()]


def diagnostics_table(df, step: str = "last"):
    """Per run and layer, at the run's last (or first) diagnostics step: the attention logit maximum, the QKV
    output-gradient underflow, and the GEMM input with the largest quantization error and the one with the most
    underflow (store.diagnostics' frame)."""
    from rich.table import Table

    pick = df.groupby("run")["step"].transform("max" if step == "last" else "min")
    at = df[df["step"] == pick]
    table = Table(title=f"FP8 quantization diagnostics per layer ({step} diagnostics step of each run)",
                  title_justify="left")
    for c in ("cell", "step", "layer", "logit max", "QKV grad underflow", "largest error", "most underflow"):
        table.add_column(c, overflow="fold")
    for (name, _, layer), g in at.sort_values(["cell", "run", "layer"]).groupby(["cell", "run", "layer"], sort=False):
        qkv = g[(g["gemm"] == "attn.qkv") & (g["kind"] == "grad_output")]["underflow"]
        worst = g.loc[g["rel_error"].idxmax()]
        most = g.loc[g["underflow"].idxmax()]
        table.add_row(str(name), str(int(g["step"].iloc[0])), str(int(layer)), _g(g["attn_logit_max"].iloc[0]),
                      f"{qkv.iloc[0]:.3%}" if len(qkv) else "",
                      f"{worst['gemm']} {worst['kind']} {worst['rel_error']:.3g}",
                      f"{most['gemm']} {most['kind']} {most['underflow']:.3%}")
    return table


def held_out_table(held: dict):
    import pandas as pd

    cols = ["quantity", "predicted", "95% interval", "achieved", "relative_error"]
    rows = [(k, v["predicted"], _iv(*(v["interval"] or [None, None])), v["achieved"], v["relative_error"])
            for k, v in held.items() if isinstance(v, dict)]
    return frame_table(f"held-out check: fitted without C = {held['C']:.3g}, predicted there",
                       pd.DataFrame(rows, columns=cols), cols)


def verify_table(title: str, df, wide: bool = False):
    """Predicted against measured, per group of a verification (or wind-tunnel) sweep: one row per group, or
    (narrow, the default) one row each for its lr and its loss."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")

    def held(v):
        return "" if v is None or v != v else ("[green]yes[/]" if v else "[red]no[/]")

    def verdict(v):
        return "" if not isinstance(v, str) else f"[{VERDICT_STYLE.get(v, 'white')}]{v}[/]"

    def lr_measured(get):
        return (f"{_g(get('lr_measured'))} {_iv(get('lr_measured_lo'), get('lr_measured_hi'))}"
                if get("lr_measured") == get("lr_measured") and get("lr_measured") is not None
                else str(get("bowl", "")))

    if wide:
        cols = ["C (FLOPs)", "params", "runs", "lr law", "lr predicted", "lr measured", "pred/meas", "lr held",
                "loss law", "loss predicted", "loss measured", "error (nats)", "loss held"]
    else:
        cols = ["C", "", "law", "predicted [95%]", "measured [95%]", "held"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for _, r in df.iterrows():
        get = r.get
        lr_pred = f"{_g(get('lr_predicted'))} {_iv(get('lr_predicted_lo'), get('lr_predicted_hi'))}"
        loss_pred = f"{_g(get('loss_predicted'))} {_iv(get('loss_predicted_lo'), get('loss_predicted_hi'))}"
        loss_meas = f"{_g(get('loss_measured'))} {_iv(get('loss_measured_lo'), get('loss_measured_hi'))}"
        if wide:
            table.add_row(f"{r['C']:.3g}", f"{r['params']:.3g}", str(int(r["n_runs"])), verdict(get("lr_verdict")),
                          lr_pred, lr_measured(get), _g(get("lr_ratio")), held(get("lr_held")),
                          verdict(get("loss_verdict")), loss_pred, loss_meas, _g(get("loss_error")),
                          held(get("loss_held")))
            continue
        table.add_row(f"{r['C']:.3g}", "lr", verdict(get("lr_verdict")), lr_pred, lr_measured(get),
                      held(get("lr_held")))
        table.add_row("", "loss", verdict(get("loss_verdict")), loss_pred, loss_meas, held(get("loss_held")))
    return table


RUNS_COLUMNS = {"sweep": "sweep", "cell": "name", "status": "status", "C": "derived.budget_flops",
                "A": "derived.activation_ratio", "G": "derived.granularity", "batch": "derived.batch_tokens",
                "lr": "config.train.lr", "seed": "config.seed", "val loss": "results.val_loss",
                "tok/s": "results.tokens_per_s", "id": "id"}
"""The `scaling runs` table's default columns (shown name -> record field); --columns adds any other field."""


class RunsColumnsError(ValueError):
    """A --columns name that is not a record field."""


def runs_frame(df, extra: list[str], every: bool = False):
    """The runs sorted by sweep coordinates; the default columns plus `extra` (or, with `every` or
    extra == ['all'], every field under its record name)."""
    import difflib

    from scaling.store import RUN_ORDER

    order = [c for c in RUN_ORDER if c in df.columns]
    df = df.sort_values(order, kind="stable") if order else df
    if every or extra == ["all"]:
        return df.reset_index(drop=True)
    extra = [c.strip() for c in extra if c.strip()]
    for c in extra:
        if c not in df.columns:
            near = difflib.get_close_matches(c, list(df.columns), n=1, cutoff=0.5)
            raise RunsColumnsError(f"--columns {c!r} is not a record field" + (f": did you mean {near[0]}?" if near
                                   else "") + " (`scaling runs --format csv` shows every field)")
    shown = {name: field for name, field in RUNS_COLUMNS.items() if field in df.columns}
    shown.update({c: c for c in extra})
    out = df[list(shown.values())].copy()
    out.columns = list(shown)
    return out.reset_index(drop=True)


def fit_summary(result, wide: bool = False) -> list:
    """What `scaling fit` prints of a fit (advise/pipeline.FitResult), in order: tables, structure readings, notes,
    the files written, the recommendation and its warnings, and how to verify it. Tables keep to short columns with
    their long texts as numbered notes below them, unless `wide`."""
    from scaling.advise.pipeline import no_law_reason

    report, written, rec = result.report, result.written, result.recommendation
    items: list = []
    if report.optima is not None and not report.optima.empty:
        items += optima_table(report, wide)
    if report.leverage is not None and not report.leverage.empty:
        items += leverage_table(report, wide)
    if report.precision is not None and not report.precision.empty:
        items += precision_table(report, wide)
    items += laws_table(report, wide)
    if report.held_out:
        items.append(held_out_table(report.held_out))
    for key, item in (report.structure or {}).items():
        if isinstance(item, dict):
            iv = f" [{item['interval'][0]:.3g}, {item['interval'][1]:.3g}]" if item["interval"] else ""
            items.append(f"structure: {key} = {item['slope']:.3g}{iv}: {item['reading']}")
    items += [f"note: {line}" for line in report.notes]
    if not report.laws and report.precision is None:
        items.append(f"[bold]{no_law_reason(result.runs, report)}[/] (the reasons are in the table above)")
    items.append(f"wrote {written['fit']}")
    if written.get("figures"):
        items.append(f"wrote {len(written['figures'])} figure files in {result.out_dir}: "
                     f"{', '.join(sorted({p.stem for p in written['figures']}))}")
    if rec is not None:
        items += recommendation_table(rec, wide)
        if (limit := rec.memory_limit) and limit.get("chosen") and not limit.get("binds"):
            c = limit["chosen"]
            items.append(f"memory does not bind: the leverage law's best A = {c['A']:.3g} (E = {c['n_experts']}, "
                         f"{c['params_total']:.3g} parameters) needs {c['memory_per_gpu_gib']:.3g} GiB per GPU on "
                         f"{limit['gpus']} x {limit['memory_per_gpu_gb']:g} GiB ({c['parallel']})")
        items += [f"[yellow]warning:[/] {line}" for line in rec.warnings]
        if "overrides" in written:
            from scaling.advise.recommend import missing_settings

            gaps = missing_settings(rec.overrides)
            how = (f"`scaling train --overrides-file {written['overrides']}` trains it" if not gaps else
                   f"no law gives {', '.join(gaps)}: `scaling train --overrides-file {written['overrides']} "
                   f"{' '.join(f'{k}=VALUE' for k in gaps)}` trains it with yours")
            items.append(f"wrote {written['overrides']}: {how}")
        if "values" in written:
            items.append(f"wrote {written['values']}: the recommended values for any trainer")
    if "verify" in written:
        items.append(f"wrote {written['verify']}: verify the predictions by training there, `scaling sweep "
                     f"{written['verify']}`, then `scaling verify {written['verify_name']}`")
    elif "verify_skipped" in written:
        items.append(f"no verification sweep: {written['verify_skipped']}")
    return items


# ---- sweep status --------------------------------------------------------------------------------------------
MARKS = {"completed": "[green]✓[/]", "diverged": "[yellow]⚠[/]", "failed": "[red]✗[/]", "running": "[cyan]▶[/]",
         "queued": "[blue]…[/]", "interrupted": "[magenta]⏸[/]", "pending": "[dim]·[/]", "corrupt": "[red]![/]"}
"""The mark of each cell state (sweep/status.py STATES)."""


def status_table(sweep: str, states: list[dict], total: int | None = None):
    """One row per cell (sweep/status.cell_states), with the counts by state as its caption; `total`: the sweep's
    cells when `states` is a selection of them."""
    from rich.table import Table

    from scaling.sweep.status import counts

    n = counts(states)
    caption = "  ".join(f"{MARKS[k]} {k} {v}" for k, v in n.items() if v)
    of = f"{len(states)} of {total} cells" if total is not None and total != len(states) else f"{len(states)} cells"
    table = Table(title=f"sweep {sweep} ({of})", caption=caption, title_justify="left")
    for col in ("", "cell", "id", "val loss", "steps", "detail / log"):
        table.add_column(col, overflow="fold")
    for s in states:
        steps = f"{s['steps_done'] or 0}/{s['steps']}" if s["steps"] else "-"
        val = f"{s['val_loss']:.4f}" if s["val_loss"] is not None else ""
        detail = s["detail"]
        if s["state"] == "corrupt":
            detail = "unreadable record: named below the table"
        if s["state"] in ("failed", "diverged") and s["log"]:
            detail = f"{detail} — {s['log']}"
        name = s["name"] or "?"
        if not s["in_plan"]:
            name += " (not in the current plan)"
        table.add_row(MARKS[s["state"]], name, s["id"], val, steps, detail)
    return table


def unreadable_lines(states: list[dict]) -> list[str]:
    """One line per cell whose record cannot be read, naming the file and the fix whole (a path folded inside a
    table cannot be copied)."""
    return [f"! {s['detail']}" for s in states if s["state"] == "corrupt"]


def budget_status_table(sweep: str, per_budget: dict):
    """One row per budget (sweep/status.by_budget): its cells by state, the states with no cell left out."""
    from rich.table import Table

    from scaling.sweep.status import STATES

    used = [k for k in STATES if any(n[k] for n in per_budget.values())]
    table = Table(title=f"sweep {sweep} by budget", title_justify="left")
    for col in ("budget (FLOPs)", "cells", *(f"{MARKS[k]} {k}" for k in used)):
        table.add_column(col, justify="right")
    for budget, n in per_budget.items():
        table.add_row("?" if budget is None else f"{budget:.3g}", str(sum(n.values())), *(str(n[k]) for k in used))
    return table


def sweeps_table(results_dir, per_sweep: dict[str, dict]):
    """One row per sweep (sweep/status.sweep_counts): its cells by state."""
    from rich.table import Table

    table = Table(title=f"sweeps under {results_dir}", title_justify="left")
    for col in ("sweep", "cells", *MARKS):
        table.add_column(col)
    for sweep, n in per_sweep.items():
        table.add_row(sweep, str(sum(n.values())), *(str(n[k]) for k in MARKS))
    return table


# ---- recommendation ------------------------------------------------------------------------------------------
def recommendation_table(rec, wide: bool = False) -> list:
    """The recommended run (advise/recommend.Recommendation): each quantity with its interval, verdict and law,
    and what no law supports, with the sweep that would settle it: a table and its notes."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, (float, int, np.floating)) else str(v)

    notes = Notes()
    table = Table(title=f"recommendation at C = {rec.target_flops:.3g} FLOPs", title_justify="left")
    for col in ("quantity", "value", "95% interval", "verdict", "from" if wide else "note"):
        table.add_column(col, overflow="fold")
    for name, item in rec.items.items():
        interval = f"[{fmt(item['interval'][0])}, {fmt(item['interval'][1])}]" if item["interval"] else ""
        source = item["source"] + (f" ({'; '.join(item['reasons'])})" if item.get("reasons") else "")
        table.add_row(name, fmt(item["value"]), interval, item.get("verdict", ""),
                      escape(source) if wide else notes.ref(f"{name}: {source}"))
    for name, miss in rec.missing.items():
        why = miss["why"] + (f" -> {'; '.join(miss['advice'])}" if miss.get("advice") else "")
        table.add_row(f"[dim]{name}[/]", "[dim]-[/]", "", "[dim]missing[/]",
                      f"[dim]{escape(why)}[/]" if wide else notes.ref(f"{name}: {why}"))
    return [table, *notes.renderables()]


def manifest_line(manifest: dict, folder) -> str:
    """What `scaling data prepare` made, and how to train on it."""
    t, n, d = manifest["tokens"], manifest["documents"], manifest["shards"]
    return (f"{folder}: {t['train']:,} training tokens in {len(d['train'])} shard(s) from {n['train']:,} documents, "
            f"{t['val']:,} held-out tokens from {n['val']:,}; vocab {manifest['vocab_size']:,} "
            f"({manifest['tokenizer']['name']}), {manifest['dtype']}, fingerprint shards:"
            f"{manifest['fingerprint'][:16]}\ntrain on it: data.source=shards data.path={folder} "
            f"model.vocab_size=null")


def layout_table(plan):
    """A pipeline layout (layout/plan.py): per stage, the engines' even split against the balanced one (units,
    forward + backward ms of one micro-batch), and each rank's memory under the balanced split."""
    from rich.table import Table

    from scaling.layout.engines import _run_length
    from scaling.memory import GIB

    vpp = plan.vpp
    table = Table(title=f"pipeline: {plan.pp} stages" + (f" x {vpp} virtual" if vpp > 1 else "") +
                  f", {plan.microbatches} micro-batches of {plan.cluster.microbatch_rows} x {plan.model.seq_len} "
                  f"tokens, data parallel {plan.dp}", title_justify="left")
    for col in ("stage", "rank", "even: units", "ms", "balanced: units", "ms", "GiB/rank"):
        table.add_column(col, justify="left" if "units" in col else "right", no_wrap=True)
    capacity = plan.capacity_bytes
    for k, (even, bal) in enumerate(zip(plan.even.split.stages, plan.balanced.split.stages, strict=True)):
        rank = k % plan.pp
        memory = plan.balanced.memory_bytes_per_rank[rank]
        memory_text = (f"{memory / GIB:.1f}" + (" ✗" if memory > capacity else "")) if k < plan.pp else ""
        table.add_row(str(k), f"{rank}" + (f".{k // plan.pp}" if vpp > 1 else ""),
                      _run_length("".join(plan.units[i].kind for i in even)),
                      f"{(plan.even.forward_s[k] + plan.even.backward_s[k]) * 1e3:,.1f}",
                      _run_length("".join(plan.units[i].kind for i in bal)),
                      f"{(plan.balanced.forward_s[k] + plan.balanced.backward_s[k]) * 1e3:,.1f}", memory_text)
    e, b = plan.even.simulation, plan.balanced.simulation
    table.caption = (f"E embedding, t decoder layer, m MTP, L head + loss. Step (simulated, "
                     f"{'1F1B' if vpp == 1 else 'interleaved 1F1B'}, no communication): even {e.step_s:,.2f} s "
                     f"(idle {e.bubble:.0%}), balanced {b.step_s:,.2f} s (idle {b.bubble:.0%}): "
                     f"x{e.step_s / b.step_s:.2f}. Memory: {capacity / GIB:.0f} GiB usable per GPU.")
    return table
