"""The arches plan on the real Debian 6.1 tree: the sample series built for
x86_64 with gcc and with clang, arm64 (cross gcc) and i386; x86_64 and arm64
boot in QEMU (qemu-system-aarch64 -M virt for arm64) and pass boot-health,
clang and i386 compile only what the series touches.  Then a patch that
calls an x86-only function from drivers/hv/hv_common.c, code shared with
arm64, fails the arm64 cell naming the file and passes x86_64.

Both come last in the session (marked arches): the arches run goes on in
the background meanwhile (tests/prebuild.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from hvlab.report import view
from tests.conftest import REPO, Env, junit_suite, junit_suite_properties
from tests.conftest import case_status as status
from tests.e2e.test_real_build import diff_series

pytestmark = pytest.mark.e2e

CELLS = {"linux-6.1": "local-qemu", "linux-6.1-arm64": "local-qemu-arm64",
         "linux-6.1-clang": "", "linux-6.1-i386": ""}


@pytest.mark.arches
def test_the_arches_plan_builds_four_cells_and_boots_x86_64_and_arm64(
        arches_run: Path, validate_junit: Any) -> None:
    junit = arches_run / "junit.xml"
    validate_junit(junit)
    suites = {s.name: s for s in view.parse(junit.read_text())}
    for kernel, host in CELLS.items():
        cell = f"{kernel}+hyperv-sample"
        build = junit_suite(junit, f"{cell}/local.build")
        assert status(build[f"build: {kernel}"]) == "pass", (kernel, build)
        scope = junit_suite_properties(junit, f"{cell}/local.build")["build_scope"]
        if host:
            assert scope == "full", (kernel, scope)
            assert suites[f"{cell}/{host}.boot"].status == "pass", kernel
            assert suites[f"{cell}/{host}.boot-health"].status == "pass", kernel
        else:
            assert scope == "touched only: drivers/hv/", (kernel, scope)
            assert not any(n.startswith(f"{cell}/local-qemu") for n in suites), kernel
    console = next((arches_run / "logs").rglob("console-local-qemu-arm64.log")).read_text()
    assert "Machine model: linux,dummy-virt" in console
    assert "Linux version 6.1" in console and "aarch64-linux-gnu-gcc" in console


@pytest.mark.arches
def test_an_x86_only_call_in_shared_code_fails_the_arm64_cell_only(
        real_env: Env, arches_run: Path) -> None:
    # After the arches run (arches_run): its arm64 build holds that kernel's
    # worktree for minutes, and this touched-only build then finds it warm.
    env = dataclasses.replace(real_env, configs=real_env.root / "configs-x86call")
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    # hyperv_stop_tsc_emulation() is declared in arch/x86/include/asm/mshyperv.h only
    diff_series(env, env.configs / "patches", "x86call", "drivers/hv/hv_common.c",
                "\tint i;\n\n\tif (hv_is_isolation_supported())",
                "\tint i;\n\n\thyperv_stop_tsc_emulation();\n\tif (hv_is_isolation_supported())")
    env.write("plans/x86call.yaml", "kernels: [linux-6.1, linux-6.1-arm64]\nseries: [x86call]\n"
                                    "build_only: [linux-6.1, linux-6.1-arm64]\n")
    done = env.inv("run", "--plan", "x86call", "--checks", "none", timeout=3600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    x86 = env.suite("linux-6.1+x86call/local.build")
    assert status(x86["build: linux-6.1"]) == "pass", x86
    arm = env.suite("linux-6.1-arm64+x86call/local.build")["build: linux-6.1-arm64"]
    assert status(arm) == "failure"
    message = arm.result[0].message
    assert "drivers/hv/hv_common.c:" in message and "hyperv_stop_tsc_emulation" in message, \
        message
    assert env.suite_properties("linux-6.1-arm64+x86call/local.build")["build_scope"] == \
        "touched only: drivers/hv/"
