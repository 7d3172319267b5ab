"""Results -> JUnit XML, streamed to the file; every string through ``sanitize``.

One ``<testsuite>`` per (host, stage or suite); ``classname`` is
``<kernel>.<host>.<suite>`` (dots inside names become underscores so CI
systems that split classnames on dots keep the three parts).

The document is written element by element instead of through junit-xml's
ElementTree: 100 000 cases cost a fraction of a second and memory stays flat
(junit-xml builds the whole tree, then a string of it, then a cleaned copy).
It writes the same elements and attributes junit-xml 1.9 writes (a unit test
holds the two side by side), plus the stage's own duration as the suite time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hvlab.report.sanitize import clean, clean_line
from hvlab.report.view import WARNED, is_warning
from hvlab.results import StageResult, Status, TestCase

OUTPUT_LIMIT = 32 * 1024
_CHUNK = 2000  # cases formatted per write

_ATTR_SPECIAL = re.compile(r'[&<>"]')
_TEXT_SPECIAL = re.compile(r"[&<>\r]")


@dataclass(frozen=True)
class Suite:
    """One JUnit testsuite: a stage or a test suite on one host."""

    name: str
    classname: str
    cases: Sequence[TestCase]
    properties: Mapping[str, str] = field(default_factory=dict)
    duration: float = 0.0
    timestamp: str = ""  # ISO 8601 start time, when known


def classname(kernel: str, host: str, suite: str) -> str:
    return ".".join(part.replace(".", "_") or "-" for part in (kernel, host, suite))


def suite_from_stage(
    stage: StageResult, kernel: str, host: str = "local", extra: Mapping[str, str] | None = None,
    timestamp: str = "",
) -> Suite:
    props = dict(extra or {})
    props.update(stage.properties)
    if stage.cached:
        props["cached"] = "true"
    flaky = [c.name for c in stage.cases if c.flaky]
    if flaky:  # the schema has no per-case properties: the suite carries the list
        props["flaky"] = json.dumps(flaky)
    xfail = {c.name: c.properties["xfail"] for c in stage.cases if "xfail" in c.properties}
    if xfail:  # expected failures pass; the suite says which, and why
        props["xfail"] = json.dumps(xfail)
    # a pass has no outcome element to carry its warning: the suite does, one
    # property a case (so one long message cannot cut the others short), keyed
    # by the name the case is written under (cleaned, made unique)
    props.update({f"{WARNED}{name}": c.message for name, c in _unique_names(stage.cases)
                  if is_warning(c.status, c.message)})
    return Suite(
        name=f"{host}.{stage.name}",
        classname=classname(kernel, host, stage.name),
        cases=stage.cases,
        properties=props,
        duration=stage.duration,
        timestamp=timestamp,
    )


KTAP_SUITE = "ktap_suite"  # a case property: the KTAP suite (KUnit suite) it reported in


def case_classname(kernel: str, host: str, stage: str, case: TestCase) -> str:
    """The classname junit.xml gives ``case`` of ``stage`` (its own when it came
    from another report; its KTAP suite's testsuite when it reported in one):
    what compare, known failures and the summaries key it by."""
    if case.classname:
        return case.classname
    ktap = case.properties.get(KTAP_SUITE, "")
    return classname(kernel, host, f"{stage}:{ktap}" if ktap else stage)


def suites_from_stage(
    stage: StageResult, kernel: str, host: str = "local", extra: Mapping[str, str] | None = None,
    timestamp: str = "",
) -> list[Suite]:
    """The stage's testsuite, and one more per KTAP suite its tests reported
    (``<host>.<stage>:<ktap suite>``, classname ``<kernel>.<host>.<stage>:<ktap
    suite>``): a KUnit run's suites are not folded into the hvlab suite."""
    groups: dict[str, list[TestCase]] = {}
    for c in stage.cases:
        groups.setdefault(c.properties.get(KTAP_SUITE, ""), []).append(c)
    if set(groups) <= {""}:
        return [suite_from_stage(stage, kernel, host, extra, timestamp)]
    split = {name: sum(c.duration for c in cases) for name, cases in groups.items() if name}
    out = []
    for name, cases in groups.items():  # the stage's time counted once, over its parts
        took = split[name] if name else max(stage.duration - sum(split.values()), 0.0)
        part = dataclasses.replace(
            stage, name=f"{stage.name}:{name}" if name else stage.name, cases=tuple(cases),
            duration=took)
        out.append(suite_from_stage(part, kernel, host, extra, timestamp))
    return out


def _attr(value: str) -> str:
    """An attribute value (already one clean line: no controls, no newlines)."""
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _text(value: str) -> str:
    """Element text (already cleaned); a lone CR is kept as a character reference."""
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _unique_names(cases: Iterable[TestCase]) -> Iterator[tuple[str, TestCase]]:
    """GitLab keeps only the first of duplicate names: make them unique."""
    seen: dict[str, int] = {}
    for case in cases:
        name = clean_line(case.name, limit=500) or "(unnamed)"
        count = seen.get(name, 0) + 1
        seen[name] = count
        yield (name if count == 1 else f"{name} #{count}"), case


_OUTCOME = {
    Status.FAIL: ("failure", "failure", "failed"),
    Status.ERROR: ("error", "error", "infrastructure error"),
    Status.SKIP: ("skipped", "", "skipped"),
}


def _case(name: str, case: TestCase, cls: str) -> str:
    if case.classname:
        cls = _attr(clean_line(case.classname))
    head = f'  <testcase name="{_attr(name)}" classname="{cls}"'
    if case.duration:
        head += f' time="{_seconds(case.duration)}"'
    log = clean_line(str(case.log_path)) if case.log_path else ""
    if log:
        head += f' log="{_attr(log)}"'
    body = []
    outcome = _OUTCOME.get(case.status)
    if outcome is not None:
        tag, default_type, default = outcome
        type_name = case.failure_type or default_type
        gist = clean_line(case.message, limit=2000) or default
        type_attr = f' type="{_attr(clean_line(type_name))}"' if type_name else ""
        # never self-closing: Codecov's parser reads <failure/> as a pass
        text = clean(case.evidence, limit=OUTPUT_LIMIT) if case.evidence else gist
        body.append(f'<{tag}{type_attr} message="{_attr(gist)}">{_text(text)}</{tag}>')
    if case.output:
        out = clean(case.output, limit=OUTPUT_LIMIT, full_log=log or None)
        if out:
            body.append(f"<system-out>{_text(out)}</system-out>")
    if not body:
        return head + "/>\n"
    return f"{head}>{''.join(body)}</testcase>\n"


def _counts(cases: Iterable[TestCase]) -> dict[Status, int]:
    n = dict.fromkeys(Status, 0)
    for case in cases:
        n[case.status] += 1
    return n


def _totals(n: Mapping[Status, int]) -> str:
    return (f'tests="{sum(n.values())}" failures="{n[Status.FAIL]}" errors="{n[Status.ERROR]}" '
            f'skipped="{n[Status.SKIP]}"')


def _suite_time(suite: Suite) -> float:
    return suite.duration or sum(c.duration for c in suite.cases)


def stream(suites: Sequence[Suite], out: TextIO) -> None:
    """Write the whole document to ``out``, a chunk of cases at a time."""
    counts = [_counts(s.cases) for s in suites]
    total = {st: sum(n[st] for n in counts) for st in Status}
    times = [_suite_time(s) for s in suites]
    out.write('<?xml version="1.0" encoding="utf-8"?>\n')
    # the schema allows no skipped count on <testsuites>
    out.write(f'<testsuites tests="{sum(total.values())}" failures="{total[Status.FAIL]}" '
              f'errors="{total[Status.ERROR]}" time="{_seconds(sum(times))}">\n')
    for suite, n, seconds in zip(suites, counts, times, strict=True):
        stamp = f' timestamp="{_attr(clean_line(suite.timestamp))}"' if suite.timestamp else ""
        out.write(f'<testsuite name="{_attr(clean_line(suite.name))}" {_totals(n)} '
                  f'time="{_seconds(seconds)}"{stamp}>\n')
        if suite.properties:
            out.write("  <properties>\n")
            out.writelines(
                f'    <property name="{_attr(clean_line(k))}" value="{_attr(clean_line(v))}"/>\n'
                for k, v in suite.properties.items())
            out.write("  </properties>\n")
        cls = _attr(clean_line(suite.classname))
        chunk: list[str] = []
        for name, case in _unique_names(suite.cases):
            chunk.append(_case(name, case, cls))
            if len(chunk) >= _CHUNK:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
        out.write("</testsuite>\n")
    out.write("</testsuites>\n")


def to_xml(suites: Sequence[Suite]) -> str:
    buf = io.StringIO()
    stream(suites, buf)
    return buf.getvalue()


def _read_umask() -> int:
    """The process's umask, read once at import: os.umask sets it to read it,
    which a file created by another thread meanwhile would see."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write(path: Path, suites: Sequence[Suite]) -> Path:
    """Write atomically: a reader never sees a half-written junit.xml."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=path.parent)
    try:
        # mkstemp makes it 0600: a Jenkins agent or a web server serving reports/
        # reads junit.xml as it reads its siblings (0666 less the umask)
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20) as fh:
            stream(suites, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
