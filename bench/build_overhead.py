#!/usr/bin/env python3
"""hvlab build vs plain make: same tree, same final .config, same -j, cold, no ccache.

Goal: hvlab / make <= 1.03.  Usage: bench/build_overhead.py [KERNEL] [JOBS] [ROUNDS]

Long cold builds on a shared VM get slower as they go (CPU credits), which
penalises whichever side runs second; ROUNDS=2 (the default) runs
make, hvlab, hvlab, make and compares the sums.
"""

from __future__ import annotations

import os
import sys

from _common import cold_vs_make

cold_vs_make(sys.argv[1] if len(sys.argv) > 1 else "linux-6.1",
             int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1),
             int(sys.argv[3]) if len(sys.argv) > 3 else 2, "build_overhead", "<= 1.03")
