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


class PowerCycled:
    """A machine that answers SSH again once its power_cycle command has run
    (the command leaves a file; the machine answers on ``release`` then)."""

    name = "m"

    def __init__(self, flag: Path, release: str | None) -> None:
        self.flag, self.release = flag, release
        self.connects = 0

    def close(self) -> None:
        pass

    def connect(self) -> None:
        from hvlab.errors import InfraError

        self.connects += 1
        if self.release is None or not self.flag.exists():
            raise InfraError("host m: connection refused")

    def check(self, argv: list[str], timeout: float = 0) -> str:
        return "boot-id\n" if "boot_id" in argv[-1] else f"{self.release}\n"


def _machine(tmp_path: Path, command: tuple[str, ...], session: PowerCycled,
             boot_timeout: int = 30) -> object:
    from hvlab.hosts.machine import _Machine
    from hvlab.hosts.oneshot import ConsoleCapture
    from hvlab.model import HostKind, HostSpec, SshEndpoint, SshHost

    detail = SshHost(SshEndpoint("192.0.2.7"), power_cycle=command)
    spec = HostSpec("m", tmp_path / "m.yaml", HostKind("ssh"), detail, boot_timeout=boot_timeout)
    return _Machine(spec, detail, ConsoleCapture((), tmp_path / "console.log"),
                    session, "6.1.0-hvlab")  # type: ignore[arg-type]


@pytest.mark.parametrize(("release", "said"), [
    ("6.1.0-13-amd64", "power-cycled; back on its default kernel 6.1.0-13-amd64 after"),
    ("6.1.0-hvlab", "it came back on the tested kernel 6.1.0-hvlab after "),
])
def test_power_cycle_is_a_recovery_only_when_ssh_answers_on_another_kernel(
        tmp_path: Path, release: str, said: str) -> None:
    flag = tmp_path / "reset"
    session = PowerCycled(flag, release)
    machine = _machine(tmp_path, ("sh", "-c", f"echo resetting; touch {flag}"), session)
    log = tmp_path / "boot.log"
    told = machine.recover(log)  # type: ignore[attr-defined]
    assert said in told
    assert ("the one-shot fallback did not hold" in told) == (release == "6.1.0-hvlab")
    assert flag.exists() and "resetting" in log.read_text()  # the command ran, into the log


def test_power_cycle_that_fails_or_never_brings_ssh_back_says_so(tmp_path: Path) -> None:
    flag = tmp_path / "reset"
    failing = _machine(tmp_path, ("sh", "-c", "exit 4"), PowerCycled(flag, "6.1.0-13-amd64"))
    assert failing.recover(tmp_path / "log") == "power_cycle failed (exit 4)"  # type: ignore[attr-defined]
    missing = _machine(tmp_path, (str(tmp_path / "no-such-pdu"),), PowerCycled(flag, "x"))
    assert "could not run" in missing.recover(tmp_path / "log")  # type: ignore[attr-defined]
    silent = PowerCycled(flag, None)
    never = _machine(tmp_path, ("touch", str(flag)), silent, boot_timeout=2)
    assert never.recover(tmp_path / "log") == (  # type: ignore[attr-defined]
        "power-cycled; no SSH within boot_timeout (2 s) after it")
    assert silent.connects >= 2  # it kept trying until boot_timeout
