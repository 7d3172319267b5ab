"""Import a kernel tarball into the git store without unpacking it to disk.

Members stream from ``tarfile`` into ``git fast-import``: no temporary tree,
no ``.gitignore`` surprises (Debian's linux-source tarball ignores its own top
level), one deterministic commit (fixed identity, date = newest member).
Unsafe members (absolute paths, ``..``, links escaping the tree, devices),
judged first by ``tarfile.data_filter``, refuse the whole tarball and nothing
is referenced.
"""

from __future__ import annotations

import bz2
import collections
import gzip
import lzma
import posixpath
import subprocess
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from hvlab import procs
from hvlab.errors import InfraError, UserError


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, normalised, no leading "./"
    mode: str  # git mode: 100644, 100755, 120000
    mark: int


def check_member(name: str, kind: str, linkname: str = "") -> str:
    """Validate one member; return its normalised path.  Raises ValueError.

    ``kind`` is one of file, dir, symlink, hardlink, other.  Pure: tested
    without archives.
    """
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path with '..': {name!r}")
    path = "/".join(parts)
    if kind == "other":
        raise ValueError(f"device, fifo or other special file {name!r}")
    if kind in ("symlink", "hardlink"):
        if not linkname or linkname.startswith("/"):
            raise ValueError(f"link {name!r} points to an absolute path {linkname!r}")
        base = posixpath.dirname(path) if kind == "symlink" else ""
        target = posixpath.normpath(posixpath.join(base, linkname))
        if target == ".." or target.startswith("../"):
            raise ValueError(f"link {name!r} -> {linkname!r} escapes the tree")
    return path


# data_filter resolves link targets under a destination with os.path.realpath:
# a root that does not exist keeps that purely lexical (no host symlink counts).
_NOWHERE = "/nonexistent/hvlab-tar-root"


def safe_member(m: tarfile.TarInfo) -> str:
    """The standard library's own refusal (``tarfile.data_filter``: absolute
    paths, paths and links leading outside the tree, devices and fifos), where
    this Python has it, then hvlab's own check, which also refuses what the
    filter lets through (any ``..``, drive letters) and stands alone on an
    older Python.  Returns the member's normalised path; raises ValueError."""
    data_filter = getattr(tarfile, "data_filter", None)  # Python 3.11.4+ (Debian 12: 3.11.2)
    if data_filter is not None:
        try:
            data_filter(m, _NOWHERE)
        except tarfile.TarError as exc:  # its FilterError
            why = _REFUSED.get(type(exc).__name__, "refused by tarfile.data_filter")
            link = f" -> {m.linkname!r}" if m.issym() or m.islnk() else ""
            raise ValueError(f"{why}: {m.name!r}{link}") from None
    return check_member(m.name, _kind(m), m.linkname)


_REFUSED = {  # tarfile's filter errors by name: they exist only where data_filter does
    "AbsolutePathError": "absolute path",
    "OutsideDestinationError": "path leading outside the tree",
    "SpecialFileError": "device, fifo or other special file",
    "AbsoluteLinkError": "link to an absolute path",
    "LinkOutsideDestinationError": "link escaping the tree",
}


def common_prefix(paths: Iterable[str]) -> str:
    """The single top-level directory every path is inside, or ''."""
    prefix: str | None = None
    for p in paths:
        head, sep, _ = p.partition("/")
        if not sep:
            return ""
        if prefix is None:
            prefix = head
        elif head != prefix:
            return ""
    return prefix + "/" if prefix else ""


class _Tracked:
    """A read-only stream that remembers the last chunks it returned.

    tarfile's stream mode treats a truncated or invalid header after the
    first member as the end of the archive; keeping the tail lets us insist
    on a real end-of-archive (zero) block instead.
    """

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self.pos = 0
        self.chunks: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=16)

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.chunks.append((self.pos, data))
            self.pos += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass

    def block_at(self, offset: int) -> bytes | None:
        """The 512 bytes at ``offset`` if they are still remembered."""
        for start, data in self.chunks:
            if start <= offset < start + len(data):
                joined = b"".join(d for s, d in self.chunks if s >= start)
                return joined[offset - start : offset - start + tarfile.BLOCKSIZE]
        return None


def _decompressed(path: Path) -> Readable:
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    return path.open("rb")


_READ_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)


def _check_end(tracked: _Tracked, offset: int, name: str) -> None:
    """The archive must stop at a zero block, not at a cut or garbage header."""
    tracked.drain()
    block = tracked.block_at(offset)
    if tracked.pos - offset < tarfile.BLOCKSIZE or block is None or block.strip(b"\0"):
        raise UserError(f"{name}: corrupt or truncated tarball (no end-of-archive block "
                        f"after offset {offset})")


def _kind(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    return "other"


def _data(out: IO[bytes], payload: bytes) -> None:
    out.write(b"data %d\n" % len(payload))
    out.write(payload)
    out.write(b"\n")


def import_tarball(store: Path, tarball: Path, ref: str, message: str,
                   log: Path | None = None) -> str:
    """Stream ``tarball`` into ``store`` as one commit on ``ref``; return its sha.

    One function on purpose: the tar reader, the fast-import pipe and their
    cleanup on any exception share one streaming pass (nothing is unpacked)."""
    errlog = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(  # noqa: S603 - fixed argument list
        ["git", "--git-dir", str(store), "fast-import", "--quiet", "--done",
         "--date-format=raw"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog,
        start_new_session=True, preexec_fn=procs.die_with_parent,
    )
    assert proc.stdin is not None
    out = proc.stdin
    entries: list[Entry] = []
    by_path: dict[str, int] = {}
    newest = 0
    ok = False
    try:
        tracked = _Tracked(_decompressed(tarball))
        try:
            tf = tarfile.open(fileobj=tracked, mode="r|")  # type: ignore[call-overload]
        except _READ_ERRORS as exc:
            raise UserError(f"{tarball}: corrupt or truncated tarball ({exc})") from None
        with tf:
            mark = 0
            try:
                for m in tf:
                    kind = _kind(m)
                    try:
                        path = safe_member(m)
                    except ValueError as exc:
                        raise UserError(f"unsafe tarball member: {exc}") from None
                    newest = max(newest, int(m.mtime))
                    if kind == "dir" or not path:
                        continue
                    if kind == "hardlink":
                        target = check_member(m.linkname, "file")
                        if target not in by_path:
                            raise UserError(f"unsafe tarball member: hard link {m.name!r} to "
                                            f"{m.linkname!r} which is not earlier in the archive")
                        src = entries[by_path[target]]
                        entries.append(Entry(path, src.mode, src.mark))
                        by_path[path] = len(entries) - 1
                        continue
                    mark += 1
                    out.write(b"blob\nmark :%d\n" % mark)
                    if kind == "symlink":
                        _data(out, m.linkname.encode("utf-8", "surrogateescape"))
                        mode = "120000"
                    else:
                        fh = tf.extractfile(m)
                        payload = fh.read() if fh else b""
                        if len(payload) != m.size:
                            raise UserError(f"{tarball}: truncated member {m.name!r}")
                        _data(out, payload)
                        mode = "100755" if m.mode & 0o111 else "100644"
                    entries.append(Entry(path, mode, mark))
                    by_path[path] = len(entries) - 1
                _check_end(tracked, tf.offset, str(tarball))
            except _READ_ERRORS as exc:
                if isinstance(exc, BrokenPipeError):
                    raise
                raise UserError(f"{tarball}: corrupt or truncated tarball ({exc})") from None
        if not entries:
            raise UserError(f"{tarball}: the tarball holds no files")
        prefix = common_prefix(e.path for e in entries)
        msg = message.encode()
        out.write(f"commit {ref}\n".encode())
        out.write(f"author hvlab <hvlab@localhost> {newest} +0000\n".encode())
        out.write(f"committer hvlab <hvlab@localhost> {newest} +0000\n".encode())
        _data(out, msg)
        out.write(b"deleteall\n")
        for e in entries:
            rel = e.path[len(prefix):]
            if rel:
                out.write(f"M {e.mode} :{e.mark} {rel}\n".encode("utf-8", "surrogateescape"))
        out.write(b"\ndone\n")
        out.close()
        code = proc.wait()
        if code != 0:
            raise InfraError(f"git fast-import failed with exit {code}"
                             + (f" (see {log})" if log else ""))
        ok = True
    except BrokenPipeError:
        proc.wait()
        raise InfraError("git fast-import stopped unexpectedly"
                         + (f" (see {log})" if log else "")) from None
    finally:
        if not ok:
            proc.kill()
            proc.wait()
            for tmp in (store / "objects" / "pack").glob("tmp_pack_*"):
                tmp.unlink(missing_ok=True)
        if log and not isinstance(errlog, int):
            errlog.close()
    rev = subprocess.run(  # noqa: S603
        ["git", "--git-dir", str(store), "rev-parse", "--verify", ref],
        capture_output=True, check=False)
    if rev.returncode != 0:
        raise InfraError(f"git fast-import did not create {ref}")
    return rev.stdout.decode().strip()
