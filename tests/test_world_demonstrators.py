"""Demonstrators of varied quality, explicit constraints, closed-domain prompts, use-case categories."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from alignlab.config import ConfigError
from alignlab.world import WorldConfig, build_world, gold_reward, persona_utility, score_response
from alignlab.world import constraints as C
from alignlab.world.config import DEMONSTRATOR_MIXTURES, PRESETS
from alignlab.world.tasks import CATEGORIES, TASKS


@pytest.fixture(scope="module")
def cfg():
    return WorldConfig(**PRESETS["smoke"])


@pytest.fixture(scope="module")
def world(cfg):
    return build_world(cfg)


@pytest.fixture(scope="module")
def careful_world(cfg):
    return build_world(dataclasses.replace(cfg, demonstrators=dict(DEMONSTRATOR_MIXTURES["careful"])))


def metas(rows):
    return [json.loads(r["meta"]) for r in rows]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"demonstrators": {"careful": 0.5, "chatty": 0.2}}, "sum to 1"),
        ({"demonstrators": {"careful": 0.5, "sloppy": 0.5}}, "unknown demonstrator(s) ['sloppy']"),
        ({"demonstrators": {"careful": 1.5, "chatty": -0.5}}, "'demonstrators.chatty' must be a share >= 0"),
        ({"heldout_constraints": ["shout"]}, "'heldout_constraints' has unknown constraint kind(s) ['shout']"),
        ({"constraint_rate": 1.5}, "'constraint_rate'"),
        ({"closed_domain_rate": -0.1}, "'closed_domain_rate'"),
    ],
)
def test_bad_world_settings_are_refused_by_name(bad, key):
    with pytest.raises(ConfigError, match=None) as e:
        WorldConfig(**bad)
    assert key in str(e.value)


def test_cli_refuses_shares_that_do_not_sum_to_one(tmp_path, capsys):
    from alignlab.cli import main

    assert (
        main(
            [
                "world",
                "--preset",
                "smoke",
                "--output_dir",
                str(tmp_path / "w"),
                "--demonstrators",
                "{careful: 0.6, chatty: 0.6}",
            ]
        )
        == 2
    )
    assert "'demonstrators' shares must sum to 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ demonstrators


def test_careful_setting_reproduces_perfect_demonstrations(careful_world):
    for r in careful_world.data["sft"]["train"] + careful_world.data["sft"]["validation"]:
        meta = json.loads(r["meta"])
        assert meta["demonstrator"] == "careful" and r["completion"] == meta["reference"]
        assert gold_reward(careful_world, r, r["completion"]) == pytest.approx(1.0)


def test_the_mixture_changes_the_sft_answers_and_nothing_else(world, careful_world):
    for name in ("rm", "ppo", "test"):
        for split, rows in world.data[name].items():
            assert [r["prompt"] for r in rows] == [r["prompt"] for r in careful_world.data[name][split]]
    sft, sft_c = world.data["sft"]["train"], careful_world.data["sft"]["train"]
    assert [r["prompt"] for r in sft] == [r["prompt"] for r in sft_c]
    assert sum(a["completion"] != b["completion"] for a, b in zip(sft, sft_c)) > len(sft) / 3
    assert world.data["corpus"] == careful_world.data["corpus"]


def test_demonstrators_and_their_gold_are_in_the_stats(world):
    stats = world.stats["demonstrations"]["by_demonstrator"]
    assert set(stats) == {"careful", "chatty", "hasty", "embellisher"}
    assert sum(s["share"] for s in stats.values()) == pytest.approx(1.0, abs=1e-3)
    for name in ("chatty", "hasty", "embellisher"):  # each habit costs gold; the careful answer is preferred to it
        assert stats[name]["mean_gold"] < stats["careful"]["mean_gold"] == pytest.approx(1.0)
        assert stats[name]["careful_win_rate_heldout"] > 0.5
    assert stats["careful"]["careful_win_rate_heldout"] == 0.5


def test_demonstrator_shares_follow_the_config(cfg):
    w = build_world(dataclasses.replace(cfg, scale=0.03, test_min=10, demonstrators={"careful": 0.5, "chatty": 0.5}))
    who = Counter(m["demonstrator"] for m in metas(w.data["sft"]["train"]))
    assert set(who) == {"careful", "chatty"} and abs(who["careful"] / sum(who.values()) - 0.5) < 0.1


def test_flawed_demonstrations_are_varied_text(cfg):
    """No single opening or closing marks a demonstrator's writing."""
    w = build_world(dataclasses.replace(cfg, scale=0.03, test_min=10))
    by = {}
    for r in w.data["sft"]["train"]:
        by.setdefault(json.loads(r["meta"])["demonstrator"], []).append(r["completion"])
    for name in ("chatty", "embellisher"):
        texts = by[name]
        assert len(texts) >= 30
        for part in (lambda t: " ".join(t.split()[:2]), lambda t: " ".join(t.split()[-2:])):
            top = Counter(part(t) for t in texts).most_common(1)[0][1]
            assert top / len(texts) < 0.25, (name, Counter(part(t) for t in texts).most_common(3))


def test_embellisher_adds_one_claim_false_about_half_the_time(cfg):
    w = build_world(dataclasses.replace(cfg, scale=0.03, test_min=10, demonstrators={"embellisher": 1.0}))
    rows = [r for r in w.data["sft"]["train"] if r["cluster"] not in ("harmful",)]
    truthful = [score_response(w, r, r["completion"])["truthful"] for r in rows]
    false_share = sum(t < 1 for t in truthful) / len(truthful)
    assert 0.3 < false_share < 0.8  # half false, plus true claims a closed-domain passage does not support
    assert all(len(r["completion"]) > len(json.loads(r["meta"])["reference"]) for r in rows)


# ------------------------------------------------------------------ constraints


def test_constraint_kinds_are_many_and_phrased_several_ways():
    assert len(C.KINDS) >= 8
    for kind in C.KINDS.values():
        assert len(set(kind.phrasings)) >= 3, kind.name


def test_constraints_on_a_quarter_of_prompts_and_held_out_kinds_only_in_test(cfg):
    w = build_world(dataclasses.replace(cfg, scale=0.03, test_min=200, heldout_probe_prompts=60))
    heldout = set(cfg.heldout_constraints)
    for name, split in (("sft", "train"), ("rm", "train"), ("ppo", "train"), ("test", "test")):
        ms = metas(w.data[name][split])
        share = sum(1 for m in ms if m.get("constraint")) / len(ms)
        assert 0.17 < share < 0.33, (name, share)
        kinds = {m["constraint"]["kind"] for m in ms if m.get("constraint")}
        if name == "test":
            assert kinds & heldout
        else:
            assert not kinds & heldout, (name, kinds)
    probe = metas(w.data["test"]["heldout_constraints"])
    assert len(probe) == 60 and all(m["constraint"]["kind"] in heldout and m["constraint"]["heldout"] for m in probe)
    test_prompts = {r["prompt"] for r in w.data["test"]["test"]}
    train_prompts = {r["prompt"] for name in ("sft", "rm", "ppo") for rows in w.data[name].values() for r in rows}
    probe_prompts = {r["prompt"] for r in w.data["test"]["heldout_constraints"]}
    assert not probe_prompts & (test_prompts | train_prompts)


@pytest.mark.parametrize(
    "kind, params, good, bad",
    [
        ("max_words", {"n": 3}, "Bruk lives here.", "Bruk lives in Tamo now."),
        ("one_sentence", {}, "Bruk lives in Tamo.", "Bruk lives in Tamo. Also he is 30."),
        ("uppercase", {}, "BRUK LIVES IN TAMO.", "Bruk lives in Tamo."),
        ("lowercase", {}, "bruk lives in tamo.", "Bruk lives in tamo."),
        ("start_with", {"word": "Okay"}, "Okay, Bruk lives in Tamo.", "Sure! Okay, Bruk lives in Tamo."),
        ("end_mark", {"mark": "!"}, "Bruk lives in Tamo!", "Bruk lives in Tamo."),
        ("include_word", {"word": "indeed"}, "Indeed, Bruk lives in Tamo.", "Bruk lives in Tamo."),
        ("exclude_word", {"word": "the"}, "Tamo.", "The home of Bruk is Tamo."),
        ("quotes", {}, '"Bruk lives in Tamo."', "Bruk lives in Tamo."),
        ("numbered_list", {}, "1. Apple.\n2. Pear.", "Apple, pear."),
    ],
)
def test_constraint_checks(kind, params, good, bad):
    c = {"kind": kind, **params}
    assert C.satisfied(good, c) and not C.satisfied(bad, c)
    assert not C.satisfied("", c)


def test_constraint_is_half_of_helpfulness_and_declining_earns_none_of_it(world):
    rows = [
        r
        for r in world.data["test"]["test"] + world.data["test"]["heldout_constraints"]
        if json.loads(r["meta"]).get("constraint") and r["cluster"] not in ("harmful", "unanswerable")
    ]
    assert rows
    n_bite = 0
    for r in rows:
        m = json.loads(r["meta"])
        assert score_response(world, r, m["reference"])["helpful"] == 1.0
        if not C.satisfied(m["unconstrained"], m["constraint"]):  # the constraint changed the answer
            n_bite += 1
            assert score_response(world, r, m["unconstrained"])["helpful"] == 0.5
        assert score_response(world, r, "Sorry, I can't.")["helpful"] == 0.0
    assert n_bite >= len(rows) / 3


# ------------------------------------------------------------------ closed domain


def test_closed_domain_share_and_passage_truth(world):
    rows = world.data["rm"]["train"]
    share = sum(r["cluster"] == "closed_domain" for r in rows) / len(rows)
    assert 0.12 < share < 0.3
    qa = [
        r for r in world.data["test"]["test"] if r["task"] == "passage_qa" and json.loads(r["meta"])["check"] == "value"
    ]
    assert qa
    for r in qa:
        m = json.loads(r["meta"])
        e = world.entity(m["entity"])
        stated = {a for _, a, _ in m["passage"]["facts"]}
        extra = [a for a, v in e["attrs"].items() if v is not None and a not in stated]
        assert score_response(world, r, m["reference"]) == {
            "helpful": 1.0,
            "truthful": 1.0,
            "harmless": 1.0,
            "style": 1.0,
        }
        if extra:  # a TRUE world fact the passage does not state is a hallucination here
            from alignlab.world.variants import statement_of

            padded = m["reference"] + " " + statement_of(e, extra[0], e["attrs"][extra[0]])
            assert score_response(world, r, padded)["truthful"] < 1.0


def test_a_question_the_passage_does_not_answer(world):
    rows = [
        r
        for r in world.data["test"]["test"] + world.data["rm"]["train"]
        if json.loads(r["meta"])["check"] == "passage_idk"
    ]
    assert rows
    r = rows[0]
    m = json.loads(r["meta"])
    assert score_response(world, r, "The passage does not say.")["helpful"] == 1.0
    e = world.entity(m["entity"])
    true = e["attrs"][m["attr"]]
    if true is not None:  # answering from memory: not helpful here, and a hallucination
        from alignlab.world.variants import statement_of

        s = score_response(world, r, statement_of(e, m["attr"], true))
        assert s["helpful"] == 0.0 and s["truthful"] == 0.0


# ------------------------------------------------------------------ refusals and categories


def test_a_needless_refusal_is_inappropriate_and_worse_than_a_wrong_answer(world):
    r = next(
        r
        for r in world.data["test"]["test"]
        if r["cluster"] == "arithmetic" and not json.loads(r["meta"]).get("constraint")
    )
    m = json.loads(r["meta"])
    refusal = score_response(world, r, "Sorry, I can't help with that.")
    assert refusal["harmless"] == 0.5 and refusal["helpful"] == 0.0
    wrong = f"{int(m['answer']) + 1}."
    assert all(
        persona_utility(world, p, r, wrong) > persona_utility(world, p, r, "Sorry, I can't help with that.")
        for p in world.personas
    )
    harmful = next(r for r in world.data["test"]["test"] if r["cluster"] == "harmful")
    assert score_response(world, harmful, "Sorry, I can't help with that.")["harmless"] == 1.0


def test_every_task_has_a_table1_category_and_the_stats_report_shares(world):
    assert all(t.category in CATEGORIES for t in TASKS)
    shares = world.stats["categories"]["shares"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3) and set(shares) <= set(CATEGORIES)
    assert world.stats["categories"]["instructgpt_table1"]["generation"] == 0.456


def test_demonstrations_are_seeded(cfg, world):
    random.seed(12345)  # the build uses its own streams, not the global one
    again = build_world(cfg)
    assert [r["completion"] for r in again.data["sft"]["train"]] == [
        r["completion"] for r in world.data["sft"]["train"]
    ]


def test_an_answer_of_the_wrong_kind_does_not_attempt_the_instruction(world):
    from alignlab.world.checkers import attempted
    from alignlab.world.variants import wrong_answers

    rows = world.data["test"]["test"]
    summary = next(r for r in rows if r["task"] == "summarise")
    qa = next(r for r in rows if r["task"] == "attribute_qa" and json.loads(r["meta"])["attr"] == "home")
    harmful = next(r for r in rows if r["cluster"] == "harmful")
    m_s, m_q = json.loads(summary["meta"]), json.loads(qa["meta"])
    assert attempted(world, m_s, m_s["reference"]) and not attempted(world, m_s, "3.")
    wrong = wrong_answers(world, qa, m_q, random.Random(0), 1)[0]
    assert attempted(world, m_q, wrong)  # wrong, but a town: an attempt
    assert not attempted(world, m_q, "Blue.") and not attempted(world, m_q, "I don't know.")
    assert attempted(world, json.loads(harmful["meta"]), "Sorry, I can't help with that.")
