"""KTAP (Documentation/dev-tools/ktap.rst) and TAP 13/14 parsing.  Pure.

Handles: version lines (``KTAP version 1``, ``TAP version 13|14``), plans
``1..N``, results ``ok|not ok N [- ]name [# DIRECTIVE reason]`` with the
directives SKIP, TODO, XFAIL, TIMEOUT and ERROR; subtests nested by
indentation, announced by ``# Subtest: name``, or (kselftest) prefixed by
``# ``; kernel log timestamps and noise before and between lines; a missing
plan; fewer results than planned (each missing test a failure with the
directive CRASH, as kunit.py counts them, the first carrying the lines that
followed the last result); duplicate names made unique.  Unknown lines are
kept as the output of the test they belong to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from hvlab.bulk import gc_paused
from hvlab.results import Status

PASS, FAIL, SKIP, ERROR = Status.PASS, Status.FAIL, Status.SKIP, Status.ERROR
OUTPUT_KEEP = 200  # lines of output kept per result, the latest ones

_PREFIX = re.compile(r"^(?:\s*<\d+>)?(?:\s*\[[^\]]*\])*")  # printk level, [time][T1]...
_VERSION = re.compile(r"^(?:K?TAP) version (\d+)\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*(?:#.*)?$")
_RESULT = re.compile(r"^(not ok|ok)(?:\s+(\d+))?\s*(?:-\s*)?(.*)$")  # group 3 rstripped
_DIRECTIVE = re.compile(r"\s#\s*(SKIP|TODO|XFAIL|TIMEOUT|ERROR)\b\s*(.*)$", re.I)
_SUBTEST = re.compile(r"^#\s*Subtest:\s*(.*?)\s*$")
CRASH = "CRASH"  # the directive of a test the kernel's crash cut off (not a KTAP one)
_CRASH_SIGN = re.compile(r"Kernel panic|\bOops\b|\bBUG:|general protection fault|"
                         r"Unable to handle kernel|\bcut here\b|Call Trace:|RIP:")


@dataclass
class Node:
    name: str
    status: Status
    number: int | None = None
    directive: str = ""  # SKIP, TODO, XFAIL, TIMEOUT, ERROR or ""
    reason: str = ""
    children: list[Node] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Node]]:
        path = f"{prefix}.{self.name}" if prefix else self.name
        yield path, self
        for child in self.children:
            yield from child.walk(path)


@dataclass
class Document:
    version: str  # "KTAP 1", "TAP 13", or "" when no version line was seen
    tests: list[Node]
    plan: int | None

    def leaves(self) -> Iterator[tuple[str, Node]]:
        """Tests without subtests, with their dotted path (suite.case)."""
        for top in self.tests:
            for path, node in top.walk():
                if not node.children:
                    yield path, node

    def counts(self) -> dict[Status, int]:
        """Like kunit.py: leaves counted, a parent only through its subtests."""
        totals = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
        for _, node in self.leaves():
            totals[node.status] += 1
        return totals


class _Line(NamedTuple):  # a tuple: 100 000 of them are made per 100 000 results
    depth: int
    kind: str  # version | plan | result | subtest | diag | other
    text: str
    match: re.Match[str] | None


def _structural(text: str) -> bool:
    return bool(_VERSION.match(text) or _PLAN.match(text) or _RESULT.match(text)
                or _SUBTEST.match(text) or text.startswith("# "))


# Which patterns a line can match, by its first character (most lines are results).
_CANDIDATES: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "o": (("result", _RESULT),), "n": (("result", _RESULT),), "1": (("plan", _PLAN),),
    "K": (("version", _VERSION),), "T": (("version", _VERSION),),
    "#": (("subtest", _SUBTEST),),
}


def _indent(text: str) -> int:
    """Leading whitespace as columns (a tab to the next multiple of 8)."""
    col = 0
    for ch in text:
        if ch == " ":
            col += 1
        elif ch == "\t":
            col = col // 8 * 8 + 8
        else:
            break
    return col


def _tokens(lines: Iterable[str]) -> list[_Line]:
    """Lines from the version (or first plan) line on, with the log prefix taken
    off as kunit.py does: the printk level and bracketed fields ([time][T1]) of
    every line, plus as many spaces as preceded the version line."""
    out: list[_Line] = []
    started = False
    pad = 0
    depth_of_last = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if "[" in line[:48] or "<" in line[:8]:  # the regex only when a prefix may be there
            line = _PREFIX.sub("", line)
        if not started:
            stripped = line.strip()
            if _VERSION.match(stripped.removeprefix("# ").strip()) or _PLAN.match(stripped):
                started = True
                pad = len(line) - len(line.lstrip(" "))
            else:
                continue  # boot noise before the document
        if pad and line[:pad].strip(" ") == "":
            line = line[pad:]
        text = line.lstrip(" \t")
        lead = len(line) - len(text)
        depth = _indent(line) if "\t" in line[:lead] else lead
        # kselftest nests a subtest's whole TAP output behind "# "
        while text.startswith("# ") and _nested_tap(text[2:]):
            depth += 2
            text = text[2:].lstrip(" ") if text[2:3] != "#" else text[2:]
        for kind, pattern in _CANDIDATES.get(text[:1], ()):
            m = pattern.match(text)
            if m:
                out.append(_Line(depth, kind, text, m))
                depth_of_last = depth
                break
        else:
            # unknown lines never move the structure: they belong where they are
            out.append(_Line(depth_of_last, "diag" if text[:1] == "#" else "other", text,
                             None))
    return out


def _nested_tap(rest: str) -> bool:
    return bool(_VERSION.match(rest) or _PLAN.match(rest) or _RESULT.match(rest)
                or (rest.startswith("# ") and _nested_tap(rest[2:])))


def _status(kind: str, directive: str) -> Status:
    if not directive:
        return PASS if kind == "ok" else FAIL
    d = directive.upper()
    if d == "SKIP":
        return SKIP
    if d in ("TIMEOUT", "ERROR"):
        return ERROR
    if d == "XFAIL":
        return PASS  # the expected failure happened
    if d == "TODO":
        return SKIP if kind == "not ok" else PASS
    return PASS if kind == "ok" else FAIL


class _Parser:
    def __init__(self, tokens: list[_Line]) -> None:
        self.t = tokens
        self.i = 0

    def group(self, depth: int) -> tuple[list[Node], int | None, list[str], str]:
        """Results at ``depth`` until a shallower line.

        Returns (nodes, plan, trailing output, the group's own ``# Subtest:`` name)."""
        nodes: list[Node] = []
        plan: int | None = None
        pending: tuple[list[Node], int | None, str] | None = None
        subtest_name = ""
        own_name = ""
        output: list[str] = []
        tokens, end = self.t, len(self.t)
        while self.i < end:
            tok = tokens[self.i]
            if tok.depth != depth:
                if tok.depth < depth:
                    break
                children, child_plan, trailing, child_name = self.group(tok.depth)
                name = child_name or subtest_name
                if pending is not None:  # two nested groups in a row: the first lost its line
                    nodes.append(self._orphan(*pending))
                pending = (children, child_plan, name)
                output += trailing
                subtest_name = ""
                continue
            self.i += 1
            kind = tok.kind
            if kind == "result":
                nodes.append(self._result(tok, pending, output))
                pending, output = None, []
            elif kind == "version":
                continue
            elif kind == "plan":
                assert tok.match is not None
                plan = int(tok.match.group(1))
            elif kind == "subtest":
                assert tok.match is not None
                subtest_name = tok.match.group(1)
                if not nodes and not own_name:
                    own_name = subtest_name  # KTAP: the name heads its own group
            else:
                output.append(tok.text)
                if len(output) > 2 * OUTPUT_KEEP:  # a flood of noise: keep the latest
                    del output[:OUTPUT_KEEP]
        if pending is not None:
            nodes.append(self._orphan(*pending))
        if plan is not None and len(nodes) < plan:
            nodes += _never_reported(nodes, plan, output[-50:])
            output = []
        return nodes, plan, output, own_name

    def _result(self, tok: _Line, pending: tuple[list[Node], int | None, str] | None,
                output: list[str]) -> Node:
        assert tok.match is not None
        kind, number, rest = tok.match.groups()
        rest = rest.rstrip()
        directive, reason = "", ""
        if "#" in rest:
            d = _DIRECTIVE.search(" " + rest)
            if d:
                directive, reason = d.group(1).upper(), d.group(2).strip()
                rest = (" " + rest)[: d.start()].strip()
            elif " # " in f" {rest}":  # a comment, not a directive: not part of the name
                rest, _, reason = f" {rest}".partition(" # ")
                rest, reason = rest.strip(), reason.strip()
        node = Node(rest or f"test {number or '?'}", _status(kind, directive),
                    int(number) if number else None, directive, reason, [], output)
        if pending is not None:
            node.children = pending[0]
            if not rest and pending[2]:
                node.name = pending[2]
        return node

    def _orphan(self, children: list[Node], plan: int | None, name: str) -> Node:
        """Subtests whose parent result line never came: the parent crashed."""
        return Node(name or "(unnamed subtests)", FAIL, None, CRASH,
                    "no result line after its subtests: the kernel crashed", children, [])


def _never_reported(nodes: list[Node], plan: int, tail: list[str]) -> list[Node]:
    """One crashed test per planned result that never came (kunit.py counts each
    as crashed); the first carries what the output said after the last result."""
    last = nodes[-1].number if nodes and nodes[-1].number else len(nodes)
    said = next((line for line in tail if _CRASH_SIGN.search(line)), "")
    reason = (f"the kernel crashed after test {last}" + (f": {said}" if said else "")
              + f" ({len(nodes)} of {plan} planned results; the output stopped)")
    return [Node(f"test {n} (never reported: crashed)", FAIL, n, CRASH, reason, [],
                 tail if n == len(nodes) + 1 else [])
            for n in range(len(nodes) + 1, plan + 1)]


def _unique(nodes: list[Node]) -> None:
    seen: dict[str, int] = {}
    for node in nodes:
        count = seen.get(node.name, 0) + 1
        seen[node.name] = count
        if count > 1:
            node.name = f"{node.name} #{count}"
        _unique(node.children)


def text_lines(raw: Iterable[bytes]) -> Iterator[str]:
    """Lines of a binary file (iterated: split at LF only, so a lone CR inside
    a line does not end it, as a text-mode file would), invalid UTF-8 as
    visible escapes (``\\xff``)."""
    for line in raw:
        yield line.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def parse(lines: Iterable[str]) -> Document:
    with gc_paused():  # a node per result, no cycles: see hvlab/bulk.py
        return _parse(lines)


def _parse(lines: Iterable[str]) -> Document:
    tokens = _tokens(lines)
    version = ""
    for tok in tokens:
        if tok.kind == "version" and tok.match is not None:
            version = f"{tok.text.split()[0]} {tok.match.group(1)}"
            break
    if not tokens:
        return Document(version, [], None)
    parser = _Parser(tokens)
    base = min(tok.depth for tok in tokens)
    nodes, plan, _, _ = parser.group(base)
    _unique(nodes)
    return Document(version, nodes, plan)
