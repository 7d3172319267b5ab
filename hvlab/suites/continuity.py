"""Whether the suites still run on the guest that was booted and verified.

A test can take the connection with it (sshd killed, the NIC reset) or the
whole guest (it reboots itself, panics).  After a test that left the session
down, or during which it reconnected (a retry, a reboot scheduled by an
earlier test), hvlab reconnects once and compares the kernel's boot id with the one
read when the suites started: the same boot goes on; a new one means the
guest rebooted (and may now run its default kernel, so no later test may
pass on it); no answer ends the guest's tests, with the console saying
whether it restarted.
"""

from __future__ import annotations

from collections.abc import Sequence

from hvlab.boot import console
from hvlab.errors import InfraError, Interrupted
from hvlab.suites.builtin import GuestContext

BOOT_ID = ["cat", "/proc/sys/kernel/random/boot_id"]
# what the kernel prints as it restarts or powers off (kernel/reboot.c)
RESTARTS = ("reboot: Restarting system", "reboot: machine restart", "reboot: Power down",
            "reboot: System halted")
REBOOTED = "guest rebooted"


def restarted(lines: Sequence[str], since: int = 0) -> bool:
    """The console shows a restart (or a second kernel banner) after line ``since``."""
    tail = lines[since:]
    return any(r in line for line in tail for r in RESTARTS) or \
        sum("Linux version " in line for line in tail) > (0 if since else 1)


CRASHES = ("panic", "oops", "bug", "kasan", "ubsan")


def crash_since(lines: Sequence[str], since: int = 0) -> console.Finding | None:
    """The kernel's crash report on the console after line ``since`` (a panic
    first: it is what ended the guest), if it printed one."""
    found = [f for f in console.scan(lines[since:]) if f.kind in CRASHES]
    return next((f for f in found if f.kind == "panic"), found[0] if found else None)


def start(ctx: GuestContext) -> None:
    """Record the guest's boot id before its first test (once per guest)."""
    if ctx.boot_id or not ctx.live:
        return
    try:
        r = ctx.guest.run(BOOT_ID, timeout=30)
    except Interrupted:
        raise
    except InfraError as exc:
        ctx.gone = f"the guest did not answer before its tests: {exc}"
        return
    ctx.boot_id = r.stdout.strip() if r.ok else ""


def after_loss(ctx: GuestContext, console_before: int) -> str:
    """The session dropped or reconnected during a test: "" when the same boot
    answers, else why the guest's remaining tests cannot run."""
    try:
        r = ctx.guest.run(BOOT_ID, timeout=30)
        answer = r.stdout.strip() if r.ok else ""
        failure = "" if r.ok else f"exit {r.exit_status}"
    except Interrupted:
        raise
    except InfraError as exc:
        answer, failure = "", str(exc)
    if answer and (not ctx.boot_id or answer == ctx.boot_id):
        return ""
    if answer:
        return (f"{REBOOTED} (its boot id changed since the tests began): it may now run "
                "another kernel")
    if restarted(ctx.console(), console_before):
        return (f"{REBOOTED} during the test (the console shows the restart) and did not "
                "answer again")
    return f"the guest did not answer again after the connection dropped: {failure}"
