#!/usr/bin/env python3
"""A cold arm64 cross build: hvlab vs plain ``make ARCH=arm64
CROSS_COMPILE=aarch64-linux-gnu-`` of the same tree, final .config, targets
(Image modules) and -j, ccache off.

Goal: hvlab / make <= 1.03.  Usage: bench/build_cross.py [KERNEL] [JOBS] [ROUNDS]
(KERNEL defaults to linux-6.1-arm64; ROUNDS=2 alternates make, hvlab, hvlab,
make and compares the sums.)
"""

from __future__ import annotations

import os
import sys

from _common import cold_vs_make

cold_vs_make(sys.argv[1] if len(sys.argv) > 1 else "linux-6.1-arm64",
             int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1),
             int(sys.argv[3]) if len(sys.argv) > 3 else 2, "build_cross", "<= 1.03")
