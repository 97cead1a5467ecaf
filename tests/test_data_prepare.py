"""`scaling data prepare`: a JSONL corpus made here becomes llm.c shards with a held-out split and a manifest,
with a trained BPE or a saved tokenizer.json, resumes when interrupted, refuses to overwrite, and trains."""

import json

import numpy as np
import pytest

from scaling import data
from scaling.config import DataConfig
from scaling.data import prepare as prep
from scaling.data import shards
from scaling.data import tokenizer as tok
from scaling.data.tokens import DataError

WORDS = ("the model routes each token to two experts and the router learns which expert fits a token best "
         "while a balancing loss keeps every expert busy").split()


def make_corpus(folder, n_docs=600, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = [" ".join(rng.choice(WORDS, size=rng.integers(5, 60))) for _ in range(n_docs)]
    half = n_docs // 2
    for name, part in (("a.jsonl", docs[:half]), ("b.jsonl", docs[half:])):
        (folder / name).write_text("".join(json.dumps({"text": d, "meta": 1}) + "\n" for d in part))
    return docs


def options(corpus, out, **kw):
    base = {"inputs": [str(corpus)], "out": str(out), "shard_tokens": 2048, "val_fraction": 0.1, "workers": 1,
            "show_progress": False}
    return prep.PrepareOptions(**{**base, **kw})


def decoded_documents(folder, split, manifest):
    t = tok.load(folder / "tokenizer.json")
    eot = manifest["tokenizer"]["eot_id"]
    stream = np.concatenate([shards.read_shard(folder / s["file"]) for s in manifest["shards"][split]])
    assert stream[0] == eot  # every document starts with end-of-text
    cuts = np.flatnonzero(stream == eot)
    return [t.decode(stream[a + 1 : b].tolist()) for a, b in zip(cuts, list(cuts[1:]) + [len(stream)], strict=True)]


def test_a_jsonl_corpus_becomes_shards_with_a_trained_bpe_and_a_held_out_split(tmp_path):
    docs = make_corpus(tmp_path / "corpus")
    manifest = prep.prepare(options(tmp_path / "corpus", tmp_path / "out", train_bpe=300))
    out = tmp_path / "out"
    assert manifest["vocab_size"] <= 300 and manifest["dtype"] == "uint16"
    assert manifest["documents"]["train"] + manifest["documents"]["val"] == len(docs)
    assert all(s["tokens"] == 2048 for s in manifest["shards"]["train"][:-1])  # exact-size shards, short last
    for split in ("train", "val"):
        expected = [d for d in docs if prep.is_val(d, 0.1) == (split == "val")]
        assert decoded_documents(out, split, manifest) == expected  # in order, nothing lost or doubled
    assert 0.05 < manifest["documents"]["val"] / len(docs) < 0.15
    for s in manifest["shards"]["train"]:
        assert shards.read_header(out / s["file"])[1] == s["tokens"]  # llm.c headered
    d = data.load(DataConfig(source="shards", path=str(out)))
    assert len(d.train) == manifest["tokens"]["train"] and d.fingerprint == f"shards:{manifest['fingerprint'][:16]}"
    assert not (out / prep.STATE).exists()
    assert prep.prepare(options(tmp_path / "corpus", out, train_bpe=300)) == manifest  # done: nothing redone
    with pytest.raises(DataError, match="already holds a corpus prepared from other inputs or settings.*new --out"):
        prep.prepare(options(tmp_path / "corpus", out, train_bpe=400))


def test_a_saved_tokenizer_on_every_core_writes_the_same_corpus(tmp_path):
    make_corpus(tmp_path / "corpus")
    first = prep.prepare(options(tmp_path / "corpus", tmp_path / "bpe", train_bpe=300))
    again = prep.prepare(options(tmp_path / "corpus", tmp_path / "file", tokenizer=str(tmp_path / "bpe" /
                                                                                         "tokenizer.json"),
                                 workers=2))
    assert again["fingerprint"] == first["fingerprint"] and again["shards"] == first["shards"]


def test_an_interrupted_prepare_resumes_without_redoing_finished_shards(tmp_path, monkeypatch):
    docs = make_corpus(tmp_path / "corpus", n_docs=900)
    whole = prep.prepare(options(tmp_path / "corpus", tmp_path / "whole", train_bpe=300))
    real_flush, flushed = prep._ShardWriter._flush, []

    def flush_then_die(self, n):
        real_flush(self, n)
        flushed.append(self.split)
        if flushed.count("train") == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(prep._ShardWriter, "_flush", flush_then_die)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(options(tmp_path / "corpus", out, train_bpe=300))
    state = json.loads((out / prep.STATE).read_text())
    assert len(state["splits"]["train"]["shards"]) == 10 and not (out / shards.MANIFEST).exists()
    resume_at = {split: state["splits"][split]["next_doc"] for split in ("train", "val")}
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("train_*.bin")}
    monkeypatch.setattr(prep._ShardWriter, "_flush", real_flush)
    encoded = []
    real_encode = prep.encode_chunk
    monkeypatch.setattr(prep, "encode_chunk", lambda texts: encoded.extend(texts) or real_encode(texts))
    resumed = prep.prepare(options(tmp_path / "corpus", out, train_bpe=300))
    assert resumed["fingerprint"] == whole["fingerprint"] and resumed["shards"] == whole["shards"]
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps  # finished shards untouched
    # Tokenized again: only the documents of each split from where its last written shard ended.
    again = sum(i >= resume_at["val" if prep.is_val(d, 0.1) else "train"] for i, d in enumerate(docs))
    assert len(encoded) == again < 0.75 * len(docs)


def test_a_vocabulary_over_65536_writes_uint32_shards(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(70_000)]
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(tmp_path / "big.json"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "d.jsonl").write_text("".join(json.dumps({"text": f"w1 w{69_990 - i} w5"}) + "\n"
                                                    for i in range(400)))
    manifest = prep.prepare(options(tmp_path / "c", tmp_path / "out", tokenizer=str(tmp_path / "big.json")))
    assert manifest["dtype"] == "uint32" and manifest["max_token"] > 65_535
    d = data.load(DataConfig(source="shards", path=str(tmp_path / "out"), token_dtype="uint16"))  # headers win
    assert max(d.train.window(0, len(d.train)).max(), d.val.window(0, len(d.val)).max()) == manifest["max_token"]


def test_bad_options_are_refused_before_any_work(tmp_path):
    make_corpus(tmp_path / "corpus", n_docs=10)
    with pytest.raises(DataError, match="exactly one of --tokenizer"):
        prep.prepare(options(tmp_path / "corpus", tmp_path / "o"))
    with pytest.raises(DataError, match="--shard-tokens 10 is too small"):
        prep.prepare(options(tmp_path / "corpus", tmp_path / "o", train_bpe=300, shard_tokens=10))
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "train_000000.bin").write_bytes(b"\0" * 8)
    with pytest.raises(DataError, match="holds shards but no manifest.*new --out"):
        prep.prepare(options(tmp_path / "corpus", tmp_path / "stray", train_bpe=300))
    assert not (tmp_path / "o").exists()


def test_a_corpus_with_nothing_to_train_or_evaluate_on_is_refused_with_the_fix(tmp_path):
    """Issue 31: an empty .jsonl was accepted as a corpus of 0 tokens; 60 small documents at the default 1% held out
    none and `prepare` said "train on it", then training refused."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jsonl").write_text("")
    with pytest.raises(DataError, match=r"the inputs hold no text to train on \(0 tokens"):
        prep.prepare(options(tmp_path / "empty", tmp_path / "o1", train_bpe=300))
    make_corpus(tmp_path / "small", n_docs=60)
    with pytest.raises(DataError, match=r"no document fell in the validation split \(60 documents at --val-fraction "
                                        r"0.01 hold out 0.6 on average\).*new --out .*--val-fraction 0.083"):
        prep.prepare(options(tmp_path / "small", tmp_path / "o2", train_bpe=300, val_fraction=0.01))
    assert not (tmp_path / "o2" / shards.MANIFEST).exists()
    manifest = prep.prepare(options(tmp_path / "small", tmp_path / "o3", train_bpe=300, val_fraction=0.083))
    assert manifest["tokens"]["val"] > 0


def test_a_rerun_with_the_output_inside_the_input_folder_finds_its_own_corpus(tmp_path):
    """Issue 31: --out inside an input folder made the rerun read its own shards as inputs and refuse."""
    make_corpus(tmp_path / "corpus", n_docs=100)
    opts = options(tmp_path / "corpus", tmp_path / "corpus" / "prepared", train_bpe=300)
    first = prep.prepare(opts)
    assert prep.prepare(opts) == first


def test_the_cli_prepares_a_corpus_a_run_then_trains_on(tmp_path):
    from typer.testing import CliRunner

    from scaling.cli import app
    from scaling.compose import compose
    from scaling.train import train

    make_corpus(tmp_path / "corpus", n_docs=2000)
    result = CliRunner().invoke(app, ["data", "prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "tok"),
                                      "--train-bpe", "300", "--shard-tokens", "1e4", "--workers", "1",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "train on it: data.source=shards data.path=" in result.output
    run = compose(["data.source=shards", f"data.path={tmp_path / 'tok'}", "model.vocab_size=null",
                   "budget_flops=2e9", "model.d_model=32", "model.n_heads=2", "model.d_expert=32",
                   "model.seq_len=64", "train.batch_size=4", "data.val_tokens=1024", "wandb.mode=disabled",
                   f"results_dir={tmp_path / 'results'}"])
    record = train(run, show_progress=False)
    assert record["status"] == "completed" and record["config"]["model"]["vocab_size"] == 320  # 300 -> 64k
    assert record["derived"]["data_fingerprint"].startswith("shards:")
    assert record["provenance"]["data_tokenizer"] == "bpe-300"
