"""Where a series comes from, beyond a directory or a file (pure).

``lore:<message-id>``: a thread of a public-inbox archive (lore.kernel.org's
layout: ``<base><message-id>/t.mbox.gz``).  ``git:<repo>#<base>..<head>``:
the commits of a git range.  Also what b4 reports about the series it made,
and the ``base-commit:`` a series names (``git format-patch --base``).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from hvlab.errors import UserError

DEFAULT_LORE_URL = "https://lore.kernel.org/all/"
MAX_MSGID = 998  # RFC 5322: a header line's limit
_REV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}^~+-]*$")
_BASE_COMMIT = re.compile(r"^base-commit: ([0-9a-f]{7,64})\s*$", re.M)
_TRAILER_ADDED = re.compile(r"^\s+\+ ([A-Za-z-]+-by: .+)$")
_PATCH_LINE = re.compile(r"^\s+\[PATCH[^\]]*\]\s*(.*)$")
_B4_WARNING = re.compile(r"^\s*(WARNING|NOTE): (.+)$")
_B4_MISSING = re.compile(r"^\s*ERROR: missing \[(\d+/\d+)\]")


@dataclass(frozen=True)
class LoreRef:
    msgid: str  # without angle brackets

    @property
    def arg(self) -> str:
        return f"lore:{self.msgid}"


@dataclass(frozen=True)
class GitRange:
    repo: str  # a path or a URL git can fetch
    base: str
    head: str

    @property
    def arg(self) -> str:
        return f"git:{self.repo}#{self.base}..{self.head}"


def parse_arg(arg: str) -> LoreRef | GitRange | None:
    """``lore:``/``git:`` arguments; None for a series name or path."""
    if arg.startswith("lore:"):
        return LoreRef(message_id(arg[len("lore:"):], arg))
    if arg.startswith("git:"):
        return git_range(arg)
    return None


def message_id(text: str, arg: str) -> str:
    msgid = text.strip()
    if msgid.startswith("<") and msgid.endswith(">"):
        msgid = msgid[1:-1]
    if not msgid:
        raise UserError(f"--series {arg}: no message id after 'lore:'")
    if len(msgid) > MAX_MSGID:
        raise UserError(f"--series {arg[:60]}...: a message id is at most {MAX_MSGID} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "<>" for c in msgid):
        raise UserError(f"--series {arg!r}: a message id has no spaces, control characters "
                        "or angle brackets inside")
    if "@" not in msgid:
        raise UserError(f"--series {arg}: '{msgid}' is not a message id (no '@'), e.g. "
                        "lore:20240101120000.1234-1-someone@example.com")
    return msgid


def git_range(arg: str) -> GitRange:
    repo, sep, revs = arg[len("git:"):].rpartition("#")
    base, dots, head = revs.partition("..")
    if not (sep and repo and dots and base and head) or repo.startswith("-") \
            or head.startswith("."):
        raise UserError(f"--series {arg}: expected git:<repo>#<base>..<head>, e.g. "
                        "git:/src/linux#v6.1..hyperv-fixes")
    for rev in (base, head):
        if not _REV.match(rev) or ".." in rev:
            raise UserError(f"--series {arg}: '{rev}' is not a revision git takes here")
    return GitRange(repo, base, head)


def lore_base(env_value: str | None) -> str:
    base = (env_value or DEFAULT_LORE_URL).strip()
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme not in ("http", "https", "file"):
        raise UserError(f"HVLAB_LORE_URL={base!r}: expected an http(s):// or file:// URL "
                        f"(default {DEFAULT_LORE_URL})")
    return base if base.endswith("/") else base + "/"


def thread_url(base: str, msgid: str) -> str:
    """lore's thread mbox of ``msgid`` (``/`` and ``%`` in the id escaped as lore does)."""
    return f"{base}{urllib.parse.quote(msgid, safe='@!$&*+=~,;:')}/t.mbox.gz"


def base_commit(first_message: str) -> str:
    """The ``base-commit:`` of a series: in the cover letter, or the first patch
    when it was sent without one; "" when it names none."""
    m = _BASE_COMMIT.search(first_message)
    return m.group(1) if m else ""


@dataclass(frozen=True)
class B4Report:
    trailers: tuple[tuple[str, str], ...]  # (patch subject, trailer b4 added)
    notes: tuple[str, ...]  # b4's WARNING/NOTE lines
    missing: tuple[str, ...] = ()  # "2/3": patches the thread lacks


def parse_b4_am(output: str) -> B4Report:
    """The trailers ``b4 am`` added per patch and what it warned about."""
    trailers: list[tuple[str, str]] = []
    notes: list[str] = []
    missing: list[str] = []
    subject = ""
    for line in output.splitlines():
        if gap := _B4_MISSING.match(line):
            missing.append(gap.group(1))
        elif m := _PATCH_LINE.match(line):
            subject = m.group(1).strip()
        elif (t := _TRAILER_ADDED.match(line)) and subject:
            trailers.append((subject, t.group(1).strip()))
        elif w := _B4_WARNING.match(line):
            notes.append(f"{w.group(1)}: {w.group(2).strip()}")
    return B4Report(tuple(trailers), tuple(notes), tuple(missing))
