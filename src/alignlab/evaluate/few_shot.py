"""InstructGPT's "GPT-3 prompted" baseline: the base model asked after a fixed few-shot prefix.

A pretrained model never saw the chat template the SFT policy answers in. InstructGPT compared its
policies also with GPT-3 given "a few-shot prefix to 'prompt' it into an instruction-following mode".
Here the prefix is k demonstrations in the corpus's own question-and-answer form (``data.chat.CORPUS_QA``;
the world's corpus writes Q&A documents that way), then the evaluated prompt::

    <bos>Question: {demonstration prompt 1}
    Answer: {its demonstration}
    ...
    Question: {the evaluated prompt}
    Answer:

One prefix for every prompt, as InstructGPT's was: k demonstrations drawn with the evaluation's seed from
the shortest quarter of a demonstration set (the SFT train split), none of whose prompts is evaluated, so
k of them and a question fit a small model's context. A prompt too long for all k keeps the demonstrations
nearest to it. A base model does not stop after its answer: it goes on to the next question of its Q&A
document, so the answer is cut where that starts (``STOPS``).
"""

from __future__ import annotations

import random

from alignlab.data.chat import CORPUS_QA
from alignlab.errors import ConfigError

# Where a base model's answer ends: an answer in the corpus's Q&A documents is one line (so is every
# demonstration), and the next line is the next question ("Question:", the corpus's other "Q:", or one the
# model makes up); "Question:" within the line starts one too.
STOPS = ("\n", "Question:")


def pick_demonstrations(
    prompts: list, responses: list[str], k: int, exclude: set[str], seed: int
) -> list[tuple[str, str]]:
    """k (prompt, response) pairs, seeded, from the shortest quarter of those whose prompt is text and not
    in ``exclude`` (the evaluated prompts)."""
    pairs = [(p, r) for p, r in zip(prompts, responses) if isinstance(p, str) and p not in exclude]
    if len(pairs) < k:
        raise ConfigError(
            f"few_shot_k: {k} demonstrations asked for, but only {len(pairs)} text prompts are not evaluated"
        )
    short = sorted(pairs, key=lambda pr: len(qa_block(*pr)))[: max(k, len(pairs) // 4)]
    return random.Random(seed).sample(short, k)


def qa_block(prompt: str, response: str) -> str:
    return CORPUS_QA.format(prompt=prompt) + " " + response.strip() + "\n"


def prompt_ids(tok, demos: list[tuple[str, str]], prompt, budget: int) -> tuple[list[int], int]:
    """The few-shot prompt's ids within ``budget`` tokens, and how many demonstrations it kept (the last
    ones: those nearest the question). Without room for any, the question alone, cut from the left."""
    if not isinstance(prompt, str):
        raise ConfigError("few_shot: a few-shot prompted policy needs text prompts, not chat messages")
    question = CORPUS_QA.format(prompt=prompt)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    for shown in range(len(demos), -1, -1):
        text = "".join(qa_block(*d) for d in demos[len(demos) - shown :]) + question
        ids = bos + tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            return ids, shown
    return ids[-budget:], 0


def cut_at_stop(text: str) -> tuple[str, bool]:
    """The answer up to where the model starts a new question, and whether it did."""
    ends = [i for i in (text.find(s) for s in STOPS) if i >= 0]
    return (text[: min(ends)].rstrip(), True) if ends else (text, False)


def stop_at_next_question(samples, tok) -> None:
    """Cut every sample of a few-shot prompted policy at its next question (``evaluate.sampling.PolicySamples``,
    in place; the space after "Answer:" stripped too). A cut answer ended there as if at EOS: its length is
    the tokens kept, plus that end."""
    for p, row in enumerate(samples.texts):
        for j, text in enumerate(row):
            answer, stopped = cut_at_stop(text)
            row[j] = answer.strip()
            if stopped:
                samples.length[p, j] = len(tok(" " + row[j], add_special_tokens=False)["input_ids"]) + 1
                samples.eos[p, j] = 1.0
