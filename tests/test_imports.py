"""The package's modules import each other without cycles (imports for type checking only aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import emvos

SOURCE = Path(emvos.__file__).resolve().parent


def _imports() -> dict[str, set[str]]:
    """Each module's emvos imports, at any depth of the file, and the dispatcher's subcommand modules."""
    modules = {".".join(("emvos", *p.relative_to(SOURCE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for b in node.body for n in ast.walk(b)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
        if name == "emvos.commands":  # modules the dispatcher imports by name
            graph["emvos.cli"] |= {m for m in re.findall(r'"(emvos\.[\w.]+)"', path.read_text()) if m in modules}
    return graph


def test_no_import_cycles() -> None:
    graph = _imports()
    assert "emvos.inference.cli" in graph["emvos.cli"]  # the dispatcher's table is read
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(module):], module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_core_does_not_import_the_benchmarking_package() -> None:
    graph = _imports()
    core = [m for m in graph if m.split(".")[1:2] in (["model"], ["inference"], ["io"], ["data"], ["train"])]
    assert "emvos.inference.predictor" in core and "emvos.benchmarking.cli" in graph
    for module in core:
        reached, todo = set(), [module]
        while todo:
            for target in graph[todo.pop()] - reached:
                reached.add(target)
                todo.append(target)
        benchmarking = sorted(m for m in reached if m.startswith("emvos.benchmarking"))
        assert not benchmarking, f"{module} imports {benchmarking[0]}"


def test_the_reference_network_imports_no_inference_code() -> None:
    """The model package is the reference network; the speed work that prepares a copy of it for
    inference (``emvos.inference.optimize``) sits beside it."""
    graph = _imports()
    model = {name for name in graph if name == "emvos.model" or name.startswith("emvos.model.")}
    assert "emvos.model.decoder" in model
    speed_work = {(name, target) for name in model for target in graph[name] if target.startswith("emvos.inference")}
    assert not speed_work, speed_work
