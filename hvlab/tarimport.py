"""Import a kernel tarball into the git store without unpacking it to disk.

Members stream from ``tarfile`` into ``git fast-import``: no temporary tree,
no ``.gitignore`` surprises (Debian's linux-source tarball ignores its own top
level), one deterministic commit (fixed identity, date = newest member).
Unsafe members (absolute paths, ``..``, links escaping the tree, devices)
refuse the whole tarball and nothing is referenced.
"""

from __future__ import annotations

import posixpath
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import InfraError, UserError


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


def import_tarball(store: Path, tarball: Path | IO[bytes], ref: str, message: str,
                   log: Path | None = None) -> str:
    """Stream ``tarball`` into ``store`` as one commit on ``ref``; return its sha."""
    errlog = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(  # noqa: S603 - fixed argument list
        ["git", "--git-dir", str(store), "fast-import", "--quiet", "--done",
         "--date-format=raw"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog,
        start_new_session=True,
    )
    assert proc.stdin is not None
    out = proc.stdin
    entries: list[Entry] = []
    by_path: dict[str, int] = {}
    newest = 0
    ok = False
    try:
        try:
            if isinstance(tarball, Path):
                tf = tarfile.open(tarball, mode="r|*")
            else:
                tf = tarfile.open(fileobj=tarball, mode="r|*")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(f"{tarball}: not a readable tarball ({exc})") from None
        with tf:
            mark = 0
            try:
                for m in tf:
                    kind = _kind(m)
                    try:
                        path = check_member(m.name, kind, m.linkname)
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
            except (tarfile.TarError, EOFError, OSError) as exc:
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
