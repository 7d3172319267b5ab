"""Read a series from disk: a directory (``series`` file or name order) or a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvlab.errors import UserError
from hvlab.patch import series as S
from hvlab.patch.origin import base_commit


@dataclass(frozen=True)
class LoadedSeries:
    name: str
    path: Path
    patches: tuple[S.Patch, ...]
    problems: tuple[str, ...]  # "file:line: message", empty when usable
    cover: str = ""  # the cover letter, when the series has one
    base_commit: str = ""  # the commit it names as its base (format-patch --base)

    @property
    def patchset_hash(self) -> str:
        return S.patchset_hash(self.patches)


MAX_PATCH_BYTES = 64 << 20  # far above any patch a list or a maintainer sends
MAX_PATCHES = 5000  # a series, not a tree's history
MAX_SERIES_FILE = 1 << 20


def _inside(f: Path, root: Path) -> bool:
    """``f`` (after symlinks) lies in the series directory: a series in a
    repository that takes pull requests cannot name /etc/shadow."""
    try:
        return f.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
        return False


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _maildir(path: Path, display: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """A maildir's messages (cur/ and new/), in the order of their ``[PATCH n/m]``."""
    files, problems = [], []
    for sub in ("cur", "new"):
        for f in sorted((path / sub).iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if not _inside(f, path):
                problems.append(f"{display}/{sub}/{f.name}: a link that points outside the "
                                "maildir")
                continue
            files.append((f, f"{display}/{sub}/{f.name}"))
    head = {f: S.mail_headers(f.read_bytes()[:65536]) for f, _ in files}
    files.sort(key=lambda item: S.counter(head[item[0]].get("subject", "")))
    return files, problems


def _files(path: Path, display: str) -> tuple[list[tuple[Path, str]], list[str]]:
    if is_maildir(path):
        return _maildir(path, display)
    problems: list[str] = []
    series_file = path / "series"
    if series_file.is_file():
        if not _inside(series_file, path):  # its lines would be echoed in problems
            return [], [f"{display}/series: a link that points outside the series directory"]
        if series_file.stat().st_size > MAX_SERIES_FILE:
            return [], [f"{display}/series: larger than any series file should be "
                        f"({MAX_SERIES_FILE} bytes at most)"]
        entries, issues = S.parse_series_file(series_file.read_text("utf-8", "replace"))
        problems += [f"{display}/series:{i.line}: {i.message}" for i in issues]
        files = []
        for e in entries:
            f = path / e.name
            if not _inside(f, path):
                problems.append(f"{display}/series:{e.line}: patch '{e.name}' points outside "
                                "the series directory")
            elif not f.is_file():
                problems.append(f"{display}/series:{e.line}: patch '{e.name}' does not exist")
            else:
                files.append((f, f"{display}/{e.name}"))
        return files, problems
    files = []
    for f in sorted(path.iterdir()):
        if not f.is_file() or not S.is_patch_file_name(f.name):
            continue
        if not _inside(f, path):
            problems.append(f"{display}/{f.name}: a link that points outside the series "
                            "directory")
            continue
        files.append((f, f"{display}/{f.name}"))
    return files, problems


def _bounded(files: list[tuple[Path, str]], display: str) -> list[str]:
    if len(files) > MAX_PATCHES:
        return [f"{display}: {len(files)} patch files: more than a series holds "
                f"({MAX_PATCHES} at most)"]
    out = []
    for f, shown in files:
        size = f.stat().st_size
        if size > MAX_PATCH_BYTES:
            out.append(f"{shown}:1: {size} bytes: larger than any patch should be "
                       f"({MAX_PATCH_BYTES >> 20} MiB at most)")
    return out


def load_series(name: str, path: Path, display: str | None = None,
                cover: str = "") -> LoadedSeries:
    """Load and parse; problems are returned, not raised (config.check lists them all).
    ``cover``: the cover letter when it comes apart from the patches (b4)."""
    display = display or str(path)
    maildir = path.is_dir() and is_maildir(path)
    if path.is_dir():
        files, problems = _files(path, display)
    elif path.is_file():
        files, problems = [(path, display)], []
    else:
        return LoadedSeries(name, path, (), (f"{display}: no such patch directory or file",))
    too_big = _bounded(files, display)
    if too_big:
        return LoadedSeries(name, path, (), tuple(problems + too_big))
    patches: list[S.Patch] = []
    for f, shown in files:
        data = f.read_bytes()
        cover = cover or S.cover_letter(data)
        found = S.parse_patch_file(shown, data)
        if not found and maildir and S.mail_headers(data):
            continue  # a maildir also holds the cover letter and the replies
        if not found:
            problems.append(f"{shown}:1: no patch found (neither a mail with a diff nor a diff)")
        patches.extend(found)
    if len(patches) > MAX_PATCHES:  # one mbox of many messages
        problems.append(f"{display}: {len(patches)} patches: more than a series holds "
                        f"({MAX_PATCHES} at most)")
    if not files and not problems:
        problems.append(f"{display}: the series is empty")
    first = cover or (patches[0].data.decode("utf-8", "replace") if patches else "")
    return LoadedSeries(name, path, tuple(S.number(patches)), tuple(problems), cover,
                        base_commit(first))


def load_series_or_raise(name: str, path: Path, display: str | None = None,
                         cover: str = "") -> LoadedSeries:
    loaded = load_series(name, path, display, cover)
    if loaded.problems:
        raise UserError(f"series '{name}': " + "; ".join(loaded.problems))
    return loaded
