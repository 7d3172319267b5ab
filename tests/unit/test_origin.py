"""Series origins (lore:, git:), base-commit and b4's report, on recorded b4 output."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.errors import UserError
from hvlab.patch import origin as O
from hvlab.patch.series import cover_in_thread, cover_letter

pytestmark = pytest.mark.unit
B4 = Path(__file__).resolve().parent.parent / "data" / "b4"


def test_lore_arguments() -> None:
    assert O.parse_arg("lore:<20240101.1-1-a@b.c>") == O.LoreRef("20240101.1-1-a@b.c")
    assert O.parse_arg("lore:x/y@z") == O.LoreRef("x/y@z")
    assert O.parse_arg("hyperv-sample") is None
    for bad, said in [("lore:", "no message id"), ("lore:abc", "no '@'"),
                      ("lore:a b@c", "no spaces"), ("lore:a\x1b@c", "control characters"),
                      ("lore:" + "a" * 999 + "@c", "at most 998")]:
        with pytest.raises(UserError, match=said):
            O.parse_arg(bad)


def test_thread_url_escapes_as_lore_does() -> None:
    base = O.lore_base(None)
    assert base == "https://lore.kernel.org/all/"
    assert O.thread_url(base, "a/b%c@d") == "https://lore.kernel.org/all/a%2Fb%25c@d/t.mbox.gz"
    assert O.lore_base("http://127.0.0.1:8000/all") == "http://127.0.0.1:8000/all/"
    with pytest.raises(UserError, match="HVLAB_LORE_URL"):
        O.lore_base("ftp://mirror/all/")


def test_git_ranges() -> None:
    assert O.parse_arg("git:/src/linux#v6.1..hyperv-fixes") == \
        O.GitRange("/src/linux", "v6.1", "hyperv-fixes")
    assert O.parse_arg("git:https://h/x.git#a~2..b").arg == "git:https://h/x.git#a~2..b"
    for bad in ["git:/src/linux", "git:/src#v6.1", "git:#a..b", "git:-x#a..b",
                "git:/r#a...b", "git:/r#a..-b", "git:/r#a b..c"]:
        with pytest.raises(UserError):
            O.parse_arg(bad)


def test_base_commit_in_a_cover_or_first_patch() -> None:
    sha = "80738f98f40eed4db3482a5855e92d61c59bdd36"
    assert O.base_commit(f"Subject: x\n\nbody\n\nbase-commit: {sha}\n-- \n2.39\n") == sha
    assert O.base_commit("base-commit: not-hex\n") == ""
    assert O.base_commit("a line that ends in base-commit: 1234567\n") == ""


def test_b4_report_of_a_whole_thread() -> None:
    report = O.parse_b4_am((B4 / "am-0.16-offline.txt").read_text())
    assert [s for s, _ in report.trailers] == [
        "Drivers: hv: vmbus: log the negotiated protocol version clearly",
        "Drivers: hv: vmbus: use sysfs_emit() for the hibernation attribute",
        "Drivers: hv: vmbus: expose the negotiated protocol version in sysfs"]
    assert {t for _, t in report.trailers} == {"Reviewed-by: Michael Kelley <mhklinux@outlook.com>"}
    assert report.missing == () and report.notes == ()


def test_b4_report_of_a_thread_missing_a_patch() -> None:
    report = O.parse_b4_am((B4 / "am-0.16-incomplete.txt").read_text())
    assert report.missing == ("2/3",)
    assert report.notes == ("WARNING: Thread incomplete!",)
    assert len(report.trailers) == 2


def mail(msgid: str, subject: str, body: str, parent: str = "") -> bytes:
    head = f"From x@z Thu Jan  1 00:00:00 1970\nFrom: A <a@b>\nSubject: {subject}\n" \
           f"Message-Id: <{msgid}>\n" + (f"In-Reply-To: <{parent}>\n" if parent else "")
    return (head + "\n" + body + "\n\n").encode()


DIFF = "---\ndiff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"


def test_the_cover_a_patch_answers_and_the_cover_of_a_file() -> None:
    cover = mail("c@x", "[PATCH v2 0/1] things", "base-commit: 1234567\n", "old-cover@x")
    patch = mail("p@x", "[PATCH v2 1/1] thing", DIFF, "c@x")
    thread = mail("old-cover@x", "[PATCH 0/1] things", "v1") + cover + patch
    assert "base-commit: 1234567" in cover_in_thread(thread, patch)
    assert cover_in_thread(thread, mail("q@x", "[PATCH 1/1] t", DIFF, "p@x")) == ""
    assert cover_in_thread(thread, mail("nobody@x", "s", DIFF)) == ""
    assert "things" in cover_letter(mail("r@x", "Re: [PATCH 1/1] t", "LGTM") + cover)
    assert cover_letter(mail("r@x", "Re: [PATCH 1/1] t", "LGTM")) == ""
