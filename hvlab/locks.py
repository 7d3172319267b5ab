"""Advisory file locks that expire with their owner (flock is released on exit).

The lock file holds who owns it, so a waiting run can say who it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hvlab.errors import InfraError

# `inv run --no-wait`: locks that are held fail at once instead of waiting
WAIT_BY_DEFAULT = True


class FileLock:
    def __init__(
        self,
        path: Path,
        what: str,
        timeout: float | None = None,
        wait: bool | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.what = what
        self.timeout = timeout
        self.wait = WAIT_BY_DEFAULT if wait is None else wait
        self.notify = notify or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._fd: int | None = None

    def owner(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another hvlab process"
        return f"pid {info.get('pid')} on {info.get('host')} ({info.get('cmd', '?')})"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise InfraError(f"{self.what} is locked by {self.owner()}") from None
                if self.timeout is not None and time.monotonic() - started > self.timeout:
                    os.close(fd)
                    raise InfraError(f"timed out after {self.timeout:.0f} s waiting for "
                                     f"{self.what}, locked by {self.owner()}") from None
                if not told:
                    self.notify(f"waiting for {self.what}: locked by {self.owner()}")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "cmd": " ".join(sys.argv[:6]), "since": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
