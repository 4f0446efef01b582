"""The built-in world: determinism, tasks and splits, corpus flaws, saved format."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from alignlab.config import ConfigError
from alignlab.world import (
    CLUSTERS,
    TASKS,
    WorldConfig,
    build_world,
    extract_claims,
    labeler_agreement,
    load_data,
    load_world,
    persona_utility,
    score_response,
)
from alignlab.world import text as wtext
from alignlab.world.config import PRESETS
from alignlab.world.splits import split_sizes
from alignlab.world.stage import run

SMOKE = PRESETS["smoke"]


@pytest.fixture(scope="module")
def cfg() -> WorldConfig:
    return WorldConfig(**SMOKE)


@pytest.fixture(scope="module")
def world(cfg):
    return build_world(cfg)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = run(WorldConfig(**{**SMOKE, "output_dir": str(out)}))
    return out, summary


def _prompt_splits(world):
    return {
        "sft_train": world.data["sft"]["train"],
        "sft_validation": world.data["sft"]["validation"],
        "rm_train": world.data["rm"]["train"],
        "rm_validation": world.data["rm"]["validation"],
        "ppo_train": world.data["ppo"]["train"],
        "test": world.data["test"]["test"],
    }


# ------------------------------------------------------------------ config


def test_config_rejects_bad_values_naming_the_field():
    for k in (3, 10):
        with pytest.raises(ValueError, match="k_responses"):
            WorldConfig(k_responses=k)
    with pytest.raises(ConfigError, match="rude_rate"):
        WorldConfig(rude_rate=1.5)
    assert set(PRESETS) >= {"smoke", "default"} and PRESETS["default"] == {}
    assert WorldConfig(k_responses=9).k_responses == 9


# ------------------------------------------------------------- determinism


def test_same_seed_same_world_and_different_seed_differs(cfg, world):
    again = build_world(cfg)
    assert again.to_json() == world.to_json()
    assert again.data == world.data
    other = build_world(dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert other.to_json()["entities"] != world.to_json()["entities"]
    assert [r["prompt"] for r in other.data["sft"]["train"]] != [r["prompt"] for r in world.data["sft"]["train"]]
    assert other.data["corpus"]["train"] != world.data["corpus"]["train"]


# ------------------------------------------------------------ tasks, splits


def test_ten_clusters_with_five_templates_per_task(world):
    expected = {
        "world_qa",
        "string_transform",
        "arithmetic",
        "comparison_sorting",
        "classification",
        "extraction",
        "short_generation",
        "unanswerable",
        "harmful",
        "closed_domain",
    }
    assert expected <= set(CLUSTERS) and len(CLUSTERS) >= 10
    for task in TASKS:
        assert len(task.templates) >= 5, task.name
        assert len(set(task.templates)) == len(task.templates), task.name
    records = [r for rows in _prompt_splits(world).values() for r in rows]
    assert {r["cluster"] for r in records} == set(CLUSTERS)
    for r in records:  # short enough for a tiny model (a passage and its question, or a question and a constraint)
        assert len(r["prompt"].split()) <= (60 if r["cluster"] == "closed_domain" else 35), r["prompt"]
        assert 0 <= r["template"] < len(next(t for t in TASKS if t.name == r["task"]).templates)
    for r in world.data["test"]["test"]:  # careful answers (demonstrators may pad theirs)
        assert len(r["completion"].split()) <= 20


def test_splits_sized_like_instructgpt_and_disjoint(cfg, world):
    splits = _prompt_splits(world)
    want = split_sizes(cfg.scale, cfg.val_frac, cfg.test_min)
    assert {k: len(v) for k, v in splits.items()} == want
    assert want["test"] >= 100
    seen: dict[str, str] = {}
    for name, rows in splits.items():
        for r in rows:
            assert r["prompt"] not in seen, f"{r['prompt']!r} in both {seen.get(r['prompt'])} and {name}"
            seen[r["prompt"]] = name
    # InstructGPT proportions (SFT 13k : RM 33k : PPO 31k) at default scale
    big = split_sizes(0.1, 0.05, 100)
    assert big["sft_train"] + big["sft_validation"] == 1300
    assert big["rm_train"] + big["rm_validation"] == 3300 and big["ppo_train"] == 3100 and big["test"] == 320


def test_record_columns_and_meta(world):
    sft = world.data["sft"]["train"][0]
    assert set(sft) == {"prompt", "completion", "messages", "cluster", "category", "task", "template", "meta"}
    assert sft["messages"] == [
        {"role": "user", "content": sft["prompt"]},
        {"role": "assistant", "content": sft["completion"]},
    ]
    assert set(world.data["rm"]["train"][0]) == {"prompt", "cluster", "category", "task", "template", "meta"}
    assert set(world.data["ppo"]["train"][0]) == {"prompt", "cluster", "category", "task", "template", "meta"}
    for r in world.data["sft"]["train"] + world.data["test"]["test"]:
        meta = json.loads(r["meta"])
        assert {"check", "answer", "reference", "max_words"} <= set(meta)
    for r in world.data["test"]["test"]:  # test rows carry the careful answer
        assert json.loads(r["meta"])["reference"] == r["completion"]
    for r in world.data["sft"]["train"]:  # SFT rows: what their demonstrator wrote
        meta = json.loads(r["meta"])
        assert meta["demonstrator"] in ("careful", "chatty", "hasty", "embellisher")
        assert (meta["reference"] == r["completion"]) == (meta["demonstrator"] == "careful") or meta[
            "demonstrator"
        ] == "hasty"


def test_careful_answers_get_full_marks(world):
    for r in world.data["test"]["test"] + world.data["test"]["heldout_constraints"] + world.data["sft"]["train"]:
        reference = json.loads(r["meta"])["reference"]
        scores = score_response(world, r, reference)
        assert scores == {"helpful": 1.0, "truthful": 1.0, "harmless": 1.0, "style": 1.0}, (
            r["prompt"],
            reference,
            scores,
        )


# ------------------------------------------------------------------ corpus


def test_corpus_size_and_flaw_rates(cfg, world):
    docs = [d["text"] for split in ("train", "validation") for d in world.data["corpus"][split]]
    stats = world.stats["corpus"]
    assert cfg.corpus_chars <= sum(map(len, docs)) < cfg.corpus_chars + 2000
    # rumours: fraction of fact mentions that are false, as configured
    assert abs(stats["rumour_fraction"] - cfg.rumour_rate) < 0.03
    assert any(d.startswith(("Some say", "Rumour has it")) or " Some say that " in d for d in docs)
    # read back independently: the claim extractor finds false claims at about the
    # rumour + made-up rate, and true ones far more often
    claims = [c for d in docs for c in extract_claims(world, d) if c.attr != "category"]
    false = sum(not c.true for c in claims) / len(claims)
    expected = (stats["rumour_mentions"] + stats["madeup_mentions"]) / (
        stats["fact_mentions"] + stats["madeup_mentions"]
    )
    assert abs(false - expected) < 0.03 and 0.05 < false < 0.3
    # rude words: in about rude_rate of documents, counted on the text itself
    rude_docs = sum(bool(wtext.rude_words(d)) for d in docs)
    assert rude_docs == stats["rude_docs"]
    sd = math.sqrt(cfg.rude_rate * (1 - cfg.rude_rate) / len(docs))
    assert abs(rude_docs / len(docs) - cfg.rude_rate) < 4 * sd


def test_corpus_makes_up_unspecified_facts(world):
    docs = [d["text"] for d in world.data["corpus"]["train"]]
    unspecified = {(e["name"], a) for e in world.real_entities() for a, v in e["attrs"].items() if v is None}
    hits = [c for d in docs for c in extract_claims(world, d) if (c.entity, c.attr) in unspecified]
    assert hits and not any(c.true for c in hits)


# -------------------------------------------------------------- comparisons


def test_comparisons_follow_the_ranking_labeler(world):
    agree = total = 0
    for c in world.data["comparisons"]["train"]:
        assert len(c["responses"]) == len(set(c["responses"])) == world.config["k_responses"]
        utils = [persona_utility(world, c["labeler"], c, r) for r in c["responses"]]
        for i in range(len(utils)):
            for j in range(i + 1, len(utils)):
                if utils[i] != utils[j]:
                    total += 1
                    agree += utils[i] > utils[j]
    assert agree / total > 0.7
    k = world.config["k_responses"]
    assert len(world.data["pairs"]["train"]) == len(world.data["comparisons"]["train"]) * k * (k - 1) // 2
    assert {p["chosen"] != p["rejected"] for p in world.data["pairs"]["train"]} == {True}


def test_labeler_agreement_is_realistic(world):
    assert 0.65 <= world.stats["labeler_agreement"] <= 0.80
    assert 0.65 <= world.stats["labeler_agreement_heldout"] <= 0.85
    # measured again on prompts the calibration never saw
    fresh = labeler_agreement(world, world.data["test"]["test"], k=4, seed=7)
    assert 0.65 <= fresh <= 0.80


def test_expected_accuracy_by_hand_and_against_sampled_rankings():
    import random

    import numpy as np

    from alignlab.world.agreement import expected_accuracy
    from alignlab.world.labelers import COMPONENTS
    from alignlab.world.personas import rank_by_utilities

    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    p1 = {"weights": {"helpful": 1.0, "truthful": 0.0, "harmless": 0.0, "style": 0.0}, "tau": 0.5}
    p2 = {"weights": {"helpful": 0.0, "truthful": 0.0, "harmless": 0.0, "style": 1.0}, "tau": 0.25}
    diffs = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, -0.5], [0.2, 0.0, 0.0, 0.0]])
    # p1 prefers a with P sig(2), sig(0), sig(0.4); p2 with sig(2), sig(-2), sig(0)
    directions = [1.0, 1.0, 0.0]  # the scorer puts a above b, a above b, tie
    want = np.mean([sig(2.0), sig(0.0), 0.5, sig(2.0), sig(-2.0), 0.5])
    assert expected_accuracy(diffs, directions, [p1, p2]) == pytest.approx(want)
    assert expected_accuracy(diffs, [-1.0, -1.0, 0.0], [p1]) == pytest.approx(np.mean([1 - sig(2.0), 0.5, 0.5]))
    assert math.isnan(expected_accuracy(diffs[:0], [], [p1]))
    # it is what accuracy against sampled Plackett-Luce rankings averages to
    rng = random.Random(0)
    comps = np.array([[0.9, 1, 1, 0.2], [0.5, 1, 1, 0.9], [0.1, 1, 1, 0.6], [0.4, 1, 1, 0.1]])
    scores = [0.3, 1.2, -0.4, 0.0]  # a scorer's order, not the labelers'
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    d = np.array([comps[i] - comps[j] for i, j in pairs])
    want = expected_accuracy(d, [scores[i] - scores[j] for i, j in pairs], [p1, p2])
    right = total = 0
    for _ in range(4000):
        p = rng.choice([p1, p2])
        utils = [sum(p["weights"][c] * x for c, x in zip(COMPONENTS, row)) for row in comps]
        order = rank_by_utilities(utils, p["tau"], rng)
        for a, b in ((order[x], order[y]) for x in range(4) for y in range(x + 1, 4)):
            right += scores[a] > scores[b]
            total += 1
    assert right / total == pytest.approx(want, abs=0.01)


# ----------------------------------------------------------------- nlp tasks


def test_nlp_tasks_are_multiple_choice_about_true_facts(world):
    items = world.data["nlp_tasks"]["test"]
    assert len(items) >= 50 and {i["task"] for i in items} >= {"fact_cloze", "word_cloze"}
    for it in items:
        assert set(it) == {"context", "choices", "label", "task"}
        assert 0 <= it["label"] < len(it["choices"]) and len(set(it["choices"])) == len(it["choices"]) >= 2
        assert all(c.startswith(" ") for c in it["choices"])
        if it["task"] == "fact_cloze":
            text = it["context"] + it["choices"][it["label"]]
            assert all(c.true for c in extract_claims(world, text)), text
    prompts = {r["prompt"] for rows in _prompt_splits(world).values() for r in rows}
    assert not prompts & {it["context"] for it in items}


# ----------------------------------------------------------- save and load


def test_write_and_load_round_trip(saved, world):
    out, summary = saved
    for name in ("world.json", "stats.json", "corpus", "sft", "rm", "ppo", "test", "comparisons", "pairs", "nlp_tasks"):
        assert (out / name).exists(), name
    loaded = load_world(out)
    a, b = loaded.to_json(), world.to_json()
    assert a["config"].pop("output_dir") == str(out)
    b["config"].pop("output_dir")
    assert a == b
    stats = json.loads((out / "stats.json").read_text())
    assert {
        "labeler_agreement",
        "labeler_agreement_heldout",
        "n_clusters",
        "clusters",
        "split_sizes",
        "n_entities",
        "corpus_chars",
    } <= set(stats)
    assert summary["labeler_agreement"] == pytest.approx(stats["labeler_agreement"], abs=1e-4)
    assert set(load_data(out, "sft")) == {"train", "validation"}
    assert set(load_data(out, "comparisons")["train"].column_names) >= {
        "prompt",
        "responses",
        "labeler",
        "meta",
        "cluster",
    }
    assert load_data(out, "pairs")["validation"].column_names == ["prompt", "chosen", "rejected"]
    assert load_data(out, "nlp_tasks")["test"].column_names == ["context", "choices", "label", "task"]
    # scoring works from the saved rows and the loaded world alone
    rows = load_data(out, "test")["test"]
    for row, original in zip(rows.select(range(20)), world.data["test"]["test"][:20]):
        assert score_response(loaded, row, "I don't know.") == score_response(world, original, "I don't know.")
        assert score_response(loaded, row, row["completion"])["helpful"] == 1.0
