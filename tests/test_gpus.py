"""The GPUs a plan is costed for, and the MFU kept per GPU and shape."""

import json

from scaling import gpus


def test_a_device_name_is_known_by_its_gpu_and_a_cpu_is_not():
    assert gpus.gpu_of("NVIDIA H100 80GB HBM3") == "H100"
    assert gpus.gpu_of("NVIDIA H200") == "H200"
    assert gpus.gpu_of("NVIDIA A100-SXM4-80GB") == "A100"
    assert gpus.gpu_of("cpu (8 threads)") is None and gpus.gpu_of("Tesla V100") is None


def test_measurements_are_kept_per_gpu_and_shape_and_a_bad_file_or_value_reads_as_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    assert gpus.measured_mfu("H100") == {}
    key = gpus.shape_key({"d_model": 64}, 8, "auto", "tensorwise")
    assert gpus.keep_measured_mfu("H100", key, 0.41, 2e6, "NVIDIA H100")
    assert gpus.keep_measured_mfu("H100", key, 0.43, 2e6, "NVIDIA H100")  # the last measurement wins
    assert gpus.keep_measured_mfu("A100", key, 0.5, 1e6, "NVIDIA A100")
    assert gpus.measured_mfu("H100") == {key: 0.43} and gpus.measured_mfu("L4") == {}
    path = tmp_path / gpus.MFU_FILE
    known = json.loads(path.read_text())
    known["H100"]["other"] = {"mfu": 7}  # not a fraction: ignored, not costed at
    known["H100"]["text"] = {"mfu": "0.4"}
    path.write_text(json.dumps(known))
    assert gpus.measured_mfu("H100") == {key: 0.43}
    path.write_text("{not json")
    assert gpus.measured_mfu("H100") == {}
    assert gpus.keep_measured_mfu("H100", key, 0.4, 2e6, "NVIDIA H100")  # a corrupt cache is replaced, not fatal
    assert gpus.measured_mfu("H100") == {key: 0.4}


def test_an_unknown_target_gpu_is_refused_with_the_known_ones():
    from scaling.sweep.launcher import LauncherConfig, check

    (problem,) = check(LauncherConfig(gpu="V100"))
    assert "launcher.gpu='V100'" in problem and "H100" in problem
