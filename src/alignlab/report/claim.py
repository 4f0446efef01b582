"""One line of the report's verdict: a claim, whether it was met, and the numbers behind it.

``met`` is None when the claim could not be judged because the run lacks what it needs (a
stage's file, or a key in it). Such a claim is still listed, with the reason, so a missing
or renamed key shows in the report instead of silently shortening the verdict.
"""

from __future__ import annotations

Claim = tuple[str, bool | None, str]


def not_measured(claim: str, reason: str) -> Claim:
    """A claim the run cannot judge; its numbers are the reason (the report marks it NOT MEASURED)."""
    return (claim, None, reason)


def lacks(source: str, key: str) -> str:
    """The reason for a claim whose input ``source`` (e.g. "ppo summary") has no ``key``."""
    return f"{source} lacks key {key}"


def status(met: bool | None) -> str:
    """The claim's mark in the report: MET, MISSED or NOT MEASURED."""
    return "NOT MEASURED" if met is None else ("MET" if met else "MISSED")
