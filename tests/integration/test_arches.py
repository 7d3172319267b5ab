"""One series on every arch and toolchain, on the fake kbuild tree compiled by
the real compilers (gcc, i386 with -m32, the aarch64 cross gcc, clang with
LLVM=1): a patch that calls an x86-only function from code shared with arm64
builds on x86 and fails the arm64 build naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, format_series
from tests.conftest import case_status as status
from tests.integration.test_build import fake_kernel

pytestmark = pytest.mark.integration

CELLS = {"k": "", "k-clang": "toolchain: clang\n", "k-i386": "arch: i386\n",
         "k-arm64": "arch: arm64\n"}


def write_kernels(env: Env, upstream: Path) -> None:
    for name, extra in CELLS.items():
        env.write(f"kernels/{name}.yaml", f"source:\n  git: {upstream}\n  ref: main\n"
                  f"config:\n  base: tinyconfig\n  fragments: [hv]\n{extra}")


def test_an_x86_only_call_in_shared_code_fails_arm64_only(env: Env, tmp_path: Path) -> None:
    upstream = fake_kernel(env, tmp_path)
    write_kernels(env, upstream)
    for name in CELLS:  # the tree itself builds everywhere
        done = env.inv("build", "--kernel", name)
        assert done.returncode == 0, (name, done.stderr)
        meta = json.loads((env.latest / "metadata.json").read_text())
        facts = meta["cells"][0]["facts"]
        build = env.kernels / "builds" / facts["build_id"]
        image = "Image" if name == "k-arm64" else "bzImage"
        assert (build / image).is_file(), (name, sorted(p.name for p in build.iterdir()))
        assert ("clang" in facts["compiler"]) == (name == "k-clang"), facts["compiler"]
        made = json.loads((build / "metadata.json").read_text())["make_command"]
        assert ("CROSS_COMPILE=aarch64-linux-gnu-" in made) == (name == "k-arm64"), made
        assert ("LLVM=1" in made) == (name == "k-clang"), made
    series = format_series(upstream, tmp_path / "s", [(
        "drivers/hv/hv_common.c", "\treturn 0;", "\treturn hv_x86_tsc_page_valid();")])
    for name in CELLS:
        done = env.inv("build", "--kernel", name, "--series", str(series), "--checks", "none")
        case = env.suite("local.build")[f"build: {name}"]
        if name != "k-arm64":
            assert done.returncode == 0, (name, done.stderr)
            assert status(case) == "pass"
            continue
        assert done.returncode == 1, done.stderr
        assert status(case) == "failure"
        message = case.result[0].message
        assert "drivers/hv/hv_common.c:8" in message, message
        assert "hv_x86_tsc_page_valid" in message, message


def test_build_only_cells_compile_what_the_series_touches_and_say_so(
        env: Env, tmp_path: Path, validate_junit: Any) -> None:
    """A plan of four build-only cells: each makes modules_prepare then
    drivers/hv/ (no image); the x86-only call fails the arm64 cell alone,
    naming the file and line, and every cell's JUnit says what it built."""
    upstream = fake_kernel(env, tmp_path)
    write_kernels(env, upstream)
    format_series(upstream, env.configs / "patches" / "x86call", [(
        "drivers/hv/hv_common.c", "\treturn 0;", "\treturn hv_x86_tsc_page_valid();")])
    names = list(CELLS)
    env.write("plans/arches.yaml", f"kernels: [{', '.join(names)}]\nseries: [x86call]\n"
                                   f"build_only: [{', '.join(names)}]\n")
    done = env.inv("run", "--plan", "arches", "--checks", "none", timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    for name in names:
        label = f"{name}+x86call"
        props = env.suite_properties(f"{label}/local.build")
        assert props["build_scope"] == "touched only: drivers/hv/", (name, props)
        case = env.suite(f"{label}/local.build")[f"build: {name}"]
        log = (env.latest / "logs" / f"build-{label}.log").read_text() if \
            (env.latest / "logs" / f"build-{label}.log").is_file() else ""
        if name == "k-arm64":
            assert status(case) == "failure"
            assert "drivers/hv/hv_common.c:8" in case.result[0].message
        else:
            assert status(case) == "pass", (name, case.result)
            assert "touched only: drivers/hv/ (a build-only cell" in case.system_out
        assert "bzImage" not in log and "LD      vmlinux" not in log, (name, log[-2000:])
    kept = [json.loads((p / "metadata.json").read_text()) for p in
            (env.kernels / "builds").iterdir() if not p.name.startswith(".") and p.name != "work"]
    # each passed build (series and baseline) keeps its record, nothing bootable
    assert len(kept) == 2 * 3 + 1, kept  # k-arm64: its baseline only
    assert {k["scope"] for k in kept} == {"touched only: drivers/hv/"}
    assert all(k["artifacts"] == [] and k["kernelrelease"] == "" for k in kept)
    # a second run answers from those records: nothing is compiled again
    again = env.inv("run", "--plan", "arches", "--checks", "none", timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]
    for name in names:
        if name != "k-arm64":
            assert "cached" in env.suite(f"{name}+x86call/local.build")[f"build: {name}"] \
                .system_out
    # the dry run says these cells are built only
    dry = env.inv("run", "--plan", "arches", "--dry-run")
    assert "k-arm64+x86call: build would run; built only, not booted" in dry.stdout
    assert "k+x86call: build cached (" in dry.stdout, dry.stdout
    # a plan that boots k needs its full build: the touched-only record is not it
    env.write("hosts/q.yaml", "kind: qemu\n")
    env.write("plans/boots.yaml", "kernels: [k]\nseries: [x86call]\nhosts: [q]\n")
    dry = env.inv("run", "--plan", "boots", "--dry-run")
    assert "k+x86call@q: build would run; boot + " in dry.stdout, dry.stdout


def test_clang_warnings_are_gated_against_clangs_own_baseline(env: Env, tmp_path: Path) -> None:
    """A warning only clang gives that the tree already has is not new for the
    clang cell (its baseline is clang's, not gcc's); a warning the series adds
    fails both toolchains' cells."""
    from tests.conftest import git

    upstream = fake_kernel(env, tmp_path)
    shared = upstream / "drivers/hv/hv_common.c"
    shared.write_text(shared.read_text().replace(  # clang: -Wparentheses-equality; gcc: none
        "{\n\treturn 0;", "{\n\tint v = 1;\n\n\tif ((v == 1))\n\t\treturn 0;\n\treturn v;"))
    git(upstream, "commit", "-q", "-am", "a warning only clang gives")
    write_kernels(env, upstream)
    format_series(upstream, env.configs / "patches" / "unused", [(
        "drivers/hv/hv_common.c", "\tint v = 1;\n", "\tint v = 1;\n\tint unused_here;\n")])
    env.write("plans/clang.yaml", "kernels: [k, k-clang]\nseries: [unused]\n"
                                  "build_only: [k, k-clang]\n")
    done = env.inv("run", "--plan", "clang", "--checks", "none", timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    for name in ("k", "k-clang"):
        cases = env.suite(f"{name}+unused/local.build")
        new = [n for n in cases if n.startswith("warning: ")]
        assert new == ["warning: drivers/hv/hv_common.c:9: unused variable 'unused_here'"], \
            (name, list(cases))
        assert status(cases[new[0]]) == "failure"
        assert status(cases[f"build: {name} baseline (without the series)"]) == "pass"
    # clang gave the baseline's warning in both of its builds: listed, not gating
    listed = env.suite("k-clang+unused/local.build")["build: k-clang"].system_out
    assert "extraneous parentheses" in listed, listed
    assert "extraneous parentheses" not in \
        env.suite("k+unused/local.build")["build: k"].system_out
