"""The CSV contract of `scaling fit --from runs.csv` (and of --map), in one place and without pandas: the
columns a fit reads, their units and meaning (fit --help, docs/guide/fit.md and the README show or are checked
against them), and how runs without a budget column are grouped."""

CSV_COLUMNS = {
    "params": "required. Parameters per token: for an MoE the *active* non-embedding count (the routed experts a "
              "token uses, the shared ones and attention), never the total",
    "loss": "required. Final held-out loss, nats per token",
    "tokens": "training tokens (D). Give tokens or flops, or both",
    "flops": "training compute C, FLOPs (default 6 * params * tokens; tokens = flops / (6 params) without tokens)",
    "budget": "the planned compute of the run's cell, FLOPs: runs with one budget and one size form one lr bowl "
              "(default: runs whose flops lie within --budget-tolerance of each other)",
    "lr": "peak learning rate (>= 3 per budget and size for the lr and batch laws)",
    "batch_tokens": "batch size in tokens",
    "batch": "batch size in sequences (with seq_len or --seq-len)",
    "seq_len": "sequence length in tokens",
    "seed": "the run's seed (a number): each seed's runs may sit at their own level in a bowl",
    "group": "the run's family (dense, or one MoE configuration): laws are fitted per family",
    "activation_ratio": "MoE: active over total experts (top_k / experts)",
    "granularity": "MoE: expert granularity G (2 d_model / d_expert)",
    "experts": "MoE: routed experts per layer (for the routing law)",
    "top_k": "MoE: experts per token",
}
"""The CSV contract of `scaling fit --from runs.csv` (and of --map): each column and its unit; one home for the
columns' names and meaning (fit --help, docs/guide/fit.md and the README read it or are checked against it)."""
REQUIRED_CSV = ("params", "loss")
BUDGET_TOLERANCE = 0.02
"""Runs of a CSV without a budget column share a budget when their FLOPs lie within this fraction of each other
(trainers log the tokens a run saw, a few tenths of a percent off the nominal count)."""
