"""Which data a config names: loaded for training, or summarised for planning (manifest, declared, missing);
mixtures of prepared folders."""

import numpy as np
import pytest

from scaling import data
from scaling.config import DataConfig, MixtureSource
from scaling.data import shards
from scaling.data.tokens import DataError
from tests.test_data_shards import write_manifest_folder


def test_planning_summaries_come_from_a_manifest_a_declared_count_or_say_unknown(tmp_path):
    folder = tmp_path / "prepared"
    write_manifest_folder(folder, [np.arange(3000) % 500], [np.arange(500)])
    (folder / "train_000000.bin").unlink()  # the manifest alone is enough to plan
    summary = data.describe(DataConfig(source="shards", path=str(folder)))
    assert summary.where == "manifest" and summary.train_tokens == [3000] and summary.epochs(6000) == 2.0
    elsewhere = DataConfig(source="shards", path=str(tmp_path / "not-here"), train_tokens=10**9)
    with pytest.raises(DataError, match="not a folder"):
        data.describe(elsewhere)
    declared = data.describe(elsewhere, required=False)
    assert declared.where == "declared" and declared.epochs(2 * 10**9) == 2.0 and declared.vocab_size is None
    unknown = data.describe(DataConfig(source="shards"), required=False)
    assert unknown.where == "missing" and unknown.epochs(10) is None


def test_a_mixture_weights_prepared_folders_and_refuses_mixed_tokenizers(tmp_path):
    write_manifest_folder(tmp_path / "web", [np.full(4000, 7)], [np.full(600, 7)])
    write_manifest_folder(tmp_path / "code", [np.full(1000, 9)], [np.full(600, 9)])
    cfg = DataConfig(source="mixture", mixture=[MixtureSource(str(tmp_path / "web"), 0.8),
                                                MixtureSource(str(tmp_path / "code"), 0.2)])
    d = data.load(cfg)
    assert [s.weight for s in d.sources] == [0.8, 0.2] and d.fingerprint.startswith("mixture:")
    assert data.describe(cfg).fingerprint == d.fingerprint  # planned from manifests = loaded
    reweighted = DataConfig(source="mixture", mixture=[MixtureSource(str(tmp_path / "web"), 0.5),
                                                       MixtureSource(str(tmp_path / "code"), 0.5)])
    assert data.load(reweighted).fingerprint != d.fingerprint
    rows = np.concatenate([d.train_batch(s, 8, 16, seed=0)[0][:, 0] for s in range(100)])
    assert np.mean(rows == 9) == pytest.approx(0.2, abs=0.05)
    assert d.summary().epochs(10_000) == pytest.approx(max(0.8 * 10_000 / 4000, 0.2 * 10_000 / 1000))
    manifest = shards.read_manifest(tmp_path / "code")
    manifest["tokenizer"]["name"] = "other"
    (tmp_path / "code" / "manifest.json").write_text(__import__("json").dumps(manifest))
    with pytest.raises(DataError, match="mixes tokenizers.*same tokenizer"):
        data.load(cfg)
