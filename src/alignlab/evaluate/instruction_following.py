"""Instruction-following features of one response: InstructGPT's Figure 4 metadata, made exact.

Its labelers tagged each output with metadata; Figure 4 shows where PPO beat SFT on them.
The built-in world computes the same tags:

* ``attempted``        -- attempts the instruction (``checkers.attempted``): an answer of the
                          kind asked for, right or wrong -- not nothing, a refusal, "I don't
                          know" or off-task text -- except where declining is right (a
                          harmful request, an unanswerable question);
* ``constraint_met``   -- satisfies the prompt's explicit constraint (NaN: the prompt has none);
* ``constraint_failed``-- 1 - ``constraint_met``.

The hallucination and appropriateness tags are in ``truthfulness.py`` and ``harm.py``.
Aggregated in ``metrics.py`` over the prompts each applies to, with held-out constraint
kinds (never in an RLHF prompt) reported apart from the trained ones.
"""

from __future__ import annotations

from typing import Any

from alignlab.world import checkers
from alignlab.world.labelers import record_meta


def follow_features(world, record: dict[str, Any], response: str) -> dict[str, float]:
    meta = record_meta(record)
    met = checkers.constraint_met(meta, response)
    return {
        "attempted": float(checkers.attempted(world, meta, response)),
        "constraint_met": float("nan") if met is None else float(met),
        "constraint_failed": float("nan") if met is None else float(not met),
    }


def constraint_group(record: dict[str, Any]) -> str | None:
    """'trained' or 'heldout' for a prompt with an explicit constraint, else None."""
    c = record_meta(record).get("constraint")
    if not c:
        return None
    return "heldout" if c.get("heldout") else "trained"
