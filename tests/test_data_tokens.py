"""Token streams, sources and batches: windows across shards, batches as functions of (seed, step), mixtures."""

import numpy as np
import pytest

from scaling.data.tokens import DataError, Source, TokenData, TokenStream


def data_of(*sources):
    return TokenData(list(sources), fingerprint="f", source="test", vocab_size=1000)


def test_a_stream_of_shards_reads_as_their_concatenation():
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 1000, n).astype(np.uint16) for n in (7, 1, 30, 12)]
    stream, whole = TokenStream(pieces + [np.zeros(0, np.uint16)]), np.concatenate(pieces).astype(np.int64)
    assert len(stream) == len(whole) == 50
    for start in range(0, 45):
        for length in (1, 5, 9):
            if start + length <= 50:
                assert np.array_equal(stream.window(start, length), whole[start : start + length])


def test_batches_are_a_function_of_seed_and_step():
    d = data_of(Source(TokenStream([np.arange(10_000, dtype=np.uint16) % 997]),
                       TokenStream([np.arange(2_000, dtype=np.uint16)])))
    x1, y1 = d.train_batch(step=5, batch_size=4, seq_len=16, seed=0)
    x2, _ = d.train_batch(step=5, batch_size=4, seq_len=16, seed=0)
    x3, _ = d.train_batch(step=6, batch_size=4, seq_len=16, seed=0)
    assert x1.shape == (4, 16) and np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])  # targets are the next tokens
    xv, yv = d.val_sequences(val_tokens=1000, seq_len=100)
    assert xv.shape == (10, 100) and np.array_equal(xv.flatten()[1:], yv.flatten()[:-1])
    assert np.array_equal(xv[0], np.arange(100))  # the held-out set is the start of the validation split


def test_a_single_stream_draws_the_windows_it_always_drew():
    """One source, one shard: the same random starts as before mixtures existed (the golden curves rely on it)."""
    tokens = (np.arange(5_000) % 251).astype(np.uint16)
    d = data_of(Source(TokenStream([tokens]), TokenStream([tokens[:500]])))
    x, _ = d.train_batch(step=3, batch_size=4, seq_len=8, seed=7)
    starts = np.random.default_rng([7, 3]).integers(0, len(tokens) - 8 - 1, size=4, endpoint=True)
    assert np.array_equal(x, np.stack([tokens[s : s + 8] for s in starts]))


def test_a_mixture_draws_rows_by_weight_and_scores_each_source():
    a = Source(TokenStream([np.full(5_000, 1, np.uint16)]), TokenStream([np.full(2_000, 1, np.uint16)]), 0.75, "a")
    b = Source(TokenStream([np.full(5_000, 2, np.uint16)]), TokenStream([np.full(2_000, 2, np.uint16)]), 0.25, "b")
    d = data_of(a, b)
    rows = np.concatenate([d.train_batch(step, 16, 8, seed=0)[0][:, 0] for step in range(200)])
    assert np.mean(rows == 1) == pytest.approx(0.75, abs=0.03)  # 3200 rows: 3 sigma is 0.023
    assert np.array_equal(d.train_batch(9, 16, 8, 0)[0], d.train_batch(9, 16, 8, 0)[0])
    xv, _ = d.val_sequences(val_tokens=800, seq_len=100)
    assert list(xv[:, 0]) == [1] * 6 + [2] * 2
    assert d.summary().epochs(10_000) == pytest.approx(0.75 * 10_000 / 5_000)
    with pytest.raises(ValueError, match="use .sources"):
        d.train  # noqa: B018 (a mixture has no single stream)


def test_a_validation_split_shorter_than_a_sequence_is_refused():
    d = data_of(Source(TokenStream([np.arange(1000, dtype=np.uint16)]), TokenStream([np.arange(50, dtype=np.uint16)])))
    with pytest.raises(DataError, match="fewer than one sequence of 64.*data.val_fraction"):
        d.val_sequences(1000, 64)
