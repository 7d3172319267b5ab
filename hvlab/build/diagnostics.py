"""Compiler diagnostics from a build log: parsing and normalisation (pure).

A diagnostic is ``file:line[:col]: warning|error: message [-Wflag]`` with
gcc's ``In function 'f':`` context before it.  As ktest does, columns are
dropped and quotes unified.  Comparison with a baseline uses ``key`` (file,
kind, message, flag: no line number, so a patch that shifts lines does not
turn every old warning into a new one) with multiplicity.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass

_DIAG = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d+):(?:(?P<col>\d+):)?\s+"
    r"(?P<kind>warning|error|fatal error):\s+(?P<msg>.*?)(?:\s+\[(?P<flag>-W[^\]]+)\])?\s*$"
)
_CONTEXT = re.compile(r"^(?P<file>[^\s:][^:]*?):\s+In (?:function|member function) "
                      r"(?P<q>['‘`])(?P<func>[^'’`]+)['’`]:\s*$")
_MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* (?P<msg>.*)$")
# modpost: ERROR: modpost: "sym" [drivers/hv/hv_utils.ko] undefined!
_MODPOST = re.compile(r'^(?:ERROR|WARNING): modpost: "(?P<sym>[^"]+)" \[(?P<mod>[^\]]+)\] '
                      r"undefined!\s*$")
# ld: drivers/hv/vmbus_drv.o: in function `hv_acpi_init':
_LD_CONTEXT = re.compile(r"^(?:\S*ld(?:\.bfd)?): (?P<obj>[^:\s]+\.o): in function "
                         r"[`'](?P<func>[^'`]+)':\s*$")
# vmbus_drv.c:(.init.text+0x15): undefined reference to `sym'   (or ld: x.o:(...): ...)
_LD_UNDEFINED = re.compile(r"^(?:\S*ld(?:\.bfd)?: )?(?P<where>[^:\s]+):\([^)]*\): "
                           r"undefined reference to [`'](?P<sym>[^'`]+)'\s*$")
_QUOTES = str.maketrans({"‘": "'", "’": "'", "`": "'", "“": '"', "”": '"'})


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    kind: str  # "warning" or "error"
    message: str
    flag: str = ""
    function: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.file, self.kind, self.message, self.flag)

    def describe(self) -> str:
        flag = f" [{self.flag}]" if self.flag else ""
        where = f" (in {self.function})" if self.function else ""
        at = f"{self.file}:{self.line}" if self.line else self.file  # 0: a link step's
        return f"{at}: {self.message}{flag}{where}"


def normalise_path(path: str, prefixes: Iterable[str] = ()) -> str:
    for prefix in prefixes:
        if prefix and path.startswith(prefix):
            path = path[len(prefix):]
    while path.startswith("./"):
        path = path[2:]
    return path


def parse(lines: Iterable[str], prefixes: Iterable[str] = ()) -> list[Diagnostic]:
    """Diagnostics in log order; ``prefixes`` (tree, build dir) are stripped from paths."""
    prefixes = [p.rstrip("/") + "/" for p in prefixes]
    out: list[Diagnostic] = []
    function = ""
    context_file = ""
    ld_object, ld_function = "", ""
    for raw in lines:
        line = raw.rstrip("\n").translate(_QUOTES)
        ctx = _CONTEXT.match(line)
        if ctx:
            context_file = normalise_path(ctx.group("file"), prefixes)
            function = ctx.group("func")
            continue
        link = _link_error(line, prefixes, ld_object, ld_function)
        if isinstance(link, tuple):
            ld_object, ld_function = link
            continue
        if link is not None:
            out.append(link)
            continue
        m = _DIAG.match(line)
        if not m:
            continue
        file = normalise_path(m.group("file"), prefixes)
        kind = "error" if m.group("kind") != "warning" else "warning"
        out.append(Diagnostic(file, int(m.group("line")), kind, m.group("msg").strip(),
                              m.group("flag") or "",
                              function if file == context_file else ""))
    return out


def _link_error(line: str, prefixes: list[str], obj: str, func: str
                ) -> Diagnostic | tuple[str, str] | None:
    """modpost's and the linker's undefined symbols (no line number: 0); an ld
    "in function" context line gives (object, function) for the next one."""
    m = _MODPOST.match(line)
    if m:
        return Diagnostic(normalise_path(m.group("mod"), prefixes), 0, "error",
                          f"undefined symbol '{m.group('sym')}' (modpost)")
    m = _LD_CONTEXT.match(line)
    if m:
        return normalise_path(m.group("obj"), prefixes), m.group("func")
    m = _LD_UNDEFINED.match(line)
    if m:
        where = normalise_path(m.group("where"), prefixes)
        if obj and where.endswith(".c") and obj.rsplit("/", 1)[-1] == \
                where.rsplit("/", 1)[-1][:-2] + ".o":
            where = obj[:-2] + ".c"  # ld names the source by its base name only
        return Diagnostic(where, 0, "error", f"undefined reference to '{m.group('sym')}' "
                          "(link)", function=func)
    return None


def make_errors(lines: Iterable[str]) -> list[str]:
    """``make: *** [...] Error 2`` lines, for builds that fail without a compiler error."""
    return [m.group("msg") for line in lines if (m := _MAKE_ERROR.match(line.rstrip()))]


def new_diagnostics(current: list[Diagnostic], baseline: Iterable[tuple[str, str, str, str]]
                    ) -> list[Diagnostic]:
    """Those of ``current`` beyond what the baseline had (by key, with multiplicity)."""
    budget = collections.Counter(baseline)
    out = []
    for d in current:
        if budget[d.key] > 0:
            budget[d.key] -= 1
        else:
            out.append(d)
    return out


def unique(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The same diagnostic printed twice (parallel make, headers) counts once."""
    seen: set[tuple[str, int, str, str]] = set()
    out = []
    for d in diags:
        k = (d.file, d.line, d.kind, d.message)
        if k not in seen:
            seen.add(k)
            out.append(d)
    return out


_CC_LINE = re.compile(r"^\s+CC(?: \[M\])?\s+(\S+)\.o\s*$")


def compiled_units(lines: Iterable[str]) -> set[str]:
    """C files kbuild compiled in this log (from its ``  CC [M]  x.o`` lines)."""
    return {m.group(1) + ".c" for line in lines if (m := _CC_LINE.match(line.rstrip("\n")))}


def update_state(state: dict[str, list[Diagnostic]], compiled: set[str],
                 diags: Iterable[Diagnostic]) -> dict[str, list[Diagnostic]]:
    """The build dir's complete diagnostics after an incremental make.

    Units compiled again lose their old diagnostics; the log's diagnostics
    are added under the file they name (headers included, without duplicates).
    """
    new = {f: list(ds) for f, ds in state.items() if f not in compiled}
    for d in diags:
        bucket = new.setdefault(d.file, [])
        if not any((x.line, x.kind, x.message) == (d.line, d.kind, d.message) for x in bucket):
            bucket.append(d)
    return {f: ds for f, ds in new.items() if ds}


def flatten(state: dict[str, list[Diagnostic]]) -> list[Diagnostic]:
    return [d for f in sorted(state) for d in sorted(state[f], key=lambda d: d.line)]
