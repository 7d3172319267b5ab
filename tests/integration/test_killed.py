"""hvlab killed with SIGKILL (a CI job timeout, the OOM killer) at any point:
no process it started survives, its run folder is a valid report of what it
did, `inv status` lists it, and the next run on the workspace works."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hvlab.report import view
from tests.conftest import REPO, Env, fake_kernel_repo, format_series
from tests.integration.test_bisect import setup_env
from tests.integration.test_boot import KERNELS, qemu_host

pytestmark = pytest.mark.integration


def started_by(env: Env) -> list[str]:
    """Processes whose command line names the test's workspace (QEMU, make, git)."""
    found = subprocess.run(["pgrep", "-af", str(env.root)], capture_output=True, text=True,
                           check=False).stdout
    return [line for line in found.splitlines()
            if int(line.split()[0]) != os.getpid() and " pgrep " not in f" {line} "]


def settle(env: Env, seconds: float = 10) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := started_by(env)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start(env: Env, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                            cwd=env.root, env={**os.environ, **env.vars},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def newest(env: Env) -> Path:
    return max((p for p in env.reports.iterdir() if p.is_dir() and not p.is_symlink()),
               key=lambda p: p.stat().st_mtime_ns)


def wait_for_stage(env: Env, proc: subprocess.Popen[str], stage: str) -> bool:
    """Until the run's metadata.json says ``stage`` is running."""
    deadline = time.monotonic() + 300
    seen: set[Path] = {p for p in env.reports.iterdir()} if env.reports.exists() else set()
    while time.monotonic() < deadline and proc.poll() is None:
        for folder in env.reports.glob("*/metadata.json") if env.reports.exists() else ():
            if folder.parent in seen or folder.parent.is_symlink():
                continue
            try:
                running = json.loads(folder.read_text()).get("running", [])
            except ValueError:
                continue
            if any(r.split(" (")[0].split(".")[-1] == stage for r in running):
                return True
        time.sleep(0.05)
    return False


def unfinished_case(folder: Path) -> str:
    names = [c.name for s in view.parse((folder / "junit.xml").read_text()) for c in s.cases]
    return next((n for n in names if n.startswith("run did not finish")), "")


def test_kill_9_while_the_guest_boots(env: Env, validate_junit: Any) -> None:
    qemu_host(env, append="rdinit=/bin/sh", boot_timeout=120)
    proc = start(env, "boot", "--prebuilt", KERNELS[-1], "--host", "q")
    deadline = time.monotonic() + 60
    while not any("qemu-system" in line for line in started_by(env)):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert settle(env, 5) == []  # QEMU went with hvlab, at once
    [folder] = [p for p in env.reports.iterdir() if not p.is_symlink()]
    validate_junit(folder / "junit.xml")
    assert unfinished_case(folder) == \
        "run did not finish (stage boot (prebuilt on q) was running)"
    status = env.inv("status", timeout=60)
    assert f"{folder.name}: boot started" in status.stdout
    assert "never finished (boot (prebuilt on q))" in status.stdout
    # the next run on the same host and workspace takes the lease and passes
    qemu_host(env, boot_timeout=120)
    done = env.inv("boot", "--prebuilt", KERNELS[-1], "--host", "q", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kill_9_at_random_points_of_a_run(env: Env, tmp_path: Path,
                                          validate_junit: Any) -> None:
    """Killed inside each stage in turn (fetch, patch, configure, build, boot, the
    suite); then a whole run passes."""
    repo = fake_kernel_repo(tmp_path / "upstream")
    format_series(repo, env.configs / "patches" / "s",
                  [("drivers/hv/vmbus_drv.c", "the bus driver", "the VMBus driver")])
    setup_env(env, repo)
    env.write("plans/p.yaml", "kernels: [k]\nseries: [s]\nhosts: [q]\nsuites: [value]\n")
    rng = random.Random(os.getpid())
    killed_in = []
    for stage in ("fetch", "patch", "configure", "build", "boot", "value"):
        proc = start(env, "run", "--plan", "p", "--no-ccache")
        if not wait_for_stage(env, proc, stage):
            continue  # the run ended (or passed that stage) first
        time.sleep(rng.uniform(0, 0.2))  # somewhere inside the stage
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = newest(env)
        validate_junit(folder / "junit.xml")
        case = unfinished_case(folder)
        if case:
            killed_in.append(case)
        else:  # killed after its report was final
            assert json.loads((folder / "metadata.json").read_text())["finished"] is True
        # the death signal takes QEMU, make and git; what they started is the
        # next run's to stop, at its start
        left = settle(env, 5)
        if left:
            check = env.inv("config.check", timeout=60)  # a session: reaps at its start
            assert "left running" in check.stderr, (left, check.stderr)
            assert settle(env, 5) == [], left
    assert len(killed_in) >= 4, killed_in
    done = env.inv("run", "--plan", "p", "--no-ccache", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert settle(env, 5) == []
    folders = [p for p in env.reports.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(folders) >= 2
    for folder in folders:
        validate_junit(folder / "junit.xml")
    assert unfinished_case(env.latest.resolve()) == ""
    tree = env.kernels / "worktrees" / "k"
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout == ""
