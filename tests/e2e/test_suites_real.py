"""The Done-when of the suites: on local-qemu the real build passes boot-health
and hyperv-drivers skips every test with a reason naming Hyper-V."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Env
from tests.conftest import case_status as status

pytestmark = pytest.mark.e2e


def test_boot_health_passes_and_hyperv_drivers_skip_in_qemu(real_env: Env,
                                                            validate_junit: Any) -> None:
    done = real_env.inv("test", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                        "--host", "local-qemu", "--suite", "boot-health",
                        "--suite", "hyperv-drivers", timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(real_env.latest / "junit.xml")
    health = real_env.suite("local-qemu.boot-health")
    assert all(status(c) in ("pass", "skipped") for c in health.values())
    assert status(health["taint"]) == "pass"
    assert status(health["dmesg-errors: dmesg errors"]) == "pass"
    # hv_vmbus is built in (CONFIG_HYPERV=y): the first driver module refuses with ENODEV
    refused = [c for c in health.values() if "refused with ENODEV" in (c.system_out or "")]
    assert len(refused) == 1
    drivers = real_env.suite("local-qemu.hyperv-drivers")
    assert len(drivers) >= 5
    assert all(status(c) == "skipped" and "not on Hyper-V" in c.result[0].message
               for c in drivers.values())
    props = real_env.suite_properties("local-qemu.boot-health")
    assert props["kernel_release"].endswith("+") and props["build_id"]
    assert props["patchset_hash"] and props["commit"]
    summary = (real_env.latest / "summary.md").read_text()
    assert "| local-qemu | boot-health | ✅ pass |" in summary
