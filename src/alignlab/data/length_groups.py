"""Split one batch into a few forward passes of similar-length sequences, to pad less.

A right-padded batch computes every row to the longest row's length; on the default RM data
about a third of those positions are padding. Sorting the batch's sequences by length and
running them in a few groups, each padded to its own longest, computes the same per-sequence
outputs (nothing in the model mixes rows) with less padding. The batch itself -- which
examples, hence the loss and its gradient -- is unchanged: only how it is cut into passes.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_groups(lengths: Sequence[int], max_groups: int = 3, min_size: int = 16) -> list[list[int]]:
    """Indices into ``lengths``, sorted by length and cut into at most ``max_groups`` contiguous groups
    of at least ``min_size`` (fewer, larger groups when the batch is small: tiny matmuls are slow)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n_groups = max(1, min(max_groups, len(order) // max(min_size, 1)))
    size = -(-len(order) // n_groups) if order else 1  # ceil
    return [order[i : i + size] for i in range(0, len(order), size)]
