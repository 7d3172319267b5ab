"""The e2e tier's cold work, started in the background when the session starts.

The e2e tier needs the real tree built cold (fetch, patch, configure, the
baseline and the series: a quarter of an hour on two cores) and the installed
VM's disk image (a few minutes).  Run one after the other in front of the e2e
tests, they were the largest part of the suite's time, while the unit and
integration tiers, which run first, leave a core idle much of the time
(QEMU guests booting, sshd answering, timeouts running out).

So when the session holds e2e tests, a session fixture starts ``inv build``
of the default kernel and series and ``inv image.vm`` at nice 19 into the
e2e tier's own kernels/ as soon as the first test runs, and once the build
has passed ``inv run --plan arches`` (the other arches and toolchains; it
reuses that build for its x86_64 cell); the e2e fixtures wait for them.
They are ordinary hvlab runs: their exit codes and JUnit are checked, so the
cold build and the image build are still tested, and the e2e tests then
find both in the cache as a second run would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hvlab import procs
from tests.conftest import REPO, Env

KERNEL, SERIES = "linux-6.1", "hyperv-sample"
JOBS = {
    "build": ["build", "--kernel", KERNEL, "--series", SERIES],
    "image": ["image.vm"],
    "arches": ["run", "--plan", "arches"],
}
# A job started when another has passed (one build at a time in a workspace).
AFTER = {"arches": "build"}


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
    later: dict[str, threading.Event] = field(default_factory=dict)
    _stopping: bool = False

    @classmethod
    def start(cls, env: Env, names: list[str]) -> Prebuild:
        """``names`` started now, or (AFTER) by a thread once their first job passed."""
        done = cls(env, {n: Job.start(n, env) for n in names if n not in AFTER})
        for name in (n for n in names if n in AFTER):
            done.later[name] = threading.Event()
            threading.Thread(target=done._after, args=(name,), daemon=True).start()
        return done

    def _after(self, name: str) -> None:
        job = None
        try:
            if self.jobs[AFTER[name]].proc.wait() == 0 and not self._stopping:
                job = self.jobs[name] = Job.start(name, self.env)
        finally:
            self.later[name].set()
        if job is not None:
            # the job dies with the thread that started it (PR_SET_PDEATHSIG is
            # per thread): this one stays until the job has ended
            job.proc.wait()

    def wait(self, name: str) -> str:
        if name in self.later:
            self.later[name].wait()
            if name not in self.jobs:
                raise AssertionError(f"prebuild {name} never started: prebuild "
                                     f"{AFTER[name]} failed")
        return self.jobs[name].wait()

    def stop(self) -> None:
        self._stopping = True
        for event in self.later.values():
            event.wait(5)
        for job in list(self.jobs.values()):
            job.stop()
