"""Turn prompts and responses into token ids the same way in SFT, sampling, RM, PPO and eval.

A prompt is formatted with the tokenizer's chat template (``add_generation_prompt``)
so the model is asked exactly as it will be asked at evaluation; the response is
followed by EOS. Models without a chat template (plain GPT-2) get a simple
"User:/Assistant:" format. Labels mask the prompt with -100, so SFT loss falls on
response tokens only (InstructGPT).
"""

from __future__ import annotations

from typing import Any

from alignlab.errors import DataError

IGNORE = -100
PLAIN_FORMAT = "User: {prompt}\nAssistant:"
# How the built-in world's corpus writes a question and its answer (world/corpus.py): the form a base model
# that never saw a chat template is asked in (FLAN's base-model baseline, the few-shot prompted base model).
CORPUS_QA = "Question: {prompt}\nAnswer:"


def prompt_text(tokenizer, prompt: str | list[dict[str, str]]) -> str:
    """The text the model sees before its answer."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    convo = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return f"{tokenizer.bos_token or ''}{convo}\nAssistant:"


def encode_prompt(tokenizer, prompt: str | list[dict[str, str]]) -> list[int]:
    return tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def response_suffix(tokenizer, response: str) -> str:
    """Chat models answer right after the template; plain models after a space."""
    lead = "" if getattr(tokenizer, "chat_template", None) else " "
    return lead + response.strip()


def encode_response(tokenizer, response: str, add_eos: bool = True) -> list[int]:
    ids = tokenizer(response_suffix(tokenizer, response), add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if add_eos else [])


def encode_example(tokenizer, prompt: str | list[dict[str, str]], response: str, max_len: int) -> dict[str, Any]:
    """input_ids and labels (prompt masked); prompts are cut from the left, responses from the right."""
    p = encode_prompt(tokenizer, prompt)
    r = encode_response(tokenizer, response)
    if len(r) >= max_len:
        r = r[: max_len // 2]
    p = p[-(max_len - len(r)) :]
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r, "prompt_len": len(p)}


def split_messages(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """A conversation -> (context up to the last assistant turn, that turn's content)."""
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("messages: the last message must be the assistant's answer")
    return messages[:-1], messages[-1]["content"]


def prompt_of(row: dict[str, Any], column: str = "prompt"):
    """What the policy is asked, from a data row: ``column`` (text or messages), else the context
    of a ``messages`` conversation (everything before the final assistant turn)."""
    if row.get(column) is not None:
        return row[column]
    msgs = row.get("messages")
    if msgs:
        return msgs[:-1] if msgs[-1].get("role") == "assistant" else msgs
    raise DataError(f"row has no '{column}' column and no 'messages' (columns: {sorted(row)})")


def encode_prompts(tokenizer, prompts: list, max_prompt_len: int) -> list[list[int]]:
    """Chat-formatted prompt ids, cut from the LEFT to ``max_prompt_len`` (the end of the question is kept)."""
    return [encode_prompt(tokenizer, p)[-max_prompt_len:] for p in prompts]


def encode_prompt_rows(tokenizer, rows: list[dict[str, Any]], column: str, max_prompt_len: int) -> list[list[int]]:
    """:func:`encode_prompts` of each row's :func:`prompt_of`."""
    return encode_prompts(tokenizer, [prompt_of(r, column) for r in rows], max_prompt_len)
