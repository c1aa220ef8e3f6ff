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


#: The commands: files a user runs. main.py is also the training loop, which sweep.py runs in-process
#: (``main.train``); no other module imports a command.
COMMANDS = {"main", "test", "localize", "sweep", "extract_features", "import_annotations", "convert_features"}
COMMAND_IMPORTERS = {"main": {"sweep"}}


def product_modules() -> dict:
    """Module name -> path of every product module (top level, utils/, dataset/, feature_extraction/)."""
    paths = [*REPO.glob("*.py"), *(REPO / "utils").glob("*.py"), *(REPO / "dataset").glob("*.py"),
             *(REPO / "feature_extraction").glob("*.py")]
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in paths}


def import_graph() -> dict:
    """Module -> the product modules it imports (``from a import b`` of a module b counts as a.b)."""
    modules = product_modules()
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def top_level_imports(path: Path) -> set:
    """The top-level packages a module imports when it is imported (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_a_command():
    modules = product_modules()
    assert COMMANDS <= set(modules)
    bad = sorted(f"{name} imports {m}" for name, deps in import_graph().items() for m in deps
                 if m in COMMANDS and name not in COMMAND_IMPORTERS.get(m, set()))
    assert not bad, f"a command's file is not a library; move what is shared into a module: {bad}"


def cycles(graph: dict) -> list:
    """Every import cycle of ``graph`` (module -> imported modules), each as a list of modules."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycles_finds_a_cycle_and_only_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_imports_have_no_cycle():
    assert not cycles(import_graph()), "modules importing each other (also inside functions)"


def test_the_evaluation_protocol_imports_neither_torch_nor_the_model():
    """protocol.py is pure numpy: every module it reaches imports no torch, no model, no training."""
    graph, modules = import_graph(), product_modules()
    reached, todo = set(), ["protocol"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += graph[name]
    with_torch = sorted(name for name in reached if "torch" in top_level_imports(modules[name]))
    assert not with_torch, "imported at module level (utils.atomic.save_torch imports torch when called)"
    assert not reached & {"model", "train", "main", "inference", "checkpoints"}
