"""One task invocation: workspace, run folder, progress, errors -> exit codes.

Every stage runs inside ``Session.stage(name, scope)``: the scope (a cell's
label and host) travels with the call, never through a shared "current
stage" field, so threads working on different hosts each file their errors
under their own stage.  The gate is decided once, in ``session()``, after
known failures are applied (docs/design.md, "Exit codes"):
UserError -> 2, InfraError or interruption -> 3, else the gate's verdict.
The run folder is finished in every case; no traceback unless ``debug``.
"""

from __future__ import annotations

import datetime as dt
import enum
import errno
import json
import signal
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hvlab import procs
from hvlab.config import loader
from hvlab.config.tables import Config
from hvlab.errors import HvlabError, UserError
from hvlab.progress import Progress
from hvlab.report import compare
from hvlab.report.runfolder import RunFolder
from hvlab.results import StageResult, Status, TestCase, exit_code_for
from hvlab.workspace import Workspace


class Gate(enum.StrEnum):
    """How the exit code is decided: any failure fails, or only regressions."""

    ALL = "all"
    REGRESSIONS = "regressions"

    @classmethod
    def parse(cls, value: str, flag: str = "--gate") -> Gate:
        try:
            return cls(value)
        except ValueError:
            raise UserError(f"{flag} {value}: expected all or regressions") from None


@dataclass(frozen=True)
class Scope:
    """Where a stage's result belongs: a cell (its label) on a host."""

    label: str  # the kernel name, or a matrix cell "kernel+series[+variant]"
    host: str = "local"

    def on(self, host: str) -> Scope:
        return Scope(self.label, host)

    def log_name(self, stage: str) -> str:
        return f"{stage}-{self.label}" + ("" if self.host == "local" else f"-{self.host}")


def describe_exception(exc: BaseException) -> str:
    """The one line an exception is reported as."""
    if isinstance(exc, _Terminated):
        return "interrupted by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(exc, HvlabError):
        return f"bad input: {exc}" if isinstance(exc, UserError) else str(exc)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"internal error: {type(exc).__name__}: {exc}"


def _mark(exc: BaseException) -> None:
    exc.hvlab_recorded = True  # type: ignore[attr-defined]


def recorded(exc: BaseException) -> bool:
    """Whether a stage already filed ``exc`` as its error case."""
    return bool(getattr(exc, "hvlab_recorded", False))


@dataclass
class Session:
    ws: Workspace
    run: RunFolder
    progress: Progress
    debug: bool
    gate: Gate | None = None  # None: the task's default (a plan's gate, else all)
    bad_input: bool = False  # a task that reports bad input as cases (config.check)
    loaded: Config | None = field(default=None, repr=False)  # configs/, once read
    json_out: bool = False  # --json: stdout carries only the outcome document
    json_extra: dict[str, object] = field(default_factory=dict)  # for --json, beside the cases

    @property
    def config(self) -> Config:
        """configs/, loaded (and validated) on first use."""
        if self.loaded is None:
            self.loaded = loader.load_or_raise(self.ws)
        return self.loaded

    @contextmanager
    def stage(self, name: str, scope: Scope, detail: str = "") -> Iterator[Path]:
        """Run stage ``name`` of ``scope``: yields its log path.  An exception that
        escapes is filed as this stage's ERROR case (once) and re-raised."""
        self.progress.stage(name, detail or scope.label)
        where = scope.label if scope.host == "local" else f"{scope.label} on {scope.host}"
        token = self.run.begin(f"{name} ({where})")
        try:
            yield self.run.log(scope.log_name(name))
        except BaseException as exc:
            if not recorded(exc):
                self.record(StageResult.from_cases(name, [TestCase(
                    f"{name}: {scope.label}",
                    Status.ERROR, describe_exception(exc),
                    output=traceback.format_exc() if self.debug else "")], 0.0), scope)
                _mark(exc)
            raise
        finally:
            self.run.end(token)

    def record(self, stage: StageResult, scope: Scope) -> StageResult:
        self.run.add(stage, scope.label, scope.host)
        note = "cached" if stage.cached else ""
        self.progress.done(stage.name, stage.status, stage.duration, note)
        for case in stage.cases:
            if case.status in (Status.FAIL, Status.ERROR):
                self.progress.info(f"  {case.status.value.upper()}: {case.name}: {case.message}")
        return stage

    def plan(self, stage: str, scope: Scope) -> None:
        """A stage this task means to run: reported SKIPPED if it never does."""
        self.run.plan(stage, scope.label, scope.host)

    def attach(self, scope: Scope, facts: Mapping[str, str]) -> None:
        """Facts a stage of ``scope`` returned, as properties of every testsuite of
        that cell (host "local": the cell's build; a host: that host's stages)."""
        self.run.attach(scope.label, scope.host, facts)


class _Terminated(BaseException):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated("interrupted by SIGTERM")


@contextmanager
def session(task: str, argv: Sequence[str], debug: bool = False, quiet: bool = False,
            root: Path | None = None, gate: str = "", config: Config | None = None,
            moves_latest: bool = True, json_out: bool = False) -> Iterator[Session]:
    """Yields a Session; on exit writes the run folder and raises SystemExit(code).
    ``config`` is used instead of reading configs/ (in-process tests);
    ``moves_latest`` False for a task that only reads results (runfolder.py);
    ``json_out``: the outcome as one JSON document on stdout (``--json``)."""
    ws = Workspace.from_env(root)
    progress = Progress(quiet=quiet)
    try:
        run = RunFolder(ws, task, argv, moves_latest)
    except OSError as exc:
        print(f"hvlab: error: cannot create a run folder in {ws.display(ws.reports)}: "
              f"{_write_failure(exc)}", file=sys.stderr)
        raise SystemExit(3) from None
    s = Session(ws, run, progress, debug, loaded=config, json_out=json_out)
    procs.use(ws.processes)
    procs.reap(ws.processes, progress.info)  # what a killed run left running
    run.checkpoint()  # a report exists from the start: SIGKILL leaves it in place
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    error: str | None = None
    try:
        if gate:
            s.gate = Gate.parse(gate)
        yield s
        code = decide(s)
    except BaseException as exc:
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        code = _exit_code(exc)
        error = describe_exception(exc).removeprefix("bad input: ")
        if not recorded(exc):
            # bad arguments before any stage: latest stays on the last results
            run.usage_error = isinstance(exc, UserError) and not run.has_results
            s.record(StageResult.from_cases(task, [TestCase(
                task, Status.ERROR, describe_exception(exc),
                output=traceback.format_exc() if debug else "")], 0.0), Scope("-"))
        if code == 3 and not isinstance(exc, HvlabError | OSError | KeyboardInterrupt
                                         | _Terminated) and not debug:
            error += " (run with --debug for the traceback)"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if debug and sys.exc_info()[0] is not None:
            traceback.print_exc()
        try:
            xml = run.finish(code, error)
            where = ws.display(xml)
            if (run.path / "report.html").is_file():
                where += f", {ws.display(run.path / 'report.html')}"
        except OSError as exc:
            where = "(not written)"
            error = (f"{error}; " if error else "") + \
                f"cannot write the report in {ws.display(run.path)}: {_write_failure(exc)}"
            code = 3
        if error:
            print(f"hvlab: error: {error}", file=sys.stderr)
        if json_out:
            print(json.dumps({**run.outcome(code, error), **s.json_extra}, indent=1))
        if not quiet:
            print(f"hvlab: {task}: exit {code} ({run.tally()}); report {where}",
                  file=sys.stderr)
    raise SystemExit(code)


def _write_failure(exc: OSError) -> str:
    """Why reports/ could not be written, as the one error line says it."""
    if exc.errno == errno.ENOSPC:
        return "disk full (no space left on device)"
    return exc.strerror or str(exc)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, HvlabError):
        return exc.exit_code
    return 3  # interrupted, the machine (OSError), or a bug in hvlab


def decide(s: Session) -> int:
    """The gate, once, at the end of the task: known failures first, then the
    verdict under ``s.gate`` (bad input reported as cases gives 2)."""
    _known_failures(s)
    if s.bad_input:
        return 2
    if s.gate is Gate.REGRESSIONS:
        results = s.run.case_results()
        known = {k: compare.KnownFailure(k[1], v) for k, v in s.run.known.items()}
        return compare.gate(results, s.run.classes or {}, known, "regressions")
    return exit_code_for(s.run.statuses())


def _known_failures(s: Session) -> None:
    """configs/known-failures.yaml: matching failures do not gate; say which
    entries expired or matched nothing (only when this run loaded the config)."""
    config = s.loaded
    if config is None or not config.known_failures:
        return
    outcome = s.run.apply_known(config.known_failures, dt.date.today())
    for e in outcome.expired:
        s.progress.info(f"known failure '{e.pattern}' expired on {e.expires}: it gates again")
    for e in outcome.stale:
        s.progress.info(f"known failure '{e.pattern}' ran and passed: remove it?")


@dataclass(frozen=True)
class CellRecorder:
    """``hosts.base.CellLog`` for one scope of a session: what a host kind records
    the stages of the cell it boots through."""

    s: Session
    scope: Scope

    @property
    def logs(self) -> Path:
        """Where this cell's host-side logs go: the run's logs/ for a task of one
        cell; logs/<cell>@<host>/ in a matrix, so hosts working in parallel and
        the cells of one host never write the same file."""
        return self.s.run.cell_logs(self.scope.label, self.scope.host)

    def stage(self, name: str, detail: str = "") -> AbstractContextManager[Path]:
        return self.s.stage(name, self.scope, detail)

    def record(self, result: StageResult) -> StageResult:
        return self.s.record(result, self.scope)

    def info(self, message: str) -> None:
        self.s.progress.info(message)
