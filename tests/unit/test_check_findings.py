"""The check stage's parsers on recorded output of the real tree and tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.build.diagnostics import Diagnostic
from hvlab.checks import findings as F
from hvlab.checks import profiles
from hvlab.errors import UserError

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parent.parent / "data" / "checks"
TREE = "/tmp/e2e-kernels/worktrees/linux-6.1"
WORK = "/tmp/e2e-kernels/builds/work/linux-6.1-d1fd546539376f2f-check"


def test_w1_and_sparse_apart_after_kbuilds_own_preparation() -> None:
    lines = (DATA / "make-W1-C2-hv_util.txt").read_text().splitlines()
    found = F.split_w1_sparse(lines, [TREE, WORK, "../../../worktrees/linux-6.1"])
    assert [d.describe() for d in found.w1] == [
        "drivers/hv/hv_util.c:567: no previous prototype for 'hvlab_util_answer' "
        "[-Wmissing-prototypes]"]
    assert [d.describe() for d in found.sparse] == [
        "drivers/hv/hv_util.c:567: symbol 'hvlab_util_answer' was not declared. "
        "Should it be static?"]


def test_kernel_doc_lines() -> None:
    lines = (DATA / "make-W1-C2-hv_util.txt").read_text().splitlines()
    found = F.kernel_doc(lines, [TREE])
    assert [d.message for d in found] == [
        "Function parameter or member 'value' not described in 'hvlab_util_answer'",
        "Excess function parameter 'question' description in 'hvlab_util_answer'"]
    assert {d.file for d in found} == {"drivers/hv/hv_util.c"}


def test_new_findings_ignore_line_moves_and_other_files() -> None:
    before = [Diagnostic("a.c", 10, "warning", "symbol 'x' was not declared")]
    after = [Diagnostic("a.c", 14, "warning", "symbol 'x' was not declared"),
             Diagnostic("a.c", 20, "warning", "symbol 'y' was not declared"),
             Diagnostic("b.h", 3, "warning", "symbol 'z' was not declared")]
    assert [d.message for d in F.new_in(after, before, ["a.c"])] == [
        "symbol 'y' was not declared"]


def test_fixes_tags_and_sign_offs() -> None:
    msg = ("hv: fix\n\nFixes: 0123456789ab (\"hv: the cause\")\nFixes: abc123\n"
           "Fixes: 0123456789abcdef\nSigned-off-by: A Person <A@Example.com>\n"
           "Signed-off-by: b@example.com\n")
    good, bad = F.fixes_tags(msg)
    assert good == [F.FixesTag("0123456789ab", "hv: the cause",
                               'Fixes: 0123456789ab ("hv: the cause")')]
    assert bad == ["Fixes: abc123", "Fixes: 0123456789abcdef"]
    assert F.signed_off_by(msg) == ["a@example.com", "b@example.com"]
    assert F.emails('"K. Y. Srinivasan" <kys@microsoft.com>, linux-hyperv@vger.kernel.org') \
        == ["kys@microsoft.com", "linux-hyperv@vger.kernel.org"]


def test_profiles() -> None:
    assert profiles.pick("auto", ["drivers/hv/vmbus_drv.c"]).name == "default"
    netdev = profiles.pick("auto", ["drivers/net/hyperv/netvsc.c"])
    assert netdev.name == "netdev" and "--strict" in netdev.checkpatch_args
    assert profiles.pick("none", []) is None
    assert not profiles.PROFILES["default"].fails("get_maintainer")
    with pytest.raises(UserError, match="expected one of auto, default, netdev, none"):
        profiles.pick("strict", [])
