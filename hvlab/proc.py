"""Local process execution: argument lists only, timeouts, logs streamed to files.

Every child runs in its own session so a timeout or an interrupt stops the
whole process group (make's children included), never only the parent.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab import procs
from hvlab.errors import InfraError

# tool -> the Debian package that provides it (named in "missing tool" errors)
PACKAGES = {
    "git": "git",
    "perl": "perl",
    "make": "make",
    "gcc": "gcc",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "cpio": "cpio",
    "ccache": "ccache",
    "xz": "xz-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "kexec": "kexec-tools",
    "depmod": "kmod",
    "rsync": "rsync",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "sgdisk": "gdisk",
    "sparse": "sparse",
}


def require_tool(name: str, package: str | None = None, needed_for: str = "") -> str:
    """The absolute path of ``name`` or an InfraError naming its Debian package
    (``package``, else the known one) and, when given, what needs it."""
    path = shutil.which(name)
    if path is None:
        package = package or PACKAGES.get(name, name)
        why = f"it builds {needed_for}; " if needed_for else ""
        raise InfraError(f"'{name}' is not installed (Debian package: {package}; "
                         f"{why}run ci/setup.sh)")
    return path


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    duration: float
    output: str  # the last lines (all of them when short), stdout and stderr merged
    log_path: Path | None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def machine_failure(self, what: str) -> InfraError | None:
        """The machine, not the input, made it fail: a full disk or a timeout."""
        where = f" (see {self.log_path})" if self.log_path else ""
        if "No space left on device" in self.output:
            return InfraError(f"{what}: no space left on device{where}")
        if self.timed_out:
            return InfraError(f"{what}: {Path(self.argv[0]).name} timed out{where}")
        return None


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    stdin_data: bytes | None = None,
    tail_lines: int = 400,
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run ``argv``; merge stdout and stderr into ``log`` (appended) as they come.
    (One function on purpose: the process, its log and the stop-on-error path
    share one try block.)

    Never raises for a non-zero exit; raises InfraError when the program
    cannot be started.  ``KeyboardInterrupt`` and other exceptions stop the
    process group before they propagate.
    """
    argv = tuple(str(a) for a in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    logf = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        logf = log.open("ab")
        logf.write(f"$ {' '.join(argv)}\n".encode())
        logf.flush()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=procs.die_with_parent,
        )
    except FileNotFoundError:
        if logf:
            logf.close()
        package = PACKAGES.get(Path(argv[0]).name)
        hint = f" (Debian package: {package})" if package else ""
        raise InfraError(f"cannot run '{argv[0]}': not found{hint}") from None
    except OSError as exc:
        if logf:
            logf.close()
        raise InfraError(f"cannot run '{argv[0]}': {exc.strerror}") from None
    timed_out = False
    procs.track(proc.pid, argv, f"'{Path(argv[0]).name}'")
    try:
        if stdin_data is not None and proc.stdin is not None:
            try:
                proc.stdin.write(stdin_data)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        assert proc.stdout is not None
        deadline = started + timeout if timeout else None
        if deadline is not None:
            _arm_timeout(proc, deadline)
        for raw in iter(proc.stdout.readline, b""):
            if logf:
                logf.write(raw)
            line = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            tail.append(line)
            if on_line:
                on_line(line)
        proc.wait()
        timed_out = getattr(proc, "_hvlab_timed_out", False)
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        procs.untrack(proc.pid)
        if logf:
            if timed_out:
                logf.write(f"[hvlab] timed out after {timeout} s; process group killed\n".encode())
            logf.close()
    return Completed(argv, proc.returncode, time.monotonic() - started, "\n".join(tail), log,
                     timed_out)


def _arm_timeout(proc: subprocess.Popen[bytes], deadline: float) -> None:
    import threading

    def watch() -> None:
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                proc._hvlab_timed_out = True  # type: ignore[attr-defined]
                _stop_group(proc)
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def capture(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin_data: bytes | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[bytes]:
    """A short command whose output we parse (git plumbing).  Never raises on exit code."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    args = [str(a) for a in argv]
    try:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            start_new_session=True, preexec_fn=procs.die_with_parent,
        )
    except FileNotFoundError:
        package = PACKAGES.get(Path(args[0]).name)
        hint = f" (Debian package: {package})" if package else ""
        raise InfraError(f"cannot run '{argv[0]}': not found{hint}") from None
    procs.track(proc.pid, args, f"'{Path(args[0]).name}'")
    try:
        out, err = proc.communicate(stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc, grace=1.0)
        raise InfraError(f"'{' '.join(args[:3])}' timed out after {timeout} s") from None
    except BaseException:  # interrupted: the child goes too
        _stop_group(proc, grace=1.0)
        raise
    finally:
        procs.untrack(proc.pid)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
