"""The stages the CLI knows, the steps the pipeline runs, and the one way every stage is run.

Each stage module defines a config dataclass, a ``PRESETS`` dict and ``run(cfg) -> dict``, and is
listed once in ``STAGES``. A pipeline step is a stage run in ``RUN/<step>``, declared once in
``STEPS`` with what it reads (config key -> an earlier step's folder), how often it runs (once per
run, per seed, first seed only) and, for a policy, the name the evaluation and the report give it.
The pipeline's wiring, the evaluation's policy list and the report's labels are all read from
here, so adding a stage is its own file plus an entry in each list.

:func:`run_stage` wraps a stage with what every stage owes its user: the resolved ``config.yaml``
written first, ``summary.json`` (with the wall time and the time it finished) written last, and a
folder left as it was when the stage refuses its input (a ``UserError``) before writing anything else.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alignlab.errors import UserError
from alignlab.outputs import atomic_write_text, write_config, write_summary
from alignlab.run_lock import LOCK_NAME, run_lock


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
            "label",
            "alignlab.label.stage",
            "LabelConfig",
            "alignlab.label.config",
            "a local web page where a person ranks K responses per prompt (ties, flags) for the reward model; "
            "--stats FILE: counts and agreement between labelers",
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
            help="PPO against the reward model with a per-token KL penalty; --ptx.coef > 0 for PPO-ptx",
        ),
        Stage(
            "dpo",
            "alignlab.stages.dpo",
            "DPOConfig",
            help="direct preference optimisation on the same comparisons (offline baseline)",
        ),
        Stage(
            "expert-iteration",
            "alignlab.stages.expert_iteration",
            "ExpertIterationConfig",
            help="AlpacaFarm's expert iteration: the SFT policy's best-of-n answers by the reward model, then SFT on them",
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
            "study methods",
            "alignlab.studies.methods",
            "MethodStudyConfig",
            help="which method? PPO, PPO-ptx, DPO, RLOO, GRPO, expert iteration and best-of-n from one SFT and RM, "
            "over seeds, against SFT",
        ),
        Stage(
            "study overoptimization",
            "alignlab.studies.overoptimization",
            "OveroptStudyConfig",
            help="Gao et al.'s over-optimisation laws: gold vs sqrt(KL) for best-of-n and PPO against proxy RMs "
            "trained on 3+ amounts of comparisons (or of 3+ sizes: --preset rm_sizes); the largest RM's peak predicted "
            "from the smaller ones first",
        ),
        Stage(
            "study sizes",
            "alignlab.studies.sizes",
            "SizeStudyConfig",
            help="InstructGPT's Figure 1: the recipe at several model sizes on one world, every policy (base, "
            "few-shot prompted base, SFT, PPO, PPO-ptx) against the largest SFT; does the smallest PPO-ptx beat "
            "the largest base model?",
        ),
        Stage(
            "study demonstrators",
            "alignlab.studies.demonstrators",
            "DemonstratorStudyConfig",
            help="the RLHF gain against demonstration quality: SFT -> RM -> PPO-ptx per demonstrator mixture",
        ),
    ]
}


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: stage ``stage`` (with preset ``preset`` on top of the run's) in RUN/<name>.

    ``inputs`` maps a config key (dotted for a key in a section) to where it points: ``"<step>"`` or ``"<step>/<sub-folder>"`` (a list
    of them for a list key), resolved to that step's folder of the same seed (or the shared one).
    ``policy`` names a policy the evaluation compares and the report shows (its label; ``colour``
    optional); ``scope`` says whether the step runs once per run, per seed, or on the first seed only."""

    name: str
    stage: str
    inputs: dict[str, str | list[str]]
    preset: str | None = None
    scope: Literal["shared", "seed", "first_seed"] = "seed"
    policy: str | None = None
    colour: str | None = None
    diagnostic: bool = False  # run only when asked (--diagnostics true)
    optional: bool = False  # run only when named in the pipeline's `stages` (the methods study's extra methods)


# fmt: off
_PPO_INPUTS = {"policy": "sft", "reward_model": "reward", "data": "world/ppo", "world_dir": "world",
               "ptx.data": "world/corpus"}

STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        Step("world", "world", {}, scope="shared"),
        Step("tokenizer", "tokenizer", {"data": "world/corpus"}, scope="shared"),
        Step("pretrain", "pretrain", {"data": "world/corpus", "source.tokenizer": "tokenizer"}, scope="shared",
             policy="base (pretrained, prompted)", colour="#888888"),
        Step("sft", "sft", {"model": "pretrain", "data": "world/sft", "world_dir": "world"}, policy="SFT",
             colour="#4c72b0"),
        # as InstructGPT ranked outputs of several models: the SFT policy fills 2 of every 3 slots, the base model 1
        Step("compare", "compare", {"policy": "sft", "policies": ["sft", "pretrain"], "data": "world/rm",
                                    "world_dir": "world"}),
        Step("reward", "reward", {"model": "sft", "data": "compare/comparisons", "world_dir": "world"}),
        Step("ppo", "ppo", _PPO_INPUTS, policy="PPO", colour="#dd8452"),
        Step("ppo_ptx", "ppo", _PPO_INPUTS, preset="ptx", policy="PPO-ptx", colour="#55a868"),
        # demonstrations rather than rows of the per-seed table: over-optimisation, and PPO with a perfect RM
        Step("ppo_hack", "ppo", _PPO_INPUTS, preset="hack", scope="first_seed", colour="#8172b3"),
        Step("ppo_gold", "ppo", _PPO_INPUTS, preset="gold", scope="first_seed", diagnostic=True,
             policy="PPO, perfect RM (first seed)", colour="#937860"),
        Step("dpo", "dpo", {"policy": "sft", "data": "compare/comparisons", "world_dir": "world"}, policy="DPO",
             colour="#c44e52"),
        # the methods study's other methods (alignlab study methods), on the same SFT policy, comparisons and RM
        Step("rloo", "ppo", _PPO_INPUTS, preset="rloo", policy="RLOO", colour="#da8bc3", optional=True),
        Step("grpo", "ppo", _PPO_INPUTS, preset="grpo", policy="GRPO", colour="#64b5cd", optional=True),
        Step("expert_iteration", "expert-iteration", {"policy": "sft", "reward_model": "reward", "data": "world/ppo",
             "world_dir": "world"}, policy="expert iteration", colour="#ccb974", optional=True),
        Step("instruct_tune", "instruct-tune", {"model": "pretrain", "world_dir": "world"}),
        # policies: every step above that names one (see policy_steps)
        Step("evaluate", "evaluate", {"data": "world/test", "world_dir": "world"}),
        Step("report", "report", {}, scope="shared"),
    ]
}
# fmt: on


def policy_steps(optional: bool = False) -> list[Step]:
    """The steps whose models the evaluation compares, in the order the report shows them (diagnostics last);
    the optional steps (the methods study's) only when asked for."""
    steps = [s for s in STEPS.values() if s.policy and (optional or not s.optional)]
    return [s for s in steps if not s.diagnostic] + [s for s in steps if s.diagnostic]


def policy_key(step: Step) -> str:
    """The name a policy goes by in evaluate's config and results: the base model is ``base``."""
    return "base" if step.name == "pretrain" else step.name


def run_stage(name: str, cfg: Any) -> dict:
    _, _, run = STAGES[name].load()
    out = Path(cfg.output_dir)
    # Under `accelerate launch` only rank 0 writes files the user reads.
    is_main = int(os.environ.get("RANK", "0")) == 0
    with left_as_found_if_refused(out, enabled=is_main):
        # one writer per folder (run_lock.py); taken before config.yaml, so a refused second run changes nothing
        with run_lock(out) if is_main else contextlib.nullcontext():
            if is_main:
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


@contextlib.contextmanager
def left_as_found_if_refused(out: Path, enabled: bool = True):
    """A stage that refuses its input (``UserError``: a missing model, a bad column) before writing anything
    but config.yaml leaves ``out`` as it found it: the previous run's config.yaml put back (its summary.json
    and model then still describe each other), or the folders this run created removed. A stage that had
    written more keeps everything: config.yaml then describes what it wrote."""
    if not enabled:
        yield
        return
    created = _topmost_missing(out)
    before = _entries(out)
    config = out / "config.yaml"
    old_config = (config.read_text(), config.stat()) if config.is_file() else None
    try:
        yield
    except UserError:
        if _entries(out, skip=config.name) == {k: v for k, v in before.items() if k != config.name}:
            _put_back(config, old_config)
            _remove_if_empty(out, created)
        raise


def _topmost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _entries(folder: Path, skip: str = "") -> dict[str, int]:
    """What is in ``folder`` (name -> modification time), to see whether a stage wrote anything in it (the
    run lock is not the stage's output)."""
    if not folder.is_dir():
        return {}
    return {p.name: p.lstat().st_mtime_ns for p in folder.iterdir() if p.name not in (skip, LOCK_NAME)}


def _put_back(config: Path, old: tuple[str, os.stat_result] | None) -> None:
    if old is None:
        config.unlink(missing_ok=True)
        return
    text, st = old
    atomic_write_text(config, text)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))


def _remove_if_empty(out: Path, created: Path | None) -> None:
    """Remove the folders from ``out`` up to ``created`` (the ones this run made), as far as they are empty."""
    if created is None:
        return
    (out / LOCK_NAME).unlink(missing_ok=True)  # released: this run's own, in a folder it made
    for p in [out, *out.parents]:
        if not p.is_dir() or any(p.iterdir()):
            return
        p.rmdir()
        if p == created:
            return
