"""Claim files: exactly one owner, stale claims taken over, release only by the owner."""

import subprocess
import sys
import threading

from scaling import claims


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
