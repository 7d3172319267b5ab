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
  ``Select-Object``, ``Where-Object <Property> -eq <value>``, ``ConvertTo-Json``,
  ``Out-Null``; ``[pscustomobject]@{}``;
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
import fnmatch
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
from typing import Any, NamedTuple

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


class Many(list):  # type: ignore[type-arg]
    """Several objects in one value (``@(...)``, a pipeline with more than one)."""


def display(key: str, vm: dict[str, Any]) -> str:
    """A VM's name; state keys differ when two VMs share a name ("name" says it)."""
    return str(vm.get("name", key))


def _writer_alive(path: Path) -> bool:
    marker = path.with_name(path.name + ".writer")
    try:
        return _alive(int(marker.read_text()))
    except (OSError, ValueError):
        return False


def _share_check(path: Path, shown: str, method: str, share: str) -> None:
    """.NET's sharing rule: a file another process holds open for writing can only
    be opened by one that shares Write (FileShare.ReadWrite).  ReadAllBytes
    shares Read only."""
    if "Write" not in share and _writer_alive(path):
        raise PsFailure(f'Exception calling "{method}" with "{1 if method == "ReadAllBytes" else 4}'
                        f'" argument(s): "The process cannot access the file \'{shown}\' '
                        'because it is being used by another process."', "",
                        "IOException", "NotSpecified")


def open_file(state: State, path: str, mode: str = "Open", access: str = "Read",
              share: str = "Read") -> dict[str, Any]:
    target = state.path(path)
    if mode == "Open" and not target.is_file():
        raise PsFailure(f'Exception calling "Open" with "4" argument(s): "Could not find file '
                        f'\'{path}\'."', "", "FileNotFoundException", "NotSpecified")
    _share_check(target, path, "Open", share)
    return {"__file__": str(target)}


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
        parts = split_top(t, "+")
        if len(parts) > 1:  # string concatenation
            return "".join(str(self.expr(p)) for p in parts)
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
        if t.startswith("@(") and t.endswith(")"):
            return Many(self.pipeline(t[2:-1]))
        if t.startswith("(") and t.endswith(")"):
            found = self.pipeline(t[1:-1])
            return found[0] if len(found) == 1 else Many(found)
        m = re.fullmatch(r"\[Convert\]::ToBase64String\(\[Text\.Encoding\]::Unicode\."
                         r"GetBytes\((.*)\)\)", t)
        if m:
            return base64.b64encode(str(self.expr(m.group(1))).encode("utf-16-le")).decode()
        if t == "[DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()":
            return int(time.time() * 1000) + int(self.state.data["host"].get("clock_skew_ms", 0))
        m = re.fullmatch(r"\[IO\.File\]::Open\((.*)\)", t)
        if m:
            args = [self.expr(a) for a in split_top(m.group(1), ",")]
            return open_file(self.state, *[str(a) for a in args])
        if t == "New-Object IO.MemoryStream":
            return {"__stream__": ""}
        m = re.fullmatch(r"\[Convert\]::ToBase64String\(\$(\w+)\.ToArray\(\)\)", t)
        if m:
            return self.vars.get(m.group(1), {}).get("__stream__", "")
        m = re.fullmatch(r"\[Convert\]::ToBase64String\(\[IO\.File\]::ReadAllBytes\((.*)\)\)", t)
        if m:
            path = self.state.path(str(self.expr(m.group(1))))
            _share_check(path, str(self.expr(m.group(1))), "ReadAllBytes", "Read")
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
                if isinstance(value, dict) and "__stream__" in value and prop == "Length":
                    value = len(base64.b64decode(value["__stream__"]))
                    continue
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
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line, re.S)
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
        m = re.fullmatch(r"\$(\w+)\.CopyTo\(\$(\w+)\)", line)
        if m:
            handle, stream = self.vars.get(m.group(1)), self.vars.get(m.group(2))
            if isinstance(handle, dict) and isinstance(stream, dict):
                stream["__stream__"] = base64.b64encode(
                    Path(handle["__file__"]).read_bytes()).decode()
            return
        if re.fullmatch(r"\$(\w+)\.(Close|Dispose)\(\)", line):
            return
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
        elif first.startswith(("'", "$", "[", "@", "(")) or re.fullmatch(r"-?\d+", first):
            value = self.expr(first)
            values = list(value) if isinstance(value, Many) else [value]
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
        if positional and name.lower() not in ("select-object", "new-object", "where-object"):
            raise PsFailure(f"A positional parameter cannot be found that accepts argument "
                            f"'{positional[0]}'.", name, f"PositionalParameterNotFound,{name}",
                            "InvalidArgument")
        resolved = {k: (self.expr(v) if isinstance(v, str) and v[:1] in "'$@[(" else v)
                    for k, v in params.items()}
        self.state.data.setdefault("calls", []).append(
            {"cmdlet": name, "params": {k: v for k, v in resolved.items()
                                        if isinstance(v, (str, int, bool))}})
        result = fn(self, resolved, positional, piped)
        return result

    def targets(self, cmdlet: str, p: dict[str, Any], piped: Any = None) -> list[str]:
        """The state keys of the VMs a cmdlet acts on: -VM objects (by their Id),
        or -Name/-VMName, which take wildcards and match every VM of that name,
        as Hyper-V's module does."""
        vms = self.state.data["vms"]
        objects = p.get("vm")
        if objects is not None:
            items = list(objects) if isinstance(objects, Many) else [objects]
            by_id = {v["id"]: k for k, v in vms.items()}
            keys = [by_id[o["Id"]] for o in items if isinstance(o, dict) and o.get("Id") in by_id]
            if not keys:
                raise PsFailure("Cannot validate argument on parameter 'VM'. The argument is "
                                "null or empty.", cmdlet, f"ParameterArgumentValidationError,"
                                f"{cmdlet}", "InvalidData")
            return keys
        name = p.get("name") if "vmname" not in p else p.get("vmname")
        if not isinstance(name, str) or not name:
            raise PsFailure("Cannot validate argument on parameter 'Name'. The argument is "
                            "null or empty.", cmdlet, f"ParameterArgumentValidationError,{cmdlet}",
                            "InvalidData")
        wildcard = any(c in name for c in "*?[")
        keys = [k for k, v in vms.items()
                if (fnmatch.fnmatchcase(display(k, v).lower(), name.lower()) if wildcard
                    else display(k, v).lower() == name.lower())]
        if not keys and not wildcard:
            raise PsFailure(f'Hyper-V was unable to find a virtual machine with name "{name}".',
                            cmdlet, f"InvalidParameter,Microsoft.HyperV.PowerShell.Commands."
                            f"{cmdlet.replace('-', '')}Command", "InvalidArgument")
        for k in keys:
            self.state.data.setdefault("touched", []).append({"cmdlet": cmdlet, "vm": k})
        return keys

    def hyperv_module(self) -> bool:
        return bool(self.state.data["host"].get("hyperv"))


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


def _vm_object(key: str, vm: dict[str, Any]) -> dict[str, Any]:
    return {"Name": display(key, vm), "State": vm["state"], "Generation": vm["generation"],
            "Version": vm["version"], "Id": vm["id"]}


def c_get_vm(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    vms = ip.state.data["vms"]
    if "id" in p:
        found = [k for k, v in vms.items() if v["id"] == str(p["id"])]
        if not found:
            raise PsFailure(f"Hyper-V was unable to find a virtual machine with id "
                            f"\"{p['id']}\".", "Get-VM", "InvalidParameter", "InvalidArgument")
        return [_vm_object(found[0], vms[found[0]])]
    if "name" not in p:  # no -Name and no -Id: every VM of the host
        return [_vm_object(k, v) for k, v in vms.items()]
    return [_vm_object(k, vms[k]) for k in ip.targets("Get-VM", p)]


def c_where(ip: Interp, p: dict[str, Any], pos: list[str], piped: Any) -> list[Any]:
    """``Where-Object <Property> -eq <value>`` (the simplified syntax of
    PowerShell 3+): string comparison without wildcards, case-insensitive."""
    if len(pos) != 1 or set(p) != {"eq"}:
        raise PsFailure("This simulator knows only 'Where-Object <Property> -eq <value>'.",
                        "Where-Object", "NotSimulated")
    want = p["eq"]
    def same(v: Any) -> bool:
        got = v.get(pos[0]) if isinstance(v, dict) else None
        if isinstance(got, str) and isinstance(want, str):
            return got.lower() == want.lower()
        return bool(got == want)
    return [v for v in (piped or []) if same(v)]


def _warn(ip: Interp, text: str) -> None:
    """A warning, on stdout as powershell.exe writes it when redirected, unless
    $WarningPreference silences it."""
    if ip.vars.get("WarningPreference") not in ("SilentlyContinue", "Ignore"):
        ip.out.append(f"WARNING: {text}")


def qemu_argv(vm: dict[str, Any], console: Path) -> list[str]:
    net = ["-serial", f"file:{console}",
           "-netdev", f"user,id=n0,hostfwd=tcp:{vm['ip']}:22-:22",
           "-device", "virtio-net-pci,netdev=n0,romfile="]
    if vm.get("disk"):
        argv = disk_argv(vm) + net
    else:
        # Secure Boot: the VM's own (signed) kernel boots, in lockdown as Debian's
        # does under Secure Boot, so an unsigned kernel cannot be kexec'd
        lockdown = "lockdown=integrity" if vm.get("secure_boot") == "On" else ""
        append = " ".join(x for x in ("console=ttyS0,115200 panic=0",
                                      "hvlab.net=static:10.0.2.15/24:10.0.2.2", lockdown,
                                      vm.get("append", "")) if x)
        argv = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(vm.get("memory", 768)),
                "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
                "-kernel", vm["kernel"], "-initrd", vm["initrd"], "-append", append, *net]
    if vm.get("netns"):
        argv = ["ip", "netns", "exec", vm["netns"], *argv]
    return argv


# A disk VM is a generation 2 VM as Hyper-V runs one: UEFI firmware (OVMF), its
# own variable store, and its virtual disk (a qcow2 overlay on the Debian image
# that ``inv image.vm`` builds), which keeps what the guest wrote across restarts
# and power cycles until a checkpoint is applied.  With Secure Boot on, the
# firmware is OVMF's Secure Boot build with Microsoft's keys enrolled (Hyper-V's
# MicrosoftWindows / UEFI CA templates): it refuses the image's unsigned boot
# loader, as a Gen2 VM refuses an unsigned one.
OVMF = Path("/usr/share/OVMF")
FIRMWARE = {"Off": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            "On": ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd")}


def nvram(vm: dict[str, Any], secure: str) -> Path:
    """The VM's variable store for its Secure Boot setting (made on first use)."""
    store = Path(vm["disk"]).with_name(f"nvram-sb{secure.lower()}.fd")
    if not store.exists():
        store.write_bytes((OVMF / FIRMWARE[secure][1]).read_bytes())
    return store


def disk_argv(vm: dict[str, Any]) -> list[str]:
    secure = "On" if vm.get("secure_boot") == "On" else "Off"
    smm = ["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure == "On" else []
    return [QEMU, "-machine", f"q35,smm={'on' if secure == 'On' else 'off'}", "-accel", "tcg",
            "-cpu", "max", "-m", str(vm.get("memory", 1024)), "-smp", str(vm.get("cpus", 2)),
            "-nodefaults", "-display", "none", "-no-reboot", *smm,
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,"
                      f"file={OVMF / FIRMWARE[secure][0]}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram(vm, secure)}",
            "-drive", f"file={vm['disk']},format=qcow2,if=virtio"]


def _boot(ip: Interp, name: str, vm: dict[str, Any]) -> int:
    """The VM's process: a supervisor that runs QEMU (-no-reboot) and starts it
    again whenever the guest restarts, as Hyper-V restarts a VM.  Each QEMU run
    writes its own console file: COM1's pipe closes at every restart."""
    d = ip.state.vm_dir(name)
    for old in (*d.glob("com1.*.out"), *d.glob("com1.*.closed")):  # a new VM process:
        old.unlink()  # its pipe opens anew (a reader must not take an old run's end)
    proc = subprocess.Popen([sys.executable, __file__, "--state", str(ip.state.root),
                             "supervise", name], stdin=subprocess.DEVNULL,
                            stdout=(d / "qemu.log").open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc.pid


def supervise(root: Path, name: str) -> None:
    state = State(root)
    vm = dict(state.data["vms"][name])
    d = state.vm_dir(name)
    state.lock.close()
    run = 0
    while True:
        run += 1
        console = d / f"com1.{run}.out"
        console.write_bytes(b"")
        (d / "com1.out").unlink(missing_ok=True)
        (d / "com1.out").symlink_to(console.name)  # what _guest_up and tests read
        done = subprocess.run(qemu_argv(vm, console), stdin=subprocess.DEVNULL, check=False)
        (d / f"com1.{run}.closed").write_text(str(done.returncode))
        if done.returncode != 0:  # QEMU killed or failed: the VM is off
            return
        if "reboot: Power down" in console.read_text(errors="replace")[-4000:]:
            return  # the guest powered off (State() then finds the VM Off)
        time.sleep(0.5)  # the guest asked for a reboot: Hyper-V starts it again


def c_start(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    for name in ip.targets("Start-VM", p):
        vm = ip.state.data["vms"][name]
        if vm["state"] == "Running":
            raise PsFailure(f"'{display(name, vm)}' failed to start.\n\nThe operation cannot be "
                            "performed while the object is in its current state.", "Start-VM",
                            "InvalidState,Microsoft.HyperV.PowerShell.Commands.StartVM",
                            "InvalidOperation")
        _progress(ip, "Starting virtual machine")
        if vm["state"] == "Saved":  # Hyper-V resumes the saved guest: no boot
            vm["resumed_saved"] = vm.get("resumed_saved", 0) + 1
        pid = _boot(ip, str(name), vm)
        vm.update(state="Running", pid=pid, started=time.time())
    return []


def _kill(pid: int, wait: float = 15.0) -> None:
    """Kill the process group ``pid`` leads and wait until none of it runs: as
    Stop-VM -TurnOff returns once the VM is off, so that a Start-VM right after
    it never meets the old QEMU still holding the disk's lock."""
    if pid <= 0:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + wait
    while _group_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_running(pgid: int) -> bool:
    """A process of group ``pgid`` that is not a zombie (a zombie holds no lock)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def c_stop(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    if not p.get("turnoff"):
        raise PsFailure("This simulator implements Stop-VM -TurnOff only.", "Stop-VM",
                        "NotSimulated", "NotImplemented")
    for name in ip.targets("Stop-VM", p):
        vm = ip.state.data["vms"][name]
        if vm["state"] == "Off":
            _warn(ip, "The virtual machine is already in the specified state.")
            continue
        _kill(int(vm.get("pid", 0)))
        vm.update(state="Off", pid=0)
    return []


# Set-VMFirmware -SecureBootTemplate (Hyper-V module documentation)
SECURE_BOOT_TEMPLATES = ("MicrosoftWindows", "MicrosoftUEFICertificateAuthority",
                         "OpenSourceShieldedVM")


def one(ip: Interp, cmdlet: str, p: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first VM a reading cmdlet names (a wildcard name may name none)."""
    keys = ip.targets(cmdlet, p)
    if not keys:
        return "", {}
    return keys[0], dict(ip.state.data["vms"][keys[0]], Name=display(
        keys[0], ip.state.data["vms"][keys[0]]))


def c_get_fw(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    _key, vm = one(ip, "Get-VMFirmware", p)
    if not vm:
        return []
    if vm["generation"] != 2:
        raise PsFailure("Generation 1 virtual machines do not support this operation.",
                        "Get-VMFirmware", "InvalidParameter,Microsoft.HyperV.PowerShell."
                        "Commands.GetVMFirmware", "InvalidArgument")
    return [{"VMName": vm["Name"], "SecureBoot": vm.get("secure_boot", "On"),
             "SecureBootTemplate": vm.get("secure_boot_template", "MicrosoftWindows")}]


def c_set_fw(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    for name in ip.targets("Set-VMFirmware", p):
        _set_fw(ip, p, name, ip.state.data["vms"][name])
    return []


def _set_fw(ip: Interp, p: dict[str, Any], name: str, vm: dict[str, Any]) -> None:
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
    name, vm = one(ip, "Get-VMNetworkAdapter", p)
    if not vm:
        return []
    addresses = []
    if vm.get("kvp", True) and _guest_up(ip, name, vm):
        addresses = [vm["ip"], "fe80::215:5dff:fe01:2a0c"]
    return [{"Name": "Network Adapter", "MacAddress": "00155D012A0C",
             "IPAddresses": addresses, "SwitchName": vm.get("switch", "hvlab-internal")}]


# Integration services: their Ids (the same in every language), English and German
# names, and PrimaryOperationalStatus as ConvertTo-Json writes that enum (a number:
# 2 Ok, 12 NoContact, 13 LostCommunication) beside its localised description.
SERVICES = (
    ("6C09BB55-D683-4DA0-8931-C9BF705F6480", "Guest Service Interface",
     "Gastdienstschnittstelle", False),
    ("84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47", "Heartbeat", "Takt", True),
    ("2A34B1C2-FD73-4043-8A5B-DD2159BC743F", "Key-Value Pair Exchange",
     "Austausch von Schlüsselwertpaaren", True),
    ("9F8233AC-BE49-4C79-8EE3-E7E1985B2077", "Shutdown", "Herunterfahren", True),
    ("2497F4DE-E9FA-4204-80E4-4B75C46419C0", "Time Synchronization",
     "Zeitsynchronisierung", True),
    ("5CED1297-4598-4915-A5FC-AD21BB4D02A4", "VSS", "VSS", True),
)
STATUS_TEXT = {2: ("OK", "OK"), 12: ("No Contact", "Kein Kontakt"),
               13: ("Lost Communication", "Kommunikation unterbrochen")}


def c_integration(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name, vm = one(ip, "Get-VMIntegrationService", p)
    if not vm:
        return []
    german = ip.state.data["host"].get("language") == "de-DE"
    running = vm["state"] == "Running"
    beat = vm.get("heartbeat", True)
    code = None
    if running:
        code = 13 if beat == "lost" else 2 if _guest_up(ip, name, vm) and beat else 12
    services = []
    for guid, english, deutsch, enabled in SERVICES:
        services.append({
            "VMName": display(name, vm), "Id": f"Microsoft:{vm['id'].upper()}\\{guid}",
            "Name": deutsch if german else english, "Enabled": enabled,
            "PrimaryOperationalStatus": code if enabled else None,
            "PrimaryStatusDescription": STATUS_TEXT[code][1 if german else 0]
            if enabled and code else None})
    return services


def c_get_checkpoint(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name, vm = one(ip, "Get-VMCheckpoint", p)
    if not vm:
        return []
    snaps = vm.get("checkpoints", {})
    wanted = p.get("name") if "vm" in p else None
    found = [{"VMName": display(name, vm), "Name": n, "VMId": vm["id"],
              "SnapshotType": s.get("type", "Standard")}
             for n, s in snaps.items() if wanted is None or n == wanted]
    if wanted is not None and not found:
        raise PsFailure(f"Hyper-V was unable to find a checkpoint named '{wanted}'.",
                        "Get-VMCheckpoint", "ObjectNotFound", "ObjectNotFound")
    return found


def c_restore(ip: Interp, p: dict[str, Any], _pos: list[str], piped: Any) -> list[Any]:
    if piped:  # Get-VMCheckpoint ... | Restore-VMCheckpoint
        for snap in piped:
            key = next(k for k, v in ip.state.data["vms"].items() if v["id"] == snap["VMId"])
            _restore(ip, dict(p, name=snap["Name"]), key, ip.state.data["vms"][key])
        return []
    for key in ip.targets("Restore-VMCheckpoint", {"vmname": p.get("vmname")}):
        _restore(ip, p, key, ip.state.data["vms"][key])
    return []


def _restore(ip: Interp, p: dict[str, Any], name: str, vm: dict[str, Any]) -> None:
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
    if vm["state"] not in ("Off", "Saved"):  # stricter than Windows (a running VM)
        raise PsFailure("The operation cannot be performed while the virtual machine is in its "
                        "current state.", "Restore-VMCheckpoint", "InvalidState",
                        "InvalidOperation")
    _progress(ip, "Applying checkpoint")
    apply_checkpoint(vm, snap)
    ip.state.data["vms"][name].update({k: v for k, v in snap.items()
                                       if k not in ("type", "disk_snapshot")})
    ip.state.data["vms"][name]["restored"] = ip.state.data["vms"][name].get("restored", 0) + 1
    # a standard checkpoint keeps the memory: the VM comes back Saved (production: Off)
    if snap.get("type", "Standard") == "Standard":
        ip.state.data["vms"][name]["state"] = "Saved"


def c_remove_saved(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    for name in ip.targets("Remove-VMSavedState", p):
        vm = ip.state.data["vms"][name]
        if vm["state"] != "Saved":
            raise PsFailure("The operation cannot be performed while the virtual machine is in "
                            "its current state.", "Remove-VMSavedState", "InvalidState",
                            "InvalidOperation")
        vm["state"] = "Off"
    return []


SNAPSHOT_KEYS = ("kernel", "initrd", "append", "secure_boot", "com1")


def _qemu_img(cmdlet: str, *args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PsFailure(f"The virtual hard disk operation failed: {done.stderr.strip()}",
                        cmdlet, "OperationFailed", "NotSpecified")


def take_checkpoint(vm: dict[str, Any], name: str) -> dict[str, Any]:
    """The VM's settings, and for a disk VM its disk (a qcow2 internal snapshot)
    and variable stores.  The simulator takes them only while the VM is off."""
    snap = {k: vm.get(k) for k in SNAPSHOT_KEYS}
    if vm.get("disk"):
        disk = Path(vm["disk"])
        subprocess.run(["qemu-img", "snapshot", "-d", name, str(disk)], capture_output=True,
                       check=False)  # a checkpoint of that name is replaced
        _qemu_img("Checkpoint-VM", "snapshot", "-c", name, str(disk))
        for old in disk.parent.glob(f"nvram-sb*.{name}.ckpt"):
            old.unlink()  # a store the VM no longer has is not in the new checkpoint
        for store in disk.parent.glob("nvram-sb*.fd"):
            (disk.parent / f"{store.stem}.{name}.ckpt").write_bytes(store.read_bytes())
        snap["disk_snapshot"] = name
    return snap


def apply_checkpoint(vm: dict[str, Any], snap: dict[str, Any]) -> None:
    """The disk and the variable stores as the checkpoint has them."""
    name = snap.get("disk_snapshot")
    if not name or not vm.get("disk"):
        return
    disk = Path(vm["disk"])
    _qemu_img("Restore-VMCheckpoint", "snapshot", "-a", str(name), str(disk))
    for store in disk.parent.glob("nvram-sb*.fd"):
        saved = disk.parent / f"{store.stem}.{name}.ckpt"
        if saved.exists():
            store.write_bytes(saved.read_bytes())
        else:  # made after the checkpoint: not in it
            store.unlink()


def c_checkpoint(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    name, vm = one(ip, "Checkpoint-VM", p)
    if vm.get("disk") and vm["state"] != "Off":  # less than Windows: see HYPERV_SIMULATOR.md
        raise PsFailure("This simulator takes checkpoints of a disk VM only while it is off.",
                        "Checkpoint-VM", "NotSimulated", "NotImplemented")
    snap = take_checkpoint(vm, str(p.get("snapshotname")))
    ip.state.data["vms"][name].setdefault("checkpoints", {})[p.get("snapshotname")] = snap
    return []


def c_comport(ip: Interp, p: dict[str, Any], _pos: list[str], _in: Any) -> list[Any]:
    for name in ip.targets("Set-VMComPort", p):
        _comport(ip, p, name, ip.state.data["vms"][name])
    return []


def _comport(ip: Interp, p: dict[str, Any], name: str, vm: dict[str, Any]) -> None:
    if vm["state"] != "Off":
        raise PsFailure("Failed to modify device 'COM 1'.\n\nThe operation cannot be performed "
                        "while the virtual machine is in its current state.", "Set-VMComPort",
                        "InvalidState,Microsoft.HyperV.PowerShell.Commands.SetVMComPort",
                        "InvalidOperation")
    if p.get("number") not in ("1", "2", 1, 2):
        raise PsFailure("The COM port number must be 1 or 2.", "Set-VMComPort",
                        "InvalidParameter", "InvalidArgument")
    path = str(p.get("path") or "")
    if path and not path.startswith("\\\\.\\pipe\\"):
        raise PsFailure("The path must be a named pipe (\\\\.\\pipe\\name).", "Set-VMComPort",
                        "InvalidParameter", "InvalidArgument")
    if str(p.get("number")) == "1":
        ip.state.data["vms"][name]["com1"] = path


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


READER_RE = re.compile(r"NamedPipeClientStream\('\.', '([^']*)'")
FILE_RE = re.compile(r"\[System\.IO\.File\]::Open\('((?:[^']|'')*)', 'Append', 'Write', "
                     r"'ReadWrite'\)")
MARKER_RE = re.compile(r"GetBytes\(\"`r`n(.*?) \(\$n\)`r`n\"\)")


class ReaderShape(NamedTuple):
    reconnect: bool  # loops: reconnects after every end of file until the VM is off
    marker: str  # the line it writes at each connection ("" when none)
    first_wait: float  # seconds it waits for the pipe to exist at first
    stops_while_off: bool  # its first failed attempt ends it when the VM is still off


def reader_shape(script: str) -> ReaderShape | None:
    """How a pipe reader script behaves, from its shape (the simulator runs no
    .NET), or None when it is not a reader this simulator can stand in for.  A
    reader reconnects when it loops over short Connect attempts and stops on the
    VM's state; one long Connect spins while there is no pipe, for its timeout,
    and ends at the first end of file.  A looping reader that checks the VM's
    state after every failed attempt ends at the first one when it was started
    before the VM (Off, no pipe yet), unless it skips that check until its first
    connection (``if ($n -eq 0)``, bounded by ``$clock.Elapsed.TotalSeconds``)."""
    if not READER_RE.search(script) or not FILE_RE.search(script) or \
            "$out.Flush()" not in script:
        return None
    connects = [int(n) for n in re.findall(r"\$pipe\.Connect\((\d+)\)", script)]
    loops = "while ($true)" in script
    reconnect = loops and bool(connects) and max(connects) <= 5000 and \
        ".State -eq 'Off'" in script
    found = MARKER_RE.search(script)
    bound = re.search(r"\$clock\.Elapsed\.TotalSeconds -gt (\d+)", script)
    waits = reconnect and "if ($n -eq 0)" in script
    first_wait = (float(bound.group(1)) if waits and bound else 3600.0 if reconnect
                  else max(connects, default=0) / 1000)
    return ReaderShape(reconnect, found.group(1) if found else "", first_wait,
                       reconnect and not waits)


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
    shape = reader_shape(script)
    if shape is None:
        return [{"ProcessId": 0, "ReturnValue": 21}]  # not a script this simulator can run
    pipe = READER_RE.search(script).group(1)  # type: ignore[union-attr]
    target = FILE_RE.search(script).group(1).replace("''", "'")  # type: ignore[union-attr]
    vm_name = next((n for n, vm in ip.state.data["vms"].items()
                    if vm.get("com1") == f"\\\\.\\pipe\\{pipe}"), None)
    out = ip.state.path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--state", str(ip.state.root),
                             "copy-serial", vm_name or "", str(out),
                             "reconnect" if shape.reconnect else "once", shape.marker,
                             str(shape.first_wait), "stops-while-off" if shape.stops_while_off
                             else "waits"],
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
    # Windows PowerShell 5.1's ConvertTo-Json leaves non-ASCII characters as they are
    return [json.dumps(doc, separators=(",", ":"), ensure_ascii=False) if p.get("compress")
            else json.dumps(doc, indent=4, ensure_ascii=False)]


def c_out_null(ip: Interp, p: dict[str, Any], _pos: list[str], _piped: Any) -> list[Any]:
    return []


def c_new_object(ip: Interp, p: dict[str, Any], pos: list[str], _piped: Any) -> list[Any]:
    if pos[:1] in (["IO.MemoryStream"], ["System.IO.MemoryStream"]):
        return [{"__stream__": ""}]
    raise PsFailure("This simulator creates memory streams only.", "New-Object", "NotSimulated")


CMDLETS: dict[str, tuple[Any, set[str]]] = {
    "get-ciminstance": (c_cim, {"classname"}),
    "get-module": (c_module, {"listavailable", "name"}),
    "get-vm": (c_get_vm, {"name", "id"}),
    "start-vm": (c_start, {"name", "vm"}),
    "stop-vm": (c_stop, {"name", "vm", "turnoff", "force"}),
    "get-vmfirmware": (c_get_fw, {"vmname", "vm"}),
    "set-vmfirmware": (c_set_fw, {"vmname", "vm", "enablesecureboot", "secureboottemplate"}),
    "get-vmnetworkadapter": (c_adapter, {"vmname", "vm"}),
    "get-vmintegrationservice": (c_integration, {"vmname", "vm"}),
    "get-vmcheckpoint": (c_get_checkpoint, {"vmname", "vm", "name"}),
    "restore-vmcheckpoint": (c_restore, {"vmname", "name", "confirm"}),
    "remove-vmsavedstate": (c_remove_saved, {"vmname", "vm"}),
    "checkpoint-vm": (c_checkpoint, {"name", "vm", "snapshotname"}),
    "set-vmcomport": (c_comport, {"vmname", "vm", "number", "path"}),
    "new-item": (c_new_item, {"itemtype", "force", "path"}),
    "set-content": (c_set_content, {"literalpath", "value"}),
    "get-item": (c_get_item, {"literalpath"}),
    "invoke-cimmethod": (c_invoke_cim, {"classname", "methodname", "arguments"}),
    "select-object": (c_select, set()),
    "where-object": (c_where, {"eq"}),
    "convertto-json": (c_json, {"compress", "depth", "inputobject"}),
    "out-null": (c_out_null, set()),
    "new-object": (c_new_object, set()),
}
GENERIC = {"get-ciminstance", "get-module", "new-item", "set-content", "get-item",
           "invoke-cimmethod", "select-object", "where-object", "convertto-json", "out-null",
           "new-object"}


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
    literal = ""  # a single-quoted literal that goes on over several lines
    for raw in script.replace("\r\n", "\n").split("\n"):
        if literal or _open_quote(raw):
            literal = f"{literal}\n{raw}" if literal else raw
            if _open_quote(literal):
                continue
            raw, literal = literal, ""
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
    if literal:
        raise PsFailure("The string is missing the terminator: '.", "",
                        "TerminatorExpectedAtEndOfString", "ParserError")
    if pending:
        out.append(pending)
    return out


def _open_quote(text: str) -> bool:
    """Whether ``text`` ends inside a single-quoted literal ('' is a quote in it)."""
    return text.replace("''", "").count("'") % 2 == 1


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
            m = re.fullmatch(r"\$(ErrorActionPreference|ProgressPreference|WarningPreference)"
                             r"\s*=\s*'(\w+)'", line)
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
    if state.data["host"].get("default_shell") != "powershell" and len(command) > 8191:
        state.lock.close()  # cmd.exe, Windows OpenSSH's default shell, takes no more
        sys.stderr.write("The command line is too long.\r\n")
        return 1
    try:
        (root / "scripts.log").open("a").write(f"--- {time.time():.3f}\n{script}\n")
        stdout, stderr, code = run_script(state, script)
        state.save()
    finally:
        state.lock.close()
    if state.data["host"].get("default_shell") == "powershell" and stderr:
        stderr = wrap_native_stderr(stderr)
    # powershell.exe writes redirected output in the console's code page: the OEM
    # one of the host's language (cp850 on a German host), not UTF-8
    codepage = "cp850" if state.data["host"].get("language") == "de-DE" else "utf-8"
    sys.stdout.flush()
    sys.stdout.buffer.write(stdout.encode(codepage, "replace"))
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(stderr.encode(codepage, "replace"))
    sys.stderr.buffer.flush()
    return code


def wrap_native_stderr(stderr: str) -> str:
    """What PowerShell, as sshd's default shell, makes of a native command's
    stderr: each line an error record, "powershell : <line>" and its category."""
    out = []
    for i, line in enumerate(stderr.splitlines()):
        if not line.strip():
            continue
        out.append(f"powershell : {line}\r\n" if i == 0 else f"{line}\r\n")
    out.append("    + CategoryInfo          : NotSpecified: (:String) [], RemoteException\r\n"
               "    + FullyQualifiedErrorId : NativeCommandError\r\n")
    return "".join(out)


def copy_serial(root: Path, vm_name: str, target: Path, reconnect: bool, marker: str,
                first_wait: float = 120.0, stops_while_off: bool = False) -> None:
    """The COM1 pipe reader.  Its pipe is one QEMU run's console file; the pipe
    closes when that run ends (a guest restart, a power-off).  A reader without a
    reconnect loop ends there, as the .NET one does at the first end of file; a
    reconnecting one waits for the next run until the VM is off, writing
    ``marker (n)`` at each connection.  There is no pipe before the VM runs:
    the reader waits ``first_wait`` seconds for it, and one that
    ``stops_while_off`` ends after its first one-second attempt if the VM is
    still off then.  While it runs it holds ``target`` open for writing
    (``target.writer``: the FileShare rule of _share_check)."""
    def vm() -> dict[str, Any]:
        try:
            return dict(json.loads((root / "state.json").read_text())["vms"].get(vm_name, {}))
        except (OSError, ValueError, KeyError):
            return {}

    d = root / "vms" / re.sub(r"[^A-Za-z0-9_.-]", "_", vm_name)
    writer = target.with_name(target.name + ".writer")
    writer.write_text(str(os.getpid()))
    try:
        started = time.monotonic()
        run, connected = 1, 0
        with target.open("ab") as out:
            while time.monotonic() < started + first_wait or connected:
                source = d / f"com1.{run}.out"
                if not source.exists() or not _alive(int(vm().get("pid", 0))):
                    if connected and not reconnect:
                        return
                    if connected and vm().get("state") == "Off":
                        return
                    if not connected and stops_while_off and \
                            time.monotonic() - started >= 1.0 and vm().get("state") == "Off":
                        return  # its first Connect(1000) failed and the VM was off
                    time.sleep(0.2)
                    continue
                connected += 1
                if marker:
                    out.write(f"\r\n{marker} ({connected})\r\n".encode())
                _copy_run(source, d / f"com1.{run}.closed", out,
                          lambda: _alive(int(vm().get("pid", 0))))
                run += 1
                if not reconnect:
                    return
    finally:
        writer.unlink(missing_ok=True)


def _copy_run(source: Path, closed: Path, out: Any, running: Any) -> None:
    """One connection: the run's console until it closes (or the VM was killed)."""
    offset = 0
    while True:
        done = closed.exists() or not running()
        with source.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        if data:
            out.write(data)
            out.flush()
            offset += len(data)
        if done:
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
    """A VM entry for the state file (used by the test fixture): one that boots
    ``kernel`` and ``initrd`` directly, or with ``disk=PATH`` (a qcow2 file; kernel
    and initrd empty) one that boots from its disk through UEFI."""
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
        copy_serial(root, rest[1], Path(rest[2]), rest[3] == "reconnect", rest[4],
                    float(rest[5]), rest[6] == "stops-while-off")
        return 0
    if rest[:1] == ["supervise"]:
        supervise(root, rest[1])
        return 0
    if rest[:1] == ["cleanup"]:
        cleanup(root)
        return 0
    return serve(root, os.environ.get("SSH_ORIGINAL_COMMAND", ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
