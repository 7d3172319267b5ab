"""KTAP/TAP documents as test cases.  Pure."""

from __future__ import annotations

from hvlab.bulk import gc_paused
from hvlab.results import Status, TestCase
from hvlab.suites import ktap

STATUS = {ktap.PASS: Status.PASS, ktap.FAIL: Status.FAIL, ktap.SKIP: Status.SKIP,
          ktap.ERROR: Status.ERROR}


def cases_from_document(doc: ktap.Document, prefix: str = "") -> list[TestCase]:
    """One case per leaf, named ``prefix: suite.case``; TIMEOUT and crashes are
    errors, SKIP and TODO-not-ok are skipped, XFAIL passes."""
    with gc_paused():
        return _cases(doc, prefix)


def _cases(doc: ktap.Document, prefix: str) -> list[TestCase]:
    cases = []
    for path, node in doc.leaves():
        name = f"{prefix}: {path}" if prefix else path
        status = STATUS[node.status]
        message = node.reason
        if node.directive and node.directive not in ("SKIP",):
            message = f"{node.directive}" + (f": {node.reason}" if node.reason else "")
        if status is Status.FAIL and not message:
            message = "not ok"
        cases.append(TestCase(name, status, message, output="\n".join(node.output[-200:])))
    return cases
