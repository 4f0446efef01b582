"""Explicit constraints on *how* to answer: "Answer in capital letters.", "Use at most 4 words."

About a quarter of InstructGPT's prompts carried an explicit constraint (its Table 7: 25.6%
of SFT-train and 26.3% of RM-train prompts), and following them is one of the places its
Figure 4 shows PPO beating SFT. Here a constraint is a small dict, ``{"kind": ..., **params}``,
stored in a record's ``meta["constraint"]``; each kind has

* several phrasings (so no single string marks the kind),
* ``applies``: whether it makes sense for a task (no "lower case" on an upper-case task),
* ``comply``: the careful demonstrator's rewrite of an answer so that it complies,
* ``satisfied``: the check the labelers use (``checkers.constraint_compliance``).

Kinds named in the world config's ``heldout_constraints`` never appear in the SFT, RM or PPO
prompts, only in the test split and its probe split: InstructGPT's "generalises to
instructions outside the RLHF distribution".
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from alignlab.world import lexicon, schema, text

# Words a constraint may ask for. None can be an invented name (names start with a consonant
# onset from lexicon.NAME_ONSETS and never with a vowel, "w", "c" or "h"), so adding them never
# changes the world's entities.
START_WORDS = ["Answer", "Okay", "Well", "Indeed"]
INCLUDE_WORDS = ["indeed", "clearly", "certainly", "actually"]
# Glue words a demonstration often uses, so excluding one usually forces a rephrasing.
EXCLUDE_WORDS = ["is", "the", "of", "in", "a", "and", "to", "has"]
_CLOSERS = "\"')]"


def _words(s: str) -> int:
    return len(s.split())


def _has_letters(s: str) -> bool:
    return any(c.isalpha() for c in s)


def _strip_closers(s: str) -> str:
    return s.strip().rstrip(_CLOSERS).strip()


def _first_word(s: str) -> str:
    toks = text.tokens(s)
    return toks[0] if toks else ""


@lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    """Words that are lower case inside a sentence (invented names never are: lexicon.NAME_BLOCKLIST)."""
    words = {"the", "a", "an", "yes", "no", "sorry", "it", "this", "that", "there", "some", "i'm"}
    for values in schema.CLOSED_VALUES.values():
        words |= set(values)
    for ws in lexicon.WORD_CATEGORIES.values():
        words |= set(ws)
    words |= set(lexicon.POSITIVE_WORDS) | set(lexicon.NEGATIVE_WORDS) | set(lexicon.NUMBER_WORDS)
    return frozenset(words)


def lower_first(s: str) -> str:
    """'The colour of Bruk...' -> 'the colour of Bruk...'; a sentence that starts with a name keeps it."""
    first = s.lstrip().split(" ", 1)[0].strip("\"'.,!?:")
    if len(first) > 1 and first.isupper():  # a word in capitals ("MOSS") is the answer's own form
        return s
    return s[:1].lower() + s[1:] if first.lower() in _common_words() else s


def end_with(s: str, mark: str) -> str:
    """The text with its final punctuation replaced by ``mark``."""
    return s.rstrip().rstrip(".!?;, ") + mark


def _quoted(r: str) -> bool:
    s = r.strip().rstrip(".!?")
    return len(s) >= 3 and s[0] == '"' and s[-1] == '"'


_NUMBERED = re.compile(r"(?:^|\s)(\d+)[.)]\s")


def numbered_items(s: str) -> list[int]:
    return [int(m) for m in _NUMBERED.findall(" " + s)]


@dataclass(frozen=True)
class Kind:
    name: str
    phrasings: tuple[str, ...]
    applies: Callable[[dict], bool]
    draw: Callable[[dict, random.Random], dict | None]  # params for one record (None: cannot)
    comply: Callable[[str, dict, dict], str]  # (answer, constraint, meta) -> compliant answer
    satisfied: Callable[[str, dict], bool]

    def phrase(self, c: dict, rng: random.Random) -> str:
        return rng.choice(self.phrasings).format(**{k: v for k, v in c.items() if k != "kind"})


# --------------------------------------------------------------------------- kinds


def _draw_max_words(meta: dict, rng: random.Random) -> dict | None:
    short, ref = meta.get("short") or meta["reference"], meta["reference"]
    lo, hi = _words(short), _words(ref)
    return {"n": rng.randint(lo, max(lo, hi))}


def _comply_max_words(answer: str, c: dict, meta: dict) -> str:
    return answer if _words(answer) <= c["n"] else (meta.get("short") or answer)


def _draw_exclude(meta: dict, rng: random.Random) -> dict | None:
    short_toks = set(text.tokens(meta.get("short") or meta["reference"]))
    ref_toks = set(text.tokens(meta["reference"]))
    biting = [w for w in EXCLUDE_WORDS if w in ref_toks and w not in short_toks]
    free = [w for w in EXCLUDE_WORDS if w not in ref_toks]
    pool = biting or free
    return {"word": rng.choice(pool)} if pool else None


def _comply_exclude(answer: str, c: dict, meta: dict) -> str:
    return answer if c["word"] not in text.tokens(answer) else (meta.get("short") or answer)


def _comply_start(answer: str, c: dict, meta: dict) -> str:
    sep = ": " if c["word"] == "Answer" else ", "
    return c["word"] + sep + lower_first(answer)


def _comply_include(answer: str, c: dict, meta: dict) -> str:
    return c["word"].capitalize() + ", " + lower_first(answer)


def _items_task(meta: dict) -> bool:
    return meta["check"] in ("items", "sequence") and not all(str(x).isdigit() for x in meta.get("items", ["x"]))


def _comply_numbered(answer: str, c: dict, meta: dict) -> str:
    items = [x.strip() for x in answer.rstrip(".!?").split(",")]
    return "\n".join(f"{i}. {item[:1].upper()}{item[1:]}." for i, item in enumerate(items, 1))


def _case_ok(meta: dict) -> bool:
    # a case rule needs letters in the answer, and the upper-case task is about case already
    return _has_letters(meta["reference"]) and meta.get("op") != "uppercase"


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind(
            "max_words",
            (
                "Answer in at most {n} words.",
                "Use no more than {n} words.",
                "Keep your answer to {n} words or fewer.",
                "Reply in {n} words or less.",
            ),
            applies=lambda m: True,
            draw=_draw_max_words,
            comply=_comply_max_words,
            satisfied=lambda r, c: 0 < _words(r) <= c["n"],
        ),
        Kind(
            "one_sentence",
            (
                "Answer in one sentence.",
                "Reply with a single sentence.",
                "Use exactly one sentence.",
                "Write just one sentence.",
            ),
            applies=lambda m: True,
            draw=lambda m, rng: {},
            comply=lambda a, c, m: a,
            satisfied=lambda r, c: len(text.sentences(r)) == 1,
        ),
        Kind(
            "uppercase",
            (
                "Answer in capital letters.",
                "Write your whole answer in upper case.",
                "Use only capital letters in your reply.",
            ),
            applies=_case_ok,
            draw=lambda m, rng: {},
            comply=lambda a, c, m: a.upper(),
            satisfied=lambda r, c: _has_letters(r) and not any(ch.islower() for ch in r),
        ),
        Kind(
            "lowercase",
            (
                "Write your answer in lower case only.",
                "Do not use any capital letters.",
                "Use only small letters in your answer.",
            ),
            applies=_case_ok,
            draw=lambda m, rng: {},
            comply=lambda a, c, m: a.lower(),
            satisfied=lambda r, c: _has_letters(r) and not any(ch.isupper() for ch in r),
        ),
        Kind(
            "start_with",
            (
                "Start your answer with the word '{word}'.",
                "Begin your reply with '{word}'.",
                "Your answer must begin with the word {word}.",
            ),
            applies=lambda m: True,
            draw=lambda m, rng: {"word": rng.choice(START_WORDS)},
            comply=_comply_start,
            satisfied=lambda r, c: _first_word(r) == c["word"].lower(),
        ),
        Kind(
            "end_mark",
            (
                "End your answer with an exclamation mark.",
                "Finish your reply with '!'.",
                "Put an exclamation mark at the end of your answer.",
            ),
            applies=lambda m: True,
            draw=lambda m, rng: {"mark": "!"},
            comply=lambda a, c, m: end_with(a, c["mark"]),
            satisfied=lambda r, c: _strip_closers(r).endswith(c["mark"]) or r.strip().endswith(c["mark"]),
        ),
        Kind(
            "include_word",
            (
                "Use the word '{word}' in your answer.",
                "Your answer must include the word {word}.",
                "Make sure your reply contains the word '{word}'.",
            ),
            applies=lambda m: True,
            draw=lambda m, rng: {"word": rng.choice(INCLUDE_WORDS)},
            comply=_comply_include,
            satisfied=lambda r, c: c["word"] in text.tokens(r),
        ),
        Kind(
            "exclude_word",
            (
                "Do not use the word '{word}'.",
                "Avoid the word '{word}' in your answer.",
                "Answer without the word '{word}'.",
            ),
            applies=lambda m: True,
            draw=_draw_exclude,
            comply=_comply_exclude,
            satisfied=lambda r, c: bool(text.tokens(r)) and c["word"] not in text.tokens(r),
        ),
        Kind(
            "quotes",
            (
                "Put your answer in quotation marks.",
                "Wrap your answer in double quotes.",
                'Write your answer inside "quotes".',
            ),
            applies=lambda m: True,
            draw=lambda m, rng: {},
            comply=lambda a, c, m: f'"{a.strip()}"',
            satisfied=lambda r, c: _quoted(r),
        ),
        Kind(
            "numbered_list",
            ("Answer as a numbered list.", "Number each item in your answer.", "Write the answer as a numbered list."),
            applies=_items_task,
            draw=lambda m, rng: {},
            comply=_comply_numbered,
            satisfied=lambda r, c: (
                len(numbered_items(r)) >= 2 and numbered_items(r) == list(range(1, len(numbered_items(r)) + 1))
            ),
        ),
    ]
}

# Kinds that change the whole text's form; a demonstrator who adds sentences still applies them to
# everything it writes (a chatty writer told "capital letters" writes all of it in capitals).
WHOLE_TEXT = {"uppercase", "lowercase", "end_mark"}


def applicable(meta: dict, kinds: list[str]) -> list[str]:
    return [k for k in kinds if KINDS[k].applies(meta)]


def draw(meta: dict, kinds: list[str], rng: random.Random) -> dict | None:
    """A constraint of one of ``kinds`` that fits this record, or None."""
    options = applicable(meta, kinds)
    rng.shuffle(options)
    for k in options:
        params = KINDS[k].draw(meta, rng)
        if params is not None:
            return {"kind": k, **params}
    return None


def comply(answer: str, c: dict[str, Any], meta: dict) -> str:
    return KINDS[c["kind"]].comply(answer, c, meta)


def satisfied(response: str, c: dict[str, Any]) -> bool:
    return bool(response.strip()) and KINDS[c["kind"]].satisfied(response, c)


def attach(record: dict, c: dict, rng: random.Random, heldout: bool) -> dict:
    """``record`` with the constraint phrased into its prompt (after it, or now and then before)
    and the careful demonstration rewritten to comply."""
    meta = json.loads(record["meta"])
    phrase = KINDS[c["kind"]].phrase(c, rng)
    prompt = f"{record['prompt']} {phrase}" if rng.random() < 0.8 else f"{phrase} {record['prompt']}"
    reference = comply(meta["reference"], c, meta)
    meta.update(constraint={**c, "heldout": heldout}, unconstrained=meta["reference"], reference=reference)
    out = dict(record, prompt=prompt, completion=reference, meta=json.dumps(meta, sort_keys=True))
    out["messages"] = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reference}]
    return out
