"""Score PPO episodes without padding: pack several sequences into each row, one attention block each.

Why: in the PPO layout (``Rollout.input_ids``) every row is as wide as the longest prompt
plus the longest response, so on the built-in world (prompts 13-44 tokens, responses
mostly < 10 of a 32-token cap) most of each forward/backward is spent on padding.
Packing puts the real tokens of several episodes side by side in one row and gives each
its own causal attention block (a 4-D mask) and positions that restart at 0, so every
token sees exactly what it sees in the padded layout: the same numbers up to float
rounding, for a fraction of the work.

Results come back in the PPO layout ([B, R], aligned with the response tokens, 0 on
response padding), so the losses and the GAE are unchanged. The models are called through
their own ``forward`` (never their sub-modules), so DDP wrappers still see a normal forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignlab.rl.ppo_loss import entropy_from_logits
from alignlab.rollout.scoring import Scores, _accepts, logprobs_from_logits
from alignlab.rollout.tail_layer import tail_only_last_layer


@dataclass
class PackedSequences:
    """Several episodes per row. Row layout: [prompt prefixes | filler | tails], where an episode's
    prefix is its query minus the last token and its tail is that last query token plus the
    response, so every position that predicts a response token lies in the last ``tail_width``
    columns: the LM head (the [*, vocab] logits, the largest activation for real vocabularies)
    only runs there, and so does the last decoder layer's query/MLP work (``tail_layer.py``). Token
    order inside a row does not matter to the model: the 4-D mask lets a token see the tokens of its
    own episode at positions <= its own, exactly as in the padded layout."""

    input_ids: Tensor  # [P, W]
    position_ids: Tensor  # [P, W] position within the episode (0 on filler)
    segments: Tensor  # [P, W] which episode each column belongs to (-1 on filler)
    tail_width: int  # K: the last K columns hold every episode's tail
    predict_index: Tensor  # [N] flat index into [P, W] of the position that predicts each response token
    predict_row: Tensor  # [N] its episode b ...
    predict_col: Tensor  # [N] ... and response column t: output[b, t]
    target_ids: Tensor  # [N] the response token predicted there
    last_index: Tensor  # [B] flat index into [P, W] of each episode's last token (where an RM reads its score)
    batch_size: int  # B
    response_len: int  # R, the width of the PPO layout's response block

    def attention_mask(self, dtype: torch.dtype) -> Tensor:
        """[P, 1, W, W] additive mask: 0 where query i may see key j (same episode, position_j <=
        position_i), the dtype's minimum elsewhere. Filler sees filler, so no softmax row is empty."""
        same = self.segments.unsqueeze(2) == self.segments.unsqueeze(1)  # [P, W, W]
        causal = self.position_ids.unsqueeze(2) >= self.position_ids.unsqueeze(1)
        allowed = (same & causal).unsqueeze(1)
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)

    def model_inputs(self, model) -> dict:
        """Keyword arguments for a transformers forward (the mask is already 4-D: used as given)."""
        return dict(
            input_ids=self.input_ids,
            position_ids=self.position_ids,
            attention_mask=self.attention_mask(_float_dtype(model)),
        )

    def tail_index(self, flat_index: Tensor) -> Tensor:
        """Flat index into [P, W] -> flat index into the last ``tail_width`` columns [P, K]."""
        W, K = self.input_ids.shape[1], self.tail_width
        return (flat_index // W) * K + (flat_index % W) - (W - K)

    def to_layout(self, flat: Tensor) -> Tensor:
        """[N] values at the predicting positions -> [B, R] in the PPO layout (0 on padding)."""
        out = flat.new_zeros(self.batch_size, self.response_len)
        out[self.predict_row, self.predict_col] = flat
        return out


def _float_dtype(model) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _first_fit_decreasing(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """(row, offset) for each length: longest first into the first row with room (bin packing)."""
    rows: list[int] = []  # used width of each row
    place: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, used in enumerate(rows):
            if used + lengths[i] <= capacity:
                place[i] = (r, used)
                rows[r] += lengths[i]
                break
        else:
            place[i] = (len(rows), 0)
            rows.append(lengths[i])
    return place


def _choose_width(lengths: list[int], hidden_size: int) -> tuple[int, list[tuple[int, int]]]:
    """Row width W (>= the longest episode) that minimises the estimated cost of a forward:
    P rows x (W tokens of dense layers + W^2 attention pairs), where one attention pair costs about
    1/(6 x hidden) of a token's dense work (4h flops per pair against ~24h^2 per token)."""
    best = None
    longest = max(lengths)
    for factor in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0):
        W = max(longest, int(longest * factor))
        place = _first_fit_decreasing(lengths, W)
        P = 1 + max(r for r, _ in place)
        cost = P * (W + W * W / (6 * hidden_size))
        if best is None or cost < best[0]:
            best = (cost, W, place)
        if P == 1:
            break
    return best[1], best[2]


def pack_sequences(
    input_ids: Tensor, attention_mask: Tensor, response_start: int, hidden_size: int = 256
) -> PackedSequences:
    """Pack the PPO layout (left-padded query ++ right-padded response, ``response_start`` = Tq)
    into rows at least as wide as the longest episode (width chosen for the least work given the
    model's ``hidden_size``). Each row's real tokens must be contiguous, which the PPO layout
    guarantees (also with one extra column appended, as for the RM's EOS)."""
    B, T = input_ids.shape
    device = input_ids.device
    mask = attention_mask.bool()
    q_len = mask[:, :response_start].sum(-1)  # [B]
    lengths = mask.sum(-1)  # [B]
    L, Q = torch.stack([lengths, q_len]).tolist()  # the one host sync: packing is planned on the CPU
    if min(Q) < 1:
        raise ValueError("every episode needs at least one query token before its response")
    W, place = _choose_width(L, hidden_size)
    P = 1 + max(r for r, _ in place)
    # prefixes from the left of each row, tails right-aligned: walk each row's episodes in order
    prefix_at, tail_at = [0] * B, [0] * B
    prefix_used, tail_used = [0] * P, [0] * P
    for b in sorted(range(B), key=lambda b: place[b]):
        r = place[b][0]
        prefix_at[b] = r * W + prefix_used[r]
        prefix_used[r] += Q[b] - 1
        tail_used[r] += L[b] - Q[b] + 1
        tail_at[b] = r * W + W - tail_used[r]
    K = max(tail_used)
    prefix_at_t = torch.tensor(prefix_at, device=device)
    tail_at_t = torch.tensor(tail_at, device=device)

    first = response_start - q_len  # column of each episode's first real token in the PPO layout
    j = torch.arange(W, device=device)
    valid = j.unsqueeze(0) < lengths.unsqueeze(1)  # [B, W]: token j of episode b exists
    b_idx = torch.arange(B, device=device).unsqueeze(1).expand(B, W)[valid]
    j_idx = j.unsqueeze(0).expand(B, W)[valid]
    in_prefix = j_idx < q_len[b_idx] - 1
    dst = torch.where(in_prefix, prefix_at_t[b_idx] + j_idx, tail_at_t[b_idx] + j_idx - (q_len[b_idx] - 1))
    ids = torch.zeros(P * W, dtype=input_ids.dtype, device=device)
    ids[dst] = input_ids[b_idx, first[b_idx] + j_idx]
    pos = torch.zeros(P * W, dtype=torch.long, device=device)
    pos[dst] = j_idx
    seg = torch.full((P * W,), -1, dtype=torch.long, device=device)
    seg[dst] = b_idx

    # response token t of episode b is tail token t + 1, predicted from tail token t
    R = T - response_start
    r_len = lengths - q_len
    t = torch.arange(R, device=device)
    has = t.unsqueeze(0) < r_len.unsqueeze(1)  # [B, R]
    rows = torch.arange(B, device=device).unsqueeze(1).expand(B, R)[has]
    cols = t.unsqueeze(0).expand(B, R)[has]
    predict = tail_at_t[rows] + cols
    return PackedSequences(
        ids.view(P, W),
        pos.view(P, W),
        seg.view(P, W),
        K,
        predict,
        rows,
        cols,
        input_ids[:, response_start:][rows, cols],
        tail_at_t + r_len,
        B,
        R,
    )


def packed_logprobs(model, packed: PackedSequences, temperature: float = 1.0, return_entropy: bool = False) -> Scores:
    """``sequence_logprobs`` on a packed batch: [B, R] log-probs (and entropies) of the response
    tokens at ``temperature``, 0 on response padding."""
    if temperature <= 0:
        raise ValueError("score with the sampling temperature (> 0); greedy decoding has no density to score")
    kwargs = packed.model_inputs(model)
    if _accepts(model, "logits_to_keep"):  # the LM head only on the tail columns
        kwargs["logits_to_keep"] = packed.tail_width
        index = packed.tail_index(packed.predict_index)
    else:
        index = packed.predict_index
    with tail_only_last_layer(model, packed.tail_width, packed.input_ids.shape[1]):
        logits = model(**kwargs, use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1])[index].float() / temperature  # [N, V]
    logprobs = packed.to_layout(logprobs_from_logits(logits, packed.target_ids))
    entropy = packed.to_layout(entropy_from_logits(logits)) if return_entropy else None
    return Scores(logprobs, entropy, None)


def packed_values(value_model, packed: PackedSequences) -> Tensor:
    """V(s_t) [B, R] from a ``ValueModel`` (the value of the state before response token t), 0 on padding."""
    kw = packed.model_inputs(value_model)
    with tail_only_last_layer(value_model, packed.tail_width, packed.input_ids.shape[1]):
        values = value_model(kw["input_ids"], kw["attention_mask"], position_ids=kw["position_ids"])
    return packed.to_layout(values.reshape(-1)[packed.predict_index])


def packed_last_values(value_model, packed: PackedSequences) -> Tensor:
    """[B] a ``ValueModel``'s output at each episode's last real token: the RM score."""
    kw = packed.model_inputs(value_model)
    with tail_only_last_layer(value_model, packed.tail_width, packed.input_ids.shape[1]):
        values = value_model(kw["input_ids"], kw["attention_mask"], position_ids=kw["position_ids"])
    return values.reshape(-1)[packed.last_index]


@torch.no_grad()
def packing_matches_padding(
    policy, value_model, input_ids: Tensor, attention_mask: Tensor, response_start: int, temperature: float = 1.0
) -> tuple[bool, float]:
    """Do these models give the same numbers packed as padded (response log-probs of ``policy``,
    V(s_t) of the ``ValueModel``; ``value_model`` None: the policy alone)? An architecture that ignores
    a 4-D mask or explicit positions would not. Returns (ok, max abs difference); the tolerance is float
    rounding: 1e-3 in float32, 5e-2 in half precision."""
    from alignlab.models.value_model import response_values
    from alignlab.rollout.scoring import sequence_logprobs

    mask = attention_mask[:, response_start:].bool()
    R = mask.shape[1]
    padded = [sequence_logprobs(policy, input_ids, attention_mask, response_start, temperature).logprobs]
    if value_model is not None:
        padded.append(response_values(value_model(input_ids, attention_mask), response_start, R))
    try:
        packed = pack_sequences(input_ids, attention_mask, response_start)
        packed_out = [packed_logprobs(policy, packed, temperature).logprobs]
        if value_model is not None:
            packed_out.append(packed_values(value_model, packed))
    except (RuntimeError, ValueError, TypeError):  # e.g. an attention kernel that takes no 4-D mask
        return False, float("nan")
    diff = max(float((a - b)[mask].abs().max()) if mask.any() else 0.0 for a, b in zip(padded, packed_out))
    models = (policy,) if value_model is None else (policy, value_model)
    low_precision = any(_float_dtype(m) != torch.float32 for m in models)
    return diff <= (5e-2 if low_precision else 1e-3), diff
