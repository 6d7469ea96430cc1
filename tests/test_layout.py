"""The package layout is the pipeline: every import points down it, there is no cycle, and imports sit at
module top (the few that must not, for a stated reason, are listed here)."""

from __future__ import annotations

import ast
from pathlib import Path

import refineloc_e2e

PKG = Path(refineloc_e2e.__file__).parent
# stages in pipeline order; a module may import its own stage or an earlier one, never a later one
STAGES = ["errors", "stdlib_compat", "stopping", "timebase", "config", "fileio", "ids", "progress", "device",
          "datasets", "video", "backbone", "features", "evaluation", "model", "training", "detection", "report",
          "tools", "cli"]
# (module, imported name) pairs allowed inside a function, each for the reason in its comment there
INNER_IMPORTS_ALLOWED = {
    ("video.flow", "cv2"),  # a wrong OpenCV package gets an actionable message
    ("tools.doctor", "cv2"),  # a broken OpenCV install is what doctor reports
    ("features.cache", "fcntl"),  # POSIX only
    ("training.run_lock", "fcntl"),  # POSIX only
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts) or "__init__", path


def _stage(module: str) -> int | None:
    head = module.split(".")[0]
    return STAGES.index(head) if head in STAGES else None


def _imports(path: Path):
    """(imported refineloc_e2e module, line, at module top?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set()
    for stmt in tree.body:  # module level, including `if TYPE_CHECKING:` and try/except ImportError blocks
        top |= {id(n) for n in ast.walk(stmt)} if isinstance(stmt, (ast.If, ast.Try)) else {id(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("refineloc_e2e"):
            name = node.module[len("refineloc_e2e."):] if node.module != "refineloc_e2e" else ""
            targets = [name] if name else [a.name for a in node.names if (PKG / a.name).exists()
                                             or (PKG / f"{a.name}.py").exists()]
            for t in targets:
                yield t, node.lineno, id(node) in top, node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            yield f"<external>{mod}", node.lineno, id(node) in top, node


def test_imports_point_down_the_pipeline():
    wrong = []
    for module, path in _modules():
        here = _stage(module)
        for target, line, _, _ in _imports(path):
            if target.startswith("<external>") or here is None:
                continue
            there = _stage(target)
            if there is not None and there > here:
                wrong.append(f"{path.relative_to(PKG)}:{line}: {module} imports {target} (a later stage)")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {m: {t for t, *_ in _imports(p) if not t.startswith("<external>")} for m, p in _modules()}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, t]))
            if t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_imports_at_module_top():
    inner = []
    for module, path in _modules():
        for target, line, at_top, node in _imports(path):
            if at_top or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                continue
            name = target.replace("<external>", "")
            if (module, name) not in INNER_IMPORTS_ALLOWED:
                inner.append(f"{path.relative_to(PKG)}:{line}: import of {name} inside a function or block")
    assert not inner, "\n".join(inner)


REPO = Path(__file__).resolve().parents[1]
# who may import whom among the checkout's top-level folders: the package imports none of them (it ships alone);
# benchmarks and the test support never import tests (STYLE: "Benchmarks import the package, never tests");
# the test support imports no benchmark
FORBIDDEN = {"refineloc_e2e": {"testing", "tests", "conftest", "benchmarks"},
             "benchmarks": {"tests", "conftest"},
             "testing": {"tests", "conftest", "benchmarks"}}


def test_the_product_imports_no_test_support():
    wrong = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for target, line, _, _ in _imports(path):
                head = target.removeprefix("<external>").split(".")[0]
                if head in forbidden:
                    wrong.append(f"{path.relative_to(REPO)}:{line}: imports {head}")
    assert not wrong, "\n".join(wrong)
