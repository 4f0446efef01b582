"""Where the code refuses something: every ``raise SomeError(...)`` in a file, read from its syntax tree, with the
literal text of its message, so a test can say which refusal it triggers by quoting part of that text.

``scripts/raise_sites.py`` prints the sites and how many of them ``tests/test_refusals.py`` triggers;
``test_refusals.py`` fails when a refusal in the files it covers has no test (or no stated reason for none).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The files whose every refusal has a test (stages: their config checks; see EXEMPT in test_refusals.py).
COVERED_FILES = [
    "src/alignlab/data/load.py",
    "src/alignlab/config.py",
    "src/alignlab/sections.py",
    "src/alignlab/training.py",
    "src/alignlab/models/load.py",
    "src/alignlab/data/ranks.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/alignlab/stages").glob("*.py")),
]


@dataclass(frozen=True)
class Site:
    file: str  # relative to the repository root
    line: int
    function: str  # the enclosing function ("<module>" at the top level)
    error: str  # the exception's name
    text: str  # the message's literal parts, joined by "…" where a value is interpolated

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.function}: {self.error}({self.text!r})"


def _literal_text(node: ast.AST | None) -> str:
    """The constant parts of a message: 'a {x} b' -> 'a … b'; one built by a function -> 'that_function(…)'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp):  # "a" + f"b" (implicit concatenation is already one JoinedStr)
        return _literal_text(node.left) + _literal_text(node.right)
    if isinstance(node, ast.Call):
        return f"{ast.unparse(node.func)}(…)"
    return ""


def raise_sites(file: str) -> list[Site]:
    """Every ``raise X(...)`` in ``file``; a bare ``raise`` (re-raising what was caught) is not a site."""
    tree = ast.parse((ROOT / file).read_text())
    sites: list[Site] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                error = ast.unparse(child.exc.func)
                message = child.exc.args[0] if child.exc.args else None
                sites.append(Site(file, child.lineno, function, error, _literal_text(message)))
            visit(child, function)

    visit(tree, "<module>")
    return sites


def matching(sites: list[Site], file: str, fragment: str) -> list[Site]:
    """The sites of ``file`` whose literal message text contains ``fragment``. Two sites with the same text (one
    message, two ways to reach it) both match: they then need a test each."""
    return [s for s in sites if s.file == file and fragment in s.text]


def all_sites(files: list[str] = COVERED_FILES) -> list[Site]:
    return [s for f in files for s in raise_sites(f)]
