"""FLAN's scale effect (Wei et al. 2021, Figure 7) on the sizes study's base models.

FLAN found that instruction tuning hurts zero-shot accuracy on held-out task clusters for models of 8B
parameters or less and helps above that. For each size of ``alignlab study sizes`` and each seed, the
``instruct-tune`` stage tunes that size's base model on every cluster but the held-out one (one model per
held-out cluster, as FLAN did) and asks the held-out cluster zero-shot, against the same base model asked in
the corpus's Q/A form. Tasks with a closed answer set are also scored by rank classification (FLAN's scoring:
the likeliest option wins), so a small model is judged on what it knows rather than on writing the checker's
format; the figure shows both.

One value per (held-out cluster, seed) cell; a size's accuracy is their mean with a 95% t-interval over the
cells, and so is the difference tuned − base, whose sign says whether tuning helped at that size. The
crossover is the first size, going up, from which that difference is positive, or none.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from alignlab.outputs import read_summary

KINDS = ("base", "instruction")
SCORES = {"rank_accuracy": "rank classification", "accuracy": "generation"}


def tune_size(cfg, size: dict, seed: int) -> dict[str, Any]:
    """Run (or reuse) the instruct-tune stage on one size's base model with one seed; its summary."""
    from alignlab.config import resolve
    from alignlab.stages.registry import STAGES, run_stage

    out = Path(cfg.output_dir) / size["name"] / f"instruct_tune_s{seed}"
    done = read_summary(out)
    if done is not None:
        return done
    cls, presets, _ = STAGES["instruct-tune"].load()
    preset = cfg.preset or "default"
    over = {
        "world_dir": str(Path(cfg.run_dir) / "world"),
        "model": str(Path(cfg.output_dir) / size["name"] / "pretrain"),
        "no_template": False,  # FLAN's Figure 7 compares the tuned model with its base only
        "seed": seed,
        "output_dir": str(out),
        **({"device": cfg.device} if cfg.device != "auto" else {}),
    }
    print(f"[study] FLAN: instruct-tune {size['name']} seed {seed} -> {out}", flush=True)
    return run_stage("instruct-tune", resolve(cls, presets, preset if preset in presets else None, None, over))


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean with a t-interval over the cells (None when there is one cell)."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return {"value": m, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"value": m, "low": m - half, "high": m + half, "n": n}


def cells(summaries: list[dict[str, Any]], score: str, kind: str) -> list[float]:
    """One value per (held-out cluster, seed): ``score`` of ``kind``, where the cluster has it."""
    return [v[kind] for s in summaries for v in s[score].values() if v.get(kind) is not None]


def size_point(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """A size's accuracies (base, tuned) and their difference, by each scoring."""
    point = {}
    for score in SCORES:
        diffs = [
            v["instruction"] - v["base"]
            for s in summaries
            for v in s[score].values()
            if v.get("instruction") is not None and v.get("base") is not None
        ]
        point[score] = {k: mean_ci(cells(summaries, score, k)) for k in KINDS}
        point[score]["difference"] = mean_ci(diffs) if diffs else None
    return point


def crossover(points: list[dict[str, Any]], score: str) -> str | None:
    """The first size (ascending) from which tuned − base stays above 0 at every larger size; None if none."""
    signs = [(p["size"], (p[score]["difference"] or {}).get("value", 0) > 0) for p in points]
    for i, (name, _) in enumerate(signs):
        if all(up for _, up in signs[i:]) and not all(up for _, up in signs):
            return name
    return None


def flan_across_sizes(cfg, params: dict[str, int]) -> dict[str, Any] | None:
    """Tune every size with every FLAN seed; the points of Figure 7 and the crossover by each scoring."""
    if not cfg.flan_seeds:
        return None
    order = sorted(cfg.sizes, key=lambda s: params[s["name"]])
    points = []
    for size in order:
        summaries = [tune_size(cfg, size, seed) for seed in cfg.flan_seeds]
        points.append({"size": size["name"], "non_embedding_params": params[size["name"]], **size_point(summaries)})
    first = summaries[0]
    return {
        "seeds": list(cfg.flan_seeds),
        "heldout_clusters": first["heldout_clusters"],
        "rank_classified_tasks": first.get("rank_classified_tasks", []),
        "points": points,
        "crossover": {score: crossover(points, score) for score in SCORES},
        "all_tuned_above_base": {score: all(p[score]["difference"]["value"] > 0 for p in points) for score in SCORES},
    }
