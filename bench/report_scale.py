#!/usr/bin/env python3
"""100 000 KTAP results parsed and written as JUnit (+ summary.md, report.html):
hvlab's `inv report.import` vs the kernel's `kunit.py parse` on the same file.

Goal: hvlab under 3 s and 300 MB peak RSS; ratio (hvlab / kunit.py) <= 1.0.
Usage: bench/report_scale.py [RESULTS=100000]
kunit.py comes from tools/testing/kunit of the Debian 6.1 tarball.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import INV, report

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
per_suite = 100


def write_ktap(path: Path) -> None:
    suites = total // per_suite
    with path.open("w") as fh:
        fh.write(f"KTAP version 1\n1..{suites}\n")
        for s in range(1, suites + 1):
            fh.write(f"    KTAP version 1\n    # Subtest: suite_{s}\n    1..{per_suite}\n")
            for c in range(1, per_suite + 1):
                if c % 50 == 0:
                    fh.write(f"    # case_{c}: EXPECTATION FAILED at lib/test.c:{c}\n")
                    fh.write(f"    not ok {c} case_{c}\n")
                elif c % 25 == 0:
                    fh.write(f"    ok {c} case_{c} # SKIP not here\n")
                else:
                    fh.write(f"    ok {c} case_{c}\n")
            fh.write(f"not ok {s} suite_{s}\n")


def measured(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one command, measured in a fresh child."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.monotonic()\n"
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
             "stderr=subprocess.PIPE)\n"
             "print(time.monotonic() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n"
             "sys.stderr.write(r.stderr.decode()[-2000:])\n")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, check=True)
    seconds, rss_kib, code = done.stdout.split()
    if int(code) not in (0, 1, 3):
        sys.exit(f"failed ({code}): {' '.join(argv)}\n{done.stderr}")
    return float(seconds), int(rss_kib) / 1024


with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
    work = Path(tmp)
    data = work / "results.ktap"
    write_ktap(data)
    subprocess.run(["tar", "-xJf", str(TARBALL), "-C", str(work),
                    "linux-source-6.1/tools/testing/kunit"], check=True)
    kunit = work / "linux-source-6.1" / "tools" / "testing" / "kunit" / "kunit.py"
    env = {**os.environ, "HVLAB_REPORTS": str(work / "reports"),
           "HVLAB_CONFIGS": str(work / "configs")}
    (work / "configs").mkdir()
    h_runs, k_runs = [], []
    for _ in range(2):  # alternate; keep each side's best
        h_runs.append(measured([*INV, "report.import", "--format", "ktap", str(data)], env,
                               work))
        k_runs.append(measured([sys.executable, str(kunit), "parse", str(data)], env, work))
    h_s, h_mb = min(h_runs)
    k_s, k_mb = min(k_runs)
    print(f"{total} results ({data.stat().st_size // 1024} KiB of KTAP)")
    print(f"hvlab report.import: {h_s:.2f} s, peak {h_mb:.0f} MiB (goal < 3 s, < 300 MiB)")
    print(f"kunit.py parse:      {k_s:.2f} s, peak {k_mb:.0f} MiB")
    junit = next((work / "reports").glob("*/junit.xml"))
    print(f"junit.xml {junit.stat().st_size // 1024} KiB")
    report("report_scale (100k KTAP results -> JUnit)", h_s, k_s, "kunit.py parse", "<= 1.0",
           h_s / k_s)
    del resource, time  # imported for the probe's documentation only
