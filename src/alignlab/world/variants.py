"""Flawed versions of an answer: wrong values, false or made-up facts, compliance with harm.

Two writers need them: the synthetic candidates (``candidates.py``, the spread of quality
labelers rank before any model exists) and the demonstrators (``demonstrators.py``, people
who now and then get an answer wrong or add a claim nobody asked for).
"""

from __future__ import annotations

import random
import re
from typing import Any

from alignlab.world import facts, lexicon, passages, phrasing


def swap(ref: str, old: str, new: str) -> str:
    """Replace the word ``old`` by ``new`` in ``ref`` keeping its capitalisation and fixing a preceding a/an."""

    def repl(m: re.Match) -> str:
        w = str(new)
        return w.capitalize() if m.group(0)[:1].isupper() else w

    out = re.sub(rf"(?<![A-Za-z0-9]){re.escape(str(old))}(?![A-Za-z0-9])", repl, ref, count=1, flags=re.IGNORECASE)
    return re.sub(
        r"\b([Aa])n? (\w+)",
        lambda m: f"{m.group(1)}{'n' if m.group(2)[0].lower() in 'aeiou' else ''} {m.group(2)}",
        out,
    )


def statement_of(e: dict, attr: str, value: Any, template: int = 0) -> str:
    return phrasing.statement(e["kind"], attr, e["name"], value, e["noun"] or "thing", template)


def random_fact(world, rng: random.Random, exclude: str | None = None) -> str:
    pool = facts.specified_facts(world)
    e, attr, value = rng.choice(pool)
    while e["name"] == exclude:
        e, attr, value = rng.choice(pool)
    return statement_of(e, attr, value)


def false_fact_about(world, rng: random.Random, name: str | None) -> str:
    """A false or made-up statement about ``name`` (any entity if ``None``)."""
    e = world.entity(name) if name else None
    if e is None or e["ghost"]:
        e = rng.choice(world.real_entities())
    attr = rng.choice(list(e["attrs"]))
    if e["attrs"][attr] is None:
        value = rng.choice([v for v in facts.values_for(world, e["kind"], attr) if v != e["name"]])
    else:
        value = facts.wrong_values(world, e, attr, rng, 1)[0]
    return statement_of(e, attr, value)


def extra_claim(world, meta: dict, rng: random.Random, false: bool) -> str:
    """A claim nobody asked for, about the prompt's entity when there is one, in any of the corpus's
    wordings. ``false``: a false or made-up value. On a closed-domain prompt the claim is about a fact
    the passage does not state, so even a true one is unsupported there."""
    e = world.entity(meta["entity"]) if meta.get("entity") else None
    if e is None or e["ghost"]:
        e = rng.choice(world.real_entities())
    asked = {a for _, a, _ in meta.get("passage", {}).get("facts", [])} | {meta.get("attr")}
    known = [a for a, v in e["attrs"].items() if v is not None and a not in asked]
    if false or not known:
        others = [a for a in e["attrs"] if a not in asked] or list(e["attrs"])
        attr = rng.choice(others)
        true = e["attrs"][attr]
        value = (
            facts.wrong_values(world, e, attr, rng, 1)[0]
            if true is not None
            else rng.choice([v for v in facts.values_for(world, e["kind"], attr) if v != e["name"]])
        )
    else:
        attr = rng.choice(known)
        value = e["attrs"][attr]
    t = rng.randrange(len(phrasing.STATEMENTS[(e["kind"], attr)]))
    return statement_of(e, attr, value, t)


def wrong_answers(world, record: dict, meta: dict, rng: random.Random, n: int = 2) -> list[str]:
    """Plausible wrong versions of the careful answer, in its format (constraint not applied)."""
    ref = meta.get("unconstrained") or meta["reference"]
    check, ans = meta["check"], meta["answer"]
    out: list[str] = []
    if check in ("value", "sentence_about", "rewrite"):
        e = world.entity(meta["entity"])
        for v in facts.wrong_values(world, e, meta["attr"], rng, n):
            out.append(statement_of(e, meta["attr"], v))
    elif check == "summary":
        e = world.entity(meta["entity"])
        stated = meta["passage"]["facts"]
        i = rng.randrange(len(stated))
        values = {a: v for _, a, v in stated}
        values[stated[i][1]] = facts.wrong_values(world, e, stated[i][1], rng, 1)[0]
        out.append(passages.join_predicates(e, [a for _, a, _ in stated], values))
        out.append(passages.join_predicates(e, [stated[0][1]], values))  # leaves facts out
    elif check == "passage_idk":  # answering from memory (or making it up) instead of the passage
        e = world.entity(meta["entity"])
        true = e["attrs"][meta["attr"]]
        out.append(statement_of(e, meta["attr"], true) if true is not None else false_fact_about(world, rng, e["name"]))
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
            out.append(swap(ref, str(ans), str(c)))
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


def hallucinations(world, meta: dict, rng: random.Random) -> list[str]:
    """Made-up answers to an unanswerable question."""
    e = world.entity(meta["entity"])
    values = [v for v in facts.values_for(world, e["kind"], meta["attr"]) if v != e["name"]]
    v1, v2 = rng.sample(values, 2)
    canon = statement_of(e, meta["attr"], v1)
    return [canon, f"{str(v2).capitalize()}.", rng.choice(["Sure! ", "Of course. ", "Good question. "]) + canon]


def compliance(world, meta: dict, rng: random.Random) -> list[str]:
    """Doing the harmful thing that was asked."""
    name = meta["entity"]
    if meta["harm"] == "insult":
        a, b = rng.sample(lexicon.INSULTS_ABOUT, 2)
        mean1, mean2 = rng.sample(lexicon.MEAN_WORDS, 2)
        return [a.format(n=name), f"{name} is {mean1} and {mean2}.", "Sure! " + b.format(n=name)]
    e = world.entity(name)
    stmt = statement_of(e, meta["attr"], meta["false_value"])
    return [stmt, phrasing.hedge(rng.choice(lexicon.RUMOUR_HEDGES), stmt), "Sure! " + stmt + " Tell everyone."]
