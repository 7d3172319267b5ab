"""The ssh host kind on a real machine: a QEMU guest running the Debian kernel
with hvlab's image (kexec-tools inside).  hvlab installs the build over SSH,
kexecs into it and verifies the release."""

from __future__ import annotations

import dataclasses
import glob
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlab.boot import guest_image
from hvlab.hosts.qemu_guest import QemuGuest
from hvlab.model import HostSpec, QemuHost, SshEndpoint
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace
from tests.conftest import REPO, Env
from tests.conftest import case_status as status

pytestmark = pytest.mark.e2e


@pytest.fixture
def machine(real_env: Env, tmp_path: Path) -> Iterator[tuple[QemuGuest, SshEndpoint]]:
    ws = Workspace(real_env.root, real_env.configs, real_env.kernels, real_env.reports)
    vmlinuz = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    release = Path(vmlinuz).name.removeprefix("vmlinuz-")
    image = guest_image.build_image(ws)
    mods = guest_image.write_modules_archive(
        guest_image.modules_from_tree(Path("/"), release, guest_image.GUEST_MODULES),
        tmp_path / "mods.cpio.gz")
    initrd = guest_image.combined_initrd(image, mods, tmp_path / "initrd")
    spec = HostSpec("machine", tmp_path / "m.yaml", "qemu", QemuHost(memory=1024, cpus=2))
    guest = QemuGuest(spec, tmp_path, Path(vmlinuz), initrd, "")
    guest.start()
    ep = SshEndpoint("127.0.0.1", guest.port, "root", image.client_key,
                     host_key=image.host_key_fingerprint, connect_timeout=5)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with SshSession("machine", ep) as s:
                    assert s.run(["true"]).ok
                break
            except Exception:
                assert time.monotonic() < deadline and guest.alive(), "machine never came up"
                time.sleep(1)
        yield guest, ep
    finally:
        guest.stop()


def env_with_host(real_env: Env, ep: SshEndpoint, name: str) -> Env:
    """The shipped configs plus this machine, in a copy (real_env is shared)."""
    env = dataclasses.replace(real_env, configs=real_env.root / name)
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    env.write("hosts/machine.yaml",
              f"kind: ssh\naddress: 127.0.0.1\nport: {ep.port}\nuser: root\nkey: {ep.key}\n"
              f"host_key: {ep.host_key}\nboot_method: kexec\nboot_timeout: 180\n")
    return env


def test_install_kexec_and_verify_release(real_env: Env, machine) -> None:  # type: ignore[no-untyped-def]
    guest, ep = machine
    env = env_with_host(real_env, ep, "configs-kexec")
    done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                        "--host", "machine", timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert status(env.suite("machine.install")["install: machine"]) == "pass"
    boot = env.suite("machine.boot")
    assert status(boot["boot: machine"]) == "pass"
    release = boot["kernel release"].system_out.strip()
    assert release.startswith("6.1.") and release.endswith("+")
    with SshSession("machine", ep) as s:  # the machine now runs the build
        assert s.run(["uname", "-r"]).output.strip() == release


def test_disk_full_on_the_target_during_install(real_env: Env, machine) -> None:  # type: ignore[no-untyped-def]
    guest, ep = machine
    env = env_with_host(real_env, ep, "configs-full")
    with SshSession("machine", ep) as s:
        assert s.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/boot"]).ok
    done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                   "--host", "machine", timeout=3600)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "disk full" in done.stderr
