"""Kernel console and dmesg scanning (pure): what marks a bad kernel.

As ktest does: ``Kernel panic -``, Oops, ``BUG:``, ``WARNING: CPU:``, KASAN,
UBSAN, lockdep reports, hung tasks and ``Call Trace:`` are findings; each
carries the message line and the trace after it.  A second ``Linux version``
banner means the machine rebooted into something else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TIMESTAMP = re.compile(r"^\s*(?:<\d+>)?\[\s*\d+\.\d+\]\s?")

# Specific reports first: "BUG: KASAN: ..." is a KASAN report, not a plain BUG.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("kasan", re.compile(r"\bKASAN: ")),
    ("ubsan", re.compile(r"\bUBSAN: ")),
    ("lockdep", re.compile(r"possible circular locking dependency|possible recursive locking|"
                           r"inconsistent lock state|WARNING: suspicious RCU usage")),
    ("hung-task", re.compile(r"INFO: task .+ blocked for more than \d+ seconds")),
    ("oops", re.compile(r"\bOops(?:: | - )|^Oops\b")),
    ("bug", re.compile(r"\bBUG: ")),
    ("warning", re.compile(r"\bWARNING: (?:CPU: |at )")),
    ("call-trace", re.compile(r"^Call Trace:")),
)
_BANNER = re.compile(r"Linux version (\S+)")
@dataclass(frozen=True)
class Finding:
    kind: str
    line: int  # 1-based line of the message in the scanned text
    message: str
    excerpt: str  # the message and the trace that follows it

    def title(self) -> str:
        return f"{self.kind}: {self.message[:160]}"


def strip_timestamp(line: str) -> str:
    return _TIMESTAMP.sub("", line.rstrip("\r\n"))


def scan(lines: Iterable[str], max_excerpt: int = 60) -> list[Finding]:
    """Findings in order.  A ``Call Trace:`` inside another finding's excerpt is
    part of it, not a finding of its own."""
    text = [strip_timestamp(line) for line in lines]
    findings: list[Finding] = []
    covered_until = -1
    for i, line in enumerate(text):
        if i <= covered_until:
            continue
        for kind, pattern in PATTERNS:
            if pattern.search(line):
                end = i + 1
                while end < len(text) and end - i < max_excerpt:
                    nxt = text[end]
                    if nxt.startswith("---[ end"):
                        end += 1
                        break
                    if any(p.search(nxt) for k, p in PATTERNS if k not in ("call-trace",)):
                        break
                    if not nxt.strip() or not _continues(nxt):
                        break
                    end += 1
                start = i
                # WARN()/BUG() print their message between "[ cut here ]" and the report
                for back in range(i - 1, max(i - 6, covered_until), -1):
                    if "[ cut here ]" in text[back]:
                        start = back
                        break
                findings.append(Finding(kind, i + 1, line.strip(), "\n".join(text[start:end])))
                covered_until = end - 1
                break
    return findings


def _continues(line: str) -> bool:
    """Does ``line`` belong to the report above it (trace lines, registers, ...)?"""
    s = line.lstrip()
    if line != s:  # indented: trace frames, register dumps
        return True
    prefixes = ("Call Trace:", "<TASK>", "</TASK>", "<IRQ>", "</IRQ>", "RIP:", "RSP:", "RAX:",
                "RDX:", "RBP:", "R10:", "R13:", "FS:", "CS:", "CR2:", "Code:", "Modules linked",
                "Hardware name", "CPU:", "Workqueue:", "Kernel Offset", "---[", "? ", "Tainted")
    return s.startswith(prefixes) or bool(re.match(r"^\S+\+0x[0-9a-f]+/0x[0-9a-f]+", s))


def banners(lines: Iterable[str]) -> list[str]:
    """The kernel releases of every ``Linux version`` banner, in order."""
    out = []
    for line in lines:
        m = _BANNER.search(line)
        if m:
            out.append(m.group(1))
    return out


def first_panic(lines: Sequence[str]) -> Finding | None:
    for f in scan(lines):
        if f.kind == "panic":
            return f
    return None


# the last console or stderr lines a failure's JUnit text carries (its output: more)
EVIDENCE_LINES = 20


def tail(lines: Sequence[str], n: int = 100) -> str:
    return "\n".join(line.rstrip("\r\n") for line in lines[-n:])


_ROOT_MISSING = (
    # initramfs-tools (Debian, Ubuntu): "ALERT!  UUID=... does not exist.  Dropping to a shell!"
    re.compile(r"ALERT!\s+(\S+) does not exist\.\s+Dropping to a shell"),
    # dracut (Fedora, RHEL, Azure Linux): "Warning: /dev/disk/by-uuid/... does not exist"
    re.compile(r"Warning: (/dev/\S+) does not exist"),
    # no initramfs at all: the kernel itself cannot open root=
    re.compile(r"VFS: Cannot open root device \"?([^\"\s]+)\"?"),
)


_ROOT_MOUNT = (
    # initramfs-tools: the device is there, its file system would not mount
    re.compile(r"Failed to mount (\S+) as root file system"),
    # dracut / systemd in the initramfs
    re.compile(r"Failed to mount (sysroot)\.mount"),
)
_FS_ERROR = re.compile(r"\b(?:EXT4-fs|XFS|VFS|BTRFS)\b.*(?:Cannot|cannot|unknown|error|failed)")


@dataclass(frozen=True)
class BootStop:
    """Why a boot cannot go on (seen on the console before any timeout)."""

    kind: str  # panic | root-missing | root-mount
    message: str  # the console line that says so
    root_device: str = ""  # the root= device that was not found or not mounted
    kernel_said: str = ""  # the kernel's own word on it, when it printed one

    def cause(self) -> str:
        said = f"; the kernel said: {self.kernel_said[:200]}" if self.kernel_said else ""
        if self.kind == "root-missing":
            return (f"the root device {self.root_device} was not found: the kernel has no "
                    "driver for the root disk, neither built in nor in the initramfs "
                    f"(console: {self.message[:200]})")
        if self.kind == "root-mount":
            return (f"the root file system on {self.root_device} could not be mounted: the "
                    "kernel lacks its file system driver or a module it needs, neither built "
                    f"in nor in the initramfs (console: {self.message[:200]}){said}")
        return f"the kernel panicked: {self.message[:200]}"


def boot_stopped(lines: Sequence[str]) -> BootStop | None:
    """The first sign on a console that a boot is over: a missing root device
    (the initramfs gave up, or the kernel could not open it), a root file
    system that would not mount, or a panic."""
    text = [strip_timestamp(line) for line in lines]
    for i, line in enumerate(text):
        for pattern in _ROOT_MISSING:
            m = pattern.search(line)
            if m:
                return BootStop("root-missing", line.strip(), m.group(1))
        for pattern in _ROOT_MOUNT:
            m = pattern.search(line)
            if m:
                said = next((t.strip() for t in reversed(text[max(0, i - 20):i])
                             if _FS_ERROR.search(t)), "")
                return BootStop("root-mount", line.strip(), m.group(1), said)
    panic = first_panic(text)
    if panic is not None:
        return BootStop("panic", panic.message)
    return None
