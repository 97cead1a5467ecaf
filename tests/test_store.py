"""The results store: atomic records, corrupt files named, DataFrame view."""

import json

import pytest

from scaling import store
from scaling.config import RunConfig, to_dict


DERIVED = {"params_active_non_embedding": 100, "params_non_embedding": 300, "tokens": 100, "steps": 2,
           "flops_per_token": {"M": 1000}, "budget_flops": 1e5, "batch_tokens": 50, "activation_ratio": 0.25,
           "granularity": 1.0}


def a_record(run_id="abc", status="completed", val=2.5):
    rec = store.new_record(run_id, "s", "C1e11-x", to_dict(RunConfig(budget_flops=1e5)), dict(DERIVED),
                           {"seed": 0})
    rec["status"] = status
    rec["results"] = {"val_loss": val, "curve": [{"step": 1, "train_loss": 3.0}]}
    return rec


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = store.record_path(tmp_path, "s", "abc")
    store.write_record(path, a_record())
    assert store.read_record(path)["results"]["val_loss"] == 2.5
    assert [p.name for p in path.parent.iterdir()] == ["abc.json"]


def test_a_failed_write_keeps_the_old_record(tmp_path):
    path = store.record_path(tmp_path, "s", "abc")
    store.write_record(path, a_record("abc", "running", val=2.5))
    bad = a_record("abc", "running", val=float("nan"))  # NaN is not valid JSON: the write must fail, not corrupt the record
    with pytest.raises(ValueError):
        store.write_record(path, bad)
    assert store.read_record(path)["results"]["val_loss"] == 2.5
    assert len(list(path.parent.iterdir())) == 1


def test_corrupt_record_is_named_with_the_fix(tmp_path):
    path = store.record_path(tmp_path, "s", "abc")
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "status": "compl')
    with pytest.raises(store.StoreError, match=r"corrupt run record .*abc.json.*move it aside"):
        store.read_record(path)
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(store.StoreError, match="not a scaling run record"):
        store.read_record(path)


def test_load_gives_one_row_per_run(tmp_path):
    for i, status in enumerate(["completed", "diverged"]):
        store.write_record(store.record_path(tmp_path, "s", f"r{i}"), a_record(f"r{i}", status, 2.0 + i))
    df = store.load(tmp_path)
    assert list(df["id"]) == ["r0", "r1"]
    assert list(df["results.val_loss"]) == [2.0, 3.0]
    assert "derived.tokens" in df.columns and "results.curve" not in df.columns
    with pytest.raises(store.StoreError, match="does not exist"):
        store.load(tmp_path / "missing")


def test_a_crash_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    store.atomic_write_text(path, "old")

    def crash(f):
        f.write(b"half a rec")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        store.atomic_write(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
