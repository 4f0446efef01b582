"""A NaN or inf in a loss, a reward or a gradient stops the stage before it reaches the weights, naming
the step, the quantity and the last good checkpoint; run.skip_nonfinite skips such batches instead."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fault_stages import dpo, ppo_settings

from alignlab.config import apply
from alignlab.stages import dpo as dpo_stage
from alignlab.stages import ppo
from alignlab.training import NonFiniteError, NonFiniteGuard
from fixtures_rlhf import rlhf_inputs  # noqa: F401


def test_the_guard_names_the_quantity_and_the_step(tmp_path):
    guard = NonFiniteGuard("sft", tmp_path / "checkpoint")
    assert guard.ok(3, loss=1.0, gradient_norm=torch.tensor(2.0))
    assert guard.ok(3, loss=1.0, gradient_norm=None)  # not measured
    with pytest.raises(
        NonFiniteError, match=r"sft: gradient_norm became inf at step 4, .*no checkpoint was written yet"
    ):
        guard.ok(4, loss=1.0, gradient_norm=torch.tensor(math.inf))


def test_the_guard_skips_up_to_n_batches_and_reports_each(tmp_path, capsys):
    guard = NonFiniteGuard("dpo", tmp_path / "checkpoint", allowed=2)
    assert not guard.ok(1, loss=math.nan) and not guard.ok(2, loss=math.nan)
    assert capsys.readouterr().err.count("batch skipped") == 2
    with pytest.raises(NonFiniteError, match="dpo: loss became nan at step 3"):
        guard.ok(3, loss=math.nan)


def _nan_reward_at(iteration: int):
    """A reward of 1 for every episode, NaN for every episode of one training iteration (its batches
    have 8 episodes; the held-out evaluation's, 4)."""
    calls = []

    def reward_fn(rollout, records):
        n = rollout.input_ids.shape[0]
        calls.append(n)
        value = math.nan if n == 8 and calls.count(8) == iteration else 1.0
        return torch.full((n,), value)

    return reward_fn


def _ppo_cfg(inp, out: Path, **run):
    settings = ppo_settings(inp, 0.0)
    settings = {**settings, "run": {**settings["run"], **run}, "output_dir": str(out)}
    settings["eval"] = {**settings["eval"], "prompts": 4}
    return apply(ppo.PPOConfig(), settings, "test")


def test_a_nan_reward_stops_ppo_naming_the_step_and_the_checkpoint(rlhf_inputs, tmp_path):  # noqa: F811
    out = tmp_path / "ppo"
    with pytest.raises(NonFiniteError) as e:
        ppo.run(_ppo_cfg(rlhf_inputs, out), reward_fn=_nan_reward_at(3))
    assert str(e.value).startswith("ppo: reward became nan at step 3, before the weights were updated")
    assert f"the last good checkpoint is {out / 'checkpoint'} (step 2)" in str(e.value)


def test_skip_nonfinite_skips_the_poisoned_iteration_and_finishes(rlhf_inputs, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ppo"
    summary = ppo.run(_ppo_cfg(rlhf_inputs, out, skip_nonfinite=1), reward_fn=_nan_reward_at(3))
    assert "ppo: reward is nan at step 3: batch skipped (1 of at most 1" in capsys.readouterr().err
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())
    assert summary["iterations"] == 8


def _poison_gradient_at(monkeypatch, step: int):
    """Make DPO's loss at ``step`` (1-based) pass a NaN gradient back, its value still finite."""
    real, calls = dpo_stage.batch_loss, []

    def batch_loss(*args, **kwargs):
        loss, st = real(*args, **kwargs)
        if loss.requires_grad:  # a training step (validation runs without gradients)
            calls.append(1)
            if len(calls) == step:
                loss.register_hook(lambda g: g * math.nan)
        return loss, st

    monkeypatch.setattr(dpo_stage, "batch_loss", batch_loss)


def test_a_nan_gradient_stops_dpo_before_the_update(rlhf_inputs, tmp_path, monkeypatch):  # noqa: F811
    _poison_gradient_at(monkeypatch, 5)
    with pytest.raises(
        NonFiniteError, match=r"dpo: gradient_norm became nan at step 5, .*checkpoint (is )?.* \(step 4\)"
    ):
        dpo(rlhf_inputs)(tmp_path / "dpo", False)


def test_a_nan_gradient_is_skipped_when_asked(rlhf_inputs, tmp_path, monkeypatch, capsys):  # noqa: F811
    _poison_gradient_at(monkeypatch, 5)
    dpo(rlhf_inputs, skip_nonfinite=1)(tmp_path / "dpo", False)
    assert "dpo: gradient_norm is nan at step 5: batch skipped" in capsys.readouterr().err
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "dpo" / "model.safetensors")).values())
