"""One writer per run folder: a second process that starts on a folder in use is refused.

The lock is ``RUN/.alignlab.lock``, held with ``flock`` for as long as the stage runs and holding
the holder's PID and start time. The kernel drops an flock when its process dies, however it dies,
so a lock left by a killed run never blocks the next one; the PID it left behind is reported as
recovered. (On systems without ``fcntl`` the folder is not locked.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from alignlab.errors import RunStopped

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".alignlab.lock"


class RunFolderInUse(RunStopped, RuntimeError):
    """Another live process is writing this run folder."""


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the body runs; refuse (RunFolderInUse) when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if "started" in h else "?"
            raise RunFolderInUse(
                f"{folder} is in use by process {h.get('pid', '?')} on {h.get('host', '?')} (started {since}); "
                "wait for it to finish or stop it, or give another --output_dir: two runs writing one folder "
                "would mix their checkpoints"
            ) from None
        left = _holder(fd)
        if left.get("pid") and left["pid"] != os.getpid():
            print(
                f"{folder}: recovered the lock left by process {left['pid']}, which is no longer running",
                file=sys.stderr,
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 1)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
