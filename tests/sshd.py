"""Real OpenSSH sshd instances for tests: on loopback or inside a network
namespace the test creates, each with its own host key and authorized key."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvlab import procs

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


def fingerprint_of(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


@dataclass
class Sshd:
    address: str
    port: int
    host_key: Path  # private key; .pub beside it
    client_key: Path  # the private key authorized for root
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(Path(f"{self.host_key}.pub"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_listening(address: str, port: int, netns: str | None, proc: subprocess.Popen[bytes],
                    timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        probe = ["ip", "netns", "exec", netns] if netns else []
        check = subprocess.run([*probe, "ss", "-Htln", f"sport = :{port}"], capture_output=True,
                               text=True, check=False)
        if f":{port}" in check.stdout:
            return
        time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


@contextmanager
def sshd(workdir: Path, address: str = "127.0.0.1", port: int | None = None,
         netns: str | None = None, client_key: Path | None = None,
         extra: str = "") -> Iterator[Sshd]:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    host_key = keygen(workdir / "host_key")
    client = client_key or keygen(workdir / "client_key")
    auth = workdir / "authorized_keys"
    auth.write_text(Path(f"{client}.pub").read_text())
    auth.chmod(0o600)
    port = port or free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress {address}\nPort {port}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {auth}\nPidFile {workdir}/sshd.pid\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nLogLevel ERROR\nMaxStartups 50\n"
        f"Subsystem sftp /usr/lib/openssh/sftp-server\n{extra}")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)],
                            stderr=(workdir / "sshd.log").open("wb"),
                            preexec_fn=procs.die_with_parent)  # gone with pytest, even killed
    server = Sshd(address, port, host_key, client, workdir, proc)
    try:
        _wait_listening(address, port, netns, proc)
        yield server
    finally:
        server.stop()


def free_subnet() -> int:
    """A second octet N, picked at random, such that nothing on this machine
    (another test, another job sharing the network) already uses 10.N.0.0/16:
    a clash would route the test's connections into someone else's namespace."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                          check=False).stdout
    used += subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                           check=False).stdout
    taken = {int(m) for m in re.findall(r"\b10\.(\d+)\.", used)}
    free = [n for n in range(20, 250) if n not in taken]
    assert free, "no free 10.N.0.0/16 for a test network namespace"
    return random.choice(free)


@contextmanager
def netns(name: str, inside: str, outside: str) -> Iterator[str]:
    """A network namespace joined to the root namespace by a veth pair.

    ``inside``/``outside`` are addresses like 10.251.0.2/30 and 10.251.0.1/30."""
    veth = f"v{name[-10:]}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", f"{veth}a"], capture_output=True, check=False)
    cmds = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{veth}a", "type", "veth", "peer", "name", f"{veth}b"],
        ["ip", "link", "set", f"{veth}b", "netns", name],
        ["ip", "addr", "add", outside, "dev", f"{veth}a"],
        ["ip", "link", "set", f"{veth}a", "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", inside, "dev", f"{veth}b"],
        ["ip", "netns", "exec", name, "ip", "link", "set", f"{veth}b", "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", f"{veth}a"], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
