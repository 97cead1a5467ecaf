"""The W&B mirror: mode resolution, offline logging with resume by id, nothing secret in its config."""

import time

import pytest

from scaling import tracking
from scaling.config import WandbConfig


def offline_log(run_dir, *keys: bytes, wait_s: float = 60.0) -> bytes:
    """The bytes of an offline run's .wandb log once it holds every key. W&B's service process writes the log on
    its own schedule, and under load it can still hold only its header when finish() returns; waiting for the
    keys (rather than reading once) keeps the check about what is logged, not about when it reaches the disk."""
    deadline = time.monotonic() + wait_s
    while True:
        log = b"".join(p.read_bytes() for p in sorted(run_dir.glob("*.wandb")))
        if all(k in log for k in keys) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert tracking.resolve_mode(WandbConfig(mode="auto")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode(WandbConfig(mode="auto")) == "online"
    assert tracking.resolve_mode(WandbConfig(mode="disabled")) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode(WandbConfig(mode="auto")) == "disabled"  # auto follows the environment
    assert tracking.resolve_mode(WandbConfig(mode="offline")) == "offline"  # an explicit mode wins


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
    assert b"train/loss" in offline_log(run_dir, b"train/loss")  # the offline log, to `wandb sync` later
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert not any(b"s3cr3t-value-123" in p.read_bytes() for p in files)


@pytest.mark.slow
def test_a_trained_run_logs_offline_where_wandb_sync_looks_with_x_axes_and_summary(monkeypatch, tmp_path):
    """Offline files in <results>/<sweep>/wandb/offline-run-* (not wandb/wandb/); metrics carry tokens and flops
    (the x-axes define_metric names) and the summary the final held-out loss, tokens/s and MFU."""
    from scaling.compose import compose
    from scaling.train import train

    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = compose(["budget_flops=2e9", "model.d_model=32", "model.n_heads=2", "model.d_expert=32", "model.seq_len=64",
                   "train.batch_size=4", "data.val_tokens=2048", "wandb.mode=offline", "sweep=wb",
                   f"results_dir={tmp_path}"])
    record = train(run, show_progress=False)
    [run_dir] = list((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{record['id']}-*"))
    assert not (tmp_path / "wb" / "wandb" / "wandb").exists()
    keys = (b"final/val_loss", b"final/tokens_per_s", b"final/mfu", b"train/*", b"val/*", b"flops")
    log = offline_log(run_dir, *keys)
    for key in keys:
        assert key in log, key


@pytest.mark.slow
def test_a_fit_is_logged_as_a_run_in_the_sweeps_group(monkeypatch, tmp_path):
    from scaling.config import WandbConfig

    monkeypatch.delenv("WANDB_MODE", raising=False)
    payload = {"n_runs": 30, "laws": {"lr_opt": {"formula": "a * C^b", "params": {"a": 5.0, "b": -0.26},
                                                 "interval": {"b": [-0.3, -0.2]}, "r2": 0.99,
                                                 "verdict": {"verdict": "reliable", "reasons": []}}}}
    where = tracking.log_fit(WandbConfig(mode="offline"), "demo", payload, [], tmp_path)
    assert where and "wandb sync" in where
    [run_dir] = list((tmp_path / "wandb").glob("offline-run-*"))
    log = offline_log(run_dir, b"lr_opt/b", b"reliable", b"fit-demo")
    assert b"lr_opt/b" in log and b"reliable" in log and b"fit-demo" in log
    assert tracking.log_fit(WandbConfig(mode="disabled"), "demo", payload, [], tmp_path) is None


def test_an_unreachable_server_is_tried_once_per_sweep_then_offline(monkeypatch, tmp_path):
    """With a key and no network every cell used to stall ~65 s in wandb.init. Now the first finds the server
    unreachable (a 5 s connect at most), marks the sweep, and it and every later cell log offline at once."""
    import socket

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: refused at once
    inits = []

    class FakeWandb:
        Settings = staticmethod(lambda **kw: kw)

        @staticmethod
        def init(mode, **kw):
            inits.append(mode)
            if mode == "online":
                raise AssertionError("an online init was attempted")
            return type("Run", (), {"url": None, "define_metric": lambda *a, **k: None})()

    monkeypatch.setitem(__import__("sys").modules, "wandb", FakeWandb)
    connects = []
    real = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a) or real(*a, **k))
    for i in range(3):
        tracking.start(WandbConfig(mode="online"), f"id{i}", "n", "s", {}, [], tmp_path)
    assert inits == ["offline"] * 3 and len(connects) == 1
    assert "cannot connect to 127.0.0.1:9" in tracking.unreachable(tmp_path)
    assert f"`wandb sync {tmp_path / 'wandb'}` uploads them later" in tracking.unreachable_notice(tmp_path)
    tracking.reset_unreachable(tmp_path)  # the next launch tries again
    assert tracking.unreachable(tmp_path) is None and tracking.unreachable_notice(tmp_path) is None
    tracking._mark_unreachable(tmp_path, "down")  # a `scaling train` after an outage, which no launch resets:
    assert tracking.unreachable(tmp_path) == "down"
    import json
    import time

    marker = tmp_path / "wandb" / tracking.UNREACHABLE
    marker.write_text(json.dumps({"reason": "down", "time": time.time() - tracking.RETRY_AFTER_S - 1}))
    assert tracking.unreachable(tmp_path) is None  # ... tries the network again once the marker is old


def test_locations_stay_out_of_the_wandb_config():
    from scaling.compose import compose
    from scaling.config import to_dict

    config = tracking.wandb_config(to_dict(compose(["results_dir=/home/alice/secret-project"])))
    assert "results_dir" not in config and "path" not in config["data"] and "cache_dir" not in config["data"]
    assert config["model"]["d_model"] == 64
