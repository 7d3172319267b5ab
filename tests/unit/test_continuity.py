"""After a test took the session down: the same boot goes on, a new boot id or a
restart on the console ends the guest's tests (no pass on another kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.errors import InfraError
from hvlab.ssh import RemoteResult
from hvlab.suites import continuity
from hvlab.suites.builtin import GuestContext

pytestmark = pytest.mark.unit


class Guest:
    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)  # a boot id, or None: unreachable

    def run(self, argv: list[str], timeout: float = 0) -> RemoteResult:
        answer = self.answers.pop(0)
        if answer is None:
            raise InfraError("host q (root@127.0.0.1:2222) unreachable: refused")
        return RemoteResult(tuple(argv), 0, 0.0, answer, "", stdout=answer + "\n")


def ctx(guest: Guest, console: list[str] | None = None) -> GuestContext:
    return GuestContext(guest, "q", "", Path("."),  # type: ignore[arg-type]
                        console=lambda: list(console or []))


def test_the_same_boot_goes_on() -> None:
    c = ctx(Guest("b1", "b1"))
    continuity.start(c)
    assert c.boot_id == "b1" and continuity.after_loss(c, 0) == ""


def test_a_new_boot_id_is_a_reboot() -> None:
    c = ctx(Guest("b1", "b2"))
    continuity.start(c)
    assert continuity.after_loss(c, 0) == ("guest rebooted (its boot id changed since the "
                                           "tests began): it may now run another kernel")


def test_no_answer_reads_the_console_since_the_test_began() -> None:
    console = ["Linux version 6.1.0", "hvlab-guest-ready", "going",
               "[    7.42] reboot: Restarting system"]
    c = ctx(Guest("b1", None), console)
    continuity.start(c)
    assert continuity.after_loss(c, 2).startswith("guest rebooted during the test (the "
                                                  "console shows the restart)")
    quiet = ctx(Guest("b1", None), console[:3])
    continuity.start(quiet)
    assert continuity.after_loss(quiet, 2) == (
        "the guest did not answer again after the connection dropped: host q "
        "(root@127.0.0.1:2222) unreachable: refused")


def test_a_guest_gone_before_its_tests_is_recorded() -> None:
    c = ctx(Guest(None))
    continuity.start(c)
    assert c.gone.startswith("the guest did not answer before its tests")
    assert continuity.restarted(["Linux version a", "x", "Linux version b"])
    assert not continuity.restarted(["Linux version a", "x"])
