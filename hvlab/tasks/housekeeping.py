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


def status_lines(ws: Workspace) -> list[str]:
    lines = [f"kernels/: {ws.kernels}"]
    parts = [("object store", ws.store), ("worktrees", ws.worktrees),
             ("build dirs (incremental)", ws.builds / "work"), ("ccache", ws.kernels / "ccache"),
             ("guest images", ws.kernels / "images"), ("cache", ws.cache)]
    total = 0
    for label, path in parts:
        size = size_of(path) if path.exists() else 0
        total += size
        extra = ""
        if label == "worktrees" and path.is_dir():
            extra = " (" + ", ".join(sorted(p.name for p in path.iterdir())) + ")"
        lines.append(f"  {label}: {human(size)}{extra}")
    found = builds(ws)
    bsize = sum(b.size for b in found)
    total += bsize
    lines.append(f"  builds: {len(found)}, {human(bsize)}")
    now = time.time()
    for b in found[-10:]:
        lines.append(f"    {b.path.name[:16]}  {b.kernel} {b.release}  "
                     f"{(now - b.created) / 86400:.1f} days old  {human(b.size)}")
    lines.append(f"  total: {human(total)}")
    runs = unfinished.find(ws.reports)
    if runs:
        lines.append(f"reports/: {len(runs)} runs not finished")
        lines += [f"  {r.line()}" for r in runs]
    return lines


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
