"""The ssh kind's real path on an installed VM (local-debian-vm): the build
goes into /boot and /lib/modules, the VM's own initramfs-tools and
update-grub run, grub boots it once through UEFI, a hang is answered with a
hard reset through QMP and the VM comes back on its default kernel.

Each VM boot costs about a minute under TCG, so one run holds the passing
path and the panic: the panicking cell first, then the same VM serves the
good one."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from hvlab.boot import console, vm_image
from tests.conftest import REPO, Env
from tests.conftest import case_status as status
from tests.e2e.test_real_build import diff_series

pytestmark = [pytest.mark.e2e, pytest.mark.vm_image]


def vm_env(real_env: Env, name: str) -> Env:
    """The shipped configs in a copy (real_env is shared between tests)."""
    env = dataclasses.replace(real_env, configs=real_env.root / name)
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    return env


def panic_at_boot(real_env: Env, tmp_path: Path, env: Env) -> None:
    """The series ``panic-at-boot`` in ``env``'s configs: a kernel that panics
    once VMBus's init runs (made from the real tree now, so it always applies)."""
    series = diff_series(real_env, tmp_path, "panic-at-boot", "drivers/hv/vmbus_drv.c",
                         "static int __init hv_acpi_init(void)\n{\n",
                         "static int __init hv_acpi_init(void)\n{\n"
                         "\tpanic(\"hvlab test: this kernel panics at boot\");\n")
    shutil.copytree(series, env.configs / "patches" / "panic-at-boot")


def default_release(env: Env) -> str:
    image = vm_image.load(next((env.kernels / "images").glob("vm-debian12-*")))
    assert image is not None
    return image.default_release


def test_a_panic_at_boot_is_reset_and_the_vm_serves_the_next_cell(vm_image_built: Env,
                                                                   tmp_path: Path) -> None:
    real_env = vm_image_built
    env = vm_env(real_env, "configs-vm-panic")
    panic_at_boot(real_env, tmp_path, env)
    done = env.inv("run", "--series", "panic-at-boot", "--series", "hyperv-sample",
                   "--host", "local-debian-vm", "--suite", "boot-health", timeout=1200)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("VM local-debian-vm up on") == 1  # one VM served both cells
    fallback = default_release(env)
    panicked = env.suite("linux-6.1+panic-at-boot/local-debian-vm.boot")
    case = panicked["boot: local-debian-vm"]
    assert status(case) == "failure"
    message = case.result[0].message
    assert "the kernel panicked: Kernel panic - not syncing: hvlab test" in message
    assert f"hard reset through QMP; back on its default kernel {fallback}" in message
    assert "hvlab test: this kernel panics at boot" in case.system_out  # the console tail
    # after the reset the same VM installs the next cell's build with its own
    # initramfs-tools and update-grub, and grub boots it once through UEFI
    install = env.suite("linux-6.1+hyperv-sample/local-debian-vm.install")
    out = install["install: local-debian-vm"].system_out
    assert "one-shot boot by grub; initrd /boot/initrd.img-" in out
    assert f"fallback {fallback}" in out and "grub-set-default" in out
    good = env.suite("linux-6.1+hyperv-sample/local-debian-vm.boot")
    assert status(good["boot: local-debian-vm"]) == "pass"
    release = good["kernel release"].system_out.strip()
    meta = json.loads((env.latest / "metadata.json").read_text())
    build_id = next(c["facts"]["build_id"] for c in meta["cells"]
                    if c["facts"].get("series") == "hyperv-sample")
    assert release == (env.kernels / "builds" / build_id / "kernelrelease").read_text().strip()
    # the serial console, from the firmware on: the VM's kernel, the panicking
    # build, the VM's kernel after the reset, the good build
    log = next((env.latest / "logs").rglob("console-local-debian-vm.log"))
    assert console.banners(log.read_text(errors="replace").splitlines()) == [
        fallback, release, fallback, release]
    # nothing of the VM is left: its overlay and QEMU are gone with the run
    assert not list((env.kernels / "run" / "vms").iterdir())


def test_a_root_disk_the_kernel_has_no_driver_for_is_named(vm_image_built: Env) -> None:
    real_env = vm_image_built
    # The classic Hyper-V mistake, on QEMU: the VM's disk on AHCI, a driver the
    # build has neither built in nor in the initramfs (the distro kernel has it)
    env = vm_env(real_env, "configs-vm-sata")
    text = (env.configs / "hosts" / "local-debian-vm.yaml").read_text()
    env.write("hosts/local-debian-vm-sata.yaml", text.replace("disk_bus: virtio", "disk_bus: sata"))
    done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                   "--host", "local-debian-vm-sata", timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    case = env.suite("local-debian-vm-sata.boot")["boot: local-debian-vm-sata"]
    assert status(case) == "failure"
    message = case.result[0].message
    assert "the root device UUID=" in message and "was not found" in message
    assert "no driver for the root disk" in message
    assert f"back on its default kernel {default_release(env)}" in message
