"""List where alignlab refuses things (every ``raise X(...)``) and how many of those refusals a test triggers.

    python scripts/raise_sites.py            per covered file: refusals, how many tests/test_refusals.py triggers
    python scripts/raise_sites.py --list     ... and every site, marked [x] when a case triggers it
    python scripts/raise_sites.py --all      every file under src/alignlab, with a rougher count: a site counts
                                             as tested when a literal piece of its message (12+ characters)
                                             appears in some test file

The covered files and the matching rule are in tests/refusal_sites.py; the cases in tests/test_refusals.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from refusal_sites import COVERED_FILES, Site, raise_sites  # noqa: E402


def _case_counts(sites: list[Site]) -> dict[Site, bool]:
    """Whether a case in test_refusals.py names each site (by a piece of its message text)."""
    from test_refusals import CASES

    return {s: any(f"src/alignlab/{c.file}" == s.file and c.site in s.text for c in CASES) for s in sites}


def _quoted_in_tests(sites: list[Site]) -> dict[Site, bool]:
    """Whether some literal piece of each site's message (12+ characters) appears in a test file."""
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py")).replace("\\", "")  # regex escapes
    return {s: any(len(p.strip()) >= 12 and p.strip() in tests for p in s.text.split("…")) for s in sites}


def report(files: list[str], tested: dict[Site, bool], listing: bool) -> tuple[int, int]:
    total, done = Counter(s.file for s in tested), Counter(s.file for s, t in tested.items() if t)
    width = max(len(f) for f in files)
    for f in files:
        print(f"{f:<{width}}  {done[f]:>3} / {total[f]:<3}")
        if listing:
            for s in (s for s in tested if s.file == f):
                print(f"    [{'x' if tested[s] else ' '}] {s.line:>4} {s.function}: {s.error}({s.text!r})")
    print(f"{'total':<{width}}  {sum(done.values()):>3} / {sum(total.values()):<3}")
    return sum(done.values()), sum(total.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list every site")
    parser.add_argument("--all", action="store_true", help="every file under src/alignlab (rough count)")
    args = parser.parse_args()
    if args.all:
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/alignlab").rglob("*.py"))
        files = [f for f in files if raise_sites(f)]
        sites = [s for f in files for s in raise_sites(f)]
        print("raise sites whose message text a test quotes (rough: text, not execution):")
        report(files, _quoted_in_tests(sites), args.list)
        return 0
    sites = [s for f in COVERED_FILES for s in raise_sites(f)]
    print("refusals triggered by tests/test_refusals.py:")
    done, total = report([f for f in COVERED_FILES if raise_sites(f)], _case_counts(sites), args.list)
    return 0 if done == total else 1


if __name__ == "__main__":
    sys.exit(main())
