"""Aggregate evaluations of several seeds (whole-pipeline reruns): mean and spread per metric.

One seed's bootstrap interval covers prompt sampling only; training noise (a different
seed gives a different SFT/RM/PPO run) needs reruns. ``compare_seeds`` reads the
``results.json`` of each run and reports, for every scalar metric of every policy, the
mean over seeds, the standard deviation between seeds (ddof 1), min, max and the values.

    compare_seeds(["runs/s0/evaluate/results.json", "runs/s1/evaluate/results.json", ...])
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"helpfulness": 0.4, "helpfulness_by_cluster.world_qa": 0.3, ...} from one policy's metrics
    (an interval contributes its ``value``)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict) and "value" in v:
            if isinstance(v["value"], (int, float)):
                out[prefix + k] = float(v["value"])
        elif isinstance(v, dict):
            out.update(_scalars(v, prefix=f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def compare_seeds(paths: Iterable[str | Path]) -> dict[str, Any]:
    """{"n_seeds", "paths", "policies": {policy: {metric: {"mean", "std", "min", "max", "n", "values"}}}}.

    A metric missing in some runs (a policy skipped in one) is aggregated over the runs that
    have it (``n`` says how many)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("compare_seeds: no results.json paths given")
    runs = []
    for p in paths:
        if p.is_dir():
            p = p / "results.json"
        if not p.is_file():
            raise FileNotFoundError(f"compare_seeds: {p} not found")
        runs.append(json.loads(p.read_text()))
    values: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for policy, metrics in r["policies"].items():
            for k, v in _scalars(metrics).items():
                values.setdefault(policy, {}).setdefault(k, []).append(v)
    out: dict[str, Any] = {"n_seeds": len(runs), "paths": [str(p) for p in paths], "policies": {}}
    for policy, metrics in values.items():
        out["policies"][policy] = {}
        for k, vs in metrics.items():
            mean = sum(vs) / len(vs)
            std = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0.0
            out["policies"][policy][k] = {
                "mean": mean,
                "std": std,
                "min": min(vs),
                "max": max(vs),
                "n": len(vs),
                "values": vs,
            }
    return out
