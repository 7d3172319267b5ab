"""The ``ssh`` host kind: an installed Linux machine or VM reached over SSH.

A build is installed and booted once (``hvlab.hosts.oneshot``); a kernel
that never answers is brought back by the host's ``power_cycle`` command
(the one-shot entry means the default kernel comes back).  The console is
what the host's ``console`` command prints, run here as ktest.pl does.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hvlab.boot import guest_image
from hvlab.boot.verify import host_lease, target_from_build
from hvlab.config.shape import Field, Shape
from hvlab.errors import HvlabError, InfraError, UserError
from hvlab.hosts import local_vm
from hvlab.hosts.base import (
    BootedGuest,
    CellLog,
    ConfigContext,
    HostEnv,
    check_failed,
    endpoint_fields,
)
from hvlab.hosts.oneshot import ConsoleCapture, install_and_boot, wait_back
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, LocalVm, SshEndpoint, SshHost
from hvlab.results import Status, TestCase
from hvlab.ssh import SshSession

if TYPE_CHECKING:
    from hvlab.config.reader import MapReader

BOOT_METHODS = ("auto", "kexec", "grub")
# the keys of every kind that installs a build on a machine and boots it
BOOT_FIELDS = {
    "boot_method": Field("enum", "how the build is booted: auto, kexec or grub",
                         choices=BOOT_METHODS),
    "keep_kernels": Field("integer", "hvlab kernels kept installed (default 2)",
                          minimum=1, maximum=100),
}


def hvlab_initrd(env: HostEnv, build: Path, out: Path) -> Path:
    """hvlab's guest initramfs with the build's modules (for an hvlab guest that
    has no initramfs tools of its own)."""
    image = guest_image.build_image(env.ws)
    return guest_image.combined_initrd(image, target_from_build(build).modules, out)


@dataclass
class _Machine:
    """``oneshot.Machine`` for an SSH host."""

    spec: HostSpec
    detail: SshHost
    capture: ConsoleCapture
    session: SshSession
    tested_release: str  # the kernel the one-shot entry boots once
    name: str = ""
    boot_timeout: int = 0
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name, self.boot_timeout = self.spec.name, self.spec.boot_timeout
        self.properties = {"host_kind": "ssh"}

    @property
    def console_log(self) -> Path:
        return self.capture.log

    def console_lines(self) -> list[str]:
        return self.capture.lines()

    def recover(self, log: Path) -> str:
        """Run the host's ``power_cycle`` command, then wait for SSH: the reset is
        only called a recovery when the machine answers on a kernel other than
        the tested one (the one-shot entry is spent)."""
        if not self.detail.power_cycle:
            return "no power_cycle command configured"
        t0 = time.monotonic()
        with log.open("ab") as fh:
            try:
                done = subprocess.run(list(self.detail.power_cycle), stdout=fh,  # noqa: S603
                                      stderr=subprocess.STDOUT, timeout=300, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"power_cycle {self.detail.power_cycle[0]!r} could not run: {exc}"
        if done.returncode != 0:
            return f"power_cycle failed (exit {done.returncode})"
        try:
            # any answer is a new boot: the tested kernel never answered
            wait_back(self.session, "", self.boot_timeout)
            back = self.session.check(["uname", "-r"], timeout=30).strip()
        except (TimeoutError, InfraError):
            return f"power-cycled; no SSH within boot_timeout ({self.boot_timeout} s) after it"
        finally:
            self.session.close()
        took = time.monotonic() - t0
        if back == self.tested_release:
            return (f"power-cycled; it came back on the tested kernel {back} after "
                    f"{took:.0f} s: the one-shot fallback did not hold")
        return f"power-cycled; back on its default kernel {back} after {took:.0f} s"

    def after_boot(self, session: SshSession) -> list[TestCase]:
        return []

    def address(self) -> str | None:
        return None  # a machine's address is its configuration's


class SshKind:
    """``kind: ssh``: a machine reached by SSH, or (``vm:``) a local VM hvlab starts."""

    SHAPE = Shape({}, alternatives=(
        Shape({**endpoint_fields(), **BOOT_FIELDS,
               "power_cycle": Field("strings", "command run here to hard-reset the machine"),
               "console": Field("strings", "command run here that prints its serial console"),
               }, "a machine hvlab reaches at its address"),
        Shape({"vm": Field("object", "the local VM hvlab starts", required=True,
                           shape=local_vm.SHAPE), **BOOT_FIELDS},
              "an installed VM on this machine, started by hvlab"),
    ))

    def __init__(self, spec: HostSpec, env: HostEnv) -> None:
        assert isinstance(spec.detail, SshHost)
        self.spec = spec
        self.detail = spec.detail
        self.env = env
        self._vm: local_vm.Running | None = None

    @staticmethod
    def read_config(r: MapReader, path: Path, ctx: ConfigContext) -> SshHost:
        if r.has("vm"):
            local_vm.refuse_owned(r)
            vm = r.nested("vm", local_vm.read_vm, required=True)
            return SshHost(
                endpoint=SshEndpoint("127.0.0.1"),  # the VM's, known once it runs
                boot_method=r.enum("boot_method", BOOT_METHODS, default="grub") or "grub",
                keep_kernels=r.integer("keep_kernels", 2, 1, 100),
                vm=vm or LocalVm())
        endpoint = ctx.endpoint(r, path)
        return SshHost(
            endpoint=endpoint,
            boot_method=r.enum("boot_method", BOOT_METHODS, default="auto") or "auto",
            power_cycle=tuple(a for a, _ in r.str_list("power_cycle")),
            console=tuple(a for a, _ in r.str_list("console")),
            keep_kernels=r.integer("keep_kernels", 2, 1, 100),
        )

    def stages(self) -> tuple[str, ...]:
        return ("install", "boot")

    @contextmanager
    def boot(self, build: Path, cell: CellLog) -> Iterator[BootedGuest]:
        if self.detail.vm is not None:
            with self._boot_vm(self.detail.vm, build, cell) as booted:
                yield booted
            return
        with host_lease(self.env.ws, self.spec.name, self.env.info):
            session = open_session(self.env.config, self.spec.name)
            capture = ConsoleCapture(self.detail.console,
                                     cell.logs / f"console-{self.spec.name}.log")
            try:
                release = (build / "kernelrelease").read_text().strip()
                machine = _Machine(self.spec, self.detail, capture, session, release)
                yield install_and_boot(
                    session, machine, cell, build, self.detail.boot_method,
                    self.detail.keep_kernels,
                    lambda: hvlab_initrd(self.env, build,
                                         cell.logs / f"initrd-{self.spec.name}.cpio.gz"))
            finally:
                capture.stop()
                close_chain(session)

    @contextmanager
    def _boot_vm(self, vm: LocalVm, build: Path, cell: CellLog) -> Iterator[BootedGuest]:
        """The VM is started for the run's first cell on this host and serves the
        next ones (after a failed boot, once the reset brought it back)."""
        running = self._running_vm(vm, cell.logs)
        machine = local_vm.VmMachine(self.spec, running.vm, running.session, running.default)
        try:
            yield install_and_boot(
                running.session, machine, cell, build, self.detail.boot_method,
                self.detail.keep_kernels,
                lambda: hvlab_initrd(self.env, build,
                                     cell.logs / f"initrd-{self.spec.name}.cpio.gz"))
        finally:
            running.session.close()

    def _running_vm(self, vm: LocalVm, logs: Path) -> local_vm.Running:
        if self._vm is not None:
            if self._vm.answers():
                return self._vm
            self.env.info(f"VM {self.spec.name} does not answer after the last cell: "
                          "starting it again from a clean overlay")
            self.close()
        self._vm = local_vm.Running.start(self.env.ws, self.spec, vm, logs, self.env.info)
        return self._vm

    def close(self) -> None:
        if self._vm is not None:
            self._vm.stop()
            self._vm = None

    @contextmanager
    def guest(self) -> Iterator[SshSession]:
        if self.detail.vm is not None:
            raise UserError(f"host '{self.spec.name}' is a VM hvlab starts for each run: no "
                            "guest runs there now (inv test --host boots and judges one)")
        session = open_session(self.env.config, self.spec.name)
        try:
            session.connect()
            yield session
        finally:
            close_chain(session)

    def check(self) -> TestCase:
        if self.detail.vm is not None:  # the VM on its default kernel, for this check only
            t0 = time.monotonic()
            try:
                running = local_vm.Running.start(self.env.ws, self.spec, self.detail.vm, None,
                                                 self.env.info)
                try:
                    facts = running.session.check(["sh", "-c", "uname -sr; . /etc/os-release "
                                                   "&& echo \"$PRETTY_NAME\""], timeout=30)
                finally:
                    running.stop()
            except HvlabError as exc:
                return check_failed(self.spec.name, str(exc), time.monotonic() - t0)
            return TestCase(f"host: {self.spec.name}", Status.PASS,
                            output="; ".join(facts.split("\n")).strip("; ") + "\n",
                            duration=time.monotonic() - t0,
                            properties={"host_key": "verified", "where": "local VM"})
        return check_ssh(self.env, self.spec.name, self.spec.name)


def check_ssh(env: HostEnv, label: str, name: str) -> TestCase:
    """Connect to ssh host ``name`` (the host itself, or where a qemu host runs)."""
    session = open_session(env.config, name)
    t0 = time.monotonic()
    try:
        session.connect()
        facts = session.check(["sh", "-c", "uname -sr; . /etc/os-release 2>/dev/null && "
                               "echo \"$PRETTY_NAME\"; df -Pk /boot / | tail -n +2"], timeout=30)
    except HvlabError as exc:
        return check_failed(label, str(exc), time.monotonic() - t0)
    finally:
        close_chain(session)
    lines = facts.strip().splitlines()
    free = [f"{cols[5]} {int(cols[3]) // 1024} MiB free" for cols in
            (line.split() for line in lines[2:]) if len(cols) >= 6 and cols[3].isdigit()]
    summary = f"{lines[0] if lines else '?'}; {lines[1] if len(lines) > 1 else '?'}; " + \
        ", ".join(free)
    return TestCase(f"host: {label}", Status.PASS, output=summary + "\n",
                    duration=time.monotonic() - t0,
                    properties={"host_key": "verified", "where": session.where})
