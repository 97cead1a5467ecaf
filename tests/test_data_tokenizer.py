"""Tokenizers: a file, a folder, a name in the local Hugging Face cache (never a download), end-of-text."""

import pytest

from scaling.data import tokenizer as tok
from scaling.data.tokens import DataError


def small_tokenizer(path, specials=("<|endoftext|>",)):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", *specials, "hello", "world"])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(str(path))
    return path


def test_a_tokenizer_is_found_as_a_file_a_folder_or_a_cached_name(tmp_path, monkeypatch):
    path = small_tokenizer(tmp_path / "tokenizer.json")
    assert tok.find_tokenizer(str(path)) == path and tok.find_tokenizer(str(tmp_path)) == path
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    small_tokenizer(snapshot / "tokenizer.json")
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert tok.find_tokenizer("org/tiny") == snapshot / "tokenizer.json"
    with pytest.raises(DataError, match="'gpt9' is neither a tokenizer.json file nor in the local Hugging Face "
                                        "cache.*nothing is downloaded"):
        tok.find_tokenizer("gpt9")


def test_end_of_text_is_found_or_named(tmp_path):
    t = tok.load(small_tokenizer(tmp_path / "a.json"))
    assert tok.end_of_text_id(t) == ("<|endoftext|>", 1)
    plain = tok.load(small_tokenizer(tmp_path / "b.json", specials=("<sep>",)))
    with pytest.raises(DataError, match="none of the end-of-text tokens.*--eot-token"):
        tok.end_of_text_id(plain)
    assert tok.end_of_text_id(plain, "<sep>") == ("<sep>", 1)
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(DataError, match="not a readable tokenizer.json"):
        tok.load(tmp_path / "c.json")


def test_a_trained_bpe_encodes_any_text_and_knows_end_of_text(tmp_path):
    texts = ["def f(x):\n    return x + 1\n"] * 50 + ["naïve café ☕"]
    t = tok.train_bpe(texts, 300, tmp_path / "tokenizer.json")
    assert t.get_vocab_size() <= 300 and tok.end_of_text_id(t)[0] == "<|endoftext|>"
    encoded = t.encode("unseen 字 text")
    assert t.decode(encoded.ids) == "unseen 字 text"  # byte-level: nothing is unknown
    assert tok.load(tmp_path / "tokenizer.json").encode("def f").ids == t.encode("def f").ids
