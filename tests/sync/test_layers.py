"""What the sync packages may import, and what they export.

import-linter (pyproject.toml) keeps ``crmflow.sync`` and ``crmflow.domain``
free of HTTP and SQL libraries and above/below the right layers; these tests
pin the narrower rules of house-style 8.7 that the shared contracts do not
spell out: the engine sees only ``providers.base`` of the provider packages,
and ``providers.memory`` imports no other provider package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crmflow
import crmflow.sync

SRC = Path(crmflow.__file__).parent


def crmflow_imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (SRC / package.replace(".", "/")).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("crmflow")}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        (
            "sync",
            (
                "crmflow.sync",
                "crmflow.domain",
                "crmflow.errors",
                "crmflow.providers.base",
            ),
        ),
        (
            "providers.memory",
            ("crmflow.providers.memory", "crmflow.domain", "crmflow.providers.base"),
        ),
    ],
)
def test_imports_stay_inside_their_layer(package, allowed):
    imports = crmflow_imports(package)
    assert imports, package
    assert {name for name in imports if not name.startswith(allowed)} == set()


def test_domain_calendar_imports_only_the_domain():
    tree = ast.parse((SRC / "domain" / "calendar.py").read_text())
    modules = {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert {m for m in modules if m.startswith("crmflow")} <= {
        "crmflow.domain.appointments",
        "crmflow.domain.crm",
        "crmflow.errors",
    }


def test_public_surface_of_the_sync_package():
    assert crmflow.sync.__all__ == sorted(crmflow.sync.__all__)
    assert {"sync_pair", "SyncResult", "ConflictPolicy"} <= set(crmflow.sync.__all__)
    for name in crmflow.sync.__all__:
        assert getattr(crmflow.sync, name) is not None
