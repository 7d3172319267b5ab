"""Results -> JUnit XML through junit-xml, every string through ``sanitize``.

One ``<testsuite>`` per (host, stage or suite); ``classname`` is
``<kernel>.<host>.<suite>`` (dots inside names become underscores so CI
systems that split classnames on dots keep the three parts).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from junit_xml import TestCase as JCase
from junit_xml import TestSuite as JSuite
from junit_xml import to_xml_report_string

from .results import StageResult, Status, TestCase
from .sanitize import clean, clean_line

OUTPUT_LIMIT = 32 * 1024


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
    flaky = [c.name for c in stage.cases if c.properties.get("flaky") == "true"]
    if flaky:  # junit-xml writes no per-case properties: the suite carries the list
        props["flaky"] = json.dumps(flaky)
    return Suite(
        name=f"{host}.{stage.name}",
        classname=classname(kernel, host, stage.name),
        cases=stage.cases,
        properties=props,
        duration=stage.duration,
        timestamp=timestamp,
    )


def _unique_names(cases: Iterable[TestCase]) -> list[tuple[str, TestCase]]:
    """GitLab keeps only the first of duplicate names: make them unique."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        name = clean_line(case.name, limit=500) or "(unnamed)"
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append((name if count == 1 else f"{name} #{count}", case))
    return out


def _jcase(name: str, case: TestCase, cls: str) -> JCase:
    log = str(case.log_path) if case.log_path else None
    out = clean(case.output, limit=OUTPUT_LIMIT, full_log=log) if case.output else None
    jc = JCase(
        name=name,
        classname=cls,
        elapsed_sec=round(case.duration, 3),
        stdout=out,
        log=clean_line(log) if log else None,
    )
    message = clean_line(case.message, limit=2000)
    if case.status is Status.FAIL:
        jc.add_failure_info(message=message or "failed", failure_type="failure")
    elif case.status is Status.ERROR:
        jc.add_error_info(message=message or "infrastructure error", error_type="error")
    elif case.status is Status.SKIP:
        jc.add_skipped_info(message=message or "skipped")
    return jc


def to_xml(suites: Sequence[Suite]) -> str:
    jsuites = []
    for suite in suites:
        jsuites.append(
            JSuite(
                name=clean_line(suite.name),
                test_cases=[_jcase(n, c, clean_line(suite.classname)) for n, c in
                            _unique_names(suite.cases)],
                properties={clean_line(k): clean_line(v) for k, v in suite.properties.items()},
                timestamp=suite.timestamp or None,
            )
        )
    # prettyprint goes through minidom: seconds and hundreds of MB for 100k cases
    return str(to_xml_report_string(jsuites, prettyprint=False, encoding="utf-8"))


def write(path: Path, suites: Sequence[Suite]) -> Path:
    """Write atomically: a reader never sees a half-written junit.xml."""
    text = to_xml(suites)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
