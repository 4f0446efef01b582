"""Pack documents into fixed-length blocks for language-model training, and order them.

Documents are wrapped in BOS/EOS, concatenated and cut into blocks of ``seq_len``
tokens, so no compute is spent on padding. The order of blocks is a pure function
of (seed, sample index): resuming at step s needs no data-loader state, only s.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

from alignlab.data.load import column_values
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


def packed_blocks(ds, column: str, tokenizer, seq_len: int, cache_dir: str = "") -> torch.Tensor:
    """``pack_documents`` of a dataset's ``column``, kept in ``cache_dir`` for the next run on the same data.

    A scaling sweep trains many models on one large corpus; tokenizing it once instead of per
    run saves minutes. The key is the dataset's fingerprint (its files' content for data read from
    disk), the column, the tokenizer's full definition and seq_len; a dataset built in memory has no
    stable fingerprint and is packed every time.
    """
    if not cache_dir or not getattr(ds, "cache_files", None):
        return pack_documents(column_values(ds, column), tokenizer, seq_len)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    key = hashlib.sha256(
        f"{ds._fingerprint}|{column}|{seq_len}|{tokenizer.bos_token_id}|{tokenizer.eos_token_id}|{spec}".encode()
    ).hexdigest()[:32]
    path = Path(cache_dir) / f"packed_{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True).long()
    blocks = pack_documents(column_values(ds, column), tokenizer, seq_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blocks.to(torch.int32), tmp)  # half the bytes; vocabularies fit in int32
    os.replace(tmp, path)
    return blocks


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
    # bincount, not a Counter over a Python list: a sweep computes this for every run of a ~20M-token corpus
    counts = torch.bincount(blocks.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())
