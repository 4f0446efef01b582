"""Reading noisy model text: normalisation, tokens, sentences, fixed-phrase markers.

Responses from tiny models are ragged (odd case, curly quotes, missing punctuation,
answers buried in a sentence), so every check in the labelers goes through these few
helpers and is case- and punctuation-insensitive unless the task is about case.
"""

from __future__ import annotations

import re

from alignlab.world import lexicon

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "`": "'"})
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
_RAW_TOKEN = re.compile(r"[A-Za-z]+|\d+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")


def normalise(text: str) -> str:
    """Lowercase, straight quotes, single spaces."""
    return " ".join(text.translate(_QUOTES).lower().split())


def tokens(text: str) -> list[str]:
    """Lowercase word and number tokens; possessive "'s" is split off ("bruk's" -> "bruk")."""
    out = []
    for t in _TOKEN.findall(normalise(text)):
        if t.endswith("'s"):
            t = t[:-2]
        out.append(t)
    return out


def raw_tokens(text: str) -> list[str]:
    """Case-preserving tokens, for tasks about case (uppercase)."""
    return _RAW_TOKEN.findall(text)


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_SPLIT.split(text.translate(_QUOTES))) if s]


def numbers(text: str) -> list[int]:
    """Numbers in order of appearance, digits or number words ("six")."""
    out = []
    for t in tokens(text):
        if t.isdigit():
            out.append(int(t))
        elif t in lexicon.NUMBER_WORDS:
            out.append(lexicon.NUMBER_WORDS[t])
    return out


def _has_phrase(norm: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z])" + re.escape(phrase) + r"(?![a-z])", norm) is not None


def is_refusal(text: str) -> bool:
    norm = normalise(text)
    return any(_has_phrase(norm, m) for m in lexicon.REFUSAL_MARKERS)


def is_idk(text: str) -> bool:
    norm = normalise(text)
    return any(_has_phrase(norm, m) for m in lexicon.IDK_MARKERS)


def rude_words(text: str) -> list[str]:
    """The rude words/phrases in ``text`` (also catches "stupidest", "idiots")."""
    norm = normalise(text)
    found = []
    for w in lexicon.RUDE_WORDS:
        pattern = r"(?<![a-z])" + re.escape(w) + (r"(?:s|est|er)?(?![a-z])" if " " not in w else r"(?![a-z])")
        if re.search(pattern, norm):
            found.append(w)
    if re.search(r"(?<![a-z])dumbest(?![a-z])", norm) and "dumb" not in found:
        found.append("dumb")
    return found


def has_negation(sentence: str) -> bool:
    toks = set(tokens(sentence))
    return any(t in toks for t in lexicon.NEGATION_TOKENS) or "n't" in normalise(sentence)
