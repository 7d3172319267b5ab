"""Baseline comparison, known failures and gating (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from hvlab.report import compare as C
from hvlab.report import junit
from hvlab.results import Status, TestCase

pytestmark = pytest.mark.unit


def xml(cases: list[TestCase]) -> str:
    return junit.to_xml([junit.Suite("host.suite", "k.h.s", cases)])


BASE = xml([TestCase("a", Status.PASS), TestCase("b", Status.FAIL, "x"),
            TestCase("c", Status.FAIL, "y"), TestCase("gone", Status.PASS),
            TestCase("e", Status.PASS)])
NOW = xml([TestCase("a", Status.FAIL, "broke"), TestCase("b", Status.FAIL, "x"),
           TestCase("c", Status.PASS), TestCase("fresh", Status.FAIL, "z"),
           TestCase("e", Status.PASS, properties={"flaky": "true"})])


def test_read_junit_back() -> None:
    cases = C.read_junit(NOW)
    assert cases[("k.h.s", "a")] == C.CaseResult(Status.FAIL, False, "broke")
    assert cases[("k.h.s", "e")].flaky is False  # properties on cases are not written by 1.9


def test_classify_every_category() -> None:
    now = C.read_junit(NOW)
    now[("k.h.s", "e")] = C.CaseResult(Status.PASS, flaky=True)
    classes = C.classify(now, C.read_junit(BASE))
    assert {k[1]: v for k, v in classes.items()} == {
        "a": C.REGRESSION, "b": C.STILL_FAILING, "c": C.FIXED, "fresh": C.NEW,
        "gone": C.REMOVED, "e": C.FLAKY}


def test_known_failures_expiry_and_stale_entries() -> None:
    now = C.read_junit(NOW)
    entries = [C.KnownFailure("k.h.s::b", "tracked upstream"),
               C.KnownFailure("fresh", "new test, being fixed", dt.date(2026, 1, 1)),
               C.KnownFailure("nothing*", "old")]
    out = C.apply_known(now, entries, today=dt.date(2026, 11, 21))
    assert set(k[1] for k in out.known) == {"b"}
    assert [e.pattern for e in out.expired] == ["fresh"]
    assert [e.pattern for e in out.stale] == ["nothing*"]


def test_gating_modes() -> None:
    now = C.read_junit(NOW)
    classes = C.classify(now, C.read_junit(BASE))
    known = C.apply_known(now, [C.KnownFailure("b", "")], dt.date(2026, 11, 21)).known
    assert C.gate(now, classes, known, "regressions") == 1  # 'a' regressed
    now.pop(("k.h.s", "a"))
    assert C.gate(now, classes, known, "regressions") == 0  # 'fresh' is new, not a regression
    assert C.gate(now, classes, known, "all") == 1
    now[("k.h.s", "infra")] = C.CaseResult(Status.ERROR)
    assert C.gate(now, classes, known, "regressions") == 3
