"""A newc ("070701") cpio writer: the initramfs format Linux unpacks.

Pure and deterministic (fixed mtimes, sorted order by the caller); device
nodes can be written without root.  Linux accepts several archives
concatenated, which is how a fixed base image and a per-build modules
archive are combined without rebuilding either.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    path: str  # without a leading "/"
    mode: int  # including the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file content or symlink target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, b"", (major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _header(ino: int, entry: Entry, name: bytes, size: int) -> bytes:
    fields = [ino, entry.mode, 0, 0, 1, 0, size, 0, 0, entry.rdev[0], entry.rdev[1],
              len(name) + 1, 0]
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def write(out: BinaryIO, entries: Iterable[Entry]) -> None:
    ino = 1
    for entry in entries:
        name = entry.path.lstrip("/").encode()
        data = entry.data
        head = _header(ino, entry, name, len(data))
        out.write(head + name + b"\0")
        out.write(_pad(len(head) + len(name) + 1))
        out.write(data)
        out.write(_pad(len(data)))
        ino += 1
    trailer = Entry("TRAILER!!!", 0)
    head = _header(0, trailer, b"TRAILER!!!", 0)
    out.write(head + b"TRAILER!!!\0")
    out.write(_pad(len(head) + 11))
