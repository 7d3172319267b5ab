"""Helpers shared by the benchmarks: timed commands, the last build's facts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNELS = Path(os.environ.get("HVLAB_KERNELS", REPO / "kernels"))
REPORTS = Path(os.environ.get("HVLAB_REPORTS", REPO / "reports"))
INV = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]


def timed(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
          quiet: bool = True) -> float:
    os.sync()  # the previous run's dirty pages are written back outside this timing
    t0 = time.monotonic()
    done = subprocess.run(list(argv), env={**os.environ, **(env or {})}, cwd=cwd,
                          stdout=subprocess.DEVNULL if quiet else None,
                          stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"benchmark command failed ({done.returncode}): {' '.join(argv)}\n"
                 f"{done.stderr[-2000:]}")
    return seconds


def last_build() -> tuple[Path, dict[str, object]]:
    """(build artifacts dir, metadata) of the build in reports/latest."""
    meta = json.loads((REPORTS / "latest" / "metadata.json").read_text())
    build_id = next(str(c["facts"]["build_id"]) for c in meta["cells"]
                    if "build_id" in c["facts"])
    out = KERNELS / "builds" / build_id
    return out, json.loads((out / "metadata.json").read_text())


def drop_build_dirs(kernel: str) -> None:
    """Make the next hvlab build cold: no build dirs of this kernel."""
    work = KERNELS / "builds" / "work"
    if work.is_dir():
        for d in work.glob(f"{kernel}-*"):
            shutil.rmtree(d)


def hvlab_cold_build(kernel: str, jobs: int) -> float:
    """One timed hvlab build from an empty build dir, ccache off."""
    drop_build_dirs(kernel)
    return timed([*INV, "build", "--kernel", kernel, "--no-ccache", "--force",
                  f"--jobs={jobs}"])


def report(name: str, hvlab: float, baseline: float, baseline_name: str, goal: str,
           ratio: float) -> None:
    print(f"{name}: hvlab {hvlab:.2f} s, {baseline_name} {baseline:.2f} s")
    print(f"goal: {goal}")
    print(f"ratio: {ratio:.3f}")


def boot_until_release(argv: Sequence[str], port: int, key: object, release: str) -> float:
    """The plain script's boot: start QEMU (``argv``), poll SSH on ``port`` with
    paramiko until ``uname -r`` answers ``release``; seconds from the start.
    The guest is stopped afterwards."""
    import paramiko

    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a plain script
            try:
                client.connect("127.0.0.1", port, "root", pkey=key, timeout=2,
                               banner_timeout=2, auth_timeout=2, allow_agent=False,
                               look_for_keys=False)
                _, out, _ = client.exec_command("uname -r")
                if out.read().decode().strip() == release:
                    return time.monotonic() - t0
            except Exception:
                time.sleep(0.25)
            finally:
                client.close()
    finally:
        proc.kill()
        proc.wait()
