"""An ``ssh`` host whose machine is an installed VM hvlab starts here
(``vm:`` in the host file): QEMU with OVMF on a clean overlay of the disk
image ``inv image.vm`` builds.  Everything after the start is the ssh kind's
real path (install into /boot, the distro's initramfs, a one-shot boot
loader entry, reboot, verify); the VM only adds what a lab's power switch
and serial concentrator give: a hard reset through QMP and the console.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hvlab import cancel, procs
from hvlab.boot import vm_image
from hvlab.config.shape import Field, Shape
from hvlab.errors import InfraError
from hvlab.hosts.disk_vm import DISK_BUSES, DiskVm
from hvlab.model import HostSpec, LocalVm, SshEndpoint
from hvlab.results import TestCase
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace

if TYPE_CHECKING:
    from hvlab.config.reader import MapReader

IMAGES = ("debian-12",)
# What the host file must not set beside vm: (hvlab owns them for its VM).
OWNED = ("address", "port", "user", "key", "password_env", "host_key", "known_hosts",
         "host_key_policy", "via", "power_cycle", "console")
SHAPE = Shape({
    "image": Field("enum", "the disk image inv image.vm builds", choices=IMAGES),
    "memory": Field("integer", "memory in MiB (default 1024)", minimum=256, maximum=65536),
    "cpus": Field("integer", "CPUs (default 2)", minimum=1, maximum=64),
    "disk_bus": Field("enum", "how the root disk is attached (default virtio)",
                      choices=DISK_BUSES),
    "accel": Field("enum", "tcg (default) or kvm", choices=("tcg", "kvm")),
})


def read_vm(r: MapReader) -> LocalVm:
    return LocalVm(
        image=r.enum("image", IMAGES, default="debian-12") or "debian-12",
        memory=r.integer("memory", 1024, 256, 65536),
        cpus=r.integer("cpus", 2, 1, 64),
        disk_bus=r.enum("disk_bus", DISK_BUSES, default="virtio") or "virtio",
        accel=r.enum("accel", ("tcg", "kvm"), default="tcg") or "tcg",
    )


@dataclass
class Running:
    """A started VM with SSH up on its default kernel: its files (overlay,
    firmware variables, QEMU log) under ``kernels/run/vms/``, its console in
    the logs of the cell that started it."""

    vm: DiskVm
    session: SshSession
    default: str  # the distro kernel it boots by default
    workdir: Path

    @classmethod
    def start(cls, ws: Workspace, spec: HostSpec, cfg: LocalVm, logs: Path | None,
              info: Callable[[str], None]) -> Running:
        """``logs``: where the console goes (None: with the VM's files, removed
        at the end; a failure to start names its last lines anyway)."""
        image = vm_image.build_image(ws, info=info)
        vms = ws.kernels / "run" / "vms"
        _remove_dead(vms)
        workdir = vms / f"{spec.name}-{procs.space_tag()}-{os.getpid()}-{time.monotonic_ns()}"
        machine = DiskVm(spec.name, image.disk, workdir, cfg.memory, cfg.cpus, cfg.disk_bus,
                         cfg.accel,
                         console_path=logs / f"console-{spec.name}.log" if logs else None)
        info(f"starting VM {spec.name}: UEFI, {cfg.disk_bus} disk, a clean overlay on "
             f"{ws.display(image.disk)}")
        try:
            machine.start()
            ep = SshEndpoint("127.0.0.1", machine.port, "root", image.client_key,
                             host_key=image.host_key_fingerprint, connect_timeout=5)
            session = SshSession(spec.name, ep)
            waited = wait_ssh(machine, session, spec.boot_timeout)
        except BaseException:
            machine.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        info(f"VM {spec.name} up on {image.default_release} after {waited:.0f} s")
        return cls(machine, session, image.default_release, workdir)

    def answers(self) -> bool:
        if not self.vm.alive():
            return False
        try:
            self.session.close()
            self.session.connect()
            return self.session.run(["true"], timeout=30).ok
        except InfraError:
            return False

    def stop(self) -> None:
        self.session.close()
        self.vm.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _remove_dead(vms: Path) -> None:
    """The files of VMs whose run was killed (their QEMU is gone with it)."""
    if not vms.is_dir():
        return
    tag = procs.space_tag()
    for left in vms.iterdir():
        parts = left.name.rsplit("-", 3)
        if len(parts) == 4 and parts[1] == tag and parts[2].isdigit() \
                and procs.start_time(int(parts[2])) is None:
            shutil.rmtree(left, ignore_errors=True)


def wait_ssh(vm: DiskVm, session: SshSession, timeout: float,
             old_boot_id: str | None = None) -> float:
    """Seconds until SSH answers (with a boot_id other than ``old_boot_id``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        vm.revive_if_stuck()
        if not vm.alive():
            raise InfraError(f"VM {vm.name}: QEMU stopped: {vm.exit_reason() or 'no reason'}; "
                             f"console: {vm.console_tail()}")
        if vm.ssh_ready():
            try:
                session.close()
                session.connect()
                boot = session.check(["cat", "/proc/sys/kernel/random/boot_id"],
                                     timeout=30).strip()
                if boot != old_boot_id:
                    return time.monotonic() - t0
            except InfraError:
                pass
        cancel.sleep(1)
    raise InfraError(f"VM {vm.name}: no SSH within {timeout:.0f} s; console: {vm.console_tail()}")



@dataclass
class VmMachine:
    """``oneshot.Machine`` for a VM hvlab started: the console is its serial
    port, a hang is answered with a hard reset through QMP, and the reset is
    only called a recovery when SSH answers again on a kernel hvlab did not
    install."""

    spec: HostSpec
    vm: DiskVm
    session: SshSession
    default_release: str
    name: str = ""
    boot_timeout: int = 0
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name, self.boot_timeout = self.spec.name, self.spec.boot_timeout
        self.properties = {"host_kind": "ssh", "machine": "local VM (QEMU, OVMF, disk)",
                           "disk_bus": self.vm.disk_bus}

    @property
    def console_log(self) -> Path:
        return self.vm.console

    def console_lines(self) -> list[str]:
        # polled while the new kernel is awaited: a restart stuck in the firmware
        # is powered off and on there
        self.vm.revive_if_stuck()
        return self.vm.console_lines()

    def recover(self, log: Path) -> str:
        t0 = time.monotonic()
        if not self.vm.reset():
            return "the hard reset through QMP failed (QEMU did not answer)"
        with log.open("a") as fh:
            fh.write("[hvlab] hard reset through QMP (system_reset)\n")
        try:
            wait_ssh(self.vm, self.session, self.boot_timeout)
            running = self.session.check(["uname", "-r"], timeout=30).strip()
        except InfraError as exc:
            return f"hard reset through QMP; it did not come back: {exc}"
        finally:
            self.session.close()
        took = time.monotonic() - t0
        if running != self.default_release:  # the fallback did not hold
            return (f"hard reset through QMP; it came back after {took:.0f} s on {running}, "
                    f"not on its default kernel {self.default_release}")
        return f"hard reset through QMP; back on its default kernel {running} after {took:.0f} s"

    def after_boot(self, session: SshSession) -> list[TestCase]:
        return []

    def address(self) -> str | None:
        return None


def refuse_owned(r: MapReader) -> None:
    """Keys that hvlab sets itself for its VM are an error in the host file."""
    for key in OWNED:
        if r.has(key):
            r.raw(key)
            r.error(key, "not with vm: (hvlab starts the VM and knows its address, keys "
                    "and console)")

