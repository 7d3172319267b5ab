"""A QEMU VM on this machine that boots from a disk through UEFI, as an
installed Hyper-V Gen2 or Azure VM does: OVMF firmware with a private copy
of its variable store, a qcow2 overlay on a cached base image (so every
start is clean and the base is never written), the serial console to a
file, a QMP socket for a hard reset or power-off, and user networking
forwarding a free loopback port to the VM's sshd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hvlab import procs
from hvlab.errors import InfraError
from hvlab.hosts.qemu_guest import (
    QEMU,
    free_port,
    last_line,
    lines_of,
    qmp,
    ssh_banner,
    stop_process,
)
from hvlab.proc import capture, require_tool

OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"
DISK_BUSES = ("virtio", "sata")
# QEMU under TCG at times never leaves OVMF after a restart (a guest reboot or
# a QMP system_reset): the console stays silent, where the firmware prints its
# boot lines within seconds.  A restart silent this long is powered off and on.
STUCK_SECONDS = 90
_RESTART = re.compile(r"reboot: (?:machine restart|Restarting system)")


def firmware() -> tuple[Path, Path]:
    """OVMF's code and its variable-store template (Debian package ovmf)."""
    code, vars_ = OVMF_DIR / OVMF_CODE, OVMF_DIR / OVMF_VARS
    if not code.is_file() or not vars_.is_file():
        raise InfraError(f"UEFI firmware {code} is missing (Debian package: ovmf; "
                         "run ci/setup.sh)")
    return code, vars_


@dataclass
class DiskVm:
    """One VM: ``base`` is never written; its overlay, firmware variables,
    console and QEMU log live in ``workdir``."""

    name: str
    base: Path
    workdir: Path
    memory: int = 1024
    cpus: int = 2
    disk_bus: str = "virtio"
    accel: str = "tcg"
    snapshot: bool = True  # False: the VM writes ``base`` itself (the image's first boot)
    console_path: Path | None = None  # default: in workdir
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started: float = field(default=0.0)
    reset_at: float = 0.0  # time.time() of the last QMP reset (0: none pending)
    power_cycles: int = 0  # restarts that hung and were powered off and on
    _argv: list[str] = field(default_factory=list)
    _sockdir: str = ""

    @property
    def console(self) -> Path:
        return self.console_path or self.workdir / f"console-{self.name}.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / f"qemu-{self.name}.log"

    @property
    def drive(self) -> Path:
        """What the VM writes: an overlay on ``base``, or ``base`` itself."""
        return self.workdir / f"{self.name}.qcow2" if self.snapshot else self.base

    @property
    def qmp_socket(self) -> Path:
        """In a short private directory: Unix socket paths must stay under 108 bytes."""
        if not self._sockdir:
            self._sockdir = tempfile.mkdtemp(prefix="hvlab-qmp-")
        return Path(self._sockdir) / "qmp.sock"

    def argv(self, code: Path, vars_: Path) -> list[str]:
        if self.disk_bus == "sata":  # q35's own AHCI controller
            disk = ["-drive", f"file={self.drive},format=qcow2,if=none,id=d0",
                    "-device", "ide-hd,drive=d0,bus=ide.0"]
        else:
            disk = ["-drive", f"file={self.drive},format=qcow2,if=virtio"]
        cpu = ["-cpu", "max"] if self.accel == "tcg" else []
        return [
            QEMU, "-machine", "q35", "-accel", self.accel, *cpu, "-m", str(self.memory),
            "-smp", str(self.cpus), "-nodefaults", "-display", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_}",
            *disk,
            # appended to: a power cycle (below) keeps what the console said
            "-chardev", f"file,id=con0,path={str(self.console).replace(',', ',,')},append=on",
            "-serial", "chardev:con0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
        ]

    def start(self) -> None:
        """A fresh overlay and variable store, then QEMU."""
        require_tool(QEMU)
        require_tool("qemu-img")
        code, template = firmware()
        if self.disk_bus not in DISK_BUSES:
            raise InfraError(f"VM {self.name}: disk bus '{self.disk_bus}' is not one of "
                             f"{', '.join(DISK_BUSES)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.snapshot:
            self.drive.unlink(missing_ok=True)
            made = capture(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                            str(self.base.resolve()), str(self.drive)], timeout=60)
            if made.returncode != 0:
                raise InfraError(f"VM {self.name}: cannot create the disk overlay on "
                                 f"{self.base}: "
                                 f"{made.stderr.decode(errors='replace').strip()[-300:]}")
        vars_ = self.workdir / f"{self.name}-OVMF_VARS.fd"
        shutil.copyfile(template, vars_)
        self.console.parent.mkdir(parents=True, exist_ok=True)
        self.console.write_bytes(b"")
        self.qmp_socket.unlink(missing_ok=True)
        self.port = free_port()
        self._argv = self.argv(code, vars_)
        self._launch()

    def _launch(self) -> None:
        with self.qemu_log.open("ab") as log:
            self.proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,  # noqa: S603
                                         stdout=log, stderr=log, start_new_session=True,
                                         preexec_fn=procs.die_with_parent)
        procs.track(self.proc.pid, self._argv, f"QEMU VM {self.name}")
        self.started = time.monotonic()

    def revive_if_stuck(self, now: float | None = None) -> bool:
        """Power the VM off and on (QEMU started again on the same overlay and
        variable store, so a pending grub one-shot entry still holds) when a
        restart left the console silent for STUCK_SECONDS; True when it did.
        A restart is the kernel's own ``reboot: machine restart`` as the
        console's last line, or a QMP reset with nothing written since."""
        if not self.alive() or not self._argv:
            return False
        now = time.time() if now is None else now
        try:
            quiet_since = self.console.stat().st_mtime
        except OSError:
            return False
        if now - quiet_since < STUCK_SECONDS:
            return False
        last = next((line for line in reversed(self.console_lines()) if line.strip()), "")
        if not (_RESTART.search(last) or (self.reset_at and quiet_since <= self.reset_at)):
            return False
        assert self.proc is not None
        stop_process(self.proc, None)
        self.power_cycles += 1
        with self.console.open("a") as fh:
            fh.write(f"\n[hvlab] the restart hung (console silent for {now - quiet_since:.0f} s "
                     "after it): VM powered off and on\n")
        self.reset_at = 0.0
        self.qmp_socket.unlink(missing_ok=True)
        self._launch()
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        return last_line(self.qemu_log)

    def console_lines(self) -> list[str]:
        return lines_of(self.console)

    def console_tail(self, n: int = 5) -> str:
        """The console's last non-empty lines on one line (for an error message)."""
        lines = [line.strip() for line in self.console_lines() if line.strip()]
        return " | ".join(lines[-n:]) or "(empty)"

    def ssh_ready(self) -> bool:
        return ssh_banner(self.port)

    def reset(self) -> bool:
        """A hard reset (the power button held, as Hyper-V's Stop-VM -TurnOff then
        Start-VM): the firmware and boot loader run again."""
        if not (self.alive() and qmp(self.qmp_socket, "system_reset")):
            return False
        self.reset_at = time.time()
        return True

    def wait_exit(self, timeout: float) -> bool:
        """Wait for the VM to power itself off."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.qmp_socket if self._sockdir else None)
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = ""
