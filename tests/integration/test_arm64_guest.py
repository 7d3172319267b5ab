"""arm64 guests under TCG (qemu-system-aarch64 -M virt) for real: Debian's
own arm64 kernel (linux-image-arm64, downloaded and unpacked by hvlab's
private apt, like the guest's busybox and sshd) boots on a qemu host with
``arch: arm64`` and passes boot-health; a qemu host refuses a kernel of
another arch, and a plan whose kernel no host boots is bad input."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest

from hvlab.boot import debroot
from hvlab.build.arches import ARCH_TABLE
from hvlab.workspace import Workspace
from tests.conftest import REPO, Env
from tests.conftest import case_status as status
from tests.integration.test_boot import KERNELS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def debian_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernels/images/debian-arm64 of a session workspace, holding Debian's
    arm64 kernel package (and later the guest's packages) unpacked."""
    root = tmp_path_factory.mktemp("arm64")
    ws = Workspace(root, root / "configs", root / "kernels", root / "reports")
    debroot.unpacked(ws, ARCH_TABLE["arm64"], ["linux-image-arm64"])
    return ws.kernels / "images" / "debian-arm64"


def arm64_env(env: Env, debian_arm64: Path) -> str:
    """The env shares the session's unpacked packages; returns the arm64 vmlinuz."""
    (env.kernels / "images").mkdir(parents=True)
    (env.kernels / "images" / "debian-arm64").symlink_to(debian_arm64)
    env.write("hosts/qa.yaml", "kind: qemu\narch: arm64\naccel: tcg\nmemory: 1024\ncpus: 2\n"
                               "boot_timeout: 300\n")
    env.write("suites/boot-health.yaml",
              (REPO / "configs" / "suites" / "boot-health.yaml").read_text())
    [vmlinuz] = glob.glob(str(debian_arm64 / "root-*" / "boot" / "vmlinuz-*-arm64"))
    return vmlinuz


def test_debians_arm64_kernel_boots_and_passes_boot_health(
        env: Env, debian_arm64: Path, validate_junit: Any) -> None:
    vmlinuz = arm64_env(env, debian_arm64)
    release = Path(vmlinuz).name.removeprefix("vmlinuz-")
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "qa", "--suite", "boot-health",
                   timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    boot = env.suite("qa.boot")
    assert status(boot["boot: qa"]) == "pass"
    assert status(boot["kernel release"]) == "pass"
    assert env.suite_properties("qa.boot")["kernel_release"] == release
    health = env.suite("qa.boot-health")
    assert health and all(status(c) in ("pass", "skipped") for c in health.values()), \
        {n: status(c) for n, c in health.items()}
    assert status(health["kernel-release: kernel release"]) == "pass"
    # the guest really was arm64: its own uname -m, from the capture boot-health took
    [uname] = glob.glob(str(env.latest / "logs" / "capture-qa-*" / "commands" / "uname-m.txt"))
    assert Path(uname).read_text().strip() == "aarch64"
    console = next((env.latest / "logs").glob("console-qa*.log")).read_text()
    assert "Machine model: linux,dummy-virt" in console
    # the guest's busybox and sshd are Debian's arm64 binaries, from their packages
    listed = [p.read_text() for p in debian_arm64.glob("root-*/.hvlab-packages")]
    assert any("openssh-server_" in t and "busybox-static_" in t and "_arm64.deb" in t
               for t in listed), listed


def test_a_qemu_host_refuses_a_kernel_of_another_arch(env: Env, debian_arm64: Path) -> None:
    vmlinuz = arm64_env(env, debian_arm64)
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\n")
    done = env.inv("boot", "--prebuilt", KERNELS[-1], "--host", "qa", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "host 'qa' boots arm64 kernels (arch: arm64 in qa.yaml)" in done.stderr
    assert "is an x86_64 kernel" in done.stderr and "Traceback" not in done.stderr
    done = env.inv("boot", "--prebuilt", vmlinuz, "--host", "q", timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "host 'q' boots x86_64 kernels" in done.stderr and "is an arm64 kernel" in \
        done.stderr
    assert not list(env.latest.glob("logs/console-*"))  # refused before QEMU started


def test_a_plan_whose_arm64_kernel_no_host_boots_is_bad_input(env: Env) -> None:
    env.write("kernels/a.yaml", "source:\n  path: /nonexistent\narch: arm64\n")
    env.write("hosts/q.yaml", "kind: qemu\n")
    env.write("plans/p.yaml", "kernels: [a]\nhosts: [q]\n")
    check = env.inv("config.check", timeout=120)
    assert check.returncode == 2
    assert "plans/p.yaml:1:1: kernels: kernel 'a' is arm64 and no host boots it (hosts: q " \
        "(x86_64))" in check.stdout + check.stderr
    # inv boot says so before fetching (the source does not exist) or building
    (env.configs / "plans" / "p.yaml").unlink()
    done = env.inv("boot", "--kernel", "a", "--host", "q", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "kernel 'a' is arm64 and host 'q' boots x86_64 kernels (arch: in q.yaml)" in \
        done.stderr and "Traceback" not in done.stderr
    assert "/nonexistent" not in done.stderr  # its source was never read
