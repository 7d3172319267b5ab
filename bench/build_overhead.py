#!/usr/bin/env python3
"""hvlab build vs plain make: same tree, same final .config, same -j, cold, no ccache.

Goal: hvlab / make <= 1.03.  Run after one `inv build --kernel KERNEL` so the
tree is fetched and configured.  Usage: bench/build_overhead.py [KERNEL] [JOBS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import INV, KERNELS, drop_build_dirs, last_build, report, timed

kernel = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
jobs = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
tree = KERNELS / "worktrees" / kernel

# Settle the inputs (fetch, configure, the tree at its commit) outside the timing.
timed([*INV, "build", "--kernel", kernel, f"--jobs={jobs}"])  # settle: fetch, configure
artifacts, meta = last_build()
config = (artifacts / "config").read_text()
targets = str(meta["make_command"]).split()[-2:] if "modules" in str(meta["make_command"]) \
    else ["bzImage"]

with tempfile.TemporaryDirectory(prefix="bench-make-") as tmp:
    build_dir = Path(tmp) / "build"
    build_dir.mkdir()
    (build_dir / ".config").write_text(config)
    make = timed(["make", "-C", str(tree), f"O={build_dir}", "ARCH=x86_64", f"-j{jobs}",
                  *targets], env={"LC_ALL": "C"})
    shutil.rmtree(build_dir)

drop_build_dirs(kernel)
hvlab = timed([*INV, "build", "--kernel", kernel, "--no-ccache", "--force", f"--jobs={jobs}"])
report("build_overhead (cold, ccache off)", hvlab, make, "plain make", "<= 1.03",
       hvlab / make)
