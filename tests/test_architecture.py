"""The house rules that keep the layout the architecture (issue 10).

* Imports point down: no core module (``shared/`` outside ``shared/image``) imports a
  front end (``shared.image``, ``geoprior``, ``eit``).
* No function of the library (``shared``, ``geoprior``, ``eit``) is longer than 80 lines of code
  (its docstring not counted).
* Examples, benchmarks and tests use the installed packages: no ``sys.path`` edits.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRONT_ENDS = ("shared.image", "geoprior", "eit")
MAX_LINES = 80


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _core_modules() -> list[Path]:
    return [p for p in _modules("shared") if "image" not in p.relative_to(ROOT / "shared").parts]


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_imports_a_front_end(path):
    bad = [n for n in _imports(path) if any(n == f or n.startswith(f + ".") for f in FRONT_ENDS)]
    assert not bad, f"{path.relative_to(ROOT)} imports the front end(s) {sorted(set(bad))}"


def test_the_import_check_sees_front_end_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import eit.mesh\nfrom shared.image import tasks\nfrom shared import fit\n")
    found = [n for n in _imports(probe) if any(n == f or n.startswith(f + ".") for f in FRONT_ENDS)]
    assert "eit.mesh" in found and "shared.image" in found and "shared" not in found


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function from its ``def`` to its end, its docstring left out (docstrings
    state the math and may be long; the rule is about code)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = body[0].end_lineno - body[0].lineno + 1
    else:
        doc = 0
    return node.end_lineno - node.lineno + 1 - doc


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_code_lines(node)} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > MAX_LINES]


def test_no_library_function_is_longer_than_80_lines():
    long = [f for pkg in ("shared", "geoprior", "eit") for p in _modules(pkg) for f in _long_functions(p)]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_scripts_use_the_installed_packages():
    edits = [f"{p.relative_to(ROOT)}" for folder in ("examples", "benchmarks", "tests") for p in _modules(folder)
             if "sys.path.insert" in p.read_text() and p.name != Path(__file__).name]
    assert not edits, "sys.path edits in: " + ", ".join(edits)
