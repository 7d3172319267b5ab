"""The ``qemu`` host kind: a QEMU guest booted directly from a build with
hvlab's initramfs, on this machine or ``on:`` an SSH host.

The boot stage: start QEMU, watch the console while waiting for SSH, verify
the booted kernel, and stop QEMU in every case.  A panic on the console
fails the boot at once; a guest that never answers fails after
``boot_timeout`` with the last 100 console lines.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hvlab import cancel
from hvlab.boot import console, guest_image
from hvlab.boot.imagearch import HEAD, image_arch
from hvlab.boot.verify import (
    BootTarget,
    finding_cases,
    host_lease,
    target_from_build,
    verify_booted,
)
from hvlab.build.arches import runs_here
from hvlab.config.shape import Field, Shape
from hvlab.errors import InfraError, UserError
from hvlab.hosts.base import BootedGuest, CellLog, ConfigContext, HostEnv, check_failed
from hvlab.hosts.qemu_guest import Guest, QemuGuest, guest_arch
from hvlab.hosts.remote_qemu import RemoteQemuGuest
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, QemuHost
from hvlab.proc import capture
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace

if TYPE_CHECKING:
    from hvlab.config.reader import MapReader


class QemuKind:
    """``kind: qemu``."""

    SHAPE = Shape({
        "on": Field("string", "where QEMU runs: local (default) or the name of an ssh host"),
        "accel": Field("enum", "tcg (default), kvm or auto", choices=("tcg", "kvm", "auto")),
        "memory": Field("integer", "guest memory in MiB (default 1024)",
                        minimum=128, maximum=1024 * 1024),
        "cpus": Field("integer", "guest CPUs (default 2)", minimum=1, maximum=256),
        "append": Field("string", "added to the kernel command line"),
        "qemu_args": Field("strings", "extra QEMU arguments"),
    })

    def __init__(self, spec: HostSpec, env: HostEnv) -> None:
        assert isinstance(spec.detail, QemuHost)
        self.spec = spec
        self.detail = spec.detail
        self.env = env

    @staticmethod
    def read_config(r: MapReader, path: Path, ctx: ConfigContext) -> QemuHost:
        on = r.string("on", default="local") or "local"
        if on != "local":
            ctx.host_ref(r, "on", on)
        return QemuHost(
            on=on,
            accel=r.enum("accel", ("tcg", "kvm", "auto"), default="tcg") or "tcg",
            memory=r.integer("memory", 1024, 128, 1024 * 1024),
            cpus=r.integer("cpus", 2, 1, 256),
            append=r.string("append", default="") or "",
            qemu_args=tuple(a for a, _ in r.str_list("qemu_args")),
        )

    def close(self) -> None:
        pass  # nothing lives between cells

    def stages(self) -> tuple[str, ...]:
        return ("boot",)

    @contextmanager
    def boot(self, build: Path, cell: CellLog) -> Iterator[BootedGuest]:
        """Boot ``build`` in a fresh guest; QEMU is stopped however this ends."""
        target = target_from_build(build)
        refuse_other_arch(self.spec, target.image)
        with host_lease(self.env.ws, self.spec.name, self.env.info):
            remote = open_session(self.env.config, self.detail.on) \
                if self.detail.on != "local" else None
            try:
                with cell.stage("boot", f"{target.label} on {self.spec.name}"):
                    outcome = boot_qemu(self.env.ws, self.spec, target, cell.logs,
                                        self.env.info, remote)
                try:
                    cell.record(outcome.stage)
                    booted = outcome.stage.properties.get("kernel_release", "")
                    yield BootedGuest(outcome.stage, outcome.session, booted, target.release,
                                      outcome.guest.console_lines)
                finally:
                    if outcome.session is not None:
                        outcome.session.close()
                    outcome.guest.stop()
            finally:
                if remote is not None:
                    close_chain(remote)

    def guest(self) -> AbstractContextManager[SshSession]:
        raise UserError(f"host '{self.spec.name}' is a qemu host: its guest lives for one run "
                        "only (inv test keeps a capture of it in the run folder); "
                        "hosts.capture needs an ssh or hyperv host")

    def check(self) -> TestCase:
        name = self.spec.name
        problems = []
        arch = guest_arch(self.spec)
        qemu = shutil.which(arch.qemu)
        if qemu is None:
            problems.append(f"{arch.qemu} is not installed (Debian package {arch.qemu_package})")
        if self.detail.accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            problems.append("accel: kvm but /dev/kvm is not usable")
        native = runs_here(arch)
        if self.detail.accel == "kvm" and not native:
            problems.append(f"accel: kvm runs guests of this machine's arch "
                            f"({os.uname().machine}) only: an {arch.name} guest needs "
                            "accel: tcg")
        if native:
            tools: tuple[tuple[str, str], ...] = (("busybox", "busybox-static"),
                                                  ("ssh-keygen", "openssh-client"))
            if not os.path.exists("/usr/sbin/sshd"):
                problems.append("sshd is missing for the guest image (Debian package "
                                "openssh-server)")
        else:  # the guest's binaries are Debian's packages of its arch
            tools = (("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("readelf", "binutils"),
                     ("ssh-keygen", "openssh-client"))
        for tool, package in tools:
            if shutil.which(tool) is None:
                problems.append(f"{tool} is missing for the guest image (Debian package "
                                f"{package})")
        if problems:
            return check_failed(name, "; ".join(problems))
        if self.detail.on != "local":
            from hvlab.hosts.machine import check_ssh

            return check_ssh(self.env, name, self.detail.on)
        version = capture([qemu or arch.qemu, "--version"]).stdout.decode()
        return TestCase(f"host: {name}", Status.PASS,
                        output=f"{version.splitlines()[0]}\naccel {self.detail.accel}\n")


def refuse_other_arch(host: HostSpec, image: Path) -> None:
    """A UserError when ``image`` is a kernel of another arch than the host's guest."""
    try:
        with image.open("rb") as fh:
            found = image_arch(fh.read(HEAD))
    except OSError:
        return  # boot_qemu says what is missing
    if found is not None and found != host.arch:
        raise UserError(f"host '{host.name}' boots {host.arch} kernels (arch: "
                        f"{host.arch} in {host.file.name}); {image.name} is an {found} "
                        "kernel: boot it on a qemu host with arch: " + found)


@dataclass
class BootOutcome:
    """A QEMU boot: its stage, the open session when it passed, the process."""

    stage: StageResult
    session: SshSession | None  # open to the booted guest when the boot passed
    guest: Guest


def boot_qemu(ws: Workspace, host: HostSpec, target: BootTarget, workdir: Path,
              info: Callable[[str], None], remote: SshSession | None = None) -> BootOutcome:
    """Boot ``target`` in a QEMU guest (here, or on ``remote`` for ``on: <host>``);
    the caller stops ``outcome.guest``.  If this raises (an interrupt, a lost
    connection), the guest has already been stopped: QEMU runs in its own
    session, so a signal to hvlab would not reach it."""
    t0 = time.monotonic()
    image = guest_image.build_image(ws, arch=guest_arch(host))
    initrd = guest_image.combined_initrd(image, target.modules,
                                         workdir / f"initrd-{host.name}.cpio.gz")
    guest: Guest
    if remote is not None:
        guest = RemoteQemuGuest(host, workdir, target.image, initrd, "", remote)
    else:
        guest = QemuGuest(host, workdir, target.image, initrd, "")
    try:
        guest.start()
        return _watch_boot(host, target, workdir, info, image, guest, remote, t0)
    except BaseException:
        guest.stop()
        raise


def _watch_boot(host: HostSpec, target: BootTarget, workdir: Path,
                info: Callable[[str], None], image: guest_image.GuestImage, guest: Guest,
                remote: SshSession | None, t0: float) -> BootOutcome:
    where = f"on {remote.name}" if remote else "here"
    info(f"QEMU ({guest.accel}) started {where} for {host.name}, guest ssh port {guest.port}")
    cases: list[TestCase] = []
    session = None
    log = guest.console
    deadline = guest.started + host.boot_timeout
    panic: console.Finding | None = None
    while True:
        lines = guest.console_lines()
        panic = console.first_panic(lines)
        if panic is not None or not guest.alive():
            break
        if guest.ssh_ready():
            candidate = guest.session(image.client_key, image.host_key_fingerprint)
            try:
                candidate.connect()
                session = candidate
                break
            except InfraError:
                candidate.close()
        if time.monotonic() > deadline:
            break
        cancel.sleep(0.25)
    waited = time.monotonic() - guest.started
    lines = guest.console_lines()
    if session is None:
        if panic is not None:
            msg = f"kernel panic during boot after {waited:.0f} s: {panic.message}"
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL, msg,
                                  output=panic.excerpt + "\n\n--- console tail ---\n"
                                  + console.tail(lines), duration=waited, log_path=log,
                                  evidence=panic.excerpt))
        elif not guest.alive():
            reason = guest.exit_reason()
            started = any("Linux version" in line for line in lines)
            msg = ("QEMU exited during boot" if started else
                   "QEMU exited before the kernel started") + (f": {reason}" if reason else "")
            # no banner: QEMU itself failed (its arguments, a port), not the kernel
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL if started else Status.ERROR,
                                  msg, output=console.tail(lines), duration=waited,
                                  log_path=log,
                                  evidence=console.tail(lines, console.EVIDENCE_LINES)))
        else:
            msg = (f"no SSH within boot_timeout ({host.boot_timeout} s); "
                   "QEMU stopped; last 100 console lines attached")
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL, msg,
                                  output=console.tail(lines), duration=waited, log_path=log,
                                  evidence=console.tail(lines, console.EVIDENCE_LINES)))
        cases += finding_cases(console.scan(lines), "console", log, skip_panic=panic)
        return BootOutcome(StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                                  properties=_props(guest, target)),
                           None, guest)
    cases.append(TestCase(f"boot: {host.name}", Status.PASS,
                          output=f"SSH answered {waited:.1f} s after QEMU started "
                                 f"({guest.accel})", duration=waited, log_path=log))
    booted, verified = verify_booted(session, host.name, target.release,
                                     guest.console_lines(), log,
                                     workdir / f"dmesg-{host.name}.log")
    cases += verified
    return BootOutcome(StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                              properties=_props(guest, target, booted)),
                       session, guest)




def _props(guest: Guest, target: BootTarget, booted: str = "") -> dict[str, str]:
    return {"host_kind": "qemu", "accel": guest.accel, "expected_release": target.release,
            "kernel_release": booted, "boot_target": target.label,
            "qemu": qemu_version(guest_arch(guest.host).qemu)}


@functools.cache
def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    """``QEMU emulator version 7.2.x (Debian ...)``: the first line QEMU prints."""
    try:
        done = capture([binary, "--version"], timeout=30)
    except (OSError, subprocess.TimeoutExpired, InfraError):
        return ""
    return (done.stdout.decode(errors="replace").splitlines() or [""])[0].strip()
