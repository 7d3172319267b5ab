"""The Done-when of the suites: on local-qemu the real build passes boot-health
and hyperv-drivers skips every test with a reason naming Hyper-V."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hvlab.report import view
from tests.conftest import Env, git
from tests.conftest import case_status as status
from tests.e2e.test_real_build import diff_series

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


def test_kselftest_collection_of_the_tree_runs_on_the_guest(real_env: Env, tmp_path: Path,
                                                            validate_junit: Any) -> None:
    done = real_env.inv("test", "--kernel", "linux-6.1", "--series", "hyperv-sample",
                        "--host", "local-qemu", "--suite", "kselftest", timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(real_env.latest / "junit.xml")
    build = real_env.suite("local.build")
    assert status(build["kselftest build: size vDSO"]) == "pass"
    cases = real_env.suite_family("local-qemu.kselftest")  # get_size's TAP: a suite of its own
    assert status(cases["kselftest: selftests: size: get_size.get runtime memory use"]) == "pass"
    assert "local-qemu.kselftest:selftests: size: get_size" in {
        s.name for s in view.parse((real_env.latest / "junit.xml").read_text())}
    vdso = [n for n in cases if n.startswith("kselftest: selftests: vDSO: vdso_test_")]
    assert len(vdso) >= 5 and all(status(cases[n]) in ("pass", "skipped") for n in vdso)
    tree = real_env.kernels / "worktrees" / "linux-6.1"
    assert git(tree, "status", "--porcelain") == ""  # built out of tree

    # a series that breaks a selftest of the tree fails that case, and only it
    series = diff_series(real_env, tmp_path, "size-fails",
                         "tools/testing/selftests/size/get_size.c",
                         '\tprint("ok 1");', '\tprint("not ok 1");')
    done = real_env.inv("test", "--kernel", "linux-6.1", "--series", str(series),
                        "--host", "local-qemu", "--suite", "kselftest", timeout=3600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(real_env.latest / "junit.xml")
    cases = real_env.suite_family("local-qemu.kselftest")
    bad = [n for n, c in cases.items() if status(c) == "failure"]
    assert bad == ["kselftest: selftests: size: get_size.get runtime memory use"], bad
