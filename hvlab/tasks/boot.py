"""Tasks about test hosts: boot a build, build the guest image, check hosts."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hvlab.boot import console, guest_image
from hvlab.boot.verify import BootTarget, boot_qemu, host_lease, target_from_build, verify_booted
from hvlab.build import kselftest
from hvlab.errors import HvlabError, UserError
from hvlab.hosts import oneshot as sshhost
from hvlab.hosts.hyperv.client import HypervClient
from hvlab.hosts.hyperv.flow import boot_hyperv
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, HypervHost, QemuHost, SshHost, SuiteSpec
from hvlab.proc import capture
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession
from hvlab.suites import checks
from hvlab.suites.builtin import GuestContext
from hvlab.suites.runner import run_suite
from hvlab.tasks import stages as flows
from hvlab.tasks.session import Session


def _bootable_host(s: Session, name: str) -> HostSpec:
    host = s.config.host(name)
    if host.kind not in ("qemu", "ssh", "hyperv"):
        raise UserError(f"host '{name}' is of kind '{host.kind}': hvlab boots on qemu, ssh "
                        "and hyperv hosts")
    return host


@dataclass(frozen=True)
class Booted:
    ok: bool
    release: str


def boot(s: Session, kernel_name: str, series: str, host_name: str, fragments: list[str],
         force: bool, jobs: int, use_ccache: bool, offline: bool, prebuilt: str = "",
         suites: list[str] | None = None) -> Booted:
    """Build as needed, boot on the host; then run ``suites`` on the booted guest."""
    host = _bootable_host(s, host_name)
    specs = [s.config.suite(name) for name in suites or []]
    if prebuilt:
        build_dir = prebuilt_build(s, Path(prebuilt))
        return boot_build(s, host, build_dir, "prebuilt", specs, series)
    kernel = s.config.kernel(kernel_name)
    plan_cell(s, kernel.name, host, specs)
    built = flows.build(s, kernel_name, series, fragments, False, force, jobs, "", use_ccache,
                        offline, kselftest.targets_of(specs))
    if not built.ok or built.result is None or built.result.path is None:
        return Booted(False, "")
    return boot_build(s, host, built.result.path, kernel.name, specs, series)


def plan_cell(s: Session, kernel: str, host: HostSpec, suites: list[SuiteSpec]) -> None:
    if host.kind != "qemu":
        s.run.plan("install", kernel, host.name)
    s.run.plan("boot", kernel, host.name)
    for suite in suites:
        s.run.plan(suite.name, kernel, host.name)


def boot_build(s: Session, host: HostSpec, build_dir: Path, kernel: str,
              suites: list[SuiteSpec], series: str) -> Booted:
    plan_cell(s, kernel, host, suites)
    after = Suites(s, kernel, host, suites, series, build_dir)
    if host.kind == "ssh":
        return _boot_ssh(s, host, build_dir, kernel, after)
    if host.kind == "hyperv":
        with boot_hyperv(s, host, build_dir, kernel) as guest:
            if guest.properties.get("kernel_release"):
                s.run.properties["kernel_release"] = guest.properties["kernel_release"]
            if guest.ok and guest.session is not None:
                after.run(guest.session, guest.release)
            return Booted(guest.ok, guest.release)
    return _boot_target(s, host, target_from_build(build_dir), kernel, after)


@dataclass
class Suites:
    """The suites to run on a guest once it booted."""

    s: Session
    kernel: str
    host: HostSpec
    specs: list[SuiteSpec]
    series: str
    build: Path

    def run(self, session: SshSession, release: str) -> None:
        if not self.specs:
            return
        ctx = GuestContext(session, self.host.name, release, self.s.run.logs,
                           self.host.iperf_server, self._dmesg_baseline(session), self.build,
                           self.host.scratch_disk)
        props = {"kernel": self.kernel, "host": self.host.name, "kernel_release": release}
        for spec in self.specs:
            self.s.begin(spec.name, self.kernel, self.host.name)
            self.s.record(run_suite(ctx, spec, self.s.run.logs, props), self.kernel,
                          self.host.name)

    def _dmesg_baseline(self, session: SshSession) -> list[str] | None:
        """The error lines of this kernel's unpatched boot on this host: recorded
        when the series is ``none``, read back otherwise (None: never recorded)."""
        path = self.s.ws.kernels / "baselines" / self.kernel / self.host.name / "dmesg-errors"
        if self.series in ("", "none"):
            r = session.run(["dmesg", "-r"], timeout=60, tail_bytes=16 << 20)
            if r.ok:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(checks.error_lines(r.stdout)) + "\n")
            return None if not r.ok else checks.error_lines(r.stdout)
        if path.is_file():
            return [line for line in path.read_text().splitlines() if line]
        return None


def _boot_ssh(s: Session, host: HostSpec, build_dir: Path, kernel: str,
              after: Suites) -> Booted:
    """Install a build on an existing machine and boot it once."""
    release = (build_dir / "kernelrelease").read_text().strip()
    with host_lease(s.ws, host.name, s.progress.info):
        session = open_session(s.config, host.name)
        capture = sshhost.ConsoleCapture(
            host.detail.console if isinstance(host.detail, SshHost) else (),
            s.run.logs / f"console-{host.name}.log")
        try:
            log = s.begin("install", kernel, host.name, detail=f"{release} on {host.name}")
            t0 = time.monotonic()
            old = sshhost.boot_id(session)

            def hvlab_initrd() -> Path:
                image = guest_image.build_image(s.ws)
                target = target_from_build(build_dir)
                return guest_image.combined_initrd(image, target.modules,
                                                   s.run.logs / f"initrd-{host.name}.cpio.gz")

            assert isinstance(host.detail, SshHost)
            installed = sshhost.install(session, host.name, host.detail.boot_method,
                                        host.detail.keep_kernels, build_dir, release,
                                        hvlab_initrd, log)
            s.record(StageResult.from_cases("install", [TestCase(
                f"install: {host.name}", Status.PASS,
                output=f"{release} installed; one-shot boot by {installed.method}"
                + (f"; initrd {installed.initrd}" if installed.initrd else ""),
                duration=time.monotonic() - t0, log_path=log)], time.monotonic() - t0, log),
                kernel, host.name)
            log = s.begin("boot", kernel, host.name, detail=f"{release} on {host.name}")
            t0 = time.monotonic()
            sshhost.reboot_once(session, installed, log)
            try:
                waited = sshhost.wait_back(session, old, host.boot_timeout)
            except TimeoutError:
                cycled = sshhost.power_cycle(host, log)
                tail = console.tail(capture.lines())
                msg = (f"no SSH with a new boot_id within boot_timeout ({host.boot_timeout} s)"
                       + ("; power-cycled back to the default kernel" if cycled else
                          "; no power_cycle command configured"))
                s.record(StageResult.from_cases("boot", [TestCase(
                    f"boot: {host.name}", Status.FAIL, msg, output=tail,
                    duration=time.monotonic() - t0, log_path=log)], time.monotonic() - t0, log),
                    kernel, host.name)
                return Booted(False, release)
            booted, verified = verify_booted(session, host.name, release, capture.lines(),
                                             capture.log, s.run.logs / f"dmesg-{host.name}.log")
            cases = [TestCase(f"boot: {host.name}", Status.PASS,
                              output=f"SSH answered with a new boot_id after {waited:.1f} s",
                              duration=waited, log_path=log), *verified]
            stage = StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                           properties={"host_kind": "ssh",
                                                       "kernel_release": booted,
                                                       "expected_release": release})
            s.record(stage, kernel, host.name)
            if stage.status is Status.PASS:
                after.run(session, release)
            return Booted(stage.status is Status.PASS, release)
        finally:
            capture.stop()
            close_chain(session)


def prebuilt_build(s: Session, path: Path) -> Path:
    """A folder laid out like a build's artifacts (bzImage, kernelrelease,
    System.map, config, modules.tar.gz): ``path`` itself when it is one (a
    build under kernels/builds/), else made from a distro kernel
    ``/boot/vmlinuz-<release>`` with the guest modules of this machine."""
    if path.is_dir():
        if not (path / "kernelrelease").is_file() or not any(
                (path / n).is_file() for n in ("bzImage", "Image")):
            raise UserError(f"--prebuilt {path}: a build folder needs kernelrelease and "
                            "bzImage (or Image)")
        return path
    if not path.is_file():
        raise UserError(f"--prebuilt {path}: no such kernel image or build folder")
    release = path.name.removeprefix("vmlinuz-")
    if release == path.name or not (Path("/lib/modules") / release / "modules.dep").is_file():
        raise UserError(f"--prebuilt {path}: expected /boot/vmlinuz-<release> with "
                        f"/lib/modules/<release>/modules.dep on this machine")
    out = s.ws.kernels / "images" / f"prebuilt-{release}"
    if (out / "kernelrelease").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(path, tmp / "bzImage")
    for name, target in (("System.map", "System.map"), ("config", "config")):
        src = path.with_name(f"{name}-{release}")
        if src.is_file():
            shutil.copyfile(src, tmp / target)
        else:
            (tmp / target).write_text("")
    entries = guest_image.modules_from_tree(Path("/"), release,
                                            (*guest_image.GUEST_MODULES, *checks.HV_MODULES))
    guest_image.write_modules_archive(entries, tmp / "modules.cpio.gz")
    guest_image.write_modules_tarball(entries, tmp / "modules.tar.gz")
    (tmp / "kernelrelease").write_text(release + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _boot_target(s: Session, host: HostSpec, target: BootTarget, kernel: str,
                 after: Suites) -> Booted:
    assert isinstance(host.detail, QemuHost)
    on = host.detail.on
    with host_lease(s.ws, host.name, s.progress.info):
        remote = open_session(s.config, on) if on != "local" else None
        try:
            s.begin("boot", kernel, host.name, detail=f"{target.label} on {host.name}")
            outcome = boot_qemu(s.ws, host, target, s.run.logs, s.progress.info, remote)
            try:
                s.record(outcome.stage, kernel, host.name)
                if outcome.session is not None and outcome.stage.status is Status.PASS:
                    after.run(outcome.session, target.release)
            finally:
                if outcome.session is not None:
                    outcome.session.close()
                outcome.guest.stop()
        finally:
            if remote is not None:
                close_chain(remote)
    s.run.properties["kernel_release"] = target.release
    return Booted(outcome.stage.status is Status.PASS, target.release)


def image_build(s: Session, force: bool) -> None:
    t0 = time.monotonic()
    s.begin("image", "-")
    image = guest_image.build_image(s.ws, force=force)
    size = image.path.stat().st_size
    s.progress.info(f"guest image {s.ws.display(image.path)} ({size // 1024} KiB), host key "
                    f"{image.host_key_fingerprint}")
    s.record(StageResult.from_cases("image", [TestCase(
        "guest image", Status.PASS, output=f"{image.path}\nhost key {image.host_key_fingerprint}"
        f"\nclient key {image.client_key}\n")], time.monotonic() - t0), "-")


def _check_qemu(s: Session, host: HostSpec) -> TestCase:
    assert isinstance(host.detail, QemuHost)
    problems = []
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        problems.append("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    if host.detail.accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problems.append("accel: kvm but /dev/kvm is not usable")
    for tool, package in (("busybox", "busybox-static"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing for the guest image (Debian package {package})")
    if not os.path.exists("/usr/sbin/sshd"):
        problems.append("sshd is missing for the guest image (Debian package openssh-server)")
    if problems:
        return TestCase(f"host: {host.name}", Status.ERROR, "; ".join(problems))
    if host.detail.on != "local":
        return _check_ssh_named(s, host.name, host.detail.on)
    version = capture([qemu or "qemu-system-x86_64", "--version"]).stdout.decode()
    return TestCase(f"host: {host.name}", Status.PASS,
                    output=f"{version.splitlines()[0]}\naccel {host.detail.accel}\n")


def _check_ssh(s: Session, host: HostSpec) -> TestCase:
    return _check_ssh_named(s, host.name, host.name)


def _check_ssh_named(s: Session, label: str, name: str) -> TestCase:
    """Connect to ssh host ``name`` (the host itself, or where a qemu host runs)."""
    session = open_session(s.config, name)
    t0 = time.monotonic()
    try:
        session.connect()
        facts = session.check(["sh", "-c", "uname -sr; . /etc/os-release 2>/dev/null && "
                               "echo \"$PRETTY_NAME\"; df -Pk /boot / | tail -n +2"], timeout=30)
    except HvlabError as exc:
        return TestCase(f"host: {label}", Status.ERROR, str(exc),
                        duration=time.monotonic() - t0)
    finally:
        close_chain(session)
    lines = facts.strip().splitlines()
    free = [f"{cols[5]} {int(cols[3]) // 1024} MiB free" for cols in
            (line.split() for line in lines[2:]) if len(cols) >= 6 and cols[3].isdigit()]
    summary = f"{lines[0] if lines else '?'}; {lines[1] if len(lines) > 1 else '?'}; " + \
        ", ".join(free)
    return TestCase(f"host: {label}", Status.PASS, output=summary + "\n",
                    duration=time.monotonic() - t0,
                    properties={"host_key": "verified", "where": session.where})


def _check_hyperv(s: Session, host: HostSpec) -> TestCase:
    """The Windows host answers SSH and PowerShell, has the Hyper-V module and the VM."""
    assert isinstance(host.detail, HypervHost)
    session = open_session(s.config, host.name)
    t0 = time.monotonic()
    client = HypervClient(session, host.name, host.detail.vm, timeout=120)
    try:
        facts = client.host_facts()
        if not facts.hyperv_module:
            return TestCase(f"host: {host.name}", Status.ERROR,
                            f"Windows build {facts.windows_build} has no Hyper-V PowerShell "
                            "module (Install-WindowsFeature Hyper-V-PowerShell)",
                            duration=time.monotonic() - t0)
        info = client.vm_info()
    except HvlabError as exc:
        return TestCase(f"host: {host.name}", Status.ERROR, str(exc),
                        duration=time.monotonic() - t0)
    finally:
        close_chain(session)
    return TestCase(f"host: {host.name}", Status.PASS,
                    output=f"{facts.windows_caption} (build {facts.windows_build}), Hyper-V "
                    f"module {facts.hyperv_module}; VM '{info.name}' {info.state}, generation "
                    f"{info.generation}, version {info.version}\n",
                    duration=time.monotonic() - t0,
                    properties={"host_key": "verified", "where": session.where})


def hosts_check(s: Session, only: str) -> None:
    names = [only] if only else sorted(s.config.hosts)
    if only:
        s.config.host(only)  # unknown name: a clear UserError
    cases = []
    for name in names:
        host = s.config.host(name)
        s.progress.stage("hosts.check", name)
        if host.kind == "qemu":
            case = _check_qemu(s, host)
        elif host.kind == "ssh":
            case = _check_ssh(s, host)
        else:
            case = _check_hyperv(s, host)
        line = case.message or (case.output.strip().splitlines() or [""])[0]
        s.progress.info(f"{name}: {case.status.value.upper()}: {line}")
        cases.append(case)
    s.run.add(StageResult.from_cases("hosts", cases, 0.0), "-")
