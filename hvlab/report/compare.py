"""Compare a run with a baseline run, and apply known failures.  Pure.

Cases are keyed by (classname, name).  A case that failed and then passed on
a retry is ``flaky`` (hvlab marks it so); it is never a regression by itself.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hvlab.report import view
from hvlab.results import Status

Key = tuple[str, str]  # (classname, name)

class Class(enum.StrEnum):
    """How a case compares with the baseline (``known``: a known failure covers it)."""

    REGRESSION = "regression"
    FIXED = "fixed"
    STILL_FAILING = "still-failing"
    NEW = "new"
    REMOVED = "removed"
    FLAKY = "flaky"
    PASSING = "passing"
    KNOWN = "known"


REGRESSION, FIXED, STILL_FAILING, NEW, REMOVED, FLAKY, PASSING, KNOWN = Class


@dataclass(frozen=True)
class CaseResult:
    status: Status
    flaky: bool = False
    message: str = ""

    @property
    def bad(self) -> bool:
        return self.status.bad


def read_junit(xml_text: str) -> dict[Key, CaseResult]:
    """Statuses of every case in a JUnit document (testsuites or a single testsuite)."""
    return {(c.classname, c.name): CaseResult(c.status, c.flaky, c.message)
            for suite in view.parse(xml_text) for c in suite.cases}


def classify(current: Mapping[Key, CaseResult], baseline: Mapping[Key, CaseResult]
             ) -> dict[Key, Class]:
    out: dict[Key, Class] = {}
    for key, now in current.items():
        before = baseline.get(key)
        if now.flaky and not now.bad:
            out[key] = FLAKY
        elif before is None:
            out[key] = NEW
        elif now.bad and before.status is Status.PASS:
            out[key] = REGRESSION
        elif now.bad and before.bad:
            out[key] = STILL_FAILING
        elif not now.bad and before.bad:
            out[key] = FIXED
        elif now.bad:
            out[key] = REGRESSION if before.status is Status.PASS else NEW
        else:
            out[key] = PASSING
    for key in baseline:
        if key not in current:
            out[key] = REMOVED
    return out


@dataclass(frozen=True)
class KnownFailure:
    pattern: str  # fnmatch over "classname::name" or just the name
    reason: str
    expires: dt.date | None = None

    def matches(self, key: Key) -> bool:
        return fnmatch.fnmatchcase(f"{key[0]}::{key[1]}", self.pattern) or \
            fnmatch.fnmatchcase(key[1], self.pattern)


@dataclass(frozen=True)
class KnownOutcome:
    known: dict[Key, KnownFailure]  # failing cases that a known-failure entry covers
    expired: list[KnownFailure]  # entries past their date (no longer honoured)
    stale: list[KnownFailure]  # entries that matched no failing case


def apply_known(current: Mapping[Key, CaseResult], entries: Iterable[KnownFailure],
                today: dt.date) -> KnownOutcome:
    entries = list(entries)
    live = [e for e in entries if e.expires is None or e.expires >= today]
    expired = [e for e in entries if e not in live]
    known: dict[Key, KnownFailure] = {}
    used: set[int] = set()
    for key, result in current.items():
        if not result.bad:
            continue
        for i, entry in enumerate(live):
            if entry.matches(key):
                known[key] = entry
                used.add(i)
                break
    stale = [e for i, e in enumerate(live) if i not in used]
    return KnownOutcome(known, expired, stale)


def gate(current: Mapping[Key, CaseResult], classes: Mapping[Key, str],
         known: Mapping[Key, KnownFailure], mode: str) -> int:
    """Exit code: ``regressions`` fails only on regressions and infrastructure errors;
    ``all`` on any failure that is not known."""
    unknown_bad = [k for k, r in current.items() if r.bad and k not in known]
    if any(current[k].status is Status.ERROR for k in unknown_bad):
        return 3
    if mode == "regressions":
        return 1 if any(classes.get(k) == REGRESSION for k in unknown_bad) else 0
    return 1 if unknown_bad else 0
