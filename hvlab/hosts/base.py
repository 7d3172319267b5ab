"""The one interface every host kind implements, and what it is handed.

A kind is a class registered in ``hvlab.hosts.registry`` under its ``kind:``.
It declares its own configuration keys (``read_config``), the stages a cell
on it has (``stages``), boots a build (``boot``, a context manager that
yields the booted guest and releases everything in ``finally``) and checks
that the host is usable (``check``).  Nothing outside ``hvlab/hosts/``
looks at a host's kind.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hvlab.config.shape import Field, Shape
from hvlab.model import HostSpec, SshEndpoint
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace

if TYPE_CHECKING:
    from hvlab.config.reader import MapReader
    from hvlab.config.tables import Config
    from hvlab.ssh import SshSession


def endpoint_fields(address_required: bool = True) -> dict[str, Field]:
    """The keys ``ConfigContext.endpoint`` reads: how hvlab reaches a machine by SSH."""
    return {
        "address": Field("string", "host name or IP address", required=address_required),
        "port": Field("integer", "SSH port (default 22)", minimum=1, maximum=65535),
        "user": Field("string", "login user (default root)"),
        "key": Field("string", "private key file (relative to this file)"),
        "password_env": Field("string", "environment variable holding the password"),
        "host_key": Field("string", "pinned host key fingerprint, SHA256:<43 base64 chars>"),
        "known_hosts": Field("string", "known_hosts file to check the host key against"),
        "host_key_policy": Field("enum", "strict (default) or accept-new",
                                 choices=("strict", "accept-new")),
        "connect_timeout": Field("integer", "seconds to wait for the connection (default 10)",
                                 minimum=1, maximum=600),
        "via": Field("string", "another host to reach this one through (jump host)"),
    }


class ConfigContext(Protocol):
    """What the config loader offers a kind reading its keys."""

    def endpoint(self, r: MapReader, path: Path, address_required: bool = True
                 ) -> SshEndpoint: ...

    def host_ref(self, r: MapReader, key: str, name: str) -> None:
        """``name`` (the value of ``key``) must be another host."""


class CellLog(Protocol):
    """Where a kind records the stages of the cell it boots (per cell, per host)."""

    @property
    def logs(self) -> Path: ...

    def stage(self, name: str, detail: str = "") -> AbstractContextManager[Path]:
        """Run stage ``name``: yields its log; an escaping error becomes its ERROR case."""

    def record(self, result: StageResult) -> StageResult: ...

    def info(self, message: str) -> None: ...


@dataclass(frozen=True)
class HostEnv:
    """What a host object may use: the workspace, the configuration (for the SSH
    hosts it is reached through) and a line of progress."""

    ws: Workspace
    config: Config
    info: Callable[[str], None]


@dataclass(frozen=True)
class BootedGuest:
    """The outcome of ``Host.boot``: the boot stage (already recorded), the
    guest's SSH session (open when the boot passed) and its kernel release."""

    stage: StageResult
    session: SshSession | None
    release: str  # what the guest runs ("" when it never answered)
    expected: str  # the build's release
    console: Callable[[], list[str]] = field(default=lambda: [], compare=False)  # its lines

    @property
    def ok(self) -> bool:
        return self.session is not None and self.stage.status is Status.PASS

    @property
    def facts(self) -> dict[str, str]:
        """The booted release (none when the guest never answered: the build's
        own release stays the cell's)."""
        return {"kernel_release": self.release} if self.release else {}


class Host(Protocol):
    spec: HostSpec

    def stages(self) -> tuple[str, ...]:
        """The stages a cell on this host records before its suites."""

    def boot(self, build: Path, cell: CellLog) -> AbstractContextManager[BootedGuest]:
        """Boot ``build`` (a build folder); the guest is released on exit."""

    def check(self) -> TestCase:
        """``inv hosts.check``: is the host usable?  One case."""

    def guest(self) -> AbstractContextManager[SshSession]:
        """A session to the guest that runs there now (``inv hosts.capture``): boots
        nothing; a UserError for a kind whose guests live for one run only."""

    def close(self) -> None:
        """The run is done with this host: stop what it keeps between cells (a
        local VM); idempotent."""


class HostKindClass(Protocol):
    """The class behind a ``kind:``."""

    SHAPE: Shape  # the keys read_config reads

    def __call__(self, spec: HostSpec, env: HostEnv) -> Host: ...

    @staticmethod
    def read_config(r: MapReader, path: Path, ctx: ConfigContext) -> object | None:
        """This kind's keys of a host file: its detail object (None when invalid)."""


def check_failed(name: str, message: str, duration: float = 0.0) -> TestCase:
    return TestCase(f"host: {name}", Status.ERROR, message, duration=duration)
