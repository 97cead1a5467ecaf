"""The results store: atomic records, corrupt files named, DataFrame view."""

import json
from pathlib import Path

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
    bad = a_record("abc", "running", val=float("nan"))  # NaN is not valid JSON: the write fails, the record stays
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
    df = store.records_frame(tmp_path)
    assert list(df["id"]) == ["r0", "r1"]
    assert list(df["results.val_loss"]) == [2.0, 3.0]
    assert "derived.tokens" in df.columns and "results.curve" not in df.columns
    with pytest.raises(store.StoreError, match="does not exist"):
        store.records_frame(tmp_path / "missing")


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


def test_unreadable_records_are_named_and_skipped_by_readers(tmp_path):
    """Binary garbage, an unknown status, a completed record missing what a fit reads: each is named in one line,
    left as it is, and the readers go on with the others."""
    good = store.record_path(tmp_path, "s", "good")
    store.write_record(good, a_record("good"))
    bad = {"garbage": b"\x89PNG\r\n\x1a\n\xff\xfe", "unknown": None, "missing": None}
    rec = a_record("unknown")
    rec["status"] = "exploded"
    bad["unknown"] = json.dumps(rec).encode()
    rec = a_record("missing")
    del rec["derived"]["flops_per_token"]
    bad["missing"] = json.dumps(rec).encode()
    for name, content in bad.items():
        store.record_path(tmp_path, "s", name).write_bytes(content)
    expect = {"garbage": "not UTF-8", "unknown": "unknown status 'exploded'", "missing": "lacks flops_per_token"}
    for name, words in expect.items():
        with pytest.raises(store.StoreError, match=words) as e:
            store.read_record(store.record_path(tmp_path, "s", name))
        assert str(store.record_path(tmp_path, "s", name)) in str(e.value) and "\n" not in str(e.value)
    skipped = []
    assert [p.stem for p, _ in store.iter_records(tmp_path, "s", on_error=skipped.append)] == ["good"]
    assert len(skipped) == 3 and all("move it" in m for m in skipped)
    with pytest.warns(RuntimeWarning, match="not UTF-8"):
        assert list(store.records_frame(tmp_path)["id"]) == ["good"]
    with pytest.raises(store.StoreError):
        list(store.iter_records(tmp_path, "s", on_error=None))
    for name, content in bad.items():  # untouched
        assert store.record_path(tmp_path, "s", name).read_bytes() == content


def test_a_final_record_is_never_replaced(tmp_path):
    path = store.record_path(tmp_path, "s", "abc")
    store.write_record(path, a_record("abc", "completed"))
    with pytest.raises(store.StoreError, match="already completed: not replacing it"):
        store.write_record(path, a_record("abc", "running"))
    assert store.read_record(path)["status"] == "completed"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(store.StoreError, match="corrupt run record.*not overwriting"):
        store.write_record(path, a_record("abc", "running"))
    assert path.read_bytes() == b"\x00garbage"


@pytest.mark.parametrize("name", ["../x", "../../etc", "/abs/path", "a/b", ".hidden", "", "-x", "a" * 200])
def test_sweep_names_cannot_leave_the_results_folder(tmp_path, name):
    with pytest.raises(store.StoreError, match="not a plain folder name"):
        store.record_path(tmp_path, name, "abc")


def test_writes_follow_the_umask_so_a_team_can_share_a_folder(tmp_path):
    import os

    old = os.umask(0o002)
    try:
        store.atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664  # was 0600 whatever the umask


def test_no_write_under_the_results_folder_follows_a_symlink(tmp_path):
    """A log appended to, a record, a plot or fit.json written: a symlink planted at the path is refused (a log) or
    replaced (an atomic write renames over the link itself); its target is never written."""
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    log = tmp_path / "sweep" / "logs" / "r1.log"
    log.parent.mkdir(parents=True)
    log.symlink_to(target)
    with pytest.raises(store.StoreError, match=r"r1.log is a symbolic link: nothing is written through one; move it "
                                               r"aside"):
        store.open_log(log)
    dangling = log.with_name("r2.log")
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(store.StoreError, match="symbolic link"):
        store.open_log(dangling)
    assert not (tmp_path / "nowhere").exists()
    plot = tmp_path / "sweep" / "fit" / "lr_bowls.png"
    plot.parent.mkdir()
    plot.symlink_to(target)
    store.atomic_write_bytes(plot, b"png")
    assert target.read_text() == "precious" and plot.read_bytes() == b"png" and not plot.is_symlink()
    with store.open_log(log.with_name("r3.log")) as f:
        f.write("a line\n")
    with store.open_log(log.with_name("r3.log")) as f:
        f.write("another\n")
    assert log.with_name("r3.log").read_text() == "a line\nanother\n"


def test_a_full_disk_says_so(tmp_path):
    import errno

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(store.StoreError, match="no space left on the device writing .*x.json: free disk space"):
        store.atomic_write(tmp_path / "x.json", full)
    assert list(tmp_path.iterdir()) == []

    def torch_full(f):  # what torch.save says when the disk fills mid-checkpoint (issue 31)
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 9216 vs 9110")

    with pytest.raises(store.StoreError, match="no space left on the device writing .*r.pt"):
        store.atomic_write(tmp_path / "r.pt", torch_full)


def test_a_read_only_results_folder_is_refused_before_any_work(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(store.StoreError, match="cannot write under"):
            store.check_writable(tmp_path / "results")
    finally:
        tmp_path.chmod(0o700)


def test_a_corrupt_plan_is_named(tmp_path):
    path = store.plan_path(tmp_path, "s")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{\"cells\": [")
    with pytest.raises(store.StoreError, match=r"corrupt sweep plan .*plan.json: move it aside"):
        store.read_plan(tmp_path, "s")


def test_a_results_folder_that_cannot_be_created_is_refused(tmp_path):
    """Permission bits do not tell for root: the check creates a file there (here /proc, which nobody can)."""
    with pytest.raises(store.StoreError, match="cannot write under /proc/scaling-results"):
        store.check_writable(Path("/proc/scaling-results"))
    store.check_writable(tmp_path / "new" / "results")
    assert list((tmp_path / "new" / "results").iterdir()) == []


def test_only_the_store_spells_the_results_layout():
    """One owner of the layout: no other module joins a results-folder part onto a path (they ask store.py)."""
    import re

    parts = r"runs|claims|checkpoints|logs|plan\.json|fit|slurm|submissions|jobs|wandb"
    spelled = re.compile(rf'/ "({parts})"|"({parts})/|glob\("({parts})/')
    package = Path(store.__file__).parent
    offenders = [f"{path.relative_to(package)}:{i}" for path in sorted(package.rglob("*.py")) if path.name != "store.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if spelled.search(line)]
    assert offenders == []
