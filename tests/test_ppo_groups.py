"""RLOO and GRPO, the value-free advantage modes of the PPO stage, on tiny random models: groups sampled
together, the sequence rewards and advantages of one scoring against ``rl/group_advantages.py``, no value
model anywhere (loaded, trained, saved, checkpointed), the KL placement, learning, and exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from alignlab.config import resolve
from alignlab.models.load import load_causal_lm
from alignlab.models.reward_model import load_reward_model
from alignlab.models.value_model import ValueModel
from alignlab.outputs import read_metrics
from alignlab.rl.group_advantages import grpo_advantages, rloo_advantages
from alignlab.stages import ppo
from fixtures_rlhf import rlhf_inputs  # noqa: F401
from test_ppo import _cfg, _prompt_ids, check_resume_matches_uninterrupted


@pytest.fixture(autouse=True)
def _one_thread():
    from alignlab.training import cpu_threads

    with cpu_threads(1):
        yield


def _group_cfg(inp, out, mode, **kw):
    """A tiny rloo/grpo run: 4 prompts x 2 samples = 8 episodes per iteration, minibatches of 4."""
    settings = dict(advantage=mode, group_size=2, batch_size=4, whiten_advantages=False)
    return _cfg(inp, "llama", out, **{**settings, **kw})


def _group_trainer(inp, mode, reward_fn=None, **kw):
    cfg = _group_cfg(inp, "/nonexistent", mode, **kw)
    policy, ref = load_causal_lm(cfg.policy), load_causal_lm(cfg.policy)
    rm = ValueModel(load_reward_model(cfg.reward_model))
    value = ValueModel(load_reward_model(cfg.reward_model))  # handed over, and dropped: no value model here
    trainer = ppo.PPOTrainer(cfg, policy, ref, rm, value, inp["tokenizer"], Accelerator(cpu=True), None, reward_fn)
    return trainer, cfg


# ------------------------------------------------------------------------------- one iteration


@pytest.mark.parametrize("mode", ["rloo", "grpo"])
def test_one_run_end_to_end_without_a_value_model(rlhf_inputs, tmp_path, mode):
    out = tmp_path / mode
    # the tiny random policy never ends within 8 tokens: "add" keeps the RM's spread under the missing-EOS penalty
    settings = dict(iterations=2, run={"checkpoint_interval": 1}, optim={"lr": 3e-3}, no_eos_mode="add")
    cfg = _group_cfg(rlhf_inputs, out, mode, **settings)
    summary = ppo.run(cfg)
    rows = [m for m in read_metrics(out) if "kl" in m]
    assert len(rows) == 2
    for key in ("rm_score_mean", "kl", "kl_k3", "beta", "entropy", "clipfrac", "pg_loss", "grad_norm"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert all(r["group_reward_std"] >= 0 for r in rows)
    for key in ("vf_loss", "value_grad_norm", "value_mean", "explained_var", "return_mean"):
        assert key not in rows[0], key
    assert ("kl_loss" in rows[0]) == (mode == "grpo")  # grpo pays the KL in the loss ...
    assert (rows[1]["kl_reward_mean"] == 0.0) == (mode == "grpo")  # ... and not in the reward
    assert rows[0]["kl"] == 0.0 and rows[0]["first_mb_clipfrac"] == 0.0  # policy == reference before any update
    assert summary["advantage"] == mode and summary["group_size"] == 2 and summary["episodes"] == 2 * 8
    assert not (out / "value_model").exists()  # neither saved ...
    ckpt = out / "checkpoint"  # ... nor checkpointed (the one written after iteration 1)
    assert (ckpt / "policy").is_dir() and not (ckpt / "value_model").exists()
    assert set(torch.load(ckpt / "optimizer.pt", weights_only=True)) == {"opt_policy", "sched_policy"}
    assert mode.upper() in (out / "README.md").read_text()


def test_the_trainer_keeps_no_value_model_and_one_optimiser(rlhf_inputs):
    trainer, cfg = _group_trainer(rlhf_inputs, "rloo")
    assert trainer.value is None and trainer.opt_value is None and trainer.sched_value is None
    assert trainer.optimizers() == [(trainer.opt_policy, trainer.sched_policy)]
    assert trainer.updates_per_iteration == cfg.ppo_epochs * (cfg.batch_size * cfg.group_size // cfg.minibatch_size)


def test_each_prompt_is_sampled_group_size_times_in_a_row(rlhf_inputs):
    seen = []

    def reward_fn(ro, records):
        seen.append(records)
        return torch.zeros(ro.response.shape[0])

    trainer, _ = _group_trainer(rlhf_inputs, "rloo", reward_fn, group_size=3, batch_size=4, minibatch_size=4)
    prompts = _prompt_ids(rlhf_inputs, 4)
    result = trainer.iteration(0, prompts, records=[{"i": i} for i in range(4)])
    assert result.experience.batch_size == 12
    assert seen[0] == [{"i": i} for i in range(4) for _ in range(3)]  # records follow their prompt
    q, qm = result.rollout.query, result.rollout.query_mask
    for i, p in enumerate(prompts):
        for j in range(3):
            assert q[3 * i + j][qm[3 * i + j].bool()].tolist() == p
    # equal rewards everywhere: no signal, zero advantages, zero policy gradient
    assert result.stats["group_reward_std"] == 0.0 and result.stats["pg_loss"] == 0.0


# ---------------------------------------------------------------------- rewards and advantages


@pytest.mark.parametrize("mode", ["rloo", "grpo"])
def test_scoring_sums_rewards_per_response_and_takes_group_advantages(rlhf_inputs, mode):
    scores = torch.tensor([0.3, -1.2, 2.0, 2.0, 0.5, -0.5, 1.0, 4.0])

    def reward_fn(ro, records):
        return scores.clone()

    beta = 0.5
    trainer, cfg = _group_trainer(
        rlhf_inputs, mode, reward_fn, kl={"beta": beta}, no_eos_penalty=0.0, no_eos_mode="add"
    )
    with torch.no_grad():  # move the policy off the reference, so the KL part of the reward is not 0
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ro = trainer.rollout(trainer._grouped(_prompt_ids(rlhf_inputs, 4)), 0)
    exp, stats = trainer.score(ro)
    mask = exp.response_mask.bool()
    kl = ((exp.old_logprobs - exp.ref_logprobs) * mask).sum(-1)
    assert kl.abs().max() > 1e-3
    seq = exp.rewards.sum(-1)
    if mode == "rloo":  # RM score - beta x KL summed over the response
        torch.testing.assert_close(seq, scores - beta * kl, atol=1e-5, rtol=0)
        want = rloo_advantages(seq, 2)
    else:  # the score alone: the KL is a loss term
        torch.testing.assert_close(seq, scores, atol=1e-6, rtol=0)
        want = grpo_advantages(seq, 2, cfg.grpo_eps)
        assert stats["kl_reward_mean"] == 0.0
    for b in range(8):  # the response's advantage on each of its tokens, nothing on padding
        assert torch.allclose(exp.advantages[b][mask[b]], want[b].expand(int(mask[b].sum())), atol=1e-5)
        assert (exp.advantages[b][~mask[b]] == 0).all()
    assert exp.values is None and exp.returns is None
    assert stats["group_reward_std"] == pytest.approx(float(seq.view(4, 2).std(-1, unbiased=False).mean()), abs=1e-5)


def test_grpo_kl_loss_term_is_beta_times_k3_in_the_gradient(rlhf_inputs):
    """With zero advantages the policy loss has no gradient: what is left is beta x the k3 KL's."""
    trainer, _ = _group_trainer(
        rlhf_inputs, "grpo", lambda ro, rec: torch.zeros(ro.response.shape[0]), kl={"beta": 2.0}
    )
    with torch.no_grad():
        for p in trainer.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ro = trainer.rollout(trainer._grouped(_prompt_ids(rlhf_inputs, 4)), 0)
    exp, _ = trainer.score(ro)
    assert (exp.advantages == 0).all()
    stats = trainer._ppo_backward(exp)
    assert stats["kl_loss"] > 0 and stats["pg_loss"] == 0
    grad = torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])
    trainer.policy.zero_grad()
    from alignlab.rl.kl import kl_k3_loss
    from alignlab.rollout.scoring import sequence_logprobs

    new = sequence_logprobs(trainer.policy, exp.input_ids, exp.attention_mask, exp.response_start, 1.0).logprobs
    (2.0 * kl_k3_loss(new, exp.ref_logprobs, exp.response_mask)).backward()
    want = torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])
    torch.testing.assert_close(grad, want, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("mode", ["rloo", "grpo"])
def test_packed_equals_padded_without_a_value_model(rlhf_inputs, mode):
    """The packing check runs on the policy and the RM when there is no value model; packed and padded
    iterations (same rollout) give the same experience and the same update."""
    out = {}
    for pack in (False, True):
        settings = dict(rollout={"pack_sequences": pack}, optim={"lr": 1e-3}, no_eos_mode="add")
        trainer, _ = _group_trainer(rlhf_inputs, mode, **settings)
        assert trainer.pack == pack
        result = trainer.iteration(0, _prompt_ids(rlhf_inputs, 4))
        out[pack] = (result.experience, torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))
    (a, pa), (b, pb) = out[False], out[True]
    assert torch.equal(a.input_ids, b.input_ids)  # same seed, same rollout
    for f in ("old_logprobs", "ref_logprobs", "scores", "rewards", "advantages"):
        torch.testing.assert_close(getattr(b, f), getattr(a, f), atol=1e-4, rtol=0, msg=f)
    assert a.advantages.abs().sum() > 0  # the groups differed: there was an update to compare
    torch.testing.assert_close(pb, pa, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("mode", ["rloo", "grpo"])
def test_reward_for_a_token_raises_its_probability(rlhf_inputs, mode):
    tok = rlhf_inputs["tokenizer"]
    target = tok.convert_tokens_to_ids("red") if "red" in tok.get_vocab() else 100
    prompts = _prompt_ids(rlhf_inputs, 16)
    w = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (w - len(p)) + p for p in prompts])
    mask = (ids != tok.pad_token_id).long()

    def reward_fn(ro, records):
        return 10.0 * ((ro.response == target) & ro.response_mask.bool()).float().sum(-1)

    def p_target(model):
        from alignlab.rollout.scoring import position_ids_from_mask

        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
        return torch.softmax(logits, -1)[:, target].mean().item()

    cfg = _group_cfg(
        rlhf_inputs, "/nonexistent", mode, group_size=4, batch_size=16, minibatch_size=16, optim={"lr": 3e-3},
        rollout={"max_new_tokens": 6}, kl={"beta": 0.0}, no_eos_penalty=0.0, no_eos_mode="add",
    )  # fmt: skip
    policy, ref = load_causal_lm(cfg.policy), load_causal_lm(cfg.policy)
    with torch.no_grad():  # as test_ppo's: tilt the target token up to a few percent, so it gets sampled
        h = policy(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1][:, -1].mean(0)
        for m in (policy, ref):
            m.get_input_embeddings().weight[target] += 2.5 * h / h.dot(h)
    trainer = ppo.PPOTrainer(cfg, policy, ref, None, None, tok, Accelerator(cpu=True), None, reward_fn)
    before = p_target(policy)
    for it in range(4):
        trainer.iteration(it, prompts)
    after = p_target(policy)
    assert 0.01 < before < 0.2 and after > 2 * before, (before, after)


# --------------------------------------------------------------------------------------- resume


def test_rloo_resume_matches_uninterrupted(rlhf_inputs, tmp_path):
    settings = dict(iterations=4, run={"checkpoint_interval": 2}, kl={"adaptive": True, "horizon": 100})
    cfg = _group_cfg(rlhf_inputs, tmp_path / "full", "rloo", **settings, no_eos_mode="add", optim={"lr": 1e-3})
    full, resumed, metrics = check_resume_matches_uninterrupted(cfg, tmp_path)
    assert any(m.get("group_reward_std", 0) > 0 for m in metrics)  # the groups carried a signal
    from safetensors.torch import load_file

    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------- non-finite


def _nan_reward_at(iteration: int):
    """Rewards that differ within each group, NaN for every episode of one training iteration (8 episodes; the
    held-out evaluation's batches have 4)."""
    calls = []

    def reward_fn(rollout, records):
        n = rollout.input_ids.shape[0]
        calls.append(n)
        if n == 8 and calls.count(8) == iteration:
            return torch.full((n,), math.nan)
        return torch.arange(n, dtype=torch.float32) % 2

    return reward_fn


def test_a_nan_reward_stops_rloo_and_skip_nonfinite_skips_it(rlhf_inputs, tmp_path, capsys):
    from alignlab.training import NonFiniteError

    settings = dict(iterations=3, eval={"prompts": 4}, run={"checkpoint_interval": 1})
    with pytest.raises(NonFiniteError, match=r"^rloo: reward became nan at step 2, before the weights"):
        ppo.run(_group_cfg(rlhf_inputs, tmp_path / "stop", "rloo", **settings), reward_fn=_nan_reward_at(2))
    settings["run"] = {"checkpoint_interval": 1, "skip_nonfinite": 1}
    summary = ppo.run(_group_cfg(rlhf_inputs, tmp_path / "skip", "rloo", **settings), reward_fn=_nan_reward_at(2))
    assert "rloo: reward is nan at step 2: batch skipped (1 of at most 1" in capsys.readouterr().err
    assert summary["iterations"] == 3
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "skip" / "model.safetensors")).values())


# --------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", ["rloo", "grpo"])
def test_presets_follow_the_papers(name):
    cfg = resolve(ppo.PPOConfig, ppo.PRESETS, name)
    assert (cfg.advantage, cfg.group_size, cfg.whiten_advantages) == (name, 4, False)
    assert cfg.batch_size * cfg.group_size == ppo.PPOConfig().batch_size  # PPO's episodes per iteration
    assert cfg.kl.adaptive and cfg.kl.target == resolve(ppo.PPOConfig, ppo.PRESETS, "default").kl.target
    assert cfg.kl.beta == (0.04 if name == "grpo" else 0.2)
    assert cfg.output_dir == f"runs/{name}"
    from alignlab.stages.ppo_setup import check_settings

    check_settings(cfg)


def test_gae_default_is_ppo_with_one_sample_per_prompt():
    cfg = ppo.PPOConfig()
    assert (cfg.advantage, cfg.group_size) == ("gae", 1)
