"""Ranked lists with ties: a person ranking K responses may rank two the same (InstructGPT's labelers could).

A ranked row ``{"prompt", "responses": [best, ..., worst]}`` may carry ``ranks`` (one integer per response,
non-decreasing, equal = tied, as ``alignlab label`` writes). Every stage that learns from rankings (the
reward model, DPO) takes its (better, worse) pairs from :func:`strict_pairs`, so a tied pair never
becomes a preference; a row without ``ranks`` is a strict ranking by its order, as before.
"""

from __future__ import annotations

import itertools

from alignlab.errors import DataError


def row_ranks(rec: dict, ranked: list[str], resp: list[str], where: str) -> list[int] | None:
    """The ranks of the distinct responses ``resp`` (a repeated response keeps its first copy's rank), when the
    row carries ``ranks``; None when it does not (its order is then a strict ranking)."""
    ranks = rec.get("ranks")
    if ranks is None:
        return None
    ints = all(isinstance(r, int) and not isinstance(r, bool) for r in ranks)
    if len(ranks) != len(ranked) or not ints or list(ranks) != sorted(ranks):
        raise DataError(
            f"{where}: 'ranks' must hold one integer per response in the responses' order, best to worst "
            f"(non-decreasing; equal ranks are a tie), got {list(ranks)!r} for {len(ranked)} responses"
        )
    first: dict[str, int] = {}
    for r, k in zip(ranked, ranks):
        first.setdefault(r, k)
    return [first[r] for r in resp]


def strict_pairs(n: int, ranks: list[int] | None) -> list[tuple[int, int]]:
    """(better, worse) index pairs of a best -> worst list of ``n``: all C(n, 2), less those ``ranks`` ties."""
    return [(i, j) for i, j in itertools.combinations(range(n), 2) if ranks is None or ranks[i] < ranks[j]]
