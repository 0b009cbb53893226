"""The rules the layout promises, checked on the source (import-linter checks the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import hunyuan_assets

PACKAGE = Path(hunyuan_assets.__file__).parent
COMPAT = PACKAGE / "integration" / "compat.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_compat_module_imports_dagster_private_modules():
    tests = Path(__file__).parent
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            name for name in _imports(path) if name.startswith(("dagster._", "dagster_shared"))
        )
        for path in [*PACKAGE.rglob("*.py"), *tests.rglob("*.py")]
        if path != COMPAT
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_public_api_fits_on_one_screen_and_resolves():
    source = (PACKAGE / "__init__.py").read_text()
    assert len(source.splitlines()) <= 90
    for name in hunyuan_assets.__all__:
        assert getattr(hunyuan_assets, name) is not None, name
    assert {"build_mesh_defs", "MeshesComponent", "Hunyuan3DResource"} <= set(
        hunyuan_assets.__all__
    )


def test_loading_the_definitions_does_not_import_pandas():
    """Every process that loads the code (a code server, each run's worker) would pay pandas
    and pyarrow.dataset's ~0.36 s of imports; only reading the prediction log needs them."""
    import subprocess
    import sys

    probe = (
        "import sys, hunyuan_assets.cli, hunyuan_assets.definitions\n"
        "print(sorted(m for m in ('pandas', 'pyarrow.dataset') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
