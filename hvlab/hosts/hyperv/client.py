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
    name: str  # as the host's language says it
    enabled: bool
    status: str  # OK | No Contact | Lost Communication | ... from the enum, not the text
    id: str = ""  # Microsoft:<VM id>\<service GUID>
    description: str = ""  # PrimaryStatusDescription, localised

    @property
    def is_heartbeat(self) -> bool:
        return self.id.upper().endswith(HEARTBEAT_ID) or (not self.id and
                                                          self.name == "Heartbeat")


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
# closes).  It copies COM1's pipe to a file (shared for reading while it
# writes), flushing as it goes.  The pipe closes whenever the VM restarts and
# exists only while the VM runs, and NamedPipeClientStream.Connect spins while
# there is no pipe: so it connects in short attempts, reconnects after every
# end of file, writes a marker line at each connection and stops once the VM
# is off (found by its Id: a name could match several VMs).  It is started
# before Start-VM, while the VM is still off: until its first connection it
# waits for the pipe (up to READER_FIRST_WAIT seconds) instead of stopping.
READER_FIRST_WAIT = 120  # Start-VM follows at once; a failed start leaves it this long
MARKER = "hvlab: serial reader connected"
READER = """\
$ErrorActionPreference = 'Stop'
$out = [System.IO.File]::Open({file}, 'Append', 'Write', 'ReadWrite')
$buf = New-Object byte[] 4096
$n = 0
$clock = [Diagnostics.Stopwatch]::StartNew()
while ($true) {{
    $pipe = New-Object System.IO.Pipes.NamedPipeClientStream('.', {pipe}, 'In')
    try {{ $pipe.Connect(1000) }} catch {{
        $pipe.Dispose()
        if ($n -eq 0) {{
            if ($clock.Elapsed.TotalSeconds -gt {first_wait}) {{ break }}
        }} elseif ((Get-VM -Id {vm_id}).State -eq 'Off') {{ break }}
        Start-Sleep -Milliseconds 500
        continue
    }}
    $n = $n + 1
    $line = [Text.Encoding]::ASCII.GetBytes("`r`n{marker} ($n)`r`n")
    $out.Write($line, 0, $line.Length); $out.Flush()
    while (($got = $pipe.Read($buf, 0, $buf.Length)) -gt 0) {{
        $out.Write($buf, 0, $got); $out.Flush()
    }}
    $pipe.Dispose()
    if ((Get-VM -Id {vm_id}).State -eq 'Off') {{ break }}
}}
$out.Close()
"""

# Heartbeat, by the integration service's Id (the names are localised) and its
# PrimaryOperationalStatus enum (ConvertTo-Json writes the number; the
# description beside it is localised text, for people).
HEARTBEAT_ID = "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47"
OPERATIONAL = {2: "OK", 3: "Degraded", 6: "Error", 7: "Non-Recoverable Error",
               12: "No Contact", 13: "Lost Communication", 15: "Dormant"}


class HypervClient:
    def __init__(self, session: SshSession, host: str, vm: str, log: Path | None = None,
                 timeout: float = 300) -> None:
        self.session = session
        self.host = host
        self.vm = vm
        self.log = log
        self.timeout = timeout
        self._vm_id = ""  # resolved once (vm_id()): every later call names the VM by Id

    def call(self, what: str, body: str, values: dict[str, str | int] | None = None,
             timeout: float | None = None, logged: bool = True) -> Any:
        """Run one script; its JSON answer, or a PowerShellError."""
        bound: dict[str, str | int] = {"vmName": self.vm}
        if self._vm_id:
            bound["vmId"] = self._vm_id
        text = ps.script(body, {**bound, **(values or {})})
        shown = f"powershell -EncodedCommand <{what}: {' '.join(body.split())[:160]}>"
        result = self.session.run_command(ps.command_line(text), ("powershell", what), shown,
                                          timeout=timeout or self.timeout,
                                          log=self.log if logged else None,
                                          tail_bytes=1 << 28,
                                          # a host's code page (cp850, ...) is not UTF-8:
                                          # an escape would be invalid inside JSON
                                          undecodable="replace")
        if result.timed_out:
            raise InfraError(f"Hyper-V host {self.host}: {what} timed out after "
                             f"{timeout or self.timeout:.0f} s")
        if result.dropped:
            raise InfraError(f"Hyper-V host {self.host}: connection dropped during {what}")
        if result.exit_status != 0:
            raise PowerShellError(self.host, what, ps.parse_error(result.stderr))
        stdout = result.stdout
        try:
            answer = ps.parse_json(stdout)
        except ValueError:
            raise InfraError(f"Hyper-V host {self.host}: {what}: the answer is not JSON: "
                             f"{stdout.strip()[:200]!r}") from None
        noise = [line for line in stdout.splitlines() if line.strip() and
                 not line.strip().startswith(("{", "["))]
        if noise and self.log is not None:  # warnings and such, apart from the answer
            with self.log.open("a", encoding="utf-8") as fh:
                fh.write("".join(f"[hvlab] {what} also printed: {line}\n" for line in noise))
        return answer

    # -- the VM, by Id ------------------------------------------------------------
    def vm_id(self) -> str:
        """Resolve the configured name to exactly one VM, once.  ``Get-VM -Name``
        takes wildcards (``* ? [ ]``), so the name is compared as it is written
        (``-eq``, case-insensitive as Hyper-V's names) and a VM called ``lab[1]``
        is found; two VMs can share a name: none or several is an error naming
        them, never an action on every match."""
        if self._vm_id:
            return self._vm_id
        data = self.call("Get-VM", """\
@(Get-VM | Where-Object Name -eq $vmName | Select-Object Name,Id) | ConvertTo-Json -Compress
""")
        found = [v for v in ps.as_list(data) if isinstance(v, dict)]
        if not found:
            raise InfraError(f"Hyper-V host {self.host}: no VM is named '{self.vm}'")
        if len(found) > 1 or str(found[0].get("Name")).lower() != self.vm.lower():
            names = ", ".join(f"{v.get('Name')} ({v.get('Id')})" for v in found)
            raise InfraError(f"Hyper-V host {self.host}: '{self.vm}' names {len(found)} VMs "
                             f"({names}): hvlab needs exactly one; rename the others")
        self._vm_id = str(found[0]["Id"])
        return self._vm_id

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
        self.vm_id()
        data = self.call("Get-VM", """\
$v = Get-VM -Id $vmId
[pscustomobject]@{
    Name = $v.Name; State = [string]$v.State; Generation = $v.Generation
    Version = [string]$v.Version; Id = [string]$v.Id
} | ConvertTo-Json -Compress
""")
        return VmInfo(str(data["Name"]), str(data["State"]), int(data["Generation"]),
                      str(data["Version"]), str(data.get("Id", "")))

    def secure_boot(self) -> str:
        data = self.call("Get-VMFirmware", """\
$fw = Get-VMFirmware -VM (Get-VM -Id $vmId)
[pscustomobject]@{SecureBoot = [string]$fw.SecureBoot} | ConvertTo-Json -Compress
""")
        return str(data["SecureBoot"])

    def addresses(self) -> list[str]:
        data = self.call("Get-VMNetworkAdapter", """\
Get-VMNetworkAdapter -VM (Get-VM -Id $vmId) |
    Select-Object Name,MacAddress,IPAddresses | ConvertTo-Json -Compress
""", timeout=60)
        found: list[str] = []
        for adapter in ps.as_list(data):
            found += [str(a) for a in ps.as_list(adapter.get("IPAddresses"))]
        return found

    def integration_services(self) -> list[IntegrationService]:
        self.vm_id()
        data = self.call("Get-VMIntegrationService", """\
Get-VMIntegrationService -VM (Get-VM -Id $vmId) |
    Select-Object Id,Name,Enabled,PrimaryOperationalStatus,PrimaryStatusDescription |
    ConvertTo-Json -Compress
""")
        return [IntegrationService(str(s.get("Name", "")), bool(s.get("Enabled")),
                                   _operational(s.get("PrimaryOperationalStatus")),
                                   str(s.get("Id") or ""),
                                   str(s.get("PrimaryStatusDescription") or ""))
                for s in ps.as_list(data)]

    # -- actions -----------------------------------------------------------------
    def start(self) -> None:
        self.vm_id()
        self.call("Start-VM", "Start-VM -VM (Get-VM -Id $vmId)")

    def turn_off(self) -> None:
        """Power off at once (a hung guest, or the end of a run); a VM already off is
        left alone (Stop-VM would only warn)."""
        if self.vm_info().state == "Off":
            return
        self.call("Stop-VM -TurnOff", "Stop-VM -VM (Get-VM -Id $vmId) -TurnOff -Force")

    def restore(self, checkpoint: str) -> str:
        """Apply a checkpoint.  A standard checkpoint keeps the memory: the VM is then
        Saved, and Start-VM would resume the old guest instead of booting, so its
        saved state is removed.  Returns what was done."""
        self.vm_id()
        found = ps.as_list(self.call("Get-VMCheckpoint", "@(Get-VMCheckpoint -VM (Get-VM -Id "
                                     "$vmId) -Name $checkpoint | Select-Object Name) | "
                                     "ConvertTo-Json -Compress", {"checkpoint": checkpoint}))
        if len(found) != 1:
            raise InfraError(f"Hyper-V host {self.host}: VM '{self.vm}' has {len(found)} "
                             f"checkpoints named '{checkpoint}': hvlab needs exactly one")
        self.call("Restore-VMCheckpoint", "Get-VMCheckpoint -VM (Get-VM -Id $vmId) -Name "
                  "$checkpoint | Restore-VMCheckpoint -Confirm:$false",
                  {"checkpoint": checkpoint}, timeout=900)
        state = self.vm_info().state
        if state == "Saved":
            self.call("Remove-VMSavedState", "Remove-VMSavedState -VM (Get-VM -Id $vmId)")
            return f"restored checkpoint '{checkpoint}' (Saved: its saved state removed)"
        return f"restored checkpoint '{checkpoint}'"

    def set_secure_boot(self, on: bool) -> None:
        """Off, or On with the template Linux guests need: the default template
        (MicrosoftWindows) trusts only Windows' boot loader, so a Linux shim signed
        by Microsoft's UEFI CA would not start."""
        self.vm_id()
        if on:
            self.call("Set-VMFirmware", "Set-VMFirmware -VM (Get-VM -Id $vmId) "
                      "-EnableSecureBoot On -SecureBootTemplate $template",
                      {"template": "MicrosoftUEFICertificateAuthority"})
        else:
            self.call("Set-VMFirmware", "Set-VMFirmware -VM (Get-VM -Id $vmId) "
                      "-EnableSecureBoot Off")

    def host_time_ms(self) -> int:
        """The Windows host's clock, in milliseconds since the epoch (UTC)."""
        data = self.call("host time", "[pscustomobject]@{Ms = "
                         "[DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()} | "
                         "ConvertTo-Json -Compress", timeout=60)
        return int(data["Ms"])

    def first_ipv4(self) -> str | None:
        """The routable IPv4 address the VM reports now, if any (no waiting)."""
        return next((a for a in self.addresses() if _routable_ipv4(a)), None)

    def attach_serial(self) -> str:
        """COM1 to a named pipe (the VM must be off on some versions; hvlab sets
        it before Start-VM).  Returns the pipe path."""
        pipe = f"\\\\.\\pipe\\{pipe_name(self.vm)}"
        self.vm_id()
        self.call("Set-VMComPort", "Set-VMComPort -VM (Get-VM -Id $vmId) -Number 1 -Path $pipe",
                  {"pipe": pipe})
        return pipe

    def start_serial_reader(self) -> int:
        """Start the detached copier of COM1 into serial_file(); its process id."""
        reader = READER.format(pipe=ps.quote(pipe_name(self.vm)),
                               file=ps.quote(serial_file(self.vm)),
                               vm_id=ps.quote(self.vm_id()), marker=MARKER,
                               first_wait=READER_FIRST_WAIT)
        # the reader's text is bound as a value and encoded there: encoded here and
        # then again with the script, the command line would pass cmd.exe's 8191
        data = self.call("serial reader", """\
New-Item -ItemType Directory -Force -Path $dir | Out-Null
$cmd = ($prefix + [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes($reader)))
$p = Invoke-CimMethod -ClassName Win32_Process -MethodName Create `
    -Arguments @{CommandLine = $cmd}
[pscustomobject]@{ProcessId = $p.ProcessId; ReturnValue = $p.ReturnValue} | ConvertTo-Json -Compress
""", {"dir": SERIAL_DIR, "reader": reader,
       "prefix": "powershell -NoProfile -NonInteractive -EncodedCommand "})
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
        # ReadAllBytes opens with FileShare.Read and is refused while the reader
        # holds the file for writing: open it sharing ReadWrite and copy
        data = self.call("serial log", """\
$fs = [IO.File]::Open($file, 'Open', 'Read', 'ReadWrite')
$ms = New-Object IO.MemoryStream
$fs.CopyTo($ms)
$fs.Close()
[pscustomobject]@{
    Length = $ms.Length
    Data = [Convert]::ToBase64String($ms.ToArray())
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


def _operational(value: object) -> str:
    """PrimaryOperationalStatus as ConvertTo-Json gives it (a number; a name when a
    script cast it) as the English words hvlab reports."""
    if isinstance(value, int):
        return OPERATIONAL.get(value, f"status {value}")
    if value is None:
        return ""
    text = str(value)
    return {"Ok": "OK", "NoContact": "No Contact", "LostCommunication": "Lost Communication"
            }.get(text, text)


def _routable_ipv4(address: str) -> bool:
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return False
    return not address.startswith(("169.254.", "127.", "0."))
