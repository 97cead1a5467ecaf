"""The batch scheduler as a process sees it: its job from the environment, job states, and the signal protocol."""

import os
import signal

import pytest

from scaling import scheduler


def test_the_job_comes_from_the_environment(monkeypatch):
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(key, raising=False)
    assert scheduler.batch_job_id() is None and scheduler.restart_count() == 0
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert scheduler.batch_job_id() == "77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert scheduler.batch_job_id() == "12_3" and scheduler.restart_count() == 2


def _fake(tmp_path, name: str, script: str) -> None:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_job_states_from_squeue_then_sacct_for_forgotten_jobs(tmp_path, monkeypatch):
    _fake(tmp_path, "squeue", 'echo "12_0|RUNNING"\necho "12_1|PENDING"\n')
    _fake(tmp_path, "sacct", 'echo "12_2|CANCELLED by 0"\necho "12_1|COMPLETED"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    states = scheduler.job_states(["12_0", "12_1", "12_2", "99_0"])
    assert states == {"12_0": "RUNNING", "12_1": "PENDING", "12_2": "CANCELLED"}  # squeue wins; 99 unknown
    assert states["12_0"] in scheduler.ACTIVE and states["12_2"] in scheduler.ENDED


def test_without_slurm_states_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not scheduler.available() and scheduler.job_states(["1"]) == {}


def test_a_failing_squeue_gives_no_states_rather_than_an_error(tmp_path, monkeypatch):
    _fake(tmp_path, "squeue", "exit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert scheduler.job_states(["5_0"]) == {}


@pytest.fixture
def clean_requests():
    saved = dict(scheduler._REQUESTS)
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR2)
    yield
    scheduler._REQUESTS.update(saved)
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGUSR2, previous[1])


def test_signals_ask_for_a_checkpoint_or_a_stop_served_at_a_step(clean_requests):
    scheduler._REQUESTS.update(checkpoint=False, stop=None)
    scheduler.handle_signals()
    assert scheduler.pending_requests() == (False, None)
    os.kill(os.getpid(), signal.SIGTERM)  # a cancel is coming: checkpoint and go on
    assert scheduler.pending_requests() == (True, None) and scheduler.stop_requested() is None
    scheduler.checkpoint_served()
    assert scheduler.pending_requests() == (False, None)
    os.kill(os.getpid(), signal.SIGUSR2)  # the time-limit warning: checkpoint and stop
    assert scheduler.stop_requested() == "preempted (SIGUSR2)"
    scheduler.checkpoint_served()
    assert scheduler.pending_requests() == (False, "preempted (SIGUSR2)")  # a stop stays asked
