"""Rank classification: FLAN's scoring of tasks whose answer is one of a few options.

Greedy generation scored by the task checker measures two things at once, whether the model knows the
answer and whether it writes it in a form the checker reads; a small model tuned on other clusters can
fail an unseen task on the second alone. For a task with a closed set of answers (yes/no,
positive/negative, one of two names, one of the categories, one value of the asked attribute's class),
rank classification asks only the first: the log-likelihood of each option as the response to the
prompt, highest wins (GPT-3's zero-shot multiple choice; the rank classification FLAN discusses for
classification tasks and T0 scores them with).

Options are written as the careful demonstration answers with each of them ("Bruk's favourite colour is
red." for every colour, "A fruit." for every category), a constrained prompt's constraint applied the
same way (``constraints.comply``), because that is the form a tuned model learned: the right option is
exactly the record's reference, and the checker scores it 1 and every other option 0 (the tests hold
that for every such record of a world). Tasks without a closed answer set stay generation-scored:
sorting (6 orders of 3 items are a closed set, but the answer is a whole sequence written out, not a
choice), extracting a number (any number may be in the sentence), passage QA (the right answer may be
"the passage does not say", which no option list here states).

The score is the raw sum of the option's token log-probs, not normalised by length, as T0 states for its
rank classification and as lm-eval's ``acc`` computes it. The options of one prompt share their wording
around the answer, so they differ in length by the answer's few tokens; a per-token mean would instead
favour long multi-token names, whose later tokens follow from their first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alignlab.evaluate.alignment_tax import pair_logprobs
from alignlab.models.load import context_length
from alignlab.world import constraints, facts, phrasing


@dataclass(frozen=True)
class Options:
    """A prompt's closed answer set: the answers, each as the response that states it, and the right one."""

    answers: list[str]  # "red", "yes", "Bruk"
    texts: list[str]  # the scored responses: "Bruk's favourite colour is red.", "Yes.", "Bruk is older."
    gold: int  # index of the right answer


def _yes_no(meta: dict, world) -> list[str]:
    return ["yes", "no"]


def _choices(meta: dict, world) -> list[str]:
    """The choices the task offered (two numbers, two names, the categories, every bystander, the colours)."""
    return list(dict.fromkeys(str(c) for c in meta["choices"]))


def _attribute_values(meta: dict, world) -> list[str]:
    """Every value the asked attribute takes in this world (each town for a home town, each age in the age
    range), less the entity itself (no one is their own best friend; the checker skips that name)."""
    values = facts.values_for(world, meta["kind"], meta["attr"])
    return list(dict.fromkeys(str(v) for v in values if str(v) != meta["entity"]))


# How the careful demonstration (tasks.py) states answer ``a``: (response, the short form a word limit leaves).
def _word(meta: dict, world, a: str) -> tuple[str, str | None]:
    return f"{phrasing.capitalise(a)}.", None  # "Yes.", "Positive.", "57.", "Digu.", "Red."


def _statement(meta: dict, world, a: str) -> tuple[str, str | None]:
    e = world.entity(meta["entity"])  # "Bruk lives in Tamo." / "Tamo."
    return phrasing.canonical(e["kind"], meta["attr"], e["name"], a, e["noun"] or "thing"), f"{phrasing.capitalise(a)}."


def _category(meta: dict, world, a: str) -> tuple[str, str | None]:
    return f"{phrasing.article(a).capitalize()} {a}.", f"{a.capitalize()}."  # "An animal." / "Animal."


def _named(verb: str) -> Callable[[dict, object, str], tuple[str, str | None]]:
    return lambda meta, world, a: (f"{a} is {verb}.", f"{a}.")  # "Bruk is older." / "Bruk."


# task -> (its answer set, how a response states one answer); a task not here is generation-scored
RANKED_TASKS: dict[str, tuple[Callable, Callable]] = {
    "attribute_qa": (_attribute_values, _statement),
    "fact_yes_no": (_yes_no, _word),
    "is_category": (_yes_no, _word),
    "category_of": (_choices, _category),
    "sentiment": (_choices, _word),
    "larger_number": (_choices, _word),
    "older": (_choices, _named("older")),
    "bigger": (_choices, _named("bigger")),
    "extract_name": (_choices, _word),
    "extract_colour": (_choices, _word),
}


def _as_answered(meta: dict, text: str, short: str | None) -> str:
    """``text`` as the careful demonstrator writes it under the prompt's constraint (with this option's own
    short form, which a word limit falls back to), or as it is without one."""
    c = meta.get("constraint")
    return constraints.comply(text, c, dict(meta, short=short, reference=text)) if c else text


def options_for(record: dict, world) -> Options | None:
    """The closed answer set of a world record (a row of sft/test: ``task`` and its ``meta`` JSON), or None
    for a task that has none (see ``RANKED_TASKS``)."""
    if record["task"] not in RANKED_TASKS:
        return None
    meta = json.loads(record["meta"]) if isinstance(record["meta"], str) else record["meta"]
    answer_set, state = RANKED_TASKS[record["task"]]
    answers = answer_set(meta, world)
    if str(meta["answer"]) not in answers:
        return None  # not a closed question after all (never seen in the built-in world)
    texts = [_as_answered(meta, *state(meta, world, a)) for a in answers]
    return Options(answers, texts, answers.index(str(meta["answer"])))


def option_logprobs(
    model, prompt_ids: Sequence[list[int]], option_ids: Sequence[Sequence[list[int]]], pad_id: int, batch_size: int
) -> list[np.ndarray]:
    """Per prompt, [n_options] summed log-probs of each option's tokens after the prompt: every pair of every
    prompt in padded batches (``pair_logprobs``), a prompt cut from the left where a pair would not fit."""
    max_len = context_length(model)
    pairs = [
        (prompt[-(max_len - len(o[: max_len - 1])) :], o[: max_len - 1])
        for prompt, opts in zip(prompt_ids, option_ids)
        for o in opts
    ]
    scores = pair_logprobs(model, pairs, pad_id, batch_size)
    bounds = np.cumsum([0] + [len(opts) for opts in option_ids])
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def rank_classify(
    model, tok, prompt_ids: Sequence[list[int]], options: Sequence[Sequence[str]], batch_size: int = 64
) -> tuple[list[int], list[np.ndarray]]:
    """The pick (index of the highest-scoring option; ties: the first) and the options' log-probs, per prompt.
    ``options`` are the exact continuation texts (lead space or not: the caller's prompt format decides)."""
    flat = [o for opts in options for o in opts]
    ids = tok(flat, add_special_tokens=False)["input_ids"] if flat else []
    bounds = np.cumsum([0] + [len(opts) for opts in options])
    option_ids = [ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    logprobs = option_logprobs(model, prompt_ids, option_ids, pad, batch_size)
    return [int(np.argmax(lp)) for lp in logprobs], logprobs
