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
    """Until the run's metadata.json says ``stage`` is running (True), or that it
    is already done or the run ended (False)."""
    deadline = time.monotonic() + 300
    seen: set[Path] = {p for p in env.reports.iterdir()} if env.reports.exists() else set()
    while time.monotonic() < deadline and proc.poll() is None:
        for folder in env.reports.glob("*/metadata.json") if env.reports.exists() else ():
            if folder.parent in seen or folder.parent.is_symlink():
                continue
            try:
                meta = json.loads(folder.read_text())
            except ValueError:
                continue
            if any(r.split(" (")[0].split(".")[-1] == stage for r in meta.get("running", [])):
                return True
            if any(s.get("stage", "").split(".")[-1] == stage for s in meta.get("stages", [])):
                return False  # the stage ended between two looks
        time.sleep(0.01)
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
        # a short stage can end before the kill lands: up to three tries, the
        # later ones killing sooner after the stage began
        for attempt in range(3):
            proc = start(env, "run", "--plan", "p", "--no-ccache")
            if wait_for_stage(env, proc, stage):
                time.sleep(rng.uniform(0, 0.2 / (attempt + 1)))  # somewhere inside the stage
            # a missed stage is killed at once all the same: a run left to finish
            # would cache its build and make every later stage too short to hit
            ended = proc.poll()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # a run that ended by itself must have passed: one failing after an
            # earlier kill is what this test is for
            assert ended in (None, 0), proc.stderr.read()[-3000:] if proc.stderr else ended
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
            if case and f"stage {stage} " in case:
                break
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
    assert_store_and_cache_whole(env)


def test_git_locks_a_killed_git_left_are_removed_by_the_next_run(env: Env,
                                                                 tmp_path: Path) -> None:
    """A git killed between taking a lock and renaming it into place leaves the
    lock file, and every later git that needs that file refuses ("File
    exists"): the next run, holding hvlab's own lock on the store or the
    worktree, removes them, says so, and goes on."""
    repo = fake_kernel_repo(tmp_path / "upstream")
    format_series(repo, env.configs / "patches" / "s",
                  [("drivers/hv/vmbus_drv.c", "the bus driver", "the VMBus driver")])
    setup_env(env, repo)
    first = env.inv("patch", "--kernel", "k", "--series", "s", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    store = env.kernels / "git" / "store.git"
    left = [store / "worktrees" / "k" / "index.lock",  # git am, checkout, reset
            store / "worktrees" / "k" / "HEAD.lock",
            store / "refs" / "heads" / "hvlab" / "k" / "s.lock",  # the series' branch
            store / "refs" / "hvlab" / "kernels" / "k.lock",  # the fetch's update-ref
            store / "packed-refs.lock"]
    for lock in left:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
    done = env.inv("patch", "--kernel", "k", "--series", "s", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for lock in left:
        assert not lock.exists(), lock
        assert f"removed kernels/git/store.git/{lock.relative_to(store)}, a git lock a " \
            "killed run left behind" in done.stderr, done.stderr
    tree = env.kernels / "worktrees" / "k"
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout == ""
    assert_store_and_cache_whole(env)


def assert_store_and_cache_whole(env: Env) -> None:
    """git fsck accepts the object store; every build in the cache is complete
    (a half build never leaves its staging folder)."""
    fsck = subprocess.run(["git", "--git-dir", str(env.kernels / "git" / "store.git"), "fsck",
                           "--no-progress"], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    builds = env.kernels / "builds"
    for build in (builds.iterdir() if builds.exists() else []):
        if build.name.startswith(".") or build.name == "work":  # staging, incremental dirs
            continue
        assert (build / "metadata.json").is_file(), build
        meta = json.loads((build / "metadata.json").read_text())
        if meta.get("scope", "full") == "full":  # a touched-only build keeps no image
            assert (build / "bzImage").is_file() and meta["kernelrelease"], build


def test_kill_9_during_a_tarball_import(env: Env, tmp_path: Path) -> None:
    """The streaming import killed at random points: the store stays valid for
    git fsck and the next fetch imports the tarball whole."""
    tree = tmp_path / "linux-6.1"
    for i in range(6000):  # enough files that the import takes a moment
        path = tree / "drivers" / f"d{i % 60}" / f"f{i}.c"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* file {i} */\n" + "int x;\n" * 40)
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\n")
    tarball = tmp_path / "linux-6.1.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tmp_path), "linux-6.1"], check=True)
    env.write("kernels/t.yaml", f"source:\n  tarball: {tarball}\n")
    rng = random.Random(os.getpid())
    killed = 0
    for _ in range(3):
        proc = start(env, "fetch", "--kernel", "t")
        if not wait_for_stage(env, proc, "fetch"):
            continue
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
        assert settle(env, 5) == []
        assert_store_and_cache_whole(env)
    assert killed >= 1
    done = env.inv("fetch", "--kernel", "t", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    commit = env.suite_properties("local.fetch")["commit"]
    files = subprocess.run(["git", "--git-dir", str(env.kernels / "git" / "store.git"),
                            "ls-tree", "-r", "--name-only", commit], capture_output=True,
                           text=True, check=True).stdout.split()
    assert len(files) == 6001 and "drivers/d59/f5999.c" in files  # the whole tarball
    assert_store_and_cache_whole(env)


def test_two_runs_on_one_host_and_the_holder_killed(env: Env) -> None:
    """The second run waits for the host's lease; the first is killed with
    SIGKILL: the lease comes free (the kernel drops the dead run's flock), its
    QEMU goes with it, and the survivor boots and passes."""
    qemu_host(env, boot_timeout=120)
    first = start(env, "boot", "--prebuilt", KERNELS[-1], "--host", "q")
    deadline = time.monotonic() + 60
    while not any("qemu-system" in line for line in started_by(env)):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    second = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                               "boot", "--prebuilt", KERNELS[-1], "--host", "q"],
                              cwd=env.root, env={**os.environ, **env.vars},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert second.stderr is not None
    waited = ""
    while "waiting for" not in waited:  # the second run is queued on the lease
        line = second.stderr.readline()
        assert line, "the second run never waited for the lease"
        waited += line
    first.send_signal(signal.SIGKILL)
    first.wait()
    rest = second.communicate(timeout=300)[1]
    assert second.returncode == 0, waited + rest
    assert settle(env, 5) == []


def test_kill_9_leaves_no_qemu_on_the_machine_it_ran_on(env: Env, tmp_path: Path) -> None:
    """`on: <ssh host>`: QEMU runs daemonized there, out of reach of the death
    signal; the guard hvlab holds over SSH stops it when the connection goes."""
    from tests.integration.test_boot import ssh_host_yaml
    from tests.sshd import sshd

    def remote_qemu() -> list[str]:
        found = subprocess.run(["pgrep", "-af", "hvlab-qemu-"], capture_output=True,
                               text=True, check=False).stdout
        return [line for line in found.splitlines() if "qemu-system" in line]

    with sshd(tmp_path / "sshd") as server:
        ssh_host_yaml(env, "loophost", server)
        qemu_host(env, "rq", on="loophost", append="rdinit=/bin/sh", boot_timeout=120)
        proc = start(env, "boot", "--prebuilt", KERNELS[-1], "--host", "rq")
        deadline = time.monotonic() + 120
        while not remote_qemu() or not subprocess.run(
                ["pgrep", "-f", "grep -qaF"], capture_output=True, check=False).stdout:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.2)  # until QEMU runs there and its guard is in place
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while (remote_qemu() or list(Path("/tmp").glob("hvlab-qemu-*"))) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert remote_qemu() == []
        assert not [d for d in Path("/tmp").glob("hvlab-qemu-*")]
