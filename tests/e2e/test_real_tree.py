"""Import the real Debian 6.1 tarball and apply the shipped hyperv-sample series."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import junitparser
import pytest

from tests.conftest import Env, git

pytestmark = pytest.mark.e2e


def test_fetch_real_tarball_then_cached(real_env: Env) -> None:
    done = real_env.inv("fetch", "--kernel", "linux-6.1")
    assert done.returncode == 0, done.stderr
    store = real_env.kernels / "git" / "store.git"
    commit = git(store, "rev-parse", "refs/hvlab/kernels/linux-6.1")
    makefile = git(store, "show", f"{commit}:Makefile")
    assert "VERSION = 6" in makefile and "PATCHLEVEL = 1" in makefile
    assert int(git(store, "ls-tree", "-r", "--name-only", commit, "--", "drivers/hv")
               .count("\n")) > 10
    again = real_env.inv("fetch", "--kernel", "linux-6.1")
    assert again.returncode == 0 and "(cached)" in again.stderr
    # behaviour, not timing: the cache answered without importing again
    assert "importing" not in again.stderr
    assert git(store, "rev-parse", "refs/hvlab/kernels/linux-6.1") == commit


def test_hyperv_sample_applies_and_passes_checkpatch(
        real_env: Env, validate_junit: Callable[[Path], None]) -> None:
    done = real_env.inv("patch", "--kernel", "linux-6.1", "--series", "hyperv-sample")
    assert done.returncode == 0, done.stderr
    validate_junit(real_env.latest / "junit.xml")
    xml = junitparser.JUnitXml.fromfile(str(real_env.latest / "junit.xml"))
    patch_suite = next(ts for ts in xml if ts.name == "local.patch")
    results = {c.name: c.result for c in patch_suite}
    assert len(results) == 6
    assert all(not r for r in results.values()), results
    subjects = [n for n in results if not n.startswith("checkpatch: ")]
    assert subjects == [
        "Drivers: hv: vmbus: log the negotiated protocol version clearly",
        "Drivers: hv: vmbus: use sysfs_emit() for the hibernation attribute",
        "Drivers: hv: vmbus: expose the negotiated protocol version in sysfs",
    ]
    tree = real_env.kernels / "worktrees" / "linux-6.1"
    assert "protocol_version_show" in (tree / "drivers/hv/vmbus_drv.c").read_text()
    assert git(tree, "status", "--porcelain") == ""
