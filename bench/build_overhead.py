#!/usr/bin/env python3
"""hvlab build vs plain make: same tree, same final .config, same -j, cold, no ccache.

Goal: hvlab / make <= 1.03.  Usage: bench/build_overhead.py [KERNEL] [JOBS] [ROUNDS]

Long cold builds on a shared VM get slower as they go (CPU credits), which
penalises whichever side runs second; ROUNDS=2 (the default) runs
make, hvlab, hvlab, make and compares the sums.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import INV, KERNELS, hvlab_cold_build, last_build, report, timed

kernel = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
jobs = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
tree = KERNELS / "worktrees" / kernel

# Settle the inputs (fetch, configure, the tree at its commit) outside the timing.
timed([*INV, "build", "--kernel", kernel, f"--jobs={jobs}"])  # settle: fetch, configure
artifacts, meta = last_build()
config = (artifacts / "config").read_text()
targets = str(meta["make_command"]).split()[-2:] if "modules" in str(meta["make_command"]) \
    else ["bzImage"]



def plain() -> float:
    with tempfile.TemporaryDirectory(prefix="bench-make-") as tmp:
        build_dir = Path(tmp) / "build"
        build_dir.mkdir()
        (build_dir / ".config").write_text(config)
        seconds = timed(["make", "-C", str(tree), f"O={build_dir}", "ARCH=x86_64",
                         f"-j{jobs}", *targets], env={"LC_ALL": "C"})
        shutil.rmtree(build_dir)
    return seconds


def hvlab_once() -> float:
    return hvlab_cold_build(kernel, jobs)


make_runs: list[float] = []
hvlab_runs: list[float] = []
for r in range(rounds):  # ABBA...: each side runs first as often as second
    if r % 2 == 0:
        make_runs.append(plain())
        hvlab_runs.append(hvlab_once())
    else:
        hvlab_runs.append(hvlab_once())
        make_runs.append(plain())
    print(f"round {r + 1}: make {make_runs[-1]:.1f} s, hvlab {hvlab_runs[-1]:.1f} s", flush=True)
report(f"build_overhead (cold, ccache off, {rounds} alternating rounds, sums)",
       sum(hvlab_runs), sum(make_runs), "plain make", "<= 1.03",
       sum(hvlab_runs) / sum(make_runs))
