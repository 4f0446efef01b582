"""FLAN across sizes: the per-size accuracies, their intervals over (cluster, seed) cells, and the crossover."""

from __future__ import annotations

import pytest

from alignlab.report.sizes_study import flan_sentence
from alignlab.studies.flan_sizes import crossover, mean_ci, size_point


def _summary(base: dict[str, float], tuned: dict[str, float]) -> dict:
    """An instruct-tune summary.json's accuracy tables (the same numbers for rank and generation)."""
    table = lambda: {c: {"base": base[c], "instruction": tuned[c]} for c in base}  # noqa: E731
    return {"accuracy": table(), "rank_accuracy": table()}


def test_mean_ci_is_a_t_interval_over_cells():
    ci = mean_ci([0.2, 0.4, 0.6])
    assert ci["value"] == pytest.approx(0.4)
    # sd 0.2, n 3, t(0.975, 2) = 4.303
    assert ci["high"] - ci["value"] == pytest.approx(4.303 * 0.2 / 3**0.5, rel=1e-3)
    assert mean_ci([0.5])["low"] is None


def test_size_point_pools_clusters_and_seeds_and_skips_clusters_without_options():
    s0 = _summary({"a": 0.2, "b": 0.4}, {"a": 0.3, "b": 0.2})
    s1 = _summary({"a": 0.2, "b": 0.4}, {"a": 0.5, "b": 0.4})
    s1["rank_accuracy"]["b"] = {"base": None, "instruction": None}  # a cluster with no closed-answer task
    p = size_point([s0, s1])
    assert p["accuracy"]["instruction"]["n"] == 4
    assert p["accuracy"]["difference"]["value"] == pytest.approx((0.1 - 0.2 + 0.3 + 0.0) / 4)
    assert p["rank_accuracy"]["base"]["n"] == 3


def _point(name: str, diff: float) -> dict:
    d = {"value": diff}
    return {"size": name, "rank_accuracy": {"difference": d}, "accuracy": {"difference": d}}


def test_crossover_is_where_tuning_starts_to_help_for_good():
    assert crossover([_point("s", -0.1), _point("m", 0.05), _point("l", 0.1)], "rank_accuracy") == "m"
    assert crossover([_point("s", -0.1), _point("m", 0.05), _point("l", -0.01)], "rank_accuracy") is None
    assert crossover([_point("s", 0.1), _point("m", 0.05)], "rank_accuracy") is None  # helps everywhere: no crossover
    flan = {"crossover": {"rank_accuracy": None}, "all_tuned_above_base": {"rank_accuracy": False}}
    assert flan_sentence(flan).startswith("No crossover")
    points = [_point("s", -0.1), _point("m", 0.05)]
    points[1]["rank_accuracy"]["difference"] = {"value": 0.05, "low": -0.01, "high": 0.11}
    flan = {"crossover": {"rank_accuracy": "m"}, "all_tuned_above_base": {"rank_accuracy": False}, "points": points}
    assert flan_sentence(flan).startswith("Crossover at m by the point estimate, but its 95% interval includes 0")
    points[1]["rank_accuracy"]["difference"]["low"] = 0.01
    assert "its 95% interval above 0" in flan_sentence(flan)
