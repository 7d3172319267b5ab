"""An existing Linux machine reached over SSH: install a build, boot it once.

Install: image, System.map and config into /boot, the modules tarball
streamed into /, depmod, and an initramfs from the machine's own
update-initramfs or dracut (or, on an hvlab guest, hvlab's image with the
build's modules).  Boot once: ``kexec`` when configured or present, else a
one-shot ``grub-reboot`` entry, so that a hard reset returns to the default
kernel.  Success is a new ``boot_id`` answering SSH with the expected release.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hvlab import cancel, procs
from hvlab.boot import console
from hvlab.boot.verify import verify_booted
from hvlab.build import kconfig
from hvlab.errors import InfraError, UserError
from hvlab.hosts import loaders
from hvlab.hosts.base import BootedGuest, CellLog
from hvlab.hosts.bootloader import OneShot
from hvlab.hosts.sessions import has_tool
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession

MARKER = "/boot/.hvlab-kernels"  # releases hvlab installed, oldest first


@dataclass(frozen=True)
class Installed:
    release: str
    initrd: str | None
    method: str  # kexec | grub (the machine's boot loader, grub or not)
    oneshot: OneShot | None = None  # the boot loader's plan, for method grub


def install(session: SshSession, name: str, boot_method: str, keep_kernels: int,
            build_dir: Path, release: str, hvlab_initrd: Callable[[], Path],
            log: Path) -> Installed:
    """Copy a build onto the machine ``name``; returns what the boot step needs."""
    image = next(p for p in (build_dir / "bzImage", build_dir / "Image") if p.is_file())
    method = boot_method
    if method == "auto":
        method = "kexec" if has_tool(session, "kexec") else "grub"
    if method == "kexec" and image.name == "bzImage":
        config = kconfig.parse_dotconfig((build_dir / "config").read_text())
        if config.get("RELOCATABLE") != "y":
            # kexec-tools loads such a bzImage without complaint and it dies silently
            raise UserError(f"host {name}: booting by kexec needs a relocatable kernel: "
                            "add CONFIG_RELOCATABLE=y to a fragment, or use boot_method: grub")
    listed = _installed(session)
    if release not in listed and session.run(["test", "-e", f"/boot/vmlinuz-{release}"],
                                             timeout=30).ok:
        raise UserError(f"host {name}: /boot/vmlinuz-{release} is there and hvlab did not "
                        "install it (a distro kernel?): refusing to overwrite it; give the "
                        "build another release (CONFIG_LOCALVERSION) or boot it elsewhere")
    # Best effort: an initramfs root has no mount entry and df cannot size it;
    # a real ENOSPC during the upload is still reported below.
    df = session.run(["df", "-Pk", "/boot"], timeout=30, log=log)
    free = df.output.strip().splitlines()[-1].split() if df.ok and df.output.strip() else []
    needed = (image.stat().st_size + (build_dir / "modules.tar.gz").stat().st_size) // 1024 \
        if (build_dir / "modules.tar.gz").is_file() else image.stat().st_size // 1024
    if len(free) >= 4 and free[3].isdigit() and int(free[3]) < needed:
        raise InfraError(f"host {name}: disk full: /boot has {free[3]} KiB free, "
                         f"the build needs {needed} KiB")
    _upload(session, name, image, build_dir, release, log)
    initrd: str | None = None
    if has_tool(session, "update-initramfs"):
        session.check(["update-initramfs", "-c", "-k", release], timeout=900, log=log)
        initrd = f"/boot/initrd.img-{release}"
    elif has_tool(session, "dracut"):
        initrd = f"/boot/initramfs-{release}.img"
        session.check(["dracut", "-f", initrd, release], timeout=900, log=log)
    elif session.run(["test", "-e", "/etc/hvlab-guest"], timeout=30).ok:
        initrd = f"/boot/initrd.img-{release}"
        session.put_file(hvlab_initrd(), initrd)
    ours = _record_and_prune(session, release, keep_kernels, log)
    plan = loaders.prepare(session, name, release, initrd, ours, log) \
        if method == "grub" else None
    return Installed(release, initrd, method, plan)


UPLOAD_ATTEMPTS = 3
RETRY_PAUSE = 5.0


def _upload(session: SshSession, name: str, image: Path, build_dir: Path, release: str,
            log: Path) -> None:
    """The kernel files and the modules onto the machine.  A connection lost on
    the way (a link that flaps) is retried, a bounded number of times; the
    copy is idempotent."""
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            session.put_tree("/boot", [(image, f"vmlinuz-{release}"),
                                       (build_dir / "System.map", f"System.map-{release}"),
                                       (build_dir / "config", f"config-{release}")])
            modules = build_dir / "modules.tar.gz"
            if modules.is_file():
                _stream_modules(session, modules, log)
                session.check(["depmod", "-a", release], timeout=300, log=log)
            return
        except InfraError as exc:
            if "No space left" in str(exc) or "No space left" in _tail(log):
                raise InfraError(f"host {name}: disk full during install: {exc}") from None
            if session.connected():
                raise  # the machine answered: not the link
            if attempt == UPLOAD_ATTEMPTS:
                raise InfraError(f"host {name}: the connection was lost during install "
                                 f"{attempt} times; last: {exc}") from None
            with log.open("a") as fh:
                fh.write(f"[hvlab] install attempt {attempt} lost the connection ({exc}); "
                         f"again in {RETRY_PAUSE * attempt:.0f} s\n")
            cancel.sleep(RETRY_PAUSE * attempt)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="backslashreplace")[-2000:]
    except OSError:
        return ""


def _stream_modules(session: SshSession, tarball: Path, log: Path) -> None:
    """The modules tarball, streamed into tar on the machine (no temporary copy)."""
    data = tarball.read_bytes()
    # GNU tar replaces a symlink to a directory with a directory when the archive
    # has an entry for it: on merged-/usr (/lib -> usr/lib) that breaks the
    # machine.  hvlab's archives have no such entries; older ones might.
    gnu = "GNU tar" in session.run(["tar", "--version"], timeout=30).output
    keep = ["--keep-directory-symlink"] if gnu else []
    result = session.run(["tar", "-xz", *keep, "-f", "-", "-C", "/"], timeout=600, log=log,
                         stdin=data)
    if not result.ok:
        raise InfraError(f"host {session.name}: installing modules failed: "
                         f"{result.stderr.strip()[-300:]}")


def _installed(session: SshSession) -> list[str]:
    """The releases hvlab installed on this machine (its marker file), oldest first."""
    if not session.run(["test", "-f", MARKER], timeout=30).ok:
        return []
    return session.run(["cat", MARKER], timeout=30).output.split()


def _record_and_prune(session: SshSession, release: str, keep: int, log: Path) -> set[str]:
    """Remember what hvlab installed; remove the oldest beyond ``keep``.  Only
    releases hvlab installed itself are ever removed, never the running one.
    Returns the releases hvlab installed that remain."""
    running = session.run(["uname", "-r"], timeout=30).output.strip()
    releases = [r for r in _installed(session) if r != release] + [release]
    while len(releases) > keep:
        old = releases.pop(0)
        if old == running:
            releases.insert(0, old)
            break
        session.run(["rm", "-rf", f"/boot/vmlinuz-{old}", f"/boot/System.map-{old}",
                     f"/boot/config-{old}", f"/boot/initrd.img-{old}",
                     f"/boot/initramfs-{old}.img", f"/lib/modules/{old}"], timeout=120, log=log)
    session.run(["tee", MARKER], timeout=30, log=log,
                stdin="".join(f"{r}\n" for r in releases).encode())
    return set(releases)


def boot_id(session: SshSession) -> str:
    return session.check(["cat", "/proc/sys/kernel/random/boot_id"], timeout=30).strip()


def reboot_once(session: SshSession, installed: Installed, log: Path) -> None:
    """Start the one-shot boot; the connection drops while it happens."""
    r = installed.release
    if installed.method == "kexec":
        load = ["kexec", "-l", f"/boot/vmlinuz-{r}", "--reuse-cmdline"]
        if installed.initrd:
            load.append(f"--initrd={installed.initrd}")
        loaded = session.run(load, timeout=120, log=log)
        if not loaded.ok:
            text = loaded.output
            why = next((line.strip() for line in text.splitlines() if "failed" in line),
                       text.strip().splitlines()[-1] if text.strip() else "no output")
            hint = ("; the running kernel is locked down (Secure Boot?) and refuses an unsigned "
                    "kernel: turn Secure Boot off (secure_boot: off for hyperv hosts) or use "
                    "boot_method: grub with a signed kernel"
                    if "Operation not permitted" in text else "")
            raise InfraError(f"host {session.name}: loading the kernel with kexec failed: "
                             f"{why}{hint}")
        jump = ["kexec", "-e"]
    else:
        assert installed.oneshot is not None
        session.check(list(installed.oneshot.arm), timeout=60, log=log)
        jump = ["reboot"]
    # Run it as the command itself: the connection drops when the machine goes.
    # (A backgrounded "sleep; kexec -e" did not survive the end of the session.)
    result = session.run(jump, timeout=20, log=log)
    if not result.dropped and not result.timed_out and result.exit_status != 0:
        raise InfraError(f"host {session.name}: '{' '.join(jump)}' failed "
                         f"(exit {result.exit_status}): {result.output.strip()[-300:]}")
    session.close()


class BootStopped(Exception):
    """The console says the boot is over (a panic, no root device)."""

    def __init__(self, stop: console.BootStop) -> None:
        super().__init__(stop.cause())
        self.stop = stop


def wait_back(session: SshSession, old_boot_id: str, timeout: float,
              address: Callable[[], str | None] | None = None,
              console_lines: Callable[[], list[str]] | None = None) -> float:
    """Wait until SSH answers with a new boot_id; returns the seconds waited.
    ``address`` (a Hyper-V VM's, from Get-VMNetworkAdapter) is asked again when a
    connection fails: DHCP may give the rebooted guest another one.  When the
    new kernel's ``console_lines`` show a panic or a missing root device, waiting
    stops there (BootStopped)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if console_lines is not None:
            stop = console.boot_stopped(console_lines())
            if stop is not None:
                raise BootStopped(stop)
        try:
            session.close()
            session.connect()
            if boot_id(session) != old_boot_id:
                return time.monotonic() - t0
        except InfraError:
            now = address() if address is not None else None
            if now and now != session.endpoint.address:
                session.close()
                session.endpoint = dataclasses.replace(session.endpoint, address=now)
        cancel.sleep(1)
    raise TimeoutError


class ConsoleCapture:
    """The host's ``console`` command (run locally, as ktest does), into a log."""

    def __init__(self, command: tuple[str, ...], log: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = log
        if command:
            self.proc = subprocess.Popen(list(command), stdout=log.open("ab"),  # noqa: S603
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=procs.die_with_parent)
            procs.track(self.proc.pid, command, "console command")

    def lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="backslashreplace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            procs.untrack(self.proc.pid)


class Machine(Protocol):
    """What differs between kinds that install a build and boot it once (an SSH
    machine, a Hyper-V VM): its console, how it is brought back after a hang,
    checks only it can make, and facts for the stage properties."""

    @property
    def name(self) -> str: ...

    @property
    def boot_timeout(self) -> int: ...

    @property
    def console_log(self) -> Path: ...

    @property
    def properties(self) -> dict[str, str]:
        """Facts of the machine, as properties of the install and boot stages."""

    def console_lines(self) -> list[str]: ...

    def recover(self, log: Path) -> str:
        """The new kernel never answered: bring the machine back on its default
        kernel (hard reset, power cycle); says what happened."""

    def after_boot(self, session: SshSession) -> list[TestCase]:
        """Checks the host side makes once the new kernel answered."""

    def address(self) -> str | None:
        """The guest's address as the host sees it now (None: it does not change)."""


def install_and_boot(session: SshSession, machine: Machine, cell: CellLog, build_dir: Path,
                     boot_method: str, keep_kernels: int, hvlab_initrd: Callable[[], Path],
                     notes: Sequence[str] = ()) -> BootedGuest:
    """The sequence the ssh and hyperv kinds share: the install stage (build into
    /boot and /lib/modules, the machine's initramfs, a one-shot entry), then the
    boot stage (reboot once, wait for a new boot_id, verify).  Both are recorded
    in ``cell``; the returned guest's session is open when the boot passed."""
    release = (build_dir / "kernelrelease").read_text().strip()
    where = f"{release} on {machine.name}"
    with cell.stage("install", where) as log:
        t0 = time.monotonic()
        old = boot_id(session)
        default_release = session.check(["uname", "-r"], timeout=30).strip()
        installed = install(session, machine.name, boot_method, keep_kernels, build_dir,
                            release, hvlab_initrd, log)
        text = [*notes, f"{machine.name} running {default_release}",
                f"{release} installed; one-shot boot by {installed.method}"
                + (f"; initrd {installed.initrd}" if installed.initrd else "")]
        if installed.oneshot is not None:
            plan = installed.oneshot
            text.append(f"{plan.loader} entry {plan.entry}; fallback {plan.fallback}"
                        + (f" (kept the default with {' '.join(plan.pin)})" if plan.pin else ""))
        cell.record(StageResult.from_cases("install", [TestCase(
            f"install: {machine.name}", Status.PASS, output="\n".join(text) + "\n",
            duration=time.monotonic() - t0, log_path=log)], time.monotonic() - t0, log,
            properties={**machine.properties, "expected_release": release}))
    with cell.stage("boot", where) as log:
        t0 = time.monotonic()
        before = len(machine.console_lines())  # the new kernel's console starts here
        reboot_once(session, installed, log)
        try:
            waited = wait_back(session, old, machine.boot_timeout, machine.address,
                               lambda: machine.console_lines()[before:])
        except (TimeoutError, BootStopped) as exc:
            session.close()
            lines = machine.console_lines()[before:]
            tail = console.tail(lines)
            why = (f"{exc}; " if isinstance(exc, BootStopped) else
                   f"no SSH with a new boot_id within boot_timeout ({machine.boot_timeout} s); ")
            after = machine.recover(log)
            stage = StageResult.from_cases("boot", [TestCase(
                f"boot: {machine.name}", Status.FAIL, why + after,
                output="--- console tail ---\n" + tail,
                evidence=(panic.excerpt if (panic := console.first_panic(lines)) else
                          console.tail(lines, console.EVIDENCE_LINES)),
                duration=time.monotonic() - t0, log_path=machine.console_log)],
                time.monotonic() - t0, log,
                properties={**machine.properties, "expected_release": release})
            cell.record(stage)
            return BootedGuest(stage, None, "", release)
        booted, verified = verify_booted(session, machine.name, release,
                                         machine.console_lines()[before:],
                                         machine.console_log,
                                         cell.logs / f"dmesg-{machine.name}.log")
        cases = [TestCase(f"boot: {machine.name}", Status.PASS,
                          output=f"SSH answered with a new boot_id after {waited:.1f} s",
                          duration=waited, log_path=log), *verified, *machine.after_boot(session)]
        stage = StageResult.from_cases("boot", cases, time.monotonic() - t0, log, properties={
            **machine.properties, "kernel_release": booted, "expected_release": release})
    cell.record(stage)
    return BootedGuest(stage, session if stage.status is Status.PASS else None, booted,
                       release, machine.console_lines)
