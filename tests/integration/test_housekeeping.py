"""inv status and inv clean on a workspace with builds and worktrees; inv run
--no-wait against a held host."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from hvlab.locks import FileLock
from tests.conftest import FAKE_KERNEL, Env, git
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration


def fake_build(env: Env, name: str, age_days: float, size: int = 1 << 20) -> Path:
    d = env.kernels / "builds" / (name * 64)[:64]
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(os.urandom(size))
    (d / "metadata.json").write_text(json.dumps({"kernel": "k", "kernelrelease": "6.1.0"}))
    old = time.time() - age_days * 86400
    os.utime(d / "metadata.json", (old, old))
    return d


def test_status_and_clean_by_age_and_budget(env: Env) -> None:
    old = fake_build(env, "a", 40)
    mid = fake_build(env, "b", 5, 3 << 20)
    new = fake_build(env, "c", 1, 3 << 20)
    done = env.inv("status")
    assert done.returncode == 0, done.stderr
    assert "builds: 3" in done.stdout and "40.0 days old" in done.stdout
    dry = env.inv("clean", "--days", "30", "--dry-run")
    assert dry.returncode == 0 and old.exists()
    assert "would remove: k 6.1.0" in env.suite("local.clean")[f"build {old.name[:16]}"].system_out
    done = env.inv("clean", "--days", "30", "--budget-gb", str(4 / 1024))
    assert done.returncode == 0, done.stderr
    assert not old.exists() and not mid.exists() and new.exists()  # oldest first past 4 MiB
    cases = env.suite("local.clean")
    assert "older than 30 days" in cases[f"build {old.name[:16]}"].system_out
    assert "over the" in cases[f"build {mid.name[:16]}"].system_out


def test_clean_worktrees_skips_one_in_use(env: Env, tmp_path: Path) -> None:
    store = env.kernels / "git" / "store.git"
    upstream = tmp_path / "up"
    shutil.copytree(FAKE_KERNEL, upstream)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "x")
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(store))
    for name in ("idle", "busy"):
        git(store, "worktree", "add", "-q", "--detach", str(env.kernels / "worktrees" / name),
            "main")
    with FileLock(env.kernels / "locks" / "worktree-busy.lock", "busy", wait=False):
        done = env.inv("clean", "--worktrees")
    assert done.returncode == 0, done.stderr
    cases = env.suite("local.clean")
    assert status(cases["worktree idle"]) == "pass"
    assert status(cases["worktree busy"]) == "skipped" and "locked by pid" in \
        cases["worktree busy"].result[0].message
    assert not (env.kernels / "worktrees" / "idle").exists()
    assert (env.kernels / "worktrees" / "busy").exists()
    assert "idle" not in git(store, "worktree", "list")


def test_run_no_wait_refuses_a_held_host(env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "up"
    shutil.copytree(FAKE_KERNEL, upstream)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "x")
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\nconfig:\n"
              "  base: tinyconfig\n")
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\n")
    env.write("plans/p.yaml", "kernels: [k]\nhosts: [q]\n")
    with FileLock(env.kernels / "locks" / "host-q.lock", "host 'q'", wait=False):
        t0 = time.monotonic()
        done = env.inv("run", "--plan", "p", "--no-wait", "--no-ccache", timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "host 'q' is locked by pid" in done.stderr
    assert time.monotonic() - t0 < 120
