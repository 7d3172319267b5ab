"""Secrets stay secret: a password given through password_env and the
contents of a private key never reach the run folder or hvlab's output, on
success, on an authentication failure and with --debug tracebacks."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.conftest import Env
from tests.integration.test_boot import KERNELS
from tests.sshd import keygen, sshd

pytestmark = pytest.mark.integration


def everything_written(env: Env) -> str:
    out = []
    for path in env.reports.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def test_no_secret_reaches_a_report_a_log_or_the_output(env: Env, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    password = f"pw-{secrets.token_hex(12)}"
    wrong = keygen(tmp_path / "not-authorized")
    key_lines = [line for line in wrong.read_text().splitlines()
                 if line and not line.startswith("-----")]
    monkeypatch.setenv("HVLAB_TEST_SECRET", password)
    outputs = []
    with sshd(tmp_path / "sshd") as server:
        common = (f"kind: ssh\naddress: {server.address}\nport: {server.port}\nuser: root\n"
                  f"host_key: '{server.fingerprint}'\npassword_env: HVLAB_TEST_SECRET\n"
                  "connect_timeout: 5\n")
        env.write("hosts/good.yaml", common + f"key: {server.client_key}\n")
        env.write("hosts/refused.yaml", common + f"key: {wrong}\n")
        good = env.inv("hosts.check", "--host", "good", timeout=120)
        assert good.returncode == 0, good.stderr
        for args in (("hosts.check", "--host", "refused"),
                     ("--debug", "hosts.check", "--host", "refused"),
                     ("boot", "--prebuilt", KERNELS[-1], "--host", "refused")):
            done = env.inv(*args, timeout=120)
            assert done.returncode != 0
            outputs.append(done.stdout + done.stderr)
        assert all("authentication failed" in out for out in outputs), outputs
    written = everything_written(env) + "\n".join([good.stdout, good.stderr, *outputs])
    assert password not in written
    for line in key_lines:
        assert line not in written
