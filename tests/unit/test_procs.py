"""No orphans: children die with hvlab (PR_SET_PDEATHSIG), and what a dead run
left is found from its records and stopped, pids matched by start time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvlab import procs

pytestmark = pytest.mark.unit

SPAWN = """
import subprocess, sys
from pathlib import Path
from hvlab import procs
procs.use(Path(sys.argv[1]))
child = subprocess.Popen(["sleep", "300"], start_new_session=True,
                         preexec_fn=procs.die_with_parent if sys.argv[2] == "die" else None)
procs.track(child.pid, ["sleep", "300"], "a sleeper")
print(child.pid, flush=True)
sys.stdin.read()  # until the test kills this process
"""


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        state = procs.start_time(pid)
        if state is None or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True
        time.sleep(0.05)
    return False


def owner(folder: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    """A stand-in hvlab process that starts a sleeper; returns it and the pid."""
    proc = subprocess.Popen([sys.executable, "-c", SPAWN, str(folder), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_a_child_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    proc, pid = owner(tmp_path, "die")
    assert procs.start_time(pid) is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert gone_within(pid, 5)


def test_the_next_run_stops_what_a_killed_run_left(tmp_path: Path) -> None:
    proc, pid = owner(tmp_path, "stay")  # no death signal: the second line must act
    try:
        said: list[str] = []
        assert procs.reap(tmp_path, said.append) == []  # its owner still runs
        assert procs.start_time(pid) is not None and said == []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert procs.start_time(pid) is not None  # orphaned, still running
        reaped = procs.reap(tmp_path, said.append)
        assert [r.pid for r in reaped] == [pid]
        assert said == [f"stopped a sleeper (pid {pid}) that a run which did not finish "
                        f"(pid {proc.pid}) left running"]
        assert gone_within(pid, 5)
        assert list(tmp_path.glob("*.json")) == []
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_a_pid_that_now_names_another_process_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = procs.start_time(other.pid)
        assert started is not None
        (tmp_path / f"{other.pid}.json").write_text(json.dumps({
            "pid": other.pid, "started": started - 1, "argv": ["sleep", "300"],
            "what": "QEMU", "owner": 2 ** 22 + 1, "owner_started": 1}))
        said: list[str] = []
        assert procs.reap(tmp_path, said.append) == []
        assert other.poll() is None and said == []
        assert list(tmp_path.glob("*.json")) == []  # the stale record is dropped
    finally:
        other.kill()
        other.wait()
