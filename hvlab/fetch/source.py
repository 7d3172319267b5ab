"""Fetch stage: one shared git object store, sources cached, worktrees per use.

* git: ``git fetch`` into the store (only missing objects travel; a second
  ref of the same upstream reuses them); a full sha already present needs no
  network.
* tarball: sha256 verified, streamed into the store by ``tarimport``, cached
  by the tarball's hash (``refs/hvlab/tarball/<sha256>``).
* path: the user's tree is only read: a git repository is fetched from, a
  plain directory is snapshotted through a private index.

Every kernel's last fetched commit is kept at ``refs/hvlab/kernels/<name>``
(that is also what ``--offline`` uses).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvlab.digest import sha256_file
from hvlab.errors import InfraError, UserError
from hvlab.fetch.tarimport import import_tarball
from hvlab.git import IDENTITY, Git, GitError, clear_stale_locks
from hvlab.locks import FileLock
from hvlab.model import GitSource, KernelSpec, PathSource, TarballSource
from hvlab.progress import Progress
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace


@dataclass(frozen=True)
class Fetched:
    kernel: str
    commit: str
    source: str  # human description
    cached: bool

    @property
    def facts(self) -> dict[str, str]:
        return {"kernel": self.kernel, "commit": self.commit}


def ensure_store(ws: Workspace) -> Git:
    store = ws.store
    if not (store / "HEAD").is_file():
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=store.parent))
        Git().run("init", "--quiet", "--bare", str(tmp))
        g = Git(tmp)
        g.run("config", "gc.auto", "0")  # gc under our lock only, never mid-run
        g.run("config", "core.logAllRefUpdates", "false")
        try:
            os.rename(tmp, store)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return Git(store)


# What git locks in the store while hvlab holds the store lock: the store's own
# files (HEAD, config, packed-refs, shallow), the refs hvlab keeps under
# refs/hvlab/, and a path source's private index.  The worktrees' files and
# branches (refs/heads/hvlab/<kernel>/) are guarded by each worktree's lock.
STORE_LOCKS = ("*.lock", "refs/hvlab/**/*.lock")


@contextmanager
def store_lock(ws: Workspace, progress: Progress | None = None) -> Iterator[None]:
    """The store to this process alone; git locks a killed run left in it removed."""
    with FileLock(ws.locks / "store.lock", "the git object store",
                  notify=progress.info if progress else None):
        if ws.store.is_dir():
            _said(ws, clear_stale_locks(ws.store, STORE_LOCKS), progress)
        _said(ws, clear_stale_locks(ws.cache / "path-index", ["*.lock"]), progress)
        yield


def _said(ws: Workspace, removed: list[Path], progress: Progress | None) -> None:
    for lock in removed:
        line = f"removed {ws.display(lock)}, a git lock a killed run left behind"
        if progress:
            progress.info(line)
        else:
            print(line, file=sys.stderr, flush=True)


# -- tarballs -------------------------------------------------------------------

def tarball_sha256(ws: Workspace, path: Path) -> str:
    """sha256 of a local tarball, remembered by (path, size, mtime) to stay fast."""
    memo = ws.cache / "tarball-hashes.json"
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return str(known[key])
    digest = sha256_file(path)
    known[key] = digest
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, memo)
    return digest


def _download(ws: Workspace, kernel: str, url: str, expected: str | None, offline: bool) -> Path:
    downloads = ws.cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + url.rsplit("/", 1)[-1]
    target = downloads / name
    if target.is_file():
        return target
    if offline:
        raise UserError(f"kernel '{kernel}': {url} is not in the cache and --offline was given")
    tmp = target.with_suffix(target.suffix + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as fh:
            shutil.copyfileobj(resp, fh, 1 << 20)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"kernel '{kernel}': {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, FileNotFoundError):
            raise UserError(f"kernel '{kernel}': {url}: no such file") from None
        raise InfraError(f"kernel '{kernel}': cannot download {url}: {reason}") from None
    os.replace(tmp, target)
    return target


def _fetch_tarball(ws: Workspace, g: Git, kernel: KernelSpec, src: TarballSource,
                   offline: bool, log: Path, progress: Progress) -> tuple[str, bool]:
    if src.is_url and not src.location.startswith("file://"):
        path = _download(ws, kernel.name, src.location, src.sha256, offline)
    else:
        path = Path(src.location.removeprefix("file://"))
    if not path.is_file():
        raise UserError(f"kernel '{kernel.name}': tarball {path} does not exist"
                        + (" (apt-get install linux-source-6.1)" if "linux-source" in path.name
                           else ""))
    digest = tarball_sha256(ws, path)
    if src.sha256 and digest != src.sha256:
        if src.is_url and not src.location.startswith("file://"):
            path.unlink(missing_ok=True)  # do not keep a bad download in the cache
        raise UserError(f"kernel '{kernel.name}': checksum mismatch for {path}: "
                        f"expected sha256 {src.sha256}, got {digest}")
    ref = f"refs/hvlab/tarball/{digest}"
    commit = g.rev(ref)
    if commit:
        return commit, True
    if offline:
        raise UserError(f"kernel '{kernel.name}': tarball {path} has not been imported yet "
                        "and --offline was given")
    progress.info(f"importing {path.name} into the git store (once per tarball)")
    commit = import_tarball(ws.store, path, ref,
                            f"Import {path.name}\n\nsha256: {digest}\n", log=log)
    return commit, False


# -- git and path sources ------------------------------------------------------------

def _fetch_git(g: Git, kernel: KernelSpec, src: GitSource, offline: bool) -> tuple[str, bool]:
    ref = src.ref
    last = f"refs/hvlab/kernels/{kernel.name}"
    is_sha = len(ref) >= 7 and all(c in "0123456789abcdef" for c in ref.lower())
    if is_sha:
        commit = g.rev(ref)
        if commit:
            return commit, True
    if offline:
        commit = g.rev(last)
        if commit and not is_sha:
            return commit, True
        raise UserError(f"kernel '{kernel.name}': ref '{ref}' of {src.url} is not in the "
                        "cache and --offline was given")
    code, _, err = g.run("fetch", "--no-tags", "--quiet", src.url, ref, check=False)
    if code != 0:
        text = err.strip()
        low = text.lower()
        if "couldn't find remote ref" in low or "not our ref" in low or \
                "unadvertised object" in low or "invalid refspec" in low:
            raise UserError(f"kernel '{kernel.name}': unknown ref '{ref}' in {src.url}")
        if "does not appear to be a git repository" in low or "not found" in low:
            raise UserError(f"kernel '{kernel.name}': {src.url} is not a git repository")
        raise InfraError(f"kernel '{kernel.name}': git fetch {src.url} {ref} failed: "
                         f"{text.splitlines()[-1] if text else 'exit ' + str(code)}")
    commit = g.rev("FETCH_HEAD")
    if not commit:
        raise InfraError(f"kernel '{kernel.name}': fetched {ref} but found no commit")
    return commit, False


def _fetch_path(ws: Workspace, g: Git, kernel: KernelSpec, src: PathSource,
                offline: bool) -> tuple[str, bool, str]:
    path = src.path
    if not path.is_dir():
        raise UserError(f"kernel '{kernel.name}': source path {path} is not a directory")
    note = ""
    user = Git(work_tree=path)
    if (path / ".git").exists():
        head = user.rev("HEAD")
        if head is None:
            raise UserError(f"kernel '{kernel.name}': {path} is a git repository without commits")
        if user.out("status", "--porcelain", "--untracked-files=no"):
            note = f"uncommitted changes in {path} are not part of this run (commit them)"
        if g.rev(head):
            return head, True, note
        g.run("fetch", "--no-tags", "--quiet", str(path), "HEAD")
        return head, False, note
    # A plain directory: snapshot it through a private index (its stat cache
    # makes the next snapshot fast); nothing is written into the user's tree.
    index = ws.cache / "path-index" / f"{kernel.name}.index"
    index.parent.mkdir(parents=True, exist_ok=True)
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(path)}
    g.run("add", "--force", "--all", ".", env=env)
    tree = g.out("write-tree", env=env)
    stamp = {"GIT_AUTHOR_DATE": "@0 +0000", "GIT_COMMITTER_DATE": "@0 +0000", **IDENTITY}
    commit = g.out("commit-tree", tree, "-m", f"Snapshot of {path}", env=stamp)
    return commit, False, "a plain directory is snapshotted whole, build outputs included"


def fetch(ws: Workspace, kernel: KernelSpec, offline: bool, log: Path,
          progress: Progress) -> tuple[Fetched, StageResult]:
    """The fetch stage: make ``kernel``'s commit present in the store."""
    t0 = time.monotonic()
    note = ""
    with store_lock(ws, progress):
        g = ensure_store(ws)
        src = kernel.source
        if isinstance(src, TarballSource):
            commit, cached = _fetch_tarball(ws, g, kernel, src, offline, log, progress)
            desc = f"tarball {src.location}"
        elif isinstance(src, GitSource):
            commit, cached = _fetch_git(g, kernel, src, offline)
            desc = f"git {src.url} {src.ref}"
        else:
            commit, cached, note = _fetch_path(ws, g, kernel, src, offline)
            desc = f"path {src.path}"
        g.run("update-ref", f"refs/hvlab/kernels/{kernel.name}", commit)
    duration = time.monotonic() - t0
    fetched = Fetched(kernel.name, commit, desc, cached)
    output = f"{desc}\ncommit {commit}\n" + ("cached\n" if cached else "") + \
        (f"note: {note}\n" if note else "")
    case = TestCase(f"fetch: {kernel.name}", Status.PASS, output=output, duration=duration,
                    log_path=log)
    result = StageResult.from_cases(
        "fetch", [case], duration, log,
        properties={"source": desc}, cached=cached)
    return fetched, result


# -- worktrees --------------------------------------------------------------------------

@contextmanager
def worktree_lock(ws: Workspace, kernel: str, progress: Progress | None = None
                  ) -> Iterator[None]:
    """The kernel's worktree to this process alone; git locks a killed run left
    on it removed."""
    with FileLock(ws.locks / f"worktree-{kernel}.lock", f"the worktree of kernel '{kernel}'",
                  notify=progress.info if progress else None):
        _said(ws, clear_worktree_locks(worktree_path(ws, kernel)), progress)
        yield


def worktree_path(ws: Workspace, kernel: str) -> Path:
    return ws.worktrees / kernel


def clear_worktree_locks(tree: Path) -> list[Path]:
    """Remove the git locks a killed run left on a kernel's worktree: its index,
    HEAD and ORIG_HEAD, and hvlab's branches of that kernel (the caller holds
    the worktree lock).  The worktree's git dir is read from its .git file."""
    try:
        link = (tree / ".git").read_text().strip()
    except OSError:
        return []
    if not link.startswith("gitdir: "):
        return []
    gitdir = Path(link.removeprefix("gitdir: "))
    if not gitdir.is_absolute():
        gitdir = tree / gitdir
    common = gitdir.parent.parent  # the store: <store>/worktrees/<name>
    return clear_stale_locks(gitdir, ["*.lock"]) + clear_stale_locks(
        common, [f"refs/heads/hvlab/{tree.name}/**/*.lock"])


def restore_clean(tree: Path, at: str = "") -> None:
    """Abort any half-done am/apply and drop every change (the tree is ours);
    with ``at``, leave it at that commit, detached.  A forced checkout of
    another commit already discards changes to tracked files: the reset is
    only needed when the tree stays where it is (each walk of a kernel tree's
    index costs a few tenths of a second)."""
    g = Git(work_tree=tree)
    gitdir = Path(g.out("rev-parse", "--git-dir"))
    if not gitdir.is_absolute():
        gitdir = tree / gitdir
    if (gitdir / "rebase-apply").exists():
        g.run("am", "--abort", check=False)
        shutil.rmtree(gitdir / "rebase-apply", ignore_errors=True)
    if at and g.rev("HEAD") != at:
        g.run("checkout", "--quiet", "--detach", "--force", at)
    else:
        g.run("reset", "--quiet", "--hard")
    g.run("clean", "-ffdxq")


def checkout_commit(tree: Path, commit: str) -> None:
    """Switch an existing worktree to ``commit`` (only the changed files are touched)."""
    g = Git(work_tree=tree)
    if g.rev("HEAD") != commit:
        g.run("checkout", "--quiet", "--detach", "--force", commit)


def checkout(ws: Workspace, kernel: str, commit: str, progress: Progress) -> Path:
    """The kernel's worktree, clean, at ``commit`` (caller holds the worktree lock)."""
    tree = worktree_path(ws, kernel)
    store = Git(ws.store)
    if not (tree / ".git").exists():
        with store_lock(ws, progress):
            store.run("worktree", "prune")
            if tree.exists():
                shutil.rmtree(tree)
            tree.parent.mkdir(parents=True, exist_ok=True)
            progress.info(f"checking out {commit[:12]} into {ws.display(tree)}")
            store.run("worktree", "add", "--quiet", "--detach", "--force", str(tree), commit)
        return tree
    restore_clean(tree, at=commit)
    return tree


__all__ = ["Fetched", "GitError", "checkout", "checkout_commit", "clear_worktree_locks",
           "ensure_store", "fetch", "restore_clean", "store_lock", "worktree_lock",
           "worktree_path"]
