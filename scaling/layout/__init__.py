"""Lay the big run out on a pipeline (ARCHITECTURE section 11): what each pipeline unit costs (units.py), the
contiguous split of units into stages that balances them (split.py), a 1F1B / interleaved-1F1B schedule simulation
giving step time, bubble and peak memory per rank (schedule.py), the layout in Megatron-Core's and torchtitan's
own terms (engines.py), and `plan_layout`, which puts them together for a run and a cluster (plan.py). Pure
Python, no torch."""
