"""The host interface: every kind: is one class behind the registry, and nothing
outside hvlab/hosts/ decides anything by a host's kind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hvlab.hosts import registry
from hvlab.model import HostKind

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "hvlab"
KIND_TYPES = {"QemuHost", "SshHost", "HypervHost", "HostKind"}


@pytest.mark.parametrize("kind", list(HostKind))
def test_every_kind_has_a_class_with_the_whole_interface(kind: HostKind) -> None:
    cls = registry.kind_class(kind)
    for member in ("read_config", "stages", "boot", "check"):
        assert callable(getattr(cls, member, None)), (kind, member)


def _outside_hosts() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py")
            if PACKAGE / "hosts" not in p.parents and p.name != "model.py"]


def test_no_code_outside_hosts_dispatches_on_the_kind() -> None:
    found = []
    for path in _outside_hosts():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            # isinstance(x, QemuHost) and friends, HostKind.QEMU, ... == "qemu"
            if isinstance(node, ast.Name) and node.id in KIND_TYPES - {"HostKind"}:
                found.append(f"{path.name}:{node.lineno}: {node.id}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "HostKind":
                found.append(f"{path.name}:{node.lineno}: HostKind.{node.attr}")
            if isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and c.value in {k.value for k in HostKind}
                    for c in node.comparators):
                found.append(f"{path.name}:{node.lineno}: compares with a kind name")
            if isinstance(node, ast.Attribute) and node.attr == "detail":
                found.append(f"{path.name}:{node.lineno}: reads a host's kind detail")
    assert found == []
