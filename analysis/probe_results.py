"""The corruption, race and bad-input matrix of issues 13 and 31, run as a user would (the CLI, in a fresh temporary
folder), printed as one table: probe, outcome, nothing lost.

    python analysis/probe_results.py            # about 5 minutes on the 2-core CPU
    python analysis/probe_results.py symlink    # only the probes whose name holds this text

"Nothing lost" means: every record, claim or file that existed before the probe is still there, byte for byte
(or replaced only by the run's own completion), and nothing was written outside the results folder: besides each
probe's own check, the script keeps a canary folder beside every probe's lab (a file, the target of every planted
symlink) and compares it byte for byte afterwards, so a probe cannot vouch for itself. A probe that does not behave
prints FAIL and the script exits 1. The same behaviours are tested one by one in tests/ (test_store,
test_claims, test_train, test_config, test_sweep_local, test_fit_cli, test_tracking, test_data, test_cpu_blas).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64", "train.batch_size=4",
        "data.val_tokens=2048", "wandb.mode=disabled"]
TINY_SWEEP = """name: {name}
base: [model.d_model=32, model.n_heads=2, model.d_expert=32, model.seq_len=64, train.batch_size=4,
       data.val_tokens=2048, train.checkpoint_every=5, {wandb}]
budgets: [{budget}]
lr:
  values: [1e-3, 3e-3, 1e-2]
"""


class Lab:
    """A fresh results folder, cache and working directory; runs the CLI there."""

    def __init__(self, root: Path):
        self.root = root
        self.results = root / "results"
        self.env = {**os.environ, "SCALING_RESULTS": str(self.results), "SCALING_CACHE": str(root / "cache"),
                    "WANDB_MODE": "disabled"}
        self.env.pop("WANDB_API_KEY", None)

    def cli(self, *args, env=None, timeout=300, **popen):
        cmd = [sys.executable, "-m", "scaling.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={**self.env, **(env or {})}, **popen)

    def popen(self, *args, env=None):
        cmd = [sys.executable, "-m", "scaling.cli", *map(str, args)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.root,
                                env={**self.env, **(env or {})})

    def sweep_file(self, name: str, budget: str = "2e9", wandb: str = "wandb.mode=disabled") -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(TINY_SWEEP.format(name=name, budget=budget, wandb=wandb))
        return path

    def snapshot(self) -> dict:
        return {p: p.read_bytes() for p in self.results.rglob("*") if p.is_file()} if self.results.exists() else {}


def one_line(out) -> str:
    lines = [line for line in (out.stderr or "").splitlines() if line.strip()]
    return lines[-1][:110] if lines else ""


def kept(before: dict, after: dict, allowed=()) -> bool:
    """Every file of `before` is in `after` unchanged, except the paths in `allowed`."""
    return all(p in allowed or after.get(p) == data for p, data in before.items())


def run_id_of(lab: Lab, overrides) -> str:
    out = lab.cli("train", *overrides, "--dry-run")
    return next(w for w in out.stdout.split() if len(w) == 12 and all(c in "0123456789abcdef" for c in w))


# ---- probes: each returns (outcome, nothing lost, ok) ----------------------------------------------------------
def _second_train(lab: Lab, between=None):
    """Start `scaling train` of a run, wait until it holds its claim, call `between(first process, claim path)`,
    run the same train again, let the first finish: (the second's result, the run's record)."""
    args = ["train", *TINY, "budget_flops=3e10", "--no-progress"]
    first = lab.popen(*args)
    rid = run_id_of(lab, TINY + ["budget_flops=3e10"])
    claim = lab.results / "single" / "claims" / f"{rid}.claim"
    deadline = time.time() + 120
    while time.time() < deadline and not claim.exists():
        time.sleep(0.05)
    resume = between(first, claim) if between else None
    second = lab.cli(*args)
    if resume:
        resume()
    first.communicate(timeout=300)
    return second, json.loads((lab.results / "single" / "runs" / f"{rid}.json").read_text())


def two_trains_at_once(lab: Lab):
    second, record = _second_train(lab)
    ok = second.returncode == 2 and "is being trained by" in second.stderr and record["status"] == "completed"
    return f"2nd refused: {one_line(second)[7:70]}...", record["provenance"]["attempts"] == 1, ok


def train_over_a_completed_record(lab: Lab):
    args = ["train", *TINY, "budget_flops=2e9", "--no-progress"]
    lab.cli(*args)
    before = lab.snapshot()
    again = lab.cli(*args)
    return "not re-trained: record untouched", kept(before, lab.snapshot()), "already completed" in again.stderr


def claim_file(content: bytes, age_s: float):
    def probe(lab: Lab):
        from scaling.sweep.plan import compose_sweep, plan_sweep

        sweep = lab.sweep_file("claims")

        rid = plan_sweep(compose_sweep(str(sweep))).cells[0].run_id
        claim = lab.results / "claims" / "claims" / f"{rid}.claim"
        claim.parent.mkdir(parents=True, exist_ok=True)
        claim.write_bytes(content)
        t = time.time() - age_s
        os.utime(claim, (t, t))
        out = lab.cli("sweep", sweep, "--no-probe", "--no-progress")
        trained = (lab.results / "claims" / "runs" / f"{rid}.json").exists()
        if age_s > 60:
            return (f"stale after {age_s:.0f} s: taken over, trained" if trained else "still blocked",
                    True, trained and out.returncode == 0)
        status = lab.cli("status", "claims")
        live = "unreadable claim" in status.stdout
        return ("fresh: waits (status: 'an unreadable claim ... stale after 60 s')" if live else "not shown", True,
                live and not trained)
    return probe


def corrupt_records(lab: Lab):
    sweep = lab.sweep_file("corrupt", budget="2e9, 6e9")
    from scaling.sweep.plan import compose_sweep, plan_sweep

    ids = [c.run_id for c in plan_sweep(compose_sweep(str(sweep))).cells]
    runs = lab.results / "corrupt" / "runs"
    runs.mkdir(parents=True)
    (runs / f"{ids[0]}.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00")
    (runs / f"{ids[1]}.json").write_text(json.dumps({"schema": 1, "id": ids[1], "sweep": "corrupt",
                                                     "status": "exploded", "config": {}, "derived": {},
                                                     "results": {}, "provenance": {}}))
    (runs / f"{ids[2]}.json").write_text(json.dumps({"schema": 1, "id": ids[2], "sweep": "corrupt",
                                                     "status": "completed", "config": {}, "derived": {},
                                                     "results": {"val_loss": 3.0}, "provenance": {}}))
    before = lab.snapshot()
    out = {cmd: lab.cli(*args) for cmd, args in {
        "sweep": ("sweep", sweep, "--no-probe", "--no-progress"), "status": ("status", "corrupt"),
        "runs": ("runs", "corrupt"), "fit": ("fit", "corrupt", "--bootstrap", "20")}.items()}
    named = all(sum(str(runs / f"{i}.json") in o.stdout + o.stderr for i in ids[:3]) == 3
                for o in (out["sweep"], out["status"], out["runs"]))
    trained = sum((runs / f"{i}.json").exists() for i in ids[3:])
    no_trace = not any("Traceback" in o.stderr for o in out.values())
    return (f"3 named by sweep/status/runs, other {trained} cells trained, no traceback", kept(before, lab.snapshot()),
            named and trained == 3 and no_trace)


def csv_rows(lab: Lab):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for C in np.logspace(17, 19, 5):
        for lr in 0.3 * C**-0.125 * np.geomspace(0.25, 4, 12):
            loss = (1.8 + 30 * C**-0.08 + 0.02 * np.log(lr / (0.3 * C**-0.125)) ** 2) * np.exp(rng.normal(0, 0.002))
            rows.append({"params": 0.1 * C**0.5, "flops": C, "loss": loss, "lr": lr})
    df = pd.DataFrame(rows).astype(object)
    df.loc[3, "lr"], df.loc[7, "loss"], df.loc[11, "loss"] = "abc", -1.0, 0.0
    csv = lab.root / "runs.csv"
    df.to_csv(csv, index=False)
    out = lab.cli("fit", "--from", csv, "-o", lab.root / "csvfit", "--json", "--bootstrap", "20")
    try:
        fit = json.loads((lab.root / "csvfit" / "fit.json").read_text(), parse_constant=lambda c: 1 / 0)
    except (OSError, ValueError, ZeroDivisionError):
        fit = None
    excluded = (fit or {}).get("excluded", {}).get("runs")
    return (f"57 of 60 fitted; excluded {excluded}; fit.json valid JSON", True,
            out.returncode == 0 and fit is not None and excluded == {"loss not positive": 2,
                                                                      "lr not a finite number": 1})


def short_divergence(lab: Lab):
    out = lab.cli("train", *TINY, "budget_flops=4e8", "train.lr=10", "--no-progress")
    said = (out.stdout.strip().splitlines() or [""])[-1]
    return f"exit {out.returncode}: {said[:90]}", True, out.returncode == 3 and "diverged" in out.stdout


def bad_setting(override: str):
    def probe(lab: Lab):
        before = lab.snapshot()
        out = lab.cli("train", *TINY, "budget_flops=2e9", override)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        return (one_line(out)[7:100], kept(before, lab.snapshot()) and len(lab.snapshot()) == len(before),
                out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr)
    return probe


def bad_sweep(text: str):
    def probe(lab: Lab):
        path = lab.root / "bad.yaml"
        path.write_text(text)
        around = set(lab.root.parent.iterdir())
        out = lab.cli("sweep", path, "--no-probe", "--no-progress", env={"SECRET_TOKEN": "hunter2"})
        outside = set(lab.root.parent.iterdir()) - around  # nothing new beside the lab folder (../../x)
        return (one_line(out)[7:100], not outside and "hunter2" not in out.stderr + out.stdout,
                out.returncode == 2 and "Traceback" not in out.stderr)
    return probe


def corrupt_plan(lab: Lab):
    plan = lab.results / "p" / "plan.json"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b'{"cells": [')
    out = lab.cli("status", "p")
    return one_line(out)[7:100], plan.read_bytes() == b'{"cells": [', out.returncode == 2 and "corrupt" in out.stderr


def unwritable_results(lab: Lab):
    out = lab.cli("train", *TINY, "budget_flops=2e9", "--results-dir", "/proc/scaling-results", "--no-progress")
    return one_line(out)[7:100], True, out.returncode == 2 and "Traceback" not in out.stderr


def wide_shards(lab: Lab):
    import numpy as np

    from scaling.data.shards import write_shard

    folder = lab.root / "shards32"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 200_000), ("val", 20_000)):
        write_shard(folder / f"{name}.bin", rng.integers(1, 50257, n).astype(np.uint32))
    out = lab.cli("train", *TINY, "budget_flops=2e9", "data.source=shards", f"data.path={folder}",
                  "model.vocab_size=50304")
    return one_line(out)[7:100], True, out.returncode == 2 and "data.token_dtype=uint32" in out.stderr


def full_disk(lab: Lab):
    code = f"""
import io, sys
from scaling import store
from scaling.compose import compose
from scaling.train import train
from rich.console import Console
real = store.write_record
def full(path, record):
    if record["status"] == "completed":
        raise store.StoreError(f"no space left on the device writing {{path}}: free disk space")
    real(path, record)
store.write_record = full
text = io.StringIO()
try:
    train(compose({TINY + ['budget_flops=2e9']!r}), show_progress=False, console=Console(file=text, width=400))
except store.StoreError as e:
    print(text.getvalue().strip().splitlines()[-1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=lab.env, cwd=lab.root,
                         timeout=300)
    line = out.stdout.strip()
    return (line[:40] + " ... " + line[line.find("NOT RECORDED"):][:45], True,
            "completed: val loss" in line and "no space left" in line)


def wandb_without_network(lab: Lab):
    sweep = lab.sweep_file("wb", wandb="wandb.mode=online")
    t0 = time.time()
    out = lab.cli("sweep", sweep, "--no-probe", "--no-progress",
                  env={"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://10.255.255.1:80"}, timeout=600)
    wall = time.time() - t0
    said = out.stderr.count("W&B is unreachable")
    return (f"3 cells in {wall:.0f} s (was ~65 s each); said once on the console: {said == 1}", True,
            out.returncode == 0 and said == 1 and wall < 60)


def leftovers_after_completion(lab: Lab):
    sweep = lab.sweep_file("left")
    lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    from scaling.sweep.plan import compose_sweep, plan_sweep

    rid = plan_sweep(compose_sweep(str(sweep))).cells[0].run_id
    folder = lab.results / "left"
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / f"{rid}.pt").write_bytes(b"x" * 5_500_000)
    (folder / "claims" / f"{rid}.claim").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7,
                                                                "token": "dead"}))
    (folder / "runs" / f".{rid}.json.killed.tmp").write_bytes(b"half")
    records = {p: p.read_bytes() for p in (folder / "runs").glob("*.json")}
    lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    gone = not any((folder / sub / name).exists() for sub, name in
                   (("checkpoints", f"{rid}.pt"), ("claims", f"{rid}.claim"), ("runs", f".{rid}.json.killed.tmp")))
    return "checkpoint (5.5 MB), dead claim, .tmp removed on the next launch", kept(records, lab.snapshot()), gone


def sigterm_to_launcher(lab: Lab):
    sweep = lab.sweep_file("term", budget="3e10")
    proc = lab.popen("sweep", sweep, "--no-probe", "--no-progress", "--workers", "1")
    logs = lab.results / "term" / "logs"
    deadline = time.time() + 120
    while time.time() < deadline and not any("\nstep " in p.read_text() for p in logs.glob("*.log")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    ckpts = list((lab.results / "term" / "checkpoints").glob("*.pt"))
    again = lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    resumed = [json.loads(p.read_text())["provenance"].get("resumed_from_steps") for p in
               (lab.results / "term" / "runs").glob("*.json")]
    return (f"exit {proc.returncode}, {len(ckpts)} checkpoint saved, rerun resumed from {resumed[0][0]}"
            if ckpts and resumed and resumed[0] else f"exit {proc.returncode}, no checkpoint", True,
            proc.returncode == 143 and len(ckpts) == 1 and again.returncode == 0)


def umask_modes(lab: Lab):
    out = lab.cli("train", *TINY, "budget_flops=2e9", "sweep=shared", "--no-progress",
                  preexec_fn=lambda: os.umask(0o002))
    modes = {oct(p.stat().st_mode & 0o777) for p in (lab.results / "shared" / "runs").glob("*.json")}
    return f"records {', '.join(sorted(modes))} under umask 002 (was 0o600)", True, out.returncode == 0 and modes == {
        "0o664"}


def planted_shim(lab: Lab):
    src, lib = lab.root / "planted.c", lab.root / "planted.so"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\n__attribute__((constructor)) static void p(void) '
                   '{ FILE *f = fopen(getenv("PLANTED"), "w"); if (f) fclose(f); }\n')
    if not shutil.which("cc"):
        return "no C compiler here: not probed", True, True
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    native = lab.root / "cache" / "native"
    native.mkdir(parents=True, exist_ok=True)
    shutil.copy(lib, native / "libscaling_mkl_intel_cpu_23328033ab94.so")  # where the old shim was cached
    marker = lab.root / "planted-ran"
    env = {"PLANTED": str(marker), "SCALING_MKL_AVX512": "1"}
    lab.cli("fit", "--help", env=env)
    lab.cli("train", *TINY, "budget_flops=2e9", "sweep=shim", "--no-progress", env=env)
    return "planted library at the old cache path never ran (fit --help, train)", True, not marker.exists()


def new_default_field(lab: Lab):
    from scaling import config
    from scaling.sweep.plan import compose_sweep, plan_sweep

    before = [c.run_id for c in plan_sweep(compose_sweep("demo")).cells]
    real = config.to_dict

    def with_new_field(run):
        d = real(run)
        d["model"]["new_option"] = 1
        return d

    config.to_dict, _ = with_new_field, config._default_identity.cache_clear()
    try:
        after = [c.run_id for c in plan_sweep(compose_sweep("demo")).cells]
    finally:
        config.to_dict, _ = real, config._default_identity.cache_clear()
    same = sum(a == b for a, b in zip(before, after, strict=True))
    return f"{same} of {len(before)} demo cell ids unchanged", True, same == len(before)


# ---- issue 31 --------------------------------------------------------------------------------------------------
def canary(lab: Lab) -> Path:
    """The file outside the results folder that planted symlinks point at (main() checks it afterwards)."""
    return lab.root / "outside" / "canary.txt"


def symlinked_log(lab: Lab):
    from scaling.sweep.plan import compose_sweep, plan_sweep

    sweep = lab.sweep_file("links")
    rid = plan_sweep(compose_sweep(str(sweep))).cells[0].run_id
    log = lab.results / "links" / "logs" / f"{rid}.log"
    log.parent.mkdir(parents=True)
    log.symlink_to(canary(lab))
    out = lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    refused = "is a symbolic link: nothing is written through one" in out.stderr
    log.unlink()
    again = lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    done = len(list((lab.results / "links" / "runs").glob("*.json"))) == 3
    return ("cell refused (log is a symlink), canary untouched; trained once moved aside", True,
            refused and again.returncode == 0 and done)


def symlinked_plot(lab: Lab):
    sweep = lab.sweep_file("plots")
    lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    lab.cli("fit", "plots", "--bootstrap", "20")
    pngs = sorted((lab.results / "plots" / "fit").glob("*.png"))
    if not pngs:
        return "no plot written by the first fit", True, False
    pngs[0].unlink()
    pngs[0].symlink_to(canary(lab))
    out = lab.cli("fit", "plots", "--bootstrap", "20")
    return (f"{pngs[0].name} replaced, not written through", True,
            out.returncode in (0, 1) and pngs[0].is_file() and not pngs[0].is_symlink())


def odd_claim(kind: str):
    def probe(lab: Lab):
        from scaling.sweep.plan import compose_sweep, plan_sweep

        sweep = lab.sweep_file("odd")
        rid = plan_sweep(compose_sweep(str(sweep))).cells[0].run_id
        claim = lab.results / "odd" / "claims" / f"{rid}.claim"
        claim.parent.mkdir(parents=True)
        if kind == "directory":
            claim.mkdir()
            (claim / "inside").write_text("kept")
        else:
            claim.symlink_to(lab.root / "nowhere")
        t = time.time() - 120
        os.utime(claim, (t, t), follow_symlinks=False)
        out = lab.cli("sweep", sweep, "--no-probe", "--no-progress")
        trained = (lab.results / "odd" / "runs" / f"{rid}.json").exists()
        asides = list(claim.parent.glob("*.aside"))
        kept_dir = kind != "directory" or (asides and (asides[0] / "inside").read_text() == "kept")
        return (f"2 min old {kind}: taken over, trained" + (", moved aside" if kind == "directory" else ""),
                bool(kept_dir), out.returncode == 0 and trained and not (lab.root / "nowhere").exists())
    return probe


def location_interpolation(lab: Lab):
    secret = "hunter2-probe"
    sweep = lab.root / "leak.yaml"
    sweep.write_text("name: leak\nbase: [results_dir=${oc.env:DB_PASSWORD}, wandb.project=${results_dir}, "
                     "model.d_model=32, model.n_heads=2, model.d_expert=32, model.seq_len=64]\nbudgets: [2e9]\n")
    out = lab.cli("sweep", sweep, "--no-probe", "--no-progress", env={"DB_PASSWORD": str(lab.root / secret)})
    cli = lab.cli("train", *TINY, "budget_flops=2e9", "results_dir=${oc.env:DB_PASSWORD}",
                  "wandb.project=run-${results_dir}", env={"DB_PASSWORD": str(lab.root / secret)})
    leaked = [p for p in lab.root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    return (one_line(out)[7:90] + "...", not leaked,
            out.returncode == 2 and cli.returncode == 2 and "interpolates a location" in out.stderr + cli.stderr)


def lying_record(lab: Lab):
    sweep = lab.sweep_file("lies", budget="2e9, 4e9, 6e9, 8e9")
    lab.cli("sweep", sweep, "--no-probe", "--no-progress")
    runs = sorted((lab.results / "lies" / "runs").glob("*.json"))
    smallest = [p for p in runs if json.loads(p.read_text())["derived"]["budget_flops"] == 2e9]
    rec = json.loads(smallest[0].read_text())
    rec["results"]["val_loss"] = -1
    smallest[0].write_text(json.dumps(rec))
    rec = json.loads(smallest[1].read_text())
    rec["derived"]["tokens"] = "abc"
    smallest[1].write_text(json.dumps(rec))
    before = lab.snapshot()
    out = lab.cli("fit", "lies", "--bootstrap", "20", "--json")
    try:
        excluded = json.loads(out.stdout).get("excluded", {}).get("runs", {})
    except ValueError:
        excluded = {}
    named = all(str(p) in out.stdout + out.stderr for p in smallest[:2])
    ok = out.returncode in (0, 1) and "Traceback" not in out.stderr and named and sum(
        n for k, n in excluded.items() if "invalid record" in k) == 2
    return f"excluded: {excluded}, both files named", kept(before, lab.snapshot(), allowed=[
        p for p in before if "/fit/" in str(p)]), ok


def edited_law(edit: dict, expect: str):
    def probe(lab: Lab):
        law = {"kind": "power", "variables": ["C"], "params": {"a": 0.3, "b": -0.12},
               "fitted_range": {"C": [1e9, 1e12]}, **edit}
        path = lab.root / "fit.json"
        path.write_text(json.dumps({"laws": {"lr_opt": law}}))
        before = path.read_bytes()
        sweep = lab.root / "centred.yaml"
        sweep.write_text(f"name: centred\nbudgets: [2e9]\nlr:\n  law: {path}\n  factors: [0.5, 1, 2]\n")
        out = lab.cli("sweep", sweep, "--dry-run", "--no-probe")
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        return (one_line(out)[7:100], path.read_bytes() == before,
                out.returncode == 2 and len(lines) == 1 and expect in out.stderr and "Traceback" not in out.stderr)
    return probe


def binary_verify_yaml(lab: Lab):
    path = lab.root / "verify.yaml"
    path.write_bytes(b"name: v\n\xd5\xff\x00\x81")
    out = lab.cli("sweep", path, "--dry-run")
    return one_line(out)[7:100], True, out.returncode == 2 and "not a text file" in out.stderr


def prepare_input(name: str, content: bytes, expect: str):
    def probe(lab: Lab):
        folder = lab.root / "in"
        folder.mkdir()
        (folder / name).write_bytes(content)
        out = lab.cli("data", "prepare", folder, "--out", lab.root / "prepared", "--train-bpe", "300", "--workers",
                      "1", "--no-progress")
        manifest = (lab.root / "prepared" / "manifest.json").exists()
        return (one_line(out)[7:100], True, out.returncode != 0 and expect in out.stderr and not manifest
                and "Traceback" not in out.stderr and "Aborted" not in out.stderr)
    return probe


def _gz_cut() -> bytes:
    import gzip

    whole = gzip.compress(b"".join(json.dumps({"text": f"document {i} " * 40}).encode() + b"\n" for i in range(300)))
    return whole[: len(whole) // 2]


def sigint_to_launcher(lab: Lab):
    sweep = lab.sweep_file("int", budget="3e10")
    proc = lab.popen("sweep", sweep, "--no-probe", "--no-progress", "--workers", "1")
    logs = lab.results / "int" / "logs"
    deadline = time.time() + 120
    while time.time() < deadline and not any("\nstep " in p.read_text() for p in logs.glob("*.log")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the launcher's pid alone, not its group
    proc.communicate(timeout=120)
    time.sleep(3)  # a worker left behind would start the next cell now
    records = [json.loads(p.read_text()) for p in (lab.results / "int" / "runs").glob("*.json")]
    stopped = [r for r in records if r["status"] == "failed" and (r.get("error") or {}).get("kind") == "interrupted"]
    ckpts = list((lab.results / "int" / "checkpoints").glob("*.pt"))
    return (f"exit {proc.returncode}; {len(records)} record(s), {len(stopped)} interrupted with a checkpoint, no new "
            f"cell started", True, proc.returncode == 130 and len(records) == 1 == len(stopped) == len(ckpts))


def sigstop_train(lab: Lab):
    def stop(first, claim):
        os.kill(first.pid, signal.SIGSTOP)
        t = time.time() - 600
        os.utime(claim, (t, t))  # as after 10 minutes stopped: no heartbeat
        return lambda: os.kill(first.pid, signal.SIGCONT)

    second, record = _second_train(lab, stop)
    return ("2nd refused while the 1st was stopped; 1st completed, once", record["provenance"]["attempts"] == 1,
            second.returncode == 2 and "is being trained by" in second.stderr and record["status"] == "completed")


PROBES = [
    ("two `scaling train` of one run at once", two_trains_at_once),
    ("`scaling train` over a completed record", train_over_a_completed_record),
    ("empty claim file, fresh", claim_file(b"", 0)),
    ("empty claim file, 2 min old", claim_file(b"", 120)),
    ("garbage claim file, 2 min old", claim_file(b"\x00\xff{", 120)),
    ("garbage / unknown-status / keyless records", corrupt_records),
    ("CSV: 'abc' lr, loss -1, loss 0 among 60 rows", csv_rows),
    ("lr=10 for 9 steps", short_divergence),
    ("seed=-1", bad_setting("seed=-1")),
    ("train.beta1=1.5", bad_setting("train.beta1=1.5")),
    ("model.init_std=-1", bad_setting("model.init_std=-1")),
    ("train.grad_clip=nan", bad_setting("train.grad_clip=nan")),
    ("train.divergence_factor=nan", bad_setting("train.divergence_factor=nan")),
    ("budget_flops=inf", bad_setting("budget_flops=inf")),
    ("sweep=../../x", bad_setting("sweep=../../x")),
    ("sweep YAML name: ../../x", bad_sweep("name: ../../x\nbudgets: [2e9]\n")),
    ("sweep YAML name: /abs/elsewhere", bad_sweep("name: /tmp/elsewhere\nbudgets: [2e9]\n")),
    ("sweep YAML name: ${oc.env:SECRET_TOKEN}", bad_sweep("name: ${oc.env:SECRET_TOKEN}\nbudgets: [2e9]\n")),
    ("malformed sweep YAML", bad_sweep("name: b\nbudgets: [2e9\n")),
    ("corrupt plan.json", corrupt_plan),
    ("unwritable results folder", unwritable_results),
    ("uint32 shards read as uint16", wide_shards),
    ("full disk at the final record", full_disk),
    ("W&B online, key set, no network", wandb_without_network),
    ("kill just after `completed` (leftovers)", leftovers_after_completion),
    ("SIGTERM to the local launcher", sigterm_to_launcher),
    ("umask 002", umask_modes),
    ("planted MKL shim", planted_shim),
    ("a new config field with a default", new_default_field),
    ("log is a symlink to a file outside", symlinked_log),
    ("fit plot is a symlink to a file outside", symlinked_plot),
    ("claim is a dangling symlink, 2 min old", odd_claim("dangling symlink")),
    ("claim is a directory, 2 min old", odd_claim("directory")),
    ("wandb.project=${results_dir} from the env", location_interpolation),
    ("records: val_loss -1, tokens 'abc'", lying_record),
    ("fit.json lr law a=-1", edited_law({"params": {"a": -1.0, "b": -0.12}}, "prefactor a must be positive")),
    ("fit.json lr law a=1e308", edited_law({"params": {"a": 1e308, "b": 0.5}}, "predicts inf")),
    ("fit.json variables: 123", edited_law({"variables": 123}, "variables 123 must be a list")),
    ("binary verify.yaml", binary_verify_yaml),
    ("prepare: truncated .jsonl.gz", prepare_input("a.jsonl.gz", _gz_cut(), "truncated or corrupt")),
    ("prepare: .gz that is not gzip", prepare_input("a.jsonl.gz", b'{"text": "x"}\n', "truncated or corrupt")),
    ("prepare: empty .jsonl", prepare_input("a.jsonl", b"", "no text to train on")),
    ("prepare: random bytes as .bin", prepare_input("a.bin", os.urandom(8192), "is not UTF-8 text")),
    ("SIGINT to the launcher's pid alone", sigint_to_launcher),
    ("SIGSTOP of a training, 10 min", sigstop_train),
]


CANARY = b"the canary: nothing may write here"


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    rows, failures = [], 0
    t_all = time.time()
    for name, probe in PROBES:
        if only not in name:
            continue
        root = Path(tempfile.mkdtemp(prefix="scaling-probe-"))
        lab = Lab(root)
        canary(lab).parent.mkdir()
        canary(lab).write_bytes(CANARY)
        t0 = time.time()
        try:
            os.environ["SCALING_RESULTS"], os.environ["SCALING_CACHE"] = str(root / "results"), str(root / "cache")
            outcome, lost_nothing, ok = probe(lab)
        except Exception as e:  # a probe that crashes is a failure, shown as such
            outcome, lost_nothing, ok = f"probe crashed: {type(e).__name__}: {e}"[:100], False, False
        finally:
            outside = sorted(p.name for p in canary(lab).parent.iterdir())
            lost_nothing = lost_nothing and canary(lab).read_bytes() == CANARY and outside == ["canary.txt"]
            shutil.rmtree(root, ignore_errors=True)
        failures += not (ok and lost_nothing)
        rows.append((name, outcome, "yes" if lost_nothing else "NO", "ok" if ok else "FAIL", time.time() - t0))
        print(f"{'ok  ' if ok and lost_nothing else 'FAIL'} {name} ({time.time() - t0:.1f} s)", file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"| {'probe':<{width}} | outcome | nothing lost | |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for name, outcome, lost, ok, _ in rows:
        print(f"| {name:<{width}} | {outcome} | {lost} | {ok} |")
    print(f"\n{len(rows) - failures} of {len(rows)} probes behave ({time.time() - t_all:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
