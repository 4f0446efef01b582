"""Rollout backends: who samples the PPO episodes. One small interface, two engines.

    backend.generate(prompt_ids, max_new_tokens=..., temperature=..., seed=...) -> Rollout
    backend.sync_weights(policy)   # after each optimiser update: the sampler must follow the policy

* ``transformers`` (default; CPU and GPU): samples from the training policy object itself with
  a KV-cache loop (``rollout/kv_sampler.py``), so there is nothing to copy on sync.
* ``vllm`` (CUDA + the ``vllm`` package; ``rollout/vllm_backend.py``, imported only when asked
  for): a vLLM engine in this process holds its own copy of the weights; ``sync_weights``
  pushes the policy's tensors into it after every update.

Both return the PPO layout (``Rollout``: left-padded queries, responses cut after EOS) with
``logprobs`` of the sampled tokens at the sampling temperature. PPO still recomputes its "old"
log-probs with its own forward (``score``), so a sampler whose numerics differ slightly
(vLLM's kernels, another dtype) changes which samples are drawn, not the PPO maths.
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch

from alignlab.errors import ConfigError
from alignlab.rollout.kv_sampler import sample_with_kv_cache
from alignlab.rollout.layout import Rollout

BACKENDS = ("transformers", "vllm")


class RolloutBackend(Protocol):
    def generate(
        self, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float, seed: int | None = None
    ) -> Rollout: ...

    def sync_weights(self, policy: torch.nn.Module) -> None: ...


class TransformersBackend:
    """Samples from the (unwrapped) policy module with its KV cache, ``batch_size`` prompts at a time."""

    def __init__(self, policy: torch.nn.Module, tokenizer, batch_size: int = 64):
        self.policy, self.tokenizer, self.batch_size = policy, tokenizer, batch_size

    def generate(self, prompt_ids, *, max_new_tokens, temperature, seed=None) -> Rollout:
        return sample_with_kv_cache(
            self.policy, self.tokenizer, prompt_ids, max_new_tokens, temperature, batch_size=self.batch_size, seed=seed
        )

    def sync_weights(self, policy) -> None:
        self.policy = policy  # the same parameters the optimiser updates: nothing to copy


def vllm_unavailable_reason() -> str | None:
    """Why the vLLM backend cannot run here (None when it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "the vllm package is not installed (pip install vllm)"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


def make_rollout_backend(
    name: str,
    policy: torch.nn.Module,
    tokenizer,
    *,
    batch_size: int = 64,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.3,
    seed: int = 0,
) -> RolloutBackend:
    """The backend called ``name`` ("transformers" or "vllm"), ready to sample from ``policy``."""
    if name == "transformers":
        return TransformersBackend(policy, tokenizer, batch_size)
    if name == "vllm":
        reason = vllm_unavailable_reason()
        if reason:
            raise ConfigError(f"rollout_backend='vllm': {reason}; use rollout_backend='transformers'")
        from alignlab.rollout.vllm_backend import VLLMBackend

        return VLLMBackend(
            policy, tokenizer, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, seed=seed
        )
    raise ConfigError(f"rollout_backend must be one of {BACKENDS}, got {name!r}")
