#!/usr/bin/env python3
"""hvlab on unchanged inputs vs a plain no-op make in the same build dir.

Goal: hvlab at least 10x faster (the printed ratio is make / hvlab >= 10).
Usage: bench/build_nochange.py [KERNEL] [SERIES] [JOBS]
"""

from __future__ import annotations

import os
import shlex
import sys

from _common import INV, last_build, report, timed

kernel = sys.argv[1] if len(sys.argv) > 1 else "linux-6.1"
series = sys.argv[2] if len(sys.argv) > 2 else "hyperv-sample"
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else (os.cpu_count() or 1)
args = [*INV, "build", "--kernel", kernel, "--series", series, f"--jobs={jobs}"]

timed(args)  # make sure everything is built and cached
artifacts, meta = last_build()
command = shlex.split(str(meta["make_command"]))
runs = 5
hvlab = min(timed(args) for _ in range(runs))
make = min(timed(command, env={"LC_ALL": "C"}) for _ in range(runs))
report(f"build_nochange (best of {runs})", hvlab, make, "plain make no-op", "make/hvlab >= 10",
       make / hvlab)
