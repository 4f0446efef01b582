"""How much labelers agree, measured as the world measures its labelers (world/agreement.py).

For each pair of DIFFERENT labelers, over the prompts both ranked and the pairs of different responses of
each such prompt that both rankings hold: the share of those response pairs the two order the same way. A
pair either labeler tied says nothing about order and is left out. The figure is the mean over labeler
pairs (each pair of labelers weighs the same, as each pair of personas does in the world), next to
InstructGPT's 72.6% between its training labelers.

A labeler who ranked a prompt more than once counts with the last ranking. A line without ``ranks`` (a
strict ranking, as the compare stage writes) ranks its responses by their order.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

INSTRUCTGPT_AGREEMENT = 0.726


def rank_map(row: dict) -> dict[str, int]:
    """Response text -> rank (1 = best); a repeated response keeps its first copy's rank."""
    ranks = row.get("ranks") or list(range(1, len(row["responses"]) + 1))
    out: dict[str, int] = {}
    for text, r in zip(row["responses"], ranks):
        out.setdefault(text, r)
    return out


def by_prompt(rows: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """prompt -> labeler -> that labeler's (last) ranking of it."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        key = json.dumps(row["prompt"], ensure_ascii=False, sort_keys=True)
        out.setdefault(key, {})[row["labeler"]] = rank_map(row)
    return out


def pair_agreement(a: dict[str, int], b: dict[str, int]) -> tuple[int, int]:
    """(same order, compared) over the response pairs both rankings hold and neither ties."""
    same = total = 0
    for x, y in itertools.combinations(sorted(set(a) & set(b)), 2):
        da, db = a[x] - a[y], b[x] - b[y]
        if da == 0 or db == 0:
            continue
        total += 1
        same += (da > 0) == (db > 0)
    return same, total


def agreement(rows: list[dict]) -> dict[str, Any]:
    """Agreement per pair of labelers on their shared prompts, and its mean over the labeler pairs that compared any."""
    prompts = by_prompt(rows)
    labelers = sorted({row["labeler"] for row in rows})
    pairs = []
    for a, b in itertools.combinations(labelers, 2):
        shared = [p for p in prompts.values() if a in p and b in p]
        same = total = 0
        for p in shared:
            s, t = pair_agreement(p[a], p[b])
            same, total = same + s, total + t
        if shared:
            rate = same / total if total else None
            pairs.append({"labelers": [a, b], "shared_prompts": len(shared), "pairs": total, "agreement": rate})
    rates = [p["agreement"] for p in pairs if p["agreement"] is not None]
    return {
        "agreement": sum(rates) / len(rates) if rates else None,
        "labeler_pairs": pairs,
        "shared_prompts": sum(len(p) > 1 for p in prompts.values()),
        "prompts": len(prompts),
    }


def has_tie(ranks: list[int]) -> bool:
    return len(set(ranks)) < len(ranks)


def report(rows: list[dict], source: str) -> dict[str, Any]:
    """Everything ``--stats`` writes: counts per labeler, ties and flags marked, and the agreement."""
    flags = Counter(name for row in rows for f in row.get("flags") or [] for name, on in f.items() if on)
    tied = sum(has_tie(row.get("ranks") or []) for row in rows)
    return {
        "file": source,
        "rankings": len(rows),
        "labelers": dict(sorted(Counter(row["labeler"] for row in rows).items())),
        "rankings_with_ties": tied,
        "flags": dict(sorted(flags.items())),
        **agreement(rows),
        "instructgpt_agreement": INSTRUCTGPT_AGREEMENT,
    }


def table(s: dict[str, Any]) -> list[str]:
    """The report as the terminal shows it."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    width = max([7, *(len(n) for n in s["labelers"])])
    lines = [
        f"label stats: {s['rankings']} rankings of {s['prompts']} prompts by {len(s['labelers'])} labeler(s) "
        f"({s['file']}); {s['rankings_with_ties']} with ties",
        f"  {'labeler':<{width}}  rankings",
        *(f"  {name:<{width}}  {n:>8}" for name, n in s["labelers"].items()),
    ]
    if s["flags"]:
        lines.append("  flags marked: " + ", ".join(f"{name} {n}" for name, n in s["flags"].items()))
    lines.append(
        f"agreement on the {s['shared_prompts']} prompt(s) ranked by two labelers or more "
        "(response pairs both ordered, ties left out):"
    )
    for p in s["labeler_pairs"]:
        a, b = p["labelers"]
        lines.append(
            f"  {a:<{width}}  {b:<{width}}  {p['shared_prompts']:>4} prompts  {p['pairs']:>5} pairs  "
            f"{pct(p['agreement']):>6}"
        )
    if not s["labeler_pairs"]:
        lines.append("  (no prompt was ranked by two labelers)")
    lines.append(
        f"  mean over labeler pairs: {pct(s['agreement'])}   (InstructGPT's training labelers: "
        f"{pct(s['instructgpt_agreement'])})"
    )
    return lines
