"""The capability metric for predictable scaling: fact-cloze pass rate of a raw pretrained LM.

GPT-4's capability prediction fits −log pass_rate(C) on problems whose pass rate
is tiny for small models, so the pass rate must be *measurable* when it is small:
many samples per problem.  For a base LM (no instruction tuning) the natural exact
task is the corpus's own phrasing of a fact:

    prompt  "The colour of Bruk is"      (BOS + the statement up to the value)
    pass    the sampled continuation starts with " red" (then a non-letter/digit)

Each item is sampled ``samples_per_item`` times (temperature 1, a few tokens, in
large batches), so a per-item pass rate as low as 1/samples is resolved.  Items are
facts of the built-in world (``world.json``), chosen by a seeded draw; rumoured facts
(those the corpus sometimes states falsely) are left out by default so the metric
measures knowledge, not the rumour rate.

Beside the sampled pass rate, one teacher-forced pass gives the pass probability itself
(``pass_prob``): P(the value's canonical tokens | prompt) times P(the next token ends the
word), at the sampling temperature, which is the probability of the ``passes`` event along
the canonical tokenization (other tokenizations of the same text also pass when sampled, so
it is a lower bound, and a tight one for a model trained on canonical text). It has no
sampling noise and no floor at 1/samples: a small model's rare passes are measured, not
rounded to zero, which is what sampling until a pass (Hu et al. 2023) buys at the price of
many samples. ``value_prob`` (the value's tokens alone) is kept as before.

Aggregation over items (``aggregate``) follows the GPT-4 report: only items that at
least one model of the sweep solves at least once count (``solved_by_any``), so the
item set is fixed *before* the big run is trained; the pass rate of a model is the
mean of its per-item pass rates over those items.  The geometric mean over items
every sweep model solves at least once (the report's −E[log pass_rate]) is kept too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignlab.rollout.generate import generate_responses
from alignlab.world import facts, lexicon, phrasing
from alignlab.world.storage import load_world


def _cloze_template(kind: str, attr: str) -> str:
    """The statement template whose words before the value best name the attribute.

    "The colour of {n} is {v}." beats "{n} is {v}." (which could go on with any
    attribute); falls back to the canonical template 0.
    """
    templates = phrasing.STATEMENTS[(kind, attr)]
    for t in templates:
        pre = t.split("{v}")[0]
        if t.startswith("The ") and " of {n}" in pre:
            return t
    return templates[0]


def fact_cloze_items(
    world_dir: str | Path,
    n_items: int,
    seed: int = 0,
    include_rumoured: bool = False,
    entities: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``n_items`` fact-cloze items drawn (seeded) from the world's specified facts (of ``entities`` only,
    when given)."""
    world = load_world(world_dir)
    pool = []
    keep = set(entities) if entities is not None else None
    for e, attr, value in facts.specified_facts(world):
        if keep is not None and e["name"] not in keep:
            continue
        if not include_rumoured and attr in world.rumours.get(e["name"], {}):
            continue
        template = _cloze_template(e["kind"], attr)
        pre = template.split("{v}")[0].format(n=e["name"], noun=e["noun"] or "thing").rstrip()
        if not pre:
            continue
        pool.append({"id": f"{e['name']}.{attr}", "prompt": pre, "value": str(value)})
    if not pool:
        raise ValueError(f"{world_dir}: the world has no usable facts for the cloze task")
    rng = random.Random(seed)
    return rng.sample(pool, min(n_items, len(pool)))


def word_reversal_items(n_items: int, seed: int = 0) -> list[dict[str, Any]]:
    """ "Banana spelled backwards is" -> "ananab": the corpus's own phrasing (``CorpusWriter.words``).

    Several tokens must all be right, letter by letter, so this is a multi-step output where
    fact cloze is a single word."""
    words = sorted({w for ws in lexicon.WORD_CATEGORIES.values() for w in ws})
    pool = [{"id": f"reverse.{w}", "prompt": f"{w.capitalize()} spelled backwards is", "value": w[::-1]} for w in words]
    return random.Random(seed).sample(pool, min(n_items, len(pool)))


def arithmetic_items(n_items: int, seed: int = 0) -> list[dict[str, Any]]:
    """ "7 plus 12 is" -> "19", "8 times 6 is" -> "48": sums of 0-20 and products of 2-9, as the corpus states them."""
    pool = [
        {"id": f"add.{a}.{b}", "prompt": f"{a} plus {b} is", "value": str(a + b)} for a in range(21) for b in range(21)
    ]
    pool += [
        {"id": f"mul.{a}.{b}", "prompt": f"{a} times {b} is", "value": str(a * b)}
        for a in range(2, 10)
        for b in range(2, 10)
    ]
    return random.Random(seed).sample(pool, min(n_items, len(pool)))


def passes(text: str, value: str) -> bool:
    """Does a sampled continuation state ``value`` (as a whole word) right away?"""
    want = " " + value
    if not text.startswith(want):
        return False
    rest = text[len(want) :]
    return not rest or not rest[0].isalnum()


def word_end_mask(tok) -> torch.Tensor:
    """[vocab] bool: does this token, sampled right after the value, end the word as ``passes`` reads it?

    ``passes`` wants the text after the value to be empty or to start with a non-letter/digit; a
    special token (EOS, pad) is dropped from the decoded text, so it ends the word too."""
    return torch.tensor([not tok.decode([i])[:1].isalnum() for i in range(len(tok))])


@torch.no_grad()
def exact_pass_probs(
    model, tok, prompts: list[list[int]], values: list[list[int]], temperature: float = 1.0
) -> list[dict[str, float]]:
    """Per item, teacher-forced at ``temperature``: P(value tokens | prompt) and that times P(word ends).

    Log-probabilities are summed before exponentiating, so a tiny pass probability is kept (down to
    float64's ~1e-308), not rounded to zero."""
    device = next(model.parameters()).device
    mask = word_end_mask(tok).to(device)
    out = []
    for p, v in zip(prompts, values):
        x = torch.tensor([p + v], device=device)
        logp = torch.log_softmax(model(input_ids=x).logits[0, len(p) - 1 :].double() / temperature, -1)
        log_value = float(logp[:-1].gather(-1, torch.tensor(v, device=device)[:, None]).sum())
        end = torch.zeros(logp.shape[-1], dtype=torch.bool, device=device)  # ids the tokenizer lacks: not an end
        end[: len(mask)] = mask[: logp.shape[-1]]
        log_end = float(torch.logsumexp(logp[-1][end], 0))
        out.append({"value_prob": math.exp(log_value), "pass_prob": math.exp(log_value + log_end)})
    return out


def item_token_ids(tok, items: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[list[int]]]:
    """BOS + the prompt's tokens, and the canonical tokens of " value", per item."""
    prompts = [[tok.bos_token_id] + tok(it["prompt"], add_special_tokens=False)["input_ids"] for it in items]
    return prompts, [tok(" " + it["value"], add_special_tokens=False)["input_ids"] for it in items]


def evaluate_pass_rates(
    model,
    tok,
    items: Sequence[dict[str, Any]],
    samples_per_item: int,
    temperature: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sample each item ``samples_per_item`` times; return per-item pass counts, value_prob and pass_prob."""
    prompts, values = item_token_ids(tok, items)
    max_new = max(len(v) for v in values) + 1  # the value plus one token to see the word end
    flat = [p for p in prompts for _ in range(samples_per_item)]
    roll = generate_responses(
        model, tok, flat, max_new_tokens=max_new, temperature=temperature, batch_size=batch_size, seed=seed
    )
    exact = exact_pass_probs(model, tok, prompts, values, temperature)
    results = []
    for i, it in enumerate(items):
        texts = roll.texts[i * samples_per_item : (i + 1) * samples_per_item]
        results.append(
            {**it, "passes": sum(passes(t, it["value"]) for t in texts), "samples": samples_per_item, **exact[i]}
        )
    return results


def aggregate(per_run: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Per-run pass rates over the items the sweep can measure (GPT-4's restriction).

    ``per_run``: run name -> per-item results of ``evaluate_pass_rates`` (same items).
    Returns ({run: {pass_rate, pass_rate_geo, value_prob, pass_rate_all}}, restriction),
    where ``restriction`` records which items were kept and why; a later run (the
    target) is scored with :func:`score_with_restriction` on exactly those items.
    """
    names = list(per_run)
    ids = [r["id"] for r in per_run[names[0]]] if names else []
    for n in names:
        if [r["id"] for r in per_run[n]] != ids:
            raise ValueError(f"run {n!r} was scored on different capability items; rerun its capability eval")
    count = {n: {r["id"]: r["passes"] for r in per_run[n]} for n in names}
    any_ids = [i for i in ids if any(count[n][i] > 0 for n in names)]
    every_ids = [i for i in ids if all(count[n][i] > 0 for n in names)]
    restriction = {
        "rule": "items solved at least once by at least one sweep model (pass_rate); "
        "by every sweep model (pass_rate_geo)",
        "n_items": len(ids),
        "solved_by_any": any_ids,
        "solved_by_every": every_ids,
    }
    return {n: score_with_restriction(per_run[n], restriction) for n in names}, restriction


def score_with_restriction(results: list[dict[str, Any]], restriction: dict[str, Any]) -> dict[str, float]:
    """A model's pass rates on the item sets fixed by ``aggregate``."""
    by_id = {r["id"]: r for r in results}
    missing = [i for i in restriction["solved_by_any"] if i not in by_id]
    if missing:
        raise ValueError(f"capability results lack {len(missing)} of the sweep's items (e.g. {missing[0]!r})")
    rate = lambda r: r["passes"] / r["samples"]  # noqa: E731
    any_rates = [rate(by_id[i]) for i in restriction["solved_by_any"]]
    every_rates = [rate(by_id[i]) for i in restriction["solved_by_every"]]
    nan = float("nan")
    return {
        "pass_rate": sum(any_rates) / len(any_rates) if any_rates else nan,
        "pass_rate_geo": (
            math.exp(sum(math.log(p) for p in every_rates) / len(every_rates))
            if every_rates and min(every_rates) > 0
            else nan
        ),
        "value_prob": (
            sum(by_id[i]["value_prob"] for i in restriction["solved_by_any"]) / len(any_rates) if any_rates else nan
        ),
        "pass_rate_all": sum(rate(r) for r in results) / len(results) if results else nan,
        "n_items_used": len(any_rates),
    }
