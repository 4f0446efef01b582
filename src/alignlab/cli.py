"""alignlab <stage> [--preset NAME] [--config FILE.yaml] [--output-dir DIR] [--some.key VALUE ...]

Layers, each on top of the last: the stage's defaults, the preset, the YAML file,
then ``--dotted.key value`` overrides. ``alignlab <stage> --help`` lists every key.

Exit status: 0 done; 2 the input was refused (an unknown stage or key, a bad value, a missing or unsafe
model, data without the columns it needs: any ``alignlab.errors.UserError``), printed as one line
``alignlab <stage>: error: <message>``; anything else is a bug and ends in a traceback (status 1).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from alignlab.config import help_lines, parse_overrides, resolve
from alignlab.errors import RunStopped, UserError
from alignlab.stages.registry import STAGES, run_stage


def usage() -> str:
    width = max(len(n) for n in STAGES)
    lines = [__doc__.strip().splitlines()[0], "", "stages:"]
    lines += [f"  {name:<{width}}  {s.help}" for name, s in STAGES.items()]
    lines += [f"  {'scaling':<{width}}  sweep | fit | predict | demo: predictable scaling (alignlab scaling --help)"]
    lines += [
        f"  {'chat':<{width}}  MODEL [MODEL ...]: ask models a prompt, answers side by side (alignlab chat --help)"
    ]
    lines += ["", "alignlab <stage> --help   lists every key of that stage with its default"]
    return "\n".join(lines)


def refuse(name: str, err: UserError) -> int:
    """The user's input was wrong: one line on stderr (a message from a library may span several) and status 2."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"alignlab {name}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "study" and rest and not rest[0].startswith("-"):  # alignlab study <name>: one stage per study
        name, rest = f"study {rest[0]}", rest[1:]
    if name == "chat":  # alignlab chat MODEL [MODEL ...]: interactive, writes no run folder
        from alignlab.chat import main as chat_main

        return chat_main(rest)
    if name == "scaling":  # alignlab scaling sweep|fit|predict: sub-commands live in alignlab.scaling.stage
        from alignlab.scaling.cli import main as scaling_main

        return scaling_main(rest)
    if name not in STAGES:
        print(f"alignlab: unknown stage {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    cls, presets, _ = STAGES[name].load()
    try:
        overrides, preset, config, wants_help = parse_overrides(rest)
        if wants_help:
            print(f"alignlab {name}: {STAGES[name].help}\n\npresets: {', '.join(presets) or '-'}\n\nkeys:")
            print("\n".join(help_lines(cls)))
            return 0
        with warnings.catch_warnings(record=True) as moved:  # old flat keys: one plain line each
            warnings.simplefilter("always", FutureWarning)
            cfg = resolve(cls, presets, preset, config, overrides)
        for w in moved:
            print(f"alignlab {name}: deprecated: {w.message}", file=sys.stderr)
    except UserError as e:
        return refuse(name, e)
    try:
        run_stage(name, cfg)
    except UserError as e:
        return refuse(name, e)
    except RunStopped as e:  # a full disk, a NaN, a folder in use: said in one line, status 1
        print(f"alignlab {name}: stopped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
