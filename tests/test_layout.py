"""The shells' layout: option parsing only in kit/cli.py, the scheduler's decisions free of I/O and clock,
and no import cycle between kit's modules (an import cycle makes import order decide what works)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "kit"
# The simulated gateway keeps its own parser for `python -m kit.gateway` (kit gateway passes options to it).
OWN_PARSER = {"cli", "gateway.__main__"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(KIT).with_suffix("").parts).removesuffix(".__init__")


@functools.cache
def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in KIT.rglob("*.py")}


def imported(tree: ast.Module, *, top_level_only: bool) -> set[str]:
    """The modules a module imports: at its top (what runs at import time), or anywhere. `from kit.gateway
    import messages` imports the submodule kit.gateway.messages, not the package's __init__ again."""
    known = {f"kit.{name}" for name in modules()}
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            names |= submodules or {node.module}
    return names


def test_argparse_lives_only_in_the_command_line_module():
    users = {name for name, tree in modules().items() if "argparse" in imported(tree, top_level_only=False)}
    assert users == OWN_PARSER


def test_the_scheduler_decisions_touch_no_file_clock_or_lock():
    tree = modules()["slots"]
    assert not imported(tree, top_level_only=False) & {"os", "pathlib", "fcntl", "json", "kit.clock",
                                                        "kit.config", "kit.schedule", "time", "threading"}
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not calls & {"datetime.now", "datetime.utcnow", "open", "date.today"}


def test_no_import_cycle_at_import_time():
    graph = {name: {m.removeprefix("kit.") for m in imported(tree, top_level_only=True)
                    if m.startswith("kit.")} for name, tree in modules().items()}

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen and (found := cycle_from(start, nxt, (*seen, nxt))):
                return found
        return None

    cycles = [found for name in graph if (found := cycle_from(name, name, (name,)))]
    assert cycles == []
