"""Patch series discovery and parsing.  Pure: bytes and names in, patches out.

A series is a directory (ordered by its quilt ``series`` file when present,
else by file name) or one file.  A file may hold one ``git format-patch``
mail, an mbox of several, or a plain diff.  Cover letters (mails without a
diff) are dropped.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

_MBOX_FROM = re.compile(rb"^From \S+ .*\d\d:\d\d(:\d\d)?.*$")
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:")
_PATCH_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)+")
_DIFF_GIT = re.compile(r"^diff --git a/(\S+) b/(\S+)", re.M)
_PLUS = re.compile(r"^\+\+\+ (?:b/)?(\S+)", re.M)
_MINUS = re.compile(r"^--- (?:a/)?(\S+)", re.M)
_ADDRESS = re.compile(r"[^\s<>,\"()]+@[^\s<>,\"()]+")
_COUNTER = re.compile(r"\[[^\]]*?\b(\d+)/(\d+)\]")
_COVER = re.compile(r"\[[^\]]*\b0+/\d+\]")
_DIFF_START = re.compile(rb"^(diff --git |--- \S|Index: )", re.M)


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based position in the series
    source: str  # the file it came from (display name)
    subject: str
    kind: str  # "mail" (git am) or "diff" (git apply + commit)
    data: bytes
    files: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    line: int


@dataclass(frozen=True)
class SeriesProblem:
    line: int
    message: str


def parse_series_file(text: str) -> tuple[list[SeriesEntry], list[SeriesProblem]]:
    """quilt's format: one patch per line, optional ``-pN``, ``#`` comments, blanks."""
    entries: list[SeriesEntry] = []
    problems: list[SeriesProblem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        parts = line.split()
        name, opts = parts[0], parts[1:]
        for opt in opts:
            if opt != "-p1":  # git am applies with -p1 only
                problems.append(SeriesProblem(number, f"unsupported option {opt!r} for {name}"))
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(SeriesProblem(number, f"{name!r} must be a path inside the series"))
            continue
        entries.append(SeriesEntry(name, number))
    return entries, problems


def is_patch_file_name(name: str) -> bool:
    """Files of a series directory without a ``series`` file."""
    low = name.lower()
    if low.startswith(".") or low == "series" or low.startswith("readme"):
        return False
    return True


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mbox into messages on ``From `` separator lines.

    A file that does not start with a separator is one message (a single
    mail without an mbox line, or a plain diff).
    """
    lines = data.splitlines(keepends=True)
    starts = [
        i for i, line in enumerate(lines)
        if _MBOX_FROM.match(line.rstrip(b"\r\n")) and (i == 0 or lines[i - 1].strip() == b"")
    ]
    if not starts or starts[0] != 0:
        # Text before the first separator: treat the whole file as one message
        # unless it is only blank.
        if starts and b"".join(lines[: starts[0]]).strip() == b"":
            pass
        else:
            return [data] if data.strip() else []
    messages = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        chunk = b"".join(lines[start:end])
        if chunk.strip():
            messages.append(chunk)
    return messages


def _headers(message: bytes) -> dict[str, str]:
    """The RFC 822 headers of a message (first block), unfolded and decoded."""
    lines = message.splitlines()
    if lines and lines[0].startswith(b"From ") and not lines[0].startswith(b"From:"):
        lines = lines[1:]
    headers: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t") and last:
            headers[last] += " " + line.strip().decode("utf-8", "replace")
            continue
        if not _HEADER.match(line):
            return {}  # not a mail
        key, _, value = line.decode("utf-8", "replace").partition(":")
        last = key.strip().lower()
        headers[last] = value.strip()
    return headers


def _decode_header(value: str) -> str:
    try:
        parts = email.header.decode_header(value)
    except Exception:  # malformed encoded-words: keep the raw text
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(chunk.decode(charset or "utf-8", "replace"))
        else:
            out.append(chunk)
    return "".join(out)


def clean_subject(subject: str) -> str:
    """``[PATCH v2 3/7] foo`` -> ``foo`` (as git am does)."""
    subject = " ".join(_decode_header(subject).split())
    return _PATCH_PREFIX.sub("", subject).strip()


def touched_files(diff_text: str) -> tuple[str, ...]:
    files: list[str] = []
    for a, b in _DIFF_GIT.findall(diff_text):
        files.extend(x for x in (b, a) if x not in files)
    if not files:
        for f in _PLUS.findall(diff_text) + _MINUS.findall(diff_text):
            if f != "/dev/null" and f not in files:
                files.append(f)
    return tuple(files)


def subject_from_file_name(name: str) -> str:
    stem = re.sub(r"\.(patch|diff|txt)$", "", name.rsplit("/", 1)[-1])
    stem = re.sub(r"^\d+[-_]", "", stem)
    return stem.replace("-", " ").replace("_", " ").strip() or name


def parse_patch_file(display: str, data: bytes, first_index: int = 1) -> list[Patch]:
    """All patches in one file, cover letters dropped."""
    patches: list[Patch] = []
    for message in split_mbox(data):
        text = message.decode("utf-8", "replace")
        has_diff = _DIFF_START.search(message) is not None
        headers = _headers(message)
        if headers and "subject" in headers:
            if not has_diff:
                continue  # a cover letter
            kind, subject = "mail", clean_subject(headers["subject"])
        else:
            if not has_diff:
                continue
            kind, subject = "diff", subject_from_file_name(display)
        patches.append(Patch(first_index + len(patches), display, subject or display, kind,
                             message, touched_files(text)))
    return patches


def cover_letter(data: bytes) -> str:
    """The series' cover letter (``[PATCH 0/N]``, no diff) among a file's mails, or ""."""
    for message in split_mbox(data):
        subject = _headers(message).get("subject", "")
        if _DIFF_START.search(message) is None and _COVER.search(_decode_header(subject)):
            return message.decode("utf-8", "replace")
    return ""


_COVER_END = re.compile(r"^(?:---|-- |base-commit: .*|\S.* \(\d+\):| \S.*\| +\d+ [+-]*)$")


def cover_body(message: str, limit: int = 60) -> str:
    """What a cover letter says: its plain-text body, decoded, up to the
    shortlog, diffstat, ``base-commit:`` or signature that git and b4 append
    (at most ``limit`` lines)."""
    parsed = email.message_from_string(message, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain",)) if parsed.is_multipart() else parsed
    try:
        text = part.get_content() if isinstance(part, EmailMessage) else ""
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = part.get_payload(decode=True) if part is not None else b""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    lines: list[str] = []
    for line in text.splitlines():
        if _COVER_END.match(line):
            break
        lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    if len(lines) > limit:
        lines = [*lines[:limit], f"[... {len(lines) - limit} more lines]"]
    return "\n".join(lines)


def counter(subject: str) -> tuple[int, int]:
    """(n, m) of a ``[PATCH vK n/m]`` subject; (0, 0) without one (sorts first)."""
    m = _COUNTER.search(_decode_header(subject))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def mail_headers(data: bytes) -> dict[str, str]:
    """A patch mail's headers (lowercased names, decoded values); {} for a plain diff."""
    return {k: _decode_header(v) for k, v in _headers(data).items()}


def _msgid(value: str) -> str:
    return value.strip().strip("<>").strip()


def cover_in_thread(thread: bytes, first_patch: bytes) -> str:
    """The cover letter ``first_patch`` answers (its ``In-Reply-To``) in a
    thread's mbox, when that is a mail without a diff; else ""."""
    wanted = _msgid(_headers(first_patch).get("message-id", ""))
    mails = {_msgid(_headers(m).get("message-id", "")): m for m in split_mbox(thread)}
    patch = mails.get(wanted)
    if patch is None:
        return ""
    parent = mails.get(_msgid(_headers(patch).get("in-reply-to", "")))
    if parent is None or _DIFF_START.search(parent) is not None:
        return ""
    return parent.decode("utf-8", "replace")


def recipients_in_thread(thread: bytes, patches: Sequence[bytes]
                         ) -> tuple[tuple[str, ...], ...]:
    """Per patch (by its Message-Id), the To and Cc addresses its mail in the
    thread was sent to, lowercased; () for a patch not found there."""
    mails = {_msgid(_headers(m).get("message-id", "")): _headers(m) for m in split_mbox(thread)}
    out = []
    for p in patches:
        h = mails.get(_msgid(_headers(p).get("message-id", "")), {})
        text = _decode_header(h.get("to", "") + ", " + h.get("cc", ""))
        out.append(tuple(a.lower() for a in _ADDRESS.findall(text)))
    return tuple(out)


def number(patches: Iterable[Patch]) -> list[Patch]:
    """Renumber 1..N across the files of a series."""
    out = []
    for i, p in enumerate(patches, start=1):
        out.append(Patch(i, p.source, p.subject, p.kind, p.data, p.files))
    return out


def patchset_hash(patches: Sequence[Patch]) -> str:
    """KCIDB: sha256 over the newline-terminated sha256 of each patch, in order.

    Equivalent to ``sha256sum *.patch | cut -c-64 | sha256sum``.  Empty
    series hash to the empty string, as KCIDB uses for "no patches".
    """
    if not patches:
        return ""
    joined = "".join(p.sha256 + "\n" for p in patches)
    return hashlib.sha256(joined.encode()).hexdigest()
