"""Held-out means held out: the one rule every stage uses to split a source into training and evaluation rows.

A stage asks for its training split and its evaluation split of one source (``load_train_eval``):

* the source has a split of the evaluation name (a saved ``DatasetDict`` or a hub data set with it):
  that split, as saved (``how = "split"``; the built-in world's sources are all of this kind);
* evaluation data from another source (a stage's ``eval_data``): that source, whole
  (``how = "separate_source"``);
* otherwise -- a single ``.jsonl``/``.json``/``.parquet`` file, a saved ``Dataset``, or a ``DatasetDict``
  without that split -- a share ``eval_fraction`` of the training rows' distinct PROMPTS is held out
  (``how = "fraction"``). Every row of a held-out prompt goes to the evaluation side, so no prompt is
  trained on and evaluated on. Which prompts is a function of the prompts alone (not of row order, the
  machine or a seed): the distinct prompts ranked by the SHA-256 of their canonical text, the first
  ``max(1, round(fraction x n))`` held out;
* ``eval_fraction`` 0, or a source with a single distinct prompt: no evaluation (``how = "none"``).

The group is the prompt (a string, or chat messages as canonical JSON; a ``messages`` row's prompt is the
conversation before the last assistant turn); for text data (pretraining) it is the document itself.
``HeldoutInfo`` says what was chosen; stages write it into summary.json as ``heldout``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets

from alignlab.config import ConfigError
from alignlab.data.chat import prompt_of
from alignlab.data.load import DataError, column_values, load_dataset_any, require_column

DEFAULT_EVAL_FRACTION = 0.05
EVAL_FRACTION_HELP = (
    "share of the distinct prompts held out for evaluation when the data has no split of the evaluation name "
    "(a single .jsonl/.json/.parquet file); chosen by prompt hash, so the same prompts whatever the row order; "
    "0 = no evaluation"
)
HOW = ("split", "separate_source", "fraction", "none")


@dataclass(frozen=True)
class HeldoutInfo:
    """Where a stage's held-out rows came from (summary.json's ``heldout``)."""

    source: str  # the data set the held-out rows were read from ('' = none)
    split: str  # its split, "held out 5% of prompts by hash", or why there is none
    how: str  # one of HOW
    prompts: int  # distinct prompts of the held-out set (documents, for text), before a stage's own cap
    train_prompts: int  # distinct prompts on the training side
    overlap: int = 0  # held-out prompts that are also training prompts (0 unless the user's splits share some)
    unit: str = "prompts"  # "documents" for text data; only for the log line

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split": self.split,
            "how": self.how,
            "prompts": self.prompts,
            "train_prompts": self.train_prompts,
            "overlap": self.overlap,
        }

    def unused(self, why: str) -> HeldoutInfo:
        """The record when a stage could not evaluate on the held-out rows after all (``why``)."""
        return replace(self, how="none", split=why, prompts=0, overlap=0)

    def line(self) -> str:
        """One line for the stage's log: what is held out, and what is trained on."""
        u = self.unit
        if self.how == "none":
            text = f"held-out: none ({self.split}); no evaluation; training on all {self.train_prompts} {u}"
        elif self.how == "fraction":
            n = self.prompts + self.train_prompts
            text = (
                f"held-out: {self.prompts} of {n} {u} of {self.source} ({self.split.removeprefix('held out ')}); "
                f"training on the other {self.train_prompts}"
            )
        elif self.how == "split":
            text = (
                f"held-out: the '{self.split}' split of {self.source} ({self.prompts} {u}); "
                f"training on {self.train_prompts} {u}"
            )
        else:
            text = (
                f"held-out: {self.prompts} {u} of {self.source} (a separate source, {self.split}); "
                f"training on {self.train_prompts} {u}"
            )
        if self.overlap:
            text += f" -- WARNING: {self.overlap} held-out {u} also appear in the training data"
        return text


@dataclass
class TrainEval:
    """A stage's training rows, its held-out rows (None: no evaluation), and where they came from."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    info: HeldoutInfo


# ------------------------------------------------------------------------- grouping


def canonical(prompt: Any) -> str:
    """A prompt as one string: itself, or chat messages as sorted-key JSON (the same messages, the same string)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def group_keys(ds: datasets.Dataset, column: str = "prompt", text: bool = False) -> list[str]:
    """Each row's group: its prompt (``column``, else the context of ``messages``), or for ``text`` the document."""
    cols = ds.column_names
    if text or column in cols:
        if column not in cols:
            raise DataError(f"no column '{column}' to hold out by (columns: {cols})")
        values = column_values(ds, column)
        if not text and "messages" in cols and any(v is None for v in values):
            messages = column_values(ds, "messages")
            values = [prompt_of({column: v, "messages": m}, column) for v, m in zip(values, messages)]
        return [canonical(v) for v in values]
    if "messages" in cols:
        return [canonical(prompt_of({"messages": m})) for m in column_values(ds, "messages")]
    raise DataError(f"rows have no '{column}' and no 'messages' column to hold out by (columns: {cols})")


def count_distinct(ds: datasets.Dataset | None, column: str = "prompt", text: bool = False) -> int:
    return len(set(group_keys(ds, column, text))) if ds is not None and len(ds) else 0


def _rank(key: str) -> tuple[str, str]:
    # the hash decides; the text breaks a (never seen) tie, so the order is total
    return hashlib.sha256(key.encode("utf-8")).hexdigest(), key


def heldout_groups(keys: list[str], fraction: float) -> set[str]:
    """The groups to hold out: the first max(1, round(fraction x n)) distinct groups by hash, leaving at least
    one to train on; none when ``fraction`` is 0 or there is a single group."""
    check_fraction(fraction)
    distinct = sorted(set(keys), key=_rank)
    if fraction == 0 or len(distinct) < 2:
        return set()
    n = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    return set(distinct[:n])


def check_fraction(fraction: float, name: str = "eval_fraction") -> None:
    if not 0 <= fraction < 1:
        raise ConfigError(f"{name}: must be >= 0 and < 1 (a share of the prompts to hold out), got {fraction!r}")


def split_by_prompt(
    ds: datasets.Dataset, fraction: float, column: str = "prompt", text: bool = False
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """(training rows, held-out rows or None): every row of a held-out group on the held-out side, row order kept."""
    keys = group_keys(ds, column, text)
    held = heldout_groups(keys, fraction)
    if not held:
        return ds, None
    train_idx = [i for i, k in enumerate(keys) if k not in held]
    eval_idx = [i for i, k in enumerate(keys) if k in held]
    return ds.select(train_idx), ds.select(eval_idx)


# ------------------------------------------------------------------------- sources


def has_split(source: str, split: str) -> bool:
    """Whether ``source`` has a split named ``split``: a saved DatasetDict or a hub data set with it. A file or
    a saved single Dataset has none (``load_dataset_any`` returns its rows for any split name)."""
    path = Path(source).expanduser()
    if path.is_file():
        return False
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise DataError(f"{path}: not a folder written by datasets.save_to_disk") from None
        return isinstance(loaded, datasets.DatasetDict) and split in loaded
    if source.startswith((".", "/", "~")) or source.endswith((".jsonl", ".json", ".parquet")):
        raise DataError(f"data not found: {source}")
    return split in datasets.get_dataset_split_names(source)  # a hub id


def same_source(a: str, b: str) -> bool:
    """Whether two sources name the same data (the same path, or the same hub id)."""
    if not a or not b:
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def _fraction_note(fraction: float, unit: str) -> str:
    return f"held out {100 * fraction:g}% of {unit} by hash"


def load_train_eval(
    source: str,
    train_split: str,
    eval_split: str,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    eval_data: str = "",
    column: str = "prompt",
    text: bool = False,
    load: Callable[[str, str], datasets.Dataset] = load_dataset_any,
    column_key: str = "",
) -> TrainEval:
    """The training rows of ``source`` and its held-out rows, by the module's rule.

    ``eval_split`` '' means no evaluation (a stage's way to turn it off), even with ``eval_data``. ``eval_data`` names a separate
    held-out source (its ``eval_split`` if it has one, else all of it); naming ``source`` itself there is
    the same as leaving it empty. ``column`` holds the prompt (the document, with ``text``); data without it
    is refused naming ``column_key``, the config key that picks another column."""
    check_fraction(eval_fraction)
    unit = "documents" if text else "prompts"

    def load(src: str, split: str, _load=load) -> datasets.Dataset:
        ds = _load(src, split)
        if column_key:
            require_column(ds, column, f"{src} ({split} split)", column_key, alternative="" if text else "messages")
        return ds

    train = load(source, train_split)
    if not eval_split:
        how, eval_source, eval_ds, split = "none", "", None, "eval_split is empty"
    elif eval_data and not same_source(eval_data, source):
        how, eval_source, eval_ds = "separate_source", eval_data, load(eval_data, eval_split)
        split = eval_split if has_split(eval_data, eval_split) else "all rows"
    elif has_split(source, eval_split):
        if eval_split == train_split:
            raise DataError(
                f"{source}: the evaluation split '{eval_split}' is the training split; give another split, "
                "--eval_data FILE, or leave the split out to hold out --eval_fraction of the prompts"
            )
        how, eval_source, eval_ds, split = "split", source, load(source, eval_split), eval_split
    else:
        try:
            train, eval_ds = split_by_prompt(train, eval_fraction, column, text)
        except DataError as e:
            raise DataError(f"{source} ({train_split} split): {e}") from None
        eval_source = source
        if eval_ds is not None:
            how, split = "fraction", _fraction_note(eval_fraction, unit)
        else:
            how = "none"
            split = f"eval_fraction is {eval_fraction:g}" if eval_fraction == 0 else f"a single distinct {unit[:-1]}"
    try:
        info = _info(train, eval_ds, how, eval_source, split, column, text, unit)
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    return TrainEval(train, eval_ds, info)


def _info(train, eval_ds, how: str, source: str, split: str, column: str, text: bool, unit: str) -> HeldoutInfo:
    train_keys = set(group_keys(train, column, text))
    eval_keys = set(group_keys(eval_ds, column, text)) if eval_ds is not None and len(eval_ds) else set()
    return HeldoutInfo(source, split, how, len(eval_keys), len(train_keys), len(eval_keys & train_keys), unit)


def separate_info(source: str, split: str, rows: list[dict] | None, train_keys: set[str]) -> HeldoutInfo:
    """The record of held-out prompt rows a stage read from a source of their own (``rows`` None or empty:
    none), checked against the training prompts ``train_keys`` (``group_keys`` of the training rows)."""
    if not rows:
        return HeldoutInfo("", "no held-out prompts given", "none", 0, len(train_keys))
    keys = {canonical(prompt_of(r)) for r in rows}
    return HeldoutInfo(source, split, "separate_source", len(keys), len(train_keys), len(keys & train_keys))


def no_eval_message(stage: str, source: str, info: HeldoutInfo) -> str:
    """Why a stage that needs held-out data refuses to run without it, and how to give some."""
    return (
        f"{stage}: no held-out data in {source} ({info.split}); {stage} needs some to evaluate on. Give "
        "--eval_data FILE, a saved DatasetDict with a 'validation' split, or --eval_fraction above 0"
    )
