"""The hyperv client against a simulator as strict as Windows in the places where
a first run on a real host breaks (tests/HYPERV_SIMULATOR.md says what each
behaviour follows).  In process: hvlab's real command lines through the
simulator's command-line handling, no SSH."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from hvlab.errors import InfraError
from hvlab.hosts.hyperv import powershell as ps
from hvlab.hosts.hyperv.client import (
    MARKER,
    READER,
    READER_FIRST_WAIT,
    HypervClient,
    PowerShellError,
    serial_file,
)
from hvlab.hosts.hyperv.flow import _heartbeat
from hvlab.results import Status
from tests import hyperv_sim as sim
from tests.unit.test_powershell import _SimSession, run

pytestmark = pytest.mark.unit


@pytest.fixture
def state(tmp_path: Path) -> Path:
    vm = sim.new_vm("/k", "/i", "10.9.9.2", "", "hvlab-ready", generation=2)
    vm["checkpoints"] = {"clean": {"kernel": "/k", "initrd": "/i"}}
    (tmp_path / "state.json").write_text(json.dumps({
        "host": {"build": "20348", "caption": "Microsoft Windows Server 2022", "hyperv": "2.0"},
        "vms": {"vm1": vm}}))
    return tmp_path


def edit(state: Path, change) -> None:  # type: ignore[no-untyped-def]
    s = sim.State(state)
    change(s.data)
    s.save()
    s.lock.close()


def client(state: Path, vm: str = "vm1", log: Path | None = None) -> HypervClient:
    return HypervClient(_SimSession(state), "win", vm, log)  # type: ignore[arg-type]


def running(state: Path, console: str = "") -> None:
    """The VM runs (this process stands in for QEMU) with ``console`` on COM1."""
    def up(d: dict) -> None:  # type: ignore[type-arg]
        d["vms"]["vm1"].update(state="Running", pid=os.getpid())
    edit(state, up)
    folder = state / "vms" / "vm1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "com1.out").write_text(console)


# 1 -- the serial log is read while the detached reader holds it open for writing
def test_serial_log_is_read_while_the_reader_writes_it(state: Path) -> None:
    target = sim.State(state).path(serial_file("vm1"))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"Linux version 6.1\r\n")
    target.with_name(target.name + ".writer").write_text(str(os.getpid()))  # held open
    # as Windows: ReadAllBytes (FileShare.Read) is refused while another process writes
    _o, err, code = run(state, "", raw=ps.script(
        "[Convert]::ToBase64String([IO.File]::ReadAllBytes($f))", {"f": serial_file("vm1")}))
    assert code == 1 and "being used by another process" in err
    assert client(state).read_serial() == b"Linux version 6.1\r\n"


# 2 -- the reader reconnects after every end of file, in short attempts, and says so
def test_the_reader_reconnects_until_the_vm_is_off_and_leaves_a_marker() -> None:
    text = READER.format(pipe="'hvlab-vm1'", file=ps.quote(serial_file("vm1")),
                         vm_id="'id'", marker=MARKER, first_wait=READER_FIRST_WAIT)
    # it reconnects, and was started before the VM: it waits for the first pipe
    assert sim.reader_shape(text) == (True, MARKER, READER_FIRST_WAIT, False)
    one_shot = ("$pipe = New-Object System.IO.Pipes.NamedPipeClientStream('.', 'p', 'In')\n"
                "$pipe.Connect(120000)\n$out = [System.IO.File]::Open('C:\\x', 'Append', "
                "'Write', 'ReadWrite')\n$out.Flush()\n")
    # it stops at the first end of file, and waits only as long as its one Connect
    assert sim.reader_shape(one_shot) == (False, "", 120.0, False)


def _reader_before_the_vm(tmp_path: Path, shape: sim.ReaderShape) -> str:
    """Start ``shape``'s reader while the VM is off; the VM starts 2 s later.
    What the reader copied."""
    import threading

    root, target = tmp_path, tmp_path / "serial.log"
    folder = root / "vms" / "vm1"
    folder.mkdir(parents=True)
    (root / "state.json").write_text(json.dumps({"vms": {"vm1": {"state": "Off"}}}))

    def start_vm() -> None:  # Start-VM, 2 s after the reader (an SSH call, Hyper-V's start)
        time.sleep(2)
        (folder / "com1.1.out").write_text("Linux version 6.1.0-hvlab\n")
        (folder / "com1.1.closed").write_text("0")
        (root / "state.json").write_text(json.dumps({"vms": {"vm1": {
            "pid": os.getpid(), "state": "Running"}}}))
        time.sleep(1.5)  # then it is turned off: a reader that connected stops
        (root / "state.json").write_text(json.dumps({"vms": {"vm1": {"state": "Off"}}}))

    starter = threading.Thread(target=start_vm)
    starter.start()
    sim.copy_serial(root, "vm1", target, shape.reconnect, shape.marker, shape.first_wait,
                    shape.stops_while_off)
    starter.join()
    return target.read_bytes().decode() if target.exists() else ""


def test_a_reader_started_before_the_vm_waits_for_its_pipe(tmp_path: Path) -> None:
    """There is no pipe until the VM runs, and the reader is started while it is
    off: a reader that checks the VM's state after its first failed attempt
    ends before the VM starts, as it would on Windows; hvlab's waits."""
    hvlab_reader = sim.reader_shape(READER.format(
        pipe="'hvlab-vm1'", file=ps.quote(serial_file("vm1")), vm_id="'id'", marker=MARKER,
        first_wait=READER_FIRST_WAIT))
    assert hvlab_reader is not None
    # the shape before the fix: the Off check right after the first failed Connect
    eager = hvlab_reader._replace(stops_while_off=True)
    assert _reader_before_the_vm(tmp_path / "eager", eager) == ""
    got = _reader_before_the_vm(tmp_path / "hvlab", hvlab_reader)
    assert got.split("\r\n")[1:] == [f"{MARKER} (1)", "Linux version 6.1.0-hvlab\n"]


def test_the_simulated_pipe_follows_each_run_and_a_one_shot_reader_stops(
        tmp_path: Path) -> None:
    root = tmp_path
    folder = root / "vms" / "vm1"
    folder.mkdir(parents=True)
    (folder / "com1.1.out").write_text("Linux version A\n")
    (folder / "com1.1.closed").write_text("0")
    (folder / "com1.2.out").write_text("Linux version B\n")
    (folder / "com1.2.closed").write_text("0")
    (root / "state.json").write_text(json.dumps({"vms": {"vm1": {"pid": os.getpid(),
                                                                  "state": "Running"}}}))
    once, again = tmp_path / "once.log", tmp_path / "again.log"
    sim.copy_serial(root, "vm1", once, False, "")
    assert once.read_text() == "Linux version A\n"  # ended with the first run
    (root / "state.json").write_text(json.dumps({"vms": {"vm1": {"pid": os.getpid(),
                                                                  "state": "Off"}}}))
    sim.copy_serial(root, "vm1", again, True, MARKER)
    text = again.read_text()
    assert "Linux version A" in text and "Linux version B" in text
    assert text.count(MARKER) == 2
    assert not once.with_name("once.log.writer").exists()  # the file is released


# 3 -- warnings on stdout do not break the answer; a VM already off is left alone
def test_warnings_on_stdout_do_not_break_the_json_answer(state: Path, tmp_path: Path) -> None:
    log = tmp_path / "hv.log"
    c = client(state, log=log)
    c.vm_id()
    out, _e, _c = run(state, "", raw="$vmName = 'vm1'\nStop-VM -Name $vmName -TurnOff\n"
                      "[pscustomobject]@{A = 1} | ConvertTo-Json -Compress\n")
    assert out.startswith("WARNING: The virtual machine is already in the specified state.")
    assert ps.parse_json(out) == {"A": 1}  # the JSON line, not the warning
    answer = c.call("both", "Stop-VM -VM (Get-VM -Id $vmId) -TurnOff -Force\n"
                    "[pscustomobject]@{A = 1} | ConvertTo-Json -Compress")
    assert answer == {"A": 1}  # $WarningPreference silences it
    c.turn_off()  # already off: not even asked
    stops = [x for x in sim.State(state).data["calls"] if x["cmdlet"] == "Stop-VM"]
    assert len(stops) == 2  # the raw script's and the "both" call's, not turn_off's


# 4 -- a standard checkpoint restores to Saved: its saved state is removed
def test_a_restored_standard_checkpoint_does_not_resume_the_old_guest(state: Path) -> None:
    note = client(state).restore("clean")
    data = sim.State(state).data
    assert data["vms"]["vm1"]["state"] == "Off"
    assert "saved state removed" in note
    assert [x["cmdlet"] for x in data["calls"]][-2:] == ["Get-VM", "Remove-VMSavedState"]
    _o, err, code = run(state, "", raw=ps.script(  # the simulator: Saved, as Windows
        "Get-VMCheckpoint -VM (Get-VM -Name $vmName) -Name 'clean' | "
        "Restore-VMCheckpoint -Confirm:$false\n"
        "Set-VMComPort -VM (Get-VM -Name $vmName) -Number 1 -Path '\\\\.\\pipe\\x'",
        {"vmName": "vm1"}))
    assert code == 1 and "current state" in err  # Saved: the COM port cannot change
    assert sim.State(state).data["vms"]["vm1"]["state"] == "Saved"


# 5 -- VM names are wildcards and need not be unique: resolved once to one Id
def test_a_name_shared_by_two_vms_is_refused_before_anything_is_done(state: Path) -> None:
    def twin(d: dict) -> None:  # type: ignore[type-arg]
        d["vms"]["vm1-copy"] = dict(d["vms"]["vm1"], id="aaaa-twin", name="vm1")
    edit(state, twin)
    with pytest.raises(InfraError, match="'vm1' names 2 VMs"):
        client(state).vm_info()
    with pytest.raises(InfraError, match="no VM is named 'vm\\*'"):  # a name, not a pattern
        client(state, "vm*").start()
    assert not [x for x in sim.State(state).data.get("touched", [])
                if x["cmdlet"] != "Get-VM"]  # nothing but Get-VM reached a VM
    out, _e, _c = run(state, "@(Get-VM -Name $vmName) | ConvertTo-Json -Compress",
                      {"vmName": "vm?"})
    assert len(json.loads(out)) == 2  # as Windows: the wildcard matches both


def test_a_name_with_wildcard_characters_finds_that_vm_only(state: Path) -> None:
    """``Get-VM -Name 'lab[1]'`` is a pattern that matches lab1, never lab[1]
    itself: hvlab compares the name as written."""
    def labs(d: dict) -> None:  # type: ignore[type-arg]
        d["vms"]["lab1"] = dict(d["vms"]["vm1"], id="1111-lab1")
        d["vms"]["bracketed"] = dict(d["vms"]["vm1"], id="2222-lab-bracket", name="lab[1]")
    edit(state, labs)
    out, _e, _c = run(state, "@(Get-VM -Name $vmName) | ConvertTo-Json -Compress",
                      {"vmName": "lab[1]"})
    assert json.loads(out)["Name"] == "lab1"  # as Windows: a pattern (one match, unrolled)
    assert client(state, "lab[1]").vm_id() == "2222-lab-bracket"
    assert client(state, "LAB1").vm_id() == "1111-lab1"  # Hyper-V's names ignore case


def test_every_action_names_the_vm_by_its_id(state: Path) -> None:
    c = client(state)
    c.set_secure_boot(False)
    c.attach_serial()
    c.start()
    scripts = (state / "scripts.log").read_text() if (state / "scripts.log").exists() else ""
    calls = sim.State(state).data["calls"]
    acting = [x for x in calls if x["cmdlet"] in ("Start-VM", "Set-VMFirmware",
                                                  "Set-VMComPort")]
    assert acting and all("name" not in x["params"] and "vmname" not in x["params"]
                          for x in acting), acting
    assert "Get-VM -Name" not in scripts.replace("@(Get-VM -Name", "")
    sim.cleanup(state)


# 6 -- PowerShell as the SSH default shell wraps stderr lines
def test_the_error_record_is_found_when_powershell_is_the_default_shell(state: Path) -> None:
    edit(state, lambda d: d["host"].update(default_shell="powershell"))
    with pytest.raises(PowerShellError) as err:
        client(state, "no-such-vm").call("start", "Start-VM -Name $vmName")
    assert err.value.error.describe() == \
        'Start-VM: Hyper-V was unable to find a virtual machine with name "no-such-vm".'
    line = ('powershell : {"hvlab_error":"boom","command":"Start-VM","id":"X"}\r\n'
            "    + CategoryInfo          : NotSpecified: (:String) [], RemoteException\r\n")
    assert ps.parse_error(line).describe() == "Start-VM: boom"


# 7 -- localised hosts: heartbeat by the service's Id and the status enum
def test_heartbeat_on_a_localised_host_and_lost_communication(state: Path) -> None:
    edit(state, lambda d: d["host"].update(language="de-DE"))
    running(state, "Linux version 6.1\nhvlab-ready\n")
    c = client(state)
    services = c.integration_services()
    assert "Takt" in {s.name for s in services}  # no "Heartbeat" on this host
    # the answer came in the host's code page (cp850: 'ü' is the byte 0x81), and
    # still parses as JSON
    assert any(s.name.startswith("Austausch von Schl") for s in services)
    props: dict[str, str] = {}
    case = _heartbeat(c, props, timeout=0)
    assert case.status is Status.PASS, case.message
    edit(state, lambda d: d["vms"]["vm1"].update(heartbeat="lost"))
    lost = _heartbeat(c, props, timeout=0)
    assert lost.status is Status.FAIL and "'Lost Communication'" in lost.message
    assert "Takt=Lost Communication" in props["integration_services"]


def test_the_simulator_refuses_com_port_and_firmware_changes_while_running(
        state: Path) -> None:
    running(state)
    for body in ("Set-VMComPort -VMName $vmName -Number 1 -Path '\\\\.\\pipe\\x'",
                 "Set-VMFirmware -VMName $vmName -EnableSecureBoot Off"):
        _o, err, code = run(state, body, {"vmName": "vm1"})
        assert code == 1 and "current state" in err, body


class _Guest:
    """The guest's side of the time check: its own clock, ``skew`` seconds off."""

    def __init__(self, skew: float = 0.0, text: str = "", vmbus: bool = True) -> None:
        self.skew, self.text, self.vmbus = skew, text, vmbus

    def run(self, argv: list[str], timeout: float = 0) -> object:
        import time

        from hvlab.ssh import RemoteResult

        if argv[0] == "test":  # a Hyper-V guest: it has a VMBus
            return RemoteResult(tuple(argv), 0 if self.vmbus else 1, 0.0, "", "")
        out = self.text or f"{time.time() + self.skew:.6f}\n"
        return RemoteResult(tuple(argv), 0, 0.0, out, "", stdout=out)


def test_time_sync_against_the_windows_host_clock(state: Path) -> None:
    from hvlab.hosts.hyperv.flow import _time_sync

    c = client(state)
    ok = _time_sync(c, _Guest())  # type: ignore[arg-type]
    assert ok.status is Status.PASS and abs(float(ok.properties["time_offset_s"])) < 1
    edit(state, lambda d: d["host"].update(clock_skew_ms=-30000))  # the host is 30 s behind
    late = _time_sync(c, _Guest())  # type: ignore[arg-type]
    assert late.status is Status.FAIL and "+30." in late.message
    coarse = _time_sync(c, _Guest(text="1700000000.%N\n"))  # busybox without %N
    assert coarse.status is Status.FAIL  # its clock is 2023: far from the host's
    off = _time_sync(c, _Guest(vmbus=False))  # type: ignore[arg-type]
    assert off.status is Status.SKIP and "no VMBus" in off.message


def test_the_serial_reader_fits_cmd_exe_and_the_simulator_enforces_the_limit(
        state: Path) -> None:
    session = _SimSession(state)
    c = HypervClient(session, "win", "vm1")  # type: ignore[arg-type]
    c.attach_serial()
    assert c.start_serial_reader() > 0
    assert max(len(line) for line in session.lines) <= 8191  # cmd.exe's limit
    sim.cleanup(state)
    _o = session.run_command("powershell -NoProfile -NonInteractive -EncodedCommand "
                             + "A" * 8200, ("powershell",), "")
    assert _o.exit_status == 1 and "command line is too long" in _o.stderr


def test_a_guest_that_never_answers_ssh_names_the_console_tail(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """The error a user reads says what the VM printed last, not only 'refused'."""
    from hvlab.hosts.hyperv import flow
    from hvlab.model import HostKind, HostSpec, HypervHost, SshEndpoint

    class Client:
        def wait_ipv4(self, _timeout: float) -> str:
            return "192.0.2.9"

        def read_serial(self) -> bytes:
            return b"Linux version 6.1\r\n\r\nsshd: no hostkeys available -- exiting.\r\n"

    class Refusing:
        def connect(self) -> None:
            raise InfraError("unreachable: Unable to connect to port 22 on 192.0.2.9")

        def close(self) -> None:
            pass

    hv = HypervHost(SshEndpoint("192.0.2.1"), "vm1", SshEndpoint("0.0.0.0"))
    host = HostSpec("hv", tmp_path / "hv.yaml", HostKind.HYPERV, hv, boot_timeout=1)
    env = flow.HostEnv(None, None, lambda _text: None)  # type: ignore[arg-type]
    vm = flow._Vm(env, host, hv, Client(), tmp_path / "console.log")  # type: ignore[arg-type]
    monkeypatch.setattr(vm, "guest", lambda address, win: Refusing())
    with pytest.raises(InfraError) as caught:
        vm.wait_guest(None, 0.2)  # type: ignore[arg-type]
    text = str(caught.value)
    assert "did not answer SSH within 0 s: unreachable" in text
    assert text.endswith("the console ends: Linux version 6.1 | sshd: no hostkeys available "
                         "-- exiting.")


# A disk VM (tests/HYPERV_SIMULATOR.md): a checkpoint takes its disk back
def test_a_disk_vm_checkpoint_takes_the_disk_and_firmware_variables_back(tmp_path: Path
                                                                         ) -> None:
    vms = tmp_path / "vms" / "vm1"
    vms.mkdir(parents=True)
    disk, empty = vms / "disk.qcow2", tmp_path / "empty.qcow2"
    for image in (disk, empty):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "8M"], check=True)
    vm = sim.new_vm("", "", "10.9.9.2", "", "hvlab-vm login:", disk=str(disk),
                    secure_boot="Off")
    store = sim.nvram(vm, "Off")
    vm["checkpoints"] = {"clean": sim.take_checkpoint(vm, "clean")}
    (tmp_path / "state.json").write_text(json.dumps({
        "host": {"build": "20348", "caption": "Microsoft Windows Server 2022", "hyperv": "2.0"},
        "vms": {"vm1": vm}}))
    # what a guest and its firmware write: data on the disk, a boot variable
    subprocess.run(["qemu-io", "-c", "write -P 0xab 0 64k", str(disk)], check=True,
                   capture_output=True)
    store.write_bytes(b"changed")

    def same() -> bool:
        return subprocess.run(["qemu-img", "compare", "-q", str(disk), str(empty)],
                              check=False).returncode == 0

    assert not same()
    note = client(tmp_path).restore("clean")
    assert "restored checkpoint 'clean'" in note
    assert same()
    assert store.read_bytes() == (sim.OVMF / sim.FIRMWARE["Off"][1]).read_bytes()
    # the disk is the VM's own: Start-VM boots it through UEFI, not a kernel
    argv = " ".join(sim.qemu_argv(vm, tmp_path / "com1.out"))
    assert f"file={disk},format=qcow2" in argv and "-kernel" not in argv
    assert "OVMF_CODE_4M.fd" in argv and "smm=off" in argv
    # Secure Boot on: OVMF's Secure Boot build with Microsoft's keys (SMM on)
    secure = " ".join(sim.qemu_argv(dict(vm, secure_boot="On"), tmp_path / "com1.out"))
    assert "OVMF_CODE_4M.ms.fd" in secure and "nvram-sbon.fd" in secure and "smm=on" in secure
    # taken while it runs: not simulated, said plainly
    running(tmp_path)
    _o, err, code = run(tmp_path, "", raw=ps.script(
        "Checkpoint-VM -VM (Get-VM -Name $vmName) -SnapshotName 'x'", {"vmName": "vm1"}))
    assert code == 1 and "only while it is off" in err


def test_no_address_with_secure_boot_on_names_secure_boot(state: Path, tmp_path: Path) -> None:
    """A Gen2 VM whose firmware refused the boot loader never reports an address;
    Hyper-V shows why on the VM's screen, not on COM1: the error says to look at
    Secure Boot before the KVP daemon."""
    from hvlab.hosts.hyperv import flow
    from hvlab.model import HostKind, HostSpec, HypervHost, SshEndpoint

    running(state)  # up, but no ready line: no address is ever reported
    hv = HypervHost(SshEndpoint("192.0.2.1"), "vm1", SshEndpoint("0.0.0.0"), ip_timeout=1)
    host = HostSpec("hv", tmp_path / "hv.yaml", HostKind.HYPERV, hv)
    env = flow.HostEnv(None, None, lambda _text: None)  # type: ignore[arg-type]

    def failure(vm_hv: HypervHost) -> str:
        hyperv = client(state)
        hyperv.vm_info()  # the flow's first question: the name resolved to one Id
        vm = flow._Vm(env, host, vm_hv, hyperv, tmp_path / "console.log")
        vm.properties["vm_generation"] = "2"
        with pytest.raises(InfraError) as caught:
            vm.wait_guest(None, 1)  # type: ignore[arg-type]
        return str(caught.value)

    text = failure(hv)  # the simulator's VM has Secure Boot on (Hyper-V's default)
    assert "reported no IPv4 address within ip_timeout (1 s)" in text
    assert "Secure Boot is on" in text and "secure_boot: off" in text
    assert "KVP daemon" in text
    edit(state, lambda d: d["vms"]["vm1"].update(secure_boot="Off"))
    text = failure(hv)
    assert "Secure Boot" not in text and "the usual cause is the guest's KVP daemon" in text
