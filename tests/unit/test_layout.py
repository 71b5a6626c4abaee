"""Rules of the layout that a reviewer should not have to check by eye."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import slipstream

PACKAGE = Path(slipstream.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_domain_imports_only_the_standard_library() -> None:
    for path in (PACKAGE / "slo").rglob("*.py"):
        foreign = {
            r
            for r in _imported_roots(path)
            if r not in sys.stdlib_module_names and r != "slipstream"
        }
        assert not foreign, f"{path} imports {foreign}: slo/ must stay pure"


def test_the_sdk_and_settings_never_import_faust() -> None:
    paths = [
        *(PACKAGE / "client").rglob("*.py"),
        PACKAGE / "settings.py",
        PACKAGE / "conventions.py",
    ]
    for path in paths:
        assert not _imported_roots(path) & {"faust", "mode", "aiokafka"}, path


def test_the_design_folders_exist() -> None:
    for folder in ("slo", "schemas", "streams", "sinks", "client", "stack"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
