"""CONTRIBUTING.md: modules stay under about 400 lines (split by responsibility when one would pass it). The
packages' modules (not the tests, benches or examples) at 400 lines at most."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the most lines a module of the packages may have
MAX_LINES = 400


def test_every_module_of_the_packages_has_at_most_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in ("connectors", "segmentation", "sync")
            for p in sorted((ROOT / package).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
