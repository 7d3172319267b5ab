#!/usr/bin/env python3
"""A Hyper-V host simulator for hvlab's tests.  NOT Hyper-V, NOT Windows.

It runs as the ForceCommand of a real OpenSSH sshd (see tests/hyperv_fixture.py),
so hvlab reaches it exactly as it reaches a Windows host: paramiko, SSH,
one ``powershell -NoProfile -NonInteractive -EncodedCommand <base64>`` per
call.  It decodes the base64 UTF-16LE script, interprets the small subset of
PowerShell hvlab emits, keeps the VMs in a JSON state file, answers with JSON
in the shapes Hyper-V's cmdlets produce, and boots each VM as a QEMU guest
inside a network namespace, reachable at the address it reports as the VM's
IP.  It is stdlib-only: ``python3 hyperv_sim.py --state DIR``.

What it covers and how (the full list is in tests/HYPERV_SIMULATOR.md):

* Command line: exactly ``powershell`` with -NoProfile, -NonInteractive and
  -EncodedCommand; anything else gets cmd.exe's "is not recognized" answer.
* Script: one statement per line; ``$x = ...``; pipelines of cmdlets,
  ``Select-Object``, ``ConvertTo-Json``, ``Out-Null``; ``[pscustomobject]@{}``;
  single-quoted literals (quotes doubled); ``try { } catch { }`` with
  ``$_`` as the error record; ``exit N``.  ``$ErrorActionPreference``
  decides whether a cmdlet error stops the script (as on Windows: without
  'Stop' the script goes on and the error text goes to stderr);
  ``$ProgressPreference`` other than 'SilentlyContinue' makes long cmdlets
  write a CLIXML progress record to stderr, as powershell.exe does.
* Cmdlets: Get-CimInstance Win32_OperatingSystem, Get-Module -ListAvailable,
  Get-VM, Start-VM, Stop-VM -TurnOff, Get-VMFirmware, Set-VMFirmware
  -EnableSecureBoot, Get-VMNetworkAdapter, Get-VMIntegrationService,
  Restore-VMCheckpoint, Checkpoint-VM, Set-VMComPort, New-Item -ItemType
  Directory, Set-Content, Get-Item, Invoke-CimMethod Win32_Process Create
  (only for a COM1 pipe reader script), ``[Convert]::ToBase64String(
  [IO.File]::ReadAllBytes(...))``.  Unknown cmdlets and parameters fail as
  PowerShell fails ("is not recognized", "A parameter cannot be found").
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"


class PsFailure(Exception):
    """A PowerShell error record."""

    def __init__(self, message: str, command: str, error_id: str,
                 category: str = "InvalidOperation") -> None:
        super().__init__(message)
        self.record = {
            "Exception": {"Message": message},
            "InvocationInfo": {"MyCommand": command},
            "FullyQualifiedErrorId": error_id,
            "CategoryInfo": {"Category": category},
        }
        self.command = command
        self.message = message
        self.error_id = error_id
        self.category = category

    def text(self) -> str:
        """How powershell.exe prints an uncaught error."""
        return (f"{self.command} : {self.message}\r\n"
                f"    + CategoryInfo          : {self.category}: (:) [{self.command}], "
                f"Exception\r\n    + FullyQualifiedErrorId : {self.error_id}\r\n")


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


# -- state ------------------------------------------------------------------------
class State:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "state.json"
        self.lock = (root / "state.lock").open("a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.data: dict[str, Any] = json.loads(self.file.read_text())
        for vm in self.data["vms"].values():
            if vm.get("state") == "Running" and not _alive(vm.get("pid", 0)):
                vm["state"] = "Off"  # the guest powered itself off, or QEMU died
                vm["pid"] = 0

    def save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.file)

    def vm_dir(self, name: str) -> Path:
        d = self.root / "vms" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, windows: str) -> Path:
        """A Windows path (C:\\a\\b) inside the simulator's folder."""
        m = re.match(r"([A-Za-z]):\\(.*)\Z", windows)
        if not m:
            raise PsFailure(f"Cannot find drive. A drive with the name '{windows[:1]}' does "
                            "not exist.", "Get-Item", "DriveNotFound,"
                            "Microsoft.PowerShell.Commands.GetItemCommand", "ObjectNotFound")
        parts = [p for p in m.group(2).split("\\") if p]
        if any(p in (".", "..") for p in parts):
            raise PsFailure("Illegal characters in path.", "Get-Item", "ItemNotFound")
        return self.root.joinpath("fs", m.group(1).upper(), *parts)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# -- the script language subset ---------------------------------------------------------
def _split(text: str, sep: str | None) -> list[str]:
    """Split outside quotes, braces, brackets and parentheses: on ``sep``, or on
    whitespace (dropping empty parts) when ``sep`` is None."""
    parts: list[str] = []
    cur: list[str] = []
    depth, quote, i = 0, False, 0
    while i < len(text):
        ch = text[i]
        if quote and ch == "'" and text[i + 1:i + 2] == "'":
            cur.append("''")  # a doubled quote inside a literal
            i += 2
            continue
        if ch == "'":
            quote = not quote
        elif not quote and ch in "({[":
            depth += 1
        elif not quote and ch in ")}]":
            depth -= 1
        elif not quote and depth == 0 and (ch == sep if sep else ch.isspace()):
            if sep or cur:
                parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if quote:
        raise PsFailure("The string is missing the terminator: '.", "",
                        "TerminatorExpectedAtEndOfString", "ParserError")
    if sep or cur:
        parts.append("".join(cur))
    return parts


def split_top(text: str, sep: str) -> list[str]:
    return _split(text, sep)


def tokens(text: str) -> list[str]:
    """Arguments of a cmdlet call: whitespace-separated, quotes and braces kept whole."""
    return _split(text, None)


class Interp:
    def __init__(self, state: State, out: list[str], err: list[str]) -> None:
        self.state = state
        self.vars: dict[str, Any] = {"null": None, "true": True, "false": False}
        self.out = out
        self.err = err

    # expressions
    def expr(self, text: str) -> Any:
        t = text.strip()
        if t.startswith("'") and t.endswith("'") and len(t) >= 2:
            inner = t[1:-1]
            if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
                raise PsFailure(f"Unexpected token in expression: {t}", "", "UnexpectedToken",
                                "ParserError")
            return inner.replace("''", "'")
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t.startswith("[string]"):
            v = self.expr(t[len("[string]"):])
            return "" if v is None else str(v)
        if t.startswith("@{") and t.endswith("}"):
            return self.hashtable(t[2:-1])
        m = re.fullmatch(r"\[Convert\]::ToBase64String\(\[IO\.File\]::ReadAllBytes\((.*)\)\)", t)
        if m:
            path = self.state.path(str(self.expr(m.group(1))))
            try:
                return base64.b64encode(path.read_bytes()).decode()
            except OSError:
                raise PsFailure(f'Exception calling "ReadAllBytes" with "1" argument(s): '
                                f'"Could not find file \'{self.expr(m.group(1))}\'."', "",
                                "FileNotFoundException") from None
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)", t)
        if m:
            name = m.group(1)
            if name == "_":
                name = "_"
            if name not in self.vars:
                return None
            value = self.vars[name]
            for prop in filter(None, m.group(2).split(".")):
                value = value.get(prop) if isinstance(value, dict) else None
            return value
        raise PsFailure(f"Unexpected token '{t[:40]}' in expression or statement.", "",
                        "UnexpectedToken", "ParserError")

    def hashtable(self, body: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for item in split_top(body, ";"):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            if not eq or not re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*", key):
                raise PsFailure("Missing '=' operator after key in hash literal.", "",
                                "MissingEqualsInHashLiteral", "ParserError")
            result[key.strip()] = self.expr(value)
        return result

    # statements
    def statement(self, line: str) -> None:
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if m:
            if m.group(2).strip() == "$_":
                self.vars[m.group(1)] = self.vars.get("_")
                return
            value = self.pipeline(m.group(2))
            self.vars[m.group(1)] = value[0] if len(value) == 1 else (value or None)
            return
        m = re.fullmatch(r"exit\s+(\d+)", line)
        if m:
            raise Exit(int(m.group(1)))
        m = re.fullmatch(r"\[Console\]::Error\.WriteLine\(\((.*)\)\)", line)
        if m:
            for v in self.pipeline(m.group(1)):
                self.err.append(str(v) + "\n")
            return
        for value in self.pipeline(line):
            self.out.append(value if isinstance(value, str) else _format(value))

    def pipeline(self, text: str) -> list[Any]:
        stages = [s.strip() for s in split_top(text, "|")]
        first = stages[0]
        if first.startswith("[pscustomobject]@{"):
            values: list[Any] = [self.expr(first[len("[pscustomobject]"):])]
        elif first.startswith(("'", "$", "[", "@")) or re.fullmatch(r"-?\d+", first):
            values = [self.expr(first)]
        else:
            values = self.cmdlet(first, None)
        for stage in stages[1:]:
            values = self.cmdlet(stage, values)
        return [v for v in values if v is not None] if len(stages) > 1 else values

    def cmdlet(self, text: str, piped: list[Any] | None) -> list[Any]:
        words = tokens(text)
        name = words[0]
        params: dict[str, Any] = {}
        positional: list[str] = []
        i = 1
        while i < len(words):
            w = words[i]
            if w.startswith("-") and re.fullmatch(r"-[A-Za-z]+(:.*)?", w):
                key, colon, inline = w[1:].partition(":")
                if colon:
                    params[key.lower()] = self.expr(inline) if inline.startswith("$") \
                        else inline
                elif i + 1 < len(words) and not re.fullmatch(r"-[A-Za-z]+(:.*)?", words[i + 1]):
                    params[key.lower()] = words[i + 1]
                    i += 1
                else:
                    params[key.lower()] = True
            else:
                positional.append(w)
            i += 1
        handler = CMDLETS.get(name.lower())
        if handler is None or (name.lower() not in GENERIC and not self.hyperv_module()):
            raise PsFailure(f"The term '{name}' is not recognized as the name of a cmdlet, "
                            "function, script file, or operable program. Check the spelling "
                            "of the name, or if a path was included, verify that the path is "
                            "correct and try again.", name, "CommandNotFoundException",
                            "ObjectNotFound")
        fn, allowed = handler
        unknown = [k for k in params if k not in allowed]
        if unknown:
            raise PsFailure(f"A parameter cannot be found that matches parameter name "
                            f"'{unknown[0]}'.", name,
                            f"NamedParameterNotFound,{name}", "InvalidArgument")
        if positional and name.lower() != "select-object":
            raise PsFailure(f"A positional parameter cannot be found that accepts argument "
                            f"'{positional[0]}'.", name, f"PositionalParameterNotFound,{name}",
                            "InvalidArgument")
        resolved = {k: (self.expr(v) if isinstance(v, str) and v[:1] in "'$@[" else v)
                    for k, v in params.items()}
        self.state.data.setdefault("calls", []).append(
            {"cmdlet": name, "params": {k: v for k, v in resolved.items()
                                        if isinstance(v, (str, int, bool))}})
        result = fn(self, resolved, positional, piped)
        return result

    def hyperv_module(self) -> bool:
        return bool(self.state.data["host"].get("hyperv"))

    def vm(self, cmdlet: str, name: Any) -> dict[str, Any]:
        if not isinstance(name, str):
            raise PsFailure("Cannot validate argument on parameter 'Name'. The argument is "
                            "null or empty.", cmdlet, f"ParameterArgumentValidationError,{cmdlet}",
                            "InvalidData")
        vms = self.state.data["vms"]
        if name not in vms:
            raise PsFailure(f'Hyper-V was unable to find a virtual machine with name "{name}".',
                            cmdlet, f"InvalidParameter,Microsoft.HyperV.PowerShell.Commands."
                            f"{cmdlet.replace('-', '')}Command", "InvalidArgument")
        return dict(vms[name], Name=name)


def _format(value: Any) -> str:
    if isinstance(value, dict):
        width = max((len(k) for k in value), default=0)
        return "\n".join(f"{k.ljust(width)} : {v}" for k, v in value.items()) + "\n"
    return str(value)


# -- cmdlets -------------------------------------------------------------------------
def _progress(ip: Interp, activity: str) -> None:
    if ip.vars.get("ProgressPreference") != "SilentlyContinue":
        ip.err.append('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.'
                      'com/powershell/2004/04"><Obj S="progress" RefId="0"><TN RefId="0"><T>'
                      'System.Management.Automation.PSCustomObject</T></TN><MS><I64 N="Sourc'
                      f'eId">1</I64><PR N="Record"><AV>{activity}</AV><AI>0</AI><Nil /><PI>-1'
                      '</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>'
                      '</Objs>\r\n')


def c_cim(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    if p.get("classname") != "Win32_OperatingSystem":
        raise PsFailure("Invalid class", "Get-CimInstance", "HRESULT 0x80041010", "MetadataError")
    h = ip.state.data["host"]
    return [{"BuildNumber": h["build"], "Caption": h["caption"],
             "Version": f"10.0.{h['build']}"}]


def c_module(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    if p.get("name") == "Hyper-V" and ip.hyperv_module():
        return [{"Name": "Hyper-V", "Version": ip.state.data["host"]["hyperv"]}]
    return []


def _vm_object(vm: dict[str, Any]) -> dict[str, Any]:
    return {"Name": vm["Name"], "State": vm["state"], "Generation": vm["generation"],
            "Version": vm["version"], "Id": vm["id"]}


def c_get_vm(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    return [_vm_object(ip.vm("Get-VM", p.get("name")))]


def _boot(ip: Interp, name: str, vm: dict[str, Any]) -> int:
    d = ip.state.vm_dir(name)
    console = d / "com1.out"
    console.write_bytes(b"")
    # Secure Boot: the VM's own (signed) kernel boots, in lockdown as Debian's
    # does under Secure Boot, so an unsigned kernel cannot be kexec'd
    lockdown = "lockdown=integrity" if vm.get("secure_boot") == "On" else ""
    append = " ".join(x for x in ("console=ttyS0,115200 panic=0",
                                  "hvlab.net=static:10.0.2.15/24:10.0.2.2", lockdown,
                                  vm.get("append", "")) if x)
    argv = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(vm.get("memory", 768)),
            "-smp", "1", "-nodefaults", "-display", "none",
            "-kernel", vm["kernel"], "-initrd", vm["initrd"], "-append", append,
            "-serial", f"file:{console}",
            "-netdev", f"user,id=n0,hostfwd=tcp:{vm['ip']}:22-:22",
            "-device", "virtio-net-pci,netdev=n0,romfile="]
    if vm.get("netns"):
        argv = ["ip", "netns", "exec", vm["netns"], *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=(d / "qemu.log").open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc.pid


def c_start(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("name")
    vm = ip.vm("Start-VM", name)
    if vm["state"] == "Running":
        raise PsFailure(f"'{name}' failed to start.\n\nThe operation cannot be performed while "
                        "the object is in its current state.", "Start-VM",
                        "InvalidState,Microsoft.HyperV.PowerShell.Commands.StartVM",
                        "InvalidOperation")
    _progress(ip, "Starting virtual machine")
    pid = _boot(ip, str(name), vm)
    ip.state.data["vms"][name].update(state="Running", pid=pid, started=time.time())
    return []


def _kill(pid: int) -> None:
    if pid > 0:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def c_stop(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("name")
    vm = ip.vm("Stop-VM", name)
    if not p.get("turnoff"):
        raise PsFailure("This simulator implements Stop-VM -TurnOff only.", "Stop-VM",
                        "NotSimulated", "NotImplemented")
    if vm["state"] == "Off":
        ip.err.append("WARNING: The virtual machine is already in the specified state.\r\n")
        return []
    _kill(int(vm.get("pid", 0)))
    ip.state.data["vms"][name].update(state="Off", pid=0)
    return []


# Set-VMFirmware -SecureBootTemplate (Hyper-V module documentation)
SECURE_BOOT_TEMPLATES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority",
                         "OpenSourceShieldedVM")


def c_get_fw(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    vm = ip.vm("Get-VMFirmware", p.get("vmname"))
    if vm["generation"] != 2:
        raise PsFailure("Generation 1 virtual machines do not support this operation.",
                        "Get-VMFirmware", "InvalidParameter,Microsoft.HyperV.PowerShell."
                        "Commands.GetVMFirmware", "InvalidArgument")
    return [{"VMName": vm["Name"], "SecureBoot": vm.get("secure_boot", "On"),
             "SecureBootTemplate": vm.get("secure_boot_template", "MicrosoftWindows")}]


def c_set_fw(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("vmname")
    vm = ip.vm("Set-VMFirmware", name)
    value = p.get("enablesecureboot")
    if value not in ("On", "Off"):
        raise PsFailure(f"Cannot bind parameter 'EnableSecureBoot'. Cannot convert value "
                        f"\"{value}\" to type \"Microsoft.HyperV.PowerShell.OnOffState\".",
                        "Set-VMFirmware", "CannotConvertArgumentNoMessage", "InvalidArgument")
    if vm["generation"] != 2:
        raise PsFailure("Generation 1 virtual machines do not support this operation.",
                        "Set-VMFirmware", "InvalidParameter", "InvalidArgument")
    template = p.get("SecureBootTemplate".lower())
    if template is not None and template not in SECURE_BOOT_TEMPLATES:
        raise PsFailure(f"Cannot bind parameter 'SecureBootTemplate': '{template}' is not a "
                        "known template.", "Set-VMFirmware", "InvalidArgument",
                        "InvalidArgument")
    if vm["state"] != "Off":
        raise PsFailure("Failed to modify device 'Firmware'.\n\nThe operation cannot be "
                        "performed while the virtual machine is in its current state.",
                        "Set-VMFirmware", "InvalidState,Microsoft.HyperV.PowerShell.Commands."
                        "SetVMFirmware", "InvalidOperation")
    ip.state.data["vms"][name]["secure_boot"] = value
    if template is not None:
        ip.state.data["vms"][name]["secure_boot_template"] = template
    return []


def _console(ip: Interp, name: str) -> str:
    try:
        return (ip.state.vm_dir(name) / "com1.out").read_text(errors="replace")
    except OSError:
        return ""


def _guest_up(ip: Interp, name: str, vm: dict[str, Any]) -> bool:
    """The guest's KVP/heartbeat daemons run: the ready line after the last boot."""
    if vm["state"] != "Running" or not vm.get("ready_line"):
        return False
    text = _console(ip, name)
    last_boot = text.rfind("Linux version")
    return vm["ready_line"] in text[max(last_boot, 0):]


def c_adapter(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = str(p.get("vmname"))
    vm = ip.vm("Get-VMNetworkAdapter", name)
    addresses = []
    if vm.get("kvp", True) and _guest_up(ip, name, vm):
        addresses = [vm["ip"], "fe80::215:5dff:fe01:2a0c"]
    return [{"Name": "Network Adapter", "MacAddress": "00155D012A0C",
             "IPAddresses": addresses, "SwitchName": vm.get("switch", "hvlab-internal")}]


def c_integration(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = str(p.get("vmname"))
    vm = ip.vm("Get-VMIntegrationService", name)
    running = vm["state"] == "Running"
    up = _guest_up(ip, name, vm) and vm.get("heartbeat", True)
    status = ("OK" if up else "No Contact") if running else None
    services = []
    for svc, enabled in (("Guest Service Interface", False), ("Heartbeat", True),
                         ("Key-Value Pair Exchange", True), ("Shutdown", True),
                         ("Time Synchronization", True), ("VSS", True)):
        services.append({"VMName": name, "Name": svc, "Enabled": enabled,
                         "PrimaryStatusDescription": status if enabled else None})
    return services


def c_restore(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("vmname")
    vm = ip.vm("Restore-VMCheckpoint", name)
    if p.get("confirm") not in (False, "$false"):
        raise PsFailure("PowerShell is in NonInteractive mode. Read and Prompt functionality is "
                        "not available.", "Restore-VMCheckpoint",
                        "InvalidOperation,Microsoft.HyperV.PowerShell.Commands."
                        "RestoreVMSnapshot", "InvalidOperation")
    snap = vm.get("checkpoints", {}).get(p.get("name"))
    if snap is None:
        raise PsFailure("Unable to find a snapshot matching the given criteria.",
                        "Restore-VMCheckpoint", "ObjectNotFound,Microsoft.HyperV.PowerShell."
                        "Commands.RestoreVMSnapshot", "ObjectNotFound")
    if vm["state"] != "Off":  # stricter than Windows, which may apply it to a running VM
        raise PsFailure("The operation cannot be performed while the virtual machine is in its "
                        "current state.", "Restore-VMCheckpoint", "InvalidState",
                        "InvalidOperation")
    _progress(ip, "Applying checkpoint")
    ip.state.data["vms"][name].update(snap)
    ip.state.data["vms"][name]["restored"] = ip.state.data["vms"][name].get("restored", 0) + 1
    return []


SNAPSHOT_KEYS = ("kernel", "initrd", "append", "secure_boot", "com1")


def c_checkpoint(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("name")
    vm = ip.vm("Checkpoint-VM", name)
    snap = {k: vm.get(k) for k in SNAPSHOT_KEYS}
    ip.state.data["vms"][name].setdefault("checkpoints", {})[p.get("snapshotname")] = snap
    return []


def c_comport(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name = p.get("vmname")
    ip.vm("Set-VMComPort", name)
    if p.get("number") not in ("1", "2", 1, 2):
        raise PsFailure("The COM port number must be 1 or 2.", "Set-VMComPort",
                        "InvalidParameter", "InvalidArgument")
    path = str(p.get("path") or "")
    if path and not path.startswith("\\\\.\\pipe\\"):
        raise PsFailure("The path must be a named pipe (\\\\.\\pipe\\name).", "Set-VMComPort",
                        "InvalidParameter", "InvalidArgument")
    if str(p.get("number")) == "1":
        ip.state.data["vms"][name]["com1"] = path
    return []


def c_new_item(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    if p.get("itemtype") != "Directory":
        raise PsFailure("This simulator creates directories only.", "New-Item", "NotSimulated")
    target = ip.state.path(str(p.get("path")))
    target.mkdir(parents=True, exist_ok=True)
    return [{"FullName": p.get("path")}]


def c_set_content(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    target = ip.state.path(str(p.get("literalpath")))
    if not target.parent.is_dir():
        raise PsFailure(f"Could not find a part of the path '{p.get('literalpath')}'.",
                        "Set-Content", "DirectoryNotFoundException", "ObjectNotFound")
    value = p.get("value")
    target.write_text("" if value is None else f"{value}\r\n")
    return []


def c_get_item(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    target = ip.state.path(str(p.get("literalpath")))
    if not target.exists():
        raise PsFailure(f"Cannot find path '{p.get('literalpath')}' because it does not exist.",
                        "Get-Item", "PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand",
                        "ObjectNotFound")
    return [{"FullName": p.get("literalpath"), "Length": target.stat().st_size}]


READER_RE = re.compile(r"NamedPipeClientStream\('\.', '([^']*)'.*?\[System\.IO\.File\]::Open\("
                       r"'((?:[^']|'')*)', 'Append'", re.S)


def c_invoke_cim(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    if p.get("classname") != "Win32_Process" or p.get("methodname") != "Create":
        raise PsFailure("This simulator only creates processes.", "Invoke-CimMethod",
                        "NotSimulated")
    args = p.get("arguments")
    line = args.get("CommandLine") if isinstance(args, dict) else None
    try:
        words = shlex.split(str(line))
        script = base64.b64decode(words[words.index("-EncodedCommand") + 1]).decode("utf-16-le")
    except (ValueError, IndexError):
        return [{"ProcessId": 0, "ReturnValue": 9}]  # "path not found"
    m = READER_RE.search(script)
    if not m or "$pipe.Connect(" not in script or "$out.Flush()" not in script:
        return [{"ProcessId": 0, "ReturnValue": 21}]  # not a script this simulator can run
    pipe, target = m.group(1), m.group(2).replace("''", "'")
    vm_name = next((n for n, vm in ip.state.data["vms"].items()
                    if vm.get("com1") == f"\\\\.\\pipe\\{pipe}"), None)
    out = ip.state.path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--state", str(ip.state.root),
                             "copy-serial", vm_name or "", str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ip.state.data.setdefault("readers", []).append(proc.pid)
    return [{"ProcessId": proc.pid, "ReturnValue": 0}]


def c_select(ip: Interp, p: dict[str, Any], pos: list[str], piped: Any) -> list[Any]:
    names = [n.strip() for n in ",".join(pos).split(",") if n.strip()]
    return [{n: (v.get(n) if isinstance(v, dict) else None) for n in names}
            for v in (piped or [])]


def c_json(ip: Interp, p: dict[str, Any], _pos: list[str], piped: Any) -> list[Any]:
    values = piped if piped is not None else [p.get("inputobject")]
    if not values:
        return []
    doc = values[0] if len(values) == 1 else values  # PowerShell unrolls one-element arrays
    return [json.dumps(doc, separators=(",", ":")) if p.get("compress")
            else json.dumps(doc, indent=4)]


def c_out_null(ip: Interp, p: dict[str, Any], _pos: list[str], _piped: Any) -> list[Any]:
    return []


CMDLETS: dict[str, tuple[Any, set[str]]] = {
    "get-ciminstance": (c_cim, {"classname"}),
    "get-module": (c_module, {"listavailable", "name"}),
    "get-vm": (c_get_vm, {"name"}),
    "start-vm": (c_start, {"name"}),
    "stop-vm": (c_stop, {"name", "turnoff", "force"}),
    "get-vmfirmware": (c_get_fw, {"vmname"}),
    "set-vmfirmware": (c_set_fw, {"vmname", "enablesecureboot", "secureboottemplate"}),
    "get-vmnetworkadapter": (c_adapter, {"vmname"}),
    "get-vmintegrationservice": (c_integration, {"vmname"}),
    "restore-vmcheckpoint": (c_restore, {"vmname", "name", "confirm"}),
    "checkpoint-vm": (c_checkpoint, {"name", "snapshotname"}),
    "set-vmcomport": (c_comport, {"vmname", "number", "path"}),
    "new-item": (c_new_item, {"itemtype", "force", "path"}),
    "set-content": (c_set_content, {"literalpath", "value"}),
    "get-item": (c_get_item, {"literalpath"}),
    "invoke-cimmethod": (c_invoke_cim, {"classname", "methodname", "arguments"}),
    "select-object": (c_select, set()),
    "convertto-json": (c_json, {"compress", "depth", "inputobject"}),
    "out-null": (c_out_null, set()),
}
GENERIC = {"get-ciminstance", "get-module", "new-item", "set-content", "get-item",
           "invoke-cimmethod", "select-object", "convertto-json", "out-null"}


# -- running a script ---------------------------------------------------------------
@dataclass
class Block:
    body: list[str] = field(default_factory=list)
    catch: list[str] | None = None


def logical_lines(script: str) -> list[str]:
    """Physical lines joined as PowerShell joins them: after a trailing ``|`` or
    backtick, and inside an open ``@{`` (whose lines are entries)."""
    out: list[str] = []
    pending = ""
    for raw in script.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if pending:
            joiner = "; " if pending.endswith("{") or _open_braces(pending) > 0 and \
                not pending.endswith(("|", "`")) else " "
            line = pending.rstrip("`").rstrip() + joiner + line
            pending = ""
        if line in ("try {", "} catch {"):
            out.append(line)
        elif line.endswith(("|", "`")) or _open_braces(line) > 0:
            pending = line
        else:
            out.append(line)
    if pending:
        out.append(pending)
    return out


def _open_braces(line: str) -> int:
    depth, quote = 0, False
    for ch in line:
        if ch == "'":
            quote = not quote
        elif not quote and ch == "{":
            depth += 1
        elif not quote and ch == "}":
            depth -= 1
    return depth


def parse_blocks(script: str) -> list[str | Block]:
    """Top-level statements; a try/catch becomes one Block."""
    items: list[str | Block] = []
    current: Block | None = None
    in_catch = False
    for line in logical_lines(script):
        if line == "try {" and current is None:
            current, in_catch = Block(), False
        elif line == "} catch {" and current is not None and not in_catch:
            current.catch, in_catch = [], True
        elif line == "}" and current is not None:
            items.append(current)
            current = None
        elif current is not None:
            (current.catch if in_catch and current.catch is not None else current.body).append(line)
        else:
            items.append(line)
    if current is not None:
        raise PsFailure("Missing closing '}' in statement block or type definition.", "",
                        "MissingEndCurlyBrace", "ParserError")
    return items


def run_script(state: State, script: str) -> tuple[str, str, int]:
    out: list[str] = []
    err: list[str] = []
    ip = Interp(state, out, err)
    code = 0

    def run_lines(lines: list[str]) -> None:
        nonlocal code
        for line in lines:
            m = re.fullmatch(r"\$(ErrorActionPreference|ProgressPreference)\s*=\s*'(\w+)'", line)
            if m:
                ip.vars[m.group(1)] = m.group(2)
                continue
            try:
                ip.statement(line)
                code = 0
            except PsFailure as exc:
                if ip.vars.get("ErrorActionPreference") == "Stop" or exc.category == "ParserError":
                    raise
                err.append(exc.text())  # non-terminating: on it goes
                code = 1

    try:
        for item in parse_blocks(script):
            if isinstance(item, Block):
                try:
                    run_lines(item.body)
                except PsFailure as exc:
                    if item.catch is None:
                        raise
                    ip.vars["_"] = exc.record
                    run_lines(item.catch)
            else:
                run_lines([item])
    except Exit as e:
        code = e.code
    except PsFailure as exc:
        err.append(exc.text())
        code = 1
    return "\n".join(out) + ("\n" if out else ""), "".join(err), code


def serve(root: Path, command: str) -> int:
    words = command.split()
    lower = [w.lower() for w in words]
    if not words or lower[0] not in ("powershell", "powershell.exe"):
        sys.stderr.write(f"'{words[0] if words else ''}' is not recognized as an internal or "
                         "external command,\r\noperable program or batch file.\r\n")
        return 1
    if "-encodedcommand" not in lower or "-noninteractive" not in lower \
            or "-noprofile" not in lower:
        sys.stderr.write("hyperv_sim: hvlab must call powershell -NoProfile -NonInteractive "
                         "-EncodedCommand (this simulator runs nothing else)\r\n")
        return 1
    try:
        encoded = words[lower.index("-encodedcommand") + 1]
        script = base64.b64decode(encoded, validate=True).decode("utf-16-le")
    except (IndexError, ValueError):
        sys.stderr.write("Cannot process the command because the value specified with "
                         "-EncodedCommand is not properly encoded. The value must be Base64 "
                         "encoded.\r\n")
        return 1
    state = State(root)
    try:
        (root / "scripts.log").open("a").write(f"--- {time.time():.3f}\n{script}\n")
        stdout, stderr, code = run_script(state, script)
        state.save()
    finally:
        state.lock.close()
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return code


def copy_serial(root: Path, vm_name: str, target: Path) -> None:
    """The COM1 pipe reader: waits up to 120 s for the VM to run, then copies its
    serial output to ``target`` until it turns off."""
    def pid_of() -> int:
        try:
            data = json.loads((root / "state.json").read_text())
            return int(data["vms"].get(vm_name, {}).get("pid", 0))
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 120
    pid = pid_of()
    while not _alive(pid):
        if time.monotonic() > deadline or not vm_name:
            return
        time.sleep(0.2)
        pid = pid_of()
    source = root / "vms" / re.sub(r"[^A-Za-z0-9_.-]", "_", vm_name) / "com1.out"
    offset = 0
    with target.open("ab") as out:
        while True:
            alive = _alive(pid) and pid_of() == pid
            try:
                with source.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                data = b""
            if data:
                out.write(data)
                out.flush()
                offset += len(data)
            if not alive:
                return
            time.sleep(0.2)


def cleanup(root: Path) -> None:
    """Kill every QEMU and reader the simulator started (test teardown)."""
    data = json.loads((root / "state.json").read_text())
    for vm in data["vms"].values():
        _kill(int(vm.get("pid", 0)))
        vm.update(state="Off", pid=0)
    for pid in data.get("readers", []):
        _kill(int(pid))
    (root / "state.json").write_text(json.dumps(data, indent=1))


def new_vm(kernel: str, initrd: str, ip: str, netns: str, ready_line: str,
           generation: int = 2, **extra: Any) -> dict[str, Any]:
    """A VM entry for the state file (used by the test fixture)."""
    return {"id": str(uuid.uuid4()), "generation": generation, "version": "10.0",
            "state": "Off", "secure_boot": "On" if generation == 2 else None, "com1": "",
            "kernel": kernel, "initrd": initrd, "append": "", "memory": 768, "ip": ip,
            "netns": netns, "kvp": True, "heartbeat": True, "ready_line": ready_line,
            "pid": 0, "checkpoints": {}, **extra}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--state":
        sys.stderr.write("usage: hyperv_sim.py --state DIR [copy-serial VM FILE | cleanup]\n")
        return 2
    root = Path(argv[1])
    rest = argv[2:]
    if rest[:1] == ["copy-serial"]:
        copy_serial(root, rest[1], Path(rest[2]))
        return 0
    if rest[:1] == ["cleanup"]:
        cleanup(root)
        return 0
    return serve(root, os.environ.get("SSH_ORIGINAL_COMMAND", ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
