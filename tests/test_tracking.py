"""The W&B mirror: mode resolution, offline logging with resume by id, nothing secret in its config."""

import pytest

from scaling import tracking
from scaling.config import WandbConfig


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert tracking.resolve_mode(WandbConfig(mode="auto")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode(WandbConfig(mode="auto")) == "online"
    assert tracking.resolve_mode(WandbConfig(mode="disabled")) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(WandbConfig(mode="online")) == "disabled"


def test_disabled_is_a_null_tracker(tmp_path):
    t = tracking.start(WandbConfig(mode="disabled"), "id1", "n", "s", {}, [], tmp_path)
    assert isinstance(t, tracking.NullTracker)


@pytest.mark.slow
def test_offline_run_logs_locally_without_secrets(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("MY_SECRET_TOKEN", "s3cr3t-value-123")
    t = tracking.start(WandbConfig(mode="offline"), "abc123", "cell", "sweep1", {"lr": 0.003}, ["C=1e11"], tmp_path)
    assert isinstance(t, tracking.WandbTracker)
    t.log({"train/loss": 3.0}, step=1)
    t.finish()
    [run_dir] = list((tmp_path / "wandb").glob("offline-run-*-abc123"))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # the offline run's log, to `wandb sync` later
    assert not any(b"s3cr3t-value-123" in p.read_bytes() for p in files)
