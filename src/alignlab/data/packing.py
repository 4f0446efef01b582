"""Pack documents into fixed-length blocks for language-model training, and order them.

Documents are wrapped in BOS/EOS, concatenated and cut into blocks of ``seq_len``
tokens, so no compute is spent on padding. The order of blocks is a pure function
of (seed, sample index): resuming at step s needs no data-loader state, only s.
"""

from __future__ import annotations

import functools
import math
from collections import Counter

import torch

from alignlab.errors import DataError
from alignlab.seeds import derived_seed


def pack_documents(texts: list[str], tokenizer, seq_len: int, add_bos_eos: bool = True) -> torch.Tensor:
    """Return a LongTensor [n_blocks, seq_len]; the ragged tail is dropped."""
    ids: list[int] = []
    batch = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for doc in batch:
        if add_bos_eos:
            ids.append(tokenizer.bos_token_id)
        ids.extend(doc)
        if add_bos_eos:
            ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise DataError(f"corpus has {len(ids)} tokens, fewer than one block of seq_len={seq_len}")
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def block_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Indices of the blocks in global batch ``step``: epoch-wise permutations, seeded per epoch."""
    start = step * batch_size
    out = []
    for i in range(start, start + batch_size):
        epoch, pos = divmod(i, n_blocks)
        out.append(_permutation(n_blocks, seed, epoch)[pos])
    return torch.stack(out)


@functools.lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def unigram_entropy(blocks: torch.Tensor) -> float:
    """Entropy (nats/token) of the corpus's token frequencies: what a model with no context achieves."""
    counts = Counter(blocks.flatten().tolist())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())
