"""Weights & Biases mirror of a run. The results store is the source of truth; W&B is a view of it.

Mode 'auto' logs online when an API key is available (WANDB_API_KEY or a `wandb login`), offline otherwise; a
WANDB_MODE environment variable wins over the config. A W&B failure never fails the run: it is reported once and
the run goes on without the mirror. Nothing secret is logged: the W&B config is the run's resolved config and
derived quantities, which hold no environment values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from scaling.config import WandbConfig


class NullTracker:
    run_url = None

    def log(self, metrics: dict, step: int) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker:
    def __init__(self, wb_run, online: bool):
        self._run = wb_run
        self.run_url = wb_run.url if online else None  # offline runs have no URL (and wandb warns if asked)

    def log(self, metrics: dict, step: int) -> None:
        try:
            self._run.log(metrics, step=step)
        except Exception as e:  # the mirror must not kill the run
            print(f"warning: W&B log failed ({e}); continuing without it", file=sys.stderr)
            self._run = None
            self.log = NullTracker().log

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            try:
                self._run.finish(exit_code=exit_code)
            except Exception as e:
                print(f"warning: W&B finish failed ({e})", file=sys.stderr)


def resolve_mode(cfg: WandbConfig) -> str:
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if cfg.mode != "auto":
        return cfg.mode
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def start(cfg: WandbConfig, run_id: str, name: str, sweep: str, config: dict, tags: list[str],
          directory: Path):
    """Start (or resume, same id) the W&B run of one record; a NullTracker when disabled or unavailable."""
    mode = resolve_mode(cfg)
    if mode == "disabled":
        return NullTracker()
    try:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        wb_run = wandb.init(
            project=cfg.project, entity=cfg.entity, id=run_id, name=name, group=sweep, tags=tags,
            config=config, dir=str(directory), mode=mode, resume="allow", reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", init_timeout=60),
        )
        return WandbTracker(wb_run, online=mode == "online")
    except Exception as e:
        print(f"warning: W&B could not start ({type(e).__name__}: {e}); the run goes on without it "
              f"(set wandb.mode=disabled to silence this)", file=sys.stderr)
        return NullTracker()
