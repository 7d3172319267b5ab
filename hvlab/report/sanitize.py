"""The one sanitiser every string passes through before it reaches JUnit.

XML 1.0 forbids most C0 controls, surrogates and U+FFFE/U+FFFF; subprocess
output brings bytes, ANSI colour and invalid UTF-8.  ``clean`` turns anything
into valid XML text (hvlab/report/junit.py then only escapes markup characters).
"""

from __future__ import annotations

import re
from pathlib import Path

# ANSI CSI / OSC / two-character escape sequences.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL or ST
    r"|\x1b[@-Z\\-_]"  # 7-bit C1
)
# Characters XML 1.0 does not allow (tab, LF and CR are allowed).
# C1 controls and Unicode non-characters are legal XML but junit-xml (the
# reference our writer is tested against) drops them: dropped here as well.
_XML_INVALID = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    "\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe\U0003ffff\U0004fffe\U0004ffff"
    "\U0005fffe\U0005ffff\U0006fffe\U0006ffff\U0007fffe\U0007ffff\U0008fffe\U0008ffff"
    "\U0009fffe\U0009ffff\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff"
    "\U000dfffe\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff\U0010fffe\U0010ffff]"
)

DEFAULT_LIMIT = 64 * 1024


def to_text(value: str | bytes | bytearray | memoryview | object) -> str:
    """Decode bytes as UTF-8, an invalid byte as a visible escape (\\xff, which
    also keeps a reader from guessing another encoding); stringify others."""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if not isinstance(value, str):
        return str(value)
    return value


def clean(
    value: str | bytes | bytearray | memoryview | object,
    limit: int | None = DEFAULT_LIMIT,
    full_log: Path | str | None = None,
) -> str:
    """Decode, strip ANSI, drop XML-invalid characters, cap the length.

    When the text is longer than ``limit`` characters its head and tail are
    kept and a line in the middle points at ``full_log`` (when given).
    """
    text = to_text(value)
    original = len(text)
    if limit is not None and original > 4 * limit + 1024:
        # Cut before the regexes so a 100 MB string costs little.
        text = text[: 2 * limit] + text[-2 * limit :]
    text = _ANSI.sub("", text)
    text = _XML_INVALID.sub("", text)
    text = text.replace("\r\n", "\n")
    if limit is not None and len(text) > limit:
        where = f"; full log: {full_log}" if full_log else ""
        marker = f"\n[... output of {original} characters cut to {limit}{where} ...]\n"
        half = max(limit // 2, 0)
        text = text[:half] + marker + text[len(text) - half :]
    return text


def clean_line(value: object, limit: int = 1000) -> str:
    """A single-line variant for names, messages and property values."""
    if isinstance(value, str) and len(value) <= limit and value.isascii() and \
            value.isprintable() and "  " not in value and value.strip() == value:
        return value  # the common case, at C speed: nothing to clean
    text = clean(value, limit=None)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
