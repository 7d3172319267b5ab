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


class Rebooted:
    """A guest that came back from its reboot with another DHCP address."""

    name = "g"

    def __init__(self) -> None:
        from hvlab.model import SshEndpoint

        self.endpoint = SshEndpoint("10.0.0.5")
        self.tried: list[str] = []

    def close(self) -> None:
        pass

    def connect(self) -> None:
        from hvlab.errors import InfraError

        self.tried.append(self.endpoint.address)
        if self.endpoint.address != "10.0.0.9":
            raise InfraError("host g: connection timed out")

    def check(self, argv: list[str], timeout: float = 0) -> str:
        return "new-boot-id\n"


def test_wait_back_asks_the_host_for_the_address_again_after_a_failed_connect() -> None:
    guest = Rebooted()
    waited = sshhost.wait_back(guest, "old-boot-id", 10, lambda: "10.0.0.9")  # type: ignore[arg-type]
    assert guest.tried == ["10.0.0.5", "10.0.0.9"] and waited < 10
    assert guest.endpoint.address == "10.0.0.9"


class NeverBack:
    """A machine whose new kernel never answers SSH."""

    name = "m"

    def close(self) -> None:
        pass

    def connect(self) -> None:
        from hvlab.errors import InfraError

        raise InfraError("host m: connection refused")


def test_wait_back_stops_at_a_panic_on_the_console_without_waiting_the_timeout() -> None:
    log = (Path(__file__).resolve().parents[1] / "data" / "console" /
           "debian-6.1-panic-no-init.log").read_text().splitlines()
    shown: list[str] = []

    def console_lines() -> list[str]:  # the console fills as the kernel boots
        shown.extend(log[len(shown):len(shown) + 200])
        return shown

    with pytest.raises(sshhost.BootStopped, match="the kernel panicked: Kernel panic"):
        sshhost.wait_back(NeverBack(), "old", 3600, None, console_lines)  # type: ignore[arg-type]
    assert len(shown) < len(log) + 200  # it stopped once the panic was there
