"""Kill a stage at chosen points, resume it, and compare the end with a run that was never stopped.

Each run happens in a forked child (the parent has already imported torch and transformers, so a
run starts in milliseconds): ``faults.arm(point, n)`` makes the child SIGKILL itself the n-th time
it reaches ``point`` ("step": after an optimiser step; "checkpoint": between the files and renames
of a checkpoint write). Kill points are drawn from the points an uninterrupted run reached, so they
fall anywhere: early, late, inside a checkpoint write. A trial kills a fresh run at its point,
resumes it (every other trial kills that resumed run too, after its first step, and resumes again)
and lets it finish; the folder must then hold the same weights, bit for bit, and the same summary
numbers as the uninterrupted run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

# summary keys that measure time or how the run went, not what it produced
VOLATILE = ("seconds", "wall", "finished_at", "per_sec", "resumed", "time", "t_rollout", "t_score", "t_update")


def run_forked(fn: Callable[[], object], kill: tuple[str, int] | None = None, timeline: Path | None = None) -> int:
    """Run ``fn`` in a forked child with one torch thread (the same in every run, so sums add up in
    the same order); the child's exit code (-9 when the armed kill fired). ``timeline``: write the
    points the run reached, in order."""

    def child():
        from alignlab import faults

        torch.set_num_threads(1)
        os.environ["TQDM_DISABLE"] = "1"
        if kill:
            faults.arm(*kill)
        else:
            faults.disarm()
        fn()
        if timeline:
            timeline.write_text(json.dumps(faults.timeline))

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join()
    return p.exitcode


def kill_and_resume(run: Callable[[Path, bool], object], out: Path, kills: list[tuple[str, int]]) -> int:
    """Start ``run(out, resume=False)`` armed with ``kills[0]``, resume it armed with ``kills[1]``, ...,
    then resume it unarmed to the end. Returns how many of the kills fired (a run can end before its
    point: a resumed run redoes less than a fresh one)."""
    fired, resume = 0, False
    for point in kills:
        code = run_forked(lambda r=resume: run(out, r), kill=point)
        assert code in (0, -9), f"run exited with {code} (armed {point})"
        if code == 0:
            return fired
        fired, resume = fired + 1, True
    assert run_forked(lambda: run(out, True)) == 0, "the final resume failed"
    return fired


def draw_points(rng: random.Random, timeline: list[str], n: int) -> list[tuple[str, int]]:
    """``n`` distinct points of an uninterrupted run's ``timeline`` as (point, its count so far), at
    least one inside a checkpoint write when the run writes any."""
    picks = rng.sample(range(len(timeline)), min(n, len(timeline)))
    in_checkpoint = [i for i, p in enumerate(timeline) if p == "checkpoint"]
    if in_checkpoint and not any(timeline[i] == "checkpoint" for i in picks):
        picks[0] = rng.choice(in_checkpoint)
    return [(timeline[i], timeline[: i + 1].count(timeline[i])) for i in picks]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run folder's final models (not its checkpoints or kept epochs)."""
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        rel = f.relative_to(folder)
        if any(part.startswith(("checkpoint", "best-epoch")) for part in rel.parts):
            continue
        out.update({f"{rel}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def weight_differences(a: Path, b: Path) -> list[str]:
    """Names of tensors that differ (bit for bit) between two finished run folders."""
    wa, wb = weights(a), weights(b)
    assert wa, f"no weights in {a}"
    if wa.keys() != wb.keys():
        return sorted(wa.keys() ^ wb.keys())
    return [k for k in wa if not torch.equal(wa[k], wb[k])]


def numbers(obj, path: str = "") -> dict[str, object]:
    """The leaves of a summary, minus the volatile ones, keyed by their path."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not any(word in str(k) for word in VOLATILE):
                out.update(numbers(v, f"{path}.{k}"))
        return out
    if isinstance(obj, list):
        return {k: v for i, x in enumerate(obj) for k, v in numbers(x, f"{path}[{i}]").items()}
    return {path: obj}


def summary_differences(a: Path, b: Path) -> list[str]:
    """Summary leaves that differ between two run folders (their own paths written as RUN)."""
    na = numbers(json.loads((a / "summary.json").read_text().replace(str(a), "RUN")))
    nb = numbers(json.loads((b / "summary.json").read_text().replace(str(b), "RUN")))
    return [f"{k}: {na.get(k)!r} != {nb.get(k)!r}" for k in sorted(na.keys() | nb.keys()) if na.get(k) != nb.get(k)]
