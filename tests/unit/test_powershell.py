"""PowerShell scripts as hvlab sends them, and the simulator's strictness (it must
fail where Windows fails, or the integration tests prove nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hvlab.hosts.hyperv import powershell as ps
from hvlab.hosts.hyperv.client import READER, HypervClient, pipe_name, serial_file
from hvlab.ssh import RemoteResult
from tests import hyperv_sim as sim

pytestmark = pytest.mark.unit


def test_encoded_command_is_base64_of_utf16le() -> None:
    text = "Get-VM -Name 'Ünïcode – VM'"
    line = ps.command_line(text)
    assert line.startswith("powershell -NoProfile -NonInteractive -EncodedCommand ")
    encoded = line.split()[-1]
    assert ps.decode(encoded) == text
    # what Windows documents: [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes(s))
    assert ps.encode("dir") == "ZABpAHIA"


def test_quote_doubles_every_kind_of_single_quote() -> None:
    assert ps.quote("it's") == "'it''s'"
    assert ps.quote("a\u2019b") == "'a\u2019\u2019b'"
    assert ps.quote("$(Stop-VM x)") == "'$(Stop-VM x)'"


def test_script_binds_values_and_wraps_in_try_catch() -> None:
    text = ps.script("Get-VM -Name $vmName", {"vmName": "x", "n": 3})
    assert text.startswith(ps.PREAMBLE)
    assert "    $vmName = 'x'\n" in text and "    $n = 3\n" in text
    assert "} catch {" in text
    with pytest.raises(ValueError):
        ps.script("", {"bad name": "x"})


def test_parse_error_forms() -> None:
    record = ps.parse_error('{"hvlab_error":"Hyper-V was unable to find a virtual machine '
                            'with name \\"x\\".","command":"Get-VM","id":"InvalidParameter"}\n')
    assert record.describe() == 'Get-VM: Hyper-V was unable to find a virtual machine with ' \
        'name "x".'
    text = ("Start-VM : 'x' failed to start.\r\n    + CategoryInfo          : "
            "InvalidOperation\r\n    + FullyQualifiedErrorId : InvalidState,Microsoft\r\n")
    plain = ps.parse_error(text)
    assert plain.command == "Start-VM" and plain.error_id == "InvalidState,Microsoft"
    clixml = ('#< CLIXML\r\n<Objs><S S="Error">Get-VM : boom_x000D__x000A_</S>'
              '<S S="Error">more_x000D__x000A_</S></Objs>')
    assert ps.parse_error(clixml).describe() == "Get-VM: boom"
    assert ps.parse_error("").message.startswith("no error text")


def test_as_list_undoes_convertto_json_unrolling() -> None:
    assert ps.as_list(None) == [] and ps.as_list({"a": 1}) == [{"a": 1}]
    assert ps.as_list([1, 2]) == [1, 2]


# -- the simulator, in process ----------------------------------------------------------
@pytest.fixture
def state(tmp_path: Path) -> Path:
    vm = sim.new_vm("/k", "/i", "10.9.9.2", "", "ready", generation=2)
    gen1 = sim.new_vm("/k", "/i", "10.9.9.3", "", "ready", generation=1)
    (tmp_path / "state.json").write_text(json.dumps({
        "host": {"build": "17763", "caption": "Microsoft Windows Server 2019", "hyperv": "2.0"},
        "vms": {"vm1": vm, "old": gen1}}))
    return tmp_path


def run(state: Path, body: str, values: dict[str, str | int] | None = None,
        raw: str | None = None) -> tuple[str, str, int]:
    s = sim.State(state)
    try:
        out = sim.run_script(s, raw if raw is not None else ps.script(body, values))
        s.save()
        return out
    finally:
        s.lock.close()


def test_sim_get_vm_answers_in_hyperv_shape(state: Path) -> None:
    out, err, code = run(state, "Get-VM -Name $vmName | Select-Object Name,Generation | "
                         "ConvertTo-Json -Compress", {"vmName": "vm1"})
    assert (code, err) == (0, "")
    assert json.loads(out) == {"Name": "vm1", "Generation": 2}


def test_sim_error_record_and_exit_code(state: Path) -> None:
    out, err, code = run(state, "Start-VM -Name $vmName", {"vmName": "nope"})
    assert code == 1 and out == ""
    error = ps.parse_error(err)
    assert error.command == "Start-VM"
    assert error.message == 'Hyper-V was unable to find a virtual machine with name "nope".'


def test_sim_quoted_values_are_data_not_code(state: Path) -> None:
    evil = "vm1'; Start-VM -Name 'vm1"
    _out, err, code = run(state, "Get-VM -Name $vmName", {"vmName": evil})
    assert code == 1
    assert ps.parse_error(err).message == f'Hyper-V was unable to find a virtual machine ' \
        f'with name "{evil}".'
    assert sim.State(state).data["vms"]["vm1"]["state"] == "Off"


def test_sim_spliced_values_break_as_on_windows(state: Path) -> None:
    # a value spliced into code instead of bound as a literal is a parse error
    _out, err, code = run(state, "", raw=ps.PREAMBLE + "Get-VM -Name 'a'b'\n")
    assert code == 1 and "ParserError" in err


def test_sim_unknown_cmdlet_and_parameter(state: Path) -> None:
    _o, err, code = run(state, "Remove-VM -Name $vmName", {"vmName": "vm1"})
    assert code == 1 and "'Remove-VM' is not recognized" in err
    _o, err, code = run(state, "Stop-VM -Name $vmName -Kill", {"vmName": "vm1"})
    assert code == 1 and "parameter name 'kill'" in err


def test_sim_secure_boot_change_needs_the_vm_off(state: Path) -> None:
    def set_state(value: str) -> None:
        s = sim.State(state)
        s.data["vms"]["vm1"]["state"] = value
        s.data["vms"]["vm1"]["pid"] = 1  # init: alive
        s.save()
        s.lock.close()

    set_state("Running")
    _o, err, code = run(state, "Set-VMFirmware -VMName $vmName -EnableSecureBoot Off",
                        {"vmName": "vm1"})
    assert code == 1 and "cannot be performed while the virtual machine is in its current " \
        "state" in err
    _o, err, code = run(state, "Get-VMFirmware -VMName $vmName", {"vmName": "old"})
    assert code == 1 and "Generation 1" in err


def test_sim_without_stop_preference_errors_do_not_stop_the_script(state: Path) -> None:
    raw = ("Get-VM -Name 'nope'\n"
           "[pscustomobject]@{After = 'yes'} | ConvertTo-Json -Compress\n")
    out, err, code = run(state, "", raw=raw)
    assert json.loads(out) == {"After": "yes"}  # the script went on, as Windows does
    assert "Get-VM : Hyper-V was unable to find" in err and code == 0


def test_sim_progress_records_arrive_as_clixml_without_the_preference(state: Path) -> None:
    raw = "$ErrorActionPreference = 'Stop'\nStart-VM -Name 'vm1'\n"
    s = sim.State(state)
    s.data["vms"]["vm1"]["kernel"] = "/nonexistent"  # QEMU exits at once; fine here
    s.save()
    s.lock.close()
    _o, err, _c = run(state, "", raw=raw)
    assert err.startswith("#< CLIXML")
    sim.cleanup(state)


class _SimSession:
    """Runs hvlab's command lines through the simulator's command-line handling."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.lines: list[str] = []

    def run_command(self, command: str, argv: tuple[str, ...], shown: str,
                    undecodable: str = "backslashreplace", **_: Any) -> RemoteResult:
        import contextlib
        import io
        import os

        self.lines.append(command)
        raw_out, raw_err = io.BytesIO(), io.BytesIO()  # bytes, as SSH carries them
        out = io.TextIOWrapper(raw_out, encoding="utf-8", write_through=True)
        err = io.TextIOWrapper(raw_err, encoding="utf-8", write_through=True)
        os.environ["SSH_ORIGINAL_COMMAND"] = command
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = sim.main(["--state", str(self.state)])
        finally:
            del os.environ["SSH_ORIGINAL_COMMAND"]
        stdout = raw_out.getvalue().decode("utf-8", undecodable)
        stderr = raw_err.getvalue().decode("utf-8", undecodable)
        return RemoteResult(argv, code, 0.0, stdout + stderr, stderr, stdout=stdout)


def test_client_reads_typed_answers_through_the_command_line(state: Path) -> None:
    session = _SimSession(state)
    client = HypervClient(session, "win", "vm1")  # type: ignore[arg-type]
    facts = client.host_facts()
    assert (facts.windows_build, facts.hyperv_module) == ("17763", "2.0")
    info = client.vm_info()
    assert (info.name, info.state, info.generation) == ("vm1", "Off", 2)
    assert client.secure_boot() == "On"
    client.set_secure_boot(False)
    assert client.secure_boot() == "Off"
    client.set_secure_boot(True)  # Linux guests need the UEFI CA template
    vm = sim.State(state).data["vms"]["vm1"]
    assert (vm["secure_boot"], vm["secure_boot_template"]) == \
        ("On", "MicrosoftUEFICertificateAuthority")
    assert client.addresses() == []  # not running: no KVP data
    services = client.integration_services()
    assert {s.name for s in services} >= {"Heartbeat", "Key-Value Pair Exchange"}
    assert client.attach_serial() == f"\\\\.\\pipe\\{pipe_name('vm1')}"
    client.clear_serial()
    assert client.read_serial() == b""
    assert all(line.startswith("powershell -NoProfile -NonInteractive -EncodedCommand ")
               for line in session.lines)


def test_serial_reader_script_names_its_pipe_and_file() -> None:
    text = READER.format(pipe=ps.quote(pipe_name("a b")), file=ps.quote(serial_file("a b")),
                         vm_id="'0000'", marker="hvlab: serial reader connected", first_wait=300)
    assert "NamedPipeClientStream('.', 'hvlab-a_b', 'In')" in text
    assert "'C:\\ProgramData\\hvlab\\hvlab-a_b-com1.log'" in text
    assert sim.READER_RE.search(text)
