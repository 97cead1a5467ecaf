"""One cell across nodes: task 0 claims and announces each attempt, the others join only that attempt's
announcement, and every task meets at the same rendezvous. (Two tasks standing in for two nodes train a real
cell on the one-node Slurm cluster: tests/test_sweep_slurm.py, `make test-slurm`.)"""

import json
import threading
import time

from scaling import claims, store
from scaling.sweep.multinode import _announced, _claim_and_announce, rendezvous
from scaling.sweep.workers import torchrun_command


def test_task_zero_claims_and_announces_and_a_cell_it_must_not_train_is_announced_as_skipped(tmp_path):
    run_file = store.run_file_path(tmp_path, "s", "r1")
    owner = _claim_and_announce(run_file, tmp_path, "s", "r1", {"seed": 0}, "C1-s0", "7_0.0",
                                retry_failed=False)
    body = json.loads(run_file.read_text())
    assert body == {"attempt": "7_0.0", "run": {"seed": 0}, "name": "C1-s0", "owner": owner}
    assert claims.read_claim(store.claim_path(tmp_path, "s", "r1"))[0]["token"] == owner["token"]
    assert _announced(run_file, "7_0.0", wait_s=1)
    # a second attempt while the first one's claim is live: skipped, and the other tasks are told
    assert _claim_and_announce(run_file, tmp_path, "s", "r1", {"seed": 0}, "C1-s0", "7_0.1", retry_failed=False) is None
    assert "claimed by another live process" in json.loads(run_file.read_text())["skip"]
    assert not _announced(run_file, "7_0.1", wait_s=1)
    claims.release(store.claim_path(tmp_path, "s", "r1"), owner)

    record = store.new_record("r1", "s", "c", {}, {}, {})  # completed, but without its derived quantities
    record["status"] = "completed"
    store.write_record(store.record_path(tmp_path, "s", "r1"), record)
    assert _claim_and_announce(run_file, tmp_path, "s", "r1", {}, "C1-s0", "7_1.0", retry_failed=False) is None
    assert json.loads(run_file.read_text())["skip"].startswith("unusable run record")  # never trained over


def test_the_other_tasks_wait_for_this_attempts_announcement_not_an_earlier_ones(tmp_path):
    run_file = tmp_path / "r.run.json"
    run_file.write_text(json.dumps({"attempt": "7_0.0", "run": {}, "owner": {}}))  # a previous attempt's
    later = threading.Timer(0.8, lambda: run_file.write_text(json.dumps({"attempt": "7_0.1", "run": {}})))
    later.start()
    t0 = time.time()
    assert _announced(run_file, "7_0.1", wait_s=10) and time.time() - t0 >= 0.7
    assert not _announced(run_file, "7_0.2", wait_s=0.6)  # nobody announced it: not joining


def test_every_task_meets_at_one_rendezvous_per_cell_and_attempt():
    a, b = rendezvous("node1", "7_0.0", "r1"), rendezvous("node1", "7_0.0", "r1")
    assert a == b and a[0].startswith("node1:") and "." not in a[1]
    assert rendezvous("node1", "7_0.1", "r1") != a  # a requeued attempt meets afresh
    cmd = torchrun_command(tmp := "cell.json", 4, nodes=2, endpoint=a[0], rendezvous_id=a[1])
    assert "--nnodes=2" in cmd and f"--rdzv_endpoint={a[0]}" in cmd and "--nproc_per_node=4" in cmd
    assert cmd[-1] == tmp and "--standalone" in torchrun_command("cell.json", 2)
