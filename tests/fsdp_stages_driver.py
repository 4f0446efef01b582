"""Several `python -m alignlab.cli` commands, one after another, in ONE launch, for tests/test_fsdp.py:
starting the interpreters of a 2-process launch costs more than a tiny stage's run, so the stages
whose FSDP2 runs the tests compare share one. Commands are separated by ':::'.
Run it as: accelerate launch ... tests/fsdp_stages_driver.py sft --key value ::: reward --key value
"""

from __future__ import annotations

import sys

from alignlab.cli import main


def commands(argv: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for arg in argv:
        if arg == ":::":
            out.append([])
        else:
            out[-1].append(arg)
    return [c for c in out if c]


if __name__ == "__main__":
    for command in commands(sys.argv[1:]):
        code = main(command)
        if code:
            sys.exit(code)
