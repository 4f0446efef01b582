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


def test_pairs_are_told_apart_by_what_decides_them():
    errors = _load("rm_errors")
    parts = [
        [
            {"helpful": 0.4, "truthful": 0.2, "harmless": 0.2, "style": 0.0},  # x: right but badly put
            {"helpful": 0.0, "truthful": 0.1, "harmless": 0.2, "style": 0.15},  # y: wrong but well put
            {"helpful": 0.0, "truthful": 0.0, "harmless": 0.2, "style": 0.0},  # z: no better than x or y on any count
        ]
    ]
    rows = [{"responses": ["x", "y", "z"], "gold": [sum(p.values()) for p in parts[0]], "cluster": "qa"}]
    assert errors.decided_by(parts[0][0], parts[0][1]) == "mixed: helpful over style"
    assert errors.decided_by(parts[0][1], parts[0][2]) == "pure: style"
    acc = errors.agreement(rows, [[0.0, 1.0, 0.5]], parts)  # the RM prefers style: wrong on both of x's pairs
    assert acc["mixed"] == [0, 1] and acc["pure"] == [1, 2] and acc["mixed: helpful over style"] == [0, 1]
    assert acc["pure: helpful"] == [0, 1] and acc["pure: style"] == [1, 1]
