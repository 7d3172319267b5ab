#!/usr/bin/env python3
"""Boot requested -> first command answered: hvlab vs a plain script.

Both boot the same prebuilt Debian kernel with the same initramfs and the same
QEMU command line (TCG); the plain script polls SSH with paramiko until
``uname -r`` answers.  hvlab's time is its whole boot call (guest image from
cache, initrd assembly, QEMU start, console watch, SSH with host key pinned,
release check, dmesg scan).  Goal: hvlab / plain <= 1.1 (median of 3 each).

Usage: bench/boot_latency.py [ARCH]: x86_64 (default) boots this machine's
/boot/vmlinuz-*; arm64 boots Debian's arm64 kernel package (downloaded and
unpacked by hvlab.boot.debroot) under qemu-system-aarch64 -M virt, with the
arm64 guest image.
"""

from __future__ import annotations

import glob
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import boot_until_release
from hvlab.boot import debroot, guest_image
from hvlab.boot.verify import BootTarget
from hvlab.build.arches import ARCH_TABLE
from hvlab.hosts.qemu import boot_qemu
from hvlab.hosts.qemu_guest import QemuGuest, free_port
from hvlab.model import HostSpec, QemuHost
from hvlab.workspace import Workspace

RUNS = 3
ARCH = sys.argv[1] if len(sys.argv) > 1 else "x86_64"
ws = Workspace.from_env(Path(__file__).resolve().parent.parent)
if ARCH == "x86_64":
    root = Path("/")
else:
    root = debroot.unpacked(ws, ARCH_TABLE[ARCH], ["linux-image-" + ARCH_TABLE[ARCH].debian_arch])
vmlinuz = Path(sorted(glob.glob(str(root / "boot" / "vmlinuz-*")))[-1])
release = vmlinuz.name.removeprefix("vmlinuz-")
image = guest_image.build_image(ws, arch=ARCH_TABLE[ARCH])
host = HostSpec("bench", Path("bench.yaml"), "qemu", QemuHost(memory=1024, cpus=2),
                boot_timeout=300, arch=ARCH)


def hvlab_once(tmp: Path) -> float:
    mods = guest_image.write_modules_archive(
        guest_image.modules_from_tree(root, release, guest_image.GUEST_MODULES),
        tmp / "mods.cpio.gz")
    t0 = time.monotonic()
    outcome = boot_qemu(ws, host, BootTarget(vmlinuz, release, mods, "bench"), tmp,
                        lambda m: None)
    took = time.monotonic() - t0
    if outcome.session:
        outcome.session.close()
    outcome.guest.stop()
    if outcome.stage.status.value != "pass":
        sys.exit(f"hvlab boot failed: {outcome.stage}")
    return took


def plain_once(tmp: Path) -> float:
    mods = guest_image.write_modules_archive(
        guest_image.modules_from_tree(root, release, guest_image.GUEST_MODULES),
        tmp / "mods.cpio.gz")
    initrd = guest_image.combined_initrd(image, mods, tmp / "initrd")
    guest = QemuGuest(host, tmp, vmlinuz, initrd, "")
    guest.port = free_port()
    argv = guest.argv("tcg")
    key = paramiko.Ed25519Key.from_private_key_file(str(image.client_key))
    return boot_until_release(argv, guest.port, key, release)


hv, raw = [], []
for _ in range(RUNS):
    with tempfile.TemporaryDirectory() as a:
        raw.append(plain_once(Path(a)))
    with tempfile.TemporaryDirectory() as b:
        hv.append(hvlab_once(Path(b)))
h, p = statistics.median(hv), statistics.median(raw)
print(f"boot_latency {ARCH} (median of {RUNS}): hvlab {h:.2f} s {[round(x, 2) for x in hv]}, "
      f"plain script {p:.2f} s {[round(x, 2) for x in raw]}")
print("goal: <= 1.1")
print(f"ratio: {h / p:.3f}")
