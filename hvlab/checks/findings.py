"""What the per-patch checks read (pure): make output with ``W=1 C=2``, kernel-doc
output, a commit message's ``Fixes:`` and ``Signed-off-by:`` tags, and
get_maintainer.pl's addresses.

One ``make W=1 C=2 drivers/hv/x.o`` (6.1's scripts/Makefile.build) prints the
compiler's output under ``  CC      drivers/hv/x.o``, then kernel-doc's (W=1
runs ``kernel-doc -none`` on the file: lines without a column), then
``  CHECK   drivers/hv/x.c`` and sparse's output (kbuild's own preparation,
e.g. scripts/mod/empty.c, may come before, each under its own line).  The
kernel-doc check runs kernel-doc itself, on headers too, so its lines are
dropped here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hvlab.build import diagnostics
from hvlab.build.diagnostics import Diagnostic

_CHECK_LINE = re.compile(r"^\s+CHECK\s+(\S+)")
_CC_LINE = re.compile(r"^\s+CC(?: \[M\])?\s+(\S+)")
_NO_COLUMN = re.compile(r"^[^:\s]+:\d+: (warning|error): ")
_KDOC = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+): (?P<kind>warning|error): (?P<msg>.+)$")
_FIXES = re.compile(r"^Fixes:\s*(?P<sha>[0-9a-fA-F]+)(?:\s+\(\"(?P<subject>.*)\"\))?\s*$",
                    re.M)
_FIXES_LOOSE = re.compile(r"^Fixes:\s*(?P<rest>.*)$", re.M)
_SOB = re.compile(r"^Signed-off-by:\s*(?P<who>.+?)\s*$", re.M)
_EMAIL = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>,]+@[^\s<>,]+)")


@dataclass(frozen=True)
class CompileFindings:
    w1: tuple[Diagnostic, ...]  # the compiler's, with W=1
    sparse: tuple[Diagnostic, ...]


def split_w1_sparse(lines: Iterable[str], prefixes: Iterable[str]) -> CompileFindings:
    """The compiler's and sparse's diagnostics of one ``make W=1 C=2`` run."""
    compiler: list[str] = []
    checker: list[str] = []
    into = compiler
    for line in lines:
        if _CHECK_LINE.match(line):
            into = checker
            continue
        if _CC_LINE.match(line):  # kbuild's prepare steps come first, then the file's
            into = compiler
            continue
        if _NO_COLUMN.match(line):  # kernel-doc (W=1 runs it), read by its own check
            continue
        into.append(line)
    prefixes = list(prefixes)
    return CompileFindings(tuple(diagnostics.parse(compiler, prefixes)),
                           tuple(diagnostics.parse(checker, prefixes)))


def kernel_doc(lines: Iterable[str], prefixes: Iterable[str] = ()) -> list[Diagnostic]:
    """``scripts/kernel-doc -none FILE`` (6.1 exits 0 with warnings: its lines count)."""
    prefixes = [p.rstrip("/") + "/" for p in prefixes]
    out = []
    for line in lines:
        m = _KDOC.match(line.rstrip("\n"))
        if m:
            out.append(Diagnostic(diagnostics.normalise_path(m.group("file"), prefixes),
                                  int(m.group("line")), m.group("kind"),
                                  m.group("msg").strip()))
    return out


def new_in(after: Iterable[Diagnostic], before: Iterable[Diagnostic],
           files: Iterable[str]) -> list[Diagnostic]:
    """What ``after`` has beyond ``before`` (line numbers aside), in ``files``."""
    wanted = set(files)
    return diagnostics.new_diagnostics(
        diagnostics.unique(d for d in after if d.file in wanted),
        [d.key for d in diagnostics.unique(before)])


@dataclass(frozen=True)
class FixesTag:
    sha: str
    subject: str  # "" when the tag quotes none
    line: str  # the tag as written


def fixes_tags(message: str) -> tuple[list[FixesTag], list[str]]:
    """A commit message's ``Fixes:`` tags, and those not in the documented form
    ``Fixes: <12+ hex> ("<subject>")`` (Documentation/process/submitting-patches.rst)."""
    good, bad = [], []
    for m in _FIXES_LOOSE.finditer(message):
        line = m.group(0).strip()
        tag = _FIXES.match(line)
        if tag is None or len(tag.group("sha")) < 12 or tag.group("subject") is None:
            bad.append(line)
        else:
            good.append(FixesTag(tag.group("sha").lower(), tag.group("subject"), line))
    return good, bad


def signed_off_by(message: str) -> list[str]:
    """The addresses of a commit message's ``Signed-off-by:`` lines, lowercased."""
    return [e.lower() for m in _SOB.finditer(message) for e in emails(m.group("who"))]


def emails(text: str) -> list[str]:
    """The mail addresses in a header value or a get_maintainer.pl line."""
    return [(a or b).strip().lower() for a, b in _EMAIL.findall(text)]
