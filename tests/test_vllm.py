"""vLLM rollout backend on a GPU: sampled log-probs = scorer log-probs, EOS handling, weight pushes
reach the engine, and a short PPO run with rollout_backend="vllm". Skipped (with the reason) unless
the ``vllm`` package imports and CUDA is available; ``scripts/gpu_check.sh`` runs it on a GPU machine."""

import json

import pytest
import torch

from alignlab.rollout.backends import vllm_unavailable_reason
from fixtures_rlhf import rlhf_inputs  # noqa: F401

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        vllm_unavailable_reason() is not None, reason=f"vLLM backend not testable here: {vllm_unavailable_reason()}"
    ),
]


@pytest.fixture(scope="module")
def policy_and_backend(rlhf_inputs):
    from alignlab.models.load import load_causal_lm
    from alignlab.rollout.backends import make_rollout_backend

    policy = load_causal_lm(rlhf_inputs["llama_policy"]).cuda().eval()
    backend = make_rollout_backend(
        "vllm", policy, rlhf_inputs["tokenizer"], max_model_len=96, gpu_memory_utilization=0.2
    )
    return policy, backend


def _prompts(inp, n=16):
    from alignlab.data.chat import encode_prompt

    return [encode_prompt(inp["tokenizer"], json.loads(l)["prompt"]) for l in open(inp["prompts"])][:n]


def test_vllm_logprobs_match_scorer_and_eos_layout(rlhf_inputs, policy_and_backend):
    from alignlab.rollout.scoring import sequence_logprobs

    policy, backend = policy_and_backend
    T, eos = 0.8, rlhf_inputs["tokenizer"].eos_token_id
    ro = backend.generate(_prompts(rlhf_inputs), max_new_tokens=12, temperature=T, seed=0)
    with torch.no_grad():
        scored = sequence_logprobs(policy, ro.input_ids, ro.attention_mask, ro.response_start, T).logprobs
    m = ro.response_mask.bool()
    assert ro.logprobs is not None
    # different kernels, same float32 model: agreement to float tolerance, not bit-exactness
    torch.testing.assert_close(ro.logprobs[m], scored[m], atol=2e-3, rtol=0)
    for row, mk, ended in zip(ro.response, ro.response_mask, ro.ended_with_eos):
        n = int(mk.sum())
        assert (row[n - 1] == eos) == bool(ended) and (ended or n == 12)


def test_vllm_sync_weights_reaches_the_engine(rlhf_inputs, policy_and_backend):
    """After a weight push the engine's log-probs are those of the changed policy, not of its folder."""
    from alignlab.rollout.scoring import sequence_logprobs

    policy, backend = policy_and_backend
    saved = policy.model.norm.weight.detach().clone()
    try:
        with torch.no_grad():
            policy.model.norm.weight.mul_(4.0)  # logits x4: a much sharper policy
        backend.sync_weights(policy)
        ro = backend.generate(_prompts(rlhf_inputs), max_new_tokens=8, temperature=1.0, seed=1)
        m = ro.response_mask.bool()
        with torch.no_grad():
            now = sequence_logprobs(policy, ro.input_ids, ro.attention_mask, ro.response_start).logprobs
            policy.model.norm.weight.copy_(saved)
            before = sequence_logprobs(policy, ro.input_ids, ro.attention_mask, ro.response_start).logprobs
        torch.testing.assert_close(ro.logprobs[m], now[m], atol=2e-3, rtol=0)
        assert (ro.logprobs[m] - before[m]).abs().max() > 0.1
    finally:
        with torch.no_grad():
            policy.model.norm.weight.copy_(saved)
        backend.sync_weights(policy)


def test_ppo_runs_with_vllm_rollouts(rlhf_inputs, tmp_path):
    from alignlab.config import apply
    from alignlab.outputs import read_metrics
    from alignlab.stages import ppo

    cfg = apply(
        ppo.PPOConfig(),
        dict(
            policy=rlhf_inputs["llama_policy"],
            reward_model=rlhf_inputs["llama_rm"],
            data=rlhf_inputs["prompts"],
            world_dir="",
            eval={"data": ""},
            ptx={"data": ""},
            iterations=2,
            batch_size=8,
            minibatch_size=4,
            ppo_epochs=1,
            rollout={"max_new_tokens": 8, "backend": "vllm", "vllm_gpu_memory": 0.2},
            run={"checkpoint_interval": 0, "tensorboard": False, "device": "cuda"},
            output_dir=str(tmp_path),
        ),
        "test",
    )
    ppo.run(cfg)
    rec = [m for m in read_metrics(tmp_path) if "kl" in m]
    assert len(rec) == 2 and rec[0]["first_mb_clipfrac"] == 0.0 and abs(rec[0]["first_mb_approx_kl"]) < 1e-4
