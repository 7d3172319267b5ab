"""The SSH layer against real OpenSSH sshd servers on loopback and in a netns."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlab.errors import InfraError
from hvlab.model import SshEndpoint
from hvlab.ssh import HostKeyError, SshSession
from tests.sshd import Sshd, fingerprint_of, free_port, keygen, netns, sshd

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Sshd]:
    with sshd(tmp_path / "sshd") as s:
        yield s


def endpoint(s: Sshd, **kw: object) -> SshEndpoint:
    args: dict[str, object] = {"address": s.address, "port": s.port, "user": "root",
                               "key": s.client_key, "host_key": s.fingerprint,
                               "connect_timeout": 5}
    args.update(kw)
    return SshEndpoint(**args)  # type: ignore[arg-type]


def test_run_argument_list_is_quoted(server: Sshd) -> None:
    with SshSession("t", endpoint(server)) as ssh:
        r = ssh.run(["printf", "%s|", "a b", "it's", "$HOME", "; rm -rf /tmp/x"])
        assert r.ok and r.output == "a b|it's|$HOME|; rm -rf /tmp/x|"
        bad = ssh.run(["sh", "-c", "echo oops >&2; exit 7"])
        assert bad.exit_status == 7 and bad.stderr == "oops\n"


def test_invalid_bytes_from_the_guest_stay_visible_as_escapes(server: Sshd,
                                                              tmp_path: Path) -> None:
    """A guest's invalid UTF-8 is read as \\xff, not U+FFFD: the reports show
    the byte that was there (and readers do not guess another encoding)."""
    from hvlab import proc

    script = r"printf 'out \377 end\n'; printf 'err \376\n' >&2"
    with SshSession("t", endpoint(server)) as ssh:
        r = ssh.run(["sh", "-c", script], log=tmp_path / "guest.log")
    assert r.stdout == "out \\xff end\n" and r.stderr == "err \\xfe\n"
    assert "\ufffd" not in r.output
    assert (tmp_path / "guest.log").read_bytes().count(b"\xff") == 1  # the log keeps the byte
    local = proc.run(["sh", "-c", script])
    assert "out \\xff end" in local.output and "err \\xfe" in local.output


def test_large_interleaved_output_does_not_deadlock(server: Sshd, tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    script = ("i=0; while [ $i -lt 200 ]; do head -c 51200 /dev/zero | tr '\\0' o; "
              "head -c 51200 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done; echo END")
    with SshSession("t", endpoint(server)) as ssh:
        r = ssh.run(["sh", "-c", script], timeout=120, log=log, tail_bytes=4096)
    assert r.ok, r
    assert log.stat().st_size > 20_000_000  # everything reached the log
    # stdout and stderr are separate pipes that sshd reads at its own pace, so
    # only completeness can be asserted, not where END lands among the e's
    assert b"END\n" in log.read_bytes()
    assert len(r.output) < 200_000  # only a tail in memory


def test_timeout_kills_the_remote_process(server: Sshd) -> None:
    marker = f"sleep 60.{time.monotonic_ns() % 10**9}"  # a unique command line
    with SshSession("t", endpoint(server)) as ssh:
        t0 = time.monotonic()
        r = ssh.run(marker.split(), timeout=1)
        assert r.timed_out and not r.ok
        assert time.monotonic() - t0 < 20
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    assert left.stdout == ""


def test_unknown_host_key_refused_then_accept_new_records_it(server: Sshd,
                                                            tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    strict = endpoint(server, host_key=None, known_hosts=known)
    with pytest.raises(HostKeyError, match=re.escape(f"unknown host key {server.fingerprint}")):
        SshSession("t", strict).connect()
    accept = endpoint(server, host_key=None, known_hosts=known, host_key_policy="accept-new")
    with SshSession("t", accept) as ssh:
        assert ssh.run(["true"]).ok
    assert f"[127.0.0.1]:{server.port}" in known.read_text()
    with SshSession("t", strict) as ssh:  # now known: strict accepts it
        assert ssh.run(["true"]).ok


def test_host_key_mismatch_refused_with_how_to_fix(server: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other")
    pub = Path(f"{other}.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    ep = endpoint(server, host_key=None, known_hosts=known, host_key_policy="accept-new")
    with pytest.raises(HostKeyError, match="host key mismatch.*ssh-keygen -R"):
        SshSession("t", ep).connect()

    pinned = endpoint(server, host_key=fingerprint_of(Path(f"{other}.pub")))
    with pytest.raises(HostKeyError, match="host key mismatch: expected"):
        SshSession("t", pinned).connect()


def test_wrong_client_key_is_an_auth_error(server: Sshd, tmp_path: Path) -> None:
    wrong = keygen(tmp_path / "wrong")
    with pytest.raises(InfraError, match="authentication failed for user root"):
        SshSession("t", endpoint(server, key=wrong)).connect()


def test_unreachable_host_fails_within_the_connect_timeout() -> None:

    ep = SshEndpoint("127.0.0.1", free_port(), host_key="SHA256:" + "A" * 43,
                     connect_timeout=3)
    t0 = time.monotonic()
    with pytest.raises(InfraError, match="unreachable"):
        SshSession("gone", ep).connect()
    assert time.monotonic() - t0 < 10


def test_connection_dropped_mid_command_is_reported(server: Sshd) -> None:
    with SshSession("t", endpoint(server)) as ssh:
        assert ssh.run(["true"]).ok

        def drop() -> None:
            time.sleep(1)
            subprocess.run(["pkill", "-KILL", "-P", str(server.proc.pid)], check=False)

        threading.Thread(target=drop).start()
        r = ssh.run(["sleep", "30"], timeout=60)
        assert r.dropped and not r.ok
        assert ssh.run(["echo", "again"]).output == "again\n"  # reconnected


def test_upload_dir_as_tar_stream_and_files(server: Sshd, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4000)
    dest = tmp_path / "dest"
    with SshSession("t", endpoint(server)) as ssh:
        ssh.put_dir(src, str(dest))
        ssh.put_file(src / "a.txt", str(tmp_path / "copy.txt"), mode=0o600)
        ssh.get_file(str(dest / "sub" / "b.bin"), tmp_path / "back.bin")
    assert (dest / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "back.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert (tmp_path / "copy.txt").stat().st_mode & 0o777 == 0o600


def test_jump_host_into_a_network_namespace(server: Sshd, tmp_path: Path) -> None:
    with netns("hvlabtestjump", "10.251.7.2/30", "10.251.7.1/30"), \
            sshd(tmp_path / "inner", address="10.251.7.2", port=22,
                 netns="hvlabtestjump") as inner:
        jump = SshSession("jump", endpoint(server))
        target = SshSession("inner", endpoint(inner), jump=jump)
        try:
            r = target.run(["ip", "-o", "-4", "addr", "show"])
            assert r.ok and "10.251.7.2" in r.output
            assert target.where.endswith("via jump")
        finally:
            target.close()
            jump.close()
