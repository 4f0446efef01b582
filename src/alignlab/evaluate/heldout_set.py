"""The fixed held-out prompts a training stage samples before and after training, and their gold judge.

PPO and DPO both measure the policy on the first ``n`` rows of a held-out split (by default the
built-in world's ``test`` split), sampled with one fixed seed before and after, so the two
measurements differ only by the policy (``heldout_samples.sample_and_score`` does the sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.data.load import load_dataset_any
from alignlab.errors import ConfigError

# The held-out sampling seed is the run's seed plus this: a stream of its own, apart from the
# training draws, and the same before and after training.
HELDOUT_SEED_OFFSET = 12345


@dataclass
class HeldoutSet:
    judge: Any  # WorldJudge for gold rewards, or None (no world)
    rows: list[dict[str, Any]] | None  # the fixed prompts, or None (no held-out data)
    source: str  # where the rows come from ('' = none)

    def judge_for_rows(self):
        """The gold judge, where the rows are the world's own (they carry ``meta``); else None."""
        return self.judge if self.rows and "meta" in self.rows[0] else None


def heldout_seed(seed: int) -> int:
    return seed + HELDOUT_SEED_OFFSET


def world_judge(world_dir: str):
    """The built-in world's gold judge; None when ``world_dir`` is empty. A folder without a
    world.json is refused rather than silently scoring nothing."""
    if not world_dir:
        return None
    from alignlab.evaluate.judges import WorldJudge

    if not (Path(world_dir) / "world.json").exists():
        raise ConfigError(
            f"world_dir={world_dir!r} has no world.json; give the world folder or --world_dir '' to turn gold rewards off"
        )
    return WorldJudge(world_dir)


def heldout_source(eval_data: str, world_dir: str) -> str:
    """``eval_data`` if given, else the world's test prompts, else '' (no held-out samples)."""
    return eval_data or (str(Path(world_dir) / "test") if world_dir else "")


def load_heldout(world_dir: str, eval_data: str, split: str, n: int) -> HeldoutSet:
    """The gold judge and the first ``n`` rows of the held-out prompts (a fixed set)."""
    judge = world_judge(world_dir)
    source = heldout_source(eval_data, world_dir)
    rows = None
    if source:
        ds = load_dataset_any(source, split)
        rows = [ds[i] for i in range(len(ds))][:n]
    return HeldoutSet(judge, rows, source)


def sampling_note(temperature: float, seed: int) -> str:
    """How the held-out responses were sampled, for a summary."""
    return "greedy" if temperature == 0 else f"temperature {temperature}, fixed seed {heldout_seed(seed)}"
