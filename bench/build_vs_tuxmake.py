#!/usr/bin/env python3
"""hvlab vs tuxmake (--runtime null), same tree, same .config, same -j, cold, no ccache.

Goal: hvlab / tuxmake <= 1.0.  Installs tuxmake into the running Python when
missing.  Usage: bench/build_vs_tuxmake.py [KERNEL] [JOBS] [ROUNDS]
ROUNDS=2 (the default) runs tuxmake, hvlab, hvlab, tuxmake and compares the
sums, so neither side always runs second on a VM that slows down over time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import INV, KERNELS, hvlab_cold_build, last_build, report, timed

kernel = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
jobs = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
tree = KERNELS / "worktrees" / kernel

tuxmake = shutil.which("tuxmake", path=str(Path(sys.executable).parent))
if tuxmake is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "tuxmake"], check=True)
    tuxmake = str(Path(sys.executable).parent / "tuxmake")

timed([*INV, "build", "--kernel", kernel, f"--jobs={jobs}"])  # settle: fetch, configure
artifacts, meta = last_build()
targets = ["kernel", "modules"] if "modules" in str(meta["make_command"]) else ["kernel"]



def tux_once() -> float:
    with tempfile.TemporaryDirectory(prefix="bench-tuxmake-") as tmp:
        return timed([tuxmake, "--runtime", "null", "--target-arch", "x86_64",
                      "--toolchain", "gcc", "--kconfig", str(artifacts / "config"),
                      f"--jobs={jobs}", "--directory", str(tree), "--build-dir",
                      f"{tmp}/build", "--output-dir", f"{tmp}/out", "--wrapper", "none",
                      *targets])


def hvlab_once() -> float:
    return hvlab_cold_build(kernel, jobs)


tux_runs: list[float] = []
hvlab_runs: list[float] = []
for r in range(rounds):
    first, second = (tux_once, hvlab_once) if r % 2 == 0 else (hvlab_once, tux_once)
    a = first()
    b = second()
    tux_runs.append(a if first is tux_once else b)
    hvlab_runs.append(b if first is tux_once else a)
    print(f"round {r + 1}: tuxmake {tux_runs[-1]:.1f} s, hvlab {hvlab_runs[-1]:.1f} s",
          flush=True)
report(f"build_vs_tuxmake (cold, ccache off, {rounds} alternating rounds, sums)",
       sum(hvlab_runs), sum(tux_runs), "tuxmake", "<= 1.0",
       sum(hvlab_runs) / sum(tux_runs))
