"""A local VM's restart that hangs in the firmware is powered off and on:
QEMU with OVMF started again on the same overlay and variable store, the
console kept.  Real QEMU and OVMF, held with -S (its CPUs never run, so the
console says only what the test writes, as a firmware that hung would)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hvlab.hosts.disk_vm import STUCK_SECONDS, DiskVm

pytestmark = pytest.mark.integration


class HeldVm(DiskVm):
    def argv(self, code: Path, vars_: Path) -> list[str]:
        return [*super().argv(code, vars_), "-S"]


def test_a_restart_silent_in_the_firmware_is_powered_off_and_on(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    vm = HeldVm("held", base, tmp_path / "vm", memory=256, cpus=1)
    vm.start()
    try:
        first = vm.proc.pid if vm.proc else 0
        deadline = time.monotonic() + 30
        while not vm.qmp_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with vm.console.open("a") as fh:
            fh.write("[   88.686872] reboot: Restarting system\n[   88.687159] reboot: machine "
                     "restart\n")
        later = vm.console.stat().st_mtime + STUCK_SECONDS + 1
        assert not vm.revive_if_stuck(now=later - 10)  # not silent long enough yet
        assert vm.revive_if_stuck(now=later)
        assert vm.alive() and vm.proc is not None and vm.proc.pid != first
        assert vm.power_cycles == 1
        text = vm.console.read_text()
        assert "reboot: machine restart" in text  # what it said before is kept
        assert "[hvlab] the restart hung (console silent for" in text
        assert (vm.workdir / "held.qcow2").is_file()  # the same overlay
        # a silent console that does not end in a restart is left alone ...
        assert not vm.revive_if_stuck(now=vm.console.stat().st_mtime + STUCK_SECONDS + 1)
        # ... unless a QMP reset left it silent
        deadline = time.monotonic() + 30
        while not vm.qmp_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.utime(vm.console, (time.time() - 5, time.time() - 5))
        assert vm.reset()
        assert vm.revive_if_stuck(now=time.time() + STUCK_SECONDS + 1)
        assert vm.power_cycles == 2 and vm.alive()
    finally:
        vm.stop()
    assert not vm.alive()
