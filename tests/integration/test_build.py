"""The build stage on a fake kbuild tree (tests/data/fake-kernel): real make, real gcc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import junitparser
import pytest

from tests.conftest import FAKE_KERNEL, REPO, Env, format_series, git
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration



def fake_kernel(env: Env, tmp_path: Path, fragments: str = "hv",
                extra: str = "") -> Path:
    upstream = tmp_path / "upstream"
    shutil.copytree(FAKE_KERNEL, upstream)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "fake kernel")
    env.write("fragments/hv.config",
              "CONFIG_MODULES=y\nCONFIG_NET=y\nCONFIG_HYPERVISOR_GUEST=y\nCONFIG_HYPERV=y\n"
              "CONFIG_CONNECTOR=y\nCONFIG_NLS=y\nCONFIG_HYPERV_UTILS=m\n"
              "CONFIG_HYPERV_BALLOON=m\n")
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\nconfig:\n"
              f"  base: tinyconfig\n  fragments: [{fragments}]\n{extra}")
    return upstream


def suite(env: Env, name: str) -> dict[str, junitparser.TestCase]:
    return env.suite(name)


def test_build_artifacts_metadata_and_cache(env: Env, tmp_path: Path,
                                            validate_junit: Callable[[Path], None]) -> None:
    fake_kernel(env, tmp_path)
    done = env.inv("build", "--kernel", "k", "--no-ccache")
    assert done.returncode == 0, done.stderr
    validate_junit(env.latest / "junit.xml")
    build = suite(env, "local.build")["build: k"]
    assert status(build) == "pass"
    builds = [p for p in (env.kernels / "builds").iterdir() if len(p.name) == 64]
    assert len(builds) == 1
    out = builds[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "System.map", "bzImage", "config", "kernelrelease", "metadata.json",
        "modules.tar.gz", "reproduce.sh"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["kernelrelease"] == "6.1.0-fake"
    assert meta["toolchain"]["version"].startswith("gcc")
    assert {a["name"] for a in meta["artifacts"]} >= {"bzImage", "modules.tar.gz"}
    assert all(len(a["sha256"]) == 64 for a in meta["artifacts"])
    assert "make -C" in meta["make_command"] and "O=" in meta["make_command"]
    # the baseline warning of the fake tree is recorded, with its function
    assert meta["warnings"] == 1
    assert meta["diagnostics"][0]["file"] == "drivers/hv/connection.c"
    import tarfile
    with tarfile.open(out / "modules.tar.gz") as tf:
        names = tf.getnames()
    assert "./lib/modules/6.1.0-fake/kernel/drivers/hv/hv_util.ko" in names
    # reproduce.sh rebuilds with the same make command, from the build folder it lives in
    assert "bzImage modules" in (out / "reproduce.sh").read_text()
    work = next((env.kernels / "builds" / "work").iterdir())
    (work / ".config").unlink()
    redo = subprocess.run(["sh", str(out / "reproduce.sh")], capture_output=True, text=True)
    assert redo.returncode == 0, redo.stderr
    assert (work / ".config").read_text() == (out / "config").read_text()
    assert (work / "arch" / "x86" / "boot" / "bzImage").is_file()
    again = env.inv("build", "--kernel", "k", "--no-ccache")
    assert again.returncode == 0
    assert "build: PASS" in again.stderr and "(cached)" in again.stderr
    assert "cached" in suite(env, "local.build")["build: k"].system_out
    forced = env.inv("build", "--kernel", "k", "--no-ccache", "--force")
    assert forced.returncode == 0
    assert "cached" not in (suite(env, "local.build")["build: k"].system_out or "")


def test_dropped_option_fails_before_compiling(env: Env, tmp_path: Path) -> None:
    fake_kernel(env, tmp_path)
    frag = tmp_path / "no-connector.config"
    frag.write_text("CONFIG_HYPERV_UTILS=y\n# CONFIG_CONNECTOR is not set\n")
    done = env.inv("build", "--kernel", "k", "--fragment", str(frag), "--no-ccache")
    assert done.returncode == 1, done.stderr
    cases = suite(env, "local.configure")
    case = cases["kconfig: CONFIG_HYPERV_UTILS"]
    assert status(case) == "failure"
    assert case.result[0].message == ("HYPERV_UTILS: requested y, got not set (depends on "
                                      "HYPERV && CONNECTOR && NLS; not set: CONNECTOR)")
    skipped = suite(env, "local.build")["build"]
    assert status(skipped) == "skipped"
    assert "configure" in skipped.result[0].message
    assert not list((env.kernels / "builds").rglob("*.o"))


def test_new_warning_fails_and_baseline_warning_does_not(env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    series = format_series(upstream, tmp_path / "warn", [
        ("drivers/hv/vmbus_drv.c", "\treturn vmbus_proto_version;",
         "\tint unused_var;\n\n\treturn vmbus_proto_version;"),
    ])
    done = env.inv("build", "--kernel", "k", "--series", str(series), "--no-ccache")
    assert done.returncode == 1, done.stderr
    cases = suite(env, "local.build")
    name = "warning: drivers/hv/vmbus_drv.c:6: unused variable 'unused_var'"
    assert status(cases[name]) == "failure"
    assert status(cases["build: k"]) == "pass"
    assert status(cases["build: k baseline (without the series)"]) == "pass"
    # the warning the tree already had is listed, not gating
    assert "connection.c" in cases["build: k"].system_out
    assert not any("connection.c" in n for n in cases)


def test_syntax_error_fails_the_build_naming_the_file(env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    series = format_series(upstream, tmp_path / "syntax", [
        ("drivers/hv/hv_util.c", "\treturn 0;", "\treturn 0\n"),
    ])
    done = env.inv("build", "--kernel", "k", "--series", str(series), "--no-ccache")
    assert done.returncode == 1, done.stderr
    case = suite(env, "local.build")["build: k"]
    assert status(case) == "failure"
    assert "drivers/hv/hv_util.c:4: expected ';' before '}' token" in case.result[0].message
    assert case.result[0].text != case.result[0].message  # the compiler's lines, in full
    assert "drivers/hv/hv_util.c:4: expected ';' before '}' token" in case.result[0].text
    # only the baseline was published; a failed build never enters the cache
    published = [p for p in (env.kernels / "builds").iterdir() if len(p.name) == 64]
    assert len(published) == 1


def test_each_patch_tells_which_patch_breaks(env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    series = format_series(upstream, tmp_path / "steps", [
        ("drivers/hv/hv_balloon.c", "return pages;", "return pages + 1;"),
        ("drivers/hv/hv_util.c", "\treturn 0;", "\treturn 0\n"),   # breaks the build
        ("drivers/hv/hv_util.c", "\treturn 0\n", "\treturn 0;"),   # fixes it
        ("drivers/hv/hv_balloon.c", "\treturn pages + 1;", "\tint spare;\n\n\treturn pages + 1;"),
    ])
    done = env.inv("build", "--kernel", "k", "--series", str(series), "--each-patch",
                   "--no-ccache")
    assert done.returncode == 1, done.stderr
    cases = suite(env, "local.build")
    steps = {n: status(c) for n, c in cases.items() if n.startswith("build after patch")}
    assert steps == {
        "build after patch 1: hv: change 1 in drivers/hv/hv_balloon.c": "pass",
        "build after patch 2: hv: change 2 in drivers/hv/hv_util.c": "failure",
        "build after patch 3: hv: change 3 in drivers/hv/hv_util.c": "pass",
        "build after patch 4: hv: change 4 in drivers/hv/hv_balloon.c": "failure",
    }
    broken = cases["build after patch 2: hv: change 2 in drivers/hv/hv_util.c"]
    assert "hv_util.c" in broken.result[0].message
    warned = cases["build after patch 4: hv: change 4 in drivers/hv/hv_balloon.c"]
    assert "unused variable 'spare'" in warned.result[0].message
    assert status(cases["build: k"]) == "pass"


def test_bad_fragment_inputs(env: Env, tmp_path: Path) -> None:
    fake_kernel(env, tmp_path)
    missing = env.inv("build", "--kernel", "k", "--fragment", str(tmp_path / "none.config"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_A=y\nHYPERV=y\n")
    done = env.inv("build", "--kernel", "k", "--fragment", str(bad))
    assert done.returncode == 2
    assert f"{bad}:2: not 'CONFIG_X=value'" in done.stderr


def test_missing_compiler_names_the_package(env: Env, tmp_path: Path) -> None:
    fake_kernel(env, tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("git", "make", "perl", "flex", "bison", "bc", "python3", "sh"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    environ = {**os.environ, **env.vars, "PATH": str(bindir)}
    done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "build",
                           "--kernel", "k"], cwd=env.root, env=environ, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 3, done.stderr
    assert "'gcc' is not installed (Debian package: gcc" in done.stderr


def test_sigterm_during_make_stops_it_and_caches_nothing(
        env: Env, tmp_path: Path, validate_junit: Callable[[Path], None]) -> None:
    slowcc = tmp_path / "slowcc"
    marker = tmp_path / "slowcc-running"
    slowcc.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 60\nexec gcc \"$@\"\n")
    slowcc.chmod(0o755)
    fake_kernel(env, tmp_path, extra=f"make_vars: {{CC: {slowcc}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                             "build", "--kernel", "k", "--no-ccache"], cwd=env.root,
                            env={**os.environ, **env.vars}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "make never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, err
    assert "interrupted by SIGTERM" in err
    left = subprocess.run(["pgrep", "-f", str(slowcc)], capture_output=True, text=True,
                          check=False)
    assert left.stdout == "", "compiler processes left behind"
    validate_junit(env.latest / "junit.xml")
    case = suite(env, "local.build")["build: k"]
    assert status(case) == "error" and "interrupted" in case.result[0].message
    assert not [p for p in (env.kernels / "builds").iterdir() if len(p.name) == 64]
    assert not list((env.kernels / "builds").glob(".staging-*"))


def test_disk_full_during_make_is_infrastructure(env: Env, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs and needs root (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        fake_kernel(env, tmp_path)
        big = tmp_path / "big.config"
        big.write_text("CONFIG_HV_TEST_BIG=y\n")
        env.kernels = small / "kernels"
        done = env.inv("build", "--kernel", "k", "--fragment", str(big), "--no-ccache")
        assert done.returncode == 3, done.stderr
        assert "no space left on device" in done.stderr.lower()
        assert "configure: PASS" in done.stderr  # it was make that ran out of space
        assert "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
