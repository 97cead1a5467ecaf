"""The one conversion between a law's C and a run's budget_flops."""

import pytest

from scaling.advise.compute import budget_flops, law_compute
from scaling.config import ModelConfig
from scaling.flops import CONVENTIONS, count


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_budget_and_law_compute_count_the_same_tokens(convention):
    model = ModelConfig()
    counts = count(model)
    C = 3e12
    budget = budget_flops(C, model, convention)
    tokens = budget / counts.M  # what the trainer trains at that budget
    assert tokens * counts.flops_per_token[convention] == pytest.approx(C, rel=1e-12)
    assert law_compute(budget, model, convention) == pytest.approx(C, rel=1e-12)


def test_without_a_model_or_in_m_the_compute_is_the_budget():
    assert budget_flops(5e11, None, "6N_total") == 5e11 and law_compute(5e11, None, "6N_total") == 5e11
    assert budget_flops(5e11, ModelConfig(), "M") == 5e11
