"""The patch stage on a small real git tree: git am -3, conflicts, mbox, plain diffs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import junitparser
import pytest

from tests.conftest import FAKE_TREE, Env, format_series, git, make_repo, write_tree
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration


def setup_kernel(env: Env, tmp_path: Path) -> Path:
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    return upstream


def cases(env: Env, suite: str = "local.patch") -> dict[str, junitparser.TestCase]:
    return env.suite(suite)


def test_series_applies_one_case_per_patch(env: Env, tmp_path: Path,
                                           validate_junit: Callable[[Path], None]) -> None:
    upstream = setup_kernel(env, tmp_path)
    format_series(upstream, env.configs / "patches" / "good", [
        ("drivers/hv/vmbus_drv.c", "vmbus line 3 ", "vmbus line three "),
        ("drivers/hv/connection.c", "connection line 5 ", "connection line five "),
    ])
    done = env.inv("patch", "--kernel", "k", "--series", "good")
    assert done.returncode == 0, done.stderr
    validate_junit(env.latest / "junit.xml")
    found = cases(env)
    assert {n: status(c) for n, c in found.items()} == {
        "hv: change 1 in drivers/hv/vmbus_drv.c": "pass",
        "hv: change 2 in drivers/hv/connection.c": "pass",
        "checkpatch: hv: change 1 in drivers/hv/vmbus_drv.c": "pass",
        "checkpatch: hv: change 2 in drivers/hv/connection.c": "pass",
    }
    tree = env.kernels / "worktrees" / "k"
    assert git(tree, "rev-parse", "--abbrev-ref", "HEAD") == "hvlab/k/good"
    assert "vmbus line three" in (tree / "drivers/hv/vmbus_drv.c").read_text()
    # the patchset hash is a property of every suite
    props = {p.name: p.value for p in list(junitparser.JUnitXml.fromfile(
        str(env.latest / "junit.xml")))[1].properties()}
    assert len(props["patchset_hash"]) == 64
    # a second run is cached and gives the same commit
    first = git(tree, "rev-parse", "HEAD")
    again = env.inv("patch", "--kernel", "k", "--series", "good")
    assert again.returncode == 0 and "patch: PASS" in again.stderr and "(cached)" in again.stderr
    assert git(tree, "rev-parse", "HEAD") == first


def test_conflict_fails_patch_two_skips_the_rest_and_leaves_tree_clean(
        env: Env, tmp_path: Path, validate_junit: Callable[[Path], None]) -> None:
    upstream = setup_kernel(env, tmp_path)
    series = format_series(upstream, tmp_path / "conflict", [
        ("drivers/hv/connection.c", "connection line 2 ", "connection line two "),
        ("drivers/hv/vmbus_drv.c", "vmbus line 10 ", "vmbus line ten "),
        ("drivers/net/hyperv/netvsc.c", "netvsc line 1 ", "netvsc line one "),
    ])
    # the base moves under patch 2: its context no longer exists
    write_tree(upstream, {"drivers/hv/vmbus_drv.c": "/* rewritten */\n" * 40})
    git(upstream, "commit", "-q", "-a", "-m", "rewrite vmbus_drv.c")
    done = env.inv("patch", "--kernel", "k", "--series", str(series))
    assert done.returncode == 1, done.stderr
    validate_junit(env.latest / "junit.xml")
    found = cases(env)
    assert status(found["hv: change 1 in drivers/hv/connection.c"]) == "pass"
    failed = found["hv: change 2 in drivers/hv/vmbus_drv.c"]
    assert status(failed) == "failure"
    assert "conflicts in drivers/hv/vmbus_drv.c" in failed.result[0].message
    assert "Applying: hv: change 2" in failed.system_out
    # the failure's text is git am's own reason, not the message again
    said = failed.result[0].text.split("\n")
    assert said[0] == failed.result[0].message and "Applying: hv: change 2" in said[1]
    assert "Merge conflict in drivers/hv/vmbus_drv.c" in failed.result[0].text
    skipped = found["hv: change 3 in drivers/net/hyperv/netvsc.c"]
    assert status(skipped) == "skipped"
    assert "patch 2 'hv: change 2 in drivers/hv/vmbus_drv.c' failed" in skipped.result[0].message
    tree = env.kernels / "worktrees" / "k"
    assert git(tree, "status", "--porcelain") == ""
    gitdir = Path(git(tree, "rev-parse", "--absolute-git-dir"))
    assert not (gitdir / "rebase-apply").exists()


def test_mbox_file_given_by_path(env: Env, tmp_path: Path) -> None:
    upstream = setup_kernel(env, tmp_path)
    out = format_series(upstream, tmp_path / "fp", [
        ("drivers/hv/vmbus_drv.c", "vmbus line 1 ", "vmbus line one "),
        ("drivers/hv/vmbus_drv.c", "vmbus line 2 ", "vmbus line two "),
    ])
    mbox = tmp_path / "series.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in sorted(out.iterdir())))
    done = env.inv("patch", "--kernel", "k", "--series", str(mbox), "--no-checkpatch")
    assert done.returncode == 0, done.stderr
    assert [n for n in cases(env)] == ["hv: change 1 in drivers/hv/vmbus_drv.c",
                                       "hv: change 2 in drivers/hv/vmbus_drv.c"]


def test_plain_diff_committed_with_message_from_file_name(env: Env, tmp_path: Path) -> None:
    setup_kernel(env, tmp_path)
    series = tmp_path / "diffs"
    series.mkdir()
    (series / "0001-fix-netvsc-comment.diff").write_text(
        "--- a/drivers/net/hyperv/netvsc.c\n+++ b/drivers/net/hyperv/netvsc.c\n"
        "@@ -1,2 +1,2 @@\n-/* netvsc line 1 */\n+/* netvsc line one */\n /* netvsc line 2 */\n")
    done = env.inv("patch", "--kernel", "k", "--series", str(series))
    assert done.returncode == 0, done.stderr
    tree = env.kernels / "worktrees" / "k"
    assert git(tree, "log", "-1", "--format=%s") == "fix netvsc comment"
    assert status(cases(env)["checkpatch: fix netvsc comment"]) == "pass"


def test_checkpatch_error_fails_its_case(env: Env, tmp_path: Path) -> None:
    upstream = setup_kernel(env, tmp_path)
    format_series(upstream, env.configs / "patches" / "ws", [
        ("drivers/hv/connection.c", "connection line 7 */", "connection line 7 */   "),
    ])
    done = env.inv("patch", "--kernel", "k", "--series", "ws")
    assert done.returncode == 1
    found = cases(env)
    assert status(found["hv: change 1 in drivers/hv/connection.c"]) == "pass"
    check = found["checkpatch: hv: change 1 in drivers/hv/connection.c"]
    assert status(check) == "failure"
    assert "1 errors" in check.result[0].message and "trailing whitespace" in \
        check.result[0].message


def test_unknown_series_is_bad_input(env: Env, tmp_path: Path) -> None:
    setup_kernel(env, tmp_path)
    done = env.inv("patch", "--kernel", "k", "--series", "nope")
    assert done.returncode == 2
    assert "--series 'nope' is neither a series in" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_kernel_is_bad_input_and_still_reports(
        env: Env, validate_junit: Callable[[Path], None]) -> None:
    done = env.inv("fetch", "--kernel", "nope")
    assert done.returncode == 2
    assert "unknown kernel 'nope'" in done.stderr
    validate_junit(env.latest / "junit.xml")


def test_config_check_task_exit_codes(env: Env) -> None:
    env.write("kernels/k.yaml", "source:\n  path: /tmp\nbogus: 1\n")
    done = env.inv("config.check")
    assert done.returncode == 2
    assert "kernels/k.yaml:3:1: bogus: unknown key" in done.stdout
    (env.configs / "kernels" / "k.yaml").write_text("source:\n  path: /tmp\n")
    assert env.inv("config.check").returncode == 0


def test_debug_shows_traceback_only_when_asked(env: Env) -> None:
    env.write("kernels/k.yaml", "source:\n  tarball: /nonexistent.tar.xz\n")
    quiet = env.inv("fetch", "--kernel", "k")
    loud = env.inv("fetch", "--kernel", "k", "--debug")
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr


def test_patch_names_that_look_like_shell_or_options_are_only_names(env: Env,
                                                                      tmp_path: Path) -> None:
    """Spaces, quotes, $(...), backticks and leading dashes in patch file names
    (a pull request to configs/ can carry any of them) reach git and checkpatch
    as data."""
    upstream = setup_kernel(env, tmp_path)
    made = format_series(upstream, tmp_path / "made", [
        ("drivers/hv/vmbus_drv.c", "vmbus line 3 ", "vmbus line three "),
        ("drivers/hv/connection.c", "connection line 5 ", "connection line five "),
    ])
    names = ["--exec=touch pwned; $(touch pwned) 'q' \"d\".patch",
             "-rf `touch pwned` & a.patch"]
    series = env.configs / "patches" / "odd"
    series.mkdir(parents=True)
    for name, made_patch in zip(names, sorted(made.iterdir()), strict=True):
        (series / name).write_bytes(made_patch.read_bytes())
    (series / "series").write_text("".join(f"{n.split(' ')[0]}\n" for n in names))
    done = env.inv("config.check")  # a series file splits at blanks: those names are absent
    assert done.returncode == 2 and "patches/odd/series:1:1: patch '--exec=touch' does not " \
        "exist" in done.stdout + done.stderr
    (series / "series").unlink()  # name order instead
    done = env.inv("patch", "--kernel", "k", "--series", "odd")
    assert done.returncode == 0, done.stderr
    assert {status(c) for c in cases(env).values()} == {"pass"}
    tree = env.kernels / "worktrees" / "k"
    assert "connection line five" in (tree / "drivers/hv/connection.c").read_text()
    assert not [p for p in tmp_path.rglob("pwned")], "a name ran as a command"


def test_a_series_that_does_not_apply_says_on_which_other_refs_it_would(
        env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    series = format_series(upstream, tmp_path / "s", [
        ("drivers/hv/vmbus_drv.c", "vmbus line 10 ", "vmbus line ten ")])
    git(upstream, "branch", "next")  # next still has the old vmbus_drv.c
    write_tree(upstream, {"drivers/hv/vmbus_drv.c": "/* rewritten */\n" * 40})
    git(upstream, "commit", "-q", "-a", "-m", "rewrite vmbus_drv.c")
    git(upstream, "branch", "fixes")  # fixes has the rewrite too
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n"
              "  other_refs: [next, fixes, nosuch]\n")
    done = env.inv("patch", "--kernel", "k", "--series", str(series))
    assert done.returncode == 1, done.stderr
    failed = cases(env)["hv: change 1 in drivers/hv/vmbus_drv.c"]
    assert "conflicts in drivers/hv/vmbus_drv.c" in failed.result[0].message
    assert "[cannot apply to k main; applies to next; not to fixes (patch 1), nosuch " \
        "(not fetched: " in failed.result[0].message
    assert failed.result[0].text.split("\n")[-1].startswith(  # the evidence says it too
        "[cannot apply to k main; applies to next;")
    bad = env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n"
                    "  other_refs: [-x]\n")
    check = env.inv("config.check")
    assert check.returncode == 2 and f"{bad.name}:" in check.stderr and "not a ref name" \
        in check.stderr
