"""The worker slots a launcher config gives on this machine, and the cells still to do."""

import json

from scaling import store
from scaling.sweep import workers
from scaling.sweep.estimate import sweep_wall_seconds
from scaling.sweep.launcher import LauncherConfig


def test_worker_slots_one_per_gpu_times_runs_per_gpu(monkeypatch):
    import torch


    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = workers.worker_slots(LauncherConfig(runs_per_gpu=3))
    assert [s[0] for s in slots] == ["gpu0.0", "gpu0.1", "gpu0.2", "gpu1.0", "gpu1.1", "gpu1.2"]
    assert [s[1]["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0"] * 3 + ["1"] * 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert [s[1]["CUDA_VISIBLE_DEVICES"] for s in workers.worker_slots(LauncherConfig())] == ["5", "7"]
    cpu = workers.worker_slots(LauncherConfig(workers=2, device="cpu"))
    assert [s[1]["CUDA_VISIBLE_DEVICES"] for s in cpu] == ["", ""] and all(s[2] >= 1 for s in cpu)


def test_cells_at_once_never_exceed_the_cores(monkeypatch):
    """The time estimate divides by the cells that truly run at once: workers beyond the cores share them."""
    monkeypatch.setattr(workers, "cpu_cores", lambda: 2)
    assert workers.parallel_cells(LauncherConfig(workers=1, device="cpu")) == 1
    assert workers.parallel_cells(LauncherConfig(workers=2, device="cpu")) == 2
    assert workers.parallel_cells(LauncherConfig(workers=5, device="cpu")) == 2
    estimates = {f"c{i}": 10.0 for i in range(6)}
    assert sweep_wall_seconds(estimates, LauncherConfig(workers=5, device="cpu")) == (30.0, 2)
    assert sweep_wall_seconds({"c0": 10.0}, LauncherConfig(workers=5, device="cpu")) == (10.0, 1)


def test_cells_to_run_reads_each_record_once_and_names_the_unreadable(tmp_path):
    """Final records are done; a failed one is retried only when asked (an interrupted one always resumes); an
    unreadable record is reported and its cell left alone."""
    assert workers._record_todo(None, retry_failed=False)
    assert not workers._record_todo({"status": "completed"}, retry_failed=True)
    assert not workers._record_todo({"status": "diverged"}, retry_failed=True)
    failed = {"status": "failed", "error": {"kind": "exception"}}
    assert not workers._record_todo(failed, retry_failed=False) and workers._record_todo(failed, retry_failed=True)
    assert workers._record_todo({"status": "failed", "error": {"kind": "interrupted"}}, retry_failed=False)
    assert workers._record_todo({"status": "running", "error": None}, retry_failed=False)

    class Cell:
        def __init__(self, rid):
            self.run_id, self.name = rid, f"cell-{rid}"

    class Plan:
        name = "s"
        cells = [Cell("a"), Cell("b"), Cell("c")]

    path = store.record_path(tmp_path, "s", "b")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    store.record_path(tmp_path, "s", "c").write_text(json.dumps({"schema": 0}))
    reported = []
    todo, failed_n, unreadable = workers.cells_to_run(Plan(), tmp_path, False, reported.append)
    assert [c.run_id for c in todo] == ["a"] and failed_n == 0 and unreadable == 2
    assert len(reported) == 2 and "cell-b" in reported[0] and str(path) in reported[0]
