#!/usr/bin/env python3
"""The cheap matrix: the sample series over the four arch/toolchain cells of
the arches plan (x86_64 gcc, x86_64 clang, arm64, i386), every cell built
only and touched-only, warm, against one incremental x86_64 build of the
same series.

Setup (not timed): ``inv build`` of linux-6.1 with the series (the raw side's
make command and build directory), then the matrix once, so every cell has
been built before.  Each measured run first rewrites one line that patch 1
of the series adds (fresh every run, so nothing is found cached).
hvlab: ``inv run --plan matrix --checks none`` (a plan of the four kernels,
all under build_only): per cell, re-apply, configure (cached), and for the
series make modules_prepare and make drivers/hv/; the baselines are unchanged
and answer from their records.  Raw: in linux-6.1's worktree and build
directory, ``git am`` of the series on its base and an incremental ``make``
with hvlab's own command line (bzImage modules).  Alternating, median of 3.
Goal: hvlab / raw <= 4.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    INV,
    REPORTS,
    EditedSeries,
    alternate,
    built_from_latest,
    medians,
    raw_am_and_make,
    timed,
)

RUNS = 3
SERIES = "hyperv-sample"
KERNELS_OF_PLAN = ["linux-6.1", "linux-6.1-clang", "linux-6.1-arm64", "linux-6.1-i386"]
work = Path(tempfile.mkdtemp(prefix="bench-matrix-"))
series = EditedSeries(work, SERIES)
(series.configs / "plans" / "matrix.yaml").write_text(
    f"kernels: [{', '.join(KERNELS_OF_PLAN)}]\nseries: [{SERIES}]\n"
    f"build_only: [{', '.join(KERNELS_OF_PLAN)}]\n")
MATRIX = [*INV, "run", "--plan", "matrix", "--checks", "none"]

timed([*INV, "build", "--kernel", "linux-6.1", "--series", SERIES, "--checks", "none"],
      env=series.env)
base, make, tree = built_from_latest()
timed(MATRIX, env=series.env)  # every cell built once
scopes = [line.split('value="')[1].split('"')[0]
          for line in (REPORTS / "latest" / "junit.xml").read_text().splitlines()
          if 'name="build_scope"' in line]
assert scopes and set(scopes) == {"touched only: drivers/hv/"}, scopes


def hvlab() -> float:
    series.edit()
    return timed(MATRIX, env=series.env)


def raw() -> float:
    series.edit()
    t0 = time.monotonic()
    raw_am_and_make(tree, base, series.patches, make)
    return time.monotonic() - t0


try:
    mine, theirs = alternate(hvlab, raw, RUNS)
finally:
    shutil.rmtree(work, ignore_errors=True)
medians("matrix, 4 cells", mine, "one incremental x86_64 build", theirs, "<= 4")
