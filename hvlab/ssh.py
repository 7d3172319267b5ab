"""SSH sessions on paramiko: host keys verified, commands as argument lists.

* Host keys: a pinned ``host_key`` fingerprint, or a ``known_hosts`` file
  (default ``~/.ssh/known_hosts``).  Unknown keys are refused unless the
  host's config says ``host_key_policy: accept-new``; the key is then
  recorded.  A mismatch is always refused.
* Commands are argument lists joined with ``shlex.join`` (never a config
  value spliced into shell text); a timeout kills the remote process (it
  runs under ``timeout -k``) and closes the channel.
* stdout and stderr are read as they come (no deadlock on large output) and
  streamed to a log; only a bounded tail is kept in memory.
* Directories upload as a tar stream over the channel; files with cat.
* Jump hosts: a direct-tcpip channel of the jump session is the socket.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import logging
import os
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from hvlab import cancel
from hvlab.errors import InfraError, UserError
from hvlab.model import SshEndpoint

# Seconds a command's output may stay open after its exit status arrived (a
# background process holding stdout) before the output counts as ended.
EXIT_GRACE = 2.0
# paramiko logs a failed handshake (a guest still booting, a cut link) with its
# traceback; Python's last-resort handler would print that on every retry.
# hvlab reports connection failures itself, as one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form (as ``ssh-keygen -lf`` prints it)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyError(InfraError):
    pass


@dataclass(frozen=True)
class RemoteResult:
    argv: tuple[str, ...]
    exit_status: int  # -1 when the connection dropped or the command timed out
    duration: float
    output: str  # the tail of stdout+stderr, merged in arrival order
    stderr: str  # the tail of stderr alone
    timed_out: bool = False
    dropped: bool = False
    stdout: str = ""  # the tail of stdout alone

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out and not self.dropped


class _Policy(paramiko.MissingHostKeyPolicy):
    """Decides about keys that are not in the loaded known_hosts."""

    def __init__(self, name: str, endpoint: SshEndpoint, record: Path | None) -> None:
        self.name = name
        self.endpoint = endpoint
        self.record = record

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        got = fingerprint(key)
        pinned = self.endpoint.host_key
        if pinned:
            if got != pinned:
                raise HostKeyError(
                    f"host {self.name} ({hostname}): host key mismatch: expected {pinned}, "
                    f"got {got}; if the host was reinstalled, update host_key in its config")
            return
        if self.endpoint.host_key_policy == "accept-new" and self.record is not None:
            client.get_host_keys().add(hostname, key.get_name(), key)
            self.record.parent.mkdir(parents=True, exist_ok=True)
            with self.record.open("a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            return
        raise HostKeyError(
            f"host {self.name} ({hostname}): unknown host key {got}; pin it with "
            f"'host_key: {got}' in the host's config after checking it on the host "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), or set "
            "'host_key_policy: accept-new'")


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class SshSession:
    """One connection to one host, opened lazily, reused, closed explicitly."""

    def __init__(self, name: str, endpoint: SshEndpoint, jump: SshSession | None = None,
                 banner_timeout: float = 15, auth_timeout: float = 15) -> None:
        self.name = name
        self.endpoint = endpoint
        self.jump = jump
        self.banner_timeout = banner_timeout
        self.auth_timeout = auth_timeout
        self._client: paramiko.SSHClient | None = None
        self.connects = 0  # connections made: more than one means it reconnected

    # -- connection ------------------------------------------------------------
    @property
    def where(self) -> str:
        via = f" via {self.jump.name}" if self.jump else ""
        return f"{self.endpoint.user}@{self.endpoint.address}:{self.endpoint.port}{via}"

    def _known_hosts(self) -> Path:
        if self.endpoint.known_hosts:
            return self.endpoint.known_hosts
        return Path.home() / ".ssh" / "known_hosts"

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        ep = self.endpoint
        client = paramiko.SSHClient()
        known = self._known_hosts()
        if not ep.host_key and known.is_file():
            try:
                client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException) as exc:
                raise UserError(f"host {self.name}: cannot read known_hosts {known}: {exc}"
                                ) from None
        client.set_missing_host_key_policy(_Policy(self.name, ep, known))
        password = None
        if ep.password_env:
            password = os.environ.get(ep.password_env)
            if password is None:
                raise UserError(f"host {self.name}: environment variable {ep.password_env} "
                                "(password_env) is not set")
        sock = None
        if self.jump is not None:
            jt = self.jump.connect().get_transport()
            assert jt is not None
            try:
                sock = jt.open_channel("direct-tcpip", (ep.address, ep.port), ("127.0.0.1", 0),
                                       timeout=ep.connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise InfraError(f"host {self.name} ({self.where}) unreachable through "
                                 f"{self.jump.name}: {exc}") from None
        try:
            client.connect(
                ep.address, port=ep.port, username=ep.user,
                key_filename=str(ep.key) if ep.key else None, password=password,
                timeout=ep.connect_timeout, banner_timeout=self.banner_timeout,
                auth_timeout=self.auth_timeout, sock=sock,
                allow_agent=ep.key is None, look_for_keys=ep.key is None,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host {self.name} ({self.where}): host key mismatch: known_hosts {known} "
                f"expects {fingerprint(exc.expected_key)}, the host offers "
                f"{fingerprint(exc.key)}; if the host was reinstalled, remove its line with "
                f"ssh-keygen -R '{_known_hosts_name(ep.address, ep.port)}' -f {known}") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            key = f"key {ep.key}" if ep.key else "agent/default keys"
            raise InfraError(f"host {self.name} ({self.where}): authentication failed for "
                             f"user {ep.user} with {key}: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            reason = "connection timed out" if isinstance(exc, socket.timeout) else str(exc)
            raise InfraError(f"host {self.name} ({self.where}) unreachable: "
                             f"{reason or type(exc).__name__}") from None
        transport = client.get_transport()
        if transport is not None and isinstance(transport.sock, socket.socket):
            # paramiko leaves Nagle on: every small request then waits for the
            # peer's delayed ACK (~40 ms per round trip); OpenSSH turns it off too
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client
        self.connects += 1
        return client

    def connected(self) -> bool:
        """The connection is up (False once it dropped, until the next command
        reconnects)."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------
    def _channel(self) -> paramiko.Channel:
        client = self.connect()
        transport = client.get_transport()
        assert transport is not None
        try:
            return transport.open_session(timeout=self.endpoint.connect_timeout)
        except (paramiko.SSHException, OSError):
            # the connection dropped since last use: one reconnect
            self.close()
            transport = self.connect().get_transport()
            assert transport is not None
            return transport.open_session(timeout=self.endpoint.connect_timeout)

    def run(self, argv: Sequence[str], timeout: float | None = None, log: Path | None = None,
            on_line: Callable[[str], None] | None = None, stdin: bytes | None = None,
            tail_bytes: int = 64 * 1024) -> RemoteResult:
        """Run ``argv`` on the host; ``timeout`` kills it there (``timeout -k``)."""
        argv = tuple(str(a) for a in argv)
        # Under a shell that exits with the status, so that a program killed by
        # a signal is 128+N, not a channel without exit status (paramiko ignores
        # exit-signal); busybox timeout execs the program and kills it itself.
        if timeout is not None:
            remote = ["sh", "-c", 'timeout -k 5 "$@"; exit $?', "sh",
                      str(max(int(timeout), 1)), *argv]
        else:
            remote = ["sh", "-c", '"$@"; exit $?', "sh", *argv]
        return self.run_command(shlex.join(remote), argv, shlex.join(argv),
                                None if timeout is None else timeout + 10, log, on_line, stdin,
                                tail_bytes, remote_timeout=timeout)

    def run_command(self, command: str, argv: tuple[str, ...], shown: str,
                    timeout: float | None = None, log: Path | None = None,
                    on_line: Callable[[str], None] | None = None, stdin: bytes | None = None,
                    tail_bytes: int = 64 * 1024, remote_timeout: float | None = None,
                    undecodable: str = "backslashreplace") -> RemoteResult:
        """Run the command line ``command`` as it is (for hosts whose shell is not
        POSIX, e.g. Windows); ``shown`` is what the log says; ``timeout`` closes
        the channel here (the caller makes the remote side stop).  Output that is
        not UTF-8 keeps each invalid byte as a visible ``\\xff`` escape, or
        (``undecodable="replace"``) U+FFFD where the text is parsed as JSON.

        One function on purpose: a single read loop drains stdout and stderr as
        they come (reading one then the other deadlocks on large output) and
        owns the channel, the log and the tails until the command ends."""
        t0 = time.monotonic()
        out_tail: collections.deque[bytes] = collections.deque()
        err_tail: collections.deque[bytes] = collections.deque()
        std_tail: collections.deque[bytes] = collections.deque()
        sizes = [0, 0, 0]
        logf = log.open("ab") if log else None
        if logf:
            logf.write(f"$ {shown}  # on {self.name}\n".encode())
        pending = b""
        timed_out = dropped = False
        chan: paramiko.Channel | None = None
        try:
            chan = self._channel()
            chan.settimeout(self.stall)  # a send waits for window space this long
            chan.exec_command(command)
            if stdin is not None:
                dog = _Watchdog(chan, self.stall)
                try:
                    for at in range(0, len(stdin), 256 * 1024):
                        chan.sendall(stdin[at:at + 256 * 1024])
                        dog.tick()
                finally:
                    dog.stop()
            chan.shutdown_write()
            chan.settimeout(0.2)
            deadline = t0 + timeout if timeout is not None else None

            def keep(buf: collections.deque[bytes], idx: int, data: bytes) -> None:
                buf.append(data)
                sizes[idx] += len(data)
                while sizes[idx] > tail_bytes and len(buf) > 1:
                    sizes[idx] -= len(buf.popleft())

            def pump(ready: Callable[[], bool], recv: Callable[[int], bytes],
                     is_err: bool) -> bool:
                nonlocal pending
                got = False
                while ready():
                    data = recv(65536)
                    if not data:
                        break
                    got = True
                    keep(out_tail, 0, data)
                    if is_err:
                        keep(err_tail, 1, data)
                    else:
                        keep(std_tail, 2, data)
                    if logf:
                        logf.write(data)
                    if on_line and not is_err:
                        pending += data
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            on_line(line.decode("utf-8", "backslashreplace"))
                return got

            exited_at: float | None = None
            while True:
                got = pump(chan.recv_ready, chan.recv, False)
                got = pump(chan.recv_stderr_ready, chan.recv_stderr, True) or got
                # sshd may send the exit status before the last output: the end is EOF.
                # A background process can hold the output open past the exit; then
                # the output ends when nothing came for EXIT_GRACE seconds.
                if chan.exit_status_ready() and not chan.recv_ready() and \
                        not chan.recv_stderr_ready():
                    now = time.monotonic()
                    exited_at = exited_at if exited_at is not None else now
                    if chan.eof_received or (not got and now - exited_at > EXIT_GRACE):
                        break
                transport = chan.get_transport()
                if chan.closed or transport is None or not transport.is_active():
                    dropped = True
                    break
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    chan.close()
                    break
                if not got:
                    cancel.sleep(0.02)
            if on_line and pending:  # the last line had no newline
                on_line(pending.decode("utf-8", "backslashreplace"))
                pending = b""
            status = -1 if (timed_out or dropped) else chan.recv_exit_status()
            if status == -1 and not timed_out:  # closed without an exit status: the peer died
                dropped = True
            killed = status in (124, 137, 143) and remote_timeout is not None and (
                status == 124 or time.monotonic() - t0 >= remote_timeout)
            if killed:  # timeout(1) killed it (coreutils: 124; busybox: the signal)
                timed_out, status = True, -1
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if chan is not None and self.connected() and chan.exit_status_ready():
                # the command ended before it read all of its input (tar on a full
                # disk): its exit status and stderr say why, the connection is fine
                status = chan.recv_exit_status()
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    err_tail.append(data)
                    out_tail.append(data)
                    if logf:
                        logf.write(data)
                chan.close()
            else:
                dropped, status = True, -1
                if logf:
                    logf.write(f"[hvlab] connection to {self.name} dropped: {exc}\n".encode())
                self.close()
        finally:
            if logf:
                if timed_out:
                    logf.write(f"[hvlab] timed out after {time.monotonic() - t0:.0f} s: "
                               "killed\n".encode())
                logf.close()
        out, err, std = (b"".join(t).decode("utf-8", undecodable)
                         for t in (out_tail, err_tail, std_tail))
        return RemoteResult(argv, status, time.monotonic() - t0, out, err, timed_out, dropped,
                            std)

    def hold(self, argv: Sequence[str]) -> paramiko.Channel:
        """Start ``argv`` and return its channel, open: the command's stdin ends
        when the channel is closed or the connection is lost (hvlab killed)."""
        chan = self._channel()
        chan.exec_command(shlex.join(str(a) for a in argv))
        return chan

    def check(self, argv: Sequence[str], timeout: float | None = 300,
              log: Path | None = None) -> str:
        """Run; return stdout+stderr; an InfraError quoting the command when it fails."""
        result = self.run(argv, timeout=timeout, log=log)
        if not result.ok:
            what = ("timed out" if result.timed_out else "connection dropped" if result.dropped
                    else f"exit {result.exit_status}")
            text = result.stderr.strip() or result.output.strip()
            last = text.splitlines()[-1:]
            raise InfraError(f"host {self.name}: '{shlex.join(argv)}' failed ({what})"
                             + (f": {last[0]}" if last else ""))
        return result.output

    # -- files ---------------------------------------------------------------------
    def put_dir(self, local: Path, remote: str, timeout: float = 600) -> None:
        """Upload a directory as a tar stream (no temporary archive on either side)."""
        self.put_tree(remote, [(local, ".")])

    @property
    def stall(self) -> float:
        """Seconds a transfer may make no progress before the connection counts as
        lost (a cut link blocks a send until TCP gives up, many minutes later)."""
        return max(30.0, 3.0 * self.endpoint.connect_timeout)

    @contextmanager
    def _transfer(self, what: str) -> Iterator[tuple[paramiko.Channel, _Watchdog]]:
        """A channel for one file transfer, watched for stalls.  A lost connection
        (a stall, the transport gone) is an InfraError naming the host and the
        transfer, with the session closed; the remote command ending early (a
        full disk) is an InfraError with its exit status and stderr."""
        chan = self._channel()
        chan.settimeout(self.stall)
        dog = _Watchdog(chan, self.stall)
        try:
            yield chan, dog
        except (paramiko.SSHException, OSError, EOFError) as exc:
            dog.stop()
            stalled = dog.fired or isinstance(exc, TimeoutError)
            if not stalled and self.connected():
                if chan.exit_status_ready():
                    err = chan.recv_stderr(65536).decode("utf-8", "backslashreplace").strip() \
                        if chan.recv_stderr_ready() else ""
                    raise InfraError(f"host {self.name}: {what} failed (exit "
                                     f"{chan.recv_exit_status()}): {err}") from None
                raise InfraError(f"host {self.name}: {what} failed: {exc}") from None
            self.close()
            reason = f"no progress for {self.stall:.0f} s" if stalled \
                else str(exc) or type(exc).__name__
            raise InfraError(f"host {self.name} ({self.where}): connection lost during "
                             f"{what}: {reason}") from None
        finally:
            dog.stop()
            chan.close()

    def _exit_status(self, chan: paramiko.Channel, dog: _Watchdog) -> int:
        """The command's exit status, waited for ``stall`` seconds (the watchdog
        stops first: it must not close a connection whose transfer is done)."""
        dog.stop()
        if not chan.status_event.wait(self.stall):
            raise TimeoutError("no exit status")
        return chan.recv_exit_status()

    def put_tree(self, remote: str, items: Sequence[tuple[Path, str]]) -> None:
        """Files and directories into ``remote`` (created) as one tar stream over one
        channel: ``items`` are (local path, name under remote).  One command per
        upload matters: each exec costs a round trip or more on the wire."""
        script = 'mkdir -p "$1" && exec tar -x -f - -C "$1"'
        with self._transfer(f"the upload to {remote}") as (chan, dog):
            chan.exec_command(shlex.join(["sh", "-c", script, "sh", remote]))
            writer = _ChannelWriter(chan, dog)
            with tarfile.open(fileobj=writer, mode="w|", bufsize=256 * 1024) as tf:
                for local, name in items:
                    tf.add(str(local), arcname=name)
            chan.shutdown_write()
            status = self._exit_status(chan, dog)
            err = chan.recv_stderr(65536).decode("utf-8", "backslashreplace").strip() \
                if chan.recv_stderr_ready() else ""
        if status != 0:
            raise InfraError(f"host {self.name}: upload to {remote} failed "
                             f"(exit {status}): {err}")

    def put_file(self, local: Path, remote: str, mode: int = 0o644) -> None:
        script = 'cat > "$1" && chmod "$2" "$1"'
        with self._transfer(f"the upload of {remote}") as (chan, dog):
            chan.exec_command(shlex.join(["sh", "-c", script, "sh", remote, f"{mode:o}"]))
            with local.open("rb") as fh:
                for block in iter(lambda: fh.read(256 * 1024), b""):
                    chan.sendall(block)
                    dog.tick()
            chan.shutdown_write()
            status = self._exit_status(chan, dog)
            err = chan.recv_stderr(65536).decode("utf-8", "backslashreplace").strip() \
                if chan.recv_stderr_ready() else ""
        if status != 0:
            raise InfraError(f"host {self.name}: writing {remote} failed (exit {status}): {err}")

    def get_file(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._transfer(f"the download of {remote}") as (chan, dog):
            chan.exec_command(shlex.join(["cat", remote]))
            with local.open("wb") as fh:
                while True:
                    data = chan.recv(256 * 1024)
                    if not data:
                        break
                    dog.tick()
                    fh.write(data)
            status = self._exit_status(chan, dog)
        if status != 0:
            raise InfraError(f"host {self.name}: reading {remote} failed (exit {status})")


class _Watchdog:
    """Closes the connection under a transfer that made no progress for ``stall``
    seconds: a send on a cut link blocks inside paramiko's socket writes, where
    no channel timeout reaches, until TCP gives up many minutes later."""

    def __init__(self, chan: paramiko.Channel, stall: float) -> None:
        self.chan = chan
        self.stall = stall
        self.last = time.monotonic()
        self.fired = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="hvlab-ssh-watchdog", daemon=True).start()

    def tick(self) -> None:
        self.last = time.monotonic()

    def stop(self) -> None:
        with self._lock:  # after this, the watchdog never closes anything
            self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            with self._lock:
                if self._done.is_set() or time.monotonic() - self.last <= self.stall:
                    continue
                self.fired = True
            transport = self.chan.get_transport()
            if transport is not None:
                transport.close()  # the blocked write fails at once
            return


class _ChannelWriter(io.RawIOBase):
    """A file-like writer onto a channel's stdin (for tarfile's stream mode)."""

    def __init__(self, chan: paramiko.Channel, dog: _Watchdog) -> None:
        self.chan = chan
        self.dog = dog

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.chan.sendall(data)
        self.dog.tick()
        return len(data)
