"""A simulated Hyper-V host for tests: a real sshd whose ForceCommand is
tests/hyperv_sim.py, and a VM whose QEMU guest runs in a network namespace
made for the test, at the address the simulator reports as the VM's IP.

The VM is either a disk VM (``disk=True``), which boots the Debian image of
``inv image.vm`` from its own virtual disk through UEFI and grub, as a Gen2
VM boots, or a direct-boot VM (hvlab's initramfs and this machine's kernel),
which boots in seconds for the tests whose subject is the PowerShell and SSH
conversation rather than the boot path."""

from __future__ import annotations

import fcntl
import glob
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvlab.boot import guest_image, vm_image
from hvlab.errors import InfraError
from hvlab.hosts.hyperv.client import HypervClient
from hvlab.model import SshEndpoint
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace
from tests.hyperv_sim import new_vm, take_checkpoint
from tests.sshd import Sshd, free_subnet, netns, sshd

SIM = Path(__file__).with_name("hyperv_sim.py")


@dataclass
class Lab:
    state: Path
    server: Sshd
    vm: str
    ip: str
    guest_key: Path
    guest_host_key: str
    kernel: Path  # a direct-boot VM's kernel; a disk VM's disk
    release: str  # what the VM boots by default
    netns: str = ""  # the namespace the VM's network lives in

    def link(self, up: bool) -> None:
        """Cut (or restore) the VM's network: its veth pair's outer end."""
        subprocess.run(["ip", "link", "set", f"v{self.netns[-10:]}a", "up" if up else "down"],
                       check=True)

    def data(self) -> dict[str, Any]:
        return json.loads((self.state / "state.json").read_text())

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        with (self.state / "state.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.data()
            change(data)
            (self.state / "state.json").write_text(json.dumps(data, indent=1))

    def vm_state(self) -> dict[str, Any]:
        return dict(self.data()["vms"][self.vm])

    def calls(self) -> list[str]:
        return [c["cmdlet"] for c in self.data().get("calls", [])]

    @contextmanager
    def client(self) -> Iterator[HypervClient]:
        """hvlab's PowerShell client on this host, over a verified SSH session."""
        windows = SshSession("win", SshEndpoint(self.server.address, self.server.port, "root",
                                                self.server.client_key,
                                                host_key=self.server.fingerprint))
        try:
            yield HypervClient(windows, "win", self.vm)
        finally:
            windows.close()

    def guest(self) -> SshSession:
        """A session to the VM's guest (not yet connected)."""
        return SshSession("guest", SshEndpoint(self.ip, 22, "root", self.guest_key,
                                               host_key=self.guest_host_key,
                                               connect_timeout=5))

    @staticmethod
    def connect(guest: SshSession, timeout: float) -> None:
        """Connect ``guest``, trying again until ``timeout`` (its sshd may be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                guest.connect()
                return
            except InfraError:
                assert time.monotonic() < deadline, f"the guest never answered SSH: {guest.name}"
                guest.close()
                time.sleep(1)

    def in_guest(self, *commands: list[str], timeout: float = 300) -> list[str]:
        """Boot the VM (Secure Boot off, and left off), run ``commands`` in its
        guest, then shut it down cleanly: what a test needs the VM's disk to hold
        before a run.  Returns their outputs."""
        with self.client() as client:
            guest = self.guest()
            try:
                client.set_secure_boot(False)
                client.start()
                client.wait_ipv4(timeout)
                self.connect(guest, timeout)
                outputs = [guest.check(argv, timeout=120) for argv in commands]
                guest.run(["systemctl", "poweroff"], timeout=30)
                deadline = time.monotonic() + timeout
                while client.vm_info().state != "Off":
                    assert time.monotonic() < deadline, "the guest did not power off"
                    time.sleep(1)
                return outputs
            finally:
                guest.close()
                client.turn_off()  # a VM already off is left alone

    def host_yaml(self, **keys: object) -> str:
        """configs/hosts/<name>.yaml for this lab; ``keys`` override or add."""
        fields: dict[str, object] = {"boot_timeout": 120, "ip_timeout": 120}
        fields.update(keys)
        guest = fields.pop("guest", {})
        assert isinstance(guest, dict)
        g = {"user": "root", "key": str(self.guest_key), "host_key": self.guest_host_key,
             **guest}
        lines = ["kind: hyperv",
                 f"hyperv_host: {{address: {self.server.address}, port: {self.server.port}, "
                 f"user: root, key: {self.server.client_key}, "
                 f"host_key: '{self.server.fingerprint}'}}",
                 f"vm: {fields.pop('vm', self.vm)}",
                 "guest: {" + ", ".join(f"{k}: {v}" for k, v in g.items()) + "}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        return "\n".join(lines) + "\n"


def default_kernel() -> Path:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    assert kernels, "no /boot/vmlinuz-*: run ci/setup.sh (linux-image-amd64)"
    return Path(kernels[-1])


# A disk VM's guest is up once its getty asks for a login on the serial console
# (standing in for the KVP daemon, which needs VMBus); the image's hostname.
DISK_READY = "hvlab-vm login:"


@contextmanager
def hyperv_lab(tmp: Path, ws: Workspace, vm: str = "linux-gen2-01", disk: bool = False,
               **vm_keys: Any) -> Iterator[Lab]:
    """A simulated Hyper-V host with one generation 2 VM that has a checkpoint
    'clean' of its first state."""
    n = free_subnet()
    name = f"hvs{n}{secrets.token_hex(3)}"  # unique: netns() first deletes its namesake
    ip = f"10.{n}.77.2"
    state = tmp / "hvsim"
    state.mkdir(parents=True)
    if disk:
        vimage = vm_image.build_image(ws)
        vdisk = state / "vms" / vm / "disk.qcow2"  # the simulator's own VM folder
        vdisk.parent.mkdir(parents=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(vimage.disk.resolve()), str(vdisk)], check=True)
        entry = new_vm("", "", ip, name, DISK_READY, disk=str(vdisk), memory=1024, cpus=2,
                       **vm_keys)
        keys, kernel, release = ((vimage.client_key, vimage.host_key_fingerprint), vdisk,
                                 vimage.default_release)
    else:
        kernel = default_kernel()
        release = kernel.name.removeprefix("vmlinuz-")
        image = guest_image.build_image(ws)
        mods = guest_image.write_modules_archive(
            guest_image.modules_from_tree(Path("/"), release, guest_image.GUEST_MODULES),
            tmp / "vm-modules.cpio.gz")
        initrd = guest_image.combined_initrd(image, mods, tmp / "vm-initrd")
        entry = new_vm(str(kernel), str(initrd), ip, name, guest_image.READY, **vm_keys)
        keys = (image.client_key, image.host_key_fingerprint)
    entry["checkpoints"] = {"clean": take_checkpoint(entry, "clean")}
    (state / "state.json").write_text(json.dumps({
        "host": {"build": "20348", "caption": "Microsoft Windows Server 2022 Datacenter",
                 "hyperv": "2.0.0.0"},
        "vms": {vm: entry}}, indent=1))
    with netns(name, f"{ip}/30", f"10.{n}.77.1/30"), \
            sshd(tmp / "windows-sshd",
                 extra=f"ForceCommand {sys.executable} {SIM} --state {state}\n") as server:
        try:
            yield Lab(state, server, vm, ip, keys[0], keys[1], kernel, release, name)
        finally:
            subprocess.run([sys.executable, str(SIM), "--state", str(state), "cleanup"],
                           check=False)
