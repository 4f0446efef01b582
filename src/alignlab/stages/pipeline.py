"""Stage: the whole recipe, each step in its own folder under one run folder.

    RUN/world -> tokenizer -> pretrain -> sft -> compare -> reward -> ppo, ppo_ptx, ppo_hack, ppo_gold, dpo
        -> instruct_tune (FLAN) -> evaluate -> report

A step whose folder already holds ``summary.json`` finished and is skipped (unless named
in ``redo``); one without it is (re)started with ``resume`` on, so a killed pipeline
continues where it stopped. As with ``make``, a finished step is rerun when a step it reads
from (its wiring below) finished after it, so ``--redo reward`` also reruns PPO and the
evaluation; a finished step whose resolved config differs from the one it ran with is kept,
with a warning that names the changed keys (add it to ``redo`` to rerun it).

Extra ``seeds`` retrain everything from SFT on, FLAN included and the hack and perfect-RM
runs excepted (the world and the base model are shared), under ``RUN/seeds/<seed>/``, and
are evaluated the same way, so the report can give per-seed values. Per-step settings:
``--stage_overrides '{pretrain: {max_steps: 100}}'`` or the same mapping in a YAML file.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

from alignlab.config import ConfigError, apply, arg, dotted_to_nested, resolve, unalias
from alignlab.faults import fault_point
from alignlab.outputs import atomic_write_json, read_summary
from alignlab.stages.registry import STAGES, STEPS, policy_key, policy_steps, run_stage

# The steps, their inputs and how often each runs are declared in the registry (registry.STEPS).
ORDER = list(STEPS)
SHARED = {s.name for s in STEPS.values() if s.scope == "shared"}  # run once, not per seed
FIRST_SEED_ONLY = {s.name for s in STEPS.values() if s.scope == "first_seed"}
# e.g. ppo_gold (PPO against the labelers themselves): a diagnostic a run asks for with `--diagnostics true`
DIAGNOSTICS = [s.name for s in STEPS.values() if s.diagnostic]
# e.g. rloo: run when named in `stages` (alignlab study methods names them)
OPTIONAL = [s.name for s in STEPS.values() if s.optional]


@dataclass
class PipelineConfig:
    preset: str = arg("default", "preset applied to every stage (smoke: about a minute; default: the real demo)")
    output_dir: str = arg("runs/default", "the run folder; each step writes a sub-folder")
    stages: list[str] = arg(
        factory=lambda: [s for s in ORDER if s not in DIAGNOSTICS + OPTIONAL], help="steps to run, in order"
    )
    diagnostics: bool = arg(
        False,
        "also run ppo_gold, PPO with the world's labelers as a perfect reward model (first "
        "seed): does the RM or the policy limit PPO? (~2 min on 2 CPU cores)",
    )
    redo: list[str] = arg(factory=list, help="steps to rerun even if finished ('all' for every step)")
    seeds: list[int] = arg(
        factory=lambda: [0], help="training seeds; the first writes RUN/<step>, others RUN/seeds/<seed>/<step>"
    )
    stage_overrides: dict = arg(factory=dict, help="per-step config overrides, e.g. {pretrain: {max_steps: 100}}")


PRESETS = {
    # The hack run's own preset asks for many iterations; a smoke run only shows the mechanism.
    "smoke": {"preset": "smoke", "stage_overrides": {"ppo_hack": {"iterations": 8}}},
    "default": {"preset": "default"},
}


def _folder(ref: str, run: Path, shared: Path) -> str:
    """``"<step>[/<sub-folder>]"`` -> that step's folder in this seed's run (or the shared one)."""
    step, _, sub = ref.partition("/")
    folder = (shared if step in SHARED else run) / step
    return str(folder / sub) if sub else str(folder)


def wiring(step: str, run: Path, shared: Path) -> dict:
    """How a step's inputs point at earlier steps' outputs (its ``inputs`` in the registry). ``run`` is
    this seed's folder. The evaluation gets every policy step; the report reads the run folder."""
    inputs = {
        key: [_folder(r, run, shared) for r in ref] if isinstance(ref, list) else _folder(ref, run, shared)
        for key, ref in STEPS[step].inputs.items()
    }
    if step == "evaluate":
        inputs["policies"] = {policy_key(s): _folder(s.name, run, shared) for s in policy_steps()}
    if step == "report":
        inputs["run_dir"] = str(shared)  # report.md/.html beside the step folders
    return inputs


def _paths(value) -> list[Path]:
    if isinstance(value, str):
        return [Path(value)]
    if isinstance(value, dict):
        value = list(value.values())
    return [p for v in value for p in _paths(v)] if isinstance(value, list) else []


def upstream_folders(step: str, run: Path, shared: Path) -> list[Path]:
    """The step folders ``step`` reads from (read off its wiring), e.g. sft and reward for ppo."""
    folders = {(shared if s in SHARED else run) / s for s in STEPS if s not in (step, "report")}
    wired = _paths(wiring(step, run, shared))
    return sorted(f for f in folders if any(p == f or f in p.parents for p in wired))


def _finished(folder: Path) -> tuple[float | None, float]:
    """(``finished_at`` from summary.json, the file's modification time)."""
    path = folder / "summary.json"
    return json.loads(path.read_text()).get("finished_at"), path.stat().st_mtime


def newer_upstream(out: Path, upstream: list[Path]) -> list[str]:
    """Upstream steps that finished after the step in ``out`` did (its outputs predate their inputs).

    Judged on the ``finished_at`` both summaries record (it survives ``cp -r``, which resets file
    times in copy order), on file times for steps run before summaries recorded it."""
    mine_at, mine_mtime = _finished(out)
    newer = []
    for u in upstream:
        if not (u / "summary.json").is_file():
            continue
        at, mtime = _finished(u)
        if (at > mine_at) if (at is not None and mine_at is not None) else (mtime > mine_mtime):
            newer.append(u.name)
    return newer


def config_changes(out: Path, sc, wired: set[str] = frozenset()) -> list[str]:
    """Dotted keys whose value in ``sc`` differs from the config.yaml the finished step ran with.

    ``wired`` keys (paths the pipeline itself sets from the run folder), ``output_dir`` and ``resume``
    are left out: they change when a run folder is moved or resumed, not when a setting does."""
    import yaml

    from alignlab.config import to_yaml

    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        return []
    try:
        saved = yaml.safe_load(saved_file.read_text()) or {}
    except yaml.YAMLError as e:  # a hand-edited or damaged file: say so, keep the finished step
        return [f"{saved_file} is not valid YAML ({e.__class__.__name__}), so the settings cannot be compared"]
    now = yaml.safe_load(to_yaml(sc))  # tuples -> lists, as saved
    # a step that ran before its keys moved into sections saved them flat (lr, seed): move them too
    saved = unalias(type(sc), saved, str(saved_file), warn=False) if isinstance(saved, dict) else saved
    skip = {"resume", "run.resume", "output_dir", *wired}

    def diff(a, b, prefix=""):
        # the keys the step saved: a setting added since it ran is not a change
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return [] if a == b else [f"{prefix[:-1]} ({a!r} -> {b!r})"]
        return [d for k in sorted(a) if f"{prefix}{k}" not in skip for d in diff(a[k], b.get(k), f"{prefix}{k}.")]

    return diff(saved, now)


# Keys that say where a step writes: the pipeline sets them (RUN/<step>), so every output stays in the run folder.
OUTPUT_KEYS = {"output_dir": "every step", "run_dir": "report"}


def check_step_outputs(stage_overrides: dict) -> None:
    """Refuse a per-step override of where the step writes (``{sft: {output_dir: /elsewhere}}``)."""
    for step, overrides in stage_overrides.items():
        for key in overrides if isinstance(overrides, dict) else ():
            if OUTPUT_KEYS.get(key) in ("every step", step):
                raise ConfigError(
                    f"stage_overrides.{step}.{key}: the pipeline writes each step in RUN/<step>; "
                    "set the pipeline's output_dir to move the whole run"
                )


def step_config(step: str, cfg: PipelineConfig, seed: int, run: Path):
    stage, extra = STEPS[step].stage, STEPS[step].preset
    cls, presets, _ = STAGES[stage].load()
    shared = Path(cfg.output_dir)
    c = resolve(cls, presets, cfg.preset if cfg.preset in presets else None)
    if extra:
        c = apply(c, {k: v for k, v in presets[extra].items() if k != "output_dir"}, f"preset '{extra}' of {stage}")
    names = {f.name for f in fields(cls)}
    base = {"output_dir": str((shared if step in SHARED else run) / step), **wiring(step, run, shared)}
    if "output_dir" not in names:  # the report derives its folder from run_dir
        base.pop("output_dir")
    c = apply(c, dotted_to_nested(base), f"pipeline wiring for '{step}'")
    c = set_run_settings(c, f"pipeline wiring for '{step}'", seed=seed)
    extra_overrides = cfg.stage_overrides.get(step, {})
    if extra_overrides:
        nested = dotted_to_nested(extra_overrides) if any("." in k for k in extra_overrides) else extra_overrides
        c = apply(c, nested, f"stage_overrides.{step}")
    return stage, c


def set_run_settings(c, where: str, **values):
    """Set run settings (seed, resume) where the stage keeps them: in its ``run`` section, or as flat
    keys of a stage without one; a stage that has neither key does without it."""
    names = {f.name for f in fields(c)}
    if "run" in names:
        return apply(c, {"run": values}, where)
    flat = {k: v for k, v in values.items() if k in names}
    return apply(c, flat, where) if flat else c


def planned_stages(cfg: PipelineConfig) -> list[str]:
    """``stages`` in the given order, plus the diagnostic steps when asked for, each placed before the
    first step that follows it in ORDER."""
    stages = list(cfg.stages)
    for extra in DIAGNOSTICS if cfg.diagnostics else []:
        if extra not in stages:
            later = [i for i, s in enumerate(stages) if ORDER.index(s) > ORDER.index(extra)]
            stages.insert(later[0] if later else len(stages), extra)
    return stages


def run(cfg: PipelineConfig) -> dict:
    unknown = [s for s in cfg.stages + [r for r in cfg.redo if r != "all"] if s not in STEPS]
    if unknown:
        raise ConfigError(f"stages/redo: unknown step(s) {unknown}; known: {', '.join(ORDER)}")
    bad = [s for s in cfg.stage_overrides if s not in STEPS]
    if bad:
        raise ConfigError(f"stage_overrides: unknown step(s) {bad}; known: {', '.join(ORDER)}")
    check_step_outputs(cfg.stage_overrides)
    if not cfg.seeds:
        raise ConfigError("seeds: give at least one seed")
    shared = Path(cfg.output_dir)
    stages = planned_stages(cfg)
    times: dict[str, float] = {}
    # Stage times of earlier invocations survive a resume: a skipped step keeps its time.
    all_times: dict[str, float] = (
        json.loads((shared / "timings.json").read_text()) if (shared / "timings.json").exists() else {}
    )
    results: dict[str, dict] = {}
    t0 = time.time()
    plan = [(step, cfg.seeds[0], shared) for step in stages if step != "report"]
    for seed in cfg.seeds[1:]:
        plan += [(step, seed, shared / "seeds" / str(seed)) for step in stages if step not in SHARED | FIRST_SEED_ONLY]
    if "report" in stages:
        plan.append(("report", cfg.seeds[0], shared))
    for step, seed, run_dir in plan:
        stage, sc = step_config(step, cfg, seed, run_dir)
        out = Path(sc.output_dir)
        label = step if run_dir == shared else f"{step} (seed {seed})"
        if step in cfg.redo or "all" in cfg.redo:
            shutil.rmtree(out, ignore_errors=True)
        done = read_summary(out) if step != "report" else None
        if done is not None and (newer := newer_upstream(out, upstream_folders(step, run_dir, shared))):
            print(f"[pipeline] {label}: {', '.join(newer)} finished after it; rerunning it", flush=True)
            shutil.rmtree(out)
            done = None
        if done is not None:
            changed = config_changes(out, sc, set(wiring(step, run_dir, shared)))
            if changed:
                print(
                    f"[pipeline] {label}: finished with a different config ({'; '.join(changed)}); keeping it -- "
                    f"add '{step}' to --redo to rerun it"
                )
            print(f"[pipeline] {label}: already finished ({out}), skipping")
            results[label] = done
            times[label] = 0.0
            continue
        sc = set_run_settings(sc, "pipeline", resume=True)  # continue a killed step from its checkpoint
        print(f"[pipeline] {label} -> {out}", flush=True)
        t = time.time()
        if step == "report":  # writes into RUN itself, whose config.yaml/summary.json are the pipeline's
            results[label] = STAGES[stage].load()[2](sc)
        else:
            results[label] = run_stage(stage, sc)
        times[label] = round(time.time() - t, 1)
        # re-read before writing: another invocation (e.g. a second seed run beside this one) may have added times
        on_disk = json.loads((shared / "timings.json").read_text()) if (shared / "timings.json").exists() else {}
        all_times = {**all_times, **on_disk, label: times[label]}
        atomic_write_json(shared / "timings.json", all_times)
        print(f"[pipeline] {label} finished in {times[label]:.1f}s", flush=True)
        fault_point("stage")
    total = round(time.time() - t0, 1)
    print("\n[pipeline] step times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()) + f"; total {total}")
    return {"stage_seconds": times, "total_seconds": total, "report": results.get("report"), "stages": results}
