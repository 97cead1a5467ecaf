"""The throughput probe behind `scaling bench` and the sweep time estimate."""

from scaling.config import ModelConfig
from scaling.probe import measure, tokens_per_second

TINY = ModelConfig(d_model=32, n_heads=2, d_expert=32, seq_len=64)


def test_probe_measures_positive_consistent_rates():
    r = measure(TINY, batch_size=4, device="cpu", rounds=2, steps=2, warmup=1)
    assert 0 < r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
    assert r["tokens_per_s"] == 4 * 64 / r["step_s"]
    assert r["device"].startswith("cpu")
    assert tokens_per_second(TINY, 4, device="cpu", steps=2) > 0
