"""Runs whose folder says they never finished (``"finished": false`` in
metadata.json): still going, or killed before the end (SIGKILL, the OOM
killer, a CI timeout, the machine going down)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hvlab import procs

HEAD = 4096  # "finished" is written near the top of metadata.json


@dataclass(frozen=True)
class Unfinished:
    run_id: str
    task: str
    started: str
    running: tuple[str, ...]  # the stages it was in
    alive: bool  # its process is still the one that wrote the file

    def line(self) -> str:
        where = ", ".join(self.running) or "between stages"
        if self.alive:
            return f"{self.run_id}: {self.task} still running ({where})"
        return f"{self.run_id}: {self.task} started {self.started} never finished ({where})"


def find(reports: Path) -> list[Unfinished]:
    out = []
    for meta in sorted(reports.glob("*/metadata.json")):
        if meta.parent.is_symlink():  # reports/latest
            continue
        try:
            with meta.open("rb") as fh:
                if b'"finished": false' not in fh.read(HEAD):
                    continue
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        pid, started = data.get("pid"), data.get("pid_started")
        alive = isinstance(pid, int) and started is not None and \
            procs.start_time(pid) == started
        out.append(Unfinished(str(data.get("run_id", meta.parent.name)),
                              str(data.get("task", "?")), str(data.get("started", "?")),
                              tuple(str(x) for x in data.get("running", [])), alive))
    return out
