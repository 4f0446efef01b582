"""Padding collators: ragged token lists -> rectangular tensors, the same way in SFT and the RM.

Training batches are RIGHT-padded (positions then need no correction, and the RM's
score is read at the last non-pad token, which transformers finds from ``pad_token_id``
for either side). Generation pads on the LEFT (see rollout/generate.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignlab.data.chat import IGNORE


def pad_right(rows: Sequence[Sequence[int]], pad_value: int, width: int | None = None) -> torch.Tensor:
    """[N, width] LongTensor with each row's tokens at the start and ``pad_value`` after."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def collate_sft(examples: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Examples from ``chat.encode_example`` -> input_ids, attention_mask, labels (-100 on prompt and padding)."""
    ids = [e["input_ids"] for e in examples]
    input_ids = pad_right(ids, pad_token_id)
    attention_mask = pad_right([[1] * len(x) for x in ids], 0)
    labels = pad_right([e["labels"] for e in examples], IGNORE)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_sequences(seqs: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Token lists (prompt + response + EOS) -> input_ids and attention_mask, right-padded (RM scoring)."""
    return {"input_ids": pad_right(seqs, pad_token_id), "attention_mask": pad_right([[1] * len(s) for s in seqs], 0)}
