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
from dataclasses import dataclass, field
from pathlib import Path

from hvlab import cancel
from hvlab.boot.verify import host_lease
from hvlab.errors import HvlabError, InfraError
from hvlab.hosts.base import BootedGuest, CellLog, HostEnv
from hvlab.hosts.hyperv.client import MARKER, HypervClient, VmInfo
from hvlab.hosts.machine import hvlab_initrd
from hvlab.hosts.oneshot import install_and_boot
from hvlab.hosts.sessions import close_chain, open_session
from hvlab.model import HostSpec, HypervHost
from hvlab.results import Status, TestCase
from hvlab.ssh import SshSession

KVP_CAUSE = ("the guest's KVP daemon not running (hv_kvp_daemon, Debian package "
             "hyperv-daemons) or no DHCP on the VM's switch")
KVP_HINT = "the usual cause is " + KVP_CAUSE


@dataclass
class _Vm:
    """The VM under hvlab's control during one run (``oneshot.Machine``)."""

    env: HostEnv
    host: HostSpec
    hv: HypervHost
    client: HypervClient
    console_log: Path  # the serial log, downloaded from the Windows host
    started: bool = False
    win: SshSession | None = None
    default_release: str = ""
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def boot_timeout(self) -> int:
        return self.host.boot_timeout

    def console_lines(self) -> list[str]:
        return self.serial_lines()

    def after_boot(self, session: SshSession) -> list[TestCase]:
        return [_heartbeat(self.client, self.properties), _time_sync(self.client, session)]

    def address(self) -> str | None:
        """Get-VMNetworkAdapter's address now (a failed query is no address)."""
        try:
            return self.client.first_ipv4()
        except InfraError:
            return None

    def recover(self, log: Path) -> str:
        """The new kernel never answered: power-cycle; the one-shot boot means the VM
        must come back on its default kernel."""
        assert self.win is not None
        self.client.turn_off()
        self.start()
        try:
            guest = self.wait_guest(self.win, self.host.boot_timeout)
            try:
                back = guest.check(["uname", "-r"], timeout=30).strip()
            finally:
                guest.close()
            after = (f"back on its default kernel {back}" if back == self.default_release
                     else f"came back on {back}, not its default kernel "
                          f"{self.default_release}")
        except InfraError as exc:
            after = f"did not come back after the reset: {exc}"
        return f"hard reset (Stop-VM -TurnOff, Start-VM): {after}"

    def start(self) -> None:
        if self.hv.serial_log:
            if not self.started:  # the host-side log is appended to: empty it per run
                self.client.clear_serial()
            self.client.attach_serial()  # the VM is off: Set-VMComPort refuses otherwise
            self.client.start_serial_reader()  # it retries until the pipe exists
        self.started = True
        self.client.start()

    def reader_connected(self) -> bool:
        """The reader left its marker in the log (the pipe was opened)."""
        return not self.hv.serial_log or any(MARKER in line for line in self.serial_lines())

    def serial_lines(self) -> list[str]:
        if not self.hv.serial_log:
            return []
        try:
            data = self.client.read_serial()
        except InfraError as exc:
            self.env.info(f"{self.host.name}: serial log not read: {exc}")
            return []
        self.console_log.write_bytes(data)
        return data.decode("utf-8", "backslashreplace").splitlines()

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
                             f"within ip_timeout ({self.hv.ip_timeout} s); "
                             f"{self.no_address_hint()}") from None
        self.env.info(f"{self.host.name}: VM '{self.hv.vm}' has address {address} "
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
        seen = [line for line in self.serial_lines() if line.strip()][-3:]
        console = ("; the console ends: " + " | ".join(line.strip() for line in seen)
                   if seen else "")
        raise InfraError(f"host {self.host.name}: the guest at {address} did not answer SSH "
                         f"within {timeout:.0f} s: {last}{console}")

    def no_address_hint(self) -> str:
        """Why a VM reports no address: its KVP daemon, or on a generation 2 VM
        with Secure Boot on, a boot loader the firmware refused (Hyper-V shows
        that on the VM's screen, never on COM1)."""
        if self.properties.get("vm_generation") == "2":
            try:
                secure = self.client.secure_boot() == "On"
            except InfraError:
                secure = False
            if secure:
                return ("Secure Boot is on, and a generation 2 VM boots only a boot loader its "
                        "template trusts (the VM may not have booted at all: set secure_boot: "
                        "off in the host file); otherwise the cause may be " + KVP_CAUSE)
        return KVP_HINT

    def release(self) -> str:
        """Leave the VM as the config says; returns what was done."""
        how = self.hv.release
        if how == "keep" or not self.started and how == "stop":
            return "kept" if how == "keep" else "not started"
        self.client.turn_off()  # a VM already off is left alone
        if how == "revert" and self.hv.checkpoint:
            return f"turned off and {self.client.restore(self.hv.checkpoint)}"
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
        notes.append(vm.client.restore(vm.hv.checkpoint))
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
def boot_hyperv(env: HostEnv, host: HostSpec, build_dir: Path, cell: CellLog
                ) -> Iterator[BootedGuest]:
    """Install and boot ``build_dir`` on the VM; yields the booted guest (to run
    suites on); the VM is released as configured however this ends."""
    hv = host.detail
    assert isinstance(hv, HypervHost)
    with host_lease(env.ws, host.name, env.info):
        win = open_session(env.config, host.name)
        client = HypervClient(win, host.name, hv.vm, cell.logs / f"hyperv-{host.name}.log")
        vm = _Vm(env, host, hv, client, cell.logs / f"console-{host.name}.log")
        guest: SshSession | None = None
        try:
            with cell.stage("install", f"VM '{hv.vm}' on {host.name}"):
                facts = client.host_facts()
                if not facts.hyperv_module:
                    raise InfraError(f"host {host.name}: the Hyper-V PowerShell module is not "
                                     "installed on the Windows host (Install-WindowsFeature "
                                     "Hyper-V-PowerShell)")
                info = client.vm_info()
                vm.properties.update({
                    "host_kind": "hyperv", "windows_build": facts.windows_build,
                    "windows": facts.windows_caption, "vm": hv.vm,
                    "vm_generation": str(info.generation), "vm_version": info.version})
                notes = _prepare(vm, info)
                if info.state != "Off":  # left running: by hand, or by a run that was killed
                    env.info(f"{host.name}: VM '{hv.vm}': {'; '.join(notes)}")
                vm.start()
                guest = vm.wait_guest(win, host.boot_timeout)
                vm.win = win
                if not vm.reader_connected():
                    env.info(f"{host.name}: the serial reader has not connected to COM1's "
                             "pipe: the console is not captured")
                vm.default_release = guest.check(["uname", "-r"], timeout=30).strip()
            yield install_and_boot(
                guest, vm, cell, build_dir, hv.boot_method, hv.keep_kernels,
                lambda: hvlab_initrd(env, build_dir, cell.logs / f"initrd-{host.name}.cpio.gz"),
                [*notes, f"VM '{hv.vm}'"])
        finally:
            if guest is not None:
                guest.close()
            ending = sys.exc_info()[1]  # the exception this run is ending with, if any
            try:
                vm.serial_lines()  # the whole serial log, into the run folder
                done = vm.release()
                env.info(f"{host.name}: VM '{hv.vm}' {done}")
            except HvlabError as exc:  # never hide why the run ended; say what is left
                env.info(f"{host.name}: VM '{hv.vm}' NOT released ({hv.release}): {exc}")
                if ending is None:
                    raise
            finally:
                close_chain(win)


TIME_SYNC_LIMIT = 2.0  # seconds between the guest's clock and the host's


def _time_sync(client: HypervClient, guest: SshSession) -> TestCase:
    """The guest's clock against the Windows host's (hv_utils' time sync keeps
    them together), each read timed so the round trips cancel out."""
    name = "integration: time sync"
    if not guest.run(["test", "-d", "/sys/bus/vmbus"], timeout=30).ok:
        return TestCase(name, Status.SKIP, "the guest has no VMBus, so no time sync service "
                        "(a simulated VM): not judged")
    t0 = time.time()
    host_ms = client.host_time_ms()
    t1 = time.time()
    r = guest.run(["date", "+%s.%N"], timeout=30)
    t2 = time.time()
    text = r.output.strip()
    try:
        guest_s = float(text) if "%N" not in text else float(text.split(".")[0])
    except ValueError:
        return TestCase(name, Status.ERROR, f"the guest's date answered {text[:80]!r}")
    # each clock as read at the middle of its own call, against our clock
    offset = (guest_s - (t1 + t2) / 2) - (host_ms / 1000 - (t0 + t1) / 2)
    detail = f"guest clock {offset:+.3f} s from the host's"
    if abs(offset) > TIME_SYNC_LIMIT:
        return TestCase(name, Status.FAIL, f"{detail} (more than {TIME_SYNC_LIMIT:.0f} s: "
                        "is the time sync integration service on, and hv_utils loaded?)")
    return TestCase(name, Status.PASS, output=detail + "\n",
                    properties={"time_offset_s": f"{offset:.3f}"})


def _heartbeat(client: HypervClient, props: dict[str, str], timeout: float = 60) -> TestCase:
    """The Heartbeat integration service reports OK (hv_utils runs in the new kernel)."""
    t0 = time.monotonic()
    status = ""
    while True:
        services = client.integration_services()
        props["integration_services"] = ", ".join(
            f"{svc.name}={svc.status or ('disabled' if not svc.enabled else 'none')}"
            for svc in services)
        beat = next((svc for svc in services if svc.is_heartbeat), None)  # by Id
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
