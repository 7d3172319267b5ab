"""Typed results: every stage returns a ``StageResult`` made of ``TestCase``s.

Statuses follow KCIDB's order of severity: ERROR > FAIL > PASS > SKIP.  An
infrastructure error is never a kernel failure and never a pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


class Status(enum.StrEnum):
    """One vocabulary from the KTAP parser to the reports (a StrEnum: its value
    is what JSON and the summaries show)."""

    SKIP = "skip"
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def bad(self) -> bool:
        return self in (Status.FAIL, Status.ERROR)

    @staticmethod
    def worst(statuses: Iterable[Status], default: Status | None = None) -> Status:
        """The most severe status; ``default`` (PASS unless given) when empty."""
        found = list(statuses)
        if not found:
            return default if default is not None else Status.PASS
        return max(found, key=lambda s: s.severity)


_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.FAIL: 2, Status.ERROR: 3}


@dataclass(frozen=True)
class TestCase:
    """One JUnit test case.  ``message`` says why it failed/errored/skipped."""

    __test__ = False  # not a pytest class

    name: str
    status: Status
    message: str = ""
    output: str = ""
    duration: float = 0.0
    log_path: Path | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    flaky: bool = False  # failed, then passed on a retry
    attempts: int = 1
    evidence: str = ""  # all the lines that show why (the JUnit outcome's text); message: the gist
    classname: str = ""  # a foreign case's own (report.merge); else the suite's
    failure_type: str = ""  # the outcome's type when more precise than its status (crash)


@dataclass(frozen=True)
class StageResult:
    """The outcome of one pipeline stage (fetch, patch, configure, build, ...)."""

    name: str
    status: Status
    duration: float
    log_path: Path | None = None
    cases: tuple[TestCase, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    cached: bool = False  # the stage's work was found done (a cached build, source, ...)

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.SKIP)

    @classmethod
    def from_cases(
        cls,
        name: str,
        cases: Iterable[TestCase],
        duration: float,
        log_path: Path | None = None,
        properties: Mapping[str, str] | None = None,
        cached: bool = False,
    ) -> StageResult:
        cases = tuple(cases)
        status = Status.worst((c.status for c in cases), default=Status.PASS)
        if cases and all(c.status is Status.SKIP for c in cases):
            status = Status.SKIP
        return cls(name, status, duration, log_path, cases, properties or {}, cached)

    @classmethod
    def skipped(cls, name: str, reason: str) -> StageResult:
        """A stage that did not run because its input failed."""
        return cls(name, Status.SKIP, 0.0, None, (TestCase(name, Status.SKIP, reason),))


def exit_code_for(statuses: Iterable[Status]) -> int:
    """design.md: 0 all passed, 1 failures, 3 infrastructure error."""
    worst = Status.worst(statuses)
    if worst is Status.ERROR:
        return 3
    if worst is Status.FAIL:
        return 1
    return 0
