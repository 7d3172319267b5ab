"""Boot the kernel hvlab built from the real tree in local-qemu (TCG)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Env
from tests.conftest import case_status as status
from tests.e2e.test_real_build import diff_series

pytestmark = pytest.mark.e2e


def test_boot_hyperv_sample_build_in_local_qemu(real_env: Env) -> None:
    done = real_env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                        "--host", "local-qemu", timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = real_env.suite("local-qemu.boot")
    assert status(cases["boot: local-qemu"]) == "pass"
    release = cases["kernel release"].system_out.strip()
    meta = json.loads((real_env.latest / "metadata.json").read_text())
    build = real_env.kernels / "builds" / meta["cells"][0]["facts"]["build_id"]
    assert release == (build / "kernelrelease").read_text().strip()
    assert not [n for n in cases if n.startswith(("console:", "dmesg:"))], list(cases)


def test_warn_during_boot_is_a_failure_carrying_its_text(real_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    series = diff_series(real_env, tmp_path, "warn-at-boot", "drivers/hv/vmbus_drv.c",
                         "static int __init hv_acpi_init(void)\n{\n",
                         "static int __init hv_acpi_init(void)\n{\n"
                         "\tWARN(1, \"hvlab: test warning during boot\\n\");\n")
    done = real_env.inv("boot", "--kernel", "linux-6.1", "--series", str(series),
                        "--host", "local-qemu", timeout=3600)
    assert done.returncode == 1, done.stderr[-3000:]
    cases = real_env.suite("local-qemu.boot")
    assert status(cases["boot: local-qemu"]) == "pass"
    warns = [c for n, c in cases.items() if n.startswith("console: warning:")]
    assert len(warns) == 1, list(cases)
    assert status(warns[0]) == "failure"
    assert "drivers/hv/vmbus_drv.c" in warns[0].result[0].message
    assert "hvlab: test warning during boot" in warns[0].system_out


def test_boot_through_a_qemu_host_on_a_loopback_sshd(real_env: Env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses
    import shutil

    from tests.conftest import REPO
    from tests.sshd import sshd

    env = dataclasses.replace(real_env, configs=real_env.root / "configs-remote")
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    with sshd(tmp_path / "sshd") as server:
        env.write("hosts/loophost.yaml",
                  f"kind: ssh\naddress: 127.0.0.1\nport: {server.port}\nuser: root\n"
                  f"key: {server.client_key}\nhost_key: '{server.fingerprint}'\n")
        env.write("hosts/remote-qemu.yaml", "kind: qemu\non: loophost\naccel: tcg\n")
        done = env.inv("boot", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                       "--host", "remote-qemu", timeout=3600)
        assert done.returncode == 0, done.stderr[-3000:]
        cases = env.suite("remote-qemu.boot")
        assert status(cases["boot: remote-qemu"]) == "pass"
        assert status(cases["kernel release"]) == "pass"
