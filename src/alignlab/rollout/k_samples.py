"""K responses per prompt, the K slots filled from one or more policies in turn.

InstructGPT's labelers ranked K outputs per prompt written by several models. Two places fill a prompt's
K slots this way: the compare stage (the world's labelers rank them) and ``alignlab label`` (a person
ranks them). Slot j comes from source j mod n (:func:`slots_per_source`); each source samples its share of
every prompt (:func:`sample_n`, one seed per chunk of prompts, so a chunk's samples do not depend on how
many chunks came before), and :func:`interleave` puts the shares back in slot order.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from alignlab.data.chat import encode_prompts
from alignlab.models.load import context_length
from alignlab.rollout.generate import generate_responses


def sample_n(
    model,
    tok,
    prompts: list,
    n: int,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    chunk_prompts: int,
    seed: int,
    desc: str,
) -> tuple[list[list[str]], float]:
    """``n`` sampled responses per prompt from one model, and the share of them that ended with EOS."""
    max_prompt = max(1, context_length(model) - max_new_tokens)
    ids = encode_prompts(tok, prompts, max_prompt)
    texts: list[str] = []
    ended = 0
    for c, start in enumerate(tqdm(range(0, len(ids), chunk_prompts), desc=desc, dynamic_ncols=True)):
        chunk = [p for p in ids[start : start + chunk_prompts] for _ in range(n)]  # each prompt n times
        roll = generate_responses(
            model,
            tok,
            chunk,
            max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            batch_size=batch_size,
            seed=seed * 100_003 + c,
        )
        texts.extend(roll.texts)
        ended += int(roll.ended_with_eos.sum())
    return [texts[i : i + n] for i in range(0, len(texts), n)], ended / max(len(texts), 1)


def slots_per_source(k: int, n_sources: int) -> list[int]:
    """Slot j of a prompt comes from source j mod n: how many slots each source fills."""
    return [len(range(i, k, n_sources)) for i in range(n_sources)]


def interleave(per_source: list[list[list[str]]]) -> tuple[list[list[str]], list[list[int]]]:
    """[source][prompt][sample] -> per prompt the responses in slot order, and each slot's source."""
    out, src = [], []
    for p in range(len(per_source[0])):
        queues = [list(s[p]) for s in per_source]
        row, row_src, j = [], [], 0
        while any(queues):
            if queues[j % len(queues)]:
                row.append(queues[j % len(queues)].pop(0))
                row_src.append(j % len(queues))
            j += 1
        out.append(row)
        src.append(row_src)
    return out, src
