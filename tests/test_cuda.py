"""The PPO speed path on a CUDA GPU: the KV-cache sampler's log-probs, packed = padded scoring, and a
short PPO run with device="cuda". Skipped without CUDA; ``scripts/gpu_check.sh`` runs it on a GPU machine."""

import math

import pytest
import torch

from fixtures_rlhf import rlhf_inputs  # noqa: F401

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")]


def _rollout(inp, policy, T):
    import json

    from alignlab.data.chat import encode_prompt
    from alignlab.rollout.kv_sampler import sample_with_kv_cache

    prompts = [encode_prompt(inp["tokenizer"], json.loads(l)["prompt"]) for l in open(inp["prompts"])][:24]
    return sample_with_kv_cache(policy, inp["tokenizer"], prompts, 12, T, batch_size=24, seed=0)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_cuda_sampler_logprobs_and_packed_scoring(rlhf_inputs, kind):
    from alignlab.models.load import load_causal_lm
    from alignlab.rollout.packed import pack_sequences, packed_logprobs
    from alignlab.rollout.scoring import sequence_logprobs

    policy = load_causal_lm(rlhf_inputs[f"{kind}_policy"]).cuda().eval()
    T = 0.8
    ro = _rollout(rlhf_inputs, policy, T)
    assert ro.input_ids.is_cuda
    with torch.no_grad():
        padded = sequence_logprobs(policy, ro.input_ids, ro.attention_mask, ro.response_start, T).logprobs
        packed = packed_logprobs(policy, pack_sequences(ro.input_ids, ro.attention_mask, ro.response_start), T).logprobs
    m = ro.response_mask.bool()
    torch.testing.assert_close(ro.logprobs[m], padded[m], atol=1e-3, rtol=0)  # TF32 matmuls may be on
    torch.testing.assert_close(packed[m], padded[m], atol=1e-3, rtol=0)


def test_cuda_ppo_short_run(rlhf_inputs, tmp_path):
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
            eval={"data": rlhf_inputs["prompts"], "prompts": 8},
            ptx={"data": ""},
            iterations=3,
            batch_size=16,
            minibatch_size=8,
            ppo_epochs=2,
            rollout={"max_new_tokens": 12},
            run={"checkpoint_interval": 0, "tensorboard": False, "device": "cuda"},
            output_dir=str(tmp_path),
        ),
        "test",
    )
    summary = ppo.run(cfg)
    rec = [m for m in read_metrics(tmp_path) if "kl" in m]
    assert len(rec) == 3 and all(math.isfinite(r["pg_loss"]) and math.isfinite(r["vf_loss"]) for r in rec)
    assert rec[0]["kl"] == 0.0 and rec[0]["first_mb_clipfrac"] == 0.0
    print(
        f"cuda PPO: {summary['seconds']} s, response tokens/s per iteration "
        f"{[round(r['response_tokens_per_sec'], 1) for r in rec]}"
    )
