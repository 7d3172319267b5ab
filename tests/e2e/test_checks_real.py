"""The check stage on the real Debian 6.1 tree: the sample series as the list
got it (a lore thread, tests/lore_server.py) passes every check; an
undeclared function and a kernel-doc comment for a parameter that does not
exist fail sparse, W=1 and kernel-doc while the plain build passes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, Env, git
from tests.conftest import case_status as status
from tests.e2e.test_real_build import diff_series
from tests.lore_server import lore_server, reply, series_thread

pytestmark = pytest.mark.e2e

# What the tree's scripts/get_maintainer.pl names for drivers/hv (MAINTAINERS,
# "Hyper-V/Azure CORE AND DRIVERS"): the addresses a sender puts in To/Cc.
HYPERV_CC = ('"K. Y. Srinivasan" <kys@microsoft.com>, Haiyang Zhang <haiyangz@microsoft.com>, '
             "Wei Liu <wei.liu@kernel.org>, Dexuan Cui <decui@microsoft.com>, "
             "linux-kernel@vger.kernel.org")


def test_the_sample_series_from_a_lore_thread_passes_every_check(
        real_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    patches = sorted((REPO / "configs" / "patches" / "hyperv-sample").glob("0*.patch"))
    thread = series_thread(patches, "sample", cover_subject="Drivers: hv: vmbus: protocol "
                           "version")
    for mail in thread:
        mail.cc = HYPERV_CC
    with lore_server() as server:
        server.add(*thread, reply(thread[0], "Michael Kelley <mhklinux@outlook.com>",
                                  "For the series:\nReviewed-by: Michael Kelley "
                                  "<mhklinux@outlook.com>", "review@hvlab.invalid"))
        monkeypatch.setenv("HVLAB_LORE_URL", server.base)
        done = real_env.inv("build", "--kernel", "linux-6.1", "--series",
                            "lore:sample-0@hvlab.invalid", timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    checks = real_env.suite("local.check")
    subjects = ["Drivers: hv: vmbus: log the negotiated protocol version clearly",
                "Drivers: hv: vmbus: use sysfs_emit() for the hibernation attribute",
                "Drivers: hv: vmbus: expose the negotiated protocol version in sysfs"]
    for subject in subjects:
        for check in ("sparse", "W=1", "kernel-doc", "fixes", "signoff", "get_maintainer"):
            case = checks[f"{check}: {subject}"]
            assert status(case) == "pass", (check, subject, case.result)
            if check == "get_maintainer":  # all addressed: no warning either
                assert not case.result, case.result
    meta = json.loads((real_env.latest / "metadata.json").read_text())
    commit = meta["cells"][0]["facts"]["commit"]
    store = real_env.kernels / "git" / "store.git"
    for body in git(store, "log", "--format=%B%x00", "-3", commit).split("\0")[:3]:
        assert "Reviewed-by: Michael Kelley <mhklinux@outlook.com>" in body
    # the build keeps kbuild's record of what it linked: the compile checks know
    # what is built in this configuration without the build directory's objects
    build = real_env.kernels / "builds" / meta["cells"][0]["facts"]["build_id"]
    linked = (build / "objects").read_text().split()
    assert "drivers/hv/vmbus_drv.o" in linked and "drivers/hv/hv_util.o" in linked  # y, m
    assert "drivers/hv/hv_debugfs.o" not in linked  # CONFIG_HYPERV_TESTING is not set
    for obj in (real_env.kernels / "builds" / "work").glob("linux-6.1-*[0-9a-f]/drivers/hv/*.o"):
        obj.unlink()  # as if the build directory had been cleaned
    again = real_env.inv("build", "--kernel", "linux-6.1", "--series",
                         "lore:sample-0@hvlab.invalid", "--offline", timeout=3600)
    assert again.returncode == 0, again.stderr[-3000:]
    sparse = real_env.suite("local.check")[f"sparse: {subjects[0]}"]
    assert status(sparse) == "pass"
    assert "checked: drivers/hv/connection.c" in (sparse.system_out or "")


def test_an_undeclared_function_and_a_wrong_kernel_doc_fail_their_checks(
        real_env: Env, tmp_path: Path) -> None:
    anchor = "static int util_probe(struct hv_device *dev,\n"
    series = diff_series(real_env, tmp_path, "undeclared", "drivers/hv/hv_util.c", anchor,
                         "/**\n * hvlab_util_answer() - the answer\n"
                         " * @question: what was asked\n *\n"
                         " * Return: the value\n */\n"
                         "int hvlab_util_answer(int value)\n{\n\treturn value;\n}\n\n"
                         + anchor)
    done = real_env.inv("build", "--kernel", "linux-6.1", "--series", str(series),
                        timeout=3600)
    assert done.returncode == 1, done.stderr[-3000:]
    build = real_env.suite("local.build")
    assert status(build["build: linux-6.1"]) == "pass"  # the plain gate: nothing new
    assert not [n for n in build if n.startswith("warning: ")], list(build)
    checks = real_env.suite("local.check")
    subject = "undeclared"
    sparse = checks[f"sparse: {subject}"]
    assert status(sparse) == "failure"
    assert "symbol 'hvlab_util_answer' was not declared. Should it be static?" \
        in sparse.result[0].message
    assert sparse.result[0].message.startswith("drivers/hv/hv_util.c:")
    w1 = checks[f"W=1: {subject}"]
    assert status(w1) == "failure"
    assert "no previous prototype for 'hvlab_util_answer' [-Wmissing-prototypes]" \
        in w1.result[0].message
    kdoc = checks[f"kernel-doc: {subject}"]
    assert status(kdoc) == "failure"
    assert "'question'" in kdoc.system_out and "'value'" in kdoc.system_out
    assert kdoc.result[0].message.startswith("drivers/hv/hv_util.c:")
    tree = real_env.kernels / "worktrees" / "linux-6.1"
    assert git(tree, "status", "--porcelain") == ""


def test_a_netvsc_patch_gets_checkpatch_as_netdev_runs_it(real_env: Env, tmp_path: Path) -> None:
    anchor = "static void free_netvsc_device(struct rcu_head *head)\n{\n"
    comment = "\t/* hvlab: the host may recieve this buffer again once the channel is reset */\n"
    assert 80 < len(comment.expandtabs(8)) <= 100
    series = diff_series(real_env, tmp_path, "netvsc-comment", "drivers/net/hyperv/netvsc.c",
                         anchor, anchor + comment)
    done = real_env.inv("patch", "--kernel", "linux-6.1", "--series", str(series))
    assert done.returncode == 1, done.stderr[-3000:]
    case = real_env.suite("local.patch")["checkpatch: netvsc comment"]
    assert status(case) == "failure"
    assert "(profile netdev)" in case.result[0].message
    assert "exceeds 80 columns" in case.system_out  # --max-line-length=80
    assert "'recieve' may be misspelled - perhaps 'receive'?" in case.system_out  # codespell
