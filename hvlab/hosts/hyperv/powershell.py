"""PowerShell as Windows OpenSSH runs it: scripts, encoding, answers.  Pure.

Every script hvlab sends is::

    powershell -NoProfile -NonInteractive -EncodedCommand <base64 of UTF-16LE>

whatever the host's default SSH shell (cmd.exe or PowerShell) is, because
-EncodedCommand needs no quoting at all.  The script sets
``$ErrorActionPreference='Stop'`` (a cmdlet error ends the script) and
``$ProgressPreference='SilentlyContinue'`` (progress records would otherwise
arrive as CLIXML on stderr), binds the config values as single-quoted
literals (quotes doubled: data, never code), runs its body and prints one
JSON document.  A failure prints one JSON error record on stderr and exits 1.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

# Warnings (Stop-VM on a VM already off: "WARNING: The virtual machine is already in
# the specified state") go to stdout with powershell.exe and would break the JSON
# answer: silenced here, the cmdlet's own -WarningVariable is not needed.
PREAMBLE = ("$ErrorActionPreference = 'Stop'\n$ProgressPreference = 'SilentlyContinue'\n"
            "$WarningPreference = 'SilentlyContinue'\n")

# One JSON error record on stderr: message, the cmdlet, the error id.
CATCH = (
    "} catch {\n"
    "    $r = $_\n"
    "    [Console]::Error.WriteLine((ConvertTo-Json -Compress -InputObject @{"
    "hvlab_error = $r.Exception.Message; command = [string]$r.InvocationInfo.MyCommand; "
    "id = $r.FullyQualifiedErrorId}))\n"
    "    exit 1\n"
    "}\n"
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote(value: str) -> str:
    """A single-quoted PowerShell literal: nothing inside is expanded.  PowerShell
    also ends such a literal at the typographic single quotes, so those are
    doubled as well."""
    out = []
    for ch in value:
        out.append(ch)
        if ch in "'\u2018\u2019\u201a\u201b":
            out.append(ch)
    return "'" + "".join(out) + "'"


def script(body: str, values: dict[str, str | int] | None = None) -> str:
    """The full script: preamble, the values bound as ``$name`` variables, the
    body inside try/catch."""
    lines = [PREAMBLE, "try {\n"]
    for name, value in (values or {}).items():
        if not _NAME.match(name):
            raise ValueError(f"not a PowerShell variable name: {name!r}")
        literal = str(value) if isinstance(value, int) else quote(value)
        lines.append(f"    ${name} = {literal}\n")
    for line in body.strip("\n").splitlines():
        lines.append(f"    {line}\n")
    lines.append(CATCH)
    return "".join(lines)


def encode(text: str) -> str:
    """-EncodedCommand's argument: base64 of the UTF-16LE text."""
    return base64.b64encode(text.encode("utf-16-le")).decode("ascii")


def decode(encoded: str) -> str:
    return base64.b64decode(encoded, validate=True).decode("utf-16-le")


def command_line(text: str) -> str:
    return f"powershell -NoProfile -NonInteractive -EncodedCommand {encode(text)}"


@dataclass(frozen=True)
class PsError:
    message: str
    command: str  # the cmdlet that failed, when known
    error_id: str

    def describe(self) -> str:
        where = f"{self.command}: " if self.command else ""
        return f"{where}{self.message}"


def parse_error(stderr: str) -> PsError:
    """The error of a failed script: hvlab's JSON record, else PowerShell's own
    text (``Cmdlet : message`` then ``+ CategoryInfo ...`` lines), else the
    last line.  CLIXML (``#< CLIXML``) is reduced to its error strings."""
    for line in reversed(stderr.splitlines()):
        # PowerShell as sshd's default shell wraps a native command's stderr as an
        # error record: "powershell : {...}" then "+ CategoryInfo ..." lines
        start, end = line.find("{"), line.rfind("}")
        if start < 0 or end < start or "hvlab_error" not in line:
            continue
        try:
            data = json.loads(line[start:end + 1])
        except ValueError:
            continue
        if isinstance(data, dict):
            return PsError(str(data.get("hvlab_error", "")).strip(),
                           str(data.get("command") or ""), str(data.get("id") or ""))
    text = stderr
    if "#< CLIXML" in stderr:
        found = re.findall(r'<S S="Error">(.*?)</S>', stderr, flags=re.S)
        text = "".join(found).replace("_x000D__x000A_", "\n")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return PsError("no error text (exit status only)", "", "")
    first = lines[0]
    m = re.match(r"([A-Z][A-Za-z]+-[A-Za-z]+) : (.*)", first)
    ident = next((line.split(":", 1)[1].strip() for line in lines
                  if line.strip().startswith("+ FullyQualifiedErrorId")), "")
    if m:
        return PsError(m.group(2).strip(), m.group(1), ident)
    return PsError(first.strip(), "", ident)


def parse_json(stdout: str) -> Any:
    """The JSON document a script printed (empty output: None).  Only the last line
    that is JSON counts: anything a cmdlet wrote before it (a warning another
    host setting let through) is not the answer."""
    lines = [line.strip().lstrip("\ufeff") for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    for line in reversed(lines):
        if line[:1] in "[{" or line in ("null", "true", "false") or line[:1].isdigit() \
                or line[:1] == '"':
            try:
                return json.loads(line)
            except ValueError:
                continue
    return json.loads(lines[-1])  # not JSON: the caller says so


def as_list(value: Any) -> list[Any]:
    """ConvertTo-Json writes a one-element array as the element itself and an
    empty pipeline as nothing: both become lists here."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
