"""Stage: train a byte-level BPE tokenizer (with chat template) on a text corpus."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from alignlab.config import arg
from alignlab.data.load import column_values, load_dataset_any, require_column, require_format
from alignlab.errors import ConfigError
from alignlab.models.tokenizer import train_bpe


@dataclass
class TokenizerConfig:
    data: str = arg(
        "runs/world/corpus", "text data set to train on: saved datasets folder, .jsonl/.parquet file or hub id"
    )
    split: str = arg("train", "split of `data` to train on")
    text_column: str = arg("text", "column holding the text")
    vocab_size: int = arg(2048, "BPE vocabulary size, special tokens included")
    min_frequency: int = arg(2, "minimum pair frequency for a BPE merge")
    output_dir: str = arg("runs/tokenizer", "where to save the tokenizer (loads with AutoTokenizer.from_pretrained)")


PRESETS = {"smoke": {"vocab_size": 512}, "default": {}}


def run(cfg: TokenizerConfig) -> dict:
    t0 = time.time()
    ds = load_dataset_any(cfg.data, cfg.split)
    if cfg.text_column != "text":
        require_column(ds, cfg.text_column, cfg.data, "text_column")
    else:
        require_format(ds, ("text",), cfg.data)
    if cfg.vocab_size < 300:
        raise ConfigError(f"vocab_size={cfg.vocab_size}: must be at least 300 (256 bytes + special tokens)")
    texts = column_values(ds, cfg.text_column)
    tok = train_bpe(texts, cfg.vocab_size, cfg.min_frequency)
    tok.save_pretrained(cfg.output_dir)
    n_tokens = sum(len(x) for x in tok(texts[:2000], add_special_tokens=False)["input_ids"])
    n_chars = sum(len(t) for t in texts[:2000])
    summary = {
        "vocab_size": len(tok),
        "chars_per_token": round(n_chars / max(n_tokens, 1), 3),
        "seconds": round(time.time() - t0, 2),
    }
    print(f"tokenizer: {len(tok)} tokens, {summary['chars_per_token']} chars/token -> {Path(cfg.output_dir)}")
    return summary
