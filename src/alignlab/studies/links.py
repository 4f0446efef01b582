"""A study's own run folder borrows finished steps of the run it builds on as links, not copies."""

from __future__ import annotations

import os
from pathlib import Path

from alignlab.errors import MissingInputError
from alignlab.outputs import read_summary


def link_finished_step(src: Path, dst: Path) -> None:
    """dst -> src (relative, so the run folder can be moved whole); src must have finished."""
    if dst.is_symlink() or dst.exists():
        return
    if read_summary(src) is None:
        raise MissingInputError(f"{src} has not finished: run the pipeline's {src.name} step first")
    dst.symlink_to(os.path.relpath(src.resolve(), dst.parent.resolve()))
