"""No orphans: every process hvlab starts dies with hvlab, even on SIGKILL.

Two lines of defence:

1. ``die_with_parent`` (a ``preexec_fn``): the child asks the kernel for
   SIGKILL when the thread that started it goes away (PR_SET_PDEATHSIG).
   hvlab starts each child from the thread that waits for it, so that thread
   outlives the child while hvlab runs.
2. ``track``: a record per child under ``kernels/run/procs/`` (pid, start
   time, command line, and the same for the hvlab process that owns it).  The
   next run on the workspace (``reap``) stops the process group of every
   child whose owner is gone, if the pid still names the same process: pids
   are matched by start time, never by name, and only records of this boot
   and pid namespace are judged.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # looked up here: the forked child only calls it
_folder: Path | None = None
_lock = threading.Lock()


def die_with_parent() -> None:
    """``preexec_fn``: SIGKILL this child when its parent thread exits."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field
    22), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and ')'
    return int(fields[19])


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode("utf-8", "replace").split("\0")[:-1]


def _alive(pid: int, started: int | None) -> bool:
    """``pid`` is still the process that was recorded: pid and start time
    together name one process for the life of the machine (a reused pid starts
    later; the command line is no test, a child may exec another program)."""
    return started is not None and start_time(pid) == started


def _space() -> dict[str, str]:
    """Where pids mean what they mean here: this boot and this pid namespace (a
    kernels/ shared with another container or machine holds records whose pids
    name other processes, or none)."""
    out = {"boot": "", "pidns": ""}
    try:
        out["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        out["pidns"] = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return out


_SPACE = _space()


def space_tag() -> str:
    """A short name for this boot and pid namespace (for names that hold a pid)."""
    return hashlib.sha256(f"{_SPACE['boot']} {_SPACE['pidns']}".encode()).hexdigest()[:8]


def use(folder: Path) -> None:
    """Record children under ``folder`` from now on (a session's workspace)."""
    global _folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a full or read-only kernels/: the death signal still holds
        _folder = None
        return
    _folder = folder


def track(pid: int, argv: Sequence[str], what: str) -> None:
    """Record a child just started (a no-op outside a session)."""
    folder = _folder
    if folder is None:
        return
    started = start_time(pid)
    if started is None:
        return  # already gone
    record = {"pid": pid, "started": started, "argv": _cmdline(pid) or list(argv),
              "what": what, "owner": os.getpid(), "owner_started": start_time(os.getpid()),
              **_SPACE}
    tmp = folder / f".{pid}.tmp"
    try:
        tmp.write_text(json.dumps(record))
        os.replace(tmp, folder / f"{pid}.json")
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: the first line of defence remains


def untrack(pid: int) -> None:
    folder = _folder
    if folder is not None:
        (folder / f"{pid}.json").unlink(missing_ok=True)


def _stop_group(pid: int, started: int | None) -> bool:
    """SIGKILL the process group the recorded child led (it was started as a
    session leader).  The leader may be gone while its children (make's
    compilers) live on: Linux never gives a new process a pid that is still a
    process group's id, so a group with that id is the child's.  A pid now
    held by another process is left alone."""
    if start_time(pid) is not None and not _alive(pid, started):
        return False  # the pid was reused
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        return False  # nothing left
    return True


@dataclass(frozen=True)
class Reaped:
    pid: int
    what: str
    owner: int


def reap(folder: Path, say: Callable[[str], None]) -> list[Reaped]:
    """Stop what dead runs left running; forget records of processes gone."""
    out: list[Reaped] = []
    with _lock:
        for path in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                pid, owner = int(rec["pid"]), int(rec["owner"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if rec.get("pidns", _SPACE["pidns"]) != _SPACE["pidns"]:
                continue  # another container's: its pids are not ours to judge
            if rec.get("boot", _SPACE["boot"]) != _SPACE["boot"]:
                path.unlink(missing_ok=True)  # nothing survives a reboot
                continue
            if _alive(owner, rec.get("owner_started")):
                continue  # its run is still going (another run on this workspace)
            if _stop_group(pid, rec.get("started")):
                say(f"stopped {rec.get('what', 'a process')} (pid {pid}) that a run "
                    f"which did not finish (pid {owner}) left running")
                out.append(Reaped(pid, str(rec.get("what", "")), owner))
            path.unlink(missing_ok=True)
    return out
