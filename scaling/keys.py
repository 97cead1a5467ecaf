"""Dotted keys: nested dicts as one level of `a.b` keys, as Hydra overrides, plan exports, command templates and
other trainers' W&B configs spell them (no dependencies)."""

from __future__ import annotations


def flatten(obj: dict, prefix: str = "", unwrap: bool = False) -> dict:
    """Nested dicts as one level of dotted keys; lists and scalars as they are. `unwrap`: a {"value": x} dict is x
    (how W&B's API returns a run's config)."""
    out: dict = {}
    for key, value in obj.items():
        if unwrap and isinstance(value, dict) and set(value) == {"value"}:
            value = value["value"]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}.", unwrap))
        else:
            out[name] = value
    return out
