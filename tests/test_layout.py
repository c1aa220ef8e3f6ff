"""Who may import whom (README, "Code layout"), and requirements.txt against the imports.

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


def requirement_names(path: Path) -> set:
    """Package names of a requirements file (``-r`` lines and comments skipped)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(line.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip())
    return names


def test_requirements_txt_lists_exactly_what_the_product_imports():
    import sys

    project = {p.stem for p in REPO.glob("*.py")} | {"utils", "dataset", "tests", "benchmarks", "feature_extraction"}
    optional = {"sweep.py": REPO / "requirements-sweep.txt"}  # extras with their own file
    product = [*REPO.glob("*.py"), *(REPO / "utils").glob("*.py"), *(REPO / "dataset").glob("*.py"),
               *(REPO / "feature_extraction").glob("*.py")]
    package_of = {"torch.utils.tensorboard": "tensorboard", "yaml": "pyyaml", "cv2": "opencv-contrib-python-headless"}
    needed, extras = set(), {}
    for path in product:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in project or top in sys.stdlib_module_names:
                continue
            name = package_of.get(module, package_of.get(top, top))
            if path.name in optional:
                extras.setdefault(path.name, set()).add(name)
            else:
                needed.add(name)
    assert requirement_names(REPO / "requirements.txt") == needed
    for name, packages in extras.items():
        assert packages - needed <= requirement_names(optional[name]), name


def test_only_main_py_imports_the_training_step():
    """Evaluation (test.py, inference.py, localize.py ...) never needs train.py."""
    product = [*REPO.glob("*.py"), *(REPO / "utils").glob("*.py"), *(REPO / "dataset").glob("*.py")]
    importers = sorted(p.name for p in product if p.name != "main.py" and "train" in imported_modules(p))
    assert importers == [], f"{importers} import train.py: builders live beside what they build"
