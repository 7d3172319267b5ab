"""The run folder CI relies on (design.md): ``reports/<run-id>/``.

junit.xml, metadata.json, logs/ and the ``reports/latest`` link, written
whatever happened (a failed or interrupted run still leaves valid XML).
They exist from the start of the run and are rewritten, atomically, as each
stage begins and ends: until the run finishes, junit.xml carries an ERROR
case "run did not finish (stage X was running)", so a run killed with
SIGKILL (a CI timeout, the OOM killer) still leaves a valid report of what it
did, and metadata.json says ``"finished": false`` with the run's pid.

``reports/latest`` follows results: it moves here when the run's first
stage begins, so a usage error (a missing flag, a bad plan name) leaves an
earlier run's results where CI and ``report.*`` look for them.  Tasks that
check configs or send what a run found (``config.check``, ``report.mail``,
``report.patchwork``, whose default run is reports/latest) never move it.
Where no latest exists yet any run folder becomes it when it finishes: a
pipeline always finds a report.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab import __version__ as hvlab_version
from hvlab import procs
from hvlab.bulk import gc_paused
from hvlab.errors import UserError
from hvlab.report import html, junit, seriesrecord, summary, view
from hvlab.report.compare import CaseResult, Class, KnownFailure, KnownOutcome, apply_known
from hvlab.report.sanitize import clean_line
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace

BULK_CASES = 10_000


@dataclass
class Recorded:
    stage: StageResult
    kernel: str
    host: str
    ended: float = 0.0  # time.time() when it was recorded
    started: str = ""  # ISO 8601 start read from another report (merge, import)

    @property
    def timestamp(self) -> str:
        if self.started:
            return self.started
        if not self.ended:
            return ""
        start = self.ended - self.stage.duration
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start)) + \
            f".{int(start % 1 * 1000):03d}"


class RunFolder:
    def __init__(self, ws: Workspace, task: str, argv: Sequence[str],
                 moves_latest: bool = True) -> None:
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
        self.planned: list[tuple[str, str, str]] = []  # (stage, label, host)
        # facts the stages of a cell returned, per (label, host): every testsuite of
        # that cell carries them ("local" = the cell's build, else that host's stages)
        self._facts: dict[tuple[str, str], dict[str, str]] = {}
        self.info: dict[str, str] = {}  # facts of the run as a whole (import source, ...)
        self._lock = threading.RLock()  # re-entered by finish(), which holds it throughout
        self.known: dict[tuple[str, str], str] = {}  # failing cases known failures cover
        self.classes: dict[tuple[str, str], Class] | None = None  # vs a baseline, if compared
        self._running: dict[int, str] = {}  # stages begun and not yet ended
        self._latest = False  # reports/latest points here
        self._moves_latest = moves_latest  # a task with results (see the module's doc)
        self._began = False  # a stage began: this run has results to point latest at
        self.usage_error = False  # the task failed on its arguments, before any stage
        self._finished = False  # finish() wrote the final report: no more checkpoints
        self._checkpointed_bulk = False
        self._tokens = 0

    def log(self, name: str) -> Path:
        path = self.logs / f"{name.replace('/', '_')}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def cell_logs(self, label: str, host: str) -> Path:
        """logs/ for a single cell (a kernel name), logs/<cell>@<host>/ in a matrix."""
        if "+" not in label:
            return self.logs
        folder = self.logs / f"{label}@{host}".replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def attach(self, label: str, host: str, facts: Mapping[str, str]) -> None:
        with self._lock:
            self._facts.setdefault((label, host), {}).update(
                {k: v for k, v in facts.items() if v != ""})

    def facts_of(self, label: str, host: str = "local") -> dict[str, str]:
        """The facts a testsuite of ``label`` on ``host`` carries."""
        with self._lock:
            out = dict(self._facts.get((label, "local"), {}))
            if host != "local":
                out.update(self._facts.get((label, host), {}))
            return out

    def plan(self, stage: str, label: str, host: str = "local") -> None:
        with self._lock:
            if (stage, label, host) not in self.planned:
                self.planned.append((stage, label, host))

    def add(self, stage: StageResult, label: str, host: str = "local",
            timestamp: str = "") -> StageResult:
        """Record a stage; ``timestamp``: its start as another report gave it."""
        with self._lock:
            self.recorded.append(Recorded(stage, label, host, time.time(), timestamp))
            self.checkpoint()
        return stage

    def begin(self, what: str) -> int:
        """A stage starts (``what`` names it in the unfinished report); returns
        the token ``end`` takes."""
        with self._lock:
            self._tokens += 1
            self._running[self._tokens] = what
            self._began = True
            self.checkpoint()
            return self._tokens

    def end(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)
            self.checkpoint()

    def unfinished(self) -> Recorded:
        """The ERROR case a report written before the end carries."""
        running = list(self._running.values())
        if not running:
            what = "between stages"
        elif len(running) == 1:
            what = f"stage {running[0]} was running"
        else:
            what = f"stages {', '.join(running)} were running"
        case = TestCase(f"run did not finish ({what})", Status.ERROR,
                        "hvlab stopped before the end of the run (killed, or the machine "
                        "went down): what follows is what it had done")
        return Recorded(StageResult.from_cases(self.task, [case], 0.0), "-", "local")

    def checkpoint(self) -> None:
        """junit.xml, summary.md and metadata.json as they stand, marked unfinished.
        A report that cannot be written now is tried again at the next stage
        (finish() reports a failure to write).  Once the run holds more than
        BULK_CASES cases (an import of 100 000 results) only the first report
        stands until the end: a rewrite per stage would double report.import's
        cost."""
        with self._lock, gc_paused():
            if self._finished or self._checkpointed_bulk:
                return
            self._checkpointed_bulk = sum(len(r.stage.cases) for r in self.recorded) > \
                BULK_CASES
            if self._checkpointed_bulk:
                return
            try:
                suites = self.suites(self.unfinished())
                junit.write(self.path / "junit.xml", suites)
                self._write_meta(None, None, finished=False)
                summary_text = summary.render(f"hvlab {self.task}: not finished",
                                              [_view(x) for x in suites], self.facts(),
                                              self.classes, self.known, [])
                _replace_text(self.path / "summary.md", summary_text)
                self._maybe_point_latest()
            except OSError:
                pass

    def case_results(self) -> dict[tuple[str, str], CaseResult]:
        """Every recorded case by (classname, name), as compare reads them."""
        return {(junit.case_classname(r.kernel, r.host, r.stage.name, c), c.name):
                CaseResult(c.status, c.flaky, c.message)
                for r in self.recorded for c in r.stage.cases}

    def statuses(self) -> list[Status]:
        """Stage statuses, with the failures known-failure entries cover left out."""
        out = []
        for r in self.recorded:
            if self.known and r.stage.cases:
                out += [c.status for c in r.stage.cases
                        if (junit.case_classname(r.kernel, r.host, r.stage.name, c), c.name)
                        not in self.known]
            else:
                out.append(r.stage.status)
        return out

    def apply_known(self, entries: Sequence[KnownFailure], today: dt.date) -> KnownOutcome:
        results = self.case_results()
        outcome = apply_known(results, entries, today)
        self.known = {k: e.reason for k, e in outcome.known.items()}
        # only entries whose tests ran here (and passed) are stale for this run
        ran = [e for e in outcome.stale if any(e.matches(k) for k in results)]
        return KnownOutcome(outcome.known, outcome.expired, ran)

    def _missing_stages(self) -> list[Recorded]:
        """Planned stages that never ran: SKIPPED, saying which stage of the same
        cell (its build, or the same host) did not pass, if one did not."""
        done = {(r.stage.name, r.kernel, r.host) for r in self.recorded}
        out = []
        for stage, label, host in self.planned:
            if (stage, label, host) in done:
                continue
            failed = next((r for r in self.recorded if not r.stage.ok and r.kernel == label
                           and r.host in ("local", host)), None)
            reason = (f"not run: stage '{failed.stage.name}' did not pass" if failed
                      else "not run: the run stopped before it")
            out.append(Recorded(StageResult.skipped(stage, reason), label, host))
        return out

    def suites(self, *extra_first: Recorded) -> list[junit.Suite]:
        out = []
        cells = any("+" in r.kernel for r in self.recorded)
        for r in [*extra_first, *self.recorded, *self._missing_stages()]:
            extra = self.facts_of(r.kernel, r.host)
            for suite in junit.suites_from_stage(r.stage, r.kernel, r.host, extra, r.timestamp):
                if any(c.log_path for c in suite.cases):
                    suite = dataclasses.replace(suite, cases=[
                        dataclasses.replace(c, log_path=self.relative(c.log_path))
                        if c.log_path else c for c in suite.cases])
                if cells:  # a matrix: the cell names the suite too (hosts repeat across cells)
                    suite = dataclasses.replace(suite, name=f"{r.kernel}/{suite.name}")
                out.append(suite)
        return out

    def relative(self, path: Path) -> Path:
        """A log path as the reports give it: relative to the run folder when
        inside it, so the folder can be published, moved or merged whole."""
        try:
            return path.relative_to(self.path) if path.is_absolute() else path
        except ValueError:
            return path

    def finish(self, exit_code: int, error: str | None = None) -> Path:
        # the lock: a host thread still finishing after an interrupt cannot add to
        # what is being written
        with self._lock, gc_paused():  # a row per case in junit.xml, metadata.json, summaries
            self._finished = True  # a host thread that records late cannot undo this report
            return self._finish(exit_code, error)

    def _finish(self, exit_code: int, error: str | None) -> Path:
        suites = self.suites()
        xml = junit.write(self.path / "junit.xml", suites)
        self._write_meta(exit_code, error, finished=True)
        write_summaries(self.path, f"hvlab {self.task}: exit {exit_code}",
                        [_view(s) for s in suites], self.facts(), self.classes,
                        self.known, [f"error: {error}"] if error else [])
        self._maybe_point_latest(final=True)
        return xml

    def _write_meta(self, exit_code: int | None, error: str | None, finished: bool) -> None:
        meta = {
            "finished": finished,  # first: unfinished.find reads only the file's head
            "run_id": self.id,
            "task": self.task,
            "pid": os.getpid(),
            "pid_started": procs.start_time(os.getpid()),
            "running": list(self._running.values()),
            "argv": self.argv,
            "command": shlex.join(["inv", *self.argv]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 3),
            "exit_code": exit_code,
            "error": error,
            "properties": self.info,
            "cells": [{"label": label, "host": host, "facts": facts}
                      for (label, host), facts in sorted(self._facts.items())],
            "stages": [
                {"stage": r.stage.name, "kernel": r.kernel, "host": r.host,
                 "status": r.stage.status.value, "duration_s": round(r.stage.duration, 3),
                 "log": str(self.relative(r.stage.log_path)) if r.stage.log_path else None,
                 "properties": dict(r.stage.properties), "cached": r.stage.cached,
                 "cases": [_case_meta(c) for c in r.stage.cases]}
                for r in self.recorded
            ],
            "host": {"python": sys.version.split()[0], "platform": platform.platform(),
                     "machine": platform.machine()},
        }
        # indented only when small: the pure-Python indenting encoder is slow
        large = sum(len(r.stage.cases) for r in self.recorded) > 2000
        _replace_text(self.path / "metadata.json", json.dumps(meta, indent=None if large else 2))

    def outcome(self, exit_code: int, error: str | None) -> dict[str, object]:
        """The task's outcome as ``--json`` prints it: exit code, counts, report
        and every case with its status and reason."""
        cases = [{"suite": f"{r.host}.{r.stage.name}", "name": clean_line(c.name, limit=500),
                  "status": c.status.value, "message": clean_line(c.message, limit=2000)}
                 for r in self.recorded for c in r.stage.cases]
        return {"task": self.task, "run": self.id, "exit_code": exit_code, "error": error,
                "report": str(self.path / "junit.xml"),
                "counts": {st.value: k for st, k in self._counts().items()}, "cases": cases}

    def _counts(self) -> dict[Status, int]:
        n = {st: 0 for st in Status}
        for r in self.recorded:
            for c in r.stage.cases:
                n[c.status] += 1
        return n

    def tally(self) -> str:
        """"12 passed, 1 failed, 0 errors, 3 skipped" over every case of the run."""
        n = self._counts()
        return (f"{n[Status.PASS]} passed, {n[Status.FAIL]} failed, {n[Status.ERROR]} errors, "
                f"{n[Status.SKIP]} skipped")

    def facts(self) -> dict[str, str]:
        """What the summaries show at the top: the run, its own facts, and the
        facts of its cell when it has exactly one."""
        keys = ("kernel", "series", "commit", "base_commit", "patchset_hash", "build_id",
                "kernel_release", "compiler", "qemu")
        labels = {label for label, _ in self._facts}
        one = self.facts_of(next(iter(labels))) if len(labels) == 1 else {}
        booted = [f.get("kernel_release", "") for (_, h), f in self._facts.items()
                  if h != "local"]
        if len(labels) == 1 and len(booted) == 1 and booted[0]:
            one["kernel_release"] = booted[0]
        qemu = sorted({f["qemu"] for f in self._facts.values() if f.get("qemu")})
        if qemu:
            one["qemu"] = ", ".join(qemu)
        return {"run": self.id, **{k: one[k] for k in keys if k in one}, **self.info,
                "hvlab": hvlab_version}

    @property
    def has_results(self) -> bool:
        """A stage began or recorded something."""
        return self._began or bool(self.recorded)

    def _maybe_point_latest(self, final: bool = False) -> None:
        """Point reports/latest here when this run has results, or at the end
        when none exists (not before: a report.* task with no --run reads
        latest and must not find its own empty folder there)."""
        latest = self.ws.reports / "latest"
        if self._latest:
            return
        wanted = self._moves_latest and not self.usage_error and self.has_results
        if wanted or (final and not (latest.is_symlink() or latest.exists())):
            self._point_latest()
            self._latest = True

    def _point_latest(self) -> None:
        latest = self.ws.reports / "latest"
        tmp = self.ws.reports / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(self.id, tmp)
        os.replace(tmp, latest)  # atomic: readers never see a missing link


def _case_meta(c: TestCase) -> dict[str, object]:
    return {"name": clean_line(c.name, limit=500), "status": c.status.value,
            "message": clean_line(c.message, limit=500), "duration_s": round(c.duration, 3)}


def _view(suite: junit.Suite) -> view.SuiteView:
    return view.SuiteView(suite.name, tuple(
        view.CaseView(c.name, c.classname or suite.classname, c.status, c.message, c.output,
                      c.duration, str(c.log_path) if c.log_path else "",
                      c.flaky) for c in suite.cases),
        dict(suite.properties), suite.duration, suite.timestamp)


def write_summaries(folder: Path, title: str, suites: list[view.SuiteView],
                    facts: Mapping[str, str],
                    classes: Mapping[tuple[str, str], str] | None = None,
                    known: Mapping[tuple[str, str], str] | None = None,
                    notes: list[str] | None = None) -> None:
    """summary.md and report.html beside a junit.xml (atomically, like it)."""
    links = evidence_links(folder)
    try:
        series = seriesrecord.read(folder)
    except UserError:
        series = []  # a record hvlab did not write: the reports go without it
    for name, text in (
            ("summary.md", summary.render(title, suites, facts, classes, known, notes, links,
                                          series)),
            ("report.html", html.render(title, suites, facts, str(folder), classes, known,
                                        links, series))):
        _replace_text(folder / name, text)


EVIDENCE = (("console", "console-*.log"), ("dmesg", "dmesg-*.log"), ("config", "config-*.log"))


def evidence_links(folder: Path, limit: int = 12) -> list[tuple[str, str]]:
    """(label, path relative to ``folder``) of the run's consoles, dmesg and the
    configurations it built with, for the reports' environment."""
    out: list[tuple[str, str]] = []
    logs = folder / "logs"
    if not logs.is_dir():
        return out
    for label, pattern in EVIDENCE:
        for path in sorted(logs.rglob(pattern))[:limit]:
            name = path.stem.split("-", 1)[1] if "-" in path.stem else path.stem
            out.append((f"{label} {name}", str(path.relative_to(folder))))
    return out


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a full disk leaves the old file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
