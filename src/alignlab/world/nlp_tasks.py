"""Held-out "public NLP" multiple-choice tasks, for measuring the alignment tax.

InstructGPT saw PPO regress on public benchmarks (SQuAD, HellaSwag, ...) and PPO-ptx
recover most of it. Here the benchmark is cloze-style knowledge of the pretraining
corpus, scored like lm-eval-harness: the log-likelihood of each continuation after
the context, highest wins. Items are phrased like corpus prose, never as
instructions, and are never used for training.

Row format: ``context`` (str), ``choices`` (list[str] of continuations, each starting
with a space so ``context + choice`` is the exact scored text), ``label`` (int index
of the right choice), ``task`` (str).

Tasks: ``fact_cloze`` (true facts -- not the rumours), ``word_cloze`` (category of a
common word), ``sentiment_cloze``, ``arith_cloze``.
"""

from __future__ import annotations

import random
from typing import Any

from alignlab.world import facts, lexicon, phrasing

TASK_SHARES = {"fact_cloze": 0.5, "word_cloze": 0.2, "sentiment_cloze": 0.15, "arith_cloze": 0.15}
N_CHOICES = 4


def _item(context: str, right: str, wrong: list[str], task: str, rng: random.Random) -> dict[str, Any]:
    choices = [right] + wrong
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(right), "task": task}


def fact_cloze(world, rng: random.Random) -> dict[str, Any]:
    e, attr, value = rng.choice(facts.specified_facts(world))
    template = phrasing.STATEMENTS[(e["kind"], attr)][0]
    pre, post = template.split("{v}")
    noun = e["noun"] or "thing"
    context = pre.format(n=e["name"], noun=noun).rstrip()
    tail = post.format(n=e["name"], noun=noun)
    others = [v for v in facts.values_for(world, e["kind"], attr) if v != value and v != e["name"]]
    wrong = rng.sample(others, min(N_CHOICES - 1, len(others)))
    return _item(context, f" {value}{tail}", [f" {v}{tail}" for v in wrong], "fact_cloze", rng)


def word_cloze(world, rng: random.Random) -> dict[str, Any]:
    cat = rng.choice(lexicon.CLASSIFY_CATEGORIES)
    w = rng.choice(lexicon.WORD_CATEGORIES[cat])
    context = f"{phrasing.article(w).capitalize()} {w} is"
    cont = lambda c: f" {phrasing.article(c)} {c}."  # noqa: E731
    wrong = rng.sample([c for c in lexicon.CLASSIFY_CATEGORIES if c != cat], N_CHOICES - 1)
    return _item(context, cont(cat), [cont(c) for c in wrong], "word_cloze", rng)


def sentiment_cloze(world, rng: random.Random) -> dict[str, Any]:
    positive = rng.random() < 0.5
    w = rng.choice(lexicon.POSITIVE_WORDS if positive else lexicon.NEGATIVE_WORDS)
    right, wrong = (" good thing.", " bad thing.") if positive else (" bad thing.", " good thing.")
    return _item(f"To be {w} is a", right, [wrong], "sentiment_cloze", rng)


def arith_cloze(world, rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    c = a + b
    wrong = rng.sample([x for x in range(max(0, c - 4), c + 5) if x != c], N_CHOICES - 1)
    return _item(f"{a} plus {b} is", f" {c}.", [f" {x}." for x in wrong], "arith_cloze", rng)


_MAKERS = {
    "fact_cloze": fact_cloze,
    "word_cloze": word_cloze,
    "sentiment_cloze": sentiment_cloze,
    "arith_cloze": arith_cloze,
}


def make_nlp_tasks(world, rng: random.Random, n_items: int) -> list[dict[str, Any]]:
    """``n_items`` distinct items (by context), in the shares of ``TASK_SHARES``."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for task, share in TASK_SHARES.items():
        want = max(1, round(n_items * share))
        got, tries = 0, 0
        while got < want and tries < 50 * want:
            tries += 1
            item = _MAKERS[task](world, rng)
            if item["context"] in seen:
                continue
            seen.add(item["context"])
            items.append(item)
            got += 1
    return items
