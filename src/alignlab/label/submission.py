"""What a labeler sees and sends: the order of the responses on the page, and one submission checked and
turned into a line of the rankings file.

The page shows a prompt's K responses in an order of their own, seeded by (seed, labeler, item): position
on the page says nothing about which model wrote a response or where the file listed it, and a reload shows
the same order. The page sends a rank (1 = best; equal ranks are a tie, as InstructGPT's labelers were
allowed) and metadata flags per response in that order; the server maps them back through the same order.
Everything the page sends is checked here, as if it came from anyone.
"""

from __future__ import annotations

import random
import re
from typing import Any

MAX_K = 9  # one digit key per rank
# InstructGPT's per-response metadata (a subset): the name in the file -> the words on the page
FLAGS = {
    "fails_instruction": "fails the instruction",
    "hallucination": "hallucination",
    "harmful": "harmful",
    "inappropriate": "inappropriate",
}
FIELDS = {"item", "labeler", "ranks", "flags"}
_NAME = re.compile(r"[\w .@'-]{1,64}")


class Refused(ValueError):
    """A submission the server turns down (HTTP 400); the message is shown on the page."""


def labeler_problem(name: str) -> str | None:
    """Why ``name`` cannot be a labeler's name (None if it can): it is written on every line and shown back."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not name.strip():
        return f"must be 1-64 letters, digits, spaces or . @ ' - _ (got {name!r})"
    return None


def display_order(seed: int, labeler: str, item_id: str, k: int) -> list[int]:
    """Position on the page -> index of the response in the item (a string seed hashes the same in every run)."""
    order = list(range(k))
    random.Random(f"{seed}:{labeler}:{item_id}").shuffle(order)
    return order


def check_fields(payload: Any) -> dict:
    if not isinstance(payload, dict):
        raise Refused("the submission must be a JSON object")
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise Refused(f"unknown field(s) {unknown}; a submission has {sorted(FIELDS)}")
    return payload


def check_ranks(ranks: Any, k: int) -> list[int]:
    """One rank from 1 to K per response shown; equal ranks are a tie."""
    ok = isinstance(ranks, list) and len(ranks) == k
    ok = ok and all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= k for r in ranks)
    if not ok:
        raise Refused(f"ranks: give each of the {k} responses a rank from 1 (best) to {k}; equal ranks are a tie")
    return ranks


def check_flags(flags: Any, k: int) -> list[dict[str, bool]]:
    """Per response shown, a mapping of known flag names to true/false; a flag left out is false."""
    if flags is None:
        flags = [{}] * k
    if not isinstance(flags, list) or len(flags) != k or not all(isinstance(f, dict) for f in flags):
        raise Refused(f"flags: give one object of flags per response ({k})")
    out = []
    for f in flags:
        unknown = sorted(set(f) - set(FLAGS))
        if unknown:
            raise Refused(f"flags: unknown flag(s) {unknown}; known: {sorted(FLAGS)}")
        if not all(isinstance(v, bool) for v in f.values()):
            raise Refused("flags: each flag is true or false")
        out.append({name: f.get(name, False) for name in FLAGS})
    return out


def dense(ranks: list[int]) -> list[int]:
    """Ranks renumbered 1, 2, ... without gaps ([1, 3, 3, 4] -> [1, 2, 2, 3]): the same order and ties."""
    levels = sorted(set(ranks))
    return [levels.index(r) + 1 for r in ranks]


def ranked_line(
    prompt: Any, responses: list[str], order: list[int], ranks: list[int], flags: list[dict], labeler: str, time: str
) -> dict[str, Any]:
    """The line the reward stage reads: responses best -> worst (ties in the order shown), their ranks and flags.

    ``ranks`` and ``flags`` are per position on the page; ``order`` maps a position to a response."""
    shown = sorted(range(len(order)), key=lambda p: (ranks[p], p))
    d = dense(ranks)
    return {
        "prompt": prompt,
        "responses": [responses[order[p]] for p in shown],
        "ranks": [d[p] for p in shown],
        "labeler": labeler,
        "flags": [flags[p] for p in shown],
        "time": time,
    }
