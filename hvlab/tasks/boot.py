"""`inv boot`, `inv test`, `inv hosts.check`, `inv image.build`: a build booted
on a host through the host interface, then the suites on the booted guest.

Nothing here knows a host's kind: ``hvlab.hosts.registry`` gives the host
object, which plans its stages, boots and releases (docs/design.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab.boot import guest_image, vm_image
from hvlab.boot.imagearch import HEAD, image_arch
from hvlab.build import kselftest
from hvlab.errors import UserError
from hvlab.hosts import registry
from hvlab.hosts.base import BootedGuest, Host, HostEnv
from hvlab.model import NO_SERIES, SuiteSpec
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession
from hvlab.suites import checks
from hvlab.suites.builtin import GuestContext, hv_module_names, take_capture
from hvlab.suites.capture import copy_into, open_capture, pack
from hvlab.suites.hvtree import shipped
from hvlab.suites.runner import run_suite
from hvlab.tasks.session import CellRecorder, Scope, Session
from hvlab.tasks.stages import BuildRequest, build


@dataclass(frozen=True)
class BootRequest:
    """What `inv boot` / `inv test` do: a build (or a prebuilt kernel) on a host,
    then ``suites`` in order (kunit_tool's KunitExecRequest pattern)."""

    build: BuildRequest
    host: str
    suites: tuple[str, ...] = ()
    prebuilt: str = ""


def host_env(s: Session) -> HostEnv:
    return HostEnv(s.ws, s.config, s.progress.info)


def host_of(s: Session, name: str) -> Host:
    return registry.host(s.config.host(name), host_env(s))


def boot(s: Session, req: BootRequest) -> bool:
    """Build as needed, boot on the host, run the suites; True when it booted."""
    host = host_of(s, req.host)
    try:
        return _boot(s, req, host)
    finally:
        host.close()


def _boot(s: Session, req: BootRequest, host: Host) -> bool:
    suites = [s.config.suite(name) for name in req.suites]
    if req.prebuilt:
        build_dir = prebuilt_build(s, Path(req.prebuilt))
        return boot_and_test(s, Scope("prebuilt"), host, build_dir, suites, "", "prebuilt")
    kernel = s.config.kernel(req.build.kernel)
    if kernel.arch != host.spec.arch:  # before minutes of building what it cannot boot
        raise UserError(f"kernel '{kernel.name}' is {kernel.arch} and host '{host.spec.name}' "
                        f"boots {host.spec.arch} kernels (arch: in {host.spec.file.name}): "
                        f"pick a host with arch: {kernel.arch}")
    scope = Scope(kernel.name)
    plan_cell(s, scope.on(host.spec.name), host, suites)
    built = build(s, scope, req.build)
    if built.path is None:
        return False
    return boot_and_test(s, scope, host, built.path, suites, req.build.series, kernel.name)


def plan_cell(s: Session, scope: Scope, host: Host, suites: Sequence[SuiteSpec]) -> None:
    for stage in host.stages():
        s.plan(stage, scope)
    for suite in suites:
        s.plan(suite.name, scope)


def boot_and_test(s: Session, scope: Scope, host: Host, build_dir: Path,
                  suites: Sequence[SuiteSpec], series: str, kernel: str) -> bool:
    """Boot ``build_dir`` on ``host`` as cell ``scope``, then its suites."""
    on = scope.on(host.spec.name)
    plan_cell(s, on, host, suites)
    with host.boot(build_dir, CellRecorder(s, on)) as guest:
        s.attach(on, guest.facts)
        if guest.ok and guest.session is not None:
            Suites(s, on, host, kernel, series, build_dir).run(guest, suites)
        return guest.ok


@dataclass
class Suites:
    """The suites of a cell, run on its booted guest."""

    s: Session
    scope: Scope  # the cell on its host
    host: Host
    kernel: str  # the kernel's name (the dmesg baseline is per kernel and host)
    series: str
    build: Path

    def run(self, guest: BootedGuest, specs: Sequence[SuiteSpec]) -> None:
        if not specs or guest.session is None:
            return
        spec = self.host.spec
        logs = self.s.run.cell_logs(self.scope.label, self.scope.host)
        ctx = GuestContext(guest.session, spec.name, guest.expected, logs,
                           spec.iperf_server, self._dmesg_baseline(guest.session), self.build,
                           spec.scratch_disk, spec.spare_nic, console=guest.console)
        props = {"kernel": self.kernel, "host": spec.name}
        for suite in specs:
            with self.s.stage(suite.name, self.scope):
                result = run_suite(ctx, suite, logs, props)
            self.s.record(result, self.scope)

    def _dmesg_baseline(self, session: SshSession) -> list[str] | None:
        """The error lines of this kernel's unpatched boot on this host: recorded
        when the series is ``none``, read back otherwise (None: never recorded)."""
        path = (self.s.ws.kernels / "baselines" / self.kernel / self.host.spec.name
                / "dmesg-errors")
        if self.series in ("", NO_SERIES):
            r = session.run(["dmesg", "-r"], timeout=60, tail_bytes=16 << 20)
            if r.ok:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(checks.error_lines(r.stdout)) + "\n")
            return None if not r.ok else checks.error_lines(r.stdout)
        if path.is_file():
            return [line for line in path.read_text().splitlines() if line]
        return None


def kselftest_targets(s: Session, suites: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(kselftest.targets_of(s.config.suite(n) for n in suites))


PREBUILT_FORMAT = 3
# What a distro kernel installed on a machine that boots from its disk needs in
# its initramfs beside the guest modules: the root file system and disk drivers.
ROOT_MODULES = ("ext4", "crc32c_generic", "xfs", "ahci", "sd_mod")  # ext4 needs crc32c


def prebuilt_build(s: Session, path: Path) -> Path:
    """A folder laid out like a build's artifacts (bzImage or Image,
    kernelrelease, System.map, config, modules.tar.gz): ``path`` itself when it
    is one (a build under kernels/builds/), else made from a distro kernel
    ``<root>/boot/vmlinuz-<release>`` with the guest modules of
    ``<root>/lib/modules/<release>``: this machine's (root /), or a distro
    kernel package of any arch unpacked in a folder."""
    if path.is_dir():
        if not (path / "kernelrelease").is_file() or not any(
                (path / n).is_file() for n in ("bzImage", "Image")):
            raise UserError(f"--prebuilt {path}: a build folder needs kernelrelease and "
                            "bzImage (or Image)")
        return path
    if not path.is_file():
        raise UserError(f"--prebuilt {path}: no such kernel image or build folder")
    release = path.name.removeprefix("vmlinuz-")
    root = path.resolve().parent.parent
    if release == path.name or path.resolve().parent.name != "boot" or \
            not (root / "lib" / "modules" / release / "modules.dep").is_file():
        raise UserError(f"--prebuilt {path}: expected <root>/boot/vmlinuz-<release> with "
                        f"<root>/lib/modules/<release>/modules.dep (root / is this machine)")
    with path.open("rb") as fh:
        arch = image_arch(fh.read(HEAD))
    image = "Image" if arch == "arm64" else "bzImage"
    where = "" if root == Path("/") else "-" + hashlib.sha256(str(root).encode()).hexdigest()[:8]
    out = s.ws.kernels / "images" / f"prebuilt-{release}{where}-{PREBUILT_FORMAT}"
    if (out / "kernelrelease").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(path, tmp / image)
    for name, target in (("System.map", "System.map"), ("config", "config")):
        src = path.with_name(f"{name}-{release}")
        if src.is_file():
            shutil.copyfile(src, tmp / target)
        else:
            (tmp / target).write_text("")
    entries = guest_image.modules_from_tree(root, release,
                                            (*guest_image.GUEST_MODULES, *ROOT_MODULES,
                                             *hv_module_names(shipped())))
    guest_image.write_modules_archive(entries, tmp / "modules.cpio.gz")
    guest_image.write_modules_tarball(entries, tmp / "modules.tar.gz")
    (tmp / "kernelrelease").write_text(release + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def image_build(s: Session, force: bool) -> None:
    t0 = time.monotonic()
    with s.stage("image", Scope("-"), "guest initramfs"):
        image = guest_image.build_image(s.ws, force=force)
    size = image.path.stat().st_size
    s.progress.info(f"guest image {s.ws.display(image.path)} ({size // 1024} KiB), host key "
                    f"{image.host_key_fingerprint}")
    s.record(StageResult.from_cases("image", [TestCase(
        "guest image", Status.PASS, output=f"{image.path}\nhost key {image.host_key_fingerprint}"
        f"\nclient key {image.client_key}\n")], time.monotonic() - t0), Scope("-"))


def image_vm(s: Session, force: bool, mirror: str) -> None:
    t0 = time.monotonic()
    with s.stage("image", Scope("-"), "Debian 12 VM disk image"):
        image = vm_image.build_image(s.ws, force=force, mirror=mirror or vm_image.DEFAULT_MIRROR,
                                     info=s.progress.info)
    size = image.disk.stat().st_size
    s.progress.info(f"VM image {s.ws.display(image.disk)} ({size >> 20} MiB), default kernel "
                    f"{image.default_release}, host key {image.host_key_fingerprint}")
    s.record(StageResult.from_cases("image", [TestCase(
        "vm image", Status.PASS, output=f"{image.disk}\ndefault kernel "
        f"{image.default_release}\nhost key {image.host_key_fingerprint}\nclient key "
        f"{image.client_key}\n",
        duration=time.monotonic() - t0)], time.monotonic() - t0), Scope("-"))


def hosts_check(s: Session, only: str) -> None:
    names = [only] if only else sorted(s.config.hosts)
    cases = []
    for name in names:
        host = host_of(s, name)  # an unknown name: a clear UserError
        s.progress.stage("hosts.check", name)
        case = host.check()
        line = case.message or (case.output.strip().splitlines() or [""])[0]
        s.progress.info(f"{name}: {case.status.value.upper()}: {line}")
        cases.append(case)
    s.run.add(StageResult.from_cases("hosts", cases, 0.0), "-")  # each said once, above


def judge_capture(s: Session, place: str, suites: Sequence[str]) -> None:
    """`inv test --capture`: the suites' guest-side judgement on a capture; no
    host, no network, the same JUnit."""
    specs = [s.config.suite(n) for n in suites]
    cap = open_capture(Path(place).expanduser(), s.run.path)
    scope = Scope(cap.release or "capture", "capture")
    s.run.info["capture"] = str(Path(place).resolve())
    s.attach(scope, {"kernel_release": cap.release, "capture": str(Path(place).resolve())})
    ctx = GuestContext(None, "capture", "", s.run.logs, given=cap)
    for suite in specs:
        with s.stage(suite.name, scope, f"{suite.name} on the capture {place}"):
            result = run_suite(ctx, suite, s.run.logs, {"host": "capture"})
        s.record(result, scope)


def hosts_capture(s: Session, name: str, output: str) -> None:
    """`inv hosts.capture`: what the guest-side checks read, from the running guest
    of ``name``, as a capture folder and ``.tar.gz`` (boots nothing)."""
    host = host_of(s, name)
    scope = Scope("-", name)
    with s.stage("capture", scope, f"the running guest of {name}") as log, \
            host.guest() as session:
        t0 = time.monotonic()
        cap = take_capture(session, s.run.path, name, log)
    dest = Path(output).expanduser() if output else s.run.path / f"capture-{name}"
    if dest.resolve() != cap.folder.resolve():
        copy_into(cap, dest)
    pack(dest, dest.with_name(dest.name + ".tar.gz"))
    devices = len(cap.listdir("sys/bus/vmbus/devices") or [])
    s.progress.info(f"{name}: captured {cap.release} ({devices} VMBus devices) into "
                    f"{s.ws.display(dest)} and {s.ws.display(dest)}.tar.gz")
    s.record(StageResult.from_cases("capture", [TestCase(
        f"capture: {name}", Status.PASS, output=f"{dest}\n{dest}.tar.gz\nrelease {cap.release}"
        f"\n{devices} VMBus devices\n", duration=time.monotonic() - t0)],
        time.monotonic() - t0), scope)
