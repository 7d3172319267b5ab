"""The architectures and toolchains hvlab builds with, as data: one
declaration each (make's ``ARCH``, the image target and where kbuild leaves
it, the cross prefix and the Debian package that has it, the QEMU that boots
it and its console, the Debian arch of a guest's binaries), and per toolchain
the make variables and the commands it needs.  Pure: nothing here runs a tool."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # as configs/kernels/*.yaml say it
    make_arch: str  # ARCH=
    image_target: str
    image_path: str  # relative to the build directory
    triplet: str  # the GNU triplet of its cross compilers
    native: tuple[str, ...]  # `uname -m` of machines whose own gcc builds it
    gcc_package: str  # the Debian package of <triplet>-gcc
    qemu: str  # the QEMU system emulator that boots it
    qemu_package: str
    qemu_machine: str
    console: str  # the kernel's serial console device under that QEMU
    debian_arch: str  # dpkg's name for a guest's binaries
    srcarch: str = ""  # its directory under arch/
    qemu_cpu: str = "max"  # -cpu under TCG
    multiarch: str = ""  # Debian's multiarch library directory (lib/<this>)

    def cross_prefix(self, machine: str) -> str:
        """CROSS_COMPILE on a machine whose `uname -m` is ``machine``."""
        return "" if machine in self.native else f"{self.triplet}-"


ARCH_TABLE: dict[str, Arch] = {a.name: a for a in (
    Arch("x86_64", "x86_64", "bzImage", "arch/x86/boot/bzImage", "x86_64-linux-gnu",
         ("x86_64",), "gcc-x86-64-linux-gnu", "qemu-system-x86_64", "qemu-system-x86",
         "pc", "ttyS0", "amd64", srcarch="x86",
         multiarch="x86_64-linux-gnu"),
    Arch("arm64", "arm64", "Image", "arch/arm64/boot/Image", "aarch64-linux-gnu",
         ("aarch64", "arm64"), "gcc-aarch64-linux-gnu", "qemu-system-aarch64",
         "qemu-system-arm", "virt", "ttyAMA0", "arm64",
         # pointer authentication with QEMU's cheap hash: the architected one
         # (QARMA) costs TCG a large part of its speed
         srcarch="arm64", qemu_cpu="max,pauth-impdef=on", multiarch="aarch64-linux-gnu"),
    # an x86_64 gcc builds a 32-bit kernel itself (kbuild passes -m32; no libc)
    Arch("i386", "i386", "bzImage", "arch/x86/boot/bzImage", "i686-linux-gnu",
         ("x86_64", "i686", "i386"), "gcc-i686-linux-gnu", "qemu-system-i386",
         "qemu-system-x86", "pc", "ttyS0", "i386", srcarch="x86",
         multiarch="i386-linux-gnu"),
)}
ARCHES = tuple(ARCH_TABLE)


def machine_arch(machine: str) -> Arch | None:
    """The arch a machine whose `uname -m` is ``machine`` runs natively."""
    return next((a for a in ARCH_TABLE.values() if a.native[0] == machine), None)


def runs_here(arch: Arch) -> bool:
    """A guest of this machine's own arch: its binaries and KVM can serve it
    (a machine of an arch hvlab does not know serves none)."""
    native = machine_arch(os.uname().machine)
    return native is not None and native.debian_arch == arch.debian_arch


@dataclass(frozen=True)
class ToolchainSpec:
    name: str  # as configs/kernels/*.yaml say it (toolchain:)
    make_vars: tuple[tuple[str, str], ...]  # what make is given for it

    def compiler(self, arch: Arch, machine: str) -> str:
        """The C compiler command kbuild runs (its cross prefix included)."""
        if self.name == "clang":
            return "clang"  # one clang for every target: kbuild passes --target
        return f"{arch.cross_prefix(machine)}gcc"

    def cross_compile(self, arch: Arch, machine: str) -> str:
        """CROSS_COMPILE= for make ("" when native, and for clang)."""
        return "" if self.name == "clang" else arch.cross_prefix(machine)

    def package_of(self, arch: Arch, machine: str) -> str:
        """The Debian package of ``compiler()``."""
        if self.name == "clang":
            return "clang"
        return "gcc" if not arch.cross_prefix(machine) else arch.gcc_package

    def tools(self, arch: Arch, machine: str) -> dict[str, str]:
        """Every command this toolchain needs on that machine -> its Debian package."""
        needed = {self.compiler(arch, machine): self.package_of(arch, machine)}
        if self.name == "clang":
            needed.update({"ld.lld": "lld", "llvm-ar": "llvm", "llvm-nm": "llvm",
                           "llvm-objcopy": "llvm"})
        return needed


TOOLCHAIN_TABLE: dict[str, ToolchainSpec] = {t.name: t for t in (
    ToolchainSpec("gcc", ()),
    ToolchainSpec("clang", (("LLVM", "1"),)),
)}
TOOLCHAINS = tuple(TOOLCHAIN_TABLE)
