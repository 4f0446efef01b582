"""The last decoder layer on the tail columns only (rollout/tail_layer.py): same numbers there, on
Llama (also with grouped-query attention and LoRA); other architectures run unchanged."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from alignlab.rollout.tail_layer import last_decoder_layer, tail_only_last_layer


def _llama(kv_heads=4):
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
        pad_token_id=0,
    )


def _inputs(P=3, W=20):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (P, W), generator=g)
    pos = torch.arange(W).repeat(P, 1)
    causal = torch.tril(torch.ones(W, W, dtype=torch.bool))
    mask = torch.where(causal, 0.0, torch.finfo(torch.float32).min).expand(P, 1, W, W)
    return dict(input_ids=ids, position_ids=pos, attention_mask=mask)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_tail_columns_and_their_gradients_match_the_full_layer(kv_heads):
    torch.manual_seed(0)
    model, K = LlamaForCausalLM(_llama(kv_heads)), 7
    x = _inputs()
    outs, grads = [], []
    for tail in (False, True):
        model.zero_grad()
        if tail:
            with tail_only_last_layer(model, K, x["input_ids"].shape[1]) as used:
                logits = model(**x, logits_to_keep=K).logits
            assert used
        else:
            logits = model(**x).logits[:, -K:]
        logits.square().mean().backward()
        outs.append(logits.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    assert "forward" not in vars(last_decoder_layer(model))  # the class's forward is back


def test_found_through_peft_and_not_for_gpt2():
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(LlamaForCausalLM(_llama()), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert last_decoder_layer(lora) is not None
    x = _inputs()
    with torch.no_grad():
        full = lora(**x).logits[:, -5:]
        with tail_only_last_layer(lora, 5, 20) as used:
            tail = lora(**x, logits_to_keep=5).logits
    assert used
    torch.testing.assert_close(tail, full, atol=1e-5, rtol=1e-5)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    with tail_only_last_layer(gpt2, 5, 20) as used:
        assert not used
