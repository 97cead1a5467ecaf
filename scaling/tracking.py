"""Weights & Biases mirror of runs and fits. The results store is the source of truth; W&B is a view of it.

Mode: an explicit `wandb.mode` (online, offline, disabled) wins; 'auto' follows a WANDB_MODE environment variable
when one is set, else logs online when an API key is available (WANDB_API_KEY or a `wandb login`), offline
otherwise. Offline runs land in `<results>/<sweep>/wandb/offline-run-*`, where `wandb sync` run from the sweep
folder (or given that path) expects them. A run's metrics are logged against `tokens` and `flops` (its x-axes in
the W&B UI, set with define_metric) as well as the step; its summary holds the final held-out loss, tokens/s and
MFU. A W&B failure never fails the run: it is reported once and the run goes on without the mirror. Nothing secret
is logged: the W&B config is the run's resolved config and derived quantities without its locations (results
folder, data path, cache), the only values that may come from the environment (config.ENV_LOCATIONS).

Online without a network: before starting an online run, W&B's server is tried with a 5 s TCP connect. When it
cannot be reached (or wandb.init fails), the sweep folder gets a marker (`wandb/unreachable.json`, with the reason)
and this run and every later run of the sweep log offline at once instead of each stalling ~60 s; the launcher
says so once on the console and removes the marker when it next starts (`reset_unreachable`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from scaling.config import WandbConfig
from scaling.store import wandb_files

X_AXES = ("tokens", "flops")
"""Metrics every logged point carries, usable as x-axes: training tokens seen, and training FLOPs spent (C)."""


class NullTracker:
    run_url = None

    def log(self, metrics: dict, step: int) -> None:
        pass

    def summarize(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker:
    def __init__(self, wb_run, online: bool):
        self._run = wb_run
        self.run_url = wb_run.url if online else None  # offline runs have no URL (and wandb warns if asked)

    def _guard(self, what: str, call) -> None:
        """Run a W&B call; on failure warn once and go on without the mirror (it must not kill the run)."""
        if self._run is None:
            return
        try:
            call(self._run)
        except Exception as e:
            print(f"warning: W&B {what} failed ({e}); continuing without it", file=sys.stderr)
            self._run = None

    def log(self, metrics: dict, step: int) -> None:
        self._guard("log", lambda run: run.log(metrics, step=step))

    def summarize(self, values: dict) -> None:
        """Set summary metrics (the run's row in the W&B table): e.g. the final held-out loss."""
        self._guard("summary", lambda run: run.summary.update({k: v for k, v in values.items() if v is not None}))

    def finish(self, exit_code: int = 0) -> None:
        self._guard("finish", lambda run: run.finish(exit_code=exit_code))


def resolve_mode(cfg: WandbConfig) -> str:
    """online, offline or disabled: an explicit mode wins over the environment, which 'auto' follows."""
    if cfg.mode != "auto":
        return cfg.mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


UNREACHABLE = "unreachable.json"
"""The marker, in `<sweep folder>/wandb/`, that W&B's server could not be reached during this launch."""
CONNECT_TIMEOUT_S = 5.0
RETRY_AFTER_S = 600.0
"""A marker older than this is ignored: the next run tries the network again (a `scaling train` after an outage,
which no launch resets)."""


def _marker(directory: Path) -> Path:
    return wandb_files(directory) / UNREACHABLE


def unreachable(directory: Path) -> str | None:
    """Why W&B could not be reached from this sweep (its folder `directory`) in this launch, or None; None too once
    the marker is RETRY_AFTER_S old, so that the network is tried again."""
    try:
        marker = json.loads(_marker(directory).read_text())
        when = marker.get("time")
        if not isinstance(when, (int, float)) or time.time() - when > RETRY_AFTER_S:
            return None
        return marker.get("reason") or "unknown reason"
    except (OSError, ValueError, AttributeError):
        return None


def unreachable_notice(directory: Path) -> str | None:
    """The one console line a launcher prints when a sweep's cells found W&B unreachable (None while they did
    not)."""
    why = unreachable(directory)
    if why is None:
        return None
    return (f"W&B is unreachable ({why}): the cells of this sweep log offline; `wandb sync "
            f"{wandb_files(directory)}` uploads them later")


def reset_unreachable(directory: Path) -> None:
    """A new launch tries the network again."""
    _marker(directory).unlink(missing_ok=True)


def _mark_unreachable(directory: Path, reason: str) -> None:
    from scaling.store import StoreError, atomic_write_text

    try:
        atomic_write_text(_marker(directory), json.dumps({"reason": reason, "time": time.time()}))
    except StoreError:
        pass


def server_problem() -> str | None:
    """Why W&B's server (WANDB_BASE_URL, else api.wandb.ai) cannot be reached, by a bounded TCP connect; None
    when it answers."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        return f"cannot connect to {host}:{port} ({type(e).__name__}: {e})"
    return None


def _init(cfg: WandbConfig, directory: Path, **kwargs):
    """The tracker of a new W&B run whose files go under `directory`/wandb; a NullTracker when disabled or when W&B
    cannot start (reported on stderr). Online without a reachable server: offline (see the module docstring)."""
    mode = resolve_mode(cfg)
    if mode == "disabled":
        return NullTracker()
    if mode == "online" and (why := unreachable(directory) or server_problem()):
        _mark_unreachable(directory, why)
        print(f"warning: W&B is unreachable ({why}); logging offline: `wandb sync {wandb_files(directory)}` "
              f"uploads it later", file=sys.stderr)
        mode = "offline"
    try:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        wb_run = wandb.init(project=cfg.project, entity=cfg.entity, dir=str(directory), mode=mode,
                            reinit="finish_previous",
                            settings=wandb.Settings(silent=True, console="off", init_timeout=60), **kwargs)
        return WandbTracker(wb_run, online=mode == "online")
    except Exception as e:
        if mode == "online":
            _mark_unreachable(directory, f"wandb.init failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        print(f"warning: W&B could not start ({type(e).__name__}: {e}); going on without it "
              f"(set wandb.mode=disabled to silence this)", file=sys.stderr)
        return NullTracker()


def wandb_config(config: dict) -> dict:
    """A run's config as W&B gets it: without its locations (config.ENV_LOCATIONS), which may come from the
    environment and say nothing about what was trained."""
    from scaling.config import ENV_LOCATIONS

    out = json.loads(json.dumps(config))
    for key in ENV_LOCATIONS:
        section, _, leaf = key.rpartition(".")
        node = out.get(section) if section else out
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def start(cfg: WandbConfig, run_id: str, name: str, sweep: str, config: dict, tags: list[str],
          directory: Path):
    """Start (or resume, same id) the W&B run of one record, its files under `directory`/wandb (the sweep's
    folder); train/* and val/* metrics are plotted against `tokens` by default, `flops` being the other x-axis."""
    tracker = _init(cfg, directory, id=run_id, name=name, group=sweep, tags=tags, config=wandb_config(config),
                    resume="allow", job_type="train")
    if isinstance(tracker, WandbTracker):
        def define(run) -> None:
            for axis in X_AXES:
                run.define_metric(axis)
            run.define_metric("train/*", step_metric="tokens")
            run.define_metric("val/*", step_metric="tokens")
            run.define_metric("val/loss", summary="last")

        tracker._guard("define_metric", define)
    return tracker


def log_fit(cfg: WandbConfig, sweep: str, payload: dict, figures: list[Path], directory: Path) -> str | None:
    """Log a fit as a W&B run in the sweep's group (job type 'fit'): a table of the laws (formula, parameters,
    interval, verdict), the figures, and each law's parameters in the summary. Returns where it went (its URL, or
    the offline folder to `wandb sync`), or None when W&B is disabled or could not start."""
    tracker = _init(cfg, directory, name=f"fit-{sweep}", group=sweep, job_type="fit",
                    config={"sweep": sweep, "n_runs": payload.get("n_runs"), "source": payload.get("source"),
                            "convention": payload.get("convention")})
    if not isinstance(tracker, WandbTracker):
        return None

    def log(run) -> None:
        import wandb

        columns = ["law", "formula", "params", "interval", "r2", "verdict", "reasons"]
        rows = []
        summary = {}
        for name, law in (payload.get("laws") or {}).items():
            verdict = law.get("verdict") or {}
            params = law.get("params") or {}
            rows.append([name, law.get("formula"), str(params), str(law.get("interval")), law.get("r2"),
                         verdict.get("verdict"), "; ".join(verdict.get("reasons") or [])])
            summary.update({f"{name}/{k}": v for k, v in params.items() if isinstance(v, (int, float))})
            summary[f"{name}/verdict"] = verdict.get("verdict")
        run.log({"laws": wandb.Table(columns=columns, data=rows),
                 **{f"figures/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}})
        run.summary.update(summary)

    tracker._guard("fit log", log)
    where = tracker.run_url or f"offline: `wandb sync {wandb_files(directory)}` uploads it"
    tracker.finish()
    return where
