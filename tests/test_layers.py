"""The package's layers, read from its imports: lower layers never reach up, and no two modules import each other.

world, data, models, rl, rollout, training   (the recipe's pieces)
evaluate (measuring), stages (the recipe's steps), report, scaling, studies, label, cli
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "alignlab"
LOW = {
    "errors",
    "world",
    "data",
    "rl",
    "models",
    "rollout",
    "training",
    "seeds",
    "sections",
    "checkpoints",
    "faults",
    "run_lock",
}
HIGH = {"stages", "evaluate", "report", "scaling", "cli", "studies", "chat", "label"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """alignlab modules ``path`` imports, at the top or inside a function. ``from pkg import sub``
    counts as importing ``pkg.sub`` (not the package's __init__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alignlab":
            subs = [f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")]
            found |= set(subs) if len(subs) == len(node.names) else {node.module, *subs}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "alignlab"}
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_was_read():
    assert len(GRAPH) > 60
    assert "alignlab.rollout.layout" in GRAPH["alignlab.rollout.generate"]


def test_lower_layers_never_import_higher_ones():
    climbing = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if layer(m) in LOW for d in deps if layer(d) in HIGH)
    assert not climbing, "lower layers import higher ones:\n" + "\n".join(climbing)


def test_no_two_modules_import_each_other():
    pairs = sorted(f"{a} <-> {b}" for a, deps in GRAPH.items() for b in deps if a < b and a in GRAPH.get(b, ()))
    assert not pairs, "modules that import each other:\n" + "\n".join(pairs)


def test_stages_do_not_borrow_from_each_other():
    """Helpers two stages share live in a lower layer, not in one of the stages."""
    borrowed = sorted(
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if m.startswith("alignlab.stages.") and m not in ("alignlab.stages.pipeline", "alignlab.stages.registry")
        for d in deps
        if d.startswith("alignlab.stages.") and d != "alignlab.stages.registry" and not d.startswith(m)
    )
    assert not borrowed, "stages importing other stages:\n" + "\n".join(borrowed)
