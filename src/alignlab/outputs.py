"""What every stage writes into its output folder, written so a crash never leaves half a file.

config.yaml     the exact resolved config the stage ran with
metrics.jsonl   one JSON object per logged step (also mirrored to TensorBoard under tb/)
summary.json    headline numbers, written last: its presence means the stage finished
README.md       a short model card
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from alignlab.config import to_yaml

SUMMARY = "summary.json"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a fully written folder into place; the old one is removed only after the swap."""
    final_dir = Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


class MetricsLogger:
    """Append-only metrics.jsonl plus TensorBoard scalars; safe to reopen after a resume.

    On resume, pass ``truncate_after_step`` = the checkpoint's step so lines logged after
    that checkpoint (by the run that was killed) are dropped and not duplicated.
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, truncate_after_step: int | None = None):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                if rec.get("step", -1) <= truncate_after_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tb"), purge_step=truncate_after_step)
            except Exception:  # tensorboard is optional at run time
                self._tb = None

    def log(self, step: int, **metrics: Any) -> None:
        rec = {"step": step, "time": round(time.time(), 3), **_jsonable(metrics)}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_config(out_dir: str | Path, cfg: Any) -> None:
    atomic_write_text(Path(out_dir) / "config.yaml", to_yaml(cfg))


def write_summary(out_dir: str | Path, summary: dict[str, Any]) -> None:
    atomic_write_json(Path(out_dir) / SUMMARY, summary)


def read_summary(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def write_model_card(out_dir: str | Path, stage: str, summary: dict[str, Any], extra: str = "") -> None:
    lines = [
        f"# alignlab {stage} output",
        "",
        "Load with plain transformers:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained('{Path(out_dir).as_posix()}')",
        f"tok = AutoTokenizer.from_pretrained('{Path(out_dir).as_posix()}')",
        "```",
        "",
        "## Summary",
        "",
    ]
    for k, v in summary.items():
        if not isinstance(v, (dict, list)):
            lines.append(f"- **{k}**: {v}")
    if extra:
        lines += ["", extra]
    lines += ["", "Full config: `config.yaml`. Per-step metrics: `metrics.jsonl` (TensorBoard: `tb/`)."]
    atomic_write_text(Path(out_dir) / "README.md", "\n".join(lines) + "\n")
