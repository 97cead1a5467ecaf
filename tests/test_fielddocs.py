"""A dataclass field's docstring, read without importing its module, is the help of its option."""

from scaling.fielddocs import field_docs


def test_every_fit_option_has_its_docstring_as_one_line():
    import dataclasses

    from scaling.advise.pipeline import FitOptions

    docs = field_docs("scaling.advise.pipeline", "FitOptions")
    assert set(docs) == {f.name for f in dataclasses.fields(FitOptions)}
    assert docs["gpus"] == "With memory_per_gpu_gb: how many such GPUs the recommended run gets."
    assert all("\n" not in d and "  " not in d for d in docs.values())


def test_fit_help_is_the_options_docstrings():
    from tests.inprocess import scaling

    out = scaling("fit", "--help", env={"COLUMNS": "300"})
    docs = field_docs("scaling.advise.pipeline", "FitOptions")
    assert out.returncode == 0 and docs["allow_mixed_data"] in " ".join(out.stdout.split())
