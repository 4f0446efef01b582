"""Sample every policy on the same prompts with the same settings, and measure its KL to the baseline.

Fair comparison needs identical conditions: the same prompts formatted the same way
(``data.chat.encode_prompt``, the chat template used in SFT and PPO), the same
temperature / top_p / max_new_tokens, and the same seed -- so two policies with the same
weights produce the same samples, and differences come from the weights alone (common
random numbers also make the paired win rate less noisy).

KL to the baseline is the k1 estimator on the policy's own samples,

    KL(pi || pi_base) ~= mean over samples of  sum_t [log pi(y_t | .) - log pi_base(y_t | .)]

with both log-probs computed by ``rollout.scoring.sequence_logprobs`` at the sampling
temperature (PPO's KL is measured the same way), over the response tokens up to and
including EOS. With top_p < 1 the sampled distribution is truncated and this estimates
the KL of the untruncated tempered policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alignlab.rollout.generate import generate_responses
from alignlab.rollout.layout import Rollout
from alignlab.rollout.scoring import sequence_logprobs


@dataclass
class PolicySamples:
    """n samples for each of P prompts (row-major: prompt p's samples are p*n .. p*n+n-1)."""

    texts: list[list[str]]  # [P][n]
    length: np.ndarray  # [P, n] response tokens, EOS included
    eos: np.ndarray  # [P, n] 1.0 if the response ended with EOS (else it hit max_new_tokens)
    kl: np.ndarray | None = None  # [P, n] sum_t log pi - log pi_baseline (None: not measured)


def sample(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    n_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
) -> tuple[PolicySamples, Rollout]:
    """n samples per prompt in KV-cache batches (left padding); temperature 0 = greedy."""
    P = len(prompt_ids)
    repeated = [ids for ids in prompt_ids for _ in range(n_samples)]
    ro = generate_responses(
        model,
        tokenizer,
        repeated,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=0,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
    )
    texts = [ro.texts[p * n_samples : (p + 1) * n_samples] for p in range(P)]
    length = ro.response_mask.sum(-1).float().cpu().numpy().reshape(P, n_samples)
    eos = ro.ended_with_eos.float().cpu().numpy().reshape(P, n_samples)
    return PolicySamples(texts, length, eos), ro


@torch.no_grad()
def response_logprob_sums(model, ro: Rollout, temperature: float, batch_size: int) -> np.ndarray:
    """[N] sum over response tokens (EOS included) of log p at ``temperature``, batched; each
    batch is trimmed to its own widest prompt and response so padding costs nothing."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, ro.query.shape[0], batch_size):
        qm, rm = ro.query_mask[i : i + batch_size], ro.response_mask[i : i + batch_size]
        q_start = int((qm.sum(0) > 0).nonzero()[0]) if qm.any() else 0
        r_end = max(int(rm.sum(-1).max()), 1)
        q, r = ro.query[i : i + batch_size, q_start:], ro.response[i : i + batch_size, :r_end]
        qm, rm = qm[:, q_start:], rm[:, :r_end]
        ids = torch.cat([q, r], 1).to(device)
        mask = torch.cat([qm, rm], 1).to(device)
        lp = sequence_logprobs(model, ids, mask, q.shape[1], temperature).logprobs
        out.append((lp * rm.to(lp.device)).sum(-1).double().cpu())
    return torch.cat(out).numpy()


def same_vocabulary(tok_a, tok_b) -> bool:
    """Whether two tokenizers map text to the same ids (needed to score one's samples with the other)."""
    return tok_a is tok_b or (len(tok_a) == len(tok_b) and tok_a.get_vocab() == tok_b.get_vocab())
