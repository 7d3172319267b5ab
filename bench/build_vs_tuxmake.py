#!/usr/bin/env python3
"""hvlab vs tuxmake (--runtime null), same tree, same .config, same -j, cold, no ccache.

Goal: hvlab / tuxmake <= 1.0.  Installs tuxmake into the running Python when
missing.  Usage: bench/build_vs_tuxmake.py [KERNEL] [JOBS]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import INV, KERNELS, drop_build_dirs, last_build, report, timed

kernel = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
jobs = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
tree = KERNELS / "worktrees" / kernel

tuxmake = shutil.which("tuxmake", path=str(Path(sys.executable).parent))
if tuxmake is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "tuxmake"], check=True)
    tuxmake = str(Path(sys.executable).parent / "tuxmake")

timed([*INV, "build", "--kernel", kernel, f"--jobs={jobs}"])  # settle: fetch, configure
artifacts, meta = last_build()
targets = ["kernel", "modules"] if "modules" in str(meta["make_command"]) else ["kernel"]

with tempfile.TemporaryDirectory(prefix="bench-tuxmake-") as tmp:
    tux = timed([tuxmake, "--runtime", "null", "--target-arch", "x86_64", "--toolchain", "gcc",
                 "--kconfig", str(artifacts / "config"), f"--jobs={jobs}",
                 "--directory", str(tree), "--build-dir", f"{tmp}/build",
                 "--output-dir", f"{tmp}/out", "--wrapper", "none", *targets])

drop_build_dirs(kernel)
hvlab = timed([*INV, "build", "--kernel", kernel, "--no-ccache", "--force", f"--jobs={jobs}"])
report("build_vs_tuxmake (cold, ccache off)", hvlab, tux, "tuxmake", "<= 1.0", hvlab / tux)
