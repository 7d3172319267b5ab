"""inv bisect on a real git history of the fake kernel tree, booted for real:
the tree's image is the Debian kernel (FAKE_BOOT) and its modules carry a
value file of the tree, which the suite checks on the guest."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, fake_kernel_repo, git
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration


def commit(repo: Path, message: str, path: str, text: str) -> str:
    (repo / path).write_text(text)
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


def history(tmp: Path) -> tuple[Path, dict[str, str]]:
    repo = fake_kernel_repo(tmp / "upstream", "good start")
    c = {"c1": git(repo, "rev-parse", "HEAD")}
    main_c = (repo / "init" / "main.c").read_text()
    c["c2"] = commit(repo, "hv: break the value", "drivers/hv/value", "bad\n")
    c["c3"] = commit(repo, "init: does not build", "init/main.c", main_c + "int broken(\n")
    c["c4"] = commit(repo, "init: builds again", "init/main.c", main_c)
    c["c5"] = commit(repo, "docs: unrelated", "README", "changed\n")
    return repo, c


def setup_env(env: Env, repo: Path) -> None:
    vmlinuz = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    env.write("fragments/m.config", "CONFIG_MODULES=y\n")
    env.write("kernels/k.yaml", f"source:\n  git: {repo}\n  ref: main\nconfig:\n"
              f"  base: tinyconfig\n  fragments: [m]\nmake_vars: {{FAKE_BOOT: {vmlinuz}}}\n")
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/value.yaml", "tests:\n  - name: value\n"
              "    run: grep -qx good /lib/modules/$(uname -r)/extra/hvlab-value\n")


def test_bisect_finds_the_breaking_commit_skipping_one_that_does_not_build(
        env: Env, tmp_path: Path, validate_junit: Any) -> None:
    repo, c = history(tmp_path)
    setup_env(env, repo)
    done = env.inv("bisect", "--kernel", "k", "--good", c["c1"], "--bad", c["c5"], "--host",
                   "q", "--suite", "value", "--no-ccache", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("local.bisect")
    first = cases["bisect: first bad commit"]
    assert status(first) == "pass"
    assert first.system_out.strip() == f"{c['c2']} hv: break the value"
    steps = {name: case.system_out for name, case in cases.items() if "step" in name}
    verdicts = {name.split(": ", 1)[1].split()[0]: out.split(":")[0]
                for name, out in steps.items()}
    assert verdicts[c["c2"][:12]] == "bad"
    assert verdicts.get(c["c3"][:12], "skip") == "skip"  # never judged by its build
    skipped = [out for out in steps.values() if out.startswith("skip")]
    assert all("does not build" in out for out in skipped)
    assert f"first bad commit: {c['c2'][:12]}" in done.stderr
    # the worktree is left clean, not mid-bisect
    tree = env.kernels / "worktrees" / "k"
    assert git(tree, "status", "--porcelain") == ""
    assert not (Path(git(tree, "rev-parse", "--git-dir")) / "BISECT_LOG").exists()


def test_bisect_by_build_and_bad_refs(env: Env, tmp_path: Path) -> None:
    repo, c = history(tmp_path)
    setup_env(env, repo)
    done = env.inv("bisect", "--kernel", "k", "--good", c["c1"], "--bad", c["c3"],
                   "--step", "build", "--no-ccache", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    first = env.suite("local.bisect")["bisect: first bad commit"]
    assert first.system_out.strip() == f"{c['c3']} init: does not build"
    bad = env.inv("bisect", "--kernel", "k", "--good", "nope", "--bad", c["c3"],
                  "--step", "build")
    assert bad.returncode == 2 and "--good nope: no such commit" in bad.stderr
    rev = env.inv("bisect", "--kernel", "k", "--good", c["c3"], "--bad", c["c1"],
                  "--step", "build")
    assert rev.returncode == 2 and "is not an ancestor" in rev.stderr


def test_bisect_boots_where_the_host_says_on_a_machine_over_ssh(
        env: Env, tmp_path: Path) -> None:
    """--step boot goes through the host interface: a qemu host ``on:`` an SSH
    machine runs its guests there, for bisect as for inv boot."""
    from tests.sshd import sshd

    repo, c = history(tmp_path)
    setup_env(env, repo)
    with sshd(tmp_path / "sshd") as server:
        env.write("hosts/loophost.yaml",
                  f"kind: ssh\naddress: {server.address}\nport: {server.port}\nuser: root\n"
                  f"key: {server.client_key}\nhost_key: '{server.fingerprint}'\n"
                  "connect_timeout: 5\n")
        env.write("hosts/rq.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n"
                  "on: loophost\n")
        done = env.inv("bisect", "--kernel", "k", "--good", c["c1"], "--bad", c["c5"],
                       "--step", "boot", "--host", "rq", "--no-ccache", timeout=900)
        adjacent = env.inv("bisect", "--kernel", "k", "--good", c["c1"], "--bad", c["c2"],
                           "--step", "boot", "--host", "rq", "--no-ccache", timeout=900)
    assert adjacent.returncode == 0, adjacent.stderr[-3000:]
    first = env.suite("local.bisect")["bisect: first bad commit"]
    assert first.system_out.strip() == f"{c['c2']} hv: break the value"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "started on loophost for rq" in done.stderr
    steps = [line for line in done.stderr.splitlines() if ": good (" in line or ": skip (" in line]
    assert steps and all("good (boots)" in s or "does not build" in s for s in steps), steps
    assert not glob.glob("/tmp/hvlab-qemu-*")
