"""Sample a policy on a FIXED set of held-out prompts and score the answers by the RM and the gold judge.

Used by PPO and DPO to report before/after numbers on the same prompts with the same
sampling seed, so the two measurements differ only by the policy. The policy sees the
``prompt`` column only (rows also carry ``meta`` with the reference answer: that goes
to the judge, never into the prompt).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from alignlab.data.chat import encode_prompt_rows
from alignlab.models.value_model import ValueModel, rm_scores
from alignlab.rollout.generate import generate_responses
from alignlab.rollout.layout import with_eos


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
    kl_to_reference: bool = False,
    ref=None,
    gold_parts: bool = False,
) -> dict[str, Any]:
    """Responses to ``rows`` (temperature 0 = greedy) with their RM score (if ``rm``) and gold
    reward (if ``judge``, a ``WorldJudge``); means in the returned dict, per-row lists too.

    ``kl_to_reference`` (sampled decoding only): each response's log pi - log pi_ref summed over its
    tokens at the sampling temperature (``ref``; None = ``policy`` with its LoRA adapter off), the
    unbiased estimate of KL(pi || pi_ref) that PPO logs as ``kl``, here on the held-out prompts.

    ``gold_parts`` (with ``judge``): also ``gold_<component>_scores``, each row's gold split by component."""
    ids = encode_prompt_rows(tokenizer, rows, prompt_column, max_prompt_len)
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
        if gold_parts:
            out.update({f"gold_{c}_scores": v for c, v in judge.gold_parts(rows, ro.texts).items()})
    if kl_to_reference and temperature > 0:
        out["kl_scores"] = _response_kl(policy, ref, ro, temperature, batch_size)
        out["kl"] = statistics.fmean(out["kl_scores"])
    return out


def _response_kl(policy, ref, ro, temperature: float, batch_size: int) -> list[float]:
    """Per response: sum over its tokens of log pi - log pi_ref (no sampling, so no random state is used)."""
    from alignlab.models.lora import reference_model
    from alignlab.rollout.scoring import sequence_logprobs

    kls = []
    for i in range(0, ro.input_ids.shape[0], batch_size):
        ids, attn = ro.input_ids[i : i + batch_size], ro.attention_mask[i : i + batch_size]
        mask = ro.response_mask[i : i + batch_size]
        pol = sequence_logprobs(policy, ids, attn, ro.response_start, temperature).logprobs
        with reference_model(policy, ref) as ref_model:
            old = sequence_logprobs(ref_model, ids, attn, ro.response_start, temperature).logprobs
        kls.append(((pol - old) * mask).sum(-1).cpu())
    return torch.cat(kls).tolist()


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
