"""Boot the prebuilt Debian kernel in QEMU (TCG) through `inv boot --prebuilt`:
the guest image, SSH, release check, console faults and cleanup, for real."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Env
from tests.conftest import case_status as status
from tests.sshd import Sshd, sshd

pytestmark = pytest.mark.integration

KERNELS = sorted(glob.glob("/boot/vmlinuz-*"))


@pytest.fixture
def vmlinuz() -> str:
    if not KERNELS:
        pytest.fail("no /boot/vmlinuz-*: run ci/setup.sh (linux-image-amd64)")
    return KERNELS[-1]


def qemu_host(env: Env, name: str = "q", **keys: object) -> None:
    text = "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n" + "".join(
        f"{k}: {v}\n" for k, v in keys.items())
    env.write(f"hosts/{name}.yaml", text)


def qemu_processes(env: Env) -> str:
    found = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True,
                           check=False).stdout
    return "\n".join(line for line in found.splitlines() if str(env.root) in line)


def test_clean_boot_verifies_release_and_stops_qemu(env: Env, vmlinuz: str,
                                                    validate_junit) -> None:  # type: ignore[no-untyped-def]
    qemu_host(env)
    done = env.inv("boot", "--prebuilt", vmlinuz, "--host", "q", timeout=300)
    assert done.returncode == 0, done.stderr
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("q.boot")
    assert status(cases["boot: q"]) == "pass"
    release = Path(vmlinuz).name.removeprefix("vmlinuz-")
    assert status(cases["kernel release"]) == "pass"
    assert cases["kernel release"].system_out.strip() == release
    assert qemu_processes(env) == ""
    logs = env.latest / "logs"
    assert "hvlab-guest-ready" in (logs / "console-q.log").read_text()
    assert (logs / "dmesg-q.log").stat().st_size > 1000


def test_panic_at_boot_fails_within_seconds(env: Env, vmlinuz: str) -> None:
    qemu_host(env, append="'init=/nonexistent rdinit=/nonexistent'", boot_timeout=300)
    t0 = time.monotonic()
    done = env.inv("boot", "--prebuilt", vmlinuz, "--host", "q", timeout=300)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - t0 < 120  # not the 300 s boot_timeout
    case = env.suite("q.boot")["boot: q"]
    assert status(case) == "failure"
    assert "kernel panic during boot" in case.result[0].message
    assert "Kernel panic - not syncing" in case.system_out
    assert qemu_processes(env) == ""


def test_guest_that_never_answers_fails_after_boot_timeout(env: Env, vmlinuz: str) -> None:
    qemu_host(env, append="rdinit=/bin/sh", boot_timeout=20)
    t0 = time.monotonic()
    done = env.inv("boot", "--prebuilt", vmlinuz, "--host", "q", timeout=300)
    took = time.monotonic() - t0
    assert done.returncode == 1, done.stderr
    assert took >= 20
    case = env.suite("q.boot")["boot: q"]
    assert "no SSH within boot_timeout (20 s)" in case.result[0].message
    assert "Linux version" in case.system_out or "Run /bin/sh" in case.system_out
    assert qemu_processes(env) == ""


def test_sigterm_during_boot_stops_qemu_and_reports(env: Env, vmlinuz: str,
                                                    validate_junit) -> None:  # type: ignore[no-untyped-def]
    qemu_host(env, append="rdinit=/bin/sh", boot_timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), "boot",
                             "--prebuilt", vmlinuz, "--host", "q"], cwd=env.root,
                            env={**os.environ, **env.vars}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not qemu_processes(env):
        assert time.monotonic() < deadline and proc.poll() is None, "QEMU never started"
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert qemu_processes(env) == ""
    validate_junit(env.latest / "junit.xml")
    case = env.suite("q.boot")["boot: prebuilt"]
    assert status(case) == "error" and "interrupted" in case.result[0].message


def test_missing_qemu_names_the_package(env: Env, vmlinuz: str, tmp_path: Path) -> None:
    qemu_host(env)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("git", "busybox", "ssh-keygen", "ldd", "sh", "python3"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "boot",
                           "--prebuilt", vmlinuz, "--host", "q"], cwd=env.root,
                          env={**os.environ, **env.vars, "PATH": str(bindir)},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 3, done.stderr
    assert "'qemu-system-x86_64' is not installed (Debian package: qemu-system-x86" in done.stderr


def test_host_lease_makes_a_second_run_wait(env: Env, vmlinuz: str) -> None:
    from hvlab.boot.verify import host_lease
    from hvlab.errors import InfraError
    from hvlab.workspace import Workspace

    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    with host_lease(ws, "q", notify=lambda m: None):
        with pytest.raises(InfraError, match="timed out after 1 s waiting for host 'q'"):
            host_lease(ws, "q", notify=lambda m: None, timeout=1).acquire()
    with host_lease(ws, "q", notify=lambda m: None, timeout=1):
        pass  # released when its owner let go


def ssh_host_yaml(env: Env, name: str, server: Sshd, **extra: object) -> None:
    env.write(f"hosts/{name}.yaml",
              f"kind: ssh\naddress: {server.address}\nport: {server.port}\nuser: root\n"
              f"key: {server.client_key}\nhost_key: '{server.fingerprint}'\n"
              f"connect_timeout: 5\n" + "".join(f"{k}: {v}\n" for k, v in extra.items()))


def test_qemu_on_a_host_reached_over_ssh(env: Env, vmlinuz: str, tmp_path: Path) -> None:
    with sshd(tmp_path / "sshd") as server:
        ssh_host_yaml(env, "loophost", server)
        qemu_host(env, "rq", on="loophost")
        done = env.inv("boot", "--prebuilt", vmlinuz, "--host", "rq", timeout=300)
        assert done.returncode == 0, done.stderr
        cases = env.suite("rq.boot")
        assert status(cases["boot: rq"]) == "pass"
        assert status(cases["kernel release"]) == "pass"
        left = subprocess.run(["pgrep", "-af", "hvlab-qemu-"], capture_output=True, text=True,
                              check=False).stdout
        assert left == ""
        assert not glob.glob("/tmp/hvlab-qemu-*")


def test_hosts_check_reports_each_host(env: Env, tmp_path: Path) -> None:
    with sshd(tmp_path / "sshd") as server:
        ssh_host_yaml(env, "good", server)
        qemu_host(env, "q")
        done = env.inv("hosts.check")
        assert done.returncode == 0, done.stderr
        cases = env.suite("local.hosts")
        assert status(cases["host: good"]) == "pass"
        assert "Linux" in cases["host: good"].system_out
        assert "MiB free" in cases["host: good"].system_out
        assert status(cases["host: q"]) == "pass"


def test_hosts_check_unreachable_host_exits_3_quickly(env: Env) -> None:
    from tests.sshd import free_port
    env.write("hosts/gone.yaml", f"kind: ssh\naddress: 127.0.0.1\nport: {free_port()}\n"
              "host_key: 'SHA256:" + "A" * 43 + "'\nconnect_timeout: 3\n")
    t0 = time.monotonic()
    done = env.inv("hosts.check", "--host", "gone")
    assert done.returncode == 3
    assert time.monotonic() - t0 < 30
    assert "gone: ERROR: host gone (root@127.0.0.1:" in done.stderr
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr
