"""Study: the RLHF gain against demonstration quality (``alignlab study demonstrators``).

Why does RLHF beat SFT? Because demonstrations leave something that labelers reward and
the SFT policy already writes sometimes. This study turns that one dial: for each setting
the world is rebuilt with a different mixture of demonstrators (``world.config
DEMONSTRATOR_MIXTURES``: ``careful`` writes perfect answers, ``default``, ``poor``) and
nothing else changes -- the facts, corpus, prompts, comparisons' prompts and test set come
from their own random streams, and the base model is the run's own. Each setting then runs
SFT -> comparisons -> reward model -> PPO-ptx and is evaluated against ITS OWN SFT policy.

Each setting is a pipeline run in ``OUT/<setting>/`` whose tokenizer and base model are links
to the run's, so it resumes after a kill like the pipeline. A setting whose mixture is the
one the run's world was built with reuses the run's own steps (the first seed). Writes
``OUT/summary.json`` (one point per setting) and ``OUT/demonstration_quality.png``; the run
report picks them up from ``RUN/study_demonstrators``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import ConfigError, arg
from alignlab.errors import MissingInputError
from alignlab.outputs import atomic_write_json, read_summary
from alignlab.studies.links import link_finished_step

STEPS = ["world", "sft", "compare", "reward", "ppo_ptx", "evaluate"]


@dataclass
class DemonstratorStudyConfig:
    run_dir: str = arg("runs/default", "a pipeline run: its world settings, tokenizer and base model are reused")
    settings: list[str] = arg(
        factory=lambda: ["careful", "default", "poor"],
        help="demonstrator mixtures to compare (names in world.config.DEMONSTRATOR_MIXTURES)",
    )
    seed: int = arg(0, "training seed of every setting")
    study_dir: str = arg("", "where the settings' runs and summary.json go; empty = RUN/study_demonstrators")
    redo: list[str] = arg(factory=list, help="settings to rerun from scratch")

    @property
    def output_dir(self) -> str:
        return self.study_dir or str(Path(self.run_dir) / "study_demonstrators")

    def __post_init__(self) -> None:
        from alignlab.world.config import DEMONSTRATOR_MIXTURES

        unknown = [s for s in self.settings if s not in DEMONSTRATOR_MIXTURES]
        if unknown:
            raise ConfigError(
                f"study demonstrators: 'settings' has unknown mixture(s) {unknown}; "
                f"known: {', '.join(DEMONSTRATOR_MIXTURES)}"
            )
        if len(self.settings) < 2:
            raise ConfigError("study demonstrators: 'settings' needs at least two mixtures to compare")


PRESETS = {"smoke": {"settings": ["careful", "default"]}, "default": {}}


def _run_world_config(run: Path) -> dict[str, Any]:
    import yaml

    path = run / "world" / "config.yaml"
    if not path.is_file():
        raise MissingInputError(f"{run} has no world/config.yaml: run `alignlab pipeline --output-dir {run}` first")
    cfg = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in cfg.items() if k != "output_dir"}


def _run_setting(run: Path, key: str, default: Any = None) -> Any:
    """A setting of the run's pipeline (its config.yaml)."""
    import yaml

    path = run / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get(key, default) if path.is_file() else default


def _reusable(run: Path, mixture: dict, world_cfg: dict, seed: int) -> bool:
    """The run's own first seed already is this setting: same mixture, same seed, every step finished."""
    if world_cfg.get("demonstrators") != mixture or not all(read_summary(run / s) is not None for s in STEPS[1:]):
        return False
    return _run_setting(run, "seeds", [0])[0] == seed


def _setting_run(
    cfg: DemonstratorStudyConfig, run: Path, preset: str, setting: str, mixture: dict, world_cfg: dict
) -> Path:
    """Run (or resume) one setting's pipeline; the folder that holds its steps."""
    from alignlab.stages.pipeline import PipelineConfig
    from alignlab.stages.pipeline import run as run_pipeline

    if setting not in cfg.redo and _reusable(run, mixture, world_cfg, cfg.seed):
        print(f"[study] {setting}: the run's own world uses this mixture; reusing {run}")
        return run
    out = Path(cfg.output_dir) / setting
    if setting in cfg.redo and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for shared in ("tokenizer", "pretrain"):
        link_finished_step(run / shared, out / shared)
    overrides = {
        "world": {**world_cfg, "demonstrators": mixture},
        "evaluate": {
            "policies": {"sft": str(out / "sft"), "ppo_ptx": str(out / "ppo_ptx")},
            "alignment_tax": False,
            "headroom_n": [],
        },
    }
    print(f"[study] {setting}: demonstrators {mixture} -> {out}", flush=True)
    run_pipeline(
        PipelineConfig(preset=preset, output_dir=str(out), stages=STEPS, seeds=[cfg.seed], stage_overrides=overrides)
    )
    return out


def _point(setting: str, mixture: dict, folder: Path) -> dict[str, Any]:
    import json

    world = json.loads((folder / "world" / "stats.json").read_text())
    ev = json.loads((folder / "evaluate" / "results.json").read_text())["policies"]
    return {
        "setting": setting,
        "mixture": mixture,
        "folder": str(folder),
        "demo_gold": world["demonstrations"]["all"]["mean_gold"],
        "careful_win_rate_heldout": world["demonstrations"]["all"]["careful_win_rate_heldout"],
        "win": ev["ppo_ptx"]["win_rate_heldout_labelers"],
        "win_train": ev["ppo_ptx"]["win_rate_train_labelers"],
        "sft_gold": ev["sft"]["gold_reward"],
        "ptx_gold": ev["ppo_ptx"]["gold_reward"],
    }


def run(cfg: DemonstratorStudyConfig) -> dict:
    from alignlab.report import plots
    from alignlab.world.config import DEMONSTRATOR_MIXTURES

    t0 = time.time()
    run_dir, out = Path(cfg.run_dir), Path(cfg.output_dir)
    world_cfg = _run_world_config(run_dir)
    preset = _run_setting(run_dir, "preset", "default")
    points, seconds = [], {}
    for setting in cfg.settings:
        t = time.time()
        mixture = DEMONSTRATOR_MIXTURES[setting]
        folder = _setting_run(cfg, run_dir, preset, setting, mixture, world_cfg)
        seconds[setting] = round(time.time() - t, 1)
        points.append(_point(setting, mixture, folder))
        p = points[-1]
        print(
            f"[study] {setting}: demonstrations gold {p['demo_gold']:.3f}; SFT gold {p['sft_gold']['value']:.3f}, "
            f"PPO-ptx {p['ptx_gold']['value']:.3f}; PPO-ptx wins {100 * p['win']['value']:.1f}% vs its SFT "
            f"(held-out labelers) [{seconds[setting]}s]",
            flush=True,
        )
    out.mkdir(parents=True, exist_ok=True)
    plots.demonstration_quality(points, out / "demonstration_quality.png")
    summary = {
        "run_dir": str(run_dir),
        "points": points,
        "setting_seconds": seconds,
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
