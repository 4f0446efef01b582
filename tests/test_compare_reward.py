"""Comparisons and the reward model: ranked lists with labeler names, K limits, the K-way loss
on one batch element, the demonstration shift, the report, and plain GPT-2 with JSONL data."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import datasets
import pytest

pytest.register_assert_rewrite("fixtures_pipeline")
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignlab.cli import main as cli_main
from alignlab.config import ConfigError, resolve
from alignlab.models.reward_model import load_reward_model, score_texts
from alignlab.stages import reward as reward_stage
from alignlab.stages.compare import PRESETS as COMPARE_PRESETS
from alignlab.stages.compare import CompareConfig
from alignlab.world import gold_reward, load_world
from fixtures_pipeline import run_stage_module

pytest_plugins = ["fixtures_pipeline"]  # session fixtures shared with the other step tests


def test_compare_writes_ranked_lists_with_labelers(smoke_world, smoke_compare):
    world = load_world(smoke_world["world"])
    train_names = {p["name"] for p in world.training_personas()}
    heldout_names = {p["name"] for p in world.heldout_personas()}
    ranked = datasets.load_from_disk(str(Path(smoke_compare["dir"]) / "comparisons"))
    pairs = datasets.load_from_disk(str(Path(smoke_compare["dir"]) / "pairs"))
    assert set(ranked) == {"train", "validation"} and len(ranked["train"]) == 96
    for split in ("train", "validation"):
        n_pairs = 0
        for row in ranked[split]:
            assert len(row["responses"]) == 4 and all(isinstance(r, str) for r in row["responses"])
            assert row["labeler"] in train_names
            assert len(row["gold"]) == 4
            assert all(abs(g - gold_reward(world, row, r)) < 1e-5 for g, r in zip(row["gold"], row["responses"]))
            assert {"meta", "cluster", "prompt"} <= set(row)
            if split == "validation":  # the same responses, ranked again by a held-out labeler
                assert row["labeler_heldout"] in heldout_names
                assert sorted(row["responses_heldout"]) == sorted(row["responses"])
            n_pairs += sum(a != b for a, b in itertools.combinations(row["responses"], 2))
        assert len(pairs[split]) == n_pairs and pairs[split].column_names == ["prompt", "chosen", "rejected"]
    s = json.loads((Path(smoke_compare["dir"]) / "summary.json").read_text())
    assert s["k"] == 4 and s["train_prompts"] == 96 and s["train_pairs"] == len(pairs["train"])


@pytest.mark.parametrize("k", [3, 10])
def test_k_outside_4_to_9_is_refused_naming_k(k, capsys):
    with pytest.raises(ConfigError, match="'k'"):
        resolve(CompareConfig, COMPARE_PRESETS, "smoke", None, {"k": str(k)})
    assert cli_main(["compare", "--k", str(k)]) == 2
    assert "'k'" in capsys.readouterr().err


def test_rm_loads_with_plain_transformers_and_demonstrations_average_zero(smoke_world, smoke_reward):
    path = smoke_reward["dir"]
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert (
        math.isfinite(rm.config.reward_shift) and rm.config.reward_shift == load_reward_model(path).config.reward_shift
    )
    demos = datasets.load_from_disk(str(Path(smoke_world["world"]) / "sft"))["validation"]
    shifted = score_texts(rm, tok, demos["prompt"], demos["completion"])
    raw = score_texts(rm, tok, demos["prompt"], demos["completion"], shifted=False)
    assert abs(shifted.mean().item()) < 1e-4
    assert abs(raw.mean().item() - rm.config.reward_shift) < 1e-4
    s = json.loads((Path(path) / "summary.json").read_text())
    for key in (
        "val_accuracy_train_labelers",
        "val_accuracy_heldout_labelers",
        "val_accuracy_gold",
        "val_expected_accuracy_train_labelers",
        "val_expected_accuracy_heldout_labelers",
        "labeler_agreement",
        "labeler_agreement_heldout",
        "labeler_agreement_on_val_pairs",
        "reward_shift",
    ):
        assert isinstance(s[key], float) and math.isfinite(s[key]), key
    assert 0.0 <= s["val_accuracy_train_labelers"] <= 1.0 and s["val_pairs"] > 0
    assert abs(s["reward_shift"] - rm.config.reward_shift) < 1e-3


def test_stage_loss_on_one_k4_prompt_is_the_mean_over_its_six_pairs(smoke_reward):
    path = smoke_reward["dir"]
    rm = load_reward_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    prompt = "Compute 2 plus 3."
    responses = ["5.", "It is 5.", "6.", "banana banana"]
    row = {"prompt": prompt, "responses": responses}
    reward_stage.encode_sequences(tok, [row], 64)
    loss, acc, rewards = reward_stage.rows_loss(rm, [row], tok.pad_token_id, "cpu")
    raw = score_texts(rm, tok, [prompt] * 4, responses, shifted=False)  # each response scored alone
    assert torch.allclose(rewards[0].detach(), raw, atol=1e-5)  # one forward pass per response, same scores
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert len(pairs) == 6
    expected = sum(-F.logsigmoid(raw[i] - raw[j]) for i, j in pairs) / 6
    assert abs(loss.item() - expected.item()) < 1e-5
    assert abs(acc.item() - sum(float(raw[i] > raw[j]) for i, j in pairs) / 6) < 1e-6
    # two prompts in one batch (K=4 and, after collapsing a duplicate, K=3): the mean of per-prompt losses
    row2 = {"prompt": "Say hi.", "responses": reward_stage.distinct(["Hi.", "Hi.", "Hello there.", "No."])}
    reward_stage.encode_sequences(tok, [row2], 64)
    loss2, _, _ = reward_stage.rows_loss(rm, [row, row2], tok.pad_token_id, "cpu")
    raw2 = score_texts(rm, tok, ["Say hi."] * 3, row2["responses"], shifted=False)
    l2 = sum(-F.logsigmoid(raw2[i] - raw2[j]) for i, j in [(0, 1), (0, 2), (1, 2)]) / 3
    assert abs(loss2.item() - (expected.item() + l2.item()) / 2) < 1e-5


def test_expected_accuracy_follows_the_direction_the_rm_scores_in():
    """A scorer that ranks every pair the wrong way round scores 1 - the right one's expected accuracy."""
    import numpy as np

    from alignlab.world.agreement import choice_probabilities, expected_accuracy, pair_differences
    from alignlab.world.labelers import COMPONENTS

    personas = [
        {"weights": dict(zip(COMPONENTS, [1.0, 0.5, 0.2, 0.1])), "tau": 0.3},
        {"weights": dict(zip(COMPONENTS, [0.4, 1.0, 0.3, 0.2])), "tau": 0.5},
    ]
    # one prompt, three responses: component scores, best first by both personas' weights
    components = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.5, 0.3], [0.1, 0.2, 0.0, 0.1]])
    diffs = pair_differences([components])  # pairs (0, 1), (0, 2), (1, 2): a - b
    prob = choice_probabilities(diffs, personas)  # P(persona prefers a)
    assert (prob > 0.5).all()
    right = expected_accuracy(diffs, [1.0, 1.0, 1.0], personas)
    assert right == pytest.approx(prob.mean()) and right > 0.8
    wrong = expected_accuracy(diffs, [-1.0, -1.0, -1.0], personas)
    assert wrong == pytest.approx(1 - right) and wrong < 0.2
    assert expected_accuracy(diffs, [0.0, 0.0, 0.0], personas) == 0.5  # ties count 1/2

    class World:
        def training_personas(self):
            return personas

        def heldout_personas(self):
            return personas[:1]

    rows = [{"prompt": "p", "responses": ["a", "b", "c"], "components": components}]
    scores = [[3.0, 2.0, 1.0]]  # the RM agrees with the labelers' utility
    ours = reward_stage.expected_accuracies(World(), rows, scores)
    flipped = reward_stage.expected_accuracies(World(), rows, [[-s for s in scores[0]]])
    assert ours["val_expected_accuracy_train_labelers"] == pytest.approx(right)
    for key in ("val_expected_accuracy_train_labelers", "val_expected_accuracy_heldout_labelers"):
        assert ours[key] + flipped[key] == pytest.approx(1.0) and ours[key] > 0.8, key


def test_duplicates_are_collapsed_and_all_identical_lists_skipped(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "a", "responses": ["x", "x", "y", "z"]},
                {"prompt": "b", "responses": ["w", "w", "w", "w"]},
            ]
        )
    )
    rows, skipped = reward_stage.load_comparisons(str(p), "train")
    assert [r["responses"] for r in rows] == [["x", "y", "z"]] and skipped == 1


@pytest.mark.parametrize("fmt", ["ranked", "pref"])
def test_reward_on_plain_gpt2_with_jsonl(tiny_gpt2, tmp_path, fmt):
    out = tmp_path / f"rm_{fmt}"
    s = run_stage_module(
        "reward",
        "alignlab.stages.reward",
        "RewardConfig",
        "smoke",
        model=tiny_gpt2["model"],
        data=tiny_gpt2[f"{fmt}_train"],
        eval_data=tiny_gpt2[f"{fmt}_validation"],
        world_dir="",
        demonstrations=tiny_gpt2["pc_validation"],
        batch_size="8",
        output_dir=str(out),
        **{"run.tensorboard": "false"},
    )
    assert 0.0 <= s["val_accuracy_train_labelers"] <= 1.0 and s["val_accuracy_heldout_labelers"] is None
    assert s["val_expected_accuracy_heldout_labelers"] is None  # no world: no labelers to take the expectation over
    n_demo = len(Path(tiny_gpt2["pc_validation"]).read_text().splitlines())
    assert s["demonstrations_n"] == n_demo and abs(s["demonstrations_mean_after_shift"]) < 1e-4
    rm = AutoModelForSequenceClassification.from_pretrained(str(out), num_labels=1)
    assert type(rm).__name__ == "GPT2ForSequenceClassification" and rm.config.pad_token_id is not None
    tok = AutoTokenizer.from_pretrained(str(out))
    assert not tok.chat_template
    r = score_texts(rm, tok, ["What is 2 plus 2?"] * 2, ["4.", "5."])
    assert r.shape == (2,) and torch.isfinite(r).all()


def test_compare_on_gpt2_policy(smoke_world, tiny_gpt2, tmp_path):
    s = run_stage_module(
        "compare",
        "alignlab.stages.compare",
        "CompareConfig",
        "smoke",
        policy=tiny_gpt2["model"],
        data=str(Path(smoke_world["world"]) / "rm"),
        world_dir=smoke_world["world"],
        k="5",
        max_prompts="8",
        max_eval_prompts="4",
        max_new_tokens="8",
        output_dir=str(tmp_path / "c"),
    )
    ranked = datasets.load_from_disk(str(tmp_path / "c" / "comparisons"))
    assert len(ranked["train"]) == 8 and len(ranked["validation"]) == 4 and s["k"] == 5
    assert all(len(r) == 5 for r in ranked["train"]["responses"])


def test_compare_mixes_several_policies_slot_by_slot(smoke_world, tiny_gpt2, tmp_path):
    # source 0: the GPT-2 policy at T=1; source 1: the same at T=0 (greedy: one string); source 2: another model
    s = run_stage_module(
        "compare",
        "alignlab.stages.compare",
        "CompareConfig",
        "smoke",
        policy=tiny_gpt2["model"],
        policies=f"['@0', '{tiny_gpt2['model']}@1.5', '@1']",
        data=str(Path(smoke_world["world"]) / "rm"),
        world_dir=smoke_world["world"],
        k="7",
        max_prompts="6",
        max_eval_prompts="3",
        max_new_tokens="6",
        output_dir=str(tmp_path / "c"),
    )
    assert [x.rsplit("@", 1)[1] for x in s["sources"]] == ["1 x2", "0 x2", "1.5 x2", "1 x1"]
    ranked = datasets.load_from_disk(str(tmp_path / "c" / "comparisons"))
    for row in ranked["train"]:
        assert sorted(row["sources"]) == [
            0,
            0,
            0,
            1,
            1,
            2,
            2,
        ]  # K=7 slots from 4 sources in turn; '@1' repeats source 0
        greedy = [r for r, src in zip(row["responses"], row["sources"]) if src == 1]
        assert greedy[0] == greedy[1]  # temperature 0 really was used for source 1
    assert [x["responses"] for x in s["splits"]["train"]["sources"]] == [18, 12, 12]


def test_compare_source_specs_are_checked():
    from alignlab.stages.compare import interleave, parse_source, slots_per_source

    assert parse_source("m@0.5", "sft", 1.0) == ("m", 0.5) and parse_source("@0", "sft", 1.0) == ("sft", 0.0)
    assert parse_source("path/to/m", "sft", 0.7) == ("path/to/m", 0.7)
    with pytest.raises(ConfigError, match=r"policies\[0\]"):
        resolve(CompareConfig, COMPARE_PRESETS, "smoke", None, {"policies": "['m@hot']"})
    with pytest.raises(ConfigError, match="slots"):
        resolve(CompareConfig, COMPARE_PRESETS, "smoke", None, {"k": "4", "policies": "['a','b','c','d']"})
    assert slots_per_source(4, 3) == [2, 1, 1]
    rows, src = interleave([[["a1", "a2"]], [["b1"]], [["c1"]]])
    assert rows == [["a1", "b1", "c1", "a2"]] and src == [[0, 1, 2, 0]]


def test_reward_resume_from_a_step_checkpoint_reproduces_the_run(tiny_gpt2, tmp_path):
    common = dict(
        model=tiny_gpt2["model"],
        data=tiny_gpt2["ranked_train"],
        eval_data=tiny_gpt2["ranked_validation"],
        world_dir="",
        demonstrations=tiny_gpt2["pc_validation"],
        batch_size="4",
        epochs="2",
        **{"run.checkpoint_interval": "4", "run.tensorboard": "false"},
    )
    out = tmp_path / "rm"
    first = run_stage_module("reward", "alignlab.stages.reward", "RewardConfig", "smoke", output_dir=str(out), **common)
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert 0 < state["step"] < first["steps"]
    # resuming from the last checkpoint replays the remaining steps exactly (data order = f(seed, step))
    again = run_stage_module(
        "reward",
        "alignlab.stages.reward",
        "RewardConfig",
        "smoke",
        output_dir=str(out),
        **common,
        **{"run.resume": "true"},
    )
    for key in ("val_loss", "val_accuracy_train_labelers", "final_train_loss", "reward_shift"):
        assert abs(first[key] - again[key]) < 1e-4, key


def test_policy_view_keeps_only_the_main_policys_responses():
    from alignlab.stages.reward import pair_accuracy, policy_view

    row = {
        "prompt": "p",
        "record": {},
        "responses": ["a", "b", "c", "d"],
        "sources": [0, 1, 0, 0],
        "gold": [1.0, 0.9, 0.5, 0.2],
        "heldout": ["c", "b", "a", "d"],
    }
    alone = {"prompt": "q", "record": {}, "responses": ["x", "y"], "sources": [0, 1], "gold": [1.0, 0.0]}
    rows, scores = policy_view([row, alone], [[3.0, 9.0, 1.0, 2.0], [1.0, 0.0]])
    assert len(rows) == 1  # the second prompt has one main-policy response: no pair
    assert rows[0]["responses"] == ["a", "c", "d"] and rows[0]["gold"] == [1.0, 0.5, 0.2]
    assert rows[0]["heldout"] == ["c", "a", "d"] and scores == [[3.0, 1.0, 2.0]]
    # training order a > c > d; scores 3, 1, 2 get (a, c) and (a, d) right, (c, d) wrong
    assert pair_accuracy([rows[0]["responses"]], rows, scores) == (2 / 3, 3)
