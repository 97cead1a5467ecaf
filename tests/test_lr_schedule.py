from scaling.config import TrainConfig
from scaling.lr_schedule import lr_at, warmup_steps


def test_cosine_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert warmup_steps(cfg, 100) == 10
    assert lrs[0] == 0.1 and lrs[9] == 1.0
    assert lrs[10] == 1.0
    assert abs(lrs[-1] - 0.1) < 1e-12
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_wsd_holds_then_decays_exponentially():
    cfg = TrainConfig(lr=1.0, schedule="wsd", warmup_fraction=0.01, decay_fraction=0.2, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[1:80] == [1.0] * 79
    assert abs(lrs[-1] - 0.1) < 1e-12
    assert abs(lrs[89] - 0.1**0.5) < 1e-12  # halfway through the decay: sqrt of the floor
    linear = TrainConfig(lr=1.0, schedule="wsd", warmup_fraction=0.0, decay_fraction=0.5, wsd_decay="linear")
    assert abs(lr_at(74, 100, linear) - 0.55) < 1e-12


def test_an_absolute_warmup_makes_runs_of_every_length_agree_until_the_first_decay():
    from scaling.lr_schedule import stable_end

    cfg = TrainConfig(lr=1.0, schedule="wsd", warmup_steps=7, decay_fraction=0.2)
    assert warmup_steps(cfg, 50) == warmup_steps(cfg, 500) == 7
    assert stable_end(cfg, 50) == 40 and stable_end(cfg, 500) == 400
    short = [lr_at(s, 50, cfg) for s in range(50)]
    long = [lr_at(s, 500, cfg) for s in range(500)]
    assert short[:40] == long[:40] and short[40] < 1.0 == long[40]
    fraction = TrainConfig(lr=1.0, schedule="wsd", warmup_fraction=0.1)
    assert [lr_at(s, 50, fraction) for s in range(5)] != [lr_at(s, 500, fraction) for s in range(5)]
