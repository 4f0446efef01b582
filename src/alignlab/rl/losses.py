"""Supervised losses of the recipe: SFT (masked LM), the K-way ranking reward loss, and DPO."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def ranking_loss(rewards: Tensor, valid: Tensor, ranks: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """K-way ranking loss of the InstructGPT reward model (Ouyang et al. 2022, eq. 1).

    rewards: [B, K] scalar r(x, y_k), responses of each prompt ordered best -> worst.
    valid:   [B] number of ranked responses K_b (2 <= K_b <= K), or a [B, K] bool mask
             that is True on the first K_b slots; padded slots may hold anything.
    ranks:   optional [B, K] rank of each response (1 = best; equal ranks = a tie, as InstructGPT's
             labelers were allowed). Then i is better than j where rank_i < rank_j, and a tied pair
             is no pair: no gradient, no accuracy, not in C(K_b, 2). Without it, slot order is the
             ranking (i < j: i better).
    Every prompt contributes all C(K_b, 2) pairs as ONE batch element,
        loss_b = -1/C(K_b,2) * sum_{i<j} log sigmoid(r_i - r_j),
    and the loss is the mean over prompts (the paper's reason: treating pairs as separate
    examples gives each response K-1 updates per epoch and overfits); a prompt whose pairs
    are all tied adds nothing.
    Returns (loss, accuracy) with accuracy = share of all valid pairs, pooled over the
    batch, where the better response scored strictly higher.
    """
    B, K = rewards.shape
    if valid.dim() == 1:
        valid = torch.arange(K, device=rewards.device) < valid.unsqueeze(-1)  # [B, K]
    valid = valid.bool()
    rewards = torch.where(valid, rewards, torch.zeros_like(rewards))  # padding may be inf/nan: keep grads finite
    diff = rewards.unsqueeze(2) - rewards.unsqueeze(1)  # [B, K, K]: r_i - r_j
    if ranks is None:
        better = torch.ones(K, K, dtype=torch.bool, device=rewards.device).triu(1)  # i < j: i ranked better
    else:
        ranks = ranks.to(rewards.device)
        better = ranks.unsqueeze(2) < ranks.unsqueeze(1)  # [B, K, K]: i ranked strictly above j
    pairs = better & valid.unsqueeze(2) & valid.unsqueeze(1)  # [B, K, K]
    n_pairs = pairs.sum((1, 2))  # [B] = C(K_b, 2)
    nll = torch.where(pairs, -F.logsigmoid(diff), torch.zeros_like(diff))
    per_prompt = nll.sum((1, 2)) / n_pairs.clamp_min(1)
    has_pairs = (n_pairs > 0).to(rewards.dtype)
    loss = (per_prompt * has_pairs).sum() / has_pairs.sum().clamp_min(1.0)
    with torch.no_grad():
        accuracy = ((diff > 0) & pairs).sum() / n_pairs.sum().clamp_min(1)
    return loss, accuracy


def dpo_loss(
    policy_chosen_logps: Tensor,  # [B] sum of log pi over the chosen response tokens
    policy_rejected_logps: Tensor,  # [B]
    ref_chosen_logps: Tensor,  # [B] same under the frozen reference (SFT) model
    ref_rejected_logps: Tensor,  # [B]
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """DPO (Rafailov et al. 2023): -mean log sigmoid(beta*[log pi/pi_ref (y_w) - log pi/pi_ref (y_l)]).

    Returns (loss, chosen_rewards [B], rejected_rewards [B], accuracy); the implicit rewards
    beta*log(pi/pi_ref) are detached (for logging), accuracy = share with chosen > rejected.
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    accuracy = (chosen_rewards > rejected_rewards).float().mean()
    return loss, chosen_rewards, rejected_rewards, accuracy


def masked_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy on response tokens only (InstructGPT SFT: prompt masked).

    logits: [B, T, V] from the model on input_ids [B, T].
    labels: [B, T] ALIGNED with input_ids (a copy of input_ids), -100 on prompt and padding.
    The shift is done here: logits at t predict labels at t+1, so the logit at the last
    prompt position (predicting the first response token) counts. Mean over response tokens
    of the whole batch (every response token weighs the same).
    """
    shift_logits = logits[:, :-1, :].float()  # [B, T-1, V]
    shift_labels = labels[:, 1:]  # [B, T-1]
    nll_sum = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return nll_sum / (shift_labels != IGNORE_INDEX).sum().clamp_min(1)  # 0, not NaN, if no response tokens
