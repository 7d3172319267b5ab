"""Fetch with real git and real tarballs, through the task layer (exit codes, reports)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FAKE_TREE, REPO, Env, git, make_repo, write_tree

pytestmark = pytest.mark.integration


def kernel_yaml(env: Env, name: str, source: str) -> None:
    env.write(f"kernels/{name}.yaml", f"source:\n{source}config:\n  base: tinyconfig\n")


def store_git(env: Env, *args: str) -> str:
    return git(env.kernels / "git" / "store.git", *args)


def make_tarball(path: Path, members: list[tuple[str, str, str | bytes]]) -> Path:
    """members: (name, kind, content-or-linkname) with kind file|symlink|dir."""
    mode = {".gz": "w:gz", ".xz": "w:xz"}.get(path.suffix, "w")
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(content)
                tf.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".pl") else 0o644
                tf.addfile(info, io.BytesIO(data))
    return path


TAR_MEMBERS: list[tuple[str, str, str | bytes]] = [
    ("linux-6.1/", "dir", ""),
    # Debian's tarball ignores its own top level: a plain "git add -A" adds nothing
    ("linux-6.1/.gitignore", "file", "/*\n"),
    ("linux-6.1/Makefile", "file", "VERSION = 6\n"),
    ("linux-6.1/scripts/checkpatch.pl", "file", "#!/usr/bin/perl\n"),
    ("linux-6.1/drivers/hv/hv.c", "file", "int x;\n"),
    ("linux-6.1/include/hv.h", "symlink", "../drivers/hv/hv.c"),
]


def test_git_source_fetch_records_commit(env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    sha = make_repo(upstream, FAKE_TREE)
    kernel_yaml(env, "k", f"  git: {upstream}\n  ref: main\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 0, done.stderr
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/k") == sha
    meta = json.loads((env.latest / "metadata.json").read_text())
    assert meta["cells"] == [{"label": "k", "host": "local",
                              "facts": {"kernel": "k", "commit": sha}}]
    assert meta["exit_code"] == 0


def test_second_ref_reuses_objects_and_sha_needs_no_network(env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    first = make_repo(upstream, FAKE_TREE)
    git(upstream, "checkout", "-q", "-b", "next")
    write_tree(upstream, {"drivers/hv/new.c": "int y;\n"})
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "next")
    second = git(upstream, "rev-parse", "HEAD")
    kernel_yaml(env, "a", f"  git: file://{upstream}\n  ref: main\n")
    kernel_yaml(env, "b", f"  git: file://{upstream}\n  ref: next\n")
    assert env.inv("fetch", "--kernel", "a").returncode == 0
    objects_before = int(store_git(env, "rev-list", "--objects", "--all", "--count"))
    assert env.inv("fetch", "--kernel", "b").returncode == 0
    objects_after = int(store_git(env, "rev-list", "--objects", "--all", "--count"))
    # only the new commit, its tree, the drivers/ and hv/ trees and one blob arrived
    assert objects_after - objects_before == 5
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/b") == second
    # a pinned sha already in the store: no network (the upstream is gone)
    shutil.rmtree(upstream)
    kernel_yaml(env, "c", f"  git: file://{upstream}\n  ref: {first}\n")
    done = env.inv("fetch", "--kernel", "c")
    assert done.returncode == 0, done.stderr


def test_unknown_ref_is_bad_input(env: Env, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    make_repo(upstream, FAKE_TREE)
    kernel_yaml(env, "k", f"  git: {upstream}\n  ref: no-such-branch\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2
    assert "kernel 'k': unknown ref 'no-such-branch'" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreachable_url_is_infrastructure(env: Env) -> None:
    kernel_yaml(env, "k", "  git: http://127.0.0.1:9/linux.git\n  ref: main\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 3, done.stderr
    assert "kernel 'k': git fetch http://127.0.0.1:9/linux.git main failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_offline_with_nothing_cached(env: Env, tmp_path: Path) -> None:
    kernel_yaml(env, "k", f"  git: {tmp_path}/nowhere.git\n  ref: main\n")
    done = env.inv("fetch", "--kernel", "k", "--offline")
    assert done.returncode == 2
    assert "is not in the cache and --offline was given" in done.stderr


def test_tarball_import_ignores_gitignore_and_is_cached(
        env: Env, tmp_path: Path, validate_junit: Callable[[Path], None]) -> None:
    tarball = make_tarball(tmp_path / "linux.tar.gz", TAR_MEMBERS)
    kernel_yaml(env, "k", f"  tarball: {tarball}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 0, done.stderr
    files = store_git(env, "ls-tree", "-r", "--name-only", "refs/hvlab/kernels/k").split()
    assert sorted(files) == [".gitignore", "Makefile", "drivers/hv/hv.c", "include/hv.h",
                             "scripts/checkpatch.pl"]
    modes = store_git(env, "ls-tree", "-r", "refs/hvlab/kernels/k")
    assert "120000 blob" in modes and "100755 blob" in modes
    validate_junit(env.latest / "junit.xml")
    first = store_git(env, "rev-parse", "refs/hvlab/kernels/k")
    again = env.inv("fetch", "--kernel", "k")
    assert again.returncode == 0
    assert "(cached)" in again.stderr
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/k") == first


def test_tarball_checksum_verified(env: Env, tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "linux.tar.gz", TAR_MEMBERS)
    kernel_yaml(env, "k", f"  tarball: {tarball}\n  sha256: {'0' * 64}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2
    assert f"kernel 'k': checksum mismatch for {tarball}: expected sha256 {'0' * 64}" \
        in done.stderr
    assert store_git(env, "for-each-ref", "refs/hvlab/") == ""


@pytest.mark.parametrize("name,cut", [("good.tar", 1500), ("good.tar", 2048),
                                      ("good.tar.xz", 200)])
def test_corrupt_tarball_leaves_nothing(env: Env, tmp_path: Path, name: str, cut: int) -> None:
    good = make_tarball(tmp_path / name, TAR_MEMBERS)
    bad = tmp_path / ("bad" + name[4:])
    bad.write_bytes(good.read_bytes()[:cut])  # inside a member, at a header, mid-stream
    kernel_yaml(env, "k", f"  tarball: {bad}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2, done.stderr
    assert "corrupt or truncated tarball" in done.stderr
    assert store_git(env, "for-each-ref", "refs/hvlab/") == ""
    assert not list((env.kernels / "git" / "store.git" / "objects" / "pack").glob("tmp_*"))


def test_missing_tarball(env: Env, tmp_path: Path) -> None:
    kernel_yaml(env, "k", f"  tarball: {tmp_path}/none.tar.xz\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2
    assert f"kernel 'k': tarball {tmp_path}/none.tar.xz does not exist" in done.stderr


@pytest.mark.parametrize("member", [
    ("linux/../../evil", "file", "x"),
    ("/abs/evil", "file", "x"),
    ("linux/include/bad", "symlink", "../../../../etc/passwd"),
])
def test_unsafe_tarball_refused(env: Env, tmp_path: Path,
                                member: tuple[str, str, str]) -> None:
    tarball = make_tarball(tmp_path / "evil.tar", [("linux/Makefile", "file", "x\n"), member])
    kernel_yaml(env, "k", f"  tarball: {tarball}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2
    assert "unsafe tarball member" in done.stderr
    assert store_git(env, "for-each-ref", "refs/hvlab/") == ""


def test_path_source_never_modifies_the_users_tree(env: Env, tmp_path: Path) -> None:
    user = tmp_path / "linux"
    sha = make_repo(user, FAKE_TREE)
    (user / "drivers/hv/connection.c").write_text("local edit\n")
    before = git(user, "status", "--porcelain")
    kernel_yaml(env, "k", f"  path: {user}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 0, done.stderr
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/k") == sha
    assert git(user, "status", "--porcelain") == before
    junit = (env.latest / "junit.xml").read_text()
    assert "uncommitted changes in" in junit


def test_plain_directory_snapshot(env: Env, tmp_path: Path) -> None:
    user = tmp_path / "tree"
    write_tree(user, FAKE_TREE)
    kernel_yaml(env, "k", f"  path: {user}\n")
    assert env.inv("fetch", "--kernel", "k").returncode == 0
    first = store_git(env, "rev-parse", "refs/hvlab/kernels/k")
    assert env.inv("fetch", "--kernel", "k").returncode == 0
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/k") == first  # deterministic
    assert sorted(p.name for p in user.iterdir()) == ["Makefile", "drivers", "scripts"]


def test_two_fetches_at_once_do_not_corrupt_the_store(env: Env, tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "linux.tar.gz", TAR_MEMBERS)
    kernel_yaml(env, "k", f"  tarball: {tarball}\n")
    kernel_yaml(env, "j", f"  tarball: {tarball}\n")
    procs = [
        subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), "fetch",
                          "--kernel", name], cwd=env.root, env={**os.environ, **env.vars},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in ("k", "j")
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0]
    store_git(env, "fsck", "--no-progress")
    assert store_git(env, "rev-parse", "refs/hvlab/kernels/k") == \
        store_git(env, "rev-parse", "refs/hvlab/kernels/j")


@pytest.fixture
def http_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real HTTP server on loopback serving a directory."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_tarball_url_downloaded_verified_and_cached(env: Env, http_dir) -> None:  # type: ignore[no-untyped-def]
    root, base = http_dir
    make_tarball(root / "linux.tar.gz", TAR_MEMBERS)
    digest = hashlib.sha256((root / "linux.tar.gz").read_bytes()).hexdigest()
    kernel_yaml(env, "k", f"  tarball: {base}/linux.tar.gz\n  sha256: {digest}\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 0, done.stderr
    (root / "linux.tar.gz").unlink()  # the second fetch must not need the server
    again = env.inv("fetch", "--kernel", "k", "--offline")
    assert again.returncode == 0 and "(cached)" in again.stderr


def test_tarball_url_not_found_is_bad_input(env: Env, http_dir) -> None:  # type: ignore[no-untyped-def]
    _, base = http_dir
    kernel_yaml(env, "k", f"  tarball: {base}/missing.tar.xz\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 2
    assert f"kernel 'k': {base}/missing.tar.xz: HTTP 404" in done.stderr
    assert not list((env.kernels / "cache" / "downloads").glob("*.partial"))


def test_tarball_url_unreachable_is_infrastructure(env: Env) -> None:
    kernel_yaml(env, "k", "  tarball: http://127.0.0.1:9/linux.tar.xz\n")
    done = env.inv("fetch", "--kernel", "k")
    assert done.returncode == 3
    assert "kernel 'k': cannot download http://127.0.0.1:9/linux.tar.xz" in done.stderr


def test_sigterm_during_a_tarball_import_leaves_the_store_clean(
        env: Env, validate_junit: Callable[[Path], None]) -> None:
    tarball = Path("/usr/src/linux-source-6.1.tar.xz")  # ~40 s to import: time to interrupt
    if not tarball.is_file():
        pytest.fail(f"{tarball} is missing: run ci/setup.sh (linux-source-6.1)")
    kernel_yaml(env, "k", f"  tarball: {tarball}\n")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                             "fetch", "--kernel", "k"], cwd=env.root,
                            env={**os.environ, **env.vars}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    store = env.kernels / "git" / "store.git"
    while not subprocess.run(["pgrep", "-f", f"{store} fast-import"],
                             capture_output=True).stdout:
        assert time.monotonic() < deadline and proc.poll() is None, "the import never started"
        time.sleep(0.1)
    time.sleep(2)  # well inside the import
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3, err
    assert "interrupted by SIGTERM" in err
    validate_junit(env.latest / "junit.xml")
    assert store_git(env, "for-each-ref", "refs/hvlab/") == ""
    assert not list((store / "objects" / "pack").glob("tmp_*"))
    left = subprocess.run(["pgrep", "-af", "fast-import"], capture_output=True, text=True)
    assert str(store) not in left.stdout
    store_git(env, "fsck", "--no-progress")
