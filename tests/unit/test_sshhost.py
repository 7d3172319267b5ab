"""Checks the ssh host kind makes before touching a machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.errors import UserError
from hvlab.hosts import sshhost
from hvlab.model import HostSpec, SshEndpoint, SshHost

pytestmark = pytest.mark.unit


class Untouchable:
    """Stands where the machine's session goes: the check must come first."""

    name = "m"

    def __getattr__(self, attr: str) -> object:
        raise AssertionError(f"the machine was contacted ({attr}) before the check")


def test_kexec_of_a_non_relocatable_kernel_is_refused_before_copying(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(b"kernel")
    (tmp_path / "config").write_text("# CONFIG_RELOCATABLE is not set\nCONFIG_64BIT=y\n")
    host = HostSpec("m", tmp_path / "m.yaml", "ssh",
                    SshHost(SshEndpoint("127.0.0.1"), boot_method="kexec"))
    with pytest.raises(UserError, match="needs a relocatable kernel: add CONFIG_RELOCATABLE=y"):
        sshhost.install(Untouchable(), host, tmp_path, "6.1.0", lambda: tmp_path,  # type: ignore[arg-type]
                        tmp_path / "log")
