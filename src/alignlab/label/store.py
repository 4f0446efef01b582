"""The rankings file: one JSON line per submission, on disk before the page hears "saved".

Each line is appended, flushed and fsynced (and the folder fsynced when the file is new) before the
server answers, so a ranking the labeler saw accepted survives a crash or a kill. A kill in the middle of a
write can leave a last line without its newline: that submission was never acknowledged, so on start the
store cuts it off (and says so) rather than refusing the file. Read once at start, the lines tell which
items each labeler has done; a restarted server resumes there.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from alignlab.errors import DataError
from alignlab.label.items import item_id

REQUIRED = ("prompt", "responses", "labeler")


def read_rankings(path: Path) -> tuple[list[dict], int]:
    """The complete lines of ``path`` as rows, and the byte length they take (anything after is a torn write)."""
    data = path.read_bytes() if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]
    rows = []
    for lineno, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not a JSON line ({e.msg}); is this a rankings file?") from None
        if not isinstance(row, dict) or not all(k in row for k in REQUIRED):
            raise DataError(f"{path}:{lineno}: a rankings line needs {list(REQUIRED)}")
        rows.append(row)
    return rows, len(complete)


class RankingStore:
    """Appends rankings to one file, thread-safe, at most one per (labeler, item)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows, length = read_rankings(self.path)
        if self.path.exists() and self.path.stat().st_size > length:
            print(f"label: {self.path}: dropped a partial last line (a write cut off by a crash, never acknowledged)")
            os.truncate(self.path, length)
        self.done: set[tuple[str, str]] = {(r["labeler"], item_id(r["prompt"], r["responses"])) for r in rows}
        self.counts: dict[str, int] = {}
        for r in rows:
            self.counts[r["labeler"]] = self.counts.get(r["labeler"], 0) + 1
        self._lock = threading.Lock()

    def has(self, labeler: str, item: str) -> bool:
        return (labeler, item) in self.done

    def add(self, labeler: str, item: str, row: dict) -> bool:
        """Append ``row`` unless this labeler already ranked this item (then False: nothing written)."""
        with self._lock:
            if (labeler, item) in self.done:
                return False
            self._append(json.dumps(row, ensure_ascii=False) + "\n")
            self.done.add((labeler, item))
            self.counts[labeler] = self.counts.get(labeler, 0) + 1
            return True

    def _append(self, line: str) -> None:
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if new:  # the file's name in its folder must reach the disk too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
