"""The alignment tax: what RLHF costs on the pretraining distribution and on "public NLP" tasks.

InstructGPT found PPO regresses on public benchmarks (SQuAD, DROP, HellaSwag, WMT) and
that mixing pretraining gradients in (PPO-ptx) recovers most of it. Two measurements,
both raw language modelling (no chat template: these are not instructions):

* ``heldout_nll``     -- mean token NLL on a fixed number of packed blocks of held-out
                         pretraining text (the corpus's validation split), per block;
* ``choice_logprobs`` -- zero-shot multiple choice by log-likelihood, as lm-eval-harness
                         scores it: log p(choice | context) summed over the choice's
                         tokens, highest wins (the temperature-0 decision). Each choice
                         starts with a space so ``context + choice`` is the scored text.

Both are batched forward passes through ``rollout.scoring.labeled_logprobs`` (positions
from the attention mask), no loops over tokens. The stage reports each policy's value and
its difference from the base (pretrained) model on the same blocks/items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from alignlab.data.chat import IGNORE
from alignlab.data.packing import pack_documents
from alignlab.models.load import context_length
from alignlab.rollout.scoring import labeled_logprobs


def heldout_blocks(texts: Sequence[str], tokenizer, seq_len: int, n_blocks: int) -> torch.Tensor:
    """The first ``n_blocks`` packed blocks (BOS doc EOS ...) of held-out text, [B, seq_len]."""
    blocks = pack_documents(list(texts), tokenizer, seq_len)
    return blocks[:n_blocks] if n_blocks > 0 else blocks


@torch.no_grad()
def heldout_nll(model, blocks: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """[B] mean next-token NLL per block (tokens 2..T predicted from their prefix), the same
    quantity as ``model(input_ids=x, labels=x).loss`` for one block; all blocks have the same
    length, so the mean over blocks is the mean over tokens."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, blocks.shape[0], batch_size):
        x = blocks[i : i + batch_size].to(device)
        lp = labeled_logprobs(model, x, torch.ones_like(x), x)  # column 0 is 0 (nothing predicts it)
        out.append((-lp[:, 1:].mean(-1)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def encode_choices(tokenizer, items: Sequence[dict[str, Any]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context ids, choice ids) for every choice of every item, flattened in order. The
    context starts with BOS (as pretraining documents do) and is cut from the left if the
    pair would not fit in ``max_len``."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ctx_ids = tokenizer([it["context"] for it in items], add_special_tokens=False)["input_ids"]
    flat_choices = [c for it in items for c in it["choices"]]
    choice_ids = tokenizer(flat_choices, add_special_tokens=False)["input_ids"] if flat_choices else []
    pairs, k = [], 0
    for it, ctx in zip(items, ctx_ids):
        for _ in it["choices"]:
            cont = choice_ids[k][: max_len - 1]
            k += 1
            context = (bos + ctx)[-(max_len - len(cont)) :]
            pairs.append((context, cont))
    return pairs


@torch.no_grad()
def pair_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    """[N] log p(continuation | context) summed over the continuation's tokens, for (context ids, continuation
    ids) pairs: right-padded batches, longest first (so a batch is about as wide as its rows), labels only on
    the continuation. Shared by the cloze items here and rank classification (``rank_classification.py``)."""
    model.eval()
    device = next(model.parameters()).device
    scores = np.zeros(len(pairs))
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):  # right padding; labels only on the continuation's tokens
            ctx, cont = pairs[i]
            n = len(ctx) + len(cont)
            ids[j, :n] = torch.tensor(ctx + cont)
            mask[j, :n] = 1
            labels[j, len(ctx) : n] = torch.tensor(cont)
        lp = labeled_logprobs(model, ids.to(device), mask.to(device), labels.to(device))
        scores[idx] = lp.sum(-1).double().cpu().numpy()
    return scores


def choice_logprobs(
    model, tokenizer, items: Sequence[dict[str, Any]], batch_size: int = 64, max_len: int | None = None
) -> list[np.ndarray]:
    """Per item, the summed log-prob of each choice given the context (raw text, temperature 1)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pairs = encode_choices(tokenizer, items, max_len or context_length(model))
    scores = pair_logprobs(model, pairs, pad, batch_size)
    out, k = [], 0
    for it in items:
        out.append(scores[k : k + len(it["choices"])])
        k += len(it["choices"])
    return out


def choice_correct(items: Sequence[dict[str, Any]], logprobs: Sequence[np.ndarray]) -> np.ndarray:
    """[N] 1.0 where the highest-scoring choice is the labelled one (ties: the first)."""
    return np.array([float(int(np.argmax(lp)) == int(it["label"])) for it, lp in zip(items, logprobs)])
