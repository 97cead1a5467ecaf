"""Claim files: exactly one owner, stale claims taken over, release only by the owner."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from scaling import claims, store


def test_one_owner_at_a_time_and_release(tmp_path):
    path = tmp_path / "c" / "x.claim"
    a, b = claims.new_owner("a"), claims.new_owner("b")
    assert claims.try_claim(path, a)
    assert not claims.try_claim(path, b)  # a is this live process
    claims.release(path, b)  # not b's to release
    assert path.exists()
    claims.release(path, a)
    assert not path.exists()
    assert claims.try_claim(path, b)


def test_many_threads_race_for_one_claim_and_one_wins(tmp_path):
    path = tmp_path / "race.claim"
    owners = [claims.new_owner(str(i)) for i in range(16)]
    wins = []
    barrier = threading.Barrier(len(owners))

    def attempt(owner):
        barrier.wait()
        if claims.try_claim(path, owner):
            wins.append(owner["token"])

    threads = [threading.Thread(target=attempt, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert claims.read_claim(path)[0]["token"] == wins[0]
    assert [p.name for p in tmp_path.iterdir()] == ["race.claim"]  # no temporary or lock files left


def test_a_dead_owners_claim_is_taken_over_at_once(tmp_path):
    path = tmp_path / "x.claim"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ghost = {**claims.new_owner("ghost"), "pid": int(dead.stdout)}  # that process has exited
    assert claims.try_claim(path, ghost)
    me = claims.new_owner("me")
    assert claims.try_claim(path, me)
    assert claims.read_claim(path)[0]["token"] == me["token"]


def test_a_stopped_owner_on_this_host_keeps_its_claim_and_a_reused_pid_does_not(tmp_path):
    """Issue 31: `scaling train` stopped with SIGSTOP for 70 s lost its claim (no heartbeat) and a second train
    retrained the run. An owner here is judged by its process: a stopped process is alive, whatever its heartbeat's
    age. A pid that now belongs to a process started after the claim is not the owner."""
    path = tmp_path / "x.claim"
    stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        os.kill(stopped.pid, signal.SIGSTOP)
        owner = {**claims.new_owner("scaling train"), "pid": stopped.pid}
        assert claims.try_claim(path, owner)
        old = time.time() - 10 * claims.STALE_AFTER_S
        os.utime(path, (old, old))  # stopped: no heartbeat for ten minutes
        assert not claims.try_claim(path, claims.new_owner("second train"))
        reused = {**owner, "claimed": time.time() - 3600}  # claimed an hour before this pid's process started
        assert not claims.is_live(reused, age=0.0)
    finally:
        stopped.kill()
        stopped.wait()
    assert claims.try_claim(path, claims.new_owner("second train"))  # the owner is gone: taken at once


def test_a_claim_from_another_host_is_live_until_its_heartbeat_is_stale(tmp_path):
    import os
    import time

    path = tmp_path / "x.claim"
    remote = {**claims.new_owner("remote"), "host": "some-other-node"}
    assert claims.try_claim(path, remote)
    me = claims.new_owner("me")
    assert not claims.try_claim(path, me, stale_after=60)
    old = time.time() - 120
    os.utime(path, (old, old))  # no heartbeat for two minutes
    assert claims.try_claim(path, me, stale_after=60)


def test_heartbeat_refreshes_the_claim(tmp_path):
    import os
    import time

    path = tmp_path / "x.claim"
    owner = claims.new_owner()
    claims.try_claim(path, owner)
    old = time.time() - 100
    os.utime(path, (old, old))
    with claims.Heartbeat(path, interval=0.05):
        time.sleep(0.3)
    assert claims.read_claim(path)[1] < 5


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b"[1, 2]"])
def test_an_unreadable_claim_blocks_only_until_it_is_stale(tmp_path, content):
    """Empty (a power cut) or garbage: judged by its file's age like any claim, not live forever."""
    path = tmp_path / "x.claim"
    path.write_bytes(content)
    assert not claims.try_claim(path, claims.new_owner("a"))  # fresh: maybe being written, wait
    old = time.time() - claims.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    owner = claims.new_owner("b")
    assert claims.try_claim(path, owner)
    assert claims.read_claim(path)[0]["token"] == owner["token"]


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink to a file", "directory"])
def test_a_claim_path_that_is_not_a_file_blocks_only_until_it_is_stale(tmp_path, kind):
    """A dangling symlink at a claim's path used to block its cell forever (stat followed it: "no claim", then the
    link blocked every create); a directory killed the worker (IsADirectoryError). Both are judged by their own
    age; once stale the link goes (never its target) and the directory is moved aside."""
    path, target = tmp_path / "x.claim", tmp_path / "target.json"
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_text("kept")
    else:
        if kind == "symlink to a file":
            target.write_text('{"host": "elsewhere", "pid": 1, "token": "t"}')
        path.symlink_to(target)
    assert claims.read_claim(path)[0] == {}
    assert not claims.try_claim(path, claims.new_owner("a"))  # fresh: wait, as for any unreadable claim
    old = time.time() - claims.STALE_AFTER_S - 5
    os.utime(path, (old, old), follow_symlinks=False)
    owner = claims.new_owner("b")
    assert claims.try_claim(path, owner)
    assert claims.read_claim(path)[0]["token"] == owner["token"] and not path.is_symlink()
    if kind == "symlink to a file":
        assert target.read_text() == '{"host": "elsewhere", "pid": 1, "token": "t"}'
    if kind == "directory":
        (aside,) = tmp_path.glob("x.claim.*.aside")
        assert (aside / "inside").read_text() == "kept"


def test_held_takes_the_claim_or_names_who_holds_it(tmp_path):
    other = claims.new_owner("sweep worker cpu0")  # this live process, another owner
    assert claims.try_claim(store.claim_path(tmp_path, "s", "r1"), other)
    with pytest.raises(claims.ClaimError, match="run r1 is being trained by sweep worker cpu0 on .* pid"):
        with claims.held(tmp_path, "s", "r1"):
            pass
    with claims.held(tmp_path, "s", "r2") as h:
        assert claims.read_claim(h.path)[0]["token"] == h.owner["token"]
    assert not store.claim_path(tmp_path, "s", "r2").exists()  # released
    with claims.held(tmp_path, "s", "r1", owner=other):  # the worker's own claim: checked, kept
        pass
    assert claims.read_claim(store.claim_path(tmp_path, "s", "r1"))[0]["token"] == other["token"]
    with pytest.raises(claims.ClaimError, match="now held by"):
        with claims.held(tmp_path, "s", "r1", owner=claims.new_owner("stolen")):
            pass


def test_tidy_removes_what_a_kill_after_completion_left(tmp_path):
    from tests.test_store import a_record

    for rid, status in (("done", "completed"), ("going", "running")):
        store.write_record(store.record_path(tmp_path, "s", rid), a_record(rid, status))
        ckpt = store.checkpoint_path(tmp_path, "s", rid)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"weights")
        dead = {**claims.new_owner("w"), "pid": 2**22 + 7}  # no such process
        store.claim_path(tmp_path, "s", rid).parent.mkdir(parents=True, exist_ok=True)
        store.claim_path(tmp_path, "s", rid).write_text(__import__("json").dumps(dead))
    killed = store.runs_dir(tmp_path, "s") / ".going.json.abc.tmp"  # its writer is dead (no live claim)
    killed.write_bytes(b"half")
    live = claims.new_owner("w")
    claims.try_claim(store.claim_path(tmp_path, "s", "live"), live)
    writing = store.runs_dir(tmp_path, "s") / ".live.json.def.tmp"  # its writer holds a live claim
    writing.write_bytes(b"being written")
    old_plan, new_plan = (store.sweep_dir(tmp_path, "s") / f".plan.json.{x}.tmp" for x in ("old", "new"))
    for path in (old_plan, new_plan):
        path.write_bytes(b"{")
    old = time.time() - store.TMP_STALE_S - 5
    os.utime(old_plan, (old, old))
    removed = claims.tidy(tmp_path, "s")
    assert sorted(p.name for p in removed) == [".going.json.abc.tmp", ".plan.json.old.tmp", "done.claim", "done.pt"]
    assert store.checkpoint_path(tmp_path, "s", "going").exists() and writing.exists() and new_plan.exists()
    assert store.record_path(tmp_path, "s", "done").exists()


def test_a_killed_owner_not_yet_reaped_is_dead():
    """A SIGKILLed owner is a zombie until its parent (or init) reaps it: its pid still answers, but it trains
    nothing, so its claim is taken over at once (a rerun right after killing a torchrun group must not wait)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {**claims.new_owner("killed"), "pid": child.pid}
        assert claims.is_live(owner, age=0.0)
        child.kill()
        deadline = time.time() + 10
        while time.time() < deadline and claims._process_stat(child.pid)[0] != "Z":
            time.sleep(0.01)  # not waited for: a zombie
        assert claims._process_stat(child.pid)[0] == "Z"
        assert not claims.is_live(owner, age=0.0)
    finally:
        child.kill()
        child.wait()
