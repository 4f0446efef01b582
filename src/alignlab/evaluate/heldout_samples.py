"""Sample a policy on a FIXED set of held-out prompts and score the answers by the RM and the gold judge.

Used by PPO and DPO to report before/after numbers on the same prompts with the same
sampling seed, so the two measurements differ only by the policy. The policy sees the
``prompt`` column only (rows also carry ``meta`` with the reference answer: that goes
to the judge, never into the prompt).
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any

import torch

from alignlab.data.chat import encode_prompt
from alignlab.models.value_model import ValueModel, last_token_values
from alignlab.rollout.generate import generate_responses


def prompt_of(row: dict[str, Any], column: str = "prompt"):
    """The policy's input from a data row: ``column`` (text or messages), else the context
    of a ``messages`` conversation (everything before the final assistant turn)."""
    if column in row and row[column] is not None:
        return row[column]
    msgs = row.get("messages")
    if msgs:
        return msgs[:-1] if msgs[-1].get("role") == "assistant" else msgs
    raise ValueError(f"row has no '{column}' column and no 'messages' (columns: {sorted(row)})")


def encode_prompts(tokenizer, rows: list[dict[str, Any]], column: str, max_prompt_len: int) -> list[list[int]]:
    """Chat-formatted prompt ids, cut from the LEFT to ``max_prompt_len`` (the question end is kept)."""
    return [encode_prompt(tokenizer, prompt_of(r, column))[-max_prompt_len:] for r in rows]


def rm_scores(rm: ValueModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] shifted RM score read at each row's last real token (query may be left-padded)."""
    return last_token_values(rm(input_ids, attention_mask), attention_mask)


def with_eos(input_ids: torch.Tensor, attention_mask: torch.Tensor, ended: torch.Tensor, eos_id: int, pad_id: int):
    """Append one column; rows that did not end with EOS get an EOS there (the RM was trained
    on prompt + response + EOS and reads its score at the EOS), others get padding."""
    col = torch.where(
        ended, torch.full_like(ended, pad_id, dtype=torch.long), torch.full_like(ended, eos_id, dtype=torch.long)
    )
    ids = torch.cat([input_ids, col.unsqueeze(-1)], dim=1)
    mask = torch.cat([attention_mask, (~ended).long().unsqueeze(-1)], dim=1)
    return ids, mask


@torch.no_grad()
def sample_and_score(
    policy,
    tokenizer,
    rows: list[dict[str, Any]],
    *,
    prompt_column: str = "prompt",
    max_prompt_len: int = 96,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    rm: ValueModel | None = None,
    judge=None,
) -> dict[str, Any]:
    """Responses to ``rows`` (temperature 0 = greedy) with their RM score (if ``rm``) and gold
    reward (if ``judge``, a ``WorldJudge``); means in the returned dict, per-row lists too."""
    ids = encode_prompts(tokenizer, rows, prompt_column, max_prompt_len)
    ro = generate_responses(
        policy, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, seed=seed
    )
    out: dict[str, Any] = {
        "texts": ro.texts,
        "eos_frac": ro.ended_with_eos.float().mean().item(),
        "response_len": ro.response_mask.sum(-1).float().mean().item(),
    }
    if rm is not None:
        scores = []
        for i in range(0, len(rows), batch_size):
            sl = slice(i, i + batch_size)
            x, m = with_eos(
                ro.input_ids[sl],
                ro.attention_mask[sl],
                ro.ended_with_eos[sl],
                tokenizer.eos_token_id,
                tokenizer.pad_token_id,
            )
            scores.append(rm_scores(rm, x, m).cpu())
        out["rm_scores"] = torch.cat(scores).tolist()
        out["rm_score"] = statistics.fmean(out["rm_scores"])
    if judge is not None:
        out["gold_scores"] = judge.gold(rows, ro.texts)
        out["gold"] = statistics.fmean(out["gold_scores"])
    return out


def paired_delta_ci(
    before: list[float], after: list[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Bootstrap CI (over prompts) of mean(after - before) for per-prompt scores on the SAME prompts."""
    d = torch.tensor(after, dtype=torch.float64) - torch.tensor(before, dtype=torch.float64)
    if d.numel() == 0:
        return [float("nan"), float("nan")]
    g = torch.Generator().manual_seed(seed)
    means = d[torch.randint(0, d.numel(), (n_boot, d.numel()), generator=g)].mean(-1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return [round(lo, 4), round(hi, 4)]


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with ``n`` torch CPU threads (0 = leave as is), restoring the previous count after:
    on a CPU shared with other jobs, 2+ threads can be several times slower than 1."""
    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
