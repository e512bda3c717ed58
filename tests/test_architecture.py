"""The import contracts in pyproject.toml (``[tool.importlinter]``) hold, and they bite.

``sync`` imports ``segmentation`` and ``connectors``, never the other way; ``segmentation`` knows no vendor and
``connectors`` no analytics;
``sync``'s packages are layered (cli, serve, api, then planning, destinations, ledger and store). The
suite runs the real ``lint-imports`` CLI; the second test proves each contract breaks when a forbidden
import is added (to a copy of the tree, never to the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("connectors", "segmentation", "sync")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                               "import sys; from importlinter.cli import lint_imports_command; "
                                               "sys.exit(lint_imports_command())"]
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}  # the packages in cwd; lines unwrapped
    return subprocess.run([*command, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the three packages and pyproject.toml."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, refusal", [
    ("segmentation/scoring.py", "import sync.settings", "segmentation is not allowed to import sync"),
    ("connectors/records.py", "from sync import errors", "connectors is not allowed to import sync"),
    ("segmentation/rules.py", "import connectors.records", "segmentation is not allowed to import connectors"),
    ("segmentation/metrics.py", "import requests", "segmentation is not allowed to import requests"),
    ("connectors/zones.py", "import segmentation.localtime", "connectors is not allowed to import segmentation"),
    ("sync/store/merge.py", "import sync.cli", "sync.store is not allowed to import sync.cli"),
])
def test_a_forbidden_import_breaks_its_contract(tree: Path, module: str, line: str, refusal: str):
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # added by the test\n", encoding="utf-8")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{refusal}:" in result.stdout, result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout  # the report names the importer
