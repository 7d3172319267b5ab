"""The check stage on the fake kbuild tree: real sparse and real gcc with W=1
on the files each patch touches, Fixes: against real history, Signed-off-by,
and get_maintainer.pl's answer against the To/Cc of a patch that came by mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.report import view
from hvlab.results import Status
from tests.conftest import Env, git
from tests.conftest import case_status as status
from tests.integration.test_build import fake_kernel
from tests.lore_server import lore_server, series_thread

pytestmark = pytest.mark.integration


def commit_series(upstream: Path, out: Path, commits: list[tuple[str, str, str, str]]) -> Path:
    """(file, old, new, message) per commit on a side branch, format-patch-ed."""
    git(upstream, "checkout", "-q", "-b", f"series-{out.name}")
    for file, old, new, message in commits:
        path = upstream / file
        text = path.read_text()
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1))
        git(upstream, "commit", "-q", "-a", "-m", message)
    out.mkdir(parents=True)
    git(upstream, "format-patch", "-q", "-o", str(out), f"-{len(commits)}")
    git(upstream, "checkout", "-q", "main")
    return out


SOB = "\n\nSigned-off-by: Test Author <author@example.com>"


def test_each_patch_is_checked_against_the_tree_before_it(env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    root = git(upstream, "rev-parse", "main")
    series = commit_series(upstream, tmp_path / "s", [
        ("drivers/hv/vmbus_drv.c", "int vmbus_init(void)",
         "int hv_undeclared_helper(void)\n{\n\treturn 1;\n}\n\nint vmbus_init(void)",
         "hv: add a helper nobody declares" + SOB),
        ("drivers/hv/connection.c", "/*", "/* connection */\n/*",
         f"hv: a comment\n\nFixes: {root[:12]} (\"fake kernel\")" + SOB),
        ("drivers/hv/hv_util.c", "/*", "/* util */\n/*",
         f"hv: a wrong Fixes and no sign-off\n\nFixes: {root[:12]} (\"another subject\")\n"
         "Fixes: 0123456789ab (\"a commit the tree never had\")"),
    ])
    done = env.inv("build", "--kernel", "k", "--series", str(series))
    assert done.returncode == 1, done.stderr
    # the plain build gate passes what only W=1 and sparse see
    build = env.suite("local.build")
    assert status(build["build: k"]) == "pass"
    assert not [n for n in build if n.startswith("new warning")]
    checks = env.suite("local.check")
    one = "hv: add a helper nobody declares"
    sparse = checks[f"sparse: {one}"]
    assert status(sparse) == "failure"
    assert "drivers/hv/vmbus_drv.c:4: symbol 'hv_undeclared_helper' was not declared" \
        in sparse.result[0].message
    w1 = checks[f"W=1: {one}"]
    assert status(w1) == "failure"
    assert "no previous prototype for 'hv_undeclared_helper'" in w1.result[0].message
    assert "[-Wmissing-prototypes]" in w1.result[0].message
    # vmbus_init() had the same findings before the patch: not the patch's
    assert "vmbus_init" not in (sparse.system_out or "") + (w1.system_out or "")
    assert "hv_undeclared_helper" in (sparse.system_out or "")
    assert status(checks[f"signoff: {one}"]) == "pass"
    two = "hv: a comment"
    assert status(checks[f"sparse: {two}"]) == "pass"
    assert status(checks[f"W=1: {two}"]) == "pass"
    assert status(checks[f"fixes: {two}"]) == "pass"
    three = "hv: a wrong Fixes and no sign-off"
    fixes = checks[f"fixes: {three}"]
    assert status(fixes) == "failure"
    assert f"commit {root[:12]} is \"fake kernel\"" in fixes.result[0].message
    assert "(and 1 more)" in fixes.result[0].message
    assert "Fixes: 0123456789ab (\"a commit the tree never had\"): no commit 0123456789ab in " \
        "the kernel's history" in fixes.result[0].text
    signoff = checks[f"signoff: {three}"]
    assert status(signoff) == "failure"
    assert "no Signed-off-by: from the author <author@example.com>" in signoff.result[0].message
    # the fake tree makes hv_util.ko with no object; it has no kernel-doc script
    skipped = checks[f"sparse: {three}"]
    assert status(skipped) == "skipped"
    assert "no C file it touches is built" in skipped.result[0].message
    assert status(checks[f"kernel-doc: {three}"]) == "skipped"
    assert status(checks[f"get_maintainer: {three}"]) == "skipped"
    assert env.suite_properties("local.check")["profile"] == "default"
    tree = env.kernels / "worktrees" / "k"
    assert git(tree, "status", "--porcelain") == ""
    # --checks none: no check stage, the build alone decides
    quiet = env.inv("build", "--kernel", "k", "--series", str(series), "--checks", "none")
    assert quiet.returncode == 0, quiet.stderr
    assert "check" not in {s.split(".")[-1] for s in _suites(env)}
    assert not [c for c in env.suite("local.patch") if c.startswith("checkpatch: ")]
    bad = env.inv("build", "--kernel", "k", "--series", str(series), "--checks", "strict")
    assert bad.returncode == 2 and "--checks strict: expected one of" in bad.stderr


def test_fixes_on_a_source_without_history_is_skipped_with_the_reason(
        env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    series = commit_series(upstream, tmp_path / "s", [
        ("drivers/hv/connection.c", "/*", "/* connection */\n/*",
         "hv: a comment\n\nFixes: 0123456789ab (\"something\")" + SOB)])
    env.write("kernels/k.yaml", (env.configs / "kernels" / "k.yaml").read_text().replace(
        f"git: {upstream}\n  ref: main", f"path: {upstream}"))
    done = env.inv("build", "--kernel", "k", "--series", str(series))
    assert done.returncode == 0, done.stderr
    fixes = env.suite("local.check")["fixes: hv: a comment"]
    assert status(fixes) == "skipped"
    assert "the kernel source has no history" in fixes.result[0].message


def _suites(env: Env) -> list[str]:
    import junitparser

    return [ts.name for ts in junitparser.JUnitXml.fromfile(str(env.latest / "junit.xml"))]


def test_kbuild_objects_come_from_the_thin_archive_and_the_modules_mod_files(
        tmp_path: Path) -> None:
    import subprocess

    from hvlab.build.builder import kbuild_objects

    bd = tmp_path / "build"
    for rel in ("drivers/hv/vmbus_drv.o", "drivers/hv/hv.o", "kernel/fork.o",
                "drivers/hv/hv_util.o", "drivers/hv/hv_kvp.o"):
        (bd / rel).parent.mkdir(parents=True, exist_ok=True)
        (bd / rel).write_bytes(b"not an ELF file: a thin archive only names it\n")
    assert kbuild_objects(bd) == []  # no vmlinux.a: nothing recorded
    # as kbuild makes it: a thin archive whose members are named relative to it
    subprocess.run(["ar", "cDPrST", "vmlinux.a", "drivers/hv/vmbus_drv.o", "drivers/hv/hv.o",
                    "kernel/fork.o"], cwd=bd, check=True)
    (bd / "modules.order").write_text("drivers/hv/hv_utils.ko\n")
    (bd / "drivers/hv/hv_utils.mod").write_text("drivers/hv/hv_util.o drivers/hv/hv_kvp.o\n")
    assert kbuild_objects(bd) == ["drivers/hv/hv.o", "drivers/hv/hv_kvp.o",
                                  "drivers/hv/hv_util.o", "drivers/hv/vmbus_drv.o",
                                  "kernel/fork.o"]


# A stand-in for the tree's scripts/get_maintainer.pl, as hvlab runs it (the
# patch on stdin, --no-rolestats --no-multiline: one line, comma-separated):
# drivers/hv/ has two maintainers and a list.
GET_MAINTAINER = r"""#!/usr/bin/perl
use strict; use warnings;
my $hv = grep { m{^\+\+\+ b/drivers/hv/} } <STDIN>;
print "K. Y. Srinivasan <kys\@microsoft.com>, Dexuan Cui <decui\@microsoft.com>, " .
      "linux-hyperv\@vger.kernel.org\n" if $hv;
"""


def test_a_maintainer_the_mail_did_not_address_is_a_warning_not_a_failure(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = fake_kernel(env, tmp_path)
    script = upstream / "scripts" / "get_maintainer.pl"
    script.write_text(GET_MAINTAINER)
    git(upstream, "add", "scripts/get_maintainer.pl")
    git(upstream, "commit", "-q", "-m", "scripts: get_maintainer.pl")
    subject = "hv: a comment"
    patches = commit_series(upstream, tmp_path / "s", [
        ("drivers/hv/connection.c", "/*", "/* connection */\n/*", subject + SOB)])
    # sent to the list, Cc K. Y. Srinivasan and Wei Liu: not Dexuan Cui
    thread = series_thread(sorted(patches.iterdir()), "gm")
    assert "decui" not in thread[1].to + thread[1].cc
    with lore_server() as server:
        server.add(*thread)
        monkeypatch.setenv("HVLAB_LORE_URL", server.base)
        done = env.inv("build", "--kernel", "k", "--series", "lore:gm-0@hvlab.invalid")
    assert done.returncode == 0, done.stderr  # a warning fails nothing
    [check] = [v for v in view.parse((env.latest / "junit.xml").read_text())
               if v.stage == "check"]
    got = {c.name: (c.status, c.message) for c in check.cases}
    assert got.pop(f"get_maintainer: {subject}") == (
        Status.PASS, "warning: not addressed (To/Cc): decui@microsoft.com")
    assert got == {f"{c}: {subject}": (Status.PASS, "") for c in
                   ("sparse", "W=1", "fixes", "signoff")} | {
        f"kernel-doc: {subject}": (Status.SKIP, "the tree has no scripts/kernel-doc")}
    output = env.suite("local.check")[f"get_maintainer: {subject}"].system_out or ""
    assert "not addressed (To/Cc): decui@microsoft.com" in output
    assert "kys@microsoft.com" not in output  # addressed: Cc
    summary = (env.latest / "summary.md").read_text()
    assert summary.splitlines()[2].startswith("**PASS**")
    assert "## Warnings (1, not failing)" in summary
    assert "not addressed (To/Cc): decui@microsoft.com" in summary
