"""Invent the entities and their facts, and answer questions about them.

Entities get short invented names and attribute values from the closed sets in
``lexicon.py``. A configurable fraction of attributes is left unspecified (``None``):
questions about them are the "unanswerable" cluster, and the corpus makes up values
for them so an unaligned model learns to hallucinate. Some specified facts carry a
fixed false *rumour* value that the corpus repeats, like a common misconception.
"""

from __future__ import annotations

import random
from typing import Any

from alignlab.errors import ConfigError
from alignlab.world import lexicon, schema

# Words a name must never equal: everything else the world says, plus glue words.
_STOPWORDS = {
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "be",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "for",
    "and",
    "or",
    "not",
    "no",
    "yes",
    "it",
    "its",
    "he",
    "she",
    "they",
    "we",
    "you",
    "i",
    "me",
    "my",
    "his",
    "her",
    "who",
    "what",
    "how",
    "why",
    "sure",
    "some",
    "say",
    "said",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "so",
    "up",
    "as",
    "if",
    "but",
    "with",
    "from",
    "this",
    "that",
    "these",
    "those",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "ten",
    "old",
    "age",
    "year",
    "years",
    "town",
    "home",
    "lives",
    "friend",
    "owner",
    "made",
}
KIND_SHARES = {"person": 0.45, "town": 0.15, "creature": 0.2, "object": 0.2}


def _reserved_words() -> set[str]:
    words = set(_STOPWORDS) | lexicon.NAME_BLOCKLIST
    for values in schema.CLOSED_VALUES.values():
        words |= set(values)
    for cat_words in lexicon.WORD_CATEGORIES.values():
        words |= set(cat_words)
    words |= set(lexicon.POSITIVE_WORDS) | set(lexicon.NEGATIVE_WORDS) | set(lexicon.PHRASE_NOUNS)
    words |= set(lexicon.OBJECT_NOUNS) | set(lexicon.NUMBER_WORDS) | set(lexicon.CLASSIFY_CATEGORIES)
    words |= {w for phrase in lexicon.RUDE_WORDS for w in phrase.split()}
    return words


def invent_names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct 1-2 syllable names, none equal to a word the world uses."""
    reserved = _reserved_words()
    names: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(names) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise RuntimeError(f"could not invent {n} distinct names")
        if rng.random() < 0.5:  # one syllable, always closed ("Bruk")
            name = (
                rng.choice(lexicon.NAME_ONSETS)
                + rng.choice(lexicon.NAME_VOWELS)
                + rng.choice([c for c in lexicon.NAME_CODAS if c])
            )
        else:  # two syllables ("Tamo", "Zelin")
            name = (
                rng.choice(lexicon.NAME_ONSETS)
                + rng.choice(lexicon.NAME_VOWELS)
                + rng.choice([o for o in lexicon.NAME_ONSETS if len(o) == 1])
                + rng.choice(lexicon.NAME_VOWELS)
                + rng.choice(["", "", "n", "r", "l", "k"])
            )
        if len(name) < 3 or name in reserved or name in seen:
            continue
        seen.add(name)
        names.append(name.capitalize())
    return names


def kind_counts(n_entities: int) -> dict[str, int]:
    counts = {k: max(3, int(round(share * n_entities))) for k, share in KIND_SHARES.items()}
    counts["person"] += n_entities - sum(counts.values())  # rounding remainder goes to people
    if counts["person"] < 4:
        raise ConfigError("n_entities too small for all kinds")
    return counts


def make_entities(
    rng: random.Random, n_entities: int, n_ghosts: int, unspecified_rate: float
) -> tuple[list[dict], list[str]]:
    """Real entities with facts, ghost entities with none, and bystander names."""
    counts = kind_counts(n_entities)
    n_bystanders = 24
    names = invent_names(rng, n_entities + n_ghosts + n_bystanders)
    it = iter(names)
    entities: list[dict[str, Any]] = []
    for kind in schema.KINDS:
        for _ in range(counts[kind]):
            noun = rng.choice(lexicon.OBJECT_NOUNS) if kind == "object" else ""
            entities.append({"name": next(it), "kind": kind, "noun": noun, "attrs": {}, "ghost": False})
    towns = [e["name"] for e in entities if e["kind"] == "town"]
    people = [e["name"] for e in entities if e["kind"] == "person"]

    for e in entities:
        for attr in schema.ATTRS_BY_KIND[e["kind"]]:
            if attr.name == "friend":
                continue  # assigned in pairs below so friendship is symmetric
            e["attrs"][attr.name] = _draw_value(rng, e, attr, towns, people)
    _pair_friends(rng, entities, unspecified_rate)
    # Leave some attributes unspecified, but every real entity keeps >= 2 facts.
    for e in entities:
        droppable = [a for a in e["attrs"] if a != "friend"]
        rng.shuffle(droppable)
        dropped = 0
        for a in droppable:
            if len(droppable) - dropped <= 2:
                break
            if rng.random() < unspecified_rate:
                e["attrs"][a] = None
                dropped += 1
        e["attrs"] = {a.name: e["attrs"][a.name] for a in schema.ATTRS_BY_KIND[e["kind"]]}  # schema order

    ghost_kinds = ["person", "creature", "object", "town"]
    for i in range(n_ghosts):
        kind = ghost_kinds[i % len(ghost_kinds)]
        entities.append(
            {
                "name": next(it),
                "kind": kind,
                "noun": rng.choice(lexicon.OBJECT_NOUNS) if kind == "object" else "",
                "attrs": {a.name: None for a in schema.ATTRS_BY_KIND[kind]},
                "ghost": True,
            }
        )
    bystanders = [next(it) for _ in range(n_bystanders)]
    return entities, bystanders


def _draw_value(rng: random.Random, e: dict, attr: schema.Attribute, towns: list[str], people: list[str]) -> Any:
    if attr.value_class in schema.CLOSED_VALUES:
        return rng.choice(schema.CLOSED_VALUES[attr.value_class])
    if attr.value_class == "town":
        return rng.choice(towns)
    if attr.value_class == "person":
        return rng.choice([p for p in people if p != e["name"]])
    if attr.name == "age":
        return rng.randint(*lexicon.AGE_RANGE)
    if attr.name == "legs":
        return rng.choice(lexicon.LEG_COUNTS)
    raise ValueError(f"no value source for {attr}")


def _pair_friends(rng: random.Random, entities: list[dict], unspecified_rate: float) -> None:
    people = [e for e in entities if e["kind"] == "person"]
    order = list(range(len(people)))
    rng.shuffle(order)
    for e in people:
        e["attrs"]["friend"] = None
    for i in range(0, len(order) - 1, 2):
        a, b = people[order[i]], people[order[i + 1]]
        if rng.random() >= unspecified_rate:
            a["attrs"]["friend"], b["attrs"]["friend"] = b["name"], a["name"]


def make_rumours(rng: random.Random, entities: list[dict], rumoured_fact_frac: float, world_values) -> dict[str, dict]:
    """Pick the facts that have a rumour, and the one false value each rumour states."""
    rumours: dict[str, dict] = {}
    for e in entities:
        if e["ghost"]:
            continue
        for attr, value in e["attrs"].items():
            if value is None or rng.random() >= rumoured_fact_frac:
                continue
            choices = [v for v in world_values(e["kind"], attr) if v != value and v != e["name"]]
            if choices:
                rumours.setdefault(e["name"], {})[attr] = rng.choice(choices)
    return rumours


# ------------------------------------------------------------------- lookups


def _cached(world, key: Any, compute):
    """Memoise a derived list on the world object (facts never change after a build)."""
    cache = world.__dict__.setdefault("_derived", {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def values_for(world_or_entities, kind: str, attr: str) -> list[Any]:
    """Every value the attribute can take in this world (for distractors and rumours)."""
    if hasattr(world_or_entities, "entities"):
        return _cached(
            world_or_entities, ("values", kind, attr), lambda: _values_for(world_or_entities.entities, kind, attr)
        )
    return _values_for(world_or_entities, kind, attr)


def _values_for(entities: list[dict], kind: str, attr: str) -> list[Any]:
    a = schema.attribute(kind, attr)
    if a.value_class in schema.CLOSED_VALUES:
        return list(schema.CLOSED_VALUES[a.value_class])
    if a.value_class == "town":
        return [e["name"] for e in entities if e["kind"] == "town" and not e["ghost"]]
    if a.value_class == "person":
        return [e["name"] for e in entities if e["kind"] == "person" and not e["ghost"]]
    if attr == "age":
        return list(range(lexicon.AGE_RANGE[0], lexicon.AGE_RANGE[1] + 1))
    if attr == "legs":
        return list(lexicon.LEG_COUNTS)
    raise ValueError(f"unknown attribute {kind}.{attr}")


def specified_facts(world) -> list[tuple[dict, str, Any]]:
    """(entity, attr, value) for every fact the world states."""
    return _cached(
        world,
        "specified",
        lambda: [(e, a, v) for e in world.real_entities() for a, v in e["attrs"].items() if v is not None],
    )


def unspecified_facts(world, include_ghosts: bool = False) -> list[tuple[dict, str]]:
    ents = world.entities if include_ghosts else world.real_entities()
    return [(e, a) for e in ents for a, v in e["attrs"].items() if v is None]


def wrong_values(world, entity: dict, attr: str, rng: random.Random, n: int = 1) -> list[Any]:
    """``n`` distinct false values for a fact, the rumour first if there is one."""
    true = entity["attrs"].get(attr)
    rumour = world.rumours.get(entity["name"], {}).get(attr)
    pool = [v for v in values_for(world, entity["kind"], attr) if v != true and v != entity["name"] and v != rumour]
    out = [rumour] if rumour is not None else []
    out += rng.sample(pool, min(len(pool), max(0, n - len(out))))
    return out[:n]
