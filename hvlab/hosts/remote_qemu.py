"""A QEMU guest on another Linux machine (``on: <ssh host>``).

The kernel and initrd are copied to a temporary directory there, QEMU runs
daemonized with its serial console in that directory, and the guest's sshd
(forwarded to the machine's 127.0.0.1:PORT) is reached through the machine
as a jump host.  ``stop()`` kills QEMU and removes the directory.  A guard
command on the machine holds an SSH channel open from the directory's creation
on: when hvlab's end of the connection closes (hvlab killed), its stdin ends
and it does what ``stop()`` would have done.  (A cut link is noticed by the
machine's sshd only as its ClientAlive/TCP keepalive settings allow.)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from hvlab.errors import InfraError
from hvlab.hosts.qemu_guest import GuestFiles, guest_arch, qemu_argv
from hvlab.hosts.sessions import has_tool
from hvlab.model import SshEndpoint
from hvlab.ssh import SshSession

# $1 the run's directory: wait for stdin to end, then stop the QEMU whose pid
# file is there (only if that pid is still a process started from there) and
# remove the directory
GUARD = r"""cat >/dev/null
pid=$(cat "$1/qemu.pid" 2>/dev/null)
if [ -n "$pid" ] && grep -qaF -- "$1" "/proc/$pid/cmdline" 2>/dev/null; then
  kill "$pid" 2>/dev/null; sleep 1; kill -9 "$pid" 2>/dev/null
fi
rm -rf -- "$1"
"""


@dataclass
class RemoteQemuGuest(GuestFiles):
    """A guest on ``remote``; ``workdir`` holds the local copy of its console."""

    remote: SshSession  # the machine QEMU runs on (owned by the caller)
    port: int = 0
    accel: str = ""
    started: float = 0.0
    rdir: str = ""
    pid: str = ""
    guard: paramiko.Channel | None = None

    def start(self) -> None:
        r = self.remote
        arch = guest_arch(self.host)
        if not has_tool(r, arch.qemu):
            raise InfraError(f"host {r.name}: {arch.qemu} is not installed there "
                             f"(Debian package: {arch.qemu_package})")
        self.rdir = r.check(["mktemp", "-d", "/tmp/hvlab-qemu-XXXXXX"], timeout=30).strip()
        self.guard = r.hold(["sh", "-c", GUARD, "sh", self.rdir])  # before anything is there
        r.put_file(self.kernel, f"{self.rdir}/kernel")
        r.put_file(self.initrd, f"{self.rdir}/initrd")
        accel = self.spec.accel
        if accel == "auto":  # no cheap remote probe of a hanging KVM: TCG is always right
            accel = "tcg"
        self.accel = accel
        for _ in range(5):
            self.port = random.randint(20000, 60999)
            argv = [*qemu_argv(self.spec, arch, accel, f"{self.rdir}/kernel", f"{self.rdir}/initrd",
                               self.append, f"{self.rdir}/console.log", self.port),
                    "-daemonize", "-pidfile", f"{self.rdir}/qemu.pid",
                    "-D", f"{self.rdir}/qemu.log"]
            result = r.run(argv, timeout=60)
            if result.ok:
                pid = r.check(["cat", f"{self.rdir}/qemu.pid"], timeout=30).strip()
                if not pid.isdigit():
                    raise InfraError(f"host {r.name}: QEMU's pid file holds {pid[:40]!r}")
                self.pid = pid
                self.started = time.monotonic()
                return
            if "host forwarding" not in result.output:
                raise InfraError(f"host {r.name}: QEMU did not start: "
                                 f"{result.output.strip()[-300:]}")
        raise InfraError(f"host {r.name}: no free port for the guest's SSH forward")

    def exit_reason(self) -> str:
        if not self.rdir:
            return ""
        out = self.remote.run(["tail", "-n", "1", f"{self.rdir}/qemu.log"], timeout=30)
        return out.output.strip()

    def alive(self) -> bool:
        return bool(self.pid) and self.remote.run(["kill", "-0", self.pid], timeout=30).ok

    def console_lines(self) -> list[str]:
        if not self.rdir:
            return []
        result = self.remote.run(["cat", f"{self.rdir}/console.log"], timeout=30)
        if result.ok:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.console.write_text(result.output)
        try:
            return self.console.read_text(errors="backslashreplace").splitlines()
        except OSError:
            return []

    def ssh_ready(self) -> bool:
        transport = self.remote.connect().get_transport()
        if transport is None:
            return False
        try:
            chan = transport.open_channel("direct-tcpip", ("127.0.0.1", self.port),
                                          ("127.0.0.1", 0), timeout=3)
        except (paramiko.SSHException, OSError):
            return False
        try:
            chan.settimeout(2)
            return chan.recv(4).startswith(b"SSH-")
        except OSError:
            return False
        finally:
            chan.close()

    def session(self, key: Path, fingerprint: str) -> SshSession:
        ep = SshEndpoint("127.0.0.1", self.port, "root", key, host_key=fingerprint,
                         connect_timeout=5)
        return SshSession(self.host.name, ep, jump=self.remote)

    def stop(self) -> None:
        if self.pid:
            self.remote.run(["sh", "-c", f"kill {self.pid} 2>/dev/null; sleep 1; "
                             f"kill -9 {self.pid} 2>/dev/null; true"], timeout=30)
            self.console_lines()  # keep the last console output
            self.pid = ""
        if self.rdir:
            self.remote.run(["rm", "-rf", self.rdir], timeout=60)
            self.rdir = ""
        if self.guard is not None:
            self.guard.close()  # its QEMU is gone: it only removes the (gone) directory
            self.guard = None
