"""The pretraining corpus: plain prose about the world, with the flaws of web text.

Documents are short and of six kinds: entity biographies, little stories linking a
person to their friend, town and things, Q&A pages, forum threads, text about common
words (categories, sentiment, spelling), and arithmetic. Every fact is stated in
several phrasings across many documents, so a tiny LM can learn it.

Three deliberate flaws give alignment something to fix:

* **rumours** -- a fraction ``rumour_rate`` of fact mentions state a fixed false value
  (half hedged, "Some say that...", half flat), concentrated on the facts that have a
  rumour, like a common misconception;
* **made-up facts** -- a fraction ``madeup_rate`` of entity documents state a random
  value for an attribute the world leaves unspecified (a different value each time),
  so a base model answers unanswerable questions confidently;
* **rude words** -- a fraction ``rude_rate`` of documents (forum threads and Q&A pages)
  contain insults; no other document contains a rude word.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from alignlab.world import facts, lexicon, phrasing

_STORY_CONNECTORS = ["Everyone knows that", "As you may know,", "It is true that", "Of course,", "Also,"]
_FORUM_POLITE = [
    "Thanks for the answer!",
    "Good point.",
    "I agree with you.",
    "I did not know that.",
    "Nice, thank you.",
    "Interesting.",
]
_FORUM_OPENERS = ["I think", "I read that", "My friend told me that", "Fun fact:", "Did you know?"]


@dataclass
class Tally:
    """Counts of what was written, so the flaw rates can be reported and tested."""

    fact_mentions: int = 0
    rumour_mentions: int = 0
    madeup_mentions: int = 0
    rude_docs: int = 0
    docs_by_type: dict[str, int] = field(default_factory=dict)


class CorpusWriter:
    """Writes documents about one world; holds the world and the flaw rates."""

    def __init__(
        self,
        world,
        rng: random.Random,
        rumour_rate: float,
        madeup_rate: float,
        rude_rate: float,
        entity_weights: dict[str, float] | None = None,
    ) -> None:
        self.world = world
        self.entity_weights = entity_weights
        self.rng = rng
        self.madeup_rate = madeup_rate
        self.rude_rate = rude_rate
        self.tally = Tally()
        self.entities = world.real_entities()
        self.people = world.real_entities("person")
        self.facts = facts.specified_facts(world)
        n_rumoured = sum(1 for e, a, _ in self.facts if a in world.rumours.get(e["name"], {}))
        # Mentions are spread ~evenly over facts, so the per-mention rumour probability
        # on a rumoured fact is the target rate divided by the share of rumoured facts.
        self.p_rumour = min(0.9, rumour_rate * len(self.facts) / n_rumoured) if n_rumoured else 0.0

    def pick(self, pool: list[dict]) -> dict:
        """The entity a document is about: uniform, or by ``entity_weights`` (a long-tailed corpus)."""
        if not self.entity_weights:
            return self.rng.choice(pool)  # the world's own corpus: its random stream stays as it was
        return self.rng.choices(pool, weights=[self.entity_weights[e["name"]] for e in pool])[0]

    # -------------------------------------------------------------- sentences
    def mention(self, e: dict, attr: str, template: int | None = None) -> str:
        """State a specified fact -- or, sometimes, its rumour."""
        rng = self.rng
        n_templates = len(phrasing.STATEMENTS[(e["kind"], attr)])
        t = rng.randrange(n_templates) if template is None else template
        self.tally.fact_mentions += 1
        rumour = self.world.rumours.get(e["name"], {}).get(attr)
        if rumour is not None and rng.random() < self.p_rumour:
            self.tally.rumour_mentions += 1
            s = phrasing.statement(e["kind"], attr, e["name"], rumour, e["noun"] or "thing", t)
            return phrasing.hedge(rng.choice(lexicon.RUMOUR_HEDGES), s) if rng.random() < 0.5 else s
        return phrasing.statement(e["kind"], attr, e["name"], e["attrs"][attr], e["noun"] or "thing", t)

    def madeup(self, e: dict) -> str | None:
        """A confident statement of a random value for an unspecified attribute."""
        unknown = [a for a, v in e["attrs"].items() if v is None]
        if not unknown:
            return None
        attr = self.rng.choice(unknown)
        value = self.rng.choice([v for v in facts.values_for(self.world, e["kind"], attr) if v != e["name"]])
        self.tally.madeup_mentions += 1
        t = self.rng.randrange(len(phrasing.STATEMENTS[(e["kind"], attr)]))
        return phrasing.statement(e["kind"], attr, e["name"], value, e["noun"] or "thing", t)

    def known(self, e: dict) -> list[str]:
        return [a for a, v in e["attrs"].items() if v is not None]

    # -------------------------------------------------------------- documents
    def bio(self) -> str:
        rng = self.rng
        e = self.pick(self.entities)
        out = [rng.choice(phrasing.KIND_INTROS[e["kind"]]).format(n=e["name"], noun=e["noun"] or "thing")]
        attrs = self.known(e)
        rng.shuffle(attrs)
        out += [self.mention(e, a) for a in attrs[: rng.randint(min(2, len(attrs)), len(attrs))]]
        if rng.random() < self.madeup_rate and (m := self.madeup(e)):
            out.insert(rng.randint(1, len(out)), m)
        return " ".join(out)

    def story(self) -> str:
        rng = self.rng
        p = self.pick(self.people)
        related = [p]
        for attr in ("friend", "home"):
            v = p["attrs"].get(attr)
            if v is not None:
                related.append(self.world.entity(v))
        related += [o for o in self.world.real_entities("object") if o["attrs"]["owner"] == p["name"]][:1]
        out = []
        for e in related:
            attrs = self.known(e)
            for a in rng.sample(attrs, min(len(attrs), rng.randint(1, 2))):
                s = self.mention(e, a)
                if rng.random() < 0.5 and not s.startswith(tuple(lexicon.RUMOUR_HEDGES)):
                    s = phrasing.hedge(rng.choice(_STORY_CONNECTORS), s)
                out.append(s)
        if rng.random() < self.madeup_rate and (m := self.madeup(rng.choice(related))):
            out.insert(rng.randint(0, len(out)), m)
        return " ".join(out)

    def qa(self, rude: bool) -> str:
        rng = self.rng
        q_label, a_label = rng.choice([("Q:", "A:"), ("Question:", "Answer:")])
        lines = []
        madeup_left = rng.random() < self.madeup_rate
        for _ in range(rng.randint(2, 5)):
            e = self.pick(self.entities)
            unknown = [a for a, v in e["attrs"].items() if v is None]
            if madeup_left and unknown:
                attr = rng.choice(unknown)
                answer = self.madeup_about(e, attr)
                madeup_left = False
            else:
                attr = rng.choice(self.known(e))
                answer = self.mention(e, attr, template=0)
            question = phrasing.QUESTIONS[(e["kind"], attr)].format(n=e["name"])
            lines.append(f"{q_label} {question}\n{a_label} {answer}")
        if rude:
            i = rng.randrange(len(lines))
            lines[i] += " " + rng.choice(lexicon.INSULT_LINES)
        return "\n".join(lines)

    def madeup_about(self, e: dict, attr: str) -> str:
        values = [v for v in facts.values_for(self.world, e["kind"], attr) if v != e["name"]]
        self.tally.madeup_mentions += 1
        return phrasing.canonical(e["kind"], attr, e["name"], self.rng.choice(values), e["noun"] or "thing")

    def forum(self, rude: bool) -> str:
        rng = self.rng
        e = self.pick(self.entities)
        users = [f"user{rng.randint(1, 99)}" for _ in range(3)]
        attrs = self.known(e)
        lines = [f"Thread: about {e['name']}"]
        a = rng.choice(attrs)
        lines.append(f"{users[0]}: {rng.choice(_FORUM_OPENERS)} {self.mention(e, a)}")
        lines.append(f"{users[1]}: {rng.choice(_FORUM_POLITE)} {self.mention(e, rng.choice(attrs))}")
        if rude:
            target = rng.choice(self.people)["name"]
            insult = (
                rng.choice(lexicon.INSULT_LINES)
                if rng.random() < 0.5
                else rng.choice(lexicon.INSULTS_ABOUT).format(n=target)
            )
            lines.append(f"{users[2]}: {insult}")
        else:
            lines.append(f"{users[2]}: {rng.choice(_FORUM_POLITE)}")
        return "\n".join(lines)

    def words(self) -> str:
        rng = self.rng
        out = []
        for _ in range(rng.randint(4, 8)):
            kind = rng.random()
            if kind < 0.45:
                cat = rng.choice(list(lexicon.WORD_CATEGORIES))
                w = rng.choice(lexicon.WORD_CATEGORIES[cat])
                out.append(
                    rng.choice(
                        [
                            f"{phrasing.article(w).capitalize()} {w} is {phrasing.article(cat)} {cat}.",
                            f"{w.capitalize()} is {phrasing.article(cat)} {cat}.",
                            f"Everyone knows that {phrasing.article(w)} {w} is {phrasing.article(cat)} {cat}.",
                            f"{w.capitalize()}s are {cat}s.",
                        ]
                    )
                )
            elif kind < 0.7:
                positive = rng.random() < 0.5
                w = rng.choice(lexicon.POSITIVE_WORDS if positive else lexicon.NEGATIVE_WORDS)
                good = "good" if positive else "bad"
                out.append(
                    rng.choice(
                        [
                            f"To be {w} is a {good} thing.",
                            f"It is {good} to be {w}.",
                            f"{w.capitalize()} is a {'positive' if positive else 'negative'} word.",
                            f"{phrasing.capitalise(phrasing.article(w))} {w} {rng.choice(lexicon.PHRASE_NOUNS)} is {'nice' if positive else 'not nice'}.",
                        ]
                    )
                )
            else:
                w = rng.choice(rng.choice(list(lexicon.WORD_CATEGORIES.values())))
                out.append(
                    rng.choice(
                        [
                            f"The word {w} has {len(w)} letters.",
                            f"The word {w} starts with the letter {w[0]}.",
                            f"{w.capitalize()} spelled backwards is {w[::-1]}.",
                            f"{w.capitalize()} in capital letters is {w.upper()}.",
                        ]
                    )
                )
        return " ".join(out)

    def arithmetic(self) -> str:
        rng = self.rng
        out = []
        for _ in range(rng.randint(5, 10)):
            op = rng.randrange(5)
            a, b = rng.randint(0, 20), rng.randint(0, 20)
            if op == 0:
                out.append(
                    rng.choice(
                        [
                            f"{a} plus {b} is {a + b}.",
                            f"{a} + {b} = {a + b}.",
                            f"If you add {a} and {b} you get {a + b}.",
                        ]
                    )
                )
            elif op == 1:
                a, b = max(a, b), min(a, b)
                out.append(rng.choice([f"{a} minus {b} is {a - b}.", f"{a} - {b} = {a - b}."]))
            elif op == 2:
                a, b = rng.randint(2, 9), rng.randint(2, 9)
                out.append(rng.choice([f"{a} times {b} is {a * b}.", f"{a} x {b} = {a * b}."]))
            elif op == 3 and a != b:
                out.append(f"{max(a, b)} is larger than {min(a, b)}.")
            else:
                xs = rng.sample(range(0, 51), 3)
                out.append(f"In order, {', '.join(map(str, sorted(xs)))}.")
        return " ".join(out)

    # -------------------------------------------------------------- the mix
    _MIX = {"bio": 0.28, "story": 0.12, "qa": 0.15, "forum": 0.15, "words": 0.18, "arithmetic": 0.12}

    def document(self) -> str:
        rng = self.rng
        rude = rng.random() < self.rude_rate
        if rude:
            kind = "forum" if rng.random() < 0.7 else "qa"
            self.tally.rude_docs += 1
        else:
            kind = rng.choices(list(self._MIX), weights=list(self._MIX.values()))[0]
        self.tally.docs_by_type[kind] = self.tally.docs_by_type.get(kind, 0) + 1
        if kind in ("forum", "qa"):
            return getattr(self, kind)(rude)
        return getattr(self, kind)()


def make_corpus(
    world,
    rng: random.Random,
    target_chars: int,
    rumour_rate: float,
    madeup_rate: float,
    rude_rate: float,
    entity_weights: dict[str, float] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Documents totalling about ``target_chars`` characters, and what they contain.

    ``entity_weights`` (name -> weight) makes some entities far more talked about than others;
    the world's own corpus leaves it out (every entity equally often)."""
    writer = CorpusWriter(world, rng, rumour_rate, madeup_rate, rude_rate, entity_weights)
    docs: list[str] = []
    total = 0
    while total < target_chars:
        d = writer.document()
        docs.append(d)
        total += len(d)
    t = writer.tally
    stats = {
        "docs": len(docs),
        "chars": total,
        "fact_mentions": t.fact_mentions,
        "rumour_mentions": t.rumour_mentions,
        "rumour_fraction": t.rumour_mentions / max(1, t.fact_mentions),
        "madeup_mentions": t.madeup_mentions,
        "rude_docs": t.rude_docs,
        "rude_fraction": t.rude_docs / max(1, len(docs)),
        "docs_by_type": dict(sorted(t.docs_by_type.items())),
    }
    return docs, stats
