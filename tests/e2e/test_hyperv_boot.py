"""The hyperv kind end to end, on a simulated generation 2 VM that boots from
its own disk as a Hyper-V VM does: UEFI firmware, grub, the distro's
initramfs-tools, systemd.  The real tree's builds are installed into the VM
over SSH, booted once through a grub one-shot entry (the VM restarts, so
COM1's pipe closes and the reader reconnects), and verified.  A build that
panics is answered with Stop-VM -TurnOff and Start-VM, and grub brings the
VM back on its default kernel.  Every cell starts from the VM's checkpoint,
and release: revert takes back what the install wrote to the disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hvlab.boot import console, vm_image
from hvlab.workspace import Workspace
from tests.conftest import Env
from tests.conftest import case_status as status
from tests.e2e.test_installed_vm import panic_at_boot, vm_env
from tests.hyperv_lab import hyperv_lab

pytestmark = [pytest.mark.e2e, pytest.mark.vm_image]


def test_grub_one_shot_and_hard_reset_on_a_simulated_gen2_disk_vm(vm_image_built: Env,
                                                                  tmp_path: Path) -> None:
    real_env = vm_image_built
    env = vm_env(real_env, "configs-hyperv")
    panic_at_boot(real_env, tmp_path, env)
    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    with hyperv_lab(tmp_path / "lab", ws, disk=True) as lab:
        env.write("hosts/hv-gen2.yaml", lab.host_yaml(
            checkpoint="clean", secure_boot="off", release="revert", boot_method="grub",
            boot_timeout=300, ip_timeout=300))
        done = env.inv("run", "--series", "panic-at-boot", "--series", "hyperv-sample",
                       "--host", "hv-gen2", "--suite", "boot-health", timeout=2400)
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        fallback = lab.release

        panicked = env.suite("linux-6.1+panic-at-boot/hv-gen2.boot")["boot: hv-gen2"]
        assert status(panicked) == "failure"
        message = panicked.result[0].message
        assert "the kernel panicked: Kernel panic - not syncing: hvlab test" in message
        assert ("hard reset (Stop-VM -TurnOff, Start-VM): back on its default kernel "
                f"{fallback}") in message
        assert "hvlab test: this kernel panics at boot" in panicked.system_out  # console tail

        # the next cell: the VM back at its checkpoint, the build installed with the
        # VM's own initramfs-tools and update-grub, booted once by grub, verified
        install = env.suite("linux-6.1+hyperv-sample/hv-gen2.install")
        started = install["install: hv-gen2"].system_out
        assert "restored checkpoint 'clean'" in started and "Secure Boot turned off" in started
        out = next(c.system_out for n, c in install.items() if n.startswith("install: "
                                                                          ) and "one-shot" in
                   (c.system_out or ""))
        assert "one-shot boot by grub; initrd /boot/initrd.img-" in out
        assert f"fallback {fallback}" in out
        good = env.suite("linux-6.1+hyperv-sample/hv-gen2.boot")
        assert status(good["boot: hv-gen2"]) == "pass"
        assert status(good["integration: heartbeat"]) == "pass"
        release = good["kernel release"].system_out.strip()
        assert release.startswith("6.1.") and release.endswith("+") and release != fallback

        # the serial logs downloaded from the host: the reader followed each VM
        # across the grub reboot, and across the hard reset of the panicking build
        logs = {p.parent.name: p.read_text(errors="replace").splitlines()
                for p in (env.latest / "logs").rglob("console-hv-gen2.log")}
        good_log = next(v for k, v in logs.items() if "hyperv-sample" in k)
        panic_log = next(v for k, v in logs.items() if "panic-at-boot" in k)
        assert console.banners(good_log) == [fallback, release]
        assert console.banners(panic_log) == [fallback, release, fallback]

        # each cell restored the checkpoint before it started and after it ended;
        # the disk is the clean image again, and nothing runs
        vm = lab.vm_state()
        assert vm["state"] == "Off" and vm["restored"] == 4 and not vm.get("resumed_saved")
        image = vm_image.load(next((env.kernels / "images").glob("vm-debian12-*")))
        assert image is not None
        same = subprocess.run(["qemu-img", "compare", str(lab.kernel), str(image.disk)],
                              capture_output=True, text=True, check=False)
        assert same.returncode == 0, same.stdout + same.stderr
        left = subprocess.run(["pgrep", "-f", str(lab.kernel)], capture_output=True,
                              text=True, check=False).stdout
        assert left == ""


def test_secure_boot_left_on_and_a_full_boot_are_infrastructure_errors_that_say_why(
        vm_image_built: Env, tmp_path: Path) -> None:
    """Secure Boot left on: the VM never boots, and the error says Secure Boot.
    /boot without room for the build: the install stops before it uploads, with
    exit 3 and the sizes.  The VM is released both times."""
    env = vm_env(vm_image_built, "configs-hyperv-full")
    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    with hyperv_lab(tmp_path / "lab", ws, disk=True) as lab:
        # Secure Boot left on (the VM's default): the firmware refuses the image's
        # unsigned boot loader, the VM never reports an address, and the error
        # names Secure Boot before the KVP daemon
        env.write("hosts/hv-gen2.yaml", lab.host_yaml(ip_timeout=60))
        done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                       "--host", "hv-gen2", timeout=600)
        assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
        assert "reported no IPv4 address within ip_timeout (60 s)" in done.stderr
        assert "Secure Boot is on" in done.stderr and "Traceback" not in done.stderr
        assert lab.vm_state()["state"] == "Off"
        serial = next((env.latest / "logs").rglob("console-hv-gen2.log")).read_text(
            errors="replace")
        assert "Access Denied" in serial and "Linux version" not in serial

        # all but 256 KiB of /boot's file system taken (the build needs more)
        lab.in_guest(["sh", "-c", "free=$(df -Pk /boot | awk 'END {print $4}') && "
                      "fallocate -l $((free - 256))K /boot/hvlab-test-fill && sync"])
        env.write("hosts/hv-gen2.yaml", lab.host_yaml(
            secure_boot="off", release="stop", boot_method="grub", boot_timeout=300,
            ip_timeout=300))
        done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                       "--host", "hv-gen2", timeout=1200)
        assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
        assert "host hv-gen2: disk full: /boot has" in done.stderr
        assert "KiB free, the build needs" in done.stderr
        assert "Traceback" not in done.stderr
        install = env.suite("hv-gen2.install")
        assert any(status(c) == "error" and "disk full" in c.result[0].message
                   for c in install.values())
        assert lab.vm_state()["state"] == "Off"
