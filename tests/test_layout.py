"""Who may import whom (docs: README "Code layout").

Test modules import the product, ``tests.helpers`` and ``tests.oracles``, never each other
nor a benchmark (except a test whose subject is that benchmark script); benchmarks import
the product and ``tests.oracles`` only.
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Tests of a benchmark script itself, which import the script they test.
BENCHMARK_TESTS = {"tests/test_gpu_report.py": {"benchmarks", "benchmarks.gpu_report"}}


def imported_modules(path: Path) -> set:
    """Every module named by an import statement of ``path`` (``from a.b import c`` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_imported_modules_sees_every_form_of_import(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("import a.b\nfrom c import d\ndef f():\n    from e.f import g\n")
    assert imported_modules(path) == {"a.b", "c", "c.d", "e.f", "e.f.g"}


def test_test_modules_import_neither_each_other_nor_a_benchmark():
    bad = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        found = sorted(m for m in imported_modules(path)
                       if m.split(".")[0] == "benchmarks" or m.split(".")[-1].startswith("test_")
                       or m in ("conftest", "tests.conftest"))
        found = sorted(set(found) - BENCHMARK_TESTS.get(path.relative_to(REPO).as_posix(), set()))
        if found:
            bad[path.relative_to(REPO).as_posix()] = found
    assert not bad, f"share code through tests/helpers.py or tests/oracles/ instead: {bad}"


def test_benchmarks_import_the_product_and_the_oracles_only():
    bad = {}
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        found = sorted(m for m in imported_modules(path)
                       if m.split(".")[0] == "tests" and m != "tests" and not m.startswith("tests.oracles"))
        if found:
            bad[path.name] = found
    assert not bad, f"benchmarks may import tests.oracles, nothing else of tests/: {bad}"
