"""Load data sets the way users already have them, with errors that say where they went wrong.

A source is one of: a folder written by ``datasets.save_to_disk`` (Dataset or
DatasetDict), a local ``.jsonl``/``.json``/``.parquet`` file, or a hub id.
The formats every stage understands (the Hugging Face / TRL conventions):

    text               {"text"}
    prompt_completion  {"prompt", "completion"}
    messages           {"messages": [{"role", "content"}, ...]}
    preference         {"prompt", "chosen", "rejected"}
    ranked             {"prompt", "responses": [best, ..., worst]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets

from alignlab.data.chat import split_messages
from alignlab.errors import DataError

FORMATS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "ranked": ("prompt", "responses"),
}


def column_values(ds: datasets.Dataset, column: str) -> list:
    """Every row's ``column`` as a list, read in one bulk slice. ``ds[column]`` in datasets 4+ is a lazy
    column that formats row by row when iterated: ~40x slower, seconds per pass over a pretraining corpus."""
    return ds.select_columns([column])[:][column] if len(ds) else []


def _read_jsonl(path: Path) -> datasets.Dataset:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    keys = set(rows[0])
    for i, row in enumerate(rows, start=1):
        if set(row) != keys:
            missing, extra = keys - set(row), set(row) - keys
            raise DataError(
                f"{path}: row {i} has different columns from row 1 (missing {sorted(missing)}, extra {sorted(extra)})"
            )
    return datasets.Dataset.from_list(rows)


def load_dataset_any(source: str, split: str | None = None) -> datasets.Dataset:
    """Return one split of ``source`` as a Dataset (``split`` defaults to 'train').

    A file or a saved single Dataset has no splits: every split name returns all of its rows. A stage
    that evaluates must not read its held-out rows this way; ``data/heldout.load_train_eval`` does it."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            if suffix == ".json" and path.read_text(encoding="utf-8").lstrip().startswith("["):
                try:
                    return datasets.Dataset.from_list(json.loads(path.read_text(encoding="utf-8")))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
            return _read_jsonl(path)
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(str(path))
        raise DataError(
            f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .parquet or a saved datasets folder)"
        )
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise DataError(f"{path}: not a folder written by datasets.save_to_disk") from None
        if isinstance(loaded, datasets.DatasetDict):
            name = split or "train"
            if name not in loaded:
                raise DataError(f"{path}: no split '{name}' (splits: {', '.join(loaded)})")
            return loaded[name]
        return loaded
    if source.startswith((".", "/", "~")) or source.endswith((".jsonl", ".json", ".parquet")):
        raise DataError(f"data not found: {source}")
    try:
        return datasets.load_dataset(source, split=split or "train")  # a hub id
    except OSError as e:  # not cached and the hub unreachable, or no such data set on the hub
        raise DataError(_hub_failure(source, e)) from e


def _hub_failure(source: str, err: OSError) -> str:
    if isinstance(err, ConnectionError):
        return (
            f"data not found: '{source}' is no local file or folder, is not in the Hugging Face cache, "
            "and the hub could not be reached (no network, or HF_HUB_OFFLINE is set)"
        )
    if isinstance(err, datasets.exceptions.DatasetNotFoundError):
        return f"data not found: '{source}' is no local file or folder, and the Hugging Face hub has no such data set"
    return f"data '{source}' could not be loaded from the Hugging Face hub: {(str(err).strip().splitlines() or [type(err).__name__])[0]}"


def detect_format(ds: datasets.Dataset) -> str:
    cols = set(ds.column_names)
    for name in ("ranked", "preference", "messages", "prompt_completion", "text"):
        if set(FORMATS[name]) <= cols:
            return name
    raise DataError(f"columns {sorted(cols)} match no known format; accepted: {describe_formats()}")


def require_format(ds: datasets.Dataset, accepted: tuple[str, ...], source: str = "data") -> str:
    """The first of ``accepted`` formats the data set has; else an error naming the missing columns."""
    cols = set(ds.column_names)
    for name in accepted:
        if set(FORMATS[name]) <= cols:
            return name
    wants = "; ".join(f"{n}: missing {sorted(set(FORMATS[n]) - cols)}" for n in accepted)
    raise DataError(f"{source}: has columns {sorted(cols)}; this stage accepts {', '.join(accepted)} ({wants})")


def require_column(ds: datasets.Dataset, column: str, source: str, key: str, alternative: str = "") -> None:
    """Refuse data without ``column`` (or the ``alternative`` column that can stand in for it), naming the
    data and the config ``key`` that picks another column."""
    cols = ds.column_names
    if column in cols or (alternative and alternative in cols):
        return
    either = f" (nor '{alternative}')" if alternative else ""
    raise DataError(f"{source}: no column '{column}'{either}; columns: {cols}; set {key} to the column to use")


def describe_formats() -> str:
    return "; ".join(f"{k} {list(v)}" for k, v in FORMATS.items())


def load_demonstrations(source: str, split: str) -> tuple[Any, list, list[str]]:
    """(dataset, prompts, responses) from prompt/completion or messages rows.

    A prompt is a string or a list of chat messages (the conversation before the answer);
    TRL's conversational prompt/completion (lists of messages) is accepted too.
    """
    ds = load_dataset_any(source, split)
    return (ds, *demonstrations(ds, f"{source} ({split} split)"))


def demonstrations(ds: datasets.Dataset, where: str) -> tuple[list, list[str]]:
    """(prompts, responses) of loaded demonstration rows; ``where`` names them in errors."""
    fmt = require_format(ds, ("prompt_completion", "messages"), where)
    prompts, responses = [], []
    if fmt == "prompt_completion":
        for i, (p, c) in enumerate(zip(ds["prompt"], ds["completion"])):
            if isinstance(c, list):  # conversational completion: [{"role": "assistant", "content": ...}]
                c = c[-1]["content"] if c else ""
            if not isinstance(c, str) or not c.strip():
                raise DataError(f"{where} row {i}: empty completion")
            prompts.append(p)
            responses.append(c)
    else:
        for i, msgs in enumerate(ds["messages"]):
            try:
                context, answer = split_messages(msgs)
            except ValueError as e:
                raise DataError(f"{where} row {i}: {e}") from None
            prompts.append(context)
            responses.append(answer)
    return prompts, responses
