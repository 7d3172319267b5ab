"""Hyper-V's PowerShell module over SSH: typed answers for what hvlab asks.

Each method is one script (see powershell.py).  Failures: a PowerShell error
is an InfraError quoting the cmdlet and its message; a host that does not
answer is the SSH layer's InfraError.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvlab import cancel
from hvlab.errors import InfraError
from hvlab.hosts.hyperv import powershell as ps
from hvlab.ssh import SshSession

SERIAL_DIR = "C:\\ProgramData\\hvlab"


@dataclass(frozen=True)
class VmInfo:
    name: str
    state: str  # Running | Off | Saved | Paused | Starting | ...
    generation: int
    version: str  # configuration version, e.g. "10.0"
    vm_id: str


@dataclass(frozen=True)
class HostFacts:
    windows_build: str
    windows_caption: str
    hyperv_module: str  # the module's version; "" when it is not installed


@dataclass(frozen=True)
class IntegrationService:
    name: str
    enabled: bool
    status: str  # PrimaryStatusDescription: OK | No Contact | Lost Communication | ...


class PowerShellError(InfraError):
    def __init__(self, host: str, what: str, error: ps.PsError) -> None:
        super().__init__(f"Hyper-V host {host}: {what} failed: {error.describe()}")
        self.error = error


def pipe_name(vm: str) -> str:
    return "hvlab-" + re.sub(r"[^A-Za-z0-9_.-]", "_", vm)


def serial_file(vm: str) -> str:
    return f"{SERIAL_DIR}\\{pipe_name(vm)}-com1.log"


# The serial reader runs detached on the host (Win32_Process.Create: Windows
# OpenSSH ends every process of the session's job object when the session
# closes).  It copies COM1's pipe to a file, flushing as it goes, until the
# VM turns off and the pipe closes.
READER = """\
$ErrorActionPreference = 'Stop'
$pipe = New-Object System.IO.Pipes.NamedPipeClientStream('.', {pipe}, 'In')
$pipe.Connect(120000)
$out = [System.IO.File]::Open({file}, 'Append', 'Write', 'ReadWrite')
$buf = New-Object byte[] 4096
while (($n = $pipe.Read($buf, 0, $buf.Length)) -gt 0) {{ $out.Write($buf, 0, $n); $out.Flush() }}
$out.Close()
"""


class HypervClient:
    def __init__(self, session: SshSession, host: str, vm: str, log: Path | None = None,
                 timeout: float = 300) -> None:
        self.session = session
        self.host = host
        self.vm = vm
        self.log = log
        self.timeout = timeout

    def call(self, what: str, body: str, values: dict[str, str | int] | None = None,
             timeout: float | None = None, logged: bool = True) -> Any:
        """Run one script; its JSON answer, or a PowerShellError."""
        text = ps.script(body, {"vmName": self.vm, **(values or {})})
        shown = f"powershell -EncodedCommand <{what}: {' '.join(body.split())[:160]}>"
        result = self.session.run_command(ps.command_line(text), ("powershell", what), shown,
                                          timeout=timeout or self.timeout,
                                          log=self.log if logged else None,
                                          tail_bytes=1 << 28)
        if result.timed_out:
            raise InfraError(f"Hyper-V host {self.host}: {what} timed out after "
                             f"{timeout or self.timeout:.0f} s")
        if result.dropped:
            raise InfraError(f"Hyper-V host {self.host}: connection dropped during {what}")
        if result.exit_status != 0:
            raise PowerShellError(self.host, what, ps.parse_error(result.stderr))
        stdout = result.stdout
        try:
            return ps.parse_json(stdout)
        except ValueError:
            raise InfraError(f"Hyper-V host {self.host}: {what}: the answer is not JSON: "
                             f"{stdout.strip()[:200]!r}") from None

    # -- facts -------------------------------------------------------------------
    def host_facts(self) -> HostFacts:
        data = self.call("host facts", """\
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$mod = Get-Module -ListAvailable -Name Hyper-V
[pscustomobject]@{
    Build = [string]$os.BuildNumber; Caption = [string]$os.Caption
    HyperV = [string]$mod.Version
} | ConvertTo-Json -Compress
""")
        return HostFacts(str(data.get("Build", "")), str(data.get("Caption", "")),
                         str(data.get("HyperV") or ""))

    def vm_info(self) -> VmInfo:
        data = self.call("Get-VM", """\
$v = Get-VM -Name $vmName
[pscustomobject]@{
    Name = $v.Name; State = [string]$v.State; Generation = $v.Generation
    Version = [string]$v.Version; Id = [string]$v.Id
} | ConvertTo-Json -Compress
""")
        return VmInfo(str(data["Name"]), str(data["State"]), int(data["Generation"]),
                      str(data["Version"]), str(data.get("Id", "")))

    def secure_boot(self) -> str:
        data = self.call("Get-VMFirmware", """\
$fw = Get-VMFirmware -VMName $vmName
[pscustomobject]@{SecureBoot = [string]$fw.SecureBoot} | ConvertTo-Json -Compress
""")
        return str(data["SecureBoot"])

    def addresses(self) -> list[str]:
        data = self.call("Get-VMNetworkAdapter", """\
Get-VMNetworkAdapter -VMName $vmName |
    Select-Object Name,MacAddress,IPAddresses | ConvertTo-Json -Compress
""", timeout=60)
        found: list[str] = []
        for adapter in ps.as_list(data):
            found += [str(a) for a in ps.as_list(adapter.get("IPAddresses"))]
        return found

    def integration_services(self) -> list[IntegrationService]:
        data = self.call("Get-VMIntegrationService", """\
Get-VMIntegrationService -VMName $vmName |
    Select-Object Name,Enabled,PrimaryStatusDescription | ConvertTo-Json -Compress
""")
        return [IntegrationService(str(s.get("Name", "")), bool(s.get("Enabled")),
                                   str(s.get("PrimaryStatusDescription") or ""))
                for s in ps.as_list(data)]

    # -- actions -----------------------------------------------------------------
    def start(self) -> None:
        self.call("Start-VM", "Start-VM -Name $vmName")

    def turn_off(self) -> None:
        """Power off at once (a hung guest, or the end of a run)."""
        self.call("Stop-VM -TurnOff", "Stop-VM -Name $vmName -TurnOff -Force")

    def restore(self, checkpoint: str) -> None:
        self.call("Restore-VMCheckpoint",
                  "Restore-VMCheckpoint -VMName $vmName -Name $checkpoint -Confirm:$false",
                  {"checkpoint": checkpoint}, timeout=900)

    def set_secure_boot(self, on: bool) -> None:
        """Off, or On with the template Linux guests need: the default template
        (MicrosoftWindows) trusts only Windows' boot loader, so a Linux shim signed
        by Microsoft's UEFI CA would not start."""
        if on:
            self.call("Set-VMFirmware", "Set-VMFirmware -VMName $vmName -EnableSecureBoot On "
                      "-SecureBootTemplate $template",
                      {"template": "MicrosoftUEFICertificateAuthority"})
        else:
            self.call("Set-VMFirmware", "Set-VMFirmware -VMName $vmName -EnableSecureBoot Off")

    def first_ipv4(self) -> str | None:
        """The routable IPv4 address the VM reports now, if any (no waiting)."""
        return next((a for a in self.addresses() if _routable_ipv4(a)), None)

    def attach_serial(self) -> str:
        """COM1 to a named pipe (the VM must be off on some versions; hvlab sets
        it before Start-VM).  Returns the pipe path."""
        pipe = f"\\\\.\\pipe\\{pipe_name(self.vm)}"
        self.call("Set-VMComPort", "Set-VMComPort -VMName $vmName -Number 1 -Path $pipe",
                  {"pipe": pipe})
        return pipe

    def start_serial_reader(self) -> int:
        """Start the detached copier of COM1 into serial_file(); its process id."""
        reader = READER.format(pipe=ps.quote(pipe_name(self.vm)),
                               file=ps.quote(serial_file(self.vm)))
        data = self.call("serial reader", """\
New-Item -ItemType Directory -Force -Path $dir | Out-Null
$p = Invoke-CimMethod -ClassName Win32_Process -MethodName Create `
    -Arguments @{CommandLine = $reader}
[pscustomobject]@{ProcessId = $p.ProcessId; ReturnValue = $p.ReturnValue} | ConvertTo-Json -Compress
""", {"dir": SERIAL_DIR, "reader": ps.command_line(reader)})
        if int(data.get("ReturnValue", 1)) != 0:
            raise InfraError(f"Hyper-V host {self.host}: starting the serial reader failed "
                             f"(Win32_Process.Create returned {data.get('ReturnValue')})")
        return int(data["ProcessId"])

    def clear_serial(self) -> None:
        self.call("serial log reset", """\
New-Item -ItemType Directory -Force -Path $dir | Out-Null
Set-Content -LiteralPath $file -Value $null
""", {"dir": SERIAL_DIR, "file": serial_file(self.vm)})

    def read_serial(self) -> bytes:
        """The serial log so far (empty when none was written)."""
        data = self.call("serial log", """\
$item = Get-Item -LiteralPath $file
[pscustomobject]@{
    Length = $item.Length
    Data = [Convert]::ToBase64String([IO.File]::ReadAllBytes($file))
} | ConvertTo-Json -Compress
""", {"file": serial_file(self.vm)}, timeout=300, logged=False)  # it lands in its own log
        return base64.b64decode(str(data.get("Data") or ""))

    # -- waiting -----------------------------------------------------------------
    def wait_ipv4(self, timeout: float, alive: float = 2.0) -> str:
        """The VM's first routable IPv4 address, as the guest's KVP daemon reports it."""
        deadline = time.monotonic() + timeout
        while True:
            for address in self.addresses():
                if _routable_ipv4(address):
                    return address
            if time.monotonic() + alive > deadline:
                raise TimeoutError
            cancel.sleep(alive)


def _routable_ipv4(address: str) -> bool:
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return False
    return not address.startswith(("169.254.", "127.", "0."))
