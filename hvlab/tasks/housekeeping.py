"""`inv status` (what kernels/ holds) and `inv clean` (old builds, idle worktrees).

The shared object store is never touched: fetching again would cost minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hvlab.errors import HvlabError
from hvlab.locks import FileLock
from hvlab.report import unfinished
from hvlab.results import StageResult, Status, TestCase
from hvlab.tasks.session import Scope, Session
from hvlab.workspace import Workspace


def size_of(path: Path) -> int:
    """Bytes on disk under ``path`` (files counted once, symlinks not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class Build:
    path: Path
    kernel: str
    release: str
    created: float  # epoch seconds
    size: int


def builds(ws: Workspace) -> list[Build]:
    out = []
    for meta in ws.builds.glob("*/metadata.json"):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            data = {}
        out.append(Build(meta.parent, str(data.get("kernel", "?")),
                         str(data.get("kernelrelease", "?")), meta.stat().st_mtime,
                         size_of(meta.parent)))
    return sorted(out, key=lambda b: b.created)


@dataclass(frozen=True)
class KernelsStatus:
    """What `inv status` reports (lines for people, as_json for scripts)."""

    kernels: Path
    parts: tuple[tuple[str, str, int, tuple[str, ...]], ...]  # (label, key, bytes, names)
    builds: tuple[Build, ...]
    unfinished: tuple[unfinished.Unfinished, ...]
    now: float

    @property
    def total(self) -> int:
        return sum(p[2] for p in self.parts) + sum(b.size for b in self.builds)

    def lines(self) -> list[str]:
        lines = [f"kernels/: {self.kernels}"]
        for label, _, size, names in self.parts:
            extra = f" ({', '.join(names)})" if names else ""
            lines.append(f"  {label}: {human(size)}{extra}")
        lines.append(f"  builds: {len(self.builds)}, {human(sum(b.size for b in self.builds))}")
        for b in self.builds[-10:]:
            lines.append(f"    {b.path.name[:16]}  {b.kernel} {b.release}  "
                         f"{(self.now - b.created) / 86400:.1f} days old  {human(b.size)}")
        lines.append(f"  total: {human(self.total)}")
        if self.unfinished:
            lines.append(f"reports/: {len(self.unfinished)} runs not finished")
            lines += [f"  {r.line()}" for r in self.unfinished]
        return lines

    def as_json(self) -> dict[str, object]:
        return {
            "kernels": str(self.kernels),
            "bytes": {key: size for _, key, size, _ in self.parts},
            "worktrees": list(next(p[3] for p in self.parts if p[1] == "worktrees")),
            "builds": [{"id": b.path.name, "kernel": b.kernel, "release": b.release,
                        "age_days": round((self.now - b.created) / 86400, 2), "bytes": b.size}
                       for b in self.builds],
            "total_bytes": self.total,
            "unfinished": [r.line() for r in self.unfinished],
        }


def status(ws: Workspace) -> KernelsStatus:
    parts = []
    for label, key, path in (
            ("object store", "store", ws.store), ("worktrees", "worktrees", ws.worktrees),
            ("build dirs (incremental)", "build_dirs", ws.builds / "work"),
            ("ccache", "ccache", ws.kernels / "ccache"),
            ("guest images", "images", ws.kernels / "images"), ("cache", "cache", ws.cache)):
        names: tuple[str, ...] = ()
        if key == "worktrees" and path.is_dir():
            names = tuple(sorted(p.name for p in path.iterdir()))
        parts.append((label, key, size_of(path) if path.exists() else 0, names))
    return KernelsStatus(ws.kernels, tuple(parts), tuple(builds(ws)),
                         tuple(unfinished.find(ws.reports)), time.time())


def clean(s: Session, days: float, budget_gb: float, worktrees: bool, dry_run: bool) -> None:
    """Remove builds older than ``days`` and, oldest first, beyond ``budget_gb``;
    stale staging folders; with ``worktrees``, worktrees nobody holds."""
    ws = s.ws
    s.progress.stage("clean", "kernels/")
    t0 = time.monotonic()
    cases: list[TestCase] = []
    now = time.time()
    found = builds(ws)
    keep_bytes = budget_gb * (1 << 30) if budget_gb > 0 else None
    total = sum(b.size for b in found)
    doomed: list[tuple[Build, str]] = []
    for b in found:  # oldest first
        if now - b.created > days * 86400:
            doomed.append((b, f"older than {days:g} days"))
            total -= b.size
    for b in found:
        if keep_bytes is not None and total > keep_bytes and all(b != d for d, _ in doomed):
            doomed.append((b, f"over the {budget_gb:g} GiB budget"))
            total -= b.size
    for b, why in doomed:
        verb = "would remove" if dry_run else "removed"
        if not dry_run:
            shutil.rmtree(b.path, ignore_errors=True)
        cases.append(TestCase(f"build {b.path.name[:16]}", Status.PASS,
                              output=f"{verb}: {b.kernel} {b.release}, {human(b.size)}, {why}\n"))
    for stale in ws.builds.glob(".staging-*"):
        if now - stale.stat().st_mtime > 3600:
            if not dry_run:
                shutil.rmtree(stale, ignore_errors=True)
            cases.append(TestCase(f"staging {stale.name}", Status.PASS, output="stale\n"))
    if worktrees and ws.worktrees.is_dir():
        for tree in sorted(ws.worktrees.iterdir()):
            lock = FileLock(ws.locks / f"worktree-{tree.name}.lock",
                            f"the worktree of kernel '{tree.name}'", wait=False)
            try:
                lock.acquire()
            except HvlabError as exc:
                cases.append(TestCase(f"worktree {tree.name}", Status.SKIP, str(exc)))
                continue
            try:
                if not dry_run:
                    _drop_worktree(ws, tree)
                cases.append(TestCase(f"worktree {tree.name}", Status.PASS,
                                      output=("would remove" if dry_run else "removed") + "\n"))
            finally:
                lock.release()
    freed = sum(b.size for b, _ in doomed)
    s.progress.info(f"{'would free' if dry_run else 'freed'} {human(freed)} of builds; "
                    f"{len(found) - len(doomed)} builds kept")
    if not cases:
        cases.append(TestCase("clean", Status.PASS, output="nothing to remove\n"))
    s.record(StageResult.from_cases("clean", cases, time.monotonic() - t0), Scope("-"))


def _drop_worktree(ws: Workspace, tree: Path) -> None:
    """Unregister it from the store (git worktree prune) and delete it."""
    shutil.rmtree(tree, ignore_errors=True)
    from hvlab.proc import run

    run(["git", "--git-dir", str(ws.store), "worktree", "prune"])
