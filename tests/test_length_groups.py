"""Length groups: a batch run in a few passes of similar lengths gives the same scores, loss and gradients."""

from __future__ import annotations

import random

import torch
from transformers import LlamaForSequenceClassification

from alignlab.data.collate import collate_sequences
from alignlab.data.length_groups import length_groups
from alignlab.models.llama import llama_config
from alignlab.rl.losses import ranking_loss
from alignlab.stages.reward import forward_scores


def test_groups_cover_every_index_once_sorted_by_length():
    lengths = [random.Random(i).randint(1, 60) for i in range(70)]
    groups = length_groups(lengths, max_groups=3, min_size=16)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(70)) and len(groups) == 3
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert len(length_groups(lengths[:20], max_groups=3, min_size=16)) == 1  # small batch: one pass
    assert length_groups([]) == []


def test_forward_scores_match_one_padded_pass():
    torch.manual_seed(0)
    cfg = llama_config(
        vocab_size=50,
        d_model=32,
        n_layer=2,
        n_head=2,
        d_ff=64,
        max_seq_len=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    cfg.num_labels = 1
    model = LlamaForSequenceClassification(cfg)
    rng = random.Random(0)
    rows = [
        {"ids": [[rng.randint(3, 49) for _ in range(rng.randint(3, 40))] for _ in range(k)]} for k in [4] * 8 + [3] * 4
    ]  # 44 responses -> 2 groups
    assert len(length_groups([len(s) for r in rows for s in r["ids"]])) == 2

    rewards, valid = forward_scores(model, rows, 0, "cpu")
    loss, _ = ranking_loss(rewards, valid)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    flat = [s for r in rows for s in r["ids"]]  # reference: every response in one right-padded pass
    b = collate_sequences(flat, 0)
    one = model(**b).logits[:, 0]
    ref = torch.zeros_like(rewards).masked_scatter(valid, one)
    ref_loss, _ = ranking_loss(ref, valid)
    ref_loss.backward()
    torch.testing.assert_close(rewards[valid], ref[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
