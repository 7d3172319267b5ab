"""The boot stage on a QEMU host: start, wait for SSH, verify, scan, stop.

A panic on the console fails the boot at once; a guest that never answers
fails after ``boot_timeout`` with the last 100 console lines; a fallback or
different kernel ("booted X, expected Y") is a failure, never a pass.  The
QEMU process is stopped in every case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvlab import cancel
from hvlab.boot import console, guest_image
from hvlab.errors import InfraError
from hvlab.hosts.base import Guest
from hvlab.hosts.qemu import QemuGuest
from hvlab.hosts.remote_qemu import RemoteQemuGuest
from hvlab.locks import FileLock
from hvlab.model import HostSpec
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace


@dataclass(frozen=True)
class BootTarget:
    """What to boot: a build's artifacts, or any kernel image + modules."""

    image: Path
    release: str
    modules: Path | None  # a modules cpio archive (gzip), or None
    label: str  # the build id or a description


def target_from_build(build_dir: Path) -> BootTarget:
    release = (build_dir / "kernelrelease").read_text().strip()
    tarball = build_dir / "modules.tar.gz"
    archive = build_dir / "modules.cpio.gz"
    if tarball.is_file() and not archive.is_file():
        guest_image.write_modules_archive(guest_image.modules_from_tarball(tarball), archive)
    image = next((build_dir / n for n in ("bzImage", "Image") if (build_dir / n).is_file()),
                 build_dir / "bzImage")
    return BootTarget(image, release, archive if archive.is_file() else None, build_dir.name)


def host_lease(ws: Workspace, host: str, notify: Callable[[str], None] | None = None,
               timeout: float | None = 3600) -> FileLock:
    """One run at a time per host; released when the owner exits (flock)."""
    return FileLock(ws.locks / f"host-{host}.lock", f"host '{host}'", timeout=timeout,
                    notify=notify)


@dataclass
class BootOutcome:
    stage: StageResult
    session: SshSession | None  # open to the booted guest when the boot passed
    guest: Guest


def boot_qemu(ws: Workspace, host: HostSpec, target: BootTarget, workdir: Path,
              info: Callable[[str], None], remote: SshSession | None = None) -> BootOutcome:
    """Boot ``target`` in a QEMU guest (here, or on ``remote`` for ``on: <host>``);
    the caller stops ``outcome.guest``.  If this raises (an interrupt, a lost
    connection), the guest has already been stopped: QEMU runs in its own
    session, so a signal to hvlab would not reach it."""
    t0 = time.monotonic()
    image = guest_image.build_image(ws)
    initrd = guest_image.combined_initrd(image, target.modules,
                                         workdir / f"initrd-{host.name}.cpio.gz")
    guest: Guest
    if remote is not None:
        guest = RemoteQemuGuest(host, workdir, target.image, initrd, "", remote)
    else:
        guest = QemuGuest(host, workdir, target.image, initrd, "")
    try:
        guest.start()
        return _watch_boot(host, target, workdir, info, image, guest, remote, t0)
    except BaseException:
        guest.stop()
        raise


def _watch_boot(host: HostSpec, target: BootTarget, workdir: Path,
                info: Callable[[str], None], image: guest_image.GuestImage, guest: Guest,
                remote: SshSession | None, t0: float) -> BootOutcome:
    where = f"on {remote.name}" if remote else "here"
    info(f"QEMU ({guest.accel}) started {where} for {host.name}, guest ssh port {guest.port}")
    cases: list[TestCase] = []
    session = None
    log = guest.console
    deadline = guest.started + host.boot_timeout
    panic: console.Finding | None = None
    while True:
        lines = guest.console_lines()
        panic = console.first_panic(lines)
        if panic is not None or not guest.alive():
            break
        if guest.ssh_ready():
            candidate = guest.session(image.client_key, image.host_key_fingerprint)
            try:
                candidate.connect()
                session = candidate
                break
            except InfraError:
                candidate.close()
        if time.monotonic() > deadline:
            break
        cancel.sleep(0.25)
    waited = time.monotonic() - guest.started
    lines = guest.console_lines()
    if session is None:
        if panic is not None:
            msg = f"kernel panic during boot after {waited:.0f} s: {panic.message}"
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL, msg,
                                  output=panic.excerpt + "\n\n--- console tail ---\n"
                                  + console.tail(lines), duration=waited, log_path=log))
        elif not guest.alive():
            reason = guest.exit_reason()
            msg = "QEMU exited during boot" + (f": {reason}" if reason else "")
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL, msg,
                                  output=console.tail(lines), duration=waited, log_path=log))
        else:
            msg = (f"no SSH within boot_timeout ({host.boot_timeout} s); "
                   "QEMU stopped; last 100 console lines attached")
            cases.append(TestCase(f"boot: {host.name}", Status.FAIL, msg,
                                  output=console.tail(lines), duration=waited, log_path=log))
        cases += _finding_cases(console.scan(lines), "console", log, skip_panic=panic)
        return BootOutcome(StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                                  properties=_props(guest, target)),
                           None, guest)
    cases.append(TestCase(f"boot: {host.name}", Status.PASS,
                          output=f"SSH answered {waited:.1f} s after QEMU started "
                                 f"({guest.accel})", duration=waited, log_path=log))
    booted, verified = verify_booted(session, host.name, target.release,
                                     guest.console_lines(), log,
                                     workdir / f"dmesg-{host.name}.log")
    cases += verified
    return BootOutcome(StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                              properties=_props(guest, target, booted)),
                       session, guest)


def verify_booted(session: SshSession, host: str, release: str, console_lines: list[str],
                  console_log: Path, dmesg_log: Path) -> tuple[str, list[TestCase]]:
    """The checks every host kind makes once SSH answers: the release, console
    and dmesg reports (a report seen in both counted once), a second banner.
    Returns (booted release, cases)."""
    cases: list[TestCase] = []
    result = session.run(["uname", "-r"], timeout=30)
    booted = result.output.strip()
    if not result.ok:
        cases.append(TestCase("kernel release", Status.ERROR,
                              f"uname -r failed on {host}: {booted}"))
    elif booted != release:
        cases.append(TestCase("kernel release", Status.FAIL,
                              f"booted {booted}, expected {release}"))
    else:
        cases.append(TestCase("kernel release", Status.PASS, output=booted))
    dmesg = session.run(["dmesg"], timeout=60, log=dmesg_log)
    if not dmesg.ok:
        why = ("connection dropped" if dmesg.dropped else "timed out" if dmesg.timed_out
               else f"exit {dmesg.exit_status}")
        cases.append(TestCase("dmesg", Status.ERROR, f"collecting dmesg failed: {why}",
                              output=dmesg.output, log_path=dmesg_log))
    findings = console.scan(console_lines)
    seen = {(f.kind, f.message) for f in findings}
    dmesg_findings = [f for f in console.scan(dmesg.output.splitlines())
                      if (f.kind, f.message) not in seen]
    cases += _finding_cases(findings, "console", console_log)
    cases += _finding_cases(dmesg_findings, "dmesg", dmesg_log)
    banners = console.banners(console_lines)
    if len(banners) > 1:
        cases.append(TestCase("single boot", Status.FAIL,
                              f"the machine booted {len(banners)} times: {', '.join(banners)}"))
    return booted, cases


def _finding_cases(findings: list[console.Finding], where: str, log: Path,
                   skip_panic: console.Finding | None = None) -> list[TestCase]:
    return [TestCase(f"{where}: {f.title()}", Status.FAIL,
                     f"{f.kind} in the {where} log at line {f.line}: {f.message}",
                     output=f.excerpt, log_path=log)
            for f in findings if f != skip_panic]


def _props(guest: Guest, target: BootTarget, booted: str = "") -> dict[str, str]:
    return {"host_kind": "qemu", "accel": guest.accel, "expected_release": target.release,
            "kernel_release": booted, "boot_target": target.label}
