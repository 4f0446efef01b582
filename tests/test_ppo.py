"""PPO / PPO-ptx on tiny random models: the numbers of one iteration, the value-head
initialisation, behaviour (a reward for a token raises its probability; ptx lowers the
pretraining loss), exact resume, and end-to-end runs on a tiny Llama and a tiny GPT-2."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
import torch
from accelerate import Accelerator

from alignlab.config import apply
from alignlab.data.chat import encode_prompt, encode_response
from alignlab.data.load import load_dataset_any
from alignlab.data.packing import pack_documents
from alignlab.models.load import load_causal_lm
from alignlab.models.reward_model import load_reward_model, score
from alignlab.models.value_model import ValueModel, last_token_values, response_values
from alignlab.outputs import read_metrics
from alignlab.rollout.layout import Rollout
from alignlab.stages import ppo
from fixtures_rlhf import REWARD_SHIFT, rlhf_inputs  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast, and far faster when other jobs share the CPU."""
    from alignlab.training import cpu_threads

    with cpu_threads(1):
        yield


def _cfg(inp, kind, out, **kw):
    base = dict(
        policy=inp[f"{kind}_policy"],
        reward_model=inp[f"{kind}_rm"],
        data=inp["prompts"],
        world_dir="",
        eval={"data": inp["prompts"], "prompts": 8},
        ptx={"data": inp["corpus"], "eval_blocks": 4, "seq_len": 32, "batch_size": 4},
        iterations=1,
        batch_size=8,
        minibatch_size=4,
        ppo_epochs=2,
        rollout={"max_new_tokens": 8, "gen_batch_size": 8},
        run={"checkpoint_interval": 0, "tensorboard": False, "device": "cpu"},
        output_dir=str(out),
        optim={"warmup_steps": 0},
    )
    for key, value in kw.items():  # a section's keys merge into the base's
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return apply(ppo.PPOConfig(), base, "test")


def _trainer(inp, kind, reward_fn=None, **kw):
    cfg = _cfg(inp, kind, "/nonexistent", **kw)
    tok = inp["tokenizer"]
    policy, ref = load_causal_lm(cfg.policy), load_causal_lm(cfg.policy)
    rm, value = ValueModel(load_reward_model(cfg.reward_model)), ValueModel(load_reward_model(cfg.reward_model))
    blocks = pack_documents(list(load_dataset_any(inp["corpus"])["text"]), tok, 32)
    return ppo.PPOTrainer(cfg, policy, ref, rm, value, tok, Accelerator(cpu=True), blocks, reward_fn), cfg, blocks


def _prompt_ids(inp, n=8):
    rows = [json.loads(l) for l in open(inp["prompts"])][:n]
    return [encode_prompt(inp["tokenizer"], r["prompt"]) for r in rows]


def _right_pad(seqs, pad):
    w = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (w - len(s)) for s in seqs])
    return ids, (torch.arange(w) < torch.tensor([len(s) for s in seqs]).unsqueeze(-1)).long()


# ------------------------------------------------------------------ one iteration, end to end


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
def test_one_iteration_end_to_end(rlhf_inputs, tmp_path, kind):
    cfg = _cfg(rlhf_inputs, kind, tmp_path / kind, ptx={"coef": 0.5})
    summary = ppo.run(cfg)
    rec = [m for m in read_metrics(tmp_path / kind) if m["step"] == 1 and "kl" in m][0]
    for key in (
        "rm_score_mean",
        "rm_score_std",
        "kl",
        "kl_k3",
        "beta",
        "entropy",
        "clipfrac",
        "approx_kl",
        "vf_loss",
        "pg_loss",
        "explained_var",
        "response_len",
        "eos_frac",
        "ptx_loss",
        "t_rollout",
        "t_score",
        "t_update",
    ):
        assert key in rec and math.isfinite(rec[key]), key
    # policy == reference before the first update: the KL is exactly 0 ...
    assert rec["kl"] == 0.0 and rec["kl_k3"] == 0.0
    # ... and on the first minibatch new == old log-probs (dropout is off, GPT-2's config has it on)
    assert rec["first_mb_clipfrac"] == 0.0 and abs(rec["first_mb_approx_kl"]) < 1e-6
    assert summary["iterations"] == 1 and "heldout_rm_score_final" in summary and "pretrain_loss_final" in summary
    # saved policy and value model load with plain transformers / load_reward_model
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / kind)
    assert load_reward_model(str(tmp_path / kind / "value_model")).config.reward_shift == REWARD_SHIFT


# ------------------------------------------------------------------------- scoring and rewards


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_rewards_score_at_last_token_and_missing_eos_penalty(rlhf_inputs, mode):
    trainer, cfg, _ = _trainer(rlhf_inputs, "llama", no_eos_mode=mode, no_eos_penalty=-3.0)
    tok = rlhf_inputs["tokenizer"]
    EOS, PAD = tok.eos_token_id, tok.pad_token_id
    prompts = _prompt_ids(rlhf_inputs, 3)
    responses = [[40, 41, EOS, PAD], [42, 43, 44, 45], [EOS, PAD, PAD, PAD]]  # row 1 never ended
    masks = [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    Tq = max(len(p) for p in prompts)
    query = torch.tensor([[PAD] * (Tq - len(p)) + p for p in prompts])
    ro = Rollout(
        query,
        (query != PAD).long(),
        torch.tensor(responses),
        torch.tensor(masks),
        torch.tensor([True, False, True]),
        None,
    )
    exp, stats = trainer.score(ro)
    assert stats["kl"] == 0.0
    # RM score = score() of the unpadded prompt + response (+ EOS appended where it was missing), shift subtracted
    seqs = [p + [t for t, m in zip(r, mk) if m] for p, r, mk in zip(prompts, responses, masks)]
    seqs[1] = seqs[1] + [EOS]
    ids, mask = _right_pad(seqs, PAD)
    with torch.no_grad():
        expected = score(trainer.rm.model, ids, mask)
        raw_unshifted = score(trainer.rm.model, ids, mask, shifted=False)
    torch.testing.assert_close(expected, raw_unshifted - REWARD_SHIFT)
    want = expected.clone()
    want[1] = -3.0 if mode == "replace" else expected[1] - 3.0
    torch.testing.assert_close(exp.scores, want, atol=1e-5, rtol=0)
    # rewards: the score at each row's last response token, nothing elsewhere (KL part is 0 here)
    last = [2, 3, 0]
    for b in range(3):
        row = exp.rewards[b]
        assert row[last[b]].item() == pytest.approx(want[b].item(), abs=1e-5)
        assert torch.count_nonzero(torch.cat([row[: last[b]], row[last[b] + 1 :]])) == 0
    # GAE outputs are zero past the end of each response
    assert (exp.advantages[exp.response_mask == 0] == 0).all() and (exp.returns[exp.response_mask == 0] == 0).all()


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_value_head_initialised_from_reward_model(rlhf_inputs, kind):
    rm = load_reward_model(rlhf_inputs[f"{kind}_rm"]).eval()
    value = ValueModel(load_reward_model(rlhf_inputs[f"{kind}_rm"])).eval()
    tok = rlhf_inputs["tokenizer"]
    p = encode_prompt(tok, "What colour is Bruk?")
    r = encode_response(tok, "Bruk is red.")  # ends with EOS
    ids = torch.tensor([p + r])
    with torch.no_grad():
        v_all = value(ids, torch.ones_like(ids))
        full = score(rm, ids, torch.ones_like(ids))  # shifted RM score of the whole response
        # the value read at the last response token (EOS) is the RM's score
        torch.testing.assert_close(last_token_values(v_all, torch.ones_like(ids)), full, atol=1e-5, rtol=0)
        # the PPO values V(s_t) (state before token t) are the RM scores of the prefixes prompt + r[:t]
        v = response_values(v_all, len(p), len(r))[0]
        for t in range(len(r)):
            prefix = torch.tensor([p + r[:t]])
            torch.testing.assert_close(v[t], score(rm, prefix, torch.ones_like(prefix))[0], atol=1e-5, rtol=0)
        # left padding does not change values (positions come from the mask)
        pad = torch.tensor([[tok.pad_token_id] * 3 + p + r])
        m = (torch.arange(pad.shape[1]) >= 3).long().unsqueeze(0)
        torch.testing.assert_close(value(pad, m)[:, 3:], v_all, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------- behaviour


def test_reward_for_a_token_raises_its_probability(rlhf_inputs):
    tok = rlhf_inputs["tokenizer"]
    target = tok.convert_tokens_to_ids("red") if "red" in tok.get_vocab() else 100
    prompts = _prompt_ids(rlhf_inputs, 32)
    w = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (w - len(p)) + p for p in prompts])
    mask = (ids != tok.pad_token_id).long()

    def reward_fn(ro, records):  # a huge signal: +10 per occurrence of the target token
        return 10.0 * ((ro.response == target) & ro.response_mask.bool()).float().sum(-1)

    def p_target(model):
        from alignlab.rollout.scoring import position_ids_from_mask

        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits[:, -1]
        return torch.softmax(logits, -1)[:, target].mean().item()

    cfg = _cfg(
        rlhf_inputs,
        "llama",
        "/nonexistent",
        optim={"lr": 3e-3},
        value_lr=1e-3,
        batch_size=32,
        minibatch_size=16,
        rollout={"max_new_tokens": 6},
        ppo_epochs=2,
        kl={"beta": 0.0},
        no_eos_penalty=0.0,
        no_eos_mode="add",
    )
    policy, ref = load_causal_lm(cfg.policy), load_causal_lm(cfg.policy)
    # A random tiny model is near-uniform over 320 tokens, so the target would almost never be
    # sampled; tilt its (tied) embedding towards the mean final hidden state so it starts at a
    # few percent, in both the policy and the reference.
    with torch.no_grad():
        h = policy(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1][:, -1].mean(0)
        for m in (policy, ref):
            m.get_input_embeddings().weight[target] += 2.5 * h / h.dot(h)
    value = ValueModel(load_reward_model(cfg.reward_model))
    value.model.score.weight.data.zero_()  # a flat baseline: the random head's per-token noise would swamp the signal
    trainer = ppo.PPOTrainer(cfg, policy, ref, None, value, tok, Accelerator(cpu=True), None, reward_fn)
    before = p_target(policy)
    for it in range(5):
        stats = trainer.iteration(it, prompts).stats
    after = p_target(policy)
    assert 0.01 < before < 0.2 and after > 2 * before, (before, after)
    assert stats["rm_score_mean"] > 0


def test_ptx_lowers_pretraining_loss(rlhf_inputs):
    prompts = _prompt_ids(rlhf_inputs, 8)
    losses = {}
    for coef in (0.0, 1.0):
        torch.manual_seed(0)
        trainer, cfg, blocks = _trainer(
            rlhf_inputs, "llama", ptx={"coef": coef}, optim={"lr": 1e-3}, batch_size=8, minibatch_size=4
        )
        for it in range(3):
            trainer.iteration(it, prompts)
        with torch.no_grad():
            x = blocks[:16]
            losses[coef] = trainer.policy(input_ids=x, labels=x).loss.item()
    assert losses[1.0] < losses[0.0] - 0.05, losses


# ------------------------------------------------------------------------------------- resume


def check_resume_matches_uninterrupted(cfg, tmp_path) -> tuple:
    """Run ``cfg`` (4 iterations, a checkpoint every 2) whole, then a copy resumed from its iteration-2
    checkpoint: the same metrics at every iteration (beta trajectory included) and the same final numbers.
    Returns (full folder, resumed folder, resumed metrics) for a caller's further checks."""
    full = tmp_path / "full"
    s_full = ppo.run(apply(cfg, {"output_dir": str(full)}, "test"))
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)  # its checkpoint/ is the one written after iteration 2
    assert json.loads((resumed / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    s_res = ppo.run(apply(cfg, {"output_dir": str(resumed), "run": {"resume": True}}, "test"))
    assert s_res["resumed_from_iteration"] == 2

    def lines(d):
        return [
            {k: v for k, v in m.items() if k != "time" and not k.startswith("t_") and "per_sec" not in k}
            for m in read_metrics(d)
        ]

    assert lines(resumed) == lines(full)  # same iterations 3-4, same beta trajectory, same final numbers
    for k in ("heldout_rm_score_final", "final_kl", "final_beta", "pretrain_loss_final"):
        assert s_res[k] == s_full[k], k
    return full, resumed, lines(full)


def test_resume_matches_uninterrupted(rlhf_inputs, tmp_path):
    settings = dict(iterations=4, run={"checkpoint_interval": 2}, batch_size=8, kl={"adaptive": True, "horizon": 100})
    check_resume_matches_uninterrupted(_cfg(rlhf_inputs, "llama", tmp_path / "full", **settings), tmp_path)


# ------------------------------------------------------------------------------ the KL leash


def test_adaptive_kl_is_fed_the_logged_k1_and_raises_beta_above_target(rlhf_inputs, tmp_path, monkeypatch):
    """The controller gets the k1 estimate the run logs as `kl` (KLConfig.target's help names it), and
    beta moves the way the run logs it: down while the KL is below the target (iteration 1: the policy
    is still the reference, KL exactly 0), up once it is above."""
    from alignlab.rl.kl import AdaptiveKLController

    fed = []
    update = AdaptiveKLController.update

    def spy(self, current_kl, n_steps):
        fed.append((current_kl, n_steps, self.beta))
        return update(self, current_kl, n_steps)

    monkeypatch.setattr(AdaptiveKLController, "update", spy)
    target, horizon = 1e-3, 40
    cfg = _cfg(
        rlhf_inputs,
        "llama",
        tmp_path / "kl",
        iterations=4,
        optim={"lr": 3e-3},
        ptx={"data": ""},
        kl={"adaptive": True, "beta": 0.1, "target": target, "horizon": horizon},
    )
    summary = ppo.run(cfg)
    rows = [m for m in read_metrics(tmp_path / "kl") if "kl" in m]
    assert len(rows) == len(fed) == 4
    assert [kl for kl, _, _ in fed] == [m["kl"] for m in rows]  # the logged k1, not the k3 beside it
    assert any(m["kl"] != m["kl_k3"] for m in rows)
    assert [n for _, n, _ in fed] == [cfg.batch_size] * 4  # episodes per iteration
    betas = [m["beta"] for m in rows]
    assert betas == [beta for _, _, beta in fed] and betas[0] == 0.1
    after = betas[1:] + [summary["final_beta"]]  # beta after each iteration's update (the summary rounds it)
    for i in range(4):
        error = min(max(rows[i]["kl"] / target - 1, -0.2), 0.2)
        assert after[i] == pytest.approx(betas[i] * (1 + error * cfg.batch_size / horizon), rel=1e-12, abs=1e-6)
    assert rows[0]["kl"] == 0.0 and betas[1] < betas[0]
    above = [i for i in range(3) if rows[i]["kl"] > target]
    assert above, [m["kl"] for m in rows]  # the policy moved past the (tiny) target
    assert all(betas[i + 1] > betas[i] for i in above)


# ----------------------------------------------------------------------------------- config


def test_old_flat_keys_still_work_with_a_warning():
    from alignlab.config import renamed_keys, resolve

    old = {
        "ptx_coef": 0.5,
        "warmup_iterations": 3,
        "adam_eps": 1e-6,
        "eval_prompts": 4,
        "rollout_backend": "transformers",
        "max_new_tokens": 9,
        "lr": 1e-3,
        "seed": 2,
        "checkpoint_interval": 5,
        "tokenizer": "tok",
    }
    with pytest.warns(FutureWarning, match="'ptx_coef' is now 'ptx.coef'"):
        cfg = apply(ppo.PPOConfig(), old, "test")
    assert (cfg.ptx.coef, cfg.optim.warmup_steps, cfg.optim.eps, cfg.eval.prompts) == (0.5, 3, 1e-6, 4)
    assert (cfg.rollout.backend, cfg.rollout.max_new_tokens, cfg.optim.lr) == ("transformers", 9, 1e-3)
    assert (cfg.run.seed, cfg.run.checkpoint_interval, cfg.source.tokenizer) == (2, 5, "tok")
    defaults = ppo.PPOConfig()
    for new in renamed_keys(ppo.PPOConfig).values():  # every old key has a real place
        node = defaults
        for part in new.split("."):
            node = getattr(node, part)
    # PPO's own defaults in the shared sections (the betas are make_optimizer's default)
    assert (defaults.optim.lr, defaults.optim.eps, defaults.optim.warmup_steps) == (4e-5, 1e-5, 2)
    assert (defaults.optim.min_lr_ratio, defaults.optim.beta1, defaults.optim.beta2, defaults.optim.grad_clip) == (
        0.0,
        0.9,
        0.95,
        1.0,
    )
    assert (defaults.run.log_interval, defaults.run.checkpoint_interval) == (1, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the presets use the new keys
        for name in ppo.PRESETS:
            resolve(ppo.PPOConfig, ppo.PRESETS, name)


def test_linear_schedule_decays_to_min_lr_ratio():
    from alignlab.stages.ppo_setup import lr_schedule

    def lrs(min_lr_ratio):
        cfg = apply(
            ppo.PPOConfig(), {"lr_schedule": "linear", "iterations": 5, "optim": {"min_lr_ratio": min_lr_ratio}}, "t"
        )
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = lr_schedule(opt, cfg, updates_per_iteration=2)
        out = []
        for _ in range(10):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out + [sched.get_last_lr()[0]]

    to_zero, to_half = lrs(0.0), lrs(0.5)
    assert to_zero[:5] == to_half[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]  # warmup: 2 iterations x 2 updates
    assert to_zero[-1] == 0.0 and to_half[-1] == pytest.approx(0.5)
    for a, b in zip(to_zero[4:], to_half[4:]):
        assert b == pytest.approx(0.5 + 0.5 * a)
