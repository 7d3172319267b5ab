"""A JUnit document as plain data for summaries, HTML, merge and compare.  Pure.

Documents may come from other tools (``report.import --format junit``,
``report.merge``): they are parsed with defusedxml (no entity expansion, no
external entities), nested testsuites are counted once (each case belongs to
its nearest testsuite), and what a consumer shows is kept: the outcome's
body, classnames, timestamps and the suite's hostname.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import defusedxml.ElementTree as SafeET

from hvlab.results import Status

WARNING = "warning:"  # how a passing case's message starts when a `warn` check found something


def is_warning(status: Status, message: str) -> bool:
    """A pass with a warning (a ``warn`` check's finding): shown, never failing."""
    return status is Status.PASS and message.startswith(WARNING)


class CaseView(NamedTuple):  # a tuple: built once per case, 100 000 at a time
    name: str
    classname: str
    status: Status
    message: str = ""
    output: str = ""
    seconds: float = 0.0
    log: str = ""
    flaky: bool = False
    evidence: str = ""  # the outcome element's text
    outcome_type: str = ""  # its type attribute

    @property
    def warned(self) -> bool:
        return is_warning(self.status, self.message)


@dataclass(frozen=True)
class SuiteView:
    name: str  # "<host>.<stage or suite>"
    cases: tuple[CaseView, ...]
    properties: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    timestamp: str = ""  # ISO 8601 start, when known

    @property
    def cell(self) -> str:
        """The matrix cell (``kernel+series[+variant]``) of an ``inv run``, else ""."""
        return self.name.split("/", 1)[0] if "/" in self.name else ""

    @property
    def host(self) -> str:
        return self.name.rsplit("/", 1)[-1].split(".", 1)[0]

    @property
    def stage(self) -> str:
        rest = self.name.rsplit("/", 1)[-1]
        return rest.split(".", 1)[1] if "." in rest else rest

    @property
    def status(self) -> Status:
        if self.cases and all(c.status is Status.SKIP for c in self.cases):
            return Status.SKIP
        return Status.worst(c.status for c in self.cases)

    def start(self) -> dt.datetime | None:
        try:
            return dt.datetime.fromisoformat(self.timestamp)
        except ValueError:
            return None


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def parse(xml_text: str) -> list[SuiteView]:
    root = SafeET.fromstring(xml_text)
    suites = [s for s in root.iter("testsuite") if s.find("testcase") is not None]
    out = []
    for s in suites:
        own = s.find("properties")
        props = {p.get("name", ""): p.get("value", "")
                 for p in (own.iter("property") if own is not None else ())}
        if s.get("hostname"):
            props.setdefault("hostname", s.get("hostname", ""))
        flaky = set()
        try:
            flaky = set(json.loads(props.get("flaky", "[]")))
        except ValueError:
            pass
        warned = _warned(props)
        cases = []
        for c in s.findall("testcase"):  # its own: a nested testsuite's are its own
            status, message, evidence, outcome_type = Status.PASS, "", "", ""
            for tag, st in (("error", Status.ERROR), ("failure", Status.FAIL),
                            ("skipped", Status.SKIP)):
                el = c.find(tag)
                if el is not None:
                    evidence = (el.text or "").strip("\n")
                    status, outcome_type = st, el.get("type", "") or ""
                    message = el.get("message", "") or evidence.split("\n", 1)[0]
                    break
            else:  # a pass has no outcome element: its warning is the suite's
                message = warned.get(c.get("name", ""), "")
            out_el = c.find("system-out")
            name = c.get("name", "")
            marked = any(p.get("name") == "flaky" and p.get("value") == "true"
                         for p in c.iter("property")) or c.find("rerunFailure") is not None
            cases.append(CaseView(name, c.get("classname", ""), status, message,
                                  out_el.text or "" if out_el is not None else "",
                                  _float(c.get("time")), c.get("log", "") or "",
                                  (name in flaky or marked) and not status.bad, evidence,
                                  outcome_type))
        out.append(SuiteView(s.get("name", ""), tuple(cases), props, _float(s.get("time")),
                             s.get("timestamp", "") or ""))
    return out


WARNED = "warned:"  # a suite property ``warned:<case name>``: the warning that case passed with


def _warned(props: Mapping[str, str]) -> dict[str, str]:
    """Case name -> the warning it passed with, from the suite's properties."""
    return {k.removeprefix(WARNED): v for k, v in props.items()
            if k.startswith(WARNED) and is_warning(Status.PASS, v)}


def verdict(total: Mapping[Status, int]) -> Status:
    """A run's verdict from its counts: an error over a failure over a pass; all
    skipped is a skip, and nothing at all a pass."""
    if total[Status.ERROR]:
        return Status.ERROR
    if total[Status.FAIL]:
        return Status.FAIL
    return Status.PASS if total[Status.PASS] or not sum(total.values()) else Status.SKIP


def warnings(suites: list[SuiteView]) -> list[tuple[SuiteView, CaseView]]:
    """The passing cases that carry a warning, with their suites, in order."""
    return [(s, c) for s in suites for c in s.cases if c.warned]


def counts(suites: list[SuiteView]) -> dict[Status, int]:
    totals = dict.fromkeys(Status, 0)
    for s in suites:
        for c in s.cases:
            totals[c.status] += 1
    return totals
