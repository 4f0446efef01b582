"""The RM diagnostics of scripts/: re-ranking comparisons by gold, and agreement with gold by cluster and gap."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rerank_by_gold_orders_best_first_and_keeps_ties():
    gold_labels = _load("rm_on_gold_labels")
    row = {"responses": ["a", "b", "c", "d"], "gold": [0.2, 0.9, 0.2, 0.5], "sources": [0, 1, 2, 3]}
    out = gold_labels.rerank_by_gold(row)
    assert out["responses"] == ["b", "d", "a", "c"] and out["sources"] == [1, 3, 0, 2]
    assert out["gold"] == [0.9, 0.5, 0.2, 0.2] and out["ranks"] == [1, 2, 3, 3]  # a tie stays a tie
    # the reward stage accepts the result as a ranked row: non-decreasing ranks, one per response
    from alignlab.data.ranks import row_ranks

    assert row_ranks(out, out["responses"], out["responses"], "row") == [1, 2, 3, 3]


def test_agreement_counts_pairs_by_cluster_and_gold_gap():
    errors = _load("rm_errors")
    rows = [
        {"responses": ["x", "y", "z"], "gold": [1.0, 0.5, 0.49], "cluster": "qa"},
        {"responses": ["p", "p", "q"], "gold": [0.3, 0.3, 0.0], "cluster": "harm"},  # a repeated response
    ]
    scores = [[3.0, 1.0, 2.0], [0.0, 0.0, 1.0]]
    acc = errors.agreement(rows, scores)
    # qa: x>y right, x>z right, y>z wrong (gap 0.01); harm: p, sampled twice, is below q both times
    assert acc["qa"] == [2, 3] and acc["harm"] == [0, 2] and acc["all"] == [2, 5]
    assert acc["gold gap < 0.05"] == [0, 1] and acc["gold gap >= 0.2"] == [2, 4]
    assert sum(n for k, (_, n) in acc.items() if k.startswith("gold gap")) == 5
    assert errors.gap_bucket(0.2) == "gold gap >= 0.2" and errors.gap_bucket(0.1) == "gold gap 0.05-0.2"
