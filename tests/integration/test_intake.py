"""Series as maintainers receive them: a lore thread through real b4 and git am
(the archive is tests/lore_server.py, a stand-in in public-inbox's layout),
and a git range."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAKE_TREE, Env, format_series, git, make_repo
from tests.conftest import case_status as status
from tests.lore_server import LoreServer, lore_server, reply, series_thread

pytestmark = pytest.mark.integration

V1 = [("drivers/hv/vmbus_drv.c", "vmbus line 3 ", "vmbus line three "),
      ("drivers/hv/connection.c", "connection line 5 ", "connection line five ")]
V2 = [("drivers/hv/vmbus_drv.c", "vmbus line 3 ", "vmbus line THREE "),
      ("drivers/hv/connection.c", "connection line 5 ", "connection line FIVE ")]
SUBJECTS = ["hv: change 1 in drivers/hv/vmbus_drv.c", "hv: change 2 in drivers/hv/connection.c"]


@pytest.fixture
def lore(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LoreServer, Path]:
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    with lore_server() as server:
        monkeypatch.setenv("HVLAB_LORE_URL", server.base)
        yield server, upstream


def post_v1_and_v2(server: LoreServer, upstream: Path, tmp_path: Path,
                   base_commit: str) -> None:
    """v1, then v2 sent as a reply to v1's cover (one thread holds both), a
    review of v2's patch 1 and an ack of its patch 2."""
    v1 = series_thread(sorted(format_series(upstream, tmp_path / "v1", V1).iterdir()),
                       "v1", cover_subject="vmbus: clearer lines")
    v2 = series_thread(sorted(format_series(upstream, tmp_path / "v2", V2).iterdir()),
                       "v2", version=2, base_commit=base_commit,
                       cover_subject="vmbus: clearer lines", in_reply_to=v1[0].msgid)
    server.add(*v1)
    server.add(*v2,
               reply(v2[1], "Michael Kelley <mhklinux@outlook.com>",
                     "Reviewed-by: Michael Kelley <mhklinux@outlook.com>", "r1@hvlab.invalid"),
               reply(v2[2], "Wei Liu <wei.liu@kernel.org>",
                     "Acked-by: Wei Liu <wei.liu@kernel.org>", "r2@hvlab.invalid"))


def test_a_lore_thread_applies_its_newest_revision_with_the_replies_trailers(
        env: Env, lore: tuple[LoreServer, Path], tmp_path: Path) -> None:
    server, upstream = lore
    head = git(upstream, "rev-parse", "main")
    post_v1_and_v2(server, upstream, tmp_path, base_commit=head)
    # any message of the thread names it; v1's cover is the thread's root
    done = env.inv("patch", "--kernel", "k", "--series", "lore:<v1-0@hvlab.invalid>")
    assert done.returncode == 0, done.stderr
    found = env.suite("local.patch")
    assert [n for n in found if not n.startswith("checkpatch")] == SUBJECTS
    assert all(status(c) == "pass" for c in found.values())
    tree = env.kernels / "worktrees" / "k"
    assert "vmbus line THREE" in (tree / "drivers/hv/vmbus_drv.c").read_text()  # v2, not v1
    first, second = git(tree, "log", "--format=%B%x00", "-2", "--reverse").split("\0")[:2]
    assert "Reviewed-by: Michael Kelley <mhklinux@outlook.com>" in first
    assert "Acked-by: Wei Liu <wei.liu@kernel.org>" in second
    assert "Reviewed-by" not in second and "Acked-by" not in first
    assert git(tree, "rev-parse", "HEAD~2") == head
    assert f"base-commit {head[:12]} named by the series: applied on it" in done.stderr
    assert "trailer from the thread: hv: change 1 in drivers/hv/vmbus_drv.c: Reviewed-by: " \
        "Michael Kelley" in done.stderr
    props = env.suite_properties("local.patch")
    assert props["series_origin"] == "lore:v1-0@hvlab.invalid"
    # --offline: the thread cached by its message id, not one request more
    asked = len(server.requests)
    again = env.inv("patch", "--kernel", "k", "--series", "lore:v1-0@hvlab.invalid", "--offline")
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == asked
    assert "cached, --offline" in again.stderr
    # b4 made the series once from these bytes: the offline rerun took its output
    (am,) = (env.kernels / "cache" / "series" / "lore").glob("*/am")
    assert am.is_dir()
    made = {p.name: p.stat().st_mtime_ns for p in am.iterdir()}
    rerun = env.inv("patch", "--kernel", "k", "--series", "lore:v1-0@hvlab.invalid", "--offline")
    assert rerun.returncode == 0, rerun.stderr
    assert {p.name: p.stat().st_mtime_ns for p in am.iterdir()} == made
    # a new reply changes the thread: b4 runs again and its trailer is applied
    v2_patch2 = next(m for t in server.threads for m in t if m.msgid == "v2-2@hvlab.invalid")
    server.add(reply(v2_patch2, "Dexuan Cui <decui@microsoft.com>",
                     "Tested-by: Dexuan Cui <decui@microsoft.com>", "r3@hvlab.invalid"))
    fresh = env.inv("patch", "--kernel", "k", "--series", "lore:v1-0@hvlab.invalid")
    assert fresh.returncode == 0, fresh.stderr
    assert "Tested-by: Dexuan Cui" in git(tree, "log", "--format=%B", "-1")


def test_a_cover_letter_ack_and_a_base_commit_the_source_lacks(
        env: Env, lore: tuple[LoreServer, Path], tmp_path: Path) -> None:
    server, upstream = lore
    thread = series_thread(sorted(format_series(upstream, tmp_path / "s", V1).iterdir()), "s",
                           base_commit="1234567890ab" * 3 + "1234", cover_subject="vmbus")
    server.add(*thread, reply(thread[0], "Wei Liu <wei.liu@kernel.org>",
                              "For the series:\nAcked-by: Wei Liu <wei.liu@kernel.org>",
                              "ack@hvlab.invalid"))
    done = env.inv("patch", "--kernel", "k", "--series", "lore:s-2@hvlab.invalid")
    assert done.returncode == 0, done.stderr
    head = git(upstream, "rev-parse", "main")
    assert (f"base-commit 1234567890ab named by the series is not in k's source; applied on "
            f"{head[:12]} (the kernel source) instead") in done.stderr
    tree = env.kernels / "worktrees" / "k"
    for body in git(tree, "log", "--format=%B%x00", "-2").split("\0")[:2]:
        assert "Acked-by: Wei Liu <wei.liu@kernel.org>" in body
    # the cover letter is in the reports, without what git and b4 append
    run = (env.reports / "latest").resolve()
    md = (run / "summary.md").read_text()
    page = (run / "report.html").read_text()
    assert "## Series" in md and "**[\\[PATCH 0/2\\] vmbus](" in md
    assert "> This series changes vmbus." in md
    assert "<h2 id='series'>Series</h2>" in page and "This series changes vmbus." in page
    assert page.index("id='series'") < page.index("id='environment'")
    for text in (md, page):
        assert "base-commit" not in text and "2.39.5" not in text


def test_unknown_message_id_unreachable_archive_and_a_thread_without_patches(
        env: Env, lore: tuple[LoreServer, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, upstream = lore
    done = env.inv("patch", "--kernel", "k", "--series", "lore:nobody-sent-this@hvlab.invalid")
    assert done.returncode == 2, done.stderr
    assert "the archive does not know this message id" in done.stderr
    assert "HTTP 404" in done.stderr and "Traceback" not in done.stderr
    server.add(*series_thread([], "talk", cover_subject="a question"))
    done = env.inv("patch", "--kernel", "k", "--series", "lore:talk-0@hvlab.invalid")
    assert done.returncode == 2, done.stderr
    assert "holds no patches" in done.stderr
    gap = series_thread(sorted(format_series(upstream, tmp_path / "gap", V1).iterdir()), "gap")
    server.add(gap[0], gap[2])  # patch 1/2 never reached the list
    done = env.inv("patch", "--kernel", "k", "--series", "lore:gap-0@hvlab.invalid")
    assert done.returncode == 2, done.stderr
    assert "lacks patch 1/2 of the series" in done.stderr
    offline = env.inv("patch", "--kernel", "k", "--series", "lore:never-fetched@hvlab.invalid",
                      "--offline")
    assert offline.returncode == 2 and "not in the cache" in offline.stderr
    bad = env.inv("patch", "--kernel", "k", "--series", "lore:no-at-sign")
    assert bad.returncode == 2 and "is not a message id" in bad.stderr
    monkeypatch.setenv("HVLAB_LORE_URL", "http://127.0.0.1:1/all/")
    down = env.inv("patch", "--kernel", "k", "--series", "lore:v1-0@hvlab.invalid")
    assert down.returncode == 3, down.stderr
    assert "cannot reach the archive" in down.stderr and "Traceback" not in down.stderr


def test_a_git_range_is_a_series_of_one_case_per_commit(env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    format_series(upstream, tmp_path / "topic", V1)  # leaves branch series-topic
    done = env.inv("patch", "--kernel", "k", "--series", f"git:{upstream}#main..series-topic")
    assert done.returncode == 0, done.stderr
    found = env.suite("local.patch")
    assert [n for n in found if not n.startswith("checkpatch")] == SUBJECTS
    assert all(status(c) == "pass" for c in found.values())
    empty = env.inv("patch", "--kernel", "k", "--series", f"git:{upstream}#main..main")
    assert empty.returncode == 2 and "no commits in main..main" in empty.stderr
    missing = env.inv("patch", "--kernel", "k", "--series", f"git:{upstream}#main..nope")
    assert missing.returncode == 2 and "has no commit 'nope'" in missing.stderr


def test_a_remote_range_is_mirrored_and_a_lock_a_killed_fetch_left_is_removed(
        env: Env, tmp_path: Path) -> None:
    """A range of a repository that is not a local folder is fetched into a
    mirror of hvlab's; a fetch killed there leaves a ref's lock, which the next
    run (holding the range's lock) removes before it fetches again."""
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    format_series(upstream, tmp_path / "topic", V1)
    arg = f"git:file://{upstream}#main..series-topic"
    first = env.inv("patch", "--kernel", "k", "--series", arg)
    assert first.returncode == 0, first.stderr
    [mirror] = env.kernels.rglob("series/git/*/repo.git")
    lock = mirror / "refs" / "heads" / "main.lock"
    lock.write_text("")
    # main moves upstream, so the next fetch has to update that ref
    (upstream / "NEWS").write_text("an unrelated change\n")
    git(upstream, "add", "NEWS")
    git(upstream, "commit", "-q", "-m", "news")
    again = env.inv("patch", "--kernel", "k", "--series", arg)
    assert again.returncode == 0, again.stderr
    assert not lock.exists()
    assert "main.lock, a git lock a killed run left behind" in again.stderr
    found = env.suite("local.patch")
    assert [n for n in found if not n.startswith("checkpatch")] == SUBJECTS


def test_a_maildir_applies_in_the_order_of_its_patch_counters(env: Env, tmp_path: Path) -> None:
    """What mutt or `b4 mbox --maildir` leaves: one message per file under cur/
    and new/, named in arrival order, not in series order."""
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    thread = series_thread(sorted(format_series(upstream, tmp_path / "md", V1).iterdir()), "md")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    # patch 2 arrived first; the cover letter last
    (maildir / "new" / "1700000001.a.host").write_text(thread[2].text())
    (maildir / "cur" / "1700000002.b.host:2,S").write_text(thread[1].text())
    (maildir / "new" / "1700000003.c.host").write_text(thread[0].text())
    done = env.inv("patch", "--kernel", "k", "--series", str(maildir))
    assert done.returncode == 0, done.stderr
    found = env.suite("local.patch")
    assert [n for n in found if not n.startswith("checkpatch")] == SUBJECTS
