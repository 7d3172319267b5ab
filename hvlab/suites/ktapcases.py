"""KTAP/TAP documents as test cases.  Pure.

A case's reason is its evidence: the diagnostic lines KUnit and kselftest
print before a result (``# test: EXPECTATION FAILED at file.c:42`` and the
lines that continue it) are the case's ``evidence``, and the line that says
what failed is its ``message``.  A test the kernel's crash cut off is a
failure of kind ``crash`` (exit 1: the kernel is wrong, not the harness).
"""

from __future__ import annotations

import re

from hvlab.bulk import gc_paused
from hvlab.report.junit import KTAP_SUITE
from hvlab.results import Status, TestCase
from hvlab.suites import ktap

STATUS = {ktap.PASS: Status.PASS, ktap.FAIL: Status.FAIL, ktap.SKIP: Status.SKIP,
          ktap.ERROR: Status.ERROR}
# KUnit's own bookkeeping around each test, not evidence
_BOOKKEEPING = re.compile(r"^(?:initializing|(?:\S+ )?(?:passed|failed|skipped))$")
_TELLS = re.compile(r"FAILED|ASSERT|[Ee]xpected|[Ee]rror|\bfail|BUG|Oops|panic|WARNING")


def diagnostics(output: list[str], name: str) -> list[str]:
    """The case's diagnostic lines: ``#`` lines (KUnit's ``name:`` prefix cut)
    and the unprefixed lines that continue one, without KUnit's bookkeeping."""
    out: list[str] = []
    in_diag = False
    leaf = name.rsplit(".", 1)[-1]
    for line in output:
        if line.startswith("#"):
            text = line[1:].strip()
            text = text.removeprefix(f"{leaf}:").strip()
            in_diag = not _BOOKKEEPING.match(text) and text != ""
            if in_diag:
                out.append(text)
        elif in_diag and line.strip():
            out.append(line.strip())
    return out


def _gist(lines: list[str]) -> str:
    return next((line for line in lines if _TELLS.search(line)), lines[0] if lines else "")


def cases_from_document(doc: ktap.Document, prefix: str = "",
                        mark_suites: bool = False) -> list[TestCase]:
    """One case per leaf, named ``prefix: suite.case``; TIMEOUT is an error, a
    crash a failure of kind crash, SKIP and TODO-not-ok skipped, XFAIL passes.
    ``mark_suites``: each case under a top-level suite carries its name (the
    report gives each KTAP suite a testsuite of its own, junit.KTAP_SUITE)."""
    with gc_paused():
        return _cases(doc, prefix, mark_suites)


def _cases(doc: ktap.Document, prefix: str, mark_suites: bool = False) -> list[TestCase]:
    cases = []
    tops = {id(n): n.name for n in doc.tests if n.children} if mark_suites else {}
    owner = {id(leaf): tops[id(top)] for top in doc.tests if id(top) in tops
             for _, leaf in top.walk()}
    for path, node in doc.leaves():
        name = f"{prefix}: {path}" if prefix else path
        status = STATUS[node.status]
        kind = "crash" if node.directive == ktap.CRASH else ""
        message, detail = node.reason, ""
        if node.directive and node.directive not in ("SKIP", ktap.CRASH):
            message = f"{node.directive}" + (f": {node.reason}" if node.reason else "")
        if status in (Status.FAIL, Status.ERROR):
            if kind == "crash":
                detail = "\n".join([message, *node.output[-50:]]) if node.output else message
            else:
                lines = diagnostics(node.output, path)
                gist = _gist(lines)
                message = gist + (f" ({message})" if message and gist else message)
                detail = "\n".join(lines) or message
                if not message:
                    message = "not ok (the test printed no diagnostic line)"
        props = {"xfail": node.reason or "expected failure"} if node.directive == "XFAIL" \
            else {}
        if id(node) in owner:
            props[KTAP_SUITE] = owner[id(node)]
        cases.append(TestCase(name, status, message, output="\n".join(node.output[-200:]),
                              properties=props, evidence=detail, failure_type=kind))
    return cases


def cases_by_suite(doc: ktap.Document) -> list[tuple[str, list[TestCase]]]:
    """The document's cases split by its top-level suites (KUnit's suites, a
    kselftest collection), each named by its path below the suite; top-level
    tests without subtests come together under the name ""."""
    out: list[tuple[str, list[TestCase]]] = []
    loose: list[ktap.Node] = []
    for top in doc.tests:
        if top.children:
            out.append((top.name, cases_from_document(ktap.Document(doc.version, top.children,
                                                                    None))))
        else:
            loose.append(top)
    if loose:
        out.insert(0, ("", cases_from_document(ktap.Document(doc.version, loose, doc.plan))))
    return out
