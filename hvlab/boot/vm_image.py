"""The Debian 12 disk image that hvlab's installed VMs boot from.

A real install, made without loop devices or mounts so that it works in a
container or CI: ``mmdebstrap`` builds the root from the Debian mirror apt
uses, ``mke2fs -d`` fills the ext4 root partition from it, ``mkfs.vfat`` and
``mtools`` make the EFI system partition with grub at the removable-media
path, and ``sgdisk`` writes the GPT.  The VM then boots once by itself
(OVMF, grub, the distro kernel and initramfs, systemd): the image's own
``update-grub`` writes its grub.cfg and the VM powers off.  That first boot
is also the image's self-test.

The image holds a generated SSH host key that hvlab pins and hvlab's client
key for root.  It is cached under ``kernels/images/`` by its inputs; a VM
never writes it (each start gets a qcow2 overlay).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvlab.errors import InfraError
from hvlab.hosts.disk_vm import DiskVm
from hvlab.locks import FileLock
from hvlab.proc import capture, require_tool, run
from hvlab.workspace import Workspace

IMAGE_FORMAT = "hvlab-vm-1"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "grub-efi-amd64",
    "initramfs-tools", "linux-image-amd64", "kexec-tools", "hyperv-daemons", "iproute2",
    "procps", "kmod", "e2fsprogs", "ethtool",
)
# Kernel modules no test VM loads (sound, wireless, media, ...): a third of the
# distro kernel's size, left out of the image.
EXCLUDED = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
    "/usr/lib/modules/*/kernel/sound/*", "/usr/lib/modules/*/kernel/drivers/media/*",
    "/usr/lib/modules/*/kernel/drivers/net/wireless/*", "/usr/lib/modules/*/kernel/net/wireless/*",
    "/usr/lib/modules/*/kernel/drivers/infiniband/*", "/usr/lib/modules/*/kernel/drivers/staging/*",
    "/usr/lib/modules/*/kernel/drivers/isdn/*", "/usr/lib/modules/*/kernel/drivers/bluetooth/*",
    "/usr/lib/modules/*/kernel/net/bluetooth/*",
)
ROOT_SIZE_MIB = 4096
ESP_SIZE_MIB = 64
FIRST_BOOT_TIMEOUT = 900
FIRST_BOOT_DONE = "hvlab-firstboot: grub.cfg written"

# What the install adds to Debian's defaults; each file says why.
FILES: dict[str, str] = {
    "etc/default/grub.d/hvlab.cfg": (
        "# hvlab: the serial console (the run's log) and a short menu timeout;\n"
        "# saved: hvlab keeps the default on the distro kernel (hosts/bootloader.py)\n"
        "GRUB_DEFAULT=saved\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"\n'
        'GRUB_TERMINAL="serial console"\n'
        'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
        "GRUB_TIMEOUT=1\n"
        "GRUB_DISABLE_OS_PROBER=true\n"),
    "etc/initramfs-tools/conf.d/hvlab.conf": (
        "# hvlab: gzip, which every test kernel can unpack (zstd needs RD_ZSTD)\n"
        "COMPRESS=gzip\n"),
    "etc/ssh/sshd_config.d/hvlab.conf": (
        "# hvlab: one host key (the one hvlab pins), keys only\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"),
    "etc/systemd/network/80-hvlab-dhcp.network": (
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n"),
    "etc/systemd/system.conf.d/hvlab.conf": (
        "# hvlab: systemd arms the hardware watchdog (q35's iTCO) at every reboot\n"
        "# (RebootWatchdogSec=10min); a test kernel without iTCO_wdt never pets it\n"
        "# and the VM would reset under its suites.  No watchdog here.\n"
        "[Manager]\nRebootWatchdogSec=0\nRuntimeWatchdogSec=0\n"),
    "etc/hostname": "hvlab-vm\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 hvlab-vm\n",
    "etc/systemd/system/hvlab-firstboot.service": (
        "# hvlab: the image's first boot writes grub.cfg with the distro's own\n"
        "# update-grub, then powers off (see hvlab/boot/vm_image.py)\n"
        "[Unit]\nDescription=hvlab image first boot\n"
        "ConditionPathExists=!/var/lib/hvlab-firstboot-done\n"
        "After=local-fs.target\n\n"
        "[Service]\nType=oneshot\nStandardOutput=journal+console\n"
        "ExecStart=/usr/sbin/update-grub\n"
        "ExecStart=/usr/bin/touch /var/lib/hvlab-firstboot-done\n"
        f"ExecStart=/bin/echo {FIRST_BOOT_DONE}\n"
        "ExecStart=/usr/bin/systemctl --no-block poweroff\n\n"
        "[Install]\nWantedBy=multi-user.target\n"),
}
# kexec-tools' kexec-load would turn every reboot into a kexec of the default
# kernel, past grub and its one-shot entry: masked (hvlab runs kexec itself).
CUSTOMIZE = ("chroot \"$1\" systemctl enable systemd-networkd.service "
             "hvlab-firstboot.service && chroot \"$1\" systemctl mask kexec-load.service "
             "kexec.service")
GRUB_MODULES = ("part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_uuid",
                "normal", "configfile", "linux", "gzio", "echo", "all_video", "serial",
                "terminal", "loadenv", "test", "efi_gop")


@dataclass(frozen=True)
class VmImage:
    disk: Path  # qcow2, never written by a VM
    client_key: Path
    host_key_fingerprint: str
    default_release: str  # the distro kernel the image boots by default
    facts: dict[str, str]


def _digest(mirror: str) -> str:
    h = hashlib.sha256(IMAGE_FORMAT.encode())
    for part in (SUITE, mirror, *PACKAGES, *EXCLUDED, CUSTOMIZE, *GRUB_MODULES,
                 str(ROOT_SIZE_MIB), str(ESP_SIZE_MIB)):
        h.update(part.encode() + b"\0")
    for name, text in sorted(FILES.items()):
        h.update(f"{name}\0{text}\0".encode())
    return h.hexdigest()[:16]


def image_folder(ws: Workspace, mirror: str = DEFAULT_MIRROR) -> Path:
    return ws.kernels / "images" / f"vm-debian12-{_digest(mirror)}"


def load(folder: Path) -> VmImage | None:
    meta = folder / "image.json"
    if not (folder / "disk.qcow2").is_file() or not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    return VmImage(folder / "disk.qcow2", folder / "client_key", data["host_key_fingerprint"],
                   data["default_release"], {k: str(v) for k, v in data.items()})


def build_image(ws: Workspace, force: bool = False, mirror: str = DEFAULT_MIRROR,
                info: Callable[[str], None] = lambda _m: None) -> VmImage:
    """The image, built on first use (a few minutes) and cached by its inputs."""
    folder = image_folder(ws, mirror)
    with FileLock(ws.locks / "vm-image.lock", "the VM image", timeout=3600, wait=True):
        found = None if force else load(folder)
        if found is not None:
            return found
        for tool in ("mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy", "sgdisk", "qemu-img",
                     "ssh-keygen"):
            require_tool(tool)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".vm-image-", dir=folder.parent))
        try:
            image = _build(tmp, mirror, info)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result = load(folder)
        assert result is not None and image.host_key_fingerprint == result.host_key_fingerprint
        return result


def _check(argv: list[str], log: Path, what: str, timeout: float = 1800) -> None:
    done = run(argv, log=log, timeout=timeout)
    if done.returncode != 0:
        raise InfraError(f"VM image: {what} failed (exit {done.returncode}); see {log}: "
                         f"{done.output.strip().splitlines()[-1] if done.output.strip() else ''}")


def _build(tmp: Path, mirror: str, info: Callable[[str], None]) -> VmImage:
    log = tmp / "build.log"
    root = tmp / "root"
    files = tmp / "files"
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",  # noqa: S603
                        f"hvlab-vm-{name}", "-f", str(tmp / name)], check=True)
    for name, text in FILES.items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_text(text)
    ssh = files / "etc/ssh"
    shutil.copyfile(tmp / "host_key", ssh / "ssh_host_ed25519_key")
    os.chmod(ssh / "ssh_host_ed25519_key", 0o600)
    shutil.copyfile(tmp / "host_key.pub", ssh / "ssh_host_ed25519_key.pub")
    (files / "root/.ssh").mkdir(parents=True)
    os.chmod(files / "root", 0o700)
    shutil.copyfile(tmp / "client_key.pub", files / "root/.ssh/authorized_keys")
    root_uuid, esp_serial = str(uuid.uuid4()), uuid.uuid4().hex[:8].upper()
    (files / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")

    info(f"VM image: Debian {SUITE} root from {mirror} (mmdebstrap)")
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
            f"--include={','.join(PACKAGES)}", "--aptopt=Acquire::Languages \"none\"",
            *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDED),
            # our files first: openssh-server then keeps the pinned host key
            f"--setup-hook=sync-in {files} /",
            f"--customize-hook=sync-in {files} /",
            f"--customize-hook={CUSTOMIZE}",
            SUITE, str(root), mirror]
    _check(argv, log, "mmdebstrap", timeout=3600)
    release = _default_release(root)

    info("VM image: grub for UEFI, the ext4 root and the EFI system partition")
    grub_dir = root / "boot/grub"
    shutil.copytree(root / "usr/lib/grub/x86_64-efi", grub_dir / "x86_64-efi",
                    dirs_exist_ok=True)
    (root / "tmp/early.cfg").write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n")
    _check(["chroot", str(root), "grub-mkimage", "-O", "x86_64-efi", "-p", "/boot/grub",
            "-c", "/tmp/early.cfg", "-o", "/tmp/BOOTX64.EFI", *GRUB_MODULES], log, "grub-mkimage")
    _check(["chroot", str(root), "grub-editenv", "/boot/grub/grubenv", "create"], log,
           "grub-editenv")
    # Replaced at the first boot by the image's own update-grub.
    (grub_dir / "grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_input serial console\n"
        "terminal_output serial console\nset timeout=0\n"
        f"menuentry 'Debian GNU/Linux (hvlab first boot)' {{\n"
        f"  linux /boot/vmlinuz-{release} root=UUID={root_uuid} ro console=ttyS0,115200\n"
        f"  initrd /boot/initrd.img-{release}\n}}\n")
    efi = tmp / "BOOTX64.EFI"
    shutil.move(root / "tmp/BOOTX64.EFI", efi)
    (root / "tmp/early.cfg").unlink()

    rootfs, esp, raw = tmp / "root.ext4", tmp / "esp.vfat", tmp / "disk.raw"
    _check(["mke2fs", "-q", "-t", "ext4", "-d", str(root), "-U", root_uuid, "-L", "hvlab-root",
            str(rootfs), f"{ROOT_SIZE_MIB}M"], log, "mke2fs -d")
    shutil.rmtree(root)
    _check(["mkfs.vfat", "-i", esp_serial, "-n", "ESP", "-C", str(esp),
            str(ESP_SIZE_MIB * 1024)], log, "mkfs.vfat")
    for d in ("::/EFI", "::/EFI/BOOT"):
        _check(["mmd", "-i", str(esp), d], log, "mmd")
    _check(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], log, "mcopy")
    sector = 512
    esp_start = 2048
    root_start = esp_start + ESP_SIZE_MIB * 2048
    total = root_start + ROOT_SIZE_MIB * 2048 + 2048
    with raw.open("wb") as fh:
        fh.truncate(total * sector)
    # (not -q: sgdisk 1.0.9 then leaves the new table unwritten)
    _check(["sgdisk", "-n", f"1:{esp_start}:+{ESP_SIZE_MIB}M", "-t", "1:ef00",
            "-c", "1:EFI system partition", "-n", f"2:{root_start}:+{ROOT_SIZE_MIB}M",
            "-t", "2:8304", "-c", "2:root", str(raw)], log, "sgdisk")
    table = capture(["sgdisk", "-p", str(raw)]).stdout.decode()
    if "EF00" not in table or "8304" not in table:
        raise InfraError(f"VM image: sgdisk wrote no partition table to {raw}: {table[-300:]}")
    _copy_into(esp, raw, esp_start * sector)
    _copy_into(rootfs, raw, root_start * sector)
    rootfs.unlink()
    esp.unlink()
    disk = tmp / "disk.qcow2"
    _check(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], log,
           "qemu-img convert")
    raw.unlink()

    info("VM image: first boot (update-grub inside the VM, then power-off)")
    _first_boot(tmp, disk)
    fingerprint = capture(["ssh-keygen", "-l", "-E", "sha256", "-f",
                           str(tmp / "host_key.pub")]).stdout.decode().split()[1]
    facts = {"format": IMAGE_FORMAT, "suite": SUITE, "mirror": mirror,
             "default_release": release, "host_key_fingerprint": fingerprint,
             "root_uuid": root_uuid, "packages": " ".join(PACKAGES),
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tmp / "image.json").write_text(json.dumps(facts, indent=1) + "\n")
    shutil.rmtree(files)  # the private host key lives on only inside the image
    (tmp / "host_key").unlink()
    efi.unlink()
    return VmImage(disk, tmp / "client_key", fingerprint, release, facts)


def _default_release(root: Path) -> str:
    found = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise InfraError(f"VM image: expected one distro kernel in /boot, found {found}")
    return found[0]


def _copy_into(part: Path, disk: Path, offset: int) -> None:
    """``part`` written into ``disk`` at ``offset``, keeping holes (both sparse)."""
    chunk = 1 << 20
    zero = bytes(chunk)
    with part.open("rb") as src, disk.open("r+b") as dst:
        pos = 0
        while True:
            data = src.read(chunk)
            if not data:
                break
            if data != zero[:len(data)]:
                dst.seek(offset + pos)
                dst.write(data)
            pos += len(data)


def _first_boot(tmp: Path, disk: Path) -> None:
    vm = DiskVm("image", disk, tmp / "firstboot", snapshot=False)
    vm.start()
    try:
        if not vm.wait_exit(FIRST_BOOT_TIMEOUT):
            raise InfraError(f"VM image: the first boot did not power off within "
                             f"{FIRST_BOOT_TIMEOUT} s; console: {vm.console_tail()}")
    finally:
        vm.stop()
    if not any(FIRST_BOOT_DONE in line for line in vm.console_lines()):
        raise InfraError(f"VM image: the first boot stopped before update-grub finished; "
                         f"console: {vm.console_tail()}")
    shutil.copyfile(vm.console, tmp / "firstboot.log")
    shutil.rmtree(tmp / "firstboot", ignore_errors=True)

