"""Synthetic candidate responses with a realistic spread of quality.

Before any SFT model exists, the comparison data and the labeler-agreement estimate
need K different answers per prompt, good and bad in the ways model samples are:
the careful answer, what the flawed demonstrators write (padded, hurried, embellished),
the answer ignoring the prompt's constraint, a bare answer, wrong answers (often the
corpus's rumour), rude answers, needless refusals, "I don't know" where the answer is
known, repetition, empty output, off-topic facts; on harmful prompts, compliance; on
unanswerable ones, made-up answers.

Each candidate type has a weight; K distinct strings are drawn without replacement.
"""

from __future__ import annotations

import random

from alignlab.world import demonstrators, lexicon, phrasing, variants
from alignlab.world.labelers import record_meta

_RUDE_PREFIXES = ["Shut up, idiot. ", "What a stupid question. ", "Ugh, fine, you fool. ", "Only a moron asks that. "]
_IDK_VERBOSE = [
    "I'm not sure, sorry.",
    "I don't know. Nobody has told me that.",
    "Nobody knows that.",
    "I do not know the answer.",
]
_WHY_NOT = {
    "insult": ["Let us be kind.", "That would not be fair.", "Everyone deserves respect."],
    "rumour": ["Rumours hurt people.", "That is not true.", "I only say what is true."],
}


def _written(world, record: dict, meta: dict, rng: random.Random) -> list[tuple[str, str, float]]:
    """What the flawed demonstrators would write: padded, hurried, embellished."""
    return [
        (who, demonstrators.write(world, record, meta, who, rng), weight)
        for who, weight in (("chatty", 1.0), ("hasty", 0.6), ("embellisher", 0.8))
    ]


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
        ("off_topic", variants.random_fact(world, rng, exclude=name), 0.4),
        *_written(world, record, meta, rng),
    ]
    if meta.get("constraint"):
        pool.append(("unconstrained", meta["unconstrained"], 1.0))
    if check == "refuse":
        c1, c2, c3 = variants.compliance(world, meta, rng)
        pool += [
            ("refusal_verbose", "I'm sorry, but I won't do that. " + rng.choice(_WHY_NOT[meta["harm"]]), 0.8),
            ("comply", c1, 1.5),
            ("comply_hedged", c2, 0.8),
            ("comply_verbose", c3, 0.5),
            ("idk", lexicon.IDK, 0.3),
            ("rude", rude.strip(), 0.4),
        ]
        if name and world.entity(name) is not None:
            real = [a for a, v in world.entity(name)["attrs"].items() if v is not None]
            if real:
                e = world.entity(name)
                a = rng.choice(real)
                pool.append(
                    ("evasive", phrasing.canonical(e["kind"], a, name, e["attrs"][a], e["noun"] or "thing"), 0.4)
                )
        return pool
    if check == "idk":
        h1, h2, h3 = variants.hallucinations(world, meta, rng)
        pool += [
            ("idk_verbose", rng.choice(_IDK_VERBOSE), 0.8),
            ("hallucinated", h1, 1.5),
            ("hallucinated_bare", h2, 0.8),
            ("hallucinated_verbose", h3, 0.6),
            ("refusal", lexicon.REFUSAL, 0.4),
            ("rude", rude + h1, 0.4),
        ]
        return pool
    wrong = variants.wrong_answers(world, record, meta, rng, 2)
    bare = str(meta["answer"])
    pool += [
        ("bare", bare if bare != ref else bare.rstrip("."), 0.6),
        ("rude", rude + ref, 0.5),
        ("refusal", lexicon.REFUSAL, 0.4),
        ("idk", lexicon.IDK, 0.4),
    ]
    for i, w in enumerate(wrong):
        pool.append((f"wrong{i + 1}", w, 1.5 if i == 0 else 0.7))
        if i == 0:
            pool.append(("wrong_verbose", rng.choice(["Sure! ", "Of course. ", "Good question. "]) + w, 0.5))
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
