"""A QEMU guest on this machine, booted directly from a build (no disk image).

The guest runs in its own process group with its serial console in a file,
a QMP socket for hard power-off, and user networking forwarding a free
loopback port to the guest's sshd.  ``stop()`` always ends it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hvlab import procs
from hvlab.build.arches import ARCH_TABLE, Arch, runs_here
from hvlab.model import HostSpec, QemuHost, SshEndpoint
from hvlab.proc import require_tool
from hvlab.ssh import SshSession

QEMU = "qemu-system-x86_64"  # this machine's own (the installed VMs, x86_64 only)
KVM_PROBE_SECONDS = 10.0


class Guest(Protocol):
    """A QEMU process and its guest, here or on a machine reached over SSH."""

    host: HostSpec
    accel: str
    port: int
    started: float

    @property
    def console(self) -> Path: ...

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def exit_reason(self) -> str: ...

    def console_lines(self) -> list[str]: ...

    def ssh_ready(self) -> bool: ...

    def session(self, key: Path, fingerprint: str) -> SshSession: ...

    def stop(self) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_banner(port: int) -> bool:
    """sshd's banner on a forwarded loopback port (cheaper than a full handshake)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def lines_of(path: Path) -> list[str]:
    """A console log's lines (none when it is not there yet)."""
    try:
        return path.read_text(errors="backslashreplace").splitlines()
    except OSError:
        return []


def last_line(path: Path) -> str:
    """QEMU's own last words in its log (why it would not start or stopped)."""
    lines = [line for line in lines_of(path) if line.strip()]
    return lines[-1].strip() if lines else ""


def qmp(sock: Path, *commands: str) -> bool:
    """Send QMP commands (each after the capabilities handshake); False when
    QEMU does not answer on ``sock``."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.recv(4096)
            s.sendall(json.dumps({"execute": "qmp_capabilities"}).encode())
            s.recv(4096)
            for cmd in commands:
                s.sendall(json.dumps({"execute": cmd}).encode())
                s.recv(4096)
        return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], sock: Path | None) -> None:
    """Power off hard (QMP quit), then make sure the process group is gone."""
    if proc.poll() is None and sock is not None:
        qmp(sock, "quit")
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
    procs.untrack(proc.pid)


def guest_arch(host: HostSpec) -> Arch:
    return ARCH_TABLE[host.arch]


def qemu_argv(spec: QemuHost, arch: Arch, accel: str, kernel: str, initrd: str, append: str,
              console: str, port: int) -> list[str]:
    """The QEMU command line of the guest's arch: direct kernel boot, serial
    console to a file, user networking with the guest's port 22 on
    127.0.0.1:``port``."""
    cmdline = " ".join(p for p in (f"console={arch.console},115200 panic=-1 hvlab.net=static:"
                                   "10.0.2.15/24:10.0.2.2", append, spec.append) if p)
    # under KVM the machine's own CPU (arm64's -M virt defaults to a 32-bit one)
    cpu = ["-cpu", arch.qemu_cpu if accel == "tcg" else "host"]
    return [
        arch.qemu, "-M", arch.qemu_machine, "-accel", accel, *cpu, "-m", str(spec.memory),
        "-smp", str(spec.cpus), "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
        "-serial", f"file:{console}",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        *spec.qemu_args,
    ]


@dataclass
class GuestFiles:
    """What every QEMU guest has: its host config, kernel, initrd and a local
    folder where its console log ends up."""

    host: HostSpec
    workdir: Path
    kernel: Path
    initrd: Path
    append: str

    @property
    def spec(self) -> QemuHost:
        assert isinstance(self.host.detail, QemuHost)
        return self.host.detail

    @property
    def console(self) -> Path:
        return self.workdir / f"console-{self.host.name}.log"


@dataclass
class QemuGuest(GuestFiles):
    """A guest on this machine; its QMP socket and logs live in ``workdir``."""

    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    accel: str = ""
    started: float = field(default=0.0)
    _sockdir: str = ""

    @property
    def qmp(self) -> Path:
        """In a short private directory: Unix socket paths must stay under 108 bytes."""
        if not self._sockdir:
            self._sockdir = tempfile.mkdtemp(prefix="hvlab-qmp-")
        return Path(self._sockdir) / "qmp.sock"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / f"qemu-{self.host.name}.log"

    def exit_reason(self) -> str:
        return last_line(self.qemu_log)

    def argv(self, accel: str) -> list[str]:
        return [*qemu_argv(self.spec, guest_arch(self.host), accel, str(self.kernel),
                           str(self.initrd), self.append, str(self.console), self.port),
                "-qmp", f"unix:{self.qmp},server=on,wait=off"]

    def _spawn(self, accel: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console.write_bytes(b"")
        self.qmp.unlink(missing_ok=True)
        self.port = free_port()
        log = self.qemu_log.open("ab")
        argv = self.argv(accel)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,  # noqa: S603
                                     stdout=log, stderr=log, start_new_session=True,
                                     preexec_fn=procs.die_with_parent)
        log.close()
        procs.track(self.proc.pid, argv, f"QEMU guest of host {self.host.name}")
        self.accel = accel
        self.started = time.monotonic()

    def start(self) -> None:
        arch = guest_arch(self.host)
        require_tool(arch.qemu, arch.qemu_package, f"boots {arch.name} guests")
        accel = self.spec.accel
        if accel == "auto":  # KVM runs guests of this machine's own arch only
            accel = "kvm" if runs_here(arch) and self._kvm_works() else "tcg"
        self._spawn(accel)

    def _kvm_works(self) -> bool:
        """Boot with KVM and wait briefly for the kernel's banner: on machines where
        KVM guests hang in early boot the device node alone proves nothing."""
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False
        self._spawn("kvm")
        deadline = time.monotonic() + KVM_PROBE_SECONDS
        ok = False
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if b"Linux version" in self.console.read_bytes():
                ok = True
                break
            time.sleep(0.2)
        self.stop()
        return ok

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ssh_ready(self) -> bool:
        return ssh_banner(self.port)

    def session(self, key: Path, fingerprint: str) -> SshSession:
        ep = SshEndpoint("127.0.0.1", self.port, "root", key, host_key=fingerprint,
                         connect_timeout=5)
        return SshSession(self.host.name, ep)

    def console_lines(self) -> list[str]:
        return lines_of(self.console)

    def stop(self) -> None:
        """Power off hard (QMP quit), then make sure the process group is gone."""
        if self.proc is None:
            return
        stop_process(self.proc, self.qmp)
        if self._sockdir:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = ""
