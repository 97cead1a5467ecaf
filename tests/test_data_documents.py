"""Documents from prepare's inputs: every format, in order, with bytes counted; bad rows named."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaling.data import documents as docs
from scaling.data.tokens import DataError


def read_all(paths, text_key="text"):
    seen = []
    texts = [t for item in docs.find_inputs([str(p) for p in paths])
             for t in docs.documents(item, text_key, seen.append)]
    return texts, sum(seen)


def test_every_input_format_yields_its_documents_in_order(tmp_path):
    import zstandard

    rows = [{"text": f"document {i}", "id": i} for i in range(5)]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "a.jsonl").write_text(lines + "\n")  # a blank line is skipped
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    pq.write_table(pa.table({"body": [r["text"] for r in rows]}), tmp_path / "d.parquet", row_group_size=2)
    (tmp_path / "e.txt").write_text("a whole file is one document\nof two lines")
    texts, _ = read_all([tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.zst"])
    assert texts == [r["text"] for r in rows] * 3
    assert read_all([tmp_path / "d.parquet"], "body")[0] == [r["text"] for r in rows]
    assert read_all([tmp_path / "e.txt"])[0] == ["a whole file is one document\nof two lines"]
    folder_inputs = [i.path.name for i in docs.find_inputs([str(tmp_path)])]
    assert folder_inputs == ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet", "e.txt"]  # sorted


def test_a_saved_hugging_face_dataset_is_read_from_its_arrow_files(tmp_path):
    """The layout save_to_disk writes (Arrow stream files listed in state.json), made here with pyarrow."""
    folder = tmp_path / "ds"
    folder.mkdir()
    table = pa.table({"text": [f"row {i}" for i in range(7)], "n": list(range(7))})
    for k, part in enumerate((table.slice(0, 4), table.slice(4))):
        with pa.OSFile(str(folder / f"data-0000{k}-of-00002.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, part.schema) as writer:
                writer.write_table(part)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00002.arrow"},
                                                                   {"filename": "data-00001-of-00002.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    [item] = docs.find_inputs([str(folder)])
    assert item.kind == "hf"
    assert read_all([folder])[0] == [f"row {i}" for i in range(7)]


def test_bad_inputs_name_the_file_the_line_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="input .*nope.jsonl not found"):
        docs.find_inputs([str(tmp_path / "nope.jsonl")])
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not JSON"):
        read_all([tmp_path / "bad.jsonl"])
    (tmp_path / "other.jsonl").write_text('{"content": "x"}\n')
    with pytest.raises(DataError, match=r"other.jsonl:1 has no string field 'text' \(keys: content\): set --text-key"):
        read_all([tmp_path / "other.jsonl"])


def test_truncated_corrupt_and_binary_inputs_are_named_not_aborted(tmp_path):
    """Issue 31: a cut .jsonl.gz printed only "Aborted." (click's answer to EOFError), a .gz that is not gzip a
    BadGzipFile traceback, and random bytes as a text input became shards of garbage."""
    import os

    whole = gzip.compress(b"".join(json.dumps({"text": f"document {i} " * 50}).encode() + b"\n" for i in range(200)))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut.jsonl.gz is truncated or corrupt \(EOFError"):
        read_all([tmp_path / "cut.jsonl.gz"])
    (tmp_path / "plain.jsonl.gz").write_bytes(b'{"text": "not gzipped"}\n')
    with pytest.raises(DataError, match=r"plain.jsonl.gz is truncated or corrupt \(BadGzipFile"):
        read_all([tmp_path / "plain.jsonl.gz"])
    (tmp_path / "tokens.bin").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match=r"tokens.bin is not UTF-8 text \(\d+ undecodable bytes, \d+ NUL bytes"):
        read_all([tmp_path / "tokens.bin"])
    (tmp_path / "ok.txt").write_text("plain text with one odd byte \ufffd is still text " * 100)
    assert len(read_all([tmp_path / "ok.txt"])[0]) == 1


def test_an_output_folder_inside_an_input_folder_is_not_an_input(tmp_path):
    (tmp_path / "corpus" / "prepared").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("a document")
    (tmp_path / "corpus" / "prepared" / "train_000000.bin").write_bytes(b"\0" * 8)
    found = docs.find_inputs([str(tmp_path / "corpus")], exclude=tmp_path / "corpus" / "prepared")
    assert [i.path.name for i in found] == ["a.txt"]
