"""PPO against a perfect reward model (``reward_source: world``): the world's labelers score each
episode, so the reward PPO sees is exactly the gold reward of the texts it sampled, each judged against
its own prompt's record."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("fixtures_pipeline")

import statistics  # noqa: E402

from alignlab.data.chat import encode_prompt_rows  # noqa: E402
from alignlab.data.load import load_dataset_any  # noqa: E402
from alignlab.models.load import load_tokenizer  # noqa: E402
from alignlab.outputs import read_metrics  # noqa: E402
from alignlab.stages import ppo  # noqa: E402
from alignlab.world import gold_reward, load_world  # noqa: E402
from fixtures_pipeline import run_stage_module  # noqa: E402

pytest_plugins = ["fixtures_pipeline"]  # session fixtures shared with the other step tests


def _ppo(world, sft, reward, out, data, **kw):
    return run_stage_module(
        "ppo",
        "alignlab.stages.ppo",
        "PPOConfig",
        "smoke",
        policy=sft,
        reward_model=reward,
        data=data,
        world_dir=world,
        output_dir=str(out),
        **{"ptx.data": "", "run.tensorboard": "false"},
        **kw,
    )


def test_world_reward_is_the_gold_reward_of_the_sampled_texts(
    smoke_world, smoke_sft, smoke_reward, tmp_path, monkeypatch
):
    sampled = []  # (prompt ids, response texts) of each iteration, as the trainer saw them
    iteration = ppo.PPOTrainer.iteration

    def spy(self, it, prompt_ids, judge=None, records=None):
        result = iteration(self, it, prompt_ids, judge, records)
        sampled.append((prompt_ids, result.rollout.texts))
        return result

    monkeypatch.setattr(ppo.PPOTrainer, "iteration", spy)
    data = str(Path(smoke_world["world"]) / "ppo")
    summary = _ppo(
        smoke_world["world"], smoke_sft["dir"], smoke_reward["dir"], tmp_path / "gold", data, reward_source="world"
    )
    # gold computed here, apart from the run: each prompt's own record found in the data by its tokens,
    # and the world's gold reward of (record, response)
    rows = list(load_dataset_any(data, "train"))
    encoded = encode_prompt_rows(load_tokenizer(smoke_sft["dir"]), rows, "prompt", summary["max_prompt_len"])
    records: dict[tuple, list] = {}
    for ids, row in zip(encoded, rows):
        records.setdefault(tuple(ids), []).append(row)
    world = load_world(smoke_world["world"])
    logged = [m for m in read_metrics(tmp_path / "gold") if "rm_score_mean" in m]
    assert len(logged) == len(sampled) > 0
    for m, (prompt_ids, texts) in zip(logged, sampled):
        gold = []
        for ids, text in zip(prompt_ids, texts):
            scores = {gold_reward(world, r, text) for r in records[tuple(ids)]}  # rows sharing a prompt agree
            assert len(scores) == 1
            gold.append(scores.pop())
        # the raw reward PPO trained on is the labelers' gold of the same responses to the same prompts
        assert m["rm_score_mean"] == pytest.approx(statistics.fmean(gold), abs=1e-6)
        assert m["gold_mean"] == pytest.approx(statistics.fmean(gold), abs=1e-9)


def test_world_reward_needs_world_prompts(smoke_world, smoke_sft, smoke_reward, tmp_path):
    with pytest.raises(ValueError, match="reward_source='world' needs world_dir"):
        _ppo(
            "",
            smoke_sft["dir"],
            smoke_reward["dir"],
            tmp_path / "x",
            str(Path(smoke_world["world"]) / "ppo"),
            reward_source="world",
        )
