"""The run folder CI relies on (design.md): ``reports/<run-id>/``.

junit.xml, metadata.json, logs/ and the ``reports/latest`` link, written
whatever happened (a failed or interrupted run still leaves valid XML).
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import junit
from .results import StageResult, Status, TestCase
from .workspace import Workspace


@dataclass
class Recorded:
    stage: StageResult
    kernel: str
    host: str
    extra: Mapping[str, str] = field(default_factory=dict)


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

    def log(self, name: str) -> Path:
        path = self.logs / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def plan(self, stage: str, kernel: str, host: str = "local") -> None:
        if (stage, kernel, host) not in self.planned:
            self.planned.append((stage, kernel, host))

    def add(self, stage: StageResult, kernel: str, host: str = "local",
            extra: Mapping[str, str] | None = None) -> StageResult:
        self.recorded.append(Recorded(stage, kernel, host, dict(extra or {})))
        return stage

    def statuses(self) -> list[Status]:
        return [r.stage.status for r in self.recorded]

    def _missing_stages(self) -> list[Recorded]:
        done = {(r.stage.name, r.kernel, r.host) for r in self.recorded}
        failed = next((r for r in self.recorded if not r.stage.ok), None)
        reason = (f"not run: stage '{failed.stage.name}' did not pass" if failed
                  else "not run: the run stopped before it")
        return [Recorded(StageResult.skipped(stage, reason), kernel, host)
                for stage, kernel, host in self.planned if (stage, kernel, host) not in done]

    def suites(self) -> list[junit.Suite]:
        out = []
        for r in self.recorded + self._missing_stages():
            extra = {**self.properties, **r.extra}
            out.append(junit.suite_from_stage(r.stage, r.kernel, r.host, extra))
        return out

    def finish(self, exit_code: int, error: str | None = None) -> Path:
        xml = junit.write(self.path / "junit.xml", self.suites())
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
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.path / "metadata.json")
        self._point_latest()
        return xml

    def _point_latest(self) -> None:
        latest = self.ws.reports / "latest"
        tmp = self.ws.reports / f".latest-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(self.id, tmp)
        os.replace(tmp, latest)  # atomic: readers never see a missing link


def _case_meta(c: TestCase) -> dict[str, object]:
    return {"name": c.name, "status": c.status.value, "message": c.message[:500],
            "duration_s": round(c.duration, 3)}
