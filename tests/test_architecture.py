"""The package layout is the architecture (docs/architecture.md): stages depend only on earlier stages, and
no module imports another that imports it back. Checked on the source, so a new import that breaks the
layering fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "conformance"
# Each stage may import from the shared top level and from the stages before it.
ORDER = ["cases", "judging", "execution", "reporting", "tools"]
SHARED = {"conformance", "conformance.exitcodes", "conformance.files", "conformance.result"}
# The run's pytest plugin drives a whole run, so it may also write the run's reports at its end.
LATER_STAGES_ALLOWED = {"conformance.execution.plugin": {"reporting"}}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The conformance modules a file imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conformance"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("conformance")}
    return found


def _sources() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py") if "impls" not in p.relative_to(PACKAGE).parts}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ORDER else None


def test_no_module_imports_one_that_imports_it_back() -> None:
    sources = _sources()
    graph = {m: {d for d in _imports(p, top_level_only=True) if d in sources and d != m} for m, p in sources.items()}
    cycles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                done.add(dep)
                visit(dep, [*path, dep], done)
    for module in sorted(graph):
        visit(module, [module], {module})
    assert cycles == []


def test_stages_import_only_earlier_stages() -> None:
    wrong = []
    for module, path in _sources().items():
        stage = _stage(module)
        if stage is None:
            continue
        allowed = set(ORDER[:ORDER.index(stage) + 1]) | LATER_STAGES_ALLOWED.get(module, set())
        for dependency in _imports(path, top_level_only=False):
            other = _stage(dependency)
            if other is not None and other not in allowed:
                wrong.append(f"{module} imports {dependency}")
    assert wrong == []


def test_the_stages_are_packages_with_a_docstring() -> None:
    for stage in ORDER:
        init = PACKAGE / stage / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init
