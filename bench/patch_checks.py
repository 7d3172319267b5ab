#!/usr/bin/env python3
"""Every per-patch check on a series, on a warm build dir: hvlab vs the same
tools run by hand on the same files.

hvlab: ``inv build --kernel K --series S`` with its build cached and its kept
check findings and patch results dropped first, so it runs checkpatch on each
patch and, per patch and state (the parent, the patch), ``make W=1 C=2`` on the
touched C files the build compiled and kernel-doc on the touched .c/.h.
By hand: the same commands in the same tree and check build directory, each
(commit, file) state once, as hvlab does.  Alternating, median of 3.
Goal: hvlab / by hand <= 1.2.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import INV, KERNELS, REPORTS, timed

KERNEL = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
SERIES = sys.argv[2] if len(sys.argv) > 2 else "hyperv-sample"
RUNS = 3
build = [*INV, "build", "--kernel", KERNEL, "--series", SERIES]
timed(build)  # settle fetch, patch, configure, build and the check directory
meta = json.loads((REPORTS / "latest" / "metadata.json").read_text())
facts = meta["cells"][0]["facts"]
base, head = facts["base_commit"], facts["commit"]
built = json.loads((KERNELS / "builds" / facts["build_id"] / "metadata.json").read_text())
make = shlex.split(built["make_command"])
out = next(a for a in make if a.startswith("O="))[2:]
check_dir = out + "-check"
make = [a if not a.startswith("O=") else f"O={check_dir}" for a in make
        if not a.startswith("-j") and a not in ("bzImage", "modules")]
tree = Path(make[make.index("-C") + 1])
store = KERNELS / "git" / "store.git"


def git(*args: str, cwd: Path = store) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def by_hand() -> float:
    t0 = time.monotonic()
    done: set[tuple[str, str]] = set()
    parent = base
    for commit in git("rev-list", "--reverse", f"{base}..{head}").split():
        mail = git("format-patch", "-1", "--stdout", commit)
        subprocess.run(["perl", "scripts/checkpatch.pl", "--no-color", "--show-types",
                        "--max-line-length=100", "-"], cwd=tree, input=mail, text=True,
                       capture_output=True, check=False)
        files = git("diff-tree", "--no-commit-id", "--name-only", "-r", commit).split()
        for state in (parent, commit):
            for f in files:
                if (state, f) in done or not f.endswith((".c", ".h")):
                    continue
                done.add((state, f))
                git("checkout", "-q", "--detach", "--force", state, cwd=tree)
                obj = f[:-2] + ".o"
                if f.endswith(".c") and (Path(out) / obj).is_file():
                    (Path(check_dir) / obj).unlink(missing_ok=True)
                    subprocess.run([*make, "-j1", "W=1", "C=2", obj], capture_output=True,
                                   check=False)
                subprocess.run(["perl", "scripts/kernel-doc", "-none", f], cwd=tree,
                               capture_output=True, check=False)
        git("log", "-1", "--format=%B", commit)  # Fixes: and Signed-off-by: are read
        parent = commit
    git("checkout", "-q", "--detach", "--force", head, cwd=tree)
    return time.monotonic() - t0


def hvlab() -> float:
    shutil.rmtree(KERNELS / "cache" / "checks", ignore_errors=True)
    shutil.rmtree(KERNELS / "cache" / "patch", ignore_errors=True)
    return timed(build)


mine, theirs = [], []
for i in range(RUNS):
    for side in ((hvlab, mine), (by_hand, theirs))[:: 1 if i % 2 == 0 else -1]:
        side[1].append(side[0]())
h, b = statistics.median(mine), statistics.median(theirs)
print(f"hvlab runs: {', '.join(f'{x:.1f}' for x in mine)} s; "
      f"by hand: {', '.join(f'{x:.1f}' for x in theirs)} s")
print(f"patch checks on {SERIES}: hvlab {h:.2f} s, by hand {b:.2f} s (medians of {RUNS})")
print(f"ratio: {h / b:.3f}")
