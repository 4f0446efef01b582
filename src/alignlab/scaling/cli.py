"""``alignlab scaling <sweep|fit|predict|demo>``: each sub-command's config, presets and run function, resolved and
run the way ``stages.registry.run_stage`` runs a stage. The commands themselves live in ``scaling/stage.py``
(sweep, fit, predict) and ``scaling/demo.py``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import help_lines, parse_overrides, resolve
from alignlab.errors import UserError
from alignlab.outputs import write_config, write_summary
from alignlab.scaling.demo import PRESETS as DEMO_PRESETS
from alignlab.scaling.demo import DemoConfig, run_demo
from alignlab.scaling.stage import (
    FIT_PRESETS,
    PREDICT_PRESETS,
    SWEEP_PRESETS,
    FitConfig,
    PredictConfig,
    SweepConfig,
    run_fit,
    run_predict,
    run_sweep,
)

# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Sub:
    config: type
    presets: dict[str, dict[str, Any]]
    run: Callable[[Any], dict]
    help: str


SUBCOMMANDS: dict[str, Sub] = {
    "sweep": Sub(
        SweepConfig,
        SWEEP_PRESETS,
        run_sweep,
        "train a grid of small pretraining runs under one recipe; runs.csv + sweep.json",
    ),
    "fit": Sub(
        FitConfig,
        FIT_PRESETS,
        run_fit,
        "fit L(C), L(N,D) and the capability law with bootstrap intervals; fit.json + plots",
    ),
    "predict": Sub(
        PredictConfig,
        PREDICT_PRESETS,
        run_predict,
        "record a prediction, then train the target run and compare; prediction.json + plots",
    ),
    "demo": Sub(
        DemoConfig,
        DEMO_PRESETS,
        run_demo,
        "GPT-4's predictions end to end: a sweep along one allocation, held-out calibration, a registered "
        "prediction of a 100x run's loss and capabilities, the run, report.md",
    ),
}


def run_sub(name: str, cfg: Any) -> dict:
    """Like ``registry.run_stage``: config.yaml first, summary.json (with wall time) last."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    t0 = time.time()
    summary = SUBCOMMANDS[name].run(cfg) or {}
    summary = {"stage": f"scaling {name}", **summary, "wall_seconds": round(time.time() - t0, 2)}
    write_summary(out, summary)
    return summary


def usage() -> str:
    lines = ["alignlab scaling <sweep|fit|predict|demo> [--preset NAME] [--config FILE.yaml] [--key value ...]", ""]
    lines += [f"  {n:<8} {s.help}" for n, s in SUBCOMMANDS.items()]
    lines += ["", "alignlab scaling <command> --help   lists every key with its default"]
    return "\n".join(lines)


def _refuse(name: str, err: UserError) -> int:
    """The user's input was refused: one line on stderr and status 2, as ``alignlab <stage>`` does."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"alignlab scaling {name}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str]) -> int:
    """``alignlab scaling <sub> ...`` (cli.py hands the arguments after ``scaling`` here)."""

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"alignlab scaling: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sub = SUBCOMMANDS[name]
    try:
        overrides, preset, config, wants_help = parse_overrides(rest)
        if wants_help:
            print(f"alignlab scaling {name}: {sub.help}\n\npresets: {', '.join(sub.presets)}\n\nkeys:")
            print("\n".join(help_lines(sub.config)))
            return 0
        cfg = resolve(sub.config, sub.presets, preset, config, overrides)
    except UserError as e:
        return _refuse(name, e)
    try:
        run_sub(name, cfg)
    except UserError as e:
        return _refuse(name, e)
    except (ValueError, FileNotFoundError) as e:
        print(f"alignlab scaling {name}: error: {e}", file=sys.stderr)
        return 1
    return 0
