"""Checkpoint folders that prove themselves: written whole, hashed, rotated, verified on resume.

A stage's resumable state lives beside its outputs::

    checkpoint/        the latest checkpoint
    checkpoint.prev/   the one before, kept in case the latest is damaged
    checkpoint.tmp/    one being written; complete only once its manifest is

Each folder ends with ``manifest.json``: the step and, for every other file, its size and SHA-256.
The manifest is written last and the folder is renamed into place only after it, so a kill at any
moment of a save leaves at least one complete checkpoint. On resume every candidate is checked
against its manifest; a truncated or altered one is named, moved aside to ``<name>.corrupt`` and
the newest good one is used. A save that fails (a full disk) removes its half-written folder and
says which checkpoint is still intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from alignlab.errors import RunStopped
from alignlab.faults import fault_point

MANIFEST = "manifest.json"
STATE = "trainer_state.json"


class CheckpointError(RunStopped, OSError):
    """A checkpoint could not be written or none of the existing ones can be trusted."""


def _sibling(ckpt_dir: Path, suffix: str) -> Path:
    return ckpt_dir.with_name(ckpt_dir.name + suffix)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps({"format": 1, "step": step, "files": files}, indent=1))


def problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None when every file matches its manifest."""
    if not (folder / MANIFEST).is_file():
        return "no manifest.json (the write did not finish)"
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"manifest.json is unreadable ({e})"
    for name, want in listed.items():
        path = folder / name
        try:
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != want["bytes"]:
                return f"{name} has {path.stat().st_size} bytes, the manifest says {want['bytes']} (truncated?)"
            if _sha256(path) != want["sha256"]:
                return f"{name} does not match its SHA-256 in the manifest (corrupted)"
        except OSError as e:  # unreadable, or moved aside by the main process meanwhile
            return f"{name} cannot be read ({e.strerror or e})"
    extra = [str(p.relative_to(folder)) for p in _files(folder) if str(p.relative_to(folder)) not in listed]
    return f"{extra[0]} is not in the manifest" if extra else None


def _legacy(folder: Path) -> bool:
    """A finished checkpoint written before manifests: only a complete write is ever renamed to ``checkpoint/``."""
    return (
        not folder.name.endswith((".tmp", ".prev")) and not (folder / MANIFEST).exists() and (folder / STATE).exists()
    )


def step_of(folder: Path) -> int:
    return json.loads((folder / STATE).read_text())["step"]


def latest(ckpt_dir: str | Path, tidy: bool = True) -> Path | None:
    """The newest checkpoint that matches its manifest (``checkpoint/``, a finished ``checkpoint.tmp/``
    or ``checkpoint.prev/``), or None when there is none. A damaged one is reported by name and (``tidy``)
    moved to ``<name>.corrupt``; if every candidate is damaged the run stops rather than start over
    silently. Under several processes only the main one tidies; every rank reads the same files and so
    makes the same choice. A finished ``.tmp`` is used where it lies (the next save replaces it), so no
    rank ever loads from a folder another is renaming."""
    ckpt_dir = Path(ckpt_dir)
    found = [p for p in (ckpt_dir, _sibling(ckpt_dir, ".tmp"), _sibling(ckpt_dir, ".prev")) if p.is_dir()]
    good, bad = [], []
    for folder in found:
        why = problem(folder)
        if why is not None and _legacy(folder):
            print(f"checkpoint {folder} has no manifest (an older alignlab wrote it): not verified", file=sys.stderr)
            why = None
        if why is None:
            good.append(folder)
        elif folder.name.endswith(".tmp") and not (folder / MANIFEST).exists():
            if tidy:  # a save killed before it finished: not a checkpoint yet
                shutil.rmtree(folder, ignore_errors=True)
        else:
            bad.append((folder, why))
    for folder, why in bad if tidy else []:
        print(f"checkpoint {folder} is damaged: {why}; moved to {folder.name}.corrupt", file=sys.stderr)
        aside = _sibling(folder, ".corrupt")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
    if not good:
        if bad:
            raise CheckpointError(
                f"{ckpt_dir}: no intact checkpoint to resume from ({'; '.join(f'{f.name}: {w}' for f, w in bad)}); "
                "the damaged folders were kept as *.corrupt; remove them and run without run.resume to start over"
            )
        return None
    best = max(good, key=step_of)
    if bad and tidy:
        print(f"resuming from {best} (step {step_of(best)}), the newest intact checkpoint", file=sys.stderr)
    return best


def _commit(tmp: Path, ckpt_dir: Path) -> None:
    """checkpoint.tmp -> checkpoint, the old checkpoint -> checkpoint.prev (the one before is dropped)."""
    prev = _sibling(ckpt_dir, ".prev")
    if ckpt_dir.exists():
        shutil.rmtree(prev, ignore_errors=True)
        ckpt_dir.rename(prev)
        fault_point("checkpoint")
    tmp.rename(ckpt_dir)
    fault_point("checkpoint")


@contextlib.contextmanager
def writing(ckpt_dir: str | Path, step: int) -> Iterator[Path]:
    """Yield an empty folder to write a checkpoint into; on leaving, hash it and rotate it into place.

    A failed write (a full disk, a read-only folder) removes the partial folder and raises
    :class:`CheckpointError` naming the checkpoint that is still intact."""
    ckpt_dir = Path(ckpt_dir)
    tmp = _sibling(ckpt_dir, ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        fault_point("checkpoint")
        write_manifest(tmp, step)
        fault_point("checkpoint")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {ckpt_dir} (step {step_of(ckpt_dir)}) is intact" if ckpt_dir.exists() else ""
        raise CheckpointError(
            f"saving the checkpoint of step {step} into {ckpt_dir} failed: {e.strerror or e}; "
            + (kept or "no earlier checkpoint exists")
        ) from e
    _commit(tmp, ckpt_dir)


@contextlib.contextmanager
def writing_together(ckpt_dir: str | Path, step: int, is_main: bool, barrier) -> Iterator[Path]:
    """:func:`writing` for a checkpoint every rank writes part of (sharded weights): the main process
    creates the folder and, once every rank has written its part (``barrier``), hashes and rotates it."""
    ckpt_dir = Path(ckpt_dir)
    with writing(ckpt_dir, step) if is_main else contextlib.nullcontext(_sibling(ckpt_dir, ".tmp")) as tmp:
        barrier()  # the folder exists before anyone writes into it
        yield tmp
        barrier()  # every part is written before it is hashed
    barrier()  # and renamed into place before anyone goes on
