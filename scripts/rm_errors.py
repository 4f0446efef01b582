"""Where do reward models disagree with gold? Each RM's agreement with the gold reward on the run's held-out
comparison pairs, by task cluster, by the size of the pair's gold gap, and by what decides the pair (a
diagnostic for ``study overoptimization``; not part of the pipeline).

Gold is a weighted sum of four components (helpful, truthful, harmless, style), so a pair is either "pure"
(no component favours the response gold ranks lower) or a trade-off ("mixed": gold's winner is worse on some
component, and an RM must weigh the components as the labelers do to get it right).

    python scripts/rm_errors.py runs/default RUN/reward RUN/study_overoptimization_rm_sizes/rm_d16 ...

Pairs: two positions of a validation row with different texts and different gold; a response sampled twice
counts each time (the reward stage collapses repeats first, so it counts a few pairs fewer).
"""

from __future__ import annotations

import argparse
import collections
import itertools
from pathlib import Path

import datasets

from alignlab.evaluate.judges import RewardModelJudge
from alignlab.world import gold_parts, gold_weights, load_world


def gap_bucket(gap: float) -> str:
    return "gold gap < 0.05" if gap < 0.05 else "gold gap 0.05-0.2" if gap < 0.2 else "gold gap >= 0.2"


def decided_by(win: dict[str, float], lose: dict[str, float]) -> str:
    """What decides a pair, from the gold parts of its winner and loser: the component that favours the winner
    most, and whether another favours the loser ("mixed": a trade-off) or none does ("pure")."""
    diff = {c: win[c] - lose[c] for c in win}
    against = [c for c, v in diff.items() if v < -1e-9]
    return f"{'mixed' if against else 'pure'}: {max(diff, key=diff.get)}" + (
        f" over {'+'.join(against)}" if against else ""
    )


def agreement(
    rows: list[dict], scores: list[list[float]], parts: list[list[dict]] | None = None
) -> dict[str, list[int]]:
    """{cluster, gap bucket, "all" (and with each response's gold ``parts``: "pure", "mixed" and what decides the
    pair): [pairs ordered as gold orders them, pairs]}."""
    acc: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for i, (r, s) in enumerate(zip(rows, scores)):
        g, resp = r["gold"], r["responses"]
        for a, b in itertools.combinations(range(len(g)), 2):
            if resp[a] == resp[b] or abs(g[a] - g[b]) < 1e-9:
                continue
            right = (s[a] > s[b]) == (g[a] > g[b])
            keys = ["all", r["cluster"], gap_bucket(abs(g[a] - g[b]))]
            if parts is not None:
                win, lose = (a, b) if g[a] > g[b] else (b, a)
                how = decided_by(parts[i][win], parts[i][lose])
                keys += [how.split(":")[0], how]
            for key in keys:
                acc[key][0] += right
                acc[key][1] += 1
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("rm", nargs="+", help="reward model folders")
    a = ap.parse_args()
    ds = datasets.load_from_disk(str(Path(a.run_dir) / "compare" / "comparisons"))["validation"]
    rows = [ds[i] for i in range(len(ds))]
    world = load_world(Path(a.run_dir) / "world")
    weights = gold_weights(world)
    parts = [[gold_parts(world, r, t, weights) for t in r["responses"]] for r in rows]
    for rm in a.rm:
        flat = RewardModelJudge(rm).score(
            [r for r in rows for _ in r["responses"]], [t for r in rows for t in r["responses"]]
        )
        scores, k = [], 0
        for r in rows:
            scores.append(flat[k : k + len(r["responses"])])
            k += len(r["responses"])
        acc = agreement(rows, scores, parts)
        print(rm)
        for key, (right, n) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
            print(f"  {key:<20} {100 * right / n:5.1f}% of {n}")


if __name__ == "__main__":
    main()
