"""PPO against a perfect reward model (``reward_source: world``): the world's labelers score each
episode, so the reward PPO sees is exactly the gold reward of the texts it sampled."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.register_assert_rewrite("fixtures_pipeline")

from alignlab.outputs import read_metrics  # noqa: E402
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
        ptx_data="",
        tensorboard="false",
        output_dir=str(out),
        **kw,
    )


def test_world_reward_is_the_gold_reward_of_the_sampled_texts(smoke_world, smoke_sft, smoke_reward, tmp_path):
    _ppo(
        smoke_world["world"],
        smoke_sft["dir"],
        smoke_reward["dir"],
        tmp_path / "gold",
        str(Path(smoke_world["world"]) / "ppo"),
        reward_source="world",
    )
    rows = [m for m in read_metrics(tmp_path / "gold") if "rm_score_mean" in m]
    assert rows
    for m in rows:  # the raw reward of each iteration is the labelers' gold of the same responses
        assert m["rm_score_mean"] == pytest.approx(m["gold_mean"], abs=1e-6)


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
