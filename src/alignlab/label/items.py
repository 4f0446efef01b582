"""The prompts to rank, each with its K responses: read from ranked rows, or sampled from policies.

An item is known by its prompt and the multiset of its responses (:func:`item_id`), not by its row
number: the rankings file lists the responses best -> worst, and a restarted server must still see which
items a labeler has done, however the data file was reordered in between.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.load import load_dataset_any
from alignlab.errors import DataError
from alignlab.label.submission import MAX_K


@dataclass(frozen=True)
class Item:
    id: str
    prompt: Any  # as in the data: text or chat messages (written back unchanged)
    responses: tuple[str, ...]  # as read or sampled; the page shows them in each labeler's own order


def item_id(prompt: Any, responses: list[str] | tuple[str, ...]) -> str:
    """The same prompt with the same responses, in any order, is the same item."""
    key = json.dumps([prompt, sorted(responses)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def prompt_text(prompt: Any) -> str:
    """What the page shows as the prompt: the text, or a conversation one message per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def default_split(source: str, split: str) -> str | None:
    """``split``, else for a saved DatasetDict 'train' when it has one and its first split otherwise (a world's
    test folder holds only 'test'); None (all rows) for a file."""
    if split:
        return split
    listing = Path(source).expanduser() / "dataset_dict.json"
    if not listing.is_file():
        return None
    names = json.loads(listing.read_text()).get("splits") or ["train"]
    return "train" if "train" in names else names[0]


def load_prompt_rows(source: str, split: str, max_prompts: int) -> list[dict]:
    """The data's rows (the first ``max_prompts``), refused when they have no prompt."""
    if not source:
        raise DataError("label: no prompts; give --data (a world split, a .jsonl of prompts or ranked rows)")
    ds = load_dataset_any(source, default_split(source, split))
    if "prompt" not in ds.column_names:
        raise DataError(f"{source}: no 'prompt' column (columns: {ds.column_names})")
    rows = list(ds) if not max_prompts else [ds[i] for i in range(min(max_prompts, len(ds)))]
    for i, row in enumerate(rows):
        if not isinstance(row["prompt"], (str, list)) or not row["prompt"]:
            raise DataError(f"{source} row {i}: 'prompt' must be text or a list of chat messages")
    return rows


def responses_of(rows: list[dict], source: str) -> list[list[str]]:
    """The responses of ranked rows, as strings; refused when there are none to rank."""
    if rows and "responses" not in rows[0]:
        raise DataError(
            f"{source}: no 'responses' column to rank; give --policies to sample responses for these prompts"
        )
    out = []
    for i, row in enumerate(rows):
        responses = row["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise DataError(f"{source} row {i}: 'responses' must be a list of strings")
        if len(responses) > MAX_K:
            raise DataError(f"{source} row {i}: {len(responses)} responses; at most {MAX_K} (one digit key each)")
        out.append(responses)
    return out


def make_items(rows: list[dict], responses: list[list[str]]) -> tuple[list[Item], int]:
    """Items of the rows that have two responses or more, each item once; and how many rows were left out."""
    items, seen = [], set()
    for row, resp in zip(rows, responses):
        key = item_id(row["prompt"], resp)
        if len(resp) < 2 or key in seen:
            continue
        seen.add(key)
        items.append(Item(key, row["prompt"], tuple(resp)))
    return items, len(rows) - len(items)
