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


TESTS = Path(__file__).parent
# tests/ mirrors the package (docs/architecture.md, "Tests"): one folder per package stage, and besides them core/
# (the base modules at the package's top), e2e/ (whole commands) and data/ (files the tests read)
TEST_FOLDERS = {"core", "e2e", "data"}


def test_tests_mirror_the_package():
    stages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    unknown = folders - stages - TEST_FOLDERS
    assert not unknown, f"test folders that are no package stage: {sorted(unknown)}"
    flat = sorted(p.name for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    assert not flat, f"test files outside the stage folders (docs/architecture.md, 'Tests'): {flat}"


def test_tests_import_helpers_from_support():
    """conftest.py is pytest's (a second import of it is a second copy); test files import no other test file."""
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for target, line, _, _ in _imports(path):
            head = target.removeprefix("<external>").split(".")[0]
            if head == "conftest" or head.startswith("test_"):
                wrong.append(f"{path.relative_to(TESTS)}:{line}: imports {head} (its helpers belong in support.py)")
    assert not wrong, "\n".join(wrong)


def test_test_files_find_files_through_support():
    """A path from a test file's own ``__file__`` breaks when the file moves; support.py has them (DATA, REPO...)."""
    wrong = []
    for path in sorted(TESTS.glob("*/**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        wrong += [f"{path.relative_to(TESTS)}:{node.lineno}: __file__" for node in ast.walk(tree)
                  if isinstance(node, ast.Name) and node.id == "__file__"]
    assert not wrong, "\n".join(wrong)


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
