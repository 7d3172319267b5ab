"""A build's modules tarball, unpacked at / by the machine's own tar, keeps a
merged-/usr layout (/lib -> usr/lib, as on Debian 12, Ubuntu and Fedora)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from hvlab.boot import cpio, guest_image
from hvlab.build.builder import pack_modules

pytestmark = pytest.mark.integration


def merged_usr_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/libc.so.6").write_text("libc")
    (root / "lib").symlink_to("usr/lib")
    return root


def unpack(tarball: Path, root: Path) -> None:
    subprocess.run(["tar", "-xz", "-f", str(tarball), "-C", str(root)], check=True)


def test_a_build_tarball_leaves_the_lib_symlink_and_installs_the_modules(tmp_path: Path) -> None:
    modroot = tmp_path / "modroot"
    ko = modroot / "lib/modules/6.1.99+/kernel/drivers/hv/hv_vmbus.ko"
    ko.parent.mkdir(parents=True)
    ko.write_bytes(b"\x7fELF")
    pack_modules(modroot, tmp_path / "modules.tar.gz")
    with tarfile.open(tmp_path / "modules.tar.gz") as tf:
        names = tf.getnames()
    assert not {".", "./lib", "./lib/modules"} & set(names), names
    root = merged_usr_root(tmp_path)
    unpack(tmp_path / "modules.tar.gz", root)  # plain GNU tar, no special option
    assert (root / "lib").is_symlink()
    assert (root / "lib/x86_64-linux-gnu/libc.so.6").is_file()
    assert (root / "usr/lib/modules/6.1.99+/kernel/drivers/hv/hv_vmbus.ko").is_file()


def test_a_prebuilt_kernel_s_tarball_does_too(tmp_path: Path) -> None:
    entries = [cpio.directory("lib"), cpio.directory("lib/modules"),
               cpio.directory("lib/modules/6.1.0-9-amd64"),
               cpio.file("lib/modules/6.1.0-9-amd64/modules.dep", b"")]
    guest_image.write_modules_tarball(entries, tmp_path / "modules.tar.gz")
    root = merged_usr_root(tmp_path)
    unpack(tmp_path / "modules.tar.gz", root)
    assert (root / "lib").is_symlink()
    assert (root / "usr/lib/modules/6.1.0-9-amd64/modules.dep").is_file()
