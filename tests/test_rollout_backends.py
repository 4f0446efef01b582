"""Rollout backends: the transformers backend's KV-cache sampler (same distribution as HF generate,
sampled log-probs = scorer log-probs, EOS handling, seeding) and clear errors for an unavailable vLLM."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignlab.rollout.backends import TransformersBackend, make_rollout_backend, vllm_unavailable_reason
from alignlab.rollout.kv_sampler import sample_with_kv_cache
from alignlab.rollout.scoring import sequence_logprobs

PAD, EOS = 0, 2


class _Tok:  # what a backend needs from a tokenizer
    eos_token_id, pad_token_id = EOS, PAD

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
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
    )
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # a peaked next-token distribution (a random tiny model is near-uniform)
        m.model.norm.weight.mul_(6.0)
    return m


def _prompts(n=24):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, 64, (int(k),), generator=g).tolist() for k in torch.randint(1, 9, (n,), generator=g)]


def test_sampled_logprobs_equal_scorer_logprobs(model):
    T = 0.7
    backend = TransformersBackend(model, _Tok(), batch_size=7)
    ro = backend.generate(_prompts(), max_new_tokens=12, temperature=T, seed=0)
    with torch.no_grad():
        scored = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.response_start, T).logprobs
        untempered = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.response_start, 1.0).logprobs
    m = ro.response_mask.bool()
    torch.testing.assert_close(ro.logprobs[m], scored[m], atol=1e-4, rtol=0)
    assert (ro.logprobs[~m] == 0).all()
    assert (untempered[m] - ro.logprobs[m]).abs().max() > 1e-2  # the temperature is really applied


def test_eos_order_and_seeding(model):
    prompts = _prompts()
    state = torch.get_rng_state()
    ro = sample_with_kv_cache(model, _Tok(), prompts, 10, 2.0, batch_size=5, seed=123)
    assert torch.equal(torch.get_rng_state(), state)  # seeded sampling leaves the global RNG alone
    for i, p in enumerate(prompts):  # original order, left-padded queries
        assert ro.query[i][ro.query_mask[i].bool()].tolist() == p
    assert ro.ended_with_eos.any() and not ro.ended_with_eos.all()
    for row, mk, ended in zip(ro.response, ro.response_mask, ro.ended_with_eos):
        n = int(mk.sum())
        assert mk[:n].all() and not mk[n:].any() and (row[n:] == PAD).all()
        assert (row[: n - 1] != EOS).all() and (row[n - 1] == EOS) == bool(ended)
        assert ended or n == 10
    assert ro.texts is not None and len(ro.texts) == len(prompts)
    again = sample_with_kv_cache(model, _Tok(), prompts, 10, 2.0, batch_size=5, seed=123)
    other = sample_with_kv_cache(model, _Tok(), prompts, 10, 2.0, batch_size=5, seed=7)
    assert torch.equal(again.response, ro.response) and not torch.equal(other.response, ro.response)


def _chi2(samples: torch.Tensor, probs: torch.Tensor) -> float:
    observed = torch.bincount(samples, minlength=probs.shape[0]).double()
    expected = probs.double() * samples.numel()
    return float(((observed - expected) ** 2 / expected).sum())


def test_sampled_tokens_follow_the_tempered_model_distribution(model):
    """Chi-square of the sampled first and second tokens against softmax(logits / T) (64 categories:
    63 degrees of freedom, mean 63, sd 11); the untempered distribution is rejected (fixed seed: not flaky)."""
    T, n, prompt = 0.6, 4000, [5, 6, 7]
    ro = sample_with_kv_cache(
        model, None, [prompt] * n, 2, T, batch_size=1000, eos_token_id=EOS, pad_token_id=PAD, seed=0
    )
    with torch.no_grad():
        logits0 = model(torch.tensor([prompt])).logits[0, -1]
    assert _chi2(ro.response[:, 0], torch.softmax(logits0 / T, -1)) < 63 + 4 * 11
    assert _chi2(ro.response[:, 0], torch.softmax(logits0, -1)) > 300
    # the second token (from the KV-cached step) after the most frequent non-EOS first token
    counts = torch.bincount(ro.response[:, 0], minlength=64)
    counts[EOS] = 0
    a = int(counts.argmax())
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([prompt + [a]])).logits[0, -1] / T, -1)
    assert _chi2(ro.response[ro.response[:, 0] == a, 1], p1) < 63 + 4 * 11


def test_backend_choice_and_clear_errors(model):
    assert isinstance(make_rollout_backend("transformers", model, _Tok()), TransformersBackend)
    with pytest.raises(ValueError, match="rollout_backend must be one of"):
        make_rollout_backend("sglang", model, _Tok())
    reason = vllm_unavailable_reason()
    if reason is None:
        pytest.skip("vllm and CUDA are available here: tests/test_vllm.py covers the backend")
    with pytest.raises(ValueError, match="rollout_backend='vllm'"):
        make_rollout_backend("vllm", model, _Tok())
