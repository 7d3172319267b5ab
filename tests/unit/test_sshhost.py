"""Checks the ssh host kind makes before touching a machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.errors import UserError
from hvlab.hosts import oneshot as sshhost

pytestmark = pytest.mark.unit


class Untouchable:
    """Stands where the machine's session goes: the check must come first."""

    name = "m"

    def __getattr__(self, attr: str) -> object:
        raise AssertionError(f"the machine was contacted ({attr}) before the check")


def test_kexec_of_a_non_relocatable_kernel_is_refused_before_copying(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(b"kernel")
    (tmp_path / "config").write_text("# CONFIG_RELOCATABLE is not set\nCONFIG_64BIT=y\n")
    with pytest.raises(UserError, match="needs a relocatable kernel: add CONFIG_RELOCATABLE=y"):
        sshhost.install(Untouchable(), "m", "kexec", 2, tmp_path, "6.1.0",  # type: ignore[arg-type]
                        lambda: tmp_path, tmp_path / "log")
