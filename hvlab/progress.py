"""Progress for long work.

On a terminal: the current stage with elapsed time and a live tail line of
its log, redrawn in place.  Without a TTY (CI): plain timestamped lines, no
control characters, no per-log-line noise.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from hvlab.report.sanitize import clean_line
from hvlab.results import Status


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self._stage = ""
        self._stage_t0 = self.t0
        self._last_draw = 0.0
        self._drawn = False

    def _elapsed(self, since: float | None = None) -> str:
        s = int(time.monotonic() - (since if since is not None else self.t0))
        return f"{s // 60:02d}:{s % 60:02d}"

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False

    def info(self, message: str) -> None:
        if self.quiet:
            return
        self._clear()
        stamp = time.strftime("%H:%M:%S") if not self.tty else self._elapsed()
        self.stream.write(f"[{stamp}] {message}\n")
        self.stream.flush()

    def stage(self, name: str, detail: str = "") -> None:
        self._stage = f"{name} {detail}".strip()
        self._stage_t0 = time.monotonic()
        self.info(f"{self._stage} ...")

    def log_line(self, line: str) -> None:
        """A line of the current stage's log: shown as a live tail on a terminal."""
        if self.quiet or not self.tty:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((100, 20)).columns
        head = f"[{self._elapsed(self._stage_t0)}] {self._stage} | "
        text = clean_line(line, limit=max(width - len(head) - 1, 10))
        self.stream.write("\r\x1b[2K" + (head + text)[: width - 1])
        self.stream.flush()
        self._drawn = True

    def done(self, name: str, status: Status, duration: float, note: str = "") -> None:
        extra = f" ({note})" if note else ""
        self.info(f"{name}: {status.value.upper()} in {duration:.1f} s{extra}")
