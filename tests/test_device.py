"""The compute device: picking it, naming it, and its matmul peak for MFU."""

import pytest
import torch

from scaling import device


def test_auto_is_the_cpu_without_cuda_and_a_missing_gpu_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.pick("auto").type == "cpu" and device.pick("cpu").type == "cpu"
    with pytest.raises(RuntimeError, match="use train.device=auto or cpu"):
        device.pick("cuda")


def test_the_cpu_is_described_with_its_threads():
    assert device.describe(torch.device("cpu")).startswith(f"cpu ({torch.get_num_threads()} threads")


def test_known_gpus_use_their_data_sheet_peak_and_tf32_is_half(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    device.peak_flops.cache_clear()
    assert device.peak_flops("cuda:0", True) == 989e12 and device.peak_flops("cuda:0", False) == 989e12 / 2
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some Future GPU")
    device.peak_flops.cache_clear()
    assert device.peak_flops("cuda:0", True) is None
    device.peak_flops.cache_clear()


def test_the_cpu_peak_is_measured_once_per_cpu_and_kept(monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("SCALING_CACHE", str(tmp_path))
    device.peak_flops.cache_clear()
    measured = device.peak_flops("cpu", False)
    assert 1e9 < measured < 1e14  # a real measurement, in FLOP/s
    [(key, kept)] = json.loads((tmp_path / "cpu_peak_flops.json").read_text()).items()
    assert kept == measured and "threads" in key and "torch" in key
    device.peak_flops.cache_clear()
    monkeypatch.setattr(device, "cpu_matmul_peak", lambda: 1.0)  # a later process reads it, measures nothing
    assert device.peak_flops("cpu", False) == measured
    device.peak_flops.cache_clear()
    assert device.peak_flops("cpu", False, fresh=True) == 1.0  # scaling bench measures again, and keeps that
    device.peak_flops.cache_clear()
    (tmp_path / "cpu_peak_flops.json").write_text("{broken")
    assert device.peak_flops("cpu", False) == 1.0  # an unreadable file is measured over, not an error
    device.peak_flops.cache_clear()
