"""What the local VM host leaves behind, and how it reads its console."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvlab import procs
from hvlab.hosts import local_vm

pytestmark = pytest.mark.unit


def test_files_of_vms_whose_run_died_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    tag = procs.space_tag()
    dead = tmp_path / f"vm-{tag}-999999999-1"
    mine = tmp_path / f"vm-{tag}-{os.getpid()}-2"
    elsewhere = tmp_path / "vm-0000ffff-999999999-3"  # another boot or pid namespace: unknown
    for d in (dead, mine, elsewhere):
        d.mkdir()
        (d / "vm.qcow2").write_bytes(b"overlay")
    local_vm._remove_dead(tmp_path)
    assert not dead.exists() and mine.exists() and elsewhere.exists()


def test_the_vm_image_is_cached_by_its_inputs(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A second ``inv image.vm`` reuses the image; --force, another mirror or
    another package list builds a new one (the build itself is stood in for:
    the real one runs in the e2e tier)."""
    import json

    from hvlab.boot import vm_image
    from hvlab.workspace import Workspace

    built: list[tuple[str, str]] = []

    def fake_build(tmp: Path, mirror: str, info: object) -> vm_image.VmImage:
        built.append((tmp.parent.name, mirror))
        (tmp / "disk.qcow2").write_bytes(b"qcow2")
        (tmp / "client_key").write_text("key")
        facts = {"host_key_fingerprint": f"SHA256:{len(built)}", "default_release": "6.1.0-x"}
        (tmp / "image.json").write_text(json.dumps(facts))
        return vm_image.VmImage(tmp / "disk.qcow2", tmp / "client_key",
                                facts["host_key_fingerprint"], "6.1.0-x", facts)

    monkeypatch.setattr(vm_image, "_build", fake_build)
    monkeypatch.setattr(vm_image, "require_tool", lambda _tool: None)
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    first = vm_image.build_image(ws)
    assert vm_image.build_image(ws) == first and len(built) == 1  # cached
    forced = vm_image.build_image(ws, force=True)
    assert len(built) == 2 and forced.disk == first.disk  # the same inputs, built again
    assert forced.host_key_fingerprint != first.host_key_fingerprint
    other = vm_image.build_image(ws, mirror="http://mirror.example/debian")
    assert len(built) == 3 and other.disk.parent != first.disk.parent
    monkeypatch.setattr(vm_image, "PACKAGES", (*vm_image.PACKAGES, "xfsprogs"))
    more = vm_image.build_image(ws)
    assert len(built) == 4 and more.disk.parent not in (first.disk.parent, other.disk.parent)
    assert sorted(p.name for p in (tmp_path / "kernels" / "images").iterdir()) == sorted(
        {first.disk.parent.name, other.disk.parent.name, more.disk.parent.name})  # no leftovers
