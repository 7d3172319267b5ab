"""The run folder CI relies on (design.md): ``reports/<run-id>/``.

junit.xml, metadata.json, logs/ and the ``reports/latest`` link, written
whatever happened (a failed or interrupted run still leaves valid XML).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hvlab.bulk import gc_paused
from hvlab.report import html, junit, summary, view
from hvlab.report.compare import CaseResult, KnownFailure, KnownOutcome, apply_known
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace


@dataclass
class Recorded:
    stage: StageResult
    kernel: str
    host: str
    extra: Mapping[str, str] = field(default_factory=dict)
    ended: float = 0.0  # time.time() when it was recorded

    @property
    def timestamp(self) -> str:
        if not self.ended:
            return ""
        start = self.ended - self.stage.duration
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + \
            f".{int(start % 1 * 1000):03d}"


class RunFolder:
    def __init__(self, ws: Workspace, task: str, argv: Sequence[str]) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.ws = ws
        self.task = task
        self.argv = list(argv)
        self.id = f"{stamp}-{task.replace('.', '-')}-{secrets.token_hex(2)}"
        self.path = ws.reports / self.id
        self.logs = self.path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.recorded: list[Recorded] = []
        self.planned: list[tuple[str, str, str]] = []  # (stage, kernel, host)
        self.properties: dict[str, str] = {}
        self._cell = threading.local()
        self._lock = threading.Lock()
        self.known: dict[tuple[str, str], str] = {}  # failing cases known failures cover
        self.classes: dict[tuple[str, str], str] | None = None  # vs a baseline, if compared

    def log(self, name: str) -> Path:
        path = self.logs / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def cell(self, kernel: str, label: str, properties: dict[str, str]) -> Iterator[None]:
        """Within it (in this thread), stages of ``kernel`` are recorded as the
        matrix cell ``label`` and carry its ``properties``."""
        previous = getattr(self._cell, "now", None)
        self._cell.now = (kernel, label, properties)
        try:
            yield
        finally:
            self._cell.now = previous

    def label(self, kernel: str) -> str:
        now = getattr(self._cell, "now", None)
        return now[1] if now is not None and now[0] == kernel else kernel

    def plan(self, stage: str, kernel: str, host: str = "local") -> None:
        kernel = self.label(kernel)
        if (stage, kernel, host) not in self.planned:
            self.planned.append((stage, kernel, host))

    def add(self, stage: StageResult, kernel: str, host: str = "local",
            extra: Mapping[str, str] | None = None) -> StageResult:
        now = getattr(self._cell, "now", None)
        if now is not None and now[0] == kernel:
            kernel, extra = now[1], {**now[2], **(extra or {})}
        with self._lock:
            self.recorded.append(Recorded(stage, kernel, host, dict(extra or {}), time.time()))
        return stage

    def statuses(self) -> list[Status]:
        """Stage statuses, with the failures known-failure entries cover left out."""
        out = []
        for r in self.recorded:
            cls = junit.classname(r.kernel, r.host, r.stage.name)
            if self.known and r.stage.cases:
                out += [c.status for c in r.stage.cases if (cls, c.name) not in self.known]
            else:
                out.append(r.stage.status)
        return out

    def apply_known(self, entries: Sequence[KnownFailure], today: dt.date) -> KnownOutcome:
        results = {(junit.classname(r.kernel, r.host, r.stage.name), c.name):
                   CaseResult({"pass": "pass", "fail": "fail", "error": "error",
                               "skip": "skip"}[c.status.value], False, c.message)
                   for r in self.recorded for c in r.stage.cases}
        outcome = apply_known(results, entries, today)
        self.known = {k: e.reason for k, e in outcome.known.items()}
        # only entries whose tests ran here (and passed) are stale for this run
        ran = [e for e in outcome.stale if any(e.matches(k) for k in results)]
        return KnownOutcome(outcome.known, outcome.expired, ran)

    def _missing_stages(self) -> list[Recorded]:
        done = {(r.stage.name, r.kernel, r.host) for r in self.recorded}
        failed = next((r for r in self.recorded if not r.stage.ok), None)
        reason = (f"not run: stage '{failed.stage.name}' did not pass" if failed
                  else "not run: the run stopped before it")
        return [Recorded(StageResult.skipped(stage, reason), kernel, host)
                for stage, kernel, host in self.planned if (stage, kernel, host) not in done]

    def suites(self) -> list[junit.Suite]:
        out = []
        cells = any("+" in r.kernel for r in self.recorded)
        for r in self.recorded + self._missing_stages():
            extra = {**self.properties, **r.extra}
            suite = junit.suite_from_stage(r.stage, r.kernel, r.host, extra, r.timestamp)
            if cells:  # a matrix: the cell names the suite too (hosts repeat across cells)
                suite = dataclasses.replace(suite, name=f"{r.kernel}/{suite.name}")
            out.append(suite)
        return out

    def finish(self, exit_code: int, error: str | None = None) -> Path:
        with gc_paused():  # a row per case in junit.xml, metadata.json and the summaries
            return self._finish(exit_code, error)

    def _finish(self, exit_code: int, error: str | None) -> Path:
        suites = self.suites()
        xml = junit.write(self.path / "junit.xml", suites)
        meta = {
            "run_id": self.id,
            "task": self.task,
            "argv": self.argv,
            "command": shlex.join(["inv", *self.argv]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 3),
            "exit_code": exit_code,
            "error": error,
            "properties": self.properties,
            "stages": [
                {"stage": r.stage.name, "kernel": r.kernel, "host": r.host,
                 "status": r.stage.status.value, "duration_s": round(r.stage.duration, 3),
                 "log": str(r.stage.log_path) if r.stage.log_path else None,
                 "properties": dict(r.stage.properties),
                 "cases": [_case_meta(c) for c in r.stage.cases]}
                for r in self.recorded
            ],
            "host": {"python": sys.version.split()[0], "platform": platform.platform(),
                     "machine": platform.machine()},
        }
        tmp = self.path / ".metadata.json.tmp"
        # indented only when small: the pure-Python indenting encoder is slow
        large = sum(len(r.stage.cases) for r in self.recorded) > 2000
        tmp.write_text(json.dumps(meta, indent=None if large else 2))
        os.replace(tmp, self.path / "metadata.json")
        write_summaries(self.path, f"hvlab {self.task}: exit {exit_code}",
                        [_view(s) for s in suites], self.facts(), self.classes,
                        self.known, [f"error: {error}"] if error else [])
        self._point_latest()
        return xml

    def tally(self) -> str:
        """"12 passed, 1 failed, 0 errors, 3 skipped" over every case of the run."""
        n = {st: 0 for st in Status}
        for r in self.recorded:
            for c in r.stage.cases:
                n[c.status] += 1
        return (f"{n[Status.PASS]} passed, {n[Status.FAIL]} failed, {n[Status.ERROR]} errors, "
                f"{n[Status.SKIP]} skipped")

    def facts(self) -> dict[str, str]:
        keys = ("kernel", "series", "commit", "patchset_hash", "build_id", "kernel_release",
                "baseline", "compared", "source")
        return {"run": self.id, **{k: self.properties[k] for k in keys if k in self.properties}}

    def _point_latest(self) -> None:
        latest = self.ws.reports / "latest"
        tmp = self.ws.reports / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(self.id, tmp)
        os.replace(tmp, latest)  # atomic: readers never see a missing link


def _case_meta(c: TestCase) -> dict[str, object]:
    return {"name": c.name, "status": c.status.value, "message": c.message[:500],
            "duration_s": round(c.duration, 3)}


def _view(suite: junit.Suite) -> view.SuiteView:
    return view.SuiteView(suite.name, tuple(
        view.CaseView(c.name, suite.classname, c.status.value, c.message, c.output,
                      c.duration, str(c.log_path) if c.log_path else "",
                      c.properties.get("flaky") == "true") for c in suite.cases),
        dict(suite.properties), suite.duration, suite.timestamp)


def write_summaries(folder: Path, title: str, suites: list[view.SuiteView],
                    facts: Mapping[str, str],
                    classes: Mapping[tuple[str, str], str] | None = None,
                    known: Mapping[tuple[str, str], str] | None = None,
                    notes: list[str] | None = None) -> None:
    """summary.md and report.html beside a junit.xml (atomically, like it)."""
    for name, text in (
            ("summary.md", summary.render(title, suites, facts, classes, known, notes)),
            ("report.html", html.render(title, suites, facts, str(folder), classes, known))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
