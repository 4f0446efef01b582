"""Packed scoring (rollout/packed.py) gives the padded layout's numbers for less work, on Llama and GPT-2."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from alignlab.models.value_model import ValueModel, last_token_values, response_values
from alignlab.rollout.generate import generate_responses
from alignlab.rollout.packed import (
    pack_sequences,
    packed_last_values,
    packed_logprobs,
    packed_values,
    packing_matches_padding,
)
from alignlab.rollout.scoring import sequence_logprobs
from fixtures_rlhf import rlhf_inputs  # noqa: F401

PAD, EOS = 0, 2


def _llama(**kw):
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=1,
        **kw,
    )


@pytest.fixture(scope="module")
def rollout():
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama()).eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 64, (int(n),), generator=g).tolist() for n in torch.randint(1, 12, (24,), generator=g)]
    return generate_responses(model, None, prompts, 20, 1.5, batch_size=24, eos_token_id=EOS, pad_token_id=PAD, seed=1)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_packed_logprobs_and_entropy_equal_padded(rollout, kind):
    torch.manual_seed(1)
    model = (
        LlamaForCausalLM(_llama())
        if kind == "llama"
        else GPT2LMHeadModel(
            GPT2Config(
                vocab_size=64,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_positions=128,
                bos_token_id=1,
                eos_token_id=EOS,
                pad_token_id=PAD,
            )
        )
    ).eval()
    ro, T = rollout, 0.7
    packed = pack_sequences(ro.input_ids, ro.attention_mask, ro.response_start, hidden_size=32)
    with torch.no_grad():
        padded = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.response_start, T, return_entropy=True)
        got = packed_logprobs(model, packed, T, return_entropy=True)
    m = ro.response_mask.bool()
    torch.testing.assert_close(got.logprobs[m], padded.logprobs[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(got.entropy[m], padded.entropy[m], atol=1e-5, rtol=0)
    assert (got.logprobs[~m] == 0).all()  # response padding is 0, not garbage
    # every real token is there exactly once, and packing needs fewer token slots than padding
    assert int((packed.segments >= 0).sum()) == int(ro.attention_mask.sum())
    assert packed.input_ids.numel() < ro.input_ids.numel()
    assert packed.tail_width < packed.input_ids.shape[1]  # the LM head skips the prompt prefixes


def test_packed_values_and_rm_scores_equal_padded(rollout):
    torch.manual_seed(2)
    vm = ValueModel(LlamaForSequenceClassification(_llama(num_labels=1))).eval()
    ro = rollout
    packed = pack_sequences(ro.input_ids, ro.attention_mask, ro.response_start)
    with torch.no_grad():
        v_all = vm(ro.input_ids, ro.attention_mask)
        values = packed_values(vm, packed)
        last = packed_last_values(vm, packed)
    m = ro.response_mask.bool()
    torch.testing.assert_close(values[m], response_values(v_all, ro.response_start, m.shape[1])[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(last, last_token_values(v_all, ro.attention_mask), atol=1e-5, rtol=0)


def test_packed_gradients_equal_padded(rollout):
    """The update trains on packed minibatches: its gradient must be the padded one."""
    ro = rollout
    grads = []
    for pack in (False, True):
        torch.manual_seed(4)
        model = LlamaForCausalLM(_llama())
        if pack:
            lp = packed_logprobs(model, pack_sequences(ro.input_ids, ro.attention_mask, ro.response_start)).logprobs
        else:
            lp = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.response_start).logprobs
        (lp * ro.response_mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_check_falls_back_for_a_model_that_ignores_the_mask(rollout):
    class NoMask(torch.nn.Module):  # drops the attention mask: packed episodes would see each other
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.lm = LlamaForCausalLM(_llama()).eval()

        def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
            return self.lm(input_ids=input_ids, position_ids=position_ids, **kw)

    vm = ValueModel(LlamaForSequenceClassification(_llama(num_labels=1))).eval()
    ro = rollout
    ok, diff = packing_matches_padding(
        LlamaForCausalLM(_llama()).eval(), vm, ro.input_ids, ro.attention_mask, ro.response_start
    )
    assert ok and diff < 1e-4
    ok, diff = packing_matches_padding(NoMask(), vm, ro.input_ids, ro.attention_mask, ro.response_start)
    assert not ok


def test_ppo_iteration_packed_equals_padded(rlhf_inputs):
    """One PPO iteration (same rollout) with pack_sequences on and off: same experience, same update."""
    import json

    from accelerate import Accelerator

    from alignlab.config import apply
    from alignlab.data.chat import encode_prompt
    from alignlab.models.load import load_causal_lm
    from alignlab.models.reward_model import load_reward_model
    from alignlab.stages import ppo

    tok = rlhf_inputs["tokenizer"]
    prompts = [encode_prompt(tok, json.loads(l)["prompt"]) for l in open(rlhf_inputs["prompts"])][:8]
    out = {}
    for pack in (False, True):
        cfg = apply(
            ppo.PPOConfig(),
            dict(
                policy=rlhf_inputs["llama_policy"],
                reward_model=rlhf_inputs["llama_rm"],
                batch_size=8,
                minibatch_size=4,
                ppo_epochs=2,
                rollout={"max_new_tokens": 8, "pack_sequences": pack},
                run={"device": "cpu"},
                optim={"warmup_steps": 0, "lr": 1e-3},
            ),
            "test",
        )
        policy, ref = load_causal_lm(cfg.policy), load_causal_lm(cfg.policy)
        rm, value = ValueModel(load_reward_model(cfg.reward_model)), ValueModel(load_reward_model(cfg.reward_model))
        trainer = ppo.PPOTrainer(cfg, policy, ref, rm, value, tok, Accelerator(cpu=True))
        assert trainer.pack == pack  # the check, run when the trainer is built, kept packing on for Llama
        result = trainer.iteration(0, prompts)
        out[pack] = (result.experience, torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))
    (a, pa), (b, pb) = out[False], out[True]
    assert torch.equal(a.input_ids, b.input_ids)  # same seed, same rollout
    for f in ("old_logprobs", "ref_logprobs", "values", "scores", "advantages", "returns"):
        torch.testing.assert_close(getattr(b, f), getattr(a, f), atol=1e-4, rtol=0, msg=f)
    torch.testing.assert_close(pb, pa, atol=1e-4, rtol=0)
