"""Guests of every arch: a kernel image's arch read from its header (recorded
Debian images), a foreign sshd's libraries from readelf (recorded), the QEMU
command line per arch, the private apt configuration, and a qemu host
refusing a kernel of another arch."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import pytest

from hvlab.boot.debroot import apt_config
from hvlab.boot.guest_image import elf_needs
from hvlab.boot.imagearch import image_arch
from hvlab.build.arches import ARCH_TABLE, machine_arch
from hvlab.errors import UserError
from hvlab.hosts.qemu import refuse_other_arch
from hvlab.hosts.qemu_guest import qemu_argv
from hvlab.model import HostKind, HostSpec, QemuHost

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data"


def test_recorded_debian_kernels_say_their_arch() -> None:
    heads = DATA / "kernel-headers"
    assert image_arch((heads / "vmlinuz-6.1.0-57-amd64.head").read_bytes()) == "x86_64"
    assert image_arch((heads / "vmlinuz-6.1.0-57-arm64.head").read_bytes()) == "arm64"


def test_header_fields_decide_between_x86_64_i386_and_arm64() -> None:
    bz = bytearray(0x240)
    bz[0x202:0x206] = b"HdrS"
    assert image_arch(bytes(bz)) == "i386"  # XLF_KERNEL_64 clear
    struct.pack_into("<H", bz, 0x236, 1)
    assert image_arch(bytes(bz)) == "x86_64"
    arm = bytearray(64)
    arm[0x38:0x3C] = b"ARM\x64"
    assert image_arch(bytes(arm)) == "arm64"
    assert image_arch(gzip.compress(bytes(arm))) == "arm64"
    assert image_arch(b"\x7fELF" + bytes(600)) is None  # a vmlinux is no boot image
    assert image_arch(b"\x1f\x8bnot gzip") is None


def test_readelf_of_a_foreign_sshd_gives_its_loader_and_libraries() -> None:
    interp, needed = elf_needs((DATA / "readelf" / "sshd-bookworm-arm64.txt").read_text())
    assert interp == "/lib/ld-linux-aarch64.so.1"
    assert needed[0] == "libcrypt.so.1" and "libc.so.6" in needed and len(needed) == 13
    assert elf_needs("Elf file type is EXEC\n") == (None, [])  # a static busybox


def test_qemu_command_line_per_arch() -> None:
    x86 = qemu_argv(QemuHost(), ARCH_TABLE["x86_64"], "tcg", "k", "i", "", "c.log", 2222)
    assert x86[:3] == ["qemu-system-x86_64", "-M", "pc"] and "max" in x86
    assert any(a.startswith("console=ttyS0,115200 ") for a in x86)
    arm = qemu_argv(QemuHost(), ARCH_TABLE["arm64"], "tcg", "k", "i", "", "c.log", 2222)
    assert arm[:3] == ["qemu-system-aarch64", "-M", "virt"]
    assert arm[arm.index("-cpu") + 1] == "max,pauth-impdef=on"
    assert any(a.startswith("console=ttyAMA0,115200 ") for a in arm)
    assert "virtio-net-pci,netdev=n0,romfile=" in arm
    kvm = qemu_argv(QemuHost(), ARCH_TABLE["arm64"], "kvm", "k", "i", "", "c", 1)
    assert kvm[kvm.index("-cpu") + 1] == "host"  # -M virt's default CPU is 32-bit


def test_private_apt_state_resolves_the_guests_arch_only(tmp_path: Path) -> None:
    conf = apt_config(tmp_path, ARCH_TABLE["arm64"])
    assert 'APT::Architecture "arm64";' in conf
    assert 'APT::Architectures { "arm64"; };' in conf
    assert f'Dir::State::status "{tmp_path}/state/status";' in conf  # never the machine's
    assert 'APT::Install-Recommends "false";' in conf
    assert machine_arch("aarch64") == ARCH_TABLE["arm64"]
    assert machine_arch("x86_64") == ARCH_TABLE["x86_64"]


def test_a_qemu_host_refuses_a_kernel_of_another_arch(tmp_path: Path) -> None:
    host = HostSpec("qa", tmp_path / "qa.yaml", HostKind.QEMU, QemuHost(), arch="arm64")
    x86 = tmp_path / "bzImage"
    x86.write_bytes((DATA / "kernel-headers" / "vmlinuz-6.1.0-57-amd64.head").read_bytes())
    with pytest.raises(UserError, match=r"host 'qa' boots arm64 kernels \(arch: arm64 in "
                       r"qa.yaml\); bzImage is an x86_64 kernel"):
        refuse_other_arch(host, x86)
    arm = tmp_path / "Image"
    arm.write_bytes((DATA / "kernel-headers" / "vmlinuz-6.1.0-57-arm64.head").read_bytes())
    refuse_other_arch(host, arm)  # its own arch: no complaint
    refuse_other_arch(dataclasses.replace(host, arch="x86_64"), x86)


def test_a_foreign_binary_readelf_cannot_read_or_whose_loader_is_missing_is_named(
        tmp_path: Path) -> None:
    from hvlab.boot.guest_image import _foreign_libraries
    from hvlab.errors import InfraError

    (tmp_path / "usr" / "sbin").mkdir(parents=True)
    (tmp_path / "usr" / "sbin" / "sshd").write_text("not an ELF file\n")
    with pytest.raises(InfraError, match="readelf cannot read /usr/sbin/sshd of the arm64"):
        _foreign_libraries(tmp_path, ARCH_TABLE["arm64"], "/usr/sbin/sshd")
    # a real ELF file (this machine's true) whose loader no unpacked package has
    (tmp_path / "usr" / "bin").mkdir()
    (tmp_path / "usr" / "bin" / "true").write_bytes(Path("/bin/true").read_bytes())
    with pytest.raises(InfraError, match=r"/usr/bin/true of the arm64 guest needs /lib.*ld-linux"
                                         r".*, which no unpacked package has"):
        _foreign_libraries(tmp_path, ARCH_TABLE["arm64"], "/usr/bin/true")
