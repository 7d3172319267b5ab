"""SSH sessions for configured hosts, following ``via`` jump hosts."""

from __future__ import annotations

from hvlab.config.tables import Config
from hvlab.errors import UserError
from hvlab.model import HostSpec, HypervHost, SshEndpoint, SshHost
from hvlab.ssh import SshSession


def endpoint_of(host: HostSpec) -> SshEndpoint:
    if isinstance(host.detail, SshHost):
        return host.detail.endpoint
    if isinstance(host.detail, HypervHost):  # the Windows host that runs the VM
        return host.detail.hyperv_host
    raise UserError(f"host '{host.name}' (kind {host.kind}) is not reachable over SSH itself")


def open_session(config: Config, name: str, _chain: tuple[str, ...] = ()) -> SshSession:
    """A (lazy) session to host ``name``, through its ``via`` chain."""
    if name in _chain:
        raise UserError(f"host '{name}': 'via' loops through {' -> '.join((*_chain, name))}")
    host = config.host(name)
    ep = endpoint_of(host)
    jump = open_session(config, ep.via, (*_chain, name)) if ep.via else None
    return SshSession(name, ep, jump=jump)


def close_chain(session: SshSession) -> None:
    node: SshSession | None = session
    while node is not None:
        node.close()
        node = node.jump


def has_tool(session: SshSession, tool: str) -> bool:
    """``tool`` is on the machine's PATH (the name passed as an argument, not spliced)."""
    return session.run(["sh", "-c", 'command -v "$1"', "sh", tool], timeout=30).ok
