"""Sample responses with Hugging Face ``generate`` (KV cache, left padding) in the PPO layout.

Layout returned (the one ``sequence_logprobs`` and the PPO stage consume):
    query    [N, Tq]  left-padded prompt ids     query_mask    1 on real prompt tokens
    response [N, R]   right-padded response ids  response_mask 1 up to and including EOS
so ``cat(query, response)`` is one sequence per row and the response starts at column Tq.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from alignlab.rollout.scoring import logprobs_from_logits


@dataclass
class Rollout:
    query: Tensor  # [N, Tq] long, left-padded with pad_token_id
    query_mask: Tensor  # [N, Tq] long
    response: Tensor  # [N, R] long, truncated right after the first EOS, pad_token_id after
    response_mask: Tensor  # [N, R] long, 1 up to and including EOS (all R' tokens if no EOS)
    ended_with_eos: Tensor  # [N] bool; False = hit max_new_tokens (gets the missing-EOS penalty)
    texts: list[str] | None  # decoded responses without EOS/pad; None when no tokenizer given
    logprobs: Tensor | None = None  # [N, R] float, only if requested: log-probs of the sampled tokens
    # under the distribution actually sampled from (after temperature/top-k/top-p; untempered
    # logits when greedy); 0 on padding. Recompute with sequence_logprobs for PPO's old log-probs.

    @property
    def input_ids(self) -> Tensor:  # [N, Tq + R]
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # [N, Tq + R]
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def response_start(self) -> int:
        return self.query.shape[1]


def truncate_after_eos(
    response: Tensor, eos_token_id: int | Sequence[int], pad_token_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """[N, R] raw generated ids -> (response with pad after the first EOS, mask [N, R] that is 1
    up to and including the first EOS, ended_with_eos [N]). Rows without EOS keep every token.
    Backend-independent (HF generate, vLLM)."""
    eos = torch.as_tensor(eos_token_id, device=response.device).reshape(-1)
    is_eos = torch.isin(response, eos)  # [N, R]
    ended = is_eos.any(-1)
    # count of EOS strictly before t == 0  <=>  t is at or before the first EOS
    before = torch.cumsum(is_eos.long(), -1) - is_eos.long()
    mask = (before == 0).long()
    return response.masked_fill(mask == 0, pad_token_id), mask, ended


def _left_pad(rows: list[list[int]], pad: int, width: int) -> tuple[Tensor, Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def _right_pad(x: Tensor, width: int, value: float) -> Tensor:  # [L] -> [width]
    return torch.nn.functional.pad(x.cpu(), (0, width - x.shape[0]), value=value)


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
    sampling = temperature > 0
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
        min_length=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        return_dict_in_generate=True,
        output_scores=return_logprobs,
    )
    if sampling:
        gen_kwargs.update(
            temperature=temperature, top_k=top_k, top_p=top_p, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
        )

    order = sorted(range(len(prompts_ids)), key=lambda i: -len(prompts_ids[i]))  # stable
    results: list[tuple[list[int], Tensor, Tensor | None]] = [None] * len(prompts_ids)  # type: ignore[list-item]
    was_training = model.training
    model.eval()
    try:
        with _rng_scope(seed, device):
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                rows = [list(prompts_ids[i]) for i in idx]
                ids, mask = _left_pad(rows, pad_token_id, max(len(r) for r in rows))
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


def assemble_rollout(
    results: list[tuple[list[int], Tensor, Tensor | None]],
    tokenizer,
    eos_token_id,
    pad_token_id: int,
    device: torch.device,
    return_logprobs: bool,
) -> Rollout:
    """Per-prompt (prompt ids, raw generated ids, their log-probs or None), in the original order,
    -> one ``Rollout``: queries left-padded, responses cut after the first EOS and right-padded
    to the longest. Shared by every rollout backend, so all return the same layout."""
    R = max(r[1].shape[0] for r in results)
    query, query_mask = _left_pad([r[0] for r in results], pad_token_id, max(len(r[0]) for r in results))
    raw = torch.stack([_right_pad(r[1], R, pad_token_id) for r in results])
    response, response_mask, ended = truncate_after_eos(raw, eos_token_id, pad_token_id)
    logprobs = None
    if return_logprobs:
        logprobs = torch.stack([_right_pad(r[2], R, 0.0) for r in results]) * response_mask
        logprobs = logprobs.to(device)
    texts = None
    if tokenizer is not None:
        eos = set(torch.as_tensor(eos_token_id).reshape(-1).tolist())
        texts = [
            tokenizer.decode([t for t in row[m.bool()].tolist() if t not in eos], skip_special_tokens=True)
            for row, m in zip(response, response_mask)
        ]
    query, query_mask, response, response_mask, ended = (
        t.to(device) for t in (query, query_mask, response, response_mask, ended)
    )
    return Rollout(query, query_mask, response, response_mask, ended, texts, logprobs)
