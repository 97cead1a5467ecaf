"""Tokenizers for `scaling data prepare`: a local `tokenizer.json` (Hugging Face `tokenizers`), a name already in
the local Hugging Face cache, or a byte-level BPE trained on the input itself. Nothing is ever downloaded.

Every document is preceded by the tokenizer's end-of-text token (as llm.c and modded-nanogpt write shards), so
documents in a stream are separated by it and a shard starts at a document boundary.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from scaling.data.tokens import DataError

END_OF_TEXT = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")
"""End-of-text tokens looked for in a tokenizer's vocabulary, in this order (GPT-2, Llama 3, T5/Llama 2, ...)."""
BPE_SPECIAL = "<|endoftext|>"


def hf_cache_dirs() -> list[Path]:
    """Where a Hugging Face hub cache may be on this machine ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface)."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def find_tokenizer(spec: str) -> Path:
    """The tokenizer.json a --tokenizer value names: a file, a folder holding one, or a model name ('gpt2',
    'org/name') whose snapshot is in the local Hugging Face cache."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    repo = "models--" + spec.replace("/", "--")
    for cache in hf_cache_dirs():
        snapshots = cache / repo / "snapshots"
        ref = cache / repo / "refs" / "main"
        candidates = [snapshots / ref.read_text().strip()] if ref.is_file() else []
        candidates += sorted(snapshots.glob("*")) if snapshots.is_dir() else []
        for snap in candidates:
            if (snap / "tokenizer.json").is_file():
                return snap / "tokenizer.json"
    raise DataError(f"tokenizer {spec!r} is neither a tokenizer.json file nor in the local Hugging Face cache "
                    f"({', '.join(str(d) for d in hf_cache_dirs())}): pass the path of a tokenizer.json, or "
                    f"--train-bpe VOCAB to train one on the input (nothing is downloaded)")


def load(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exceptions for unreadable files
        raise DataError(f"{path} is not a readable tokenizer.json ({str(e).splitlines()[0][:200]}): pass a "
                        f"Hugging Face tokenizers file") from None


def end_of_text_id(tokenizer, name: str | None = None) -> tuple[str, int]:
    """(token, id) of the end-of-text token: `name` when given, else the first of END_OF_TEXT it knows."""
    for token in [name] if name else END_OF_TEXT:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token, int(token_id)
    raise DataError(f"the tokenizer has none of the end-of-text tokens {', '.join(END_OF_TEXT)}"
                    + (f" (asked: {name!r})" if name else "") + ": name its document separator with --eot-token")


def train_bpe(texts: Iterable[str], vocab_size: int, save_to: Path):
    """A byte-level BPE (GPT-2 style pre-tokenization; every byte in the base alphabet, so any text encodes) of
    `vocab_size` tokens, <|endoftext|> included, trained on `texts` and saved as `save_to` (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    from scaling.store import atomic_write_text

    atomic_write_text(save_to, tokenizer.to_str())
    return tokenizer


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
