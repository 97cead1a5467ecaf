"""Fit inputs: records of the store and CSV rows become one table of runs; what cannot be used is counted and
named, never fitted."""

import pytest
from synthetic import write_sweep

from scaling.fit.inputs import InputError, from_csv, from_store, load_runs, parse_map


def test_map_items_must_be_name_equals_column():
    assert parse_map("params=Model Size, flops=Training FLOP") == {"Model Size": "params", "Training FLOP": "flops"}
    assert parse_map(None) == {}
    with pytest.raises(InputError, match="is not NAME=COLUMN"):
        parse_map("params")


def _csv(tmp_path, text: str):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    return path


def test_a_csv_is_mapped_completed_and_its_bad_rows_counted(tmp_path):
    path = _csv(tmp_path, "Model Size,FLOP,loss,lr\n1e6,6e12,3.1,1e-3\n1e6,6e12,abc,1e-3\n2e6,1.2e13,-1,1e-3\n"
                          "2e6,1.2e13,2.9,0\n4e6,2.4e13,2.7,2e-3\n")
    runs = from_csv(path, parse_map("params=Model Size,flops=FLOP"))
    assert len(runs.df) == 2 and list(runs.df["loss"]) == [3.1, 2.7]
    assert runs.excluded == {"loss not a finite number": 1, "loss not positive": 1, "lr not positive": 1}
    assert runs.df["tokens"].iloc[0] == pytest.approx(6e12 / 6e6)  # derived, and said so
    assert any("tokens = flops / (6 * params)" in n for n in runs.notes)


def test_a_csv_without_what_a_fit_needs_names_the_columns_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"missing column\(s\) params.*--map"):
        from_csv(_csv(tmp_path, "size,loss\n1,2\n"))
    with pytest.raises(InputError, match="not found"):
        from_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="give --seq-len"):
        from_csv(_csv(tmp_path, "params,tokens,loss,lr,batch\n1e6,1e9,3,1e-3,8\n"))
    assert from_csv(_csv(tmp_path, "params,tokens,loss,lr,batch\n1e6,1e9,3,1e-3,8\n"),
                    seq_len=256).df["batch_tokens"].iloc[0] == 2048


def test_store_records_become_runs_of_one_family(tmp_path):
    write_sweep(tmp_path, "s", (1e11, 3e11), (1e-3, 2e-3), seeds=(0,))
    runs = from_store(tmp_path, "s")
    assert len(runs.df) == 4 and set(runs.df["family"]) == {"A0.25-G1"}
    assert sorted(runs.df["budget"].unique()) == [1e11, 3e11]
    with pytest.raises(InputError):
        load_runs(None, tmp_path, "no-such-sweep")
