"""A plain sampling loop over a transformers model's KV cache: the rollout sampler of the
transformers backend.

Why not ``model.generate``: for small models generation is dominated by per-step overhead
(logits processors, stopping criteria, bookkeeping of finished rows), and ``generate`` keeps
computing finished rows until the longest one stops. This loop does one forward per token,
samples from softmax(logits / temperature) exactly as ``generate(do_sample=True, top_k=0,
top_p=1)`` does, and drops each row from the batch (and its KV cache) once it has emitted EOS.

Same distribution as ``generate_responses``: left-padded prompts with positions from the
attention mask; token t ~ softmax(logits_t / T) over the full vocabulary; a row stops at its
first EOS (included in the response) or after ``max_new_tokens``. The draws differ (rows leave
the batch, and a ``torch.Generator`` seeded with ``seed`` replaces the global RNG), not their law.
The log-probs of the sampled tokens come for free: log softmax(logits / T) at the sampled token,
the same quantity ``sequence_logprobs`` recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignlab.rollout.layout import Rollout, assemble_rollout, left_pad
from alignlab.rollout.scoring import _accepts, position_ids_from_mask


def _cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


@torch.no_grad()
def sample_with_kv_cache(
    model: torch.nn.Module,
    tokenizer,  # optional: only used to decode ``texts``
    prompts_ids: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
) -> Rollout:
    """One sampled response per prompt, in the PPO layout, with ``Rollout.logprobs`` filled in
    (log-probs at ``temperature``, 0 on padding). temperature 0 decodes greedily (log-probs 0: there
    is no distribution to score). Prompts are sorted by length (longest first) into batches;
    results come back in the original order.

    A sharded (FSDP2) model runs every forward as a collective, so its ranks sample in lockstep: as
    many batches and steps on every rank as the busiest one needs, a rank whose rows are all done
    running throwaway forwards meanwhile (one all-reduce per step says whether anyone is still
    sampling). Its samples are the same as unsharded; with no prompts it returns None."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    if any(len(p) == 0 for p in prompts_ids):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    device = next(model.parameters()).device
    eos = torch.as_tensor(eos_token_id, device=device).reshape(-1)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)

    order = sorted(range(len(prompts_ids)), key=lambda i: -len(prompts_ids[i]))
    batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    sync = _lockstep(model, device)
    n_batches = len(batches) if sync is None else sync.most(len(batches))
    results: list = [None] * len(prompts_ids)
    was_training = model.training
    model.eval()
    try:
        for b in range(n_batches):
            live = b < len(batches)  # False: a sharded rank with no prompts left, keeping the others company
            if live:
                idx = batches[b]
                rows = [list(prompts_ids[i]) for i in idx]
                ids, mask = left_pad(rows, pad_token_id, max(len(r) for r in rows))
                ids, mask = ids.to(device), mask.to(device)
                n = len(rows)
                tokens = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
                logps = torch.zeros((n, max_new_tokens), device=device)
                alive = torch.arange(n, device=device)  # batch row -> row of `tokens`
                next_pos = mask.sum(-1)  # position of the token about to be sampled, per row
                cache = _cache(model)
                cache_kw = {"cache" if _accepts(model, "cache") else "past_key_values": cache, "use_cache": True}
                first = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}  # no LM head on the prompt
                out = model(
                    input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), **cache_kw, **first
                )
            else:
                _idle_forward(model, device, pad_token_id)
            steps = 0
            for step in range(max_new_tokens):
                if live:
                    if temperature == 0:
                        tok = out.logits[:, -1].argmax(-1)
                    else:
                        logp = torch.log_softmax(out.logits[:, -1].float() / temperature, dim=-1)
                        tok = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
                        logps[alive, step] = logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
                    tokens[alive, step] = tok
                    steps = step + 1
                if step == max_new_tokens - 1:
                    break
                if live:
                    done = torch.isin(tok, eos)
                    if bool(done.any()):  # finished rows leave the batch and the cache
                        keep = (~done).nonzero().squeeze(-1)
                        live = keep.numel() > 0
                        if live:
                            alive, tok, mask, next_pos = alive[keep], tok[keep], mask[keep], next_pos[keep]
                            cache.batch_select_indices(keep)
                # sharded: every rank forwards until the last row on ANY rank is done (a forward is a collective)
                if not (live if sync is None else sync.any(live)):
                    break
                if not live:
                    _idle_forward(model, device, pad_token_id)
                    continue
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                out = model(
                    input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=next_pos.unsqueeze(-1), **cache_kw
                )
                next_pos = next_pos + 1
            if b < len(batches):
                for j, i in enumerate(idx):
                    results[i] = (rows[j], tokens[j, :steps], logps[j, :steps])
    finally:
        model.train(was_training)
    if not results:  # a sharded rank with no prompts of its own: it only kept the others company
        return None
    return assemble_rollout(results, tokenizer, eos_token_id, pad_token_id, device, return_logprobs=True)


class _Lockstep:
    """Agreement between the ranks of a sharded model, one all-reduce per question."""

    def __init__(self, device: torch.device):
        self.device = device

    def most(self, n: int) -> int:
        t = torch.tensor([n], dtype=torch.long, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def any(self, flag: bool) -> bool:
        return self.most(int(flag)) > 0


def _lockstep(model: torch.nn.Module, device: torch.device) -> _Lockstep | None:
    """A :class:`_Lockstep` when ``model`` is sharded over several ranks (FSDP2), else None (no communication)."""
    from alignlab.fsdp import is_sharded

    if is_sharded(model) and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return _Lockstep(device)
    return None


def _idle_forward(model: torch.nn.Module, device: torch.device, pad_token_id: int) -> None:
    """A throwaway one-token forward: the all-gathers of a sharded forward, for a rank with nothing to sample."""
    model(input_ids=torch.full((1, 1), pad_token_id, dtype=torch.long, device=device), use_cache=False)
