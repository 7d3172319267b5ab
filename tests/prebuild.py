"""The e2e tier's cold work, started in the background when the session starts.

The e2e tier needs the real tree built cold (fetch, patch, configure, the
baseline and the series: a quarter of an hour on two cores) and the installed
VM's disk image (a few minutes).  Run one after the other in front of the e2e
tests, they were the largest part of the suite's time, while the unit and
integration tiers, which run first, leave a core idle much of the time
(QEMU guests booting, sshd answering, timeouts running out).

So when the session holds e2e tests, a session fixture starts ``inv build``
of the default kernel and series and ``inv image.vm`` at nice 19 into the
e2e tier's own kernels/ as soon as the first test runs; the e2e fixtures
wait for them.  They are ordinary hvlab runs: their exit codes and JUnit are
checked, so the cold build and the image build are still tested, and the
e2e tests then find both in the cache as a second run would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hvlab import procs
from tests.conftest import REPO, Env

KERNEL, SERIES = "linux-6.1", "hyperv-sample"
JOBS = {
    "build": ["build", "--kernel", KERNEL, "--series", SERIES],
    "image": ["image.vm"],
}


def _lowered() -> None:
    """``preexec_fn``: below every test in priority, gone with pytest."""
    os.nice(19)
    procs.die_with_parent()


@dataclass
class Job:
    name: str
    env: Env
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, name: str, env: Env) -> Job:
        log = env.root / f"prebuild-{name}.log"
        reports = env.root / f"prebuild-{name}-reports"
        vars_ = {**os.environ, **env.vars, "HVLAB_REPORTS": str(reports)}
        vars_.pop("HVLAB_DEBUG", None)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "invoke", "--search-root", str(REPO), *JOBS[name]],
                cwd=env.root, env=vars_, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_lowered)
        return cls(name, env, proc, log)

    @property
    def junit(self) -> Path:
        return self.env.root / f"prebuild-{self.name}-reports" / "latest" / "junit.xml"

    def wait(self, timeout: float = 5400) -> str:
        """Its output once it ended with 0; an AssertionError naming its log
        (and its tail) otherwise."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"prebuild {self.name} still running after {timeout:.0f} s; "
                                 f"log {self.log}") from None
        text = self.log.read_text(errors="replace")
        if rc != 0:
            raise AssertionError(f"prebuild {self.name} (inv {' '.join(JOBS[self.name])}) "
                                 f"exited {rc}; log {self.log}:\n{text[-3000:]}")
        return text

    def stop(self) -> None:
        """SIGTERM, as a user's Ctrl-C would (hvlab cleans up), then SIGKILL."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Prebuild:
    env: Env
    jobs: dict[str, Job]

    def wait(self, name: str) -> str:
        return self.jobs[name].wait()

    def stop(self) -> None:
        for job in self.jobs.values():
            job.stop()
