"""Guest captures: what the guest-side checks read, as files (docs/suites.md).

A capture is a directory, or a ``.tar.gz`` of one::

    root/               the guest's own files at their own paths (sys/bus/vmbus/...,
                        sys/module/..., proc/modules, lib/modules/<release>/modules.dep, ...)
                        with symlinks (sysfs ``driver`` links) kept as symlinks
    dmesg.txt           the kernel log (``dmesg -r``: with levels; plain dmesg also works)
    commands/<name>.txt the output of the few commands a check needs (ip-addr = ``ip -j addr``,
                        ps = ``ps -e``, uname-m = ``uname -m``)

``CAPTURE`` makes one on a live guest (POSIX sh, busybox is enough): it reads
only, copies into a private temporary folder and packs it.  ``Capture``
reads one, whoever made it; a path it does not have reads as None, so a
check can skip naming it ("not captured: proc/cpuinfo").  Pure apart from
opening the directory or archive.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hvlab.errors import UserError

# The files copied, relative to /; globs are expanded on the guest.  Sysfs
# attributes are copied with cat (tar would read their nominal 4 KiB size).
FILES = (
    "proc/modules", "proc/cpuinfo", "proc/cmdline", "proc/mounts",
    "proc/sys/kernel/osrelease", "proc/sys/kernel/tainted",
    "sys/devices/system/clocksource/clocksource0/current_clocksource",
    "sys/devices/system/clocksource/clocksource0/available_clocksource",
    "sys/devices/system/cpu/online", "sys/devices/system/cpu/possible",
    "sys/bus/vmbus/devices/*/class_id", "sys/bus/vmbus/devices/*/device_id",
    "sys/bus/vmbus/devices/*/channel_vp_mapping", "sys/bus/vmbus/devices/*/state",
    "sys/module/*/refcnt", "sys/module/*/initstate",
    "sys/class/net/*/operstate", "sys/class/net/*/address", "sys/class/net/*/mtu",
    "var/lib/hyperv/.kvp_pool_*",
)
LINKS = (
    "sys/bus/vmbus/devices/*/driver", "sys/bus/vmbus/drivers/*/*-*",
    "sys/module/*/holders/*", "sys/class/net/*/device/driver", "sys/class/net/*/master",
    "sys/block/*",
)
DIRS = ("sys/bus/vmbus/devices/*", "sys/bus/vmbus/drivers/*", "sys/module/*",
        "sys/module/*/holders", "sys/firmware/efi")
COMMANDS = {"ip-addr": "ip -j addr", "ip-o-addr": "ip -o addr",
            "ps": "ps -e -o pid,comm 2>/dev/null || ps", "uname-m": "uname -m",
            "uname-r": "uname -r"}

CAPTURE = r"""out="$1"; rel=$(uname -r)
umask 077
tmp=$(mktemp -d /tmp/hvlab-capture.XXXXXX) || exit 3
trap 'rm -rf "$tmp"' EXIT
cd / || exit 3
for f in @DIRS@; do [ -d "$f" ] && mkdir -p "$tmp/root/$f"; done
for f in @FILES@; do
  [ -f "$f" ] && mkdir -p "$tmp/root/${f%/*}" && cat "/$f" > "$tmp/root/$f" 2>/dev/null
done
for f in @LINKS@; do
  [ -L "$f" ] && mkdir -p "$tmp/root/${f%/*}" && ln -s "$(readlink "/$f")" "$tmp/root/$f"
done
for f in modules.dep modules.builtin; do
  g="lib/modules/$rel/$f"
  [ -f "$g" ] && mkdir -p "$tmp/root/${g%/*}" && cat "/$g" > "$tmp/root/$g"
done
mkdir -p "$tmp/commands"
@COMMANDS@
dmesg -r > "$tmp/dmesg.txt" 2>/dev/null || dmesg > "$tmp/dmesg.txt"
tar -c -z -f "$out" -C "$tmp" . || exit 3
"""


def capture_script() -> str:
    commands = "\n".join(f"( {cmd} ) > \"$tmp/commands/{name}.txt\" 2>/dev/null"
                         for name, cmd in COMMANDS.items())
    return (CAPTURE.replace("@FILES@", " ".join(FILES)).replace("@LINKS@", " ".join(LINKS))
            .replace("@DIRS@", " ".join(DIRS)).replace("@COMMANDS@", commands))


@dataclass(frozen=True)
class Capture:
    """A capture on disk (``folder`` holds root/, dmesg.txt, commands/)."""

    folder: Path
    live: bool = False  # taken from a live guest during this run

    @property
    def root(self) -> Path:
        return self.folder / "root"

    def _path(self, rel: str) -> Path:
        """``rel`` inside root/.  A guest's symlinks are data: a path through one
        (a directory of the capture that is a link) is not followed, so nothing
        outside the capture is ever read; such a path reads as missing."""
        parts = PurePosixPath(rel.lstrip("/")).parts
        if ".." in parts:
            raise ValueError(f"not a guest path: {rel}")
        path = self.root
        for part in parts[:-1]:
            path = path / part
            if path.is_symlink():
                return self.root / ".hvlab-through-a-symlink" / "missing"
        return path / parts[-1] if parts else path

    def read_bytes(self, rel: str) -> bytes | None:
        """A guest file's bytes, or None when the capture does not have it."""
        path = self._path(rel)
        if path.is_symlink() or not path.is_file():
            return None
        return path.read_bytes()

    def read(self, rel: str) -> str | None:
        """A guest file's text, or None when the capture does not have it."""
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", "backslashreplace")

    def link(self, rel: str) -> str | None:
        """Where a guest symlink points (as the guest said), or None."""
        path = self._path(rel)
        return os.readlink(path) if path.is_symlink() else None

    def listdir(self, rel: str) -> list[str] | None:
        path = self._path(rel)
        if path.is_symlink() or not path.is_dir():
            return None
        return sorted(p.name for p in path.iterdir())

    def exists(self, rel: str) -> bool:
        path = self._path(rel)
        return path.is_symlink() or path.exists()

    def command(self, name: str, undecodable: str = "backslashreplace") -> str | None:
        """A command's output as captured; an invalid byte stays a visible ``\\xff``,
        or (``undecodable="replace"``) U+FFFD where the text is parsed as JSON."""
        path = self.folder / "commands" / f"{name}.txt"
        return path.read_bytes().decode("utf-8", undecodable) if path.is_file() else None

    @property
    def dmesg(self) -> str | None:
        path = self.folder / "dmesg.txt"
        return path.read_bytes().decode("utf-8", "backslashreplace") if path.is_file() else None

    @property
    def release(self) -> str:
        text = self.read("proc/sys/kernel/osrelease") or self.command("uname-r") or ""
        return text.strip()

    @property
    def on_hyperv(self) -> bool:
        return self.listdir("sys/bus/vmbus") is not None


def unpack(archive: Path, into: Path) -> Path:
    """A ``.tar.gz`` capture unpacked into ``into``; its folder.  Members must be
    files, folders or symlinks at relative paths without '..'; symlinks are kept
    as the guest had them (sysfs links point up and out of a capture's root: they
    are read with readlink and never followed, see Capture._path)."""
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for m in tf:
                parts = [x for x in m.name.split("/") if x not in ("", ".")]
                if m.name.startswith("/") or ".." in parts or not (
                        m.isreg() or m.isdir() or m.issym()):
                    raise UserError(f"{archive}: not a readable capture archive: member "
                                    f"{m.name!r} is not a file, folder or symlink inside it")
                if not parts:
                    continue
                dest = into.joinpath(*parts)
                if any(p.is_symlink() for p in (dest, *dest.parents) if into in p.parents):
                    raise UserError(f"{archive}: not a readable capture archive: member "
                                    f"{m.name!r} goes through a symlink")
                if m.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif m.issym():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(m.linkname, dest)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(m)
                    if src is None:
                        continue
                    with dest.open("wb") as out:
                        shutil.copyfileobj(src, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{archive}: not a readable capture archive: {exc}") from None
    found = [p.parent for p in into.rglob("dmesg.txt")]
    return min(found, key=lambda p: len(p.parts)) if found else into


def open_capture(place: Path, workdir: Path) -> Capture:
    """A capture given by a user (``inv test --capture``): a directory or a
    ``.tar.gz`` of one; refused (UserError) without root/sys/bus/vmbus or dmesg.txt."""
    if place.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="capture-", dir=workdir))
        folder = unpack(place, tmp)
    elif place.is_dir():
        folder = place
    else:
        raise UserError(f"--capture {place}: no such directory or .tar.gz file")
    for need in ("root/sys/bus/vmbus", "dmesg.txt"):
        if not (folder / need).exists():
            raise UserError(f"--capture {place}: not a guest capture: {need} is missing "
                            "(docs/suites.md, 'Captures')")
    return Capture(folder)


def pack(folder: Path, archive: Path) -> None:
    """``folder`` as ``archive`` (.tar.gz), written atomically."""
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    os.replace(tmp, archive)


def copy_into(src: Capture, dest: Path) -> None:
    """A capture's folder copied to ``dest`` (symlinks kept as symlinks)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src.folder, dest, symlinks=True)
