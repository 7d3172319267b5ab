"""Report tasks: import a KTAP/TAP/JUnit file, merge runs or CI shards, compare
with a baseline run (regressions, fixed, ..., known failures, gating)."""

from __future__ import annotations

import datetime as dt
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from hvlab.errors import UserError
from hvlab.report import compare, view
from hvlab.results import StageResult, Status, TestCase
from hvlab.suites import ktap
from hvlab.suites.ktapcases import cases_from_document
from hvlab.tasks.session import Gate, Session


def import_file(s: Session, fmt: str, path: Path) -> None:
    if fmt not in ("ktap", "tap", "junit"):
        raise UserError(f"--format {fmt}: expected ktap, tap or junit")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    s.progress.stage("import", f"{fmt} {path}")
    if fmt == "junit":
        _add_junit(s, path)
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        doc = ktap.parse(fh)
    cases = cases_from_document(doc)
    if not cases:
        cases = [TestCase(path.name, Status.ERROR, f"no {fmt.upper()} results in {path}")]
    counts = doc.counts()
    s.run.info["source"] = str(path)
    s.run.add(StageResult.from_cases(path.stem, cases, 0.0, properties={
        "format": doc.version or fmt, **{k: str(v) for k, v in counts.items()}}),
        "-", "import")
    s.progress.info(f"{path.name}: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
                    f"{counts[Status.SKIP]} skipped, {counts[Status.ERROR]} errors")


def _junit_file(place: Path) -> Path:
    f = place / "junit.xml" if place.is_dir() else place
    if not f.is_file():
        raise UserError(f"{place}: no junit.xml (a run folder, a CI shard output or a "
                        "JUnit file)")
    return f


def _read(place: Path) -> list[view.SuiteView]:
    f = _junit_file(place)
    try:
        return view.parse(f.read_text(encoding="utf-8", errors="replace"))
    except ET.ParseError as exc:
        raise UserError(f"{f}: not valid XML: {exc}") from None


def _add_suites(s: Session, suites: list[view.SuiteView], origin: str) -> None:
    for suite in suites:
        kernel = suite.cell or next((c.classname.split(".")[0] for c in suite.cases
                                     if c.classname), "-")
        cases = [TestCase(c.name, c.status, c.message, c.output, c.seconds,
                          Path(c.log) if c.log else None, flaky=c.flaky)
                 for c in suite.cases]
        props = {k: v for k, v in suite.properties.items() if k != "flaky"}
        props.setdefault("origin", origin)
        s.run.add(StageResult.from_cases(suite.stage, cases, suite.seconds, properties=props),
                  kernel, suite.host)


def _add_junit(s: Session, path: Path) -> None:
    _add_suites(s, _read(path), str(path))


def merge(s: Session, places: list[Path]) -> None:
    if not places:
        raise UserError("report.merge needs at least one run folder or junit.xml")
    for place in places:
        suites = _read(place)
        s.progress.info(f"{place}: {len(suites)} suites")
        _add_suites(s, suites, str(place))


def _latest(s: Session) -> Path:
    latest = s.ws.reports / "latest"
    if not latest.exists():
        raise UserError("no run to compare: reports/latest does not exist (give --run)")
    return Path(os.path.realpath(latest))


def compare_runs(s: Session, baseline: Path, current: Path | None, gate_mode: str) -> None:
    Gate.parse(gate_mode)
    run_dir = current or _latest(s)
    now_xml = _junit_file(run_dir).read_text(encoding="utf-8", errors="replace")
    base_xml = _junit_file(baseline).read_text(encoding="utf-8", errors="replace")
    now, before = compare.read_junit(now_xml), compare.read_junit(base_xml)
    classes = compare.classify(now, before)
    entries = s.config.known_failures if (s.ws.configs / "known-failures.yaml").is_file() \
        else []
    outcome = compare.apply_known(now, entries, dt.date.today())
    for e in outcome.expired:
        s.progress.info(f"known failure '{e.pattern}' expired on {e.expires}: it gates again")
    for e in outcome.stale:
        if any(e.matches(k) for k in now):
            s.progress.info(f"known failure '{e.pattern}' ran and passed: remove it?")
    known = {k: e.reason for k, e in outcome.known.items()}
    _add_suites(s, view.parse(now_xml), str(run_dir))
    s.run.info.update(baseline=str(baseline), compared=str(run_dir))
    tally: dict[str, int] = {}
    for k, c in classes.items():
        label = compare.KNOWN if k in known else c
        tally[label] = tally.get(label, 0) + 1
    s.progress.info("compared with the baseline: " + ", ".join(
        f"{n} {c}" for c, n in sorted(tally.items())))
    (s.run.path / "compare.json").write_text(json.dumps({
        "baseline": str(baseline), "run": str(run_dir), "gate": gate_mode, "counts": tally,
        "cases": [{"classname": k[0], "name": k[1], "class": c, "known": known.get(k)}
                  for k, c in sorted(classes.items())]}, indent=1))
    s.gate = Gate.parse(gate_mode)  # decided at the end of the task, with known failures
    s.run.classes = classes
