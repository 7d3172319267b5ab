"""One task invocation: workspace, run folder, progress, errors -> exit codes.

UserError -> 2, InfraError -> 3, interrupted -> 3, otherwise the worst stage
status (design.md).  The run folder is finished in every case.  No traceback
is printed unless ``debug``.
"""

from __future__ import annotations

import datetime as dt
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hvlab.config import loader
from hvlab.config.loader import Config
from hvlab.errors import HvlabError, InfraError, Interrupted, UserError
from hvlab.progress import Progress
from hvlab.report.runfolder import RunFolder
from hvlab.results import StageResult, Status, TestCase, exit_code_for
from hvlab.workspace import Workspace


@dataclass
class Session:
    ws: Workspace
    run: RunFolder
    progress: Progress
    debug: bool
    _config: Config | None = None
    current: tuple[str, str, str] | None = None  # (stage, kernel, host) being run
    exit_code: int | None = None  # set by flows whose code is not the worst status

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = loader.load_or_raise(self.ws)
        return self._config

    def begin(self, stage: str, kernel: str, host: str = "local", detail: str = "") -> Path:
        """Mark ``stage`` as running; returns its log path."""
        self.current = (stage, kernel, host)
        label = self.run.label(kernel)
        self.progress.stage(stage, detail or label)
        return self.run.log(f"{stage}-{label}" + ("" if host == "local" else f"-{host}"))

    def record(self, stage: StageResult, kernel: str, host: str = "local") -> StageResult:
        self.current = None
        self.run.add(stage, kernel, host)
        note = "cached" if stage.properties.get("cached") == "true" else ""
        self.progress.done(stage.name, stage.status, stage.duration, note)
        for case in stage.cases:
            if case.status in (Status.FAIL, Status.ERROR):
                self.progress.info(f"  {case.status.value.upper()}: {case.name}: {case.message}")
        return stage


class _Terminated(BaseException):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated("interrupted by SIGTERM")


@contextmanager
def session(task: str, argv: Sequence[str], debug: bool = False, quiet: bool = False,
            root: Path | None = None) -> Iterator[Session]:
    """Yields a Session; on exit writes the run folder and raises SystemExit(code)."""
    ws = Workspace.from_env(root)
    progress = Progress(quiet=quiet)
    run = RunFolder(ws, task, argv)
    s = Session(ws, run, progress, debug)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    code = 0
    error: str | None = None
    try:
        yield s
        _known_failures(s)
        code = s.exit_code if s.exit_code is not None else exit_code_for(run.statuses())
    except HvlabError as exc:
        code, error = exc.exit_code, str(exc)
        _record_error(s, exc)
    except (KeyboardInterrupt, _Terminated) as exc:
        sig = "SIGTERM" if isinstance(exc, _Terminated) else "SIGINT"
        err = Interrupted(f"interrupted by {sig}")
        code, error = err.exit_code, str(err)
        _record_error(s, err)
    except OSError as exc:  # disk full, permissions, a vanished file: the machine, not us
        where = f": {exc.filename}" if exc.filename else ""
        infra = InfraError(f"{exc.strerror or exc}{where}")
        code, error = infra.exit_code, str(infra)
        _record_error(s, infra)
    except Exception as exc:  # a bug in hvlab: still leave a valid report
        code, error = 3, f"internal error: {type(exc).__name__}: {exc}"
        _record_error(s, exc, message=error)
        if not debug:
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
            where = f"(could not write the report: {exc})"
            code = 3
        if error:
            print(f"hvlab: error: {error}", file=sys.stderr)
        if not quiet:
            print(f"hvlab: {task}: exit {code} ({run.tally()}); report {where}",
                  file=sys.stderr)
    raise SystemExit(code)


def _known_failures(s: Session) -> None:
    """configs/known-failures.yaml: matching failures do not gate; say which
    entries expired or matched nothing (only when this run loaded the config)."""
    if s._config is None or not s._config.known_failures:
        return
    outcome = s.run.apply_known(s._config.known_failures, dt.date.today())
    for e in outcome.expired:
        s.progress.info(f"known failure '{e.pattern}' expired on {e.expires}: it gates again")
    for e in outcome.stale:
        s.progress.info(f"known failure '{e.pattern}' ran and passed: remove it?")


def _record_error(s: Session, exc: BaseException, message: str | None = None) -> None:
    stage, kernel, host = s.current or (s.run.task, "-", "local")
    text = message or str(exc)
    if isinstance(exc, UserError):
        text = f"bad input: {text}"
    case = TestCase(stage if s.current is None else f"{stage}: {kernel}", Status.ERROR, text,
                    output=traceback.format_exc() if s.debug else "")
    s.run.add(StageResult.from_cases(stage, [case], 0.0), kernel, host)
    s.current = None
