"""The launcher config: every problem named with its key, one set of worker settings for both launchers."""

from dataclasses import replace

from scaling.sweep.launcher import LauncherConfig, check, task_workers


def test_the_defaults_are_usable_for_both_kinds():
    assert check(LauncherConfig()) == [] and check(LauncherConfig(kind="slurm")) == []


def test_each_problem_names_its_key():
    problems = check(LauncherConfig(kind="k8s", workers=0, device="tpu", mem_gb=0, signal_delay_s=1))
    text = "; ".join(problems)
    for key in ("launcher.kind='k8s'", "launcher.workers=0", "launcher.device='tpu'", "mem_gb",
                "launcher.signal_delay_s=1"):
        assert key in text


def test_a_cell_over_several_gpus_does_not_share_them():
    problems = check(LauncherConfig(gpus_per_run=2, runs_per_gpu=2))
    assert len(problems) == 1 and "runs_per_gpu must be 1" in problems[0]
    assert check(LauncherConfig(gpus_per_run=2)) == []  # local: the task's GPU count does not apply
    slurm = LauncherConfig(kind="slurm", gpus_per_task=3, gpus_per_run=2)
    assert any("not a multiple" in p for p in check(slurm))
    assert check(replace(slurm, gpus_per_task=4)) == []


def test_a_slurm_task_runs_one_worker_per_lane():
    cpu_task = task_workers(LauncherConfig(kind="slurm", gpus_per_task=0, runs_per_gpu=3), lanes=3)
    assert (cpu_task.workers, cpu_task.device) == (3, "cpu")
    gpu_task = task_workers(LauncherConfig(kind="slurm", gpus_per_task=4, runs_per_gpu=2), lanes=8)
    assert (gpu_task.workers, gpu_task.device, gpu_task.runs_per_gpu) == (8, "auto", 2)
