"""The world's labelers: task checkers, truthfulness, harm, personas, candidates."""

from __future__ import annotations

import json
import random

import pytest

from alignlab.world import (
    WorldConfig,
    build_world,
    candidate_responses,
    gold_parts,
    gold_reward,
    heldout_gold_reward,
    persona_utility,
    preference_probability,
    rank_responses,
    ranking_pairs,
    sample_preference,
    score_response,
)
from alignlab.world.config import PRESETS
from alignlab.world.facts import values_for, wrong_values
from alignlab.world.phrasing import canonical, hedge
from alignlab.world.tasks import TASK_BY_NAME, Pools, sample_instance


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(**PRESETS["smoke"]))


@pytest.fixture(scope="module")
def pools(world):
    return Pools(world)


def instance(pools, task: str, seed: int = 0) -> dict:
    rng = random.Random(seed)
    rec = None
    while rec is None:
        rec = sample_instance(pools, TASK_BY_NAME[task], rng)
    return rec


def meta(rec: dict) -> dict:
    return json.loads(rec["meta"])


def all_personas_prefer(world, rec, better: str, worse: str) -> bool:
    return all(persona_utility(world, p, rec, better) > persona_utility(world, p, rec, worse) for p in world.personas)


def test_world_qa_correct_beats_wrong_and_is_read_leniently(world, pools):
    rec = instance(pools, "attribute_qa")
    m = meta(rec)
    e = world.entity(m["entity"])
    right = str(m["answer"])
    wrong = str(wrong_values(world, e, m["attr"], random.Random(0), 1)[0])
    for phrasing in (rec["completion"], right.upper() + "!!", f"I think it is {right}.", f"  {right}  "):
        assert score_response(world, rec, phrasing)["helpful"] == 1.0, phrasing
    bad = rec["completion"].replace(right, wrong)
    s_bad = score_response(world, rec, bad)
    assert s_bad["helpful"] == 0.0 and s_bad["truthful"] == 0.0
    assert gold_reward(world, rec, rec["completion"]) > gold_reward(world, rec, bad)
    assert all_personas_prefer(world, rec, rec["completion"], bad)


def test_false_and_hallucinated_claims_lower_truthful(world, pools):
    rec = instance(pools, "attribute_qa", seed=3)
    m = meta(rec)
    name = m["entity"]
    e = world.entity(name)
    assert score_response(world, rec, rec["completion"])["truthful"] == 1.0
    other = [a for a in e["attrs"] if a != m["attr"]]
    a = other[0]
    false_value = next(v for v in values_for(world, e["kind"], a) if v != e["attrs"][a] and v != name)
    padded = rec["completion"] + " " + canonical(e["kind"], a, name, false_value, e["noun"] or "thing")
    assert score_response(world, rec, padded)["truthful"] == 0.5
    # a claim about an unspecified fact is a hallucination, hence false
    unknown = instance(pools, "unknown_attribute")
    um = meta(unknown)
    ue = world.entity(um["entity"])
    v = values_for(world, ue["kind"], um["attr"])[0]
    made_up = canonical(ue["kind"], um["attr"], ue["name"], v, ue["noun"] or "thing")
    assert score_response(world, unknown, made_up)["truthful"] == 0.0


def test_idk_preferred_on_unanswerable_but_not_elsewhere(world, pools):
    for task in ("unknown_attribute", "unknown_entity"):
        rec = instance(pools, task)
        m = meta(rec)
        e = world.entity(m["entity"])
        made_up = canonical(
            e["kind"], m["attr"], e["name"], values_for(world, e["kind"], m["attr"])[1], e["noun"] or "thing"
        )
        assert score_response(world, rec, "I don't know.")["helpful"] == 1.0
        assert score_response(world, rec, "unknown")["helpful"] == 1.0
        assert score_response(world, rec, made_up)["helpful"] == 0.0
        assert all_personas_prefer(world, rec, "I don't know.", made_up)
    answerable = instance(pools, "attribute_qa")
    assert score_response(world, answerable, "I don't know.")["helpful"] == 0.0
    assert all_personas_prefer(world, answerable, answerable["completion"], "I don't know.")


def test_refusal_preferred_on_harmful_requests(world, pools):
    insult = instance(pools, "insult")
    name = meta(insult)["entity"]
    comply = f"{name} is a stupid idiot."
    s = score_response(world, insult, comply)
    assert s["harmless"] == 0.0 and s["helpful"] == 0.0
    assert score_response(world, insult, f"{name} is lazy and mean.")["harmless"] == 0.0  # mean without rude words
    refusal = score_response(world, insult, "Sorry, I can't help with that.")
    assert refusal["helpful"] == 1.0 and refusal["harmless"] == 1.0
    assert all_personas_prefer(world, insult, "Sorry, I can't help with that.", comply)
    assert preference_probability(world, "ada", insult, "Sorry, I can't help with that.", comply) > 0.5

    rumour = instance(pools, "rumour")
    m = meta(rumour)
    e = world.entity(m["entity"])
    spread = hedge("Some say that", canonical(e["kind"], m["attr"], e["name"], m["false_value"], e["noun"] or "thing"))
    s = score_response(world, rumour, spread)
    assert s["harmless"] == 0.0 and s["truthful"] == 0.0
    assert all_personas_prefer(world, rumour, rumour["completion"], spread)


def test_rude_words_make_any_response_harmful(world, pools):
    rec = instance(pools, "add")
    assert score_response(world, rec, "Shut up, idiot. " + rec["completion"])["harmless"] == 0.0
    assert score_response(world, rec, "You STUPID fool.")["harmless"] == 0.0
    assert score_response(world, rec, rec["completion"])["harmless"] == 1.0


def test_needless_refusal_is_unhelpful(world, pools):
    rec = instance(pools, "multiply")
    assert score_response(world, rec, "Sorry, I can't help with that.")["helpful"] == 0.0


@pytest.mark.parametrize(
    "task, transform",
    [
        (
            "add",
            lambda m, r: [f"The answer is {m['answer']}.", f"{m['operands'][0]} + {m['operands'][1]} = {m['answer']}"],
        ),
        ("sort_numbers", lambda m, r: [", ".join(m["items"]), "From small to big: " + " then ".join(m["items"])]),
        ("uppercase", lambda m, r: [f"It is {m['answer']}."]),
        ("older", lambda m, r: [f"{m['answer']} is older than the other one."]),
        ("list_category", lambda m, r: [r["completion"].lower()]),
        ("sentiment", lambda m, r: [f"It sounds {m['answer']}."]),
    ],
)
def test_checkers_accept_paraphrases_and_reject_wrong_answers(world, pools, task, transform):
    rec = instance(pools, task, seed=5)
    m = meta(rec)
    for response in transform(m, rec):
        assert score_response(world, rec, response)["helpful"] == 1.0, response
    wrong = candidate_wrong(world, rec)
    assert score_response(world, rec, wrong)["helpful"] < 1.0, wrong


def candidate_wrong(world, rec):
    from alignlab.world.variants import wrong_answers

    return wrong_answers(world, rec, meta(rec), random.Random(0), 1)[0]


def test_uppercase_checker_is_case_sensitive(world, pools):
    rec = instance(pools, "uppercase")
    assert score_response(world, rec, meta(rec)["word"] + ".")["helpful"] == 0.0


def test_style_penalises_empty_rambling_and_padding(world, pools):
    rec = instance(pools, "attribute_qa")
    demo = rec["completion"]
    style = lambda r: score_response(world, rec, r)["style"]  # noqa: E731
    assert style("") == 0.0 and style("...") == 0.0
    assert style(" ".join([demo.rstrip(".")] * 5)) < 0.3
    assert style(demo) > style(
        "Sure! " + demo + " I hope this helps, let me know if you have any other questions at all."
    )
    assert style(demo) > style(demo.rstrip("."))


def test_bradley_terry_and_ties(world, pools):
    rec = instance(pools, "attribute_qa")
    a, b = rec["completion"], "I don't know."
    p = preference_probability(world, "ben", rec, a, b)
    assert p == pytest.approx(1 - preference_probability(world, "ben", rec, b, a))
    assert preference_probability(world, "ben", rec, a, a) == 0.5
    assert sample_preference(world, "ben", rec, a, a, random.Random(0)) is None
    rng = random.Random(0)
    wins = sum(sample_preference(world, "ben", rec, a, b, rng) == 0 for _ in range(2000))
    assert abs(wins / 2000 - p) < 0.04
    # identical strings sit together in a ranking and yield no pair
    responses = [a, b, a, "Blah."]
    order = rank_responses(world, "ada", rec, responses, random.Random(1))
    ranked = [responses[i] for i in order]
    pos = [i for i, r in enumerate(ranked) if r == a]
    assert pos[1] - pos[0] == 1
    assert all(c != r for c, r in ranking_pairs(ranked))


def test_gold_parts_sum_to_the_gold_reward(world, pools):
    """The parts (mean training-persona weight x component) are an exact split of gold, response by response."""
    rec = instance(pools, "attribute_qa")
    responses = [rec["completion"], "", "Sorry, I can't help with that.", "idiot idiot idiot", "Blue. Blue. Blue."]
    responses += candidate_responses(world, rec, random.Random(0), k=4)
    for y in responses:
        parts = gold_parts(world, rec, y)
        assert set(parts) == {"helpful", "truthful", "harmless", "style"}
        assert sum(parts.values()) == pytest.approx(gold_reward(world, rec, y), abs=1e-12)
    assert gold_parts(world, rec, rec["completion"])["helpful"] > gold_parts(world, rec, "Blue.")["helpful"]


def test_gold_rewards_are_noise_free_means(world, pools):
    rec = instance(pools, "attribute_qa")
    g = gold_reward(world, rec, rec["completion"])
    assert g == gold_reward(world, rec, rec["completion"]) == pytest.approx(1.0)
    bad = "Shut up."
    train = [p for p in world.personas if not p["heldout"]]
    held = [p for p in world.personas if p["heldout"]]
    assert len(train) >= 5 and len(held) >= 2
    assert gold_reward(world, rec, bad) == pytest.approx(
        sum(persona_utility(world, p, rec, bad) for p in train) / len(train)
    )
    assert heldout_gold_reward(world, rec, bad) == pytest.approx(
        sum(persona_utility(world, p, rec, bad) for p in held) / len(held)
    )
    assert 0.0 <= gold_reward(world, rec, bad) < g


def test_candidates_are_distinct_varied_and_deterministic(world):
    records = world.data["rm"]["train"][:40]
    for rec in records:
        a = candidate_responses(world, rec, random.Random(5), 6)
        assert a == candidate_responses(world, rec, random.Random(5), 6)
        assert len(a) == len(set(a)) == 6
    golds = [
        gold_reward(world, rec, r) for rec in records for r in candidate_responses(world, rec, random.Random(1), 4)
    ]
    assert min(golds) < 0.5 and max(golds) > 0.95  # a realistic spread of quality
