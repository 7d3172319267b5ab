"""Architectures and toolchains as data: the cross prefix, compiler and
packages each needs on a given machine, and the make command they give."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from hvlab.build import builder as B
from hvlab.build.arches import ARCH_TABLE, TOOLCHAIN_TABLE
from hvlab.errors import InfraError
from hvlab.model import KernelSpec, PathSource
from hvlab.workspace import Workspace

pytestmark = pytest.mark.unit

X86, ARM64, I386 = (ARCH_TABLE[a] for a in ("x86_64", "arm64", "i386"))
GCC, CLANG = TOOLCHAIN_TABLE["gcc"], TOOLCHAIN_TABLE["clang"]


def test_cross_prefix_and_compiler_per_machine() -> None:
    assert X86.cross_prefix("x86_64") == "" and ARM64.cross_prefix("x86_64") == \
        "aarch64-linux-gnu-"
    assert I386.cross_prefix("x86_64") == ""  # x86_64 gcc builds it with -m32
    assert X86.cross_prefix("aarch64") == "x86_64-linux-gnu-"
    assert GCC.compiler(ARM64, "x86_64") == "aarch64-linux-gnu-gcc"
    assert GCC.package_of(ARM64, "x86_64") == "gcc-aarch64-linux-gnu"
    assert GCC.package_of(X86, "x86_64") == "gcc"
    assert CLANG.compiler(ARM64, "x86_64") == "clang"  # one clang, kbuild's --target
    assert CLANG.tools(ARM64, "x86_64")["ld.lld"] == "lld"
    assert dict(CLANG.make_vars) == {"LLVM": "1"}
    assert (ARM64.qemu, ARM64.console, ARM64.debian_arch) == ("qemu-system-aarch64",
                                                              "ttyAMA0", "arm64")


def test_a_missing_cross_compiler_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(B.shutil, "which",
                        lambda name, *a, **k: None if name == "aarch64-linux-gnu-gcc"
                        else real(name, *a, **k))
    with pytest.raises(InfraError, match=r"'aarch64-linux-gnu-gcc' is not installed \(Debian "
                       "package: gcc-aarch64-linux-gnu; it builds arm64 with gcc"):
        B.toolchain(ARM64, "gcc", False, machine="x86_64")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_make_gets_the_toolchains_variables(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    kernel = KernelSpec("k", tmp_path / "k.yaml", PathSource(tmp_path), arch="x86_64")
    inputs = B.ConfigInputs("tinyconfig", "", (), "x86_64", ())
    gcc = B.Builder(ws, kernel, inputs, jobs=1, use_ccache=False)
    argv = gcc.make_argv(tmp_path, "bzImage")
    assert "ARCH=x86_64" in argv and not [a for a in argv if a.startswith(("LLVM=", "CC="))]
    # clang: LLVM=1 and no CROSS_COMPILE, whatever the arch (a fake clang: only --version)
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("clang", "ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy"):
        (fake / tool).write_text("#!/bin/sh\necho 'Debian clang version 14.0.6'\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    arm = KernelSpec("k", tmp_path / "k.yaml", PathSource(tmp_path), arch="arm64",
                     toolchain="clang")
    clang = B.Builder(ws, arm, B.ConfigInputs("tinyconfig", "", (), "arm64", (), "clang"),
                      jobs=1, use_ccache=False)
    argv = clang.make_argv(tmp_path, "Image")
    assert "LLVM=1" in argv and "ARCH=arm64" in argv
    assert not [a for a in argv if a.startswith("CROSS_COMPILE=")]
    assert clang.tools.version == "Debian clang version 14.0.6"
    same = B.ConfigInputs("tinyconfig", "", (), "arm64", ())
    assert same.key("v1") != dataclasses.replace(same, toolchain="clang").key("v1")
