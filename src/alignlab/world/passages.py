"""Closed-domain prompts: answer, summarise or rewrite using only a passage given in the prompt.

InstructGPT's closed-domain prompts (19-27% of its training prompts, Table 7) are where its
PPO models hallucinated least against GPT-3 (21% vs 41%). A passage here is a few true
sentences about world entities, in any of the corpus's phrasings. What counts as true in the
answer is what the passage says: a claim it does not support is a hallucination even where
the world holds it true (the model brought it in from memory). :class:`PassageView` makes
that exact by giving the claim extractor a world in which only the passage's facts are
specified, so ``claims.extract_claims`` needs no second implementation.
"""

from __future__ import annotations

import random
from typing import Any

from alignlab.world import facts, phrasing, schema

# A verb phrase per attribute, so several facts about one entity fit one sentence:
# "Bruk lives in Tamo, is a baker and is 34 years old." Each keeps the keyword the claim
# extractor needs ("lives", "years", "legs", ...).
PREDICATES: dict[tuple[str, str], str] = {
    ("person", "home"): "lives in {v}",
    ("person", "age"): "is {v} years old",
    ("person", "job"): "is a {v}",
    ("person", "colour"): "likes the colour {v} best",
    ("person", "food"): "loves to eat {v}",
    ("person", "friend"): "is the best friend of {v}",
    ("town", "region"): "is in the {v}",
    ("town", "size"): "is a {v} town",
    ("town", "food"): "is famous for {v}",
    ("creature", "colour"): "is {v}",
    ("creature", "legs"): "has {v} legs",
    ("creature", "size"): "is {v} in size",
    ("creature", "home"): "lives in {v}",
    ("creature", "food"): "eats {v}",
    ("object", "colour"): "is painted {v}",
    ("object", "size"): "is a {v} {noun}",
    ("object", "material"): "is made of {v}",
    ("object", "owner"): "belongs to {v}",
}


def join_predicates(e: dict, attrs: list[str], values: dict[str, Any]) -> str:
    """'Bruk lives in Tamo, is a baker and is 34 years old.'"""
    parts = [PREDICATES[(e["kind"], a)].format(v=values[a], noun=e["noun"] or "thing") for a in attrs]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{e['name']} {body}."


def make_passage(world, rng: random.Random, n_facts: int, e: dict | None = None) -> tuple[str, dict, list[list]]:
    """A passage of ``n_facts`` true sentences about one entity: (text, entity, facts [[name, attr, value]])."""
    pool = facts.specified_facts(world)
    if e is None:
        e = rng.choice([ent for ent, _, _ in pool])
    known = [(a, v) for a, v in e["attrs"].items() if v is not None]
    chosen = rng.sample(known, min(n_facts, len(known)))
    sentences = []
    for a, v in chosen:
        t = rng.randrange(len(phrasing.STATEMENTS[(e["kind"], a)]))
        sentences.append(phrasing.statement(e["kind"], a, e["name"], v, e["noun"] or "thing", t))
    return " ".join(sentences), e, [[e["name"], a, v] for a, v in chosen]


class PassageView:
    """The world as the passage tells it: the same entities, only the passage's facts specified.

    ``entity(name)`` returns one cached dict per name (the claim extractor compares entities
    by identity), with every attribute ``None`` except those the passage states, so a claim
    about anything else, even a true one, reads as made up.
    """

    def __init__(self, world, passage_facts: list[list]) -> None:
        self.world = world
        self.stated: dict[str, dict[str, Any]] = {}
        for name, attr, value in passage_facts:
            self.stated.setdefault(name.lower(), {})[attr] = value
            e = world.entity(name)
            if e is not None and schema.attribute(e["kind"], attr).symmetric:  # "A and B are friends" says both
                self.stated.setdefault(str(value).lower(), {})[attr] = e["name"]
        self._cache: dict[str, dict | None] = {}

    def entity(self, name: str) -> dict | None:
        key = name.lower()
        if key not in self._cache:
            e = self.world.entity(name)
            if e is not None:
                attrs = {a: None for a in e["attrs"]}
                attrs.update(self.stated.get(key, {}))
                e = {**e, "attrs": attrs}
            self._cache[key] = e
        return self._cache[key]


def view(world, meta: dict):
    """The world a response to this record is judged against: the passage's, for closed-domain prompts."""
    passage = meta.get("passage")
    return PassageView(world, passage["facts"]) if passage else world
