"""The stages the CLI and the pipeline know, and the one way every stage is run.

Each stage module defines a config dataclass, a ``PRESETS`` dict and ``run(cfg) -> dict``.
:func:`run_stage` wraps it with what every stage owes its user: the resolved
``config.yaml`` written first, ``summary.json`` (with the wall time and the time it
finished) written last.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.outputs import write_config, write_summary


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # where run() lives
    config_class: str
    config_module: str | None = None  # where the dataclass and PRESETS live, if not `module`
    help: str = ""

    def load(self) -> tuple[type, dict, Callable[[Any], dict]]:
        mod = importlib.import_module(self.module)
        cmod = importlib.import_module(self.config_module) if self.config_module else mod
        return getattr(cmod, self.config_class), getattr(cmod, "PRESETS", {}), mod.run


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage(
            "world",
            "alignlab.world.stage",
            "WorldConfig",
            "alignlab.world.config",
            "build the built-in world: corpus, tasks, labelers, splits",
        ),
        Stage(
            "tokenizer",
            "alignlab.stages.tokenizer",
            "TokenizerConfig",
            help="train a byte-level BPE tokenizer with a chat template",
        ),
        Stage(
            "pretrain",
            "alignlab.stages.pretrain",
            "PretrainConfig",
            help="pretrain (or continue) a causal LM on a text corpus",
        ),
        Stage(
            "sft",
            "alignlab.stages.sft",
            "SFTConfig",
            help="supervised fine-tuning on demonstrations (prompt masked; epoch kept by validation reward)",
        ),
        Stage(
            "compare",
            "alignlab.stages.compare",
            "CompareConfig",
            help="sample K responses per prompt from the SFT model and have labelers rank them",
        ),
        Stage(
            "reward",
            "alignlab.stages.reward",
            "RewardConfig",
            help="train a reward model on K-way rankings (all C(K,2) pairs of a prompt in one batch element)",
        ),
        Stage(
            "ppo",
            "alignlab.stages.ppo",
            "PPOConfig",
            help="PPO against the reward model with a per-token KL penalty; --ptx_coef > 0 for PPO-ptx",
        ),
        Stage(
            "dpo",
            "alignlab.stages.dpo",
            "DPOConfig",
            help="direct preference optimisation on the same comparisons (offline baseline)",
        ),
        Stage(
            "instruct-tune",
            "alignlab.stages.instruct_tune",
            "InstructTuneConfig",
            help="FLAN: tune on all clusters but one, zero-shot accuracy on the unseen cluster",
        ),
        Stage(
            "evaluate",
            "alignlab.evaluate.stage",
            "EvaluateConfig",
            help="win rates vs SFT (training + held-out labelers), truthfulness, harm, alignment tax, KL",
        ),
        Stage(
            "report",
            "alignlab.report.build",
            "ReportConfig",
            help="report.md/.html of a run: results table, plots, and a plain verdict",
        ),
        Stage(
            "pipeline",
            "alignlab.stages.pipeline",
            "PipelineConfig",
            help="run the whole recipe on the built-in world, each stage in RUN/<stage>",
        ),
        Stage(
            "study demonstrators",
            "alignlab.studies.demonstrators",
            "DemonstratorStudyConfig",
            help="the RLHF gain against demonstration quality: SFT -> RM -> PPO-ptx per demonstrator mixture",
        ),
    ]
}


def run_stage(name: str, cfg: Any) -> dict:
    _, _, run = STAGES[name].load()
    out = Path(cfg.output_dir)
    # Under `accelerate launch` only rank 0 writes files the user reads.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg)
    t0 = time.time()
    summary = run(cfg) or {}
    # finished_at (Unix time) lets the pipeline order steps even after a copy that resets file times
    summary = {
        "stage": name,
        **summary,
        "wall_seconds": round(time.time() - t0, 2),
        "finished_at": round(time.time(), 3),
    }
    if is_main:
        write_summary(out, summary)
    return summary
