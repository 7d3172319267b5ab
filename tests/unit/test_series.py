"""Series discovery and ordering, mbox splitting, subjects, the KCIDB patchset hash."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from hvlab.patch import series as S
from hvlab.patch.discover import load_series

pytestmark = pytest.mark.unit


def mail(subject: str, file: str = "drivers/hv/vmbus_drv.c", sha: str = "a" * 40) -> bytes:
    return (
        f"From {sha} Mon Sep 17 00:00:00 2001\n"
        "From: Dev <dev@example.com>\n"
        "Date: Tue, 1 Oct 2024 10:00:00 +0000\n"
        f"Subject: {subject}\n\n"
        "Body text.\n\nSigned-off-by: Dev <dev@example.com>\n---\n"
        f"diff --git a/{file} b/{file}\n"
        f"--- a/{file}\n+++ b/{file}\n@@ -1 +1 @@\n-old\n+new\n-- \n2.39.5\n\n"
    ).encode()


def test_series_file_quilt_format() -> None:
    entries, problems = S.parse_series_file(
        "# comment\n\n0002-b.patch\n0001-a.patch -p1  # trailing comment\n  \n")
    assert [e.name for e in entries] == ["0002-b.patch", "0001-a.patch"]
    assert [e.line for e in entries] == [3, 4]
    assert problems == []


def test_series_file_rejects_escapes_and_options() -> None:
    entries, problems = S.parse_series_file("../x.patch\na.patch -p0\n")
    assert [p.line for p in problems] == [1, 2]
    assert [e.name for e in entries] == ["a.patch"]


def test_directory_ordered_by_series_file(tmp_path: Path) -> None:
    (tmp_path / "a.patch").write_bytes(mail("[PATCH 2/2] second"))
    (tmp_path / "b.patch").write_bytes(mail("[PATCH 1/2] first"))
    (tmp_path / "series").write_text("b.patch\na.patch\n")
    loaded = load_series("s", tmp_path)
    assert loaded.problems == ()
    assert [p.subject for p in loaded.patches] == ["first", "second"]
    assert [p.index for p in loaded.patches] == [1, 2]


def test_directory_ordered_by_name_without_series(tmp_path: Path) -> None:
    (tmp_path / "0002-b.patch").write_bytes(mail("two"))
    (tmp_path / "0001-a.patch").write_bytes(mail("one"))
    (tmp_path / "README").write_text("notes\n")
    (tmp_path / ".hidden").write_text("x\n")
    loaded = load_series("s", tmp_path)
    assert [p.subject for p in loaded.patches] == ["one", "two"]


def test_mbox_with_several_patches_and_a_cover_letter() -> None:
    cover = (b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
             b"From: Dev <dev@example.com>\nSubject: [PATCH 0/2] cover\n\nThe series.\n\n")
    data = cover + mail("[PATCH 1/2] one") + mail("[PATCH 2/2] two", "drivers/hv/hv.c")
    patches = S.parse_patch_file("x.mbox", data)
    assert [p.subject for p in patches] == ["one", "two"]
    assert patches[1].files == ("drivers/hv/hv.c",)
    assert all(p.kind == "mail" for p in patches)


def test_from_line_inside_body_does_not_split() -> None:
    body = mail("one").replace(b"Body text.\n", b"Body text.\nFrom here on it works.\n")
    assert len(S.split_mbox(body)) == 1


def test_subject_prefixes_folding_and_encoding() -> None:
    assert S.clean_subject("[PATCH v2 3/7] [RFC] hv: fix") == "hv: fix"
    folded = mail("[PATCH] Drivers: hv: a long\n subject").decode()
    patches = S.parse_patch_file("f.patch", folded.encode())
    assert patches[0].subject == "Drivers: hv: a long subject"
    assert S.clean_subject("=?utf-8?q?hv=3A_caf=C3=A9?=") == "hv: café"


def test_plain_diff_subject_from_file_name() -> None:
    diff = b"--- a/drivers/hv/hv.c\n+++ b/drivers/hv/hv.c\n@@ -1 +1 @@\n-a\n+b\n"
    patches = S.parse_patch_file("dir/0003-fix-the_balloon.diff", diff)
    assert patches[0].kind == "diff"
    assert patches[0].subject == "fix the balloon"
    assert patches[0].files == ("drivers/hv/hv.c",)


def test_file_without_a_patch_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.patch").write_text("just words\n")
    loaded = load_series("s", tmp_path, "cfg/s")
    assert loaded.problems == ("cfg/s/notes.patch:1: no patch found (neither a mail with a "
                               "diff nor a diff)",)


def test_patchset_hash_matches_kcidb_shell_definition(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i:04d}.patch").write_bytes(mail(f"p{i}", sha=f"{i}" * 40))
    loaded = load_series("s", tmp_path)
    shell = subprocess.run("sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64", shell=True,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert loaded.patchset_hash == shell.strip()
    assert S.patchset_hash([]) == ""


def test_patch_sha256_is_over_its_bytes() -> None:
    data = mail("x")
    (patch,) = S.parse_patch_file("x.patch", data)
    assert patch.sha256 == hashlib.sha256(data).hexdigest()


def test_a_series_cannot_reach_outside_its_directory(tmp_path: Path) -> None:
    outside = tmp_path / "secret.patch"
    outside.write_bytes(mail("not part of the series"))
    series = tmp_path / "s"
    series.mkdir()
    (series / "a.patch").write_bytes(mail("one"))
    (series / "link.patch").symlink_to(outside)
    (series / "series").write_text("a.patch\nlink.patch\n../secret.patch\n")
    loaded = load_series("s", series, "patches/s")
    assert loaded.problems == (
        "patches/s/series:3: '../secret.patch' must be a path inside the series",
        "patches/s/series:2: patch 'link.patch' points outside the series directory")
    (series / "series").unlink()
    loaded = load_series("s", series, "patches/s")
    assert loaded.problems == ("patches/s/link.patch: a link that points outside the series "
                               "directory",)
    assert [p.subject for p in loaded.patches] == ["one"]


def test_huge_patches_and_series_are_refused_before_they_are_read(tmp_path: Path) -> None:
    big = tmp_path / "big" / "0001-big.patch"
    big.parent.mkdir()
    with big.open("wb") as fh:  # sparse: 100 MB that take no disk
        fh.truncate(100_000_000)
    loaded = load_series("big", big.parent, "patches/big")
    assert loaded.problems == ("patches/big/0001-big.patch:1: 100000000 bytes: larger than "
                               "any patch should be (64 MiB at most)",)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(5001):
        (many / f"{i:05d}.patch").write_bytes(b"")
    assert load_series("many", many, "patches/many").problems == (
        "patches/many: 5001 patch files: more than a series holds (5000 at most)",)
    mbox = tmp_path / "all.mbox"
    mbox.write_bytes(b"".join(mail(f"[PATCH {i}/5001] p{i}") for i in range(1, 5002)))
    assert load_series("mbox", mbox, "all.mbox").problems == (
        "all.mbox: 5001 patches: more than a series holds (5000 at most)",)


def test_a_series_file_that_links_outside_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("https://user:hunter2@example.com\n")
    series = tmp_path / "s"
    series.mkdir()
    (series / "series").symlink_to(secret)
    loaded = load_series("s", series, "patches/s")
    assert loaded.problems == ("patches/s/series: a link that points outside the series "
                               "directory",)
    (series / "series").unlink()
    (series / "series").write_text("a\0b.patch\n")
    assert load_series("s", series, "patches/s").problems == (
        "patches/s/series:1: patch 'a\0b.patch' points outside the series directory",)


# The layout of a cover letter from `b4 send` (b4's default cover template:
# body, "---", shortlog, diffstat, "---", base-commit, change-id, signature),
# sent quoted-printable as mail clients do for long lines.
B4_COVER = """\
From: Ann Author <ann@example.org>
Subject: [PATCH v2 0/2] Drivers: hv: vmbus: clearer protocol lines
Message-Id: <20261121-vmbus-v2-0-abc@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

The negotiated VMBus protocol version is logged once and exposed in sysfs,=
 so that a guest can tell which host features it may use =E2=80=94 without=
 parsing dmesg.

---
Ann Author (2):
      Drivers: hv: vmbus: log the negotiated protocol version
      Drivers: hv: vmbus: expose the negotiated protocol version

 drivers/hv/vmbus_drv.c | 12 ++++++++++++
 1 file changed, 12 insertions(+)
---
base-commit: 830b3c68c1fb1e9176028d02ef86f3cf76aa2476
change-id: 20261121-vmbus-1a2b3c

Best regards,
--=20
Ann Author <ann@example.org>
"""


def test_cover_body_is_what_the_cover_letter_says() -> None:
    body = S.cover_body(B4_COVER)
    assert body == ("The negotiated VMBus protocol version is logged once and exposed in "
                    "sysfs, so that a guest can tell which host features it may use \u2014 "
                    "without parsing dmesg.")
    # git format-patch --cover-letter: the shortlog follows the blurb directly
    plain = ("Subject: [PATCH 0/1] x\n\nA blurb.\n\nAnn Author (1):\n  x\n\n"
             " a.c | 1 +\n-- \n2.39.5\n")
    assert S.cover_body(plain) == "A blurb."
    long = "Subject: x\n\n" + "".join(f"line {i}\n" for i in range(100))
    assert S.cover_body(long, limit=3) == "line 0\nline 1\nline 2\n[... 97 more lines]"
