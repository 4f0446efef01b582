"""Sample responses with Hugging Face ``generate`` (KV cache, left padding), returned in the PPO
layout of ``rollout/layout.py`` (the one ``sequence_logprobs`` and the PPO stage consume)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor

from alignlab.rollout.layout import Rollout, assemble_rollout, left_pad
from alignlab.rollout.scoring import logprobs_from_logits


def _rng_scope(seed: int | None, device: torch.device):
    """Seeded sampling without touching the caller's global RNG: HF ``generate`` draws from
    the global torch RNG (it takes no Generator), so fork it, seed it, and restore on exit.
    With seed=None sampling consumes the global RNG as usual (a seeded training loop stays
    reproducible). Samples depend on seed AND batching (batch_size, prompt lengths), since
    all batches share one stream; CUDA kernels may add their own nondeterminism."""
    if seed is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def scope():
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(cuda[0]):
                    torch.cuda.manual_seed(seed)
            yield

    return scope()


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module,
    tokenizer,  # optional: only used to decode ``texts``
    prompts_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 16,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    return_logprobs: bool = False,
) -> Rollout:
    """Sample one response per prompt (InstructGPT rollouts: temperature 1, no top-k/top-p).

    temperature > 0 samples (do_sample); temperature == 0 decodes greedily. Every knob that
    changes the sampling distribution is passed explicitly (top_k=0 disables HF's default
    top_k=50; repetition penalty etc. neutral) so checkpoint ``generation_config`` defaults
    cannot make sampling differ from what ``sequence_logprobs`` scores. Note: with top_k/top_p
    the sampled distribution is truncated, and full-softmax scoring no longer equals it.
    Prompts are sorted by length (longest first) into batches to cut padding; results come
    back in the original order, as tensors on the model's device. Eval mode (dropout off)
    during generation, the previous mode restored after.

    Without top-k/top-p (the rollouts, comparisons and evaluations all sample so), the work is
    done by the KV-cache loop of ``kv_sampler.py`` -- the same distribution (or the same greedy
    argmax) with less per-step overhead, and finished rows leave the batch -- rather than by
    ``model.generate``.
    """
    if top_k == 0 and top_p >= 1.0 and getattr(model, "config", None) is not None:  # a transformers model
        from alignlab.rollout.kv_sampler import sample_with_kv_cache

        return sample_with_kv_cache(
            model, tokenizer, prompts_ids, max_new_tokens, temperature, batch_size, eos_token_id, pad_token_id, seed
        )
    if eos_token_id is None or pad_token_id is None:
        eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    if any(len(p) == 0 for p in prompts_ids):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    device = next(model.parameters()).device
    gen_kwargs = _generate_kwargs(max_new_tokens, temperature, top_k, top_p, eos_token_id, pad_token_id)
    gen_kwargs["output_scores"] = return_logprobs

    order = sorted(range(len(prompts_ids)), key=lambda i: -len(prompts_ids[i]))  # stable
    results: list[tuple[list[int], Tensor, Tensor | None]] = [None] * len(prompts_ids)  # type: ignore[list-item]
    was_training = model.training
    model.eval()
    try:
        with _rng_scope(seed, device):
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                rows = [list(prompts_ids[i]) for i in idx]
                ids, mask = left_pad(rows, pad_token_id, max(len(r) for r in rows))
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
                resp = out.sequences[:, ids.shape[1] :]  # [b, R_b]
                lps = None
                if return_logprobs:  # scores = processed logits actually sampled from, one per step
                    steps = torch.stack(out.scores, dim=1)  # [b, R_b, V]
                    lps = logprobs_from_logits(steps, resp)
                for j, i in enumerate(idx):
                    results[i] = (rows[j], resp[j], None if lps is None else lps[j])
    finally:
        model.train(was_training)
    return assemble_rollout(results, tokenizer, eos_token_id, pad_token_id, device, return_logprobs)


def _generate_kwargs(max_new_tokens: int, temperature: float, top_k: int, top_p: float, eos_token_id, pad_token_id):
    """Every ``generate`` knob that changes the sampling distribution, set explicitly (greedy at temperature 0)."""
    kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
        min_length=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        return_dict_in_generate=True,
    )
    if temperature > 0:
        kwargs.update(
            temperature=temperature, top_k=top_k, top_p=top_p, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
        )
    return kwargs
