"""Where a series that does not apply would apply: the kernel's other refs
(the 0-day robot's "[cannot apply to ...]" line).

``source.other_refs`` of a git kernel names them (for example the
maintainer's next and fixes branches).  Each is fetched into the store
(``refs/hvlab/other/<kernel>/<ref>``; ``--offline`` uses what was fetched)
and the series is applied patch by patch with ``git apply --cached`` on a
private index of its tree: no worktree is touched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hvlab.fetch.source import store_lock
from hvlab.git import Git
from hvlab.model import GitSource
from hvlab.patch.discover import LoadedSeries
from hvlab.workspace import Workspace


@dataclass(frozen=True)
class Elsewhere:
    ref: str
    commit: str  # "" when it could not be fetched
    applies: bool
    stops_at: int = 0  # the first patch that does not apply there (0: all do)
    why: str = ""  # why it was not tried


def _local(kernel: str, ref: str) -> str:
    return f"refs/hvlab/other/{kernel}/" + "".join(
        c if c.isalnum() or c in "._-" else "-" for c in ref)


def try_refs(ws: Workspace, kernel: str, src: GitSource, series: LoadedSeries,
             offline: bool) -> list[Elsewhere]:
    g = Git(ws.store)
    out = []
    for ref in src.other_refs:
        local = _local(kernel, ref)
        if not offline:
            with store_lock(ws):  # refs/hvlab/ is the store lock's
                code, _, err = g.run("fetch", "--no-tags", "--quiet", src.url,
                                     f"+{ref}:{local}", check=False)
            if code != 0:
                last = err.strip().splitlines()[-1:] or [f"exit {code}"]
                out.append(Elsewhere(ref, "", False, why=f"not fetched: {last[0]}"))
                continue
        commit = g.rev(local)
        if commit is None:
            out.append(Elsewhere(ref, "", False, why="not fetched yet (--offline)"))
            continue
        out.append(_apply_on(g, ref, commit, series))
    return out


def _apply_on(g: Git, ref: str, commit: str, series: LoadedSeries) -> Elsewhere:
    with tempfile.TemporaryDirectory(prefix="hvlab-elsewhere-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        g.run("read-tree", commit, env=env)
        for patch in series.patches:
            file = Path(tmp) / f"{patch.index:04d}.patch"
            file.write_bytes(patch.data)
            code, _, _ = g.run("apply", "--cached", "--3way", str(file), env=env, check=False)
            if code != 0:
                return Elsewhere(ref, commit, False, patch.index)
    return Elsewhere(ref, commit, True)


def describe(kernel: str, source_ref: str, found: list[Elsewhere]) -> str:
    """``[cannot apply to linux-6.1 main; applies to hyperv-next; not to hyperv-fixes
    (patch 2)]``."""
    yes = [e.ref for e in found if e.applies]
    no = [f"{e.ref} (patch {e.stops_at})" if e.stops_at else f"{e.ref} ({e.why})"
          for e in found if not e.applies]
    parts = [f"cannot apply to {kernel} {source_ref}"]
    if yes:
        parts.append(f"applies to {', '.join(yes)}")
    if no:
        parts.append(f"not to {', '.join(no)}")
    return "[" + "; ".join(parts) + "]"
