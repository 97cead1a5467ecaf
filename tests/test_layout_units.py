"""The pipeline units add up to the model: flops.py's FLOPs and parameters, memory.py's activations."""

import pytest

from scaling.config import ModelConfig
from scaling.flops import count
from scaling.layout.units import FLOPS_PER_BYTE, LOSS_BYTES_PER_LOGIT, pipeline_units
from scaling.memory import activation_bytes_per_token

SHAPES = [ModelConfig(), ModelConfig(n_dense_layers=1, n_shared_experts=1, n_layers=4),
          ModelConfig(n_experts=1, top_k=1, vocab_size=50304, tie_embeddings=True),
          ModelConfig(d_model=7168, n_layers=61, n_heads=128, seq_len=4096, vocab_size=129280, n_experts=256,
                      top_k=8, d_expert=2048, n_shared_experts=1, n_dense_layers=3, d_ff_dense=18432)]


@pytest.mark.parametrize("m", SHAPES)
def test_units_add_up_to_the_models_flops_parameters_and_activations(m):
    units = pipeline_units(m)
    c = count(m)
    assert [u.kind for u in units] == ["E", *"t" * m.n_layers, "L"]
    layers = sum(u.forward + u.backward for u in units if u.kind == "t")
    assert layers == pytest.approx(c.flops_per_token["M"])
    head = units[-1]
    matmul = c.flops_per_token["M_with_head"] - c.flops_per_token["M"]
    assert head.cost == pytest.approx(matmul + LOSS_BYTES_PER_LOGIT * m.vocab_size * FLOPS_PER_BYTE)  # + the loss
    assert sum(u.params for u in units) == c.params_total
    for b in (2, 4):
        assert sum(u.activation_bytes for u in pipeline_units(m, compute_bytes=b)) == pytest.approx(
            activation_bytes_per_token(m, b))


def test_an_mtp_block_costs_an_moe_layer_a_projection_and_the_head_with_its_loss():
    m = SHAPES[3]
    units = pipeline_units(m, mtp_layers=1)
    mtp, layer, head = units[-2], units[-3], units[-1]
    assert [u.kind for u in units[-2:]] == ["m", "L"]
    assert mtp.cost == pytest.approx(layer.cost + 3 * 2 * (2 * m.d_model ** 2) + head.cost)
    assert 1.3 < mtp.cost / layer.cost < 3  # Ling 2.0 measured ~1.7 on its shape
