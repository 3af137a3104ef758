"""Every test says what it needs, read from the source with `ast` (no import side effects).

- Each test carries one of the marks `unit`, `integration`, `e2e`, `browser` (what each means is in
  pyproject's `[tool.pytest.ini_options] markers`): its module's `pytestmark` (one mark or a list),
  its class's `pytestmark` or decorator, or a decorator on the test function itself.
- No test is both fast (`unit`, `integration`) and slow (`e2e`, `browser`): `make test-fast` selects
  `-m "unit or integration"` and would take it.

Marks are recognised as written here, `pytest.mark.X` or `pytest.mark.X(...)` after `import pytest`;
a mark on one `pytest.param` of a parametrization does not mark the test.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parent
CATEGORIES = ("unit", "integration", "e2e", "browser")
FAST, SLOW = {"unit", "integration"}, {"e2e", "browser"}


def _mark_name(node: ast.expr) -> str | None:
    """`X` for `pytest.mark.X` or `pytest.mark.X(...)`, else None."""
    if isinstance(node, ast.Call):
        node = node.func
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "pytest"):
        return node.attr
    return None


def _pytestmark(body: list[ast.stmt]) -> set[str]:
    """The marks a module or class body assigns to `pytestmark` (one mark, a list or a tuple)."""
    marks: set[str] = set()
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            elements = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
            marks |= {name for e in elements if (name := _mark_name(e))}
    return marks


def _decorated(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    return {name for d in node.decorator_list if (name := _mark_name(d))}


def categories_of(path: Path) -> dict[str, set[str]]:
    """`name` or `Class::name` of every test function pytest collects from the module -> its category marks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _pytestmark(tree.body)
    found: dict[str, set[str]] = {}
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and node.name.startswith("test"):
            found[node.name] = (module | _decorated(node)) & set(CATEGORIES)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            inherited = module | _pytestmark(node.body) | _decorated(node)
            for item in node.body:
                if isinstance(item, functions) and item.name.startswith("test"):
                    found[f"{node.name}::{item.name}"] = (inherited | _decorated(item)) & set(CATEGORIES)
    return found


def modules_under(root: Path = TESTS) -> list[Path]:
    return sorted(root.rglob("test_*.py"))


def unmarked(root: Path = TESTS) -> list[str]:
    return [f"{path.relative_to(root.parent)}::{name}" for path in modules_under(root)
            for name, marks in categories_of(path).items() if not marks]


def fast_and_slow(root: Path = TESTS) -> list[str]:
    return [f"{path.relative_to(root.parent)}::{name} {sorted(marks)}" for path in modules_under(root)
            for name, marks in categories_of(path).items() if marks & FAST and marks & SLOW]


def test_the_checker_flags_unmarked_and_fast_and_slow_tests(tmp_path):
    # The checker must see a missing mark in each place one can be put, or the rules below could pass vacuously.
    tests = tmp_path / "tests"
    (tests / "pkg").mkdir(parents=True)
    (tests / "test_none.py").write_text("import pytest\n\ndef test_a():\n    pass\n\nasync def test_b():\n    pass\n")
    (tests / "test_skip_only.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.skipif(True, reason='x')\n\ndef test_a():\n    pass\n")
    (tests / "pkg" / "test_module_list.py").write_text(
        "import pytest\n\npytestmark = [pytest.mark.integration, pytest.mark.skipif(True, reason='x')]\n\n"
        "def test_a():\n    pass\n\ndef helper():\n    pass\n")
    (tests / "test_per_test.py").write_text(
        "import pytest\n\n@pytest.mark.e2e\ndef test_marked():\n    pass\n\n"
        "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.unit)])\ndef test_param_only(x):\n    pass\n\n"
        "@pytest.mark.timeout(5)\ndef test_other_mark():\n    pass\n")
    (tests / "test_classes.py").write_text(
        "import pytest\n\nclass TestBody:\n    pytestmark = pytest.mark.unit\n    def test_a(self):\n        pass\n\n"
        "@pytest.mark.browser\nclass TestDecorated:\n    def test_a(self):\n        pass\n\n"
        "class TestBare:\n    def test_a(self):\n        pass\n    @pytest.mark.unit\n    def test_b(self):\n        pass\n")
    (tests / "test_mixed.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.unit\n\ndef test_fast():\n    pass\n\n"
        "@pytest.mark.e2e\ndef test_slow_too():\n    pass\n")
    (tests / "helpers.py").write_text("def test_not_collected():\n    pass\n")  # not a test module

    assert unmarked(tests) == [
        "tests/test_classes.py::TestBare::test_a",
        "tests/test_none.py::test_a", "tests/test_none.py::test_b",
        "tests/test_per_test.py::test_param_only", "tests/test_per_test.py::test_other_mark",
        "tests/test_skip_only.py::test_a",
    ]
    assert fast_and_slow(tests) == ["tests/test_mixed.py::test_slow_too ['e2e', 'unit']"]


def test_the_checker_reads_every_test_module_of_the_suite():
    modules = {p.relative_to(TESTS).as_posix() for p in modules_under()}
    assert {"test_markers.py", "e2e/test_daemon_flow.py", "ui/test_lineage_in_browser.py"} <= modules
    assert len(modules) >= 60


def test_every_test_carries_unit_integration_e2e_or_browser():
    assert unmarked() == [], "mark the module (pytestmark) or the test; pyproject's markers say which mark fits"


def test_no_test_is_both_fast_and_slow():
    assert fast_and_slow() == [], "`make test-fast` (-m 'unit or integration') would run these"


def test_the_four_marks_are_registered():
    config = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":")[0].strip() for line in config["markers"]}
    assert set(CATEGORIES) | {"gpu"} <= registered
