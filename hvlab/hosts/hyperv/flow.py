"""Boot a build on a Linux VM of a Hyper-V host.

Hold the host lease; optionally restore a checkpoint and turn Secure Boot
off; attach COM1 to a pipe copied into a file on the host; Start-VM; wait for
the IPv4 address the guest's KVP daemon reports; install the build over SSH
exactly as the ssh kind does; boot it once (kexec or grub-reboot); verify
the release; check the Heartbeat integration service.  A guest that never
comes back is hard reset (Stop-VM -TurnOff, Start-VM), which brings back
its default kernel.  At the end: download the serial log, then stop, revert
or keep the VM.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvlab import cancel
from hvlab.boot import console, guest_image
from hvlab.boot.verify import host_lease, target_from_build, verify_booted
from hvlab.errors import HvlabError, InfraError
from hvlab.hosts import oneshot as sshhost
from hvlab.hosts.hyperv.client import HypervClient, VmInfo
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, HypervHost
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import SshSession
from hvlab.tasks.session import Session

KVP_HINT = ("the usual cause is the guest's KVP daemon not running (hv_kvp_daemon, Debian "
            "package hyperv-daemons) or no DHCP on the VM's switch")


@dataclass
class HypervGuest:
    """A booted guest handed to the suites (open session) and the run's facts."""

    ok: bool
    release: str
    session: SshSession | None
    properties: dict[str, str]


@dataclass
class _Vm:
    """The VM under hvlab's control during one run."""

    s: Session
    host: HostSpec
    hv: HypervHost
    client: HypervClient
    serial_log: Path
    started: bool = False

    def start(self) -> None:
        self.started = True
        if self.hv.serial_log:
            self.client.attach_serial()
            self.client.start_serial_reader()  # waits for the pipe: nothing is lost
        self.client.start()

    def serial_lines(self) -> list[str]:
        if not self.hv.serial_log:
            return []
        try:
            data = self.client.read_serial()
        except InfraError as exc:
            self.s.progress.info(f"{self.host.name}: serial log not read: {exc}")
            return []
        self.serial_log.write_bytes(data)
        return data.decode("utf-8", "replace").splitlines()

    def guest(self, address: str, win: SshSession) -> SshSession:
        ep = dataclasses.replace(self.hv.guest, address=address)
        return SshSession(f"{self.host.name} guest", ep,
                          jump=win if self.hv.guest_via_host else None)

    def wait_guest(self, win: SshSession, timeout: float) -> SshSession:
        """Wait for the VM's IPv4 address (ip_timeout), then for SSH (``timeout``)."""
        t0 = time.monotonic()
        try:
            address = self.client.wait_ipv4(self.hv.ip_timeout)
        except TimeoutError:
            raise InfraError(f"host {self.host.name}: VM '{self.hv.vm}' reported no IPv4 address "
                             f"within ip_timeout ({self.hv.ip_timeout} s); {KVP_HINT}") from None
        self.s.progress.info(f"{self.host.name}: VM '{self.hv.vm}' has address {address} "
                             f"after {time.monotonic() - t0:.0f} s")
        guest = self.guest(address, win)
        last = ""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                guest.connect()
                return guest
            except InfraError as exc:
                last = str(exc)
                guest.close()
            cancel.sleep(1)
        raise InfraError(f"host {self.host.name}: the guest at {address} did not answer SSH "
                         f"within {timeout:.0f} s: {last}")

    def release(self) -> str:
        """Leave the VM as the config says; returns what was done."""
        how = self.hv.release
        if how == "keep" or not self.started and how == "stop":
            return "kept" if how == "keep" else "not started"
        info = self.client.vm_info()
        if info.state != "Off":
            self.client.turn_off()
        if how == "revert" and self.hv.checkpoint:
            self.client.restore(self.hv.checkpoint)
            return f"turned off and reverted to checkpoint '{self.hv.checkpoint}'"
        return "turned off"


def _prepare(vm: _Vm, info: VmInfo) -> list[str]:
    """Checkpoint and Secure Boot before the start; returns notes for the log."""
    notes = []
    state = info.state
    if state != "Off":
        vm.client.turn_off()  # a known start: the test VM is hvlab's while the lease is held
        notes.append(f"VM was {state}: turned off")
        state = "Off"
    if vm.hv.checkpoint:
        vm.client.restore(vm.hv.checkpoint)
        notes.append(f"restored checkpoint '{vm.hv.checkpoint}'")
    if vm.hv.secure_boot is not None:
        if info.generation != 2:
            notes.append("secure_boot ignored: generation 1 VMs have no Secure Boot")
        else:
            current = vm.client.secure_boot() == "On"
            if current != vm.hv.secure_boot:
                vm.client.set_secure_boot(vm.hv.secure_boot)
                notes.append(f"Secure Boot turned {'on' if vm.hv.secure_boot else 'off'}")
    return notes


@contextmanager
def boot_hyperv(s: Session, host: HostSpec, build_dir: Path, kernel: str
                ) -> Iterator[HypervGuest]:
    """Install and boot ``build_dir`` on the VM; yields the booted guest (to run
    suites on); the VM is released as configured however this ends."""
    hv = host.detail
    assert isinstance(hv, HypervHost)
    release = (build_dir / "kernelrelease").read_text().strip()
    with host_lease(s.ws, host.name, s.progress.info):
        win = open_session(s.config, host.name)
        client = HypervClient(win, host.name, hv.vm, s.run.log(f"hyperv-{host.name}"))
        vm = _Vm(s, host, hv, client, s.run.logs / f"console-{host.name}.log")
        guest: SshSession | None = None
        try:
            log = s.begin("install", kernel, host.name, detail=f"{release} on {host.name}")
            t0 = time.monotonic()
            facts = client.host_facts()
            if not facts.hyperv_module:
                raise InfraError(f"host {host.name}: the Hyper-V PowerShell module is not "
                                 "installed on the Windows host (Install-WindowsFeature "
                                 "Hyper-V-PowerShell)")
            info = client.vm_info()
            props = {"host_kind": "hyperv", "windows_build": facts.windows_build,
                     "windows": facts.windows_caption, "vm": hv.vm,
                     "vm_generation": str(info.generation), "vm_version": info.version,
                     "expected_release": release}
            notes = _prepare(vm, info)
            vm.start()
            guest = vm.wait_guest(win, host.boot_timeout)
            old = sshhost.boot_id(guest)
            default_release = guest.check(["uname", "-r"], timeout=30).strip()

            def hvlab_initrd() -> Path:
                image = guest_image.build_image(s.ws)
                target = target_from_build(build_dir)
                return guest_image.combined_initrd(image, target.modules,
                                                   s.run.logs / f"initrd-{host.name}.cpio.gz")

            installed = sshhost.install(guest, host.name, hv.boot_method, hv.keep_kernels,
                                        build_dir, release, hvlab_initrd, log)
            s.record(StageResult.from_cases("install", [TestCase(
                f"install: {host.name}", Status.PASS,
                output="\n".join([*notes, f"VM '{hv.vm}' running {default_release}",
                                  f"{release} installed; one-shot boot by {installed.method}"])
                + "\n", duration=time.monotonic() - t0, log_path=log)],
                time.monotonic() - t0, log, properties=props), kernel, host.name)

            log = s.begin("boot", kernel, host.name, detail=f"{release} on {host.name}")
            t0 = time.monotonic()
            before = len(vm.serial_lines())  # the serial log of the new kernel starts here
            sshhost.reboot_once(guest, installed, log)
            try:
                waited = sshhost.wait_back(guest, old, host.boot_timeout)
            except TimeoutError:
                guest.close()
                stage = _hard_reset(vm, win, host, release, default_release, t0, log, props)
                s.record(stage, kernel, host.name)
                yield HypervGuest(False, release, None, props)
                return
            booted, verified = verify_booted(guest, host.name, release,
                                             vm.serial_lines()[before:],
                                             vm.serial_log, s.run.logs / f"dmesg-{host.name}.log")
            props["kernel_release"] = booted
            cases = [TestCase(f"boot: {host.name}", Status.PASS,
                              output=f"SSH answered with a new boot_id after {waited:.1f} s",
                              duration=waited, log_path=log), *verified,
                     _heartbeat(client, props)]
            stage = StageResult.from_cases("boot", cases, time.monotonic() - t0, log,
                                           properties=props)
            s.record(stage, kernel, host.name)
            yield HypervGuest(stage.status is Status.PASS, release, guest, props)
        finally:
            if guest is not None:
                guest.close()
            ending = sys.exc_info()[1]  # the exception this run is ending with, if any
            try:
                vm.serial_lines()  # the whole serial log, into the run folder
                done = vm.release()
                s.progress.info(f"{host.name}: VM '{hv.vm}' {done}")
            except HvlabError as exc:  # never hide why the run ended; say what is left
                s.progress.info(f"{host.name}: VM '{hv.vm}' NOT released ({hv.release}): "
                                f"{exc}")
                if ending is None:
                    raise
            finally:
                close_chain(win)


def _heartbeat(client: HypervClient, props: dict[str, str], timeout: float = 60) -> TestCase:
    """The Heartbeat integration service reports OK (hv_utils runs in the new kernel)."""
    t0 = time.monotonic()
    status = ""
    while True:
        services = client.integration_services()
        props["integration_services"] = ", ".join(
            f"{svc.name}={svc.status or ('disabled' if not svc.enabled else 'none')}"
            for svc in services)
        beat = next((svc for svc in services if svc.name == "Heartbeat"), None)
        status = beat.status if beat else "missing"
        if status == "OK" or time.monotonic() - t0 > timeout:
            break
        cancel.sleep(2)
    if status == "OK":
        return TestCase("integration: heartbeat", Status.PASS, output="Heartbeat: OK\n",
                        duration=time.monotonic() - t0)
    return TestCase("integration: heartbeat", Status.FAIL,
                    f"Heartbeat integration service reports '{status}' {timeout:.0f} s after "
                    "boot (is hv_utils built and loaded in the new kernel?)",
                    output=props["integration_services"] + "\n",
                    duration=time.monotonic() - t0)


def _hard_reset(vm: _Vm, win: SshSession, host: HostSpec, release: str, default_release: str,
                t0: float, log: Path, props: dict[str, str]) -> StageResult:
    """The new kernel never answered: power-cycle; the one-shot boot means the VM
    must come back on its default kernel."""
    tail = console.tail(vm.serial_lines())
    vm.client.turn_off()
    vm.start()
    try:
        guest = vm.wait_guest(win, host.boot_timeout)
        try:
            back = guest.check(["uname", "-r"], timeout=30).strip()
        finally:
            guest.close()
        after = (f"back on its default kernel {back}" if back == default_release
                 else f"came back on {back}, not its default kernel {default_release}")
    except InfraError as exc:
        after = f"did not come back after the reset: {exc}"
    msg = (f"no SSH with a new boot_id within boot_timeout ({host.boot_timeout} s); hard reset "
           f"(Stop-VM -TurnOff, Start-VM): {after}")
    props["kernel_release"] = ""
    return StageResult.from_cases("boot", [TestCase(
        f"boot: {host.name}", Status.FAIL, msg, output="--- serial console tail ---\n" + tail,
        duration=time.monotonic() - t0, log_path=vm.serial_log)], time.monotonic() - t0, log,
        properties=props)
