"""Helpers shared by the benchmarks: timed commands, the last build's facts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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


def make_vars_of(make_command: str) -> list[str]:
    """The arch and toolchain variables of hvlab's make command (ARCH=,
    CROSS_COMPILE=, LLVM=): what a plain make of the same build is given."""
    return [w for w in make_command.split()
            if w.split("=", 1)[0] in ("ARCH", "CROSS_COMPILE", "LLVM")]


def cold_vs_make(kernel: str, jobs: int, rounds: int, name: str, goal: str) -> None:
    """hvlab's cold build of ``kernel`` vs plain make of the same tree, final
    .config, targets, arch and toolchain variables and -j; ccache off; rounds
    alternate the order (make, hvlab, hvlab, make, ...) and the sums compare."""
    import tempfile

    tree = KERNELS / "worktrees" / kernel
    timed([*INV, "build", "--kernel", kernel, f"--jobs={jobs}"])  # settle: fetch, configure
    artifacts, meta = last_build()
    config = (artifacts / "config").read_text()
    command = str(meta["make_command"])
    targets = command.split()[-2:] if command.endswith(" modules") else command.split()[-1:]
    variables = make_vars_of(command)

    def plain() -> float:
        with tempfile.TemporaryDirectory(prefix="bench-make-") as tmp:
            build_dir = Path(tmp) / "build"
            build_dir.mkdir()
            (build_dir / ".config").write_text(config)
            return timed(["make", "-C", str(tree), f"O={build_dir}", *variables,
                          f"-j{jobs}", *targets], env={"LC_ALL": "C"})

    make_runs: list[float] = []
    hvlab_runs: list[float] = []
    for r in range(rounds):  # ABBA...: each side runs first as often as second
        if r % 2 == 0:
            make_runs.append(plain())
            hvlab_runs.append(hvlab_cold_build(kernel, jobs))
        else:
            hvlab_runs.append(hvlab_cold_build(kernel, jobs))
            make_runs.append(plain())
        print(f"round {r + 1}: make {make_runs[-1]:.1f} s, hvlab {hvlab_runs[-1]:.1f} s "
              f"({' '.join(variables)} {' '.join(targets)})", flush=True)
    report(f"{name} (cold, ccache off, {rounds} alternating rounds, sums)",
           sum(hvlab_runs), sum(make_runs), "plain make", goal, sum(hvlab_runs) / sum(make_runs))


# The variables hvlab's builds give make besides the command line: what a raw
# make of the same build dir runs with, so that both share ccache's hits.
CCACHE_ENV = {"CCACHE_DIR": os.environ.get("CCACHE_DIR", str(KERNELS / "ccache")),
              "CCACHE_BASEDIR": str(KERNELS), "LC_ALL": "C", "KBUILD_BUILD_USER": "hvlab",
              "KBUILD_BUILD_HOST": "hvlab", "KBUILD_BUILD_TIMESTAMP": "@0"}


class EditedSeries:
    """A copy of the shipped configs whose series' patch 1 gets one added line
    rewritten before every measured run (a fresh string each time, so neither
    side finds a build cached).  ``env`` points hvlab at the copy."""

    LINE = '+\tpr_info("VMBus protocol version %u.%u negotiated\\n",'

    def __init__(self, work: Path, series: str) -> None:
        self.configs = work / "configs"
        shutil.copytree(REPO / "configs", self.configs)
        self.patch1 = sorted((self.configs / "patches" / series).glob("0001-*.patch"))[0]
        self.original = self.patch1.read_text()
        assert self.LINE in self.original, "the sample series changed: pick another line"
        self.env = {"HVLAB_CONFIGS": str(self.configs)}
        self.count = 0

    def edit(self) -> None:
        self.count += 1
        self.patch1.write_text(self.original.replace(self.LINE, self.LINE.replace(
            "negotiated", f"negotiated (edit {os.getpid()}.{self.count})")))

    @property
    def patches(self) -> list[str]:
        return sorted(str(p) for p in self.patch1.parent.glob("0*.patch"))


def built_from_latest() -> tuple[str, list[str], Path]:
    """(base commit, hvlab's make argv, the worktree) of the build in
    reports/latest: what a raw rebuild in the same build dir runs."""
    import shlex

    meta = json.loads((REPORTS / "latest" / "metadata.json").read_text())
    facts = next(c["facts"] for c in meta["cells"] if c["facts"].get("build_id"))
    built = json.loads((KERNELS / "builds" / facts["build_id"] / "metadata.json").read_text())
    make = shlex.split(built["make_command"])
    return facts["base_commit"], make, Path(make[make.index("-C") + 1])


def raw_am_and_make(tree: Path, base: str, patches: Sequence[str],
                    make: Sequence[str]) -> None:
    """The raw side's rebuild: ``git am -3`` of the series on its base in the
    worktree, then hvlab's make command in its build dir."""
    from hvlab.git import IDENTITY

    def sh(argv: Sequence[str], **kw: object) -> None:
        subprocess.run(list(argv), check=True, capture_output=True, **kw)  # type: ignore[call-overload]

    sh(["git", "checkout", "-q", "--detach", "--force", base], cwd=tree)
    sh(["git", "am", "-q", "-3", *patches], cwd=tree, env={**os.environ, **IDENTITY})
    sh(make, env={**os.environ, **CCACHE_ENV})


def alternate(mine: Callable[[], float], theirs: Callable[[], float],
              runs: int) -> tuple[list[float], list[float]]:
    """``runs`` timings of each side, their order swapped every run."""
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        for fn, into in ((mine, a), (theirs, b))[:: 1 if i % 2 == 0 else -1]:
            into.append(fn())
    return a, b


def medians(name: str, mine: Sequence[float], raw_name: str, theirs: Sequence[float],
            goal: str) -> None:
    """Print every timing, the medians and their ratio."""
    import statistics

    h, r = statistics.median(mine), statistics.median(theirs)
    print(f"hvlab: {', '.join(f'{x:.1f}' for x in mine)} s; "
          f"{raw_name}: {', '.join(f'{x:.1f}' for x in theirs)} s")
    report(f"{name} (medians of {len(mine)})", h, r, raw_name, goal, h / r)
