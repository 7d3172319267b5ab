"""What the boot stage needs from a guest it started (local or remote QEMU)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from hvlab.model import HostSpec
from hvlab.ssh import SshSession


class Guest(Protocol):
    host: HostSpec
    accel: str
    port: int
    started: float

    @property
    def console(self) -> Path: ...

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def exit_reason(self) -> str: ...

    def console_lines(self) -> list[str]: ...

    def ssh_ready(self) -> bool: ...

    def session(self, key: Path, fingerprint: str) -> SshSession: ...

    def stop(self) -> None: ...
