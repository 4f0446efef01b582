"""The PPO layout of a batch of sampled responses, shared by every rollout backend.

    query    [N, Tq]  left-padded prompt ids     query_mask    1 on real prompt tokens
    response [N, R]   right-padded response ids  response_mask 1 up to and including EOS

so ``cat(query, response)`` is one sequence per row and the response starts at column Tq.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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


def left_pad(rows: list[list[int]], pad: int, width: int) -> tuple[Tensor, Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def right_pad(x: Tensor, width: int, value: float) -> Tensor:  # [L] -> [width]
    return torch.nn.functional.pad(x.cpu(), (0, width - x.shape[0]), value=value)


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
    query, query_mask = left_pad([r[0] for r in results], pad_token_id, max(len(r[0]) for r in results))
    raw = torch.stack([right_pad(r[1], R, pad_token_id) for r in results])
    response, response_mask, ended = truncate_after_eos(raw, eos_token_id, pad_token_id)
    logprobs = None
    if return_logprobs:
        logprobs = torch.stack([right_pad(r[2], R, 0.0) for r in results]) * response_mask
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


def with_eos(input_ids: torch.Tensor, attention_mask: torch.Tensor, ended: torch.Tensor, eos_id: int, pad_id: int):
    """Append one column; rows that did not end with EOS get an EOS there (the RM was trained
    on prompt + response + EOS and reads its score at the EOS), others get padding."""
    col = torch.where(
        ended, torch.full_like(ended, pad_id, dtype=torch.long), torch.full_like(ended, eos_id, dtype=torch.long)
    )
    ids = torch.cat([input_ids, col.unsqueeze(-1)], dim=1)
    mask = torch.cat([attention_mask, (~ended).long().unsqueeze(-1)], dim=1)
    return ids, mask
