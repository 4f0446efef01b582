"""The people who write the SFT demonstrations, each with habits of their own.

InstructGPT's demonstrations were written by about 40 contractors. Real demonstrations
vary: some writers are careful, some pad, some rush, some add things nobody asked for.
SFT imitates the average writer; labelers comparing samples prefer the best; that gap is
what comparisons can teach and demonstrations cannot. The world's mixture of writers is
a config key (``WorldConfig.demonstrators``), so the gap can be turned up and down, and
``{careful: 1}`` reproduces perfect demonstrations (the control).

* ``careful``     right, concise, follows every constraint: the task's reference answer.
* ``chatty``      wraps the answer in a preamble, a restatement of the question and/or a
                  sign-off (at least one), in many wordings.
* ``hasty``       skips a constraint half the time, drops the final punctuation half the
                  time, and now and then (1 in 7) gets the answer wrong.
* ``embellisher`` adds one claim nobody asked for, false half the time; on a
                  closed-domain prompt even a true one is not in the passage.

Every writer is built from the careful answer, so the habits are the only difference, and
the phrases are composed from parts so that no single string marks a flawed demonstration.
A writer told to use capital letters (or lower case, or a final "!") applies that to all it
writes; additions break the other constraints (word limits, one sentence, quotes, first
word) the way they would for a person.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from alignlab.world import constraints, lexicon, variants

DEMONSTRATORS = ("careful", "chatty", "hasty", "embellisher")
HASTY_SKIP_CONSTRAINT = 0.5  # "sometimes skips a constraint"
HASTY_NO_PUNCTUATION = 0.5  # "... or the final punctuation"
HASTY_WRONG = 1 / 7  # "now and then wrong"
EMBELLISH_FALSE = 0.5  # the trial: "one extra fact sentence, false half the time"
CHATTY_PART = 0.5  # each of preamble / restatement / sign-off, at least one

_OPENERS = [
    "Sure",
    "Of course",
    "Okay",
    "Alright",
    "Great question",
    "Good question",
    "Happy to help",
    "No problem",
    "Certainly",
    "Right",
    "Let me see",
    "Thanks for asking",
    "Good one",
    "Absolutely",
]
_BRIDGES = [
    "",
    " Here is the answer.",
    " Here you go.",
    " Here is what I know.",
    " Let me answer that.",
    " This one is easy.",
    " I can help with that.",
    " Let me help you with this.",
]
_RESTATE = [
    'You asked: "{q}"',
    "Your question was: {q}",
    "So you want to know this: {q}",
    "The question is: {q}",
    "Let me repeat the question: {q}",
]
_RESTATE_CLOSED = [
    "You asked me about the passage.",
    "This is about the text you gave me.",
    "Let me look at the passage.",
    "I read the passage carefully.",
    "You want an answer from the text.",
]
_SIGNOFFS = [
    "I hope this helps",
    "Hope that helps",
    "Let me know if you need anything else",
    "Feel free to ask more questions",
    "Have a great day",
    "Glad I could help",
    "Just ask if you want more",
    "Happy to help again",
    "Good luck",
]
_CONNECTORS = [
    "Also, ",
    "By the way, ",
    "Fun fact: ",
    "In addition, ",
    "",
    "You may also like to know that ",
    "And ",
    "Oh, and ",
]


def _preamble(rng: random.Random) -> str:
    return rng.choice(_OPENERS) + rng.choice(["!", ".", "!"]) + rng.choice(_BRIDGES)


def _restatement(meta: dict, prompt: str, rng: random.Random) -> str:
    if meta.get("passage"):
        return rng.choice(_RESTATE_CLOSED)
    q = prompt.strip()
    return rng.choice(_RESTATE).format(q=q if q[-1:] in ".?!" else q + ".")


def _signoff(rng: random.Random) -> str:
    return rng.choice(_SIGNOFFS) + rng.choice([".", "!"])


def _whole_text(out: str, meta: dict) -> str:
    """Re-apply the whole-text constraints (case, final mark) to everything written."""
    c = meta.get("constraint")
    if c and c["kind"] in constraints.WHOLE_TEXT:
        out = constraints.comply(out, c, meta)
    return out


def careful(world, record: dict, meta: dict, rng: random.Random) -> str:
    return meta["reference"]


def chatty(world, record: dict, meta: dict, rng: random.Random) -> str:
    parts = [rng.random() < CHATTY_PART for _ in range(3)]
    if not any(parts):
        parts[rng.randrange(3)] = True
    pre, restate, sign = parts
    out = [_preamble(rng)] if pre else []
    if restate:
        out.append(_restatement(meta, record["prompt"], rng))
    out.append(meta["reference"])
    if sign:
        out.append(_signoff(rng))
    return _whole_text(" ".join(out), meta)


def hasty(world, record: dict, meta: dict, rng: random.Random) -> str:
    out = meta["reference"]
    if meta.get("constraint") and rng.random() < HASTY_SKIP_CONSTRAINT:
        out = meta["unconstrained"]
    if rng.random() < HASTY_WRONG:
        if meta["check"] == "idk":
            out = variants.hallucinations(world, meta, rng)[0]
        elif meta["check"] != "refuse":  # a hurried writer is wrong, not malicious
            wrong = variants.wrong_answers(world, record, meta, rng, 1)
            out = wrong[0] if wrong else out
    if rng.random() < HASTY_NO_PUNCTUATION:
        out = out.rstrip().rstrip(".!?")
    return out


def embellisher(world, record: dict, meta: dict, rng: random.Random) -> str:
    claim = variants.extra_claim(world, meta, rng, false=rng.random() < EMBELLISH_FALSE)
    connector = rng.choice(_CONNECTORS)
    body = claim if not connector else connector + constraints.lower_first(claim)
    return _whole_text(meta["reference"].rstrip() + " " + body, meta)


WRITERS: dict[str, Callable[[Any, dict, dict, random.Random], str]] = {
    "careful": careful,
    "chatty": chatty,
    "hasty": hasty,
    "embellisher": embellisher,
}


def write(world, record: dict, meta: dict, who: str, rng: random.Random) -> str:
    """The demonstration ``who`` writes for ``record`` (``meta`` = its parsed meta)."""
    out = WRITERS[who](world, record, meta, rng).strip()
    return out or lexicon.IDK


def pick(shares: dict[str, float], rng: random.Random) -> str:
    names = [n for n in DEMONSTRATORS if shares.get(n, 0) > 0]
    return rng.choices(names, weights=[shares[n] for n in names])[0]


def demonstrate(world, records: list[dict], shares: dict[str, float], rng: random.Random) -> list[dict]:
    """SFT rows: each record's completion written by a demonstrator drawn by ``shares`` (``meta["demonstrator"]``)."""
    out = []
    for rec in records:
        meta = json.loads(rec["meta"])
        who = pick(shares, rng)
        demo = write(world, rec, meta, who, rng)
        meta["demonstrator"] = who
        out.append(
            dict(
                rec,
                completion=demo,
                meta=json.dumps(meta, sort_keys=True),
                messages=[{"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": demo}],
            )
        )
    return out
