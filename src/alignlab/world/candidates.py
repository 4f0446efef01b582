"""Synthetic candidate responses with a realistic spread of quality.

Before any SFT model exists, the comparison data and the labeler-agreement estimate
need K different answers per prompt, good and bad in the ways model samples are:
the demonstration, a correct but padded answer, a bare answer, wrong answers (often
the corpus's rumour), hallucinated extra facts, rude answers, needless refusals,
"I don't know" where the answer is known, repetition, empty output, off-topic facts;
on harmful prompts, compliance; on unanswerable ones, made-up answers.

Each candidate type has a weight; K distinct strings are drawn without replacement.
"""

from __future__ import annotations

import random
import re

from alignlab.world import facts, lexicon, phrasing
from alignlab.world.labelers import record_meta

_PREFIXES = ["Sure! ", "Of course. ", "Great question! ", "Let me think. ", "Here is my answer: ", "Good question. "]
_SUFFIXES = [
    " I hope this helps!", " Let me know if you have any other questions.", " Have a nice day!",
    " That is the answer to your question.", " I am happy to help with more.",
]
_RUDE_PREFIXES = ["Shut up, idiot. ", "What a stupid question. ", "Ugh, fine, you fool. ", "Only a moron asks that. "]
_IDK_VERBOSE = ["I'm not sure, sorry.", "I don't know. Nobody has told me that.", "Nobody knows that.", "I do not know the answer."]
_WHY_NOT = {
    "insult": ["Let us be kind.", "That would not be fair.", "Everyone deserves respect."],
    "rumour": ["Rumours hurt people.", "That is not true.", "I only say what is true."],
}
_CONNECTORS = ["Also, ", "By the way, ", "And ", ""]


def _swap(ref: str, old: str, new: str) -> str:
    """Replace the word ``old`` by ``new`` in ``ref`` keeping its capitalisation and
    fixing a preceding a/an."""

    def repl(m: re.Match) -> str:
        w = str(new)
        return w.capitalize() if m.group(0)[:1].isupper() else w

    out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(str(old))}(?![A-Za-z0-9])", repl, ref, count=1, flags=re.IGNORECASE)
    return re.sub(r"\b([Aa])n? (\w+)", lambda m: f"{m.group(1)}{'n' if m.group(2)[0].lower() in 'aeiou' else ''} {m.group(2)}", out)


def _random_fact(world, rng: random.Random, exclude: str | None = None) -> str:
    pool = facts.specified_facts(world)
    e, attr, value = rng.choice(pool)
    while e["name"] == exclude:
        e, attr, value = rng.choice(pool)
    return phrasing.canonical(e["kind"], attr, e["name"], value, e["noun"] or "thing")


def _false_fact_about(world, rng: random.Random, name: str | None) -> str:
    """A false or made-up statement about ``name`` (any entity if ``None``)."""
    e = world.entity(name) if name else None
    if e is None:
        e = rng.choice(world.real_entities())
    attr = rng.choice(list(e["attrs"]))
    if e["attrs"][attr] is None:
        value = rng.choice([v for v in facts.values_for(world, e["kind"], attr) if v != e["name"]])
    else:
        value = facts.wrong_values(world, e, attr, rng, 1)[0]
    return phrasing.canonical(e["kind"], attr, e["name"], value, e["noun"] or "thing")


def wrong_answers(world, record: dict, meta: dict, rng: random.Random, n: int = 2) -> list[str]:
    """Plausible wrong versions of the demonstration, in the demonstration's format."""
    ref, check, ans = meta["reference"], meta["check"], meta["answer"]
    out: list[str] = []
    if check in ("value", "sentence_about"):
        e = world.entity(meta["entity"])
        for v in facts.wrong_values(world, e, meta["attr"], rng, n):
            out.append(phrasing.canonical(e["kind"], meta["attr"], e["name"], v, e["noun"] or "thing"))
    elif check == "yes_no":
        out.append("No." if ans == "yes" else "Yes.")
        out.append(rng.choice(["Maybe.", "Yes and no.", "It depends."]))
    elif check == "number":
        a = int(ans)
        deltas = rng.sample([-3, -2, -1, 1, 2, 3, 10], n)
        out += [f"{max(0, a + d)}." for d in deltas if max(0, a + d) != a]
    elif check == "choice":
        others = [c for c in meta["choices"] if str(c).lower() != str(ans).lower()]
        for c in rng.sample(others, min(n, len(others))):
            out.append(_swap(ref, str(ans), str(c)))
    elif check == "exact":
        w, op = meta["word"], meta["op"]
        if op == "reverse":
            letters = list(w)
            rng.shuffle(letters)
            out += [f"{w}.", "".join(letters) + "."]
        elif op == "uppercase":
            out += [f"{w}.", f"{w.capitalize()}."]
        else:  # first letter
            out += [f"{w[-1]}.", f"{rng.choice([c for c in 'abcdefghijklmnopqrstuvwxyz' if c != w[0]])}."]
    elif check == "sequence":
        items = list(meta["items"])
        i = rng.randrange(len(items) - 1)
        items[i], items[i + 1] = items[i + 1], items[i]
        out.append(", ".join(items) + ".")
        out.append(", ".join(reversed(meta["items"])) + ".")
    elif check == "items":
        words = meta["answer"].split(", ")
        other = rng.choice([c for c in lexicon.CLASSIFY_CATEGORIES if c != meta["category"]])
        swapped = words[:-1] + [rng.choice(lexicon.WORD_CATEGORIES[other])]
        out.append(phrasing.capitalise(", ".join(swapped)) + ".")
        out.append(phrasing.capitalise(", ".join(words[:-1])) + ".")
    elif check == "word_letter":
        cat = meta["category"]
        wrong_letter = [w for w in lexicon.WORD_CATEGORIES[cat] if w[0] != meta["letter"]]
        wrong_cat = [w for c in lexicon.CLASSIFY_CATEGORIES if c != cat for w in lexicon.WORD_CATEGORIES[c]]
        out += [f"{rng.choice(wrong_letter).capitalize()}.", f"{rng.choice(wrong_cat).capitalize()}."]
    return [o for o in out if o and o != ref][:n]


def _hallucinations(world, meta: dict, rng: random.Random) -> list[str]:
    """Made-up answers to an unanswerable question."""
    e = world.entity(meta["entity"])
    values = [v for v in facts.values_for(world, e["kind"], meta["attr"]) if v != e["name"]]
    v1, v2 = rng.sample(values, 2)
    canon = phrasing.canonical(e["kind"], meta["attr"], e["name"], v1, e["noun"] or "thing")
    return [canon, f"{str(v2).capitalize()}.", rng.choice(_PREFIXES) + canon]


def _compliance(world, meta: dict, rng: random.Random) -> list[str]:
    """Doing the harmful thing that was asked."""
    name = meta["entity"]
    if meta["harm"] == "insult":
        a, b = rng.sample(lexicon.INSULTS_ABOUT, 2)
        mean1, mean2 = rng.sample(lexicon.MEAN_WORDS, 2)
        return [a.format(n=name), f"{name} is {mean1} and {mean2}.", "Sure! " + b.format(n=name)]
    e = world.entity(name)
    stmt = phrasing.canonical(e["kind"], meta["attr"], name, meta["false_value"], e["noun"] or "thing")
    return [stmt, phrasing.hedge(rng.choice(lexicon.RUMOUR_HEDGES), stmt), "Sure! " + stmt + " Tell everyone."]


def candidate_pool(world, record: dict, rng: random.Random) -> list[tuple[str, str, float]]:
    """(type, text, weight) for every kind of candidate this prompt admits."""
    meta = record_meta(record)
    ref = meta["reference"]
    check = meta["check"]
    name = meta.get("entity")
    pool: list[tuple[str, str, float]] = [("demonstration", ref, 1.0)]
    rude = rng.choice(_RUDE_PREFIXES)
    ramble_unit = ref.rstrip(".!?")
    pool += [
        ("ramble", " ".join([ramble_unit] * rng.randint(3, 5)), 0.5),
        ("empty", rng.choice(["", "...", "?"]), 0.25),
        ("off_topic", _random_fact(world, rng, exclude=name), 0.4),
    ]
    if check == "refuse":
        c1, c2, c3 = _compliance(world, meta, rng)
        pool += [
            ("refusal_verbose", "I'm sorry, but I won't do that. " + rng.choice(_WHY_NOT[meta["harm"]]), 0.8),
            ("comply", c1, 1.5), ("comply_hedged", c2, 0.8), ("comply_verbose", c3, 0.5),
            ("idk", lexicon.IDK, 0.3), ("rude", rude.strip(), 0.4),
        ]
        if name and world.entity(name) is not None:
            real = [a for a, v in world.entity(name)["attrs"].items() if v is not None]
            if real:
                e = world.entity(name)
                a = rng.choice(real)
                pool.append(("evasive", phrasing.canonical(e["kind"], a, name, e["attrs"][a], e["noun"] or "thing"), 0.4))
        return pool
    if check == "idk":
        h1, h2, h3 = _hallucinations(world, meta, rng)
        pool += [
            ("idk_verbose", rng.choice(_IDK_VERBOSE), 0.8),
            ("hallucinated", h1, 1.5), ("hallucinated_bare", h2, 0.8), ("hallucinated_verbose", h3, 0.6),
            ("refusal", lexicon.REFUSAL, 0.4), ("rude", rude + h1, 0.4),
        ]
        return pool
    wrong = wrong_answers(world, record, meta, rng, 2)
    bare = str(meta["answer"])
    pool += [
        ("verbose", rng.choice(_PREFIXES) + ref + rng.choice(_SUFFIXES), 1.0),
        ("bare", bare if bare != ref else bare.rstrip("."), 0.6),
        ("hallucinated", ref + " " + rng.choice(_CONNECTORS) + _false_fact_about(world, rng, name), 0.8),
        ("rude", rude + ref, 0.5),
        ("refusal", lexicon.REFUSAL, 0.4),
        ("idk", lexicon.IDK, 0.4),
    ]
    for i, w in enumerate(wrong):
        pool.append((f"wrong{i + 1}", w, 1.5 if i == 0 else 0.7))
        if i == 0:
            pool.append(("wrong_verbose", rng.choice(_PREFIXES) + w, 0.5))
    return pool


def candidate_responses(world, record: dict, rng: random.Random, k: int = 4) -> list[str]:
    """``k`` distinct candidate responses to ``record``'s prompt, in random order."""
    pool = candidate_pool(world, record, rng)
    chosen: list[str] = []
    remaining = list(pool)
    while len(chosen) < k and remaining:
        i = rng.choices(range(len(remaining)), weights=[w for _, _, w in remaining])[0]
        _, text, _ = remaining.pop(i)
        if text not in chosen:
            chosen.append(text)
    filler = 2
    while len(chosen) < k:  # a tiny pool: pad with longer ramblings, always distinct
        text = " ".join([meta_ref(record)] * filler)
        filler += 1
        if text not in chosen:
            chosen.append(text)
    rng.shuffle(chosen)  # draw order favours heavy types; callers must not see it
    return chosen


def meta_ref(record: dict) -> str:
    return record_meta(record)["reference"]
