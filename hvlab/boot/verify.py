"""Boot verification every host kind shares once SSH answers: the release it
runs, kernel reports on the console and in dmesg (ktest.pl's patterns), a
second boot banner; plus what to boot (``BootTarget``) and the host lease.
A fallback or different kernel ("booted X, expected Y") is a failure, never
a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvlab.boot import console, guest_image
from hvlab.locks import FileLock
from hvlab.results import Status, TestCase
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
    cases += finding_cases(findings, "console", console_log)
    cases += finding_cases(dmesg_findings, "dmesg", dmesg_log)
    banners = console.banners(console_lines)
    if len(banners) > 1:
        cases.append(TestCase("single boot", Status.FAIL,
                              f"the machine booted {len(banners)} times: {', '.join(banners)}"))
    return booted, cases


def finding_cases(findings: list[console.Finding], where: str, log: Path,
                   skip_panic: console.Finding | None = None) -> list[TestCase]:
    return [TestCase(f"{where}: {f.title()}", Status.FAIL,
                     f"{f.kind} in the {where} log at line {f.line}: {f.message}",
                     output=f.excerpt, log_path=log)
            for f in findings if f != skip_panic]
