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
