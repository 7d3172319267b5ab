"""`inv run` on the real tree: the default plan, a 2 series x 2 hosts matrix in
parallel, shards merged, --dry-run, SIGTERM during a boot."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from hvlab.report import view
from hvlab.report.compare import read_junit
from tests.conftest import REPO, Env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def matrix_env(real_env: Env) -> Env:
    env = dataclasses.replace(real_env, configs=real_env.root / "configs-matrix")
    shutil.rmtree(env.configs, ignore_errors=True)
    shutil.copytree(REPO / "configs", env.configs)
    env.write("hosts/qemu2.yaml", "kind: qemu\naccel: tcg\nmemory: 768\ncpus: 1\n")
    env.write("plans/two.yaml", "kernels: [linux-6.1]\nseries: [hyperv-sample, none]\n"
              "hosts: [local-qemu, qemu2]\nsuites: [boot-health]\n")
    return env


def test_default_plan_end_to_end(real_env: Env, validate_junit: Any) -> None:
    done = real_env.inv("run", timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(real_env.latest / "junit.xml")
    last = done.stderr.strip().splitlines()[-1]
    assert "junit.xml" in last and "report.html" in last and "passed" in last
    suites = {s.name: s for s in view.parse((real_env.latest / "junit.xml").read_text())}
    cell = "linux-6.1+hyperv-sample"
    assert suites[f"{cell}/local-qemu.boot"].status == "pass"
    assert suites[f"{cell}/local-qemu.boot-health"].status == "pass"
    assert suites[f"{cell}/local-qemu.hyperv-drivers"].status == "skip"
    reproduce = (real_env.latest / "reproduce.sh").read_text()
    assert reproduce.strip().splitlines()[-1].startswith(".venv/bin/inv ")
    assert reproduce.strip().endswith(" run") and "linux-6.1+hyperv-sample: " in reproduce


def test_two_series_on_two_hosts_in_parallel_and_shards(matrix_env: Env,
                                                        validate_junit: Any) -> None:
    env = matrix_env
    done = env.inv("run", "--plan", "two", timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    whole = env.latest.resolve()
    suites = {s.name: s for s in view.parse((whole / "junit.xml").read_text())}
    for cell in ("linux-6.1+hyperv-sample", "linux-6.1+none"):
        for host in ("local-qemu", "qemu2"):
            assert suites[f"{cell}/{host}.boot-health"].status == "pass", (cell, host)
    # every testsuite of a cell carries that cell's own facts
    facts = {}
    for cell in ("linux-6.1+hyperv-sample", "linux-6.1+none"):
        own = [s for s in suites.values() if s.cell == cell]
        stages = {s.name.split("/", 1)[1] for s in own}
        assert {"local.fetch", "local.configure", "local.build", "local-qemu.boot",
                "qemu2.boot", "local-qemu.boot-health", "qemu2.boot-health"} <= stages
        build = suites[f"{cell}/local.build"].properties
        facts[cell] = {k: build[k] for k in ("commit", "build_id", "kernel_release")}
        for s in own:
            assert {k: s.properties.get(k) for k in facts[cell]} == facts[cell], s.name
            assert ("patchset_hash" in s.properties) == cell.endswith("hyperv-sample"), s.name
    assert facts["linux-6.1+hyperv-sample"]["commit"] != facts["linux-6.1+none"]["commit"]
    assert "local.patch" in {s.name.split("/", 1)[1] for s in suites.values()
                             if s.cell == "linux-6.1+hyperv-sample"}
    # the two hosts worked at the same time: their boot stages overlap
    spans = {}
    for host in ("local-qemu", "qemu2"):
        s = suites[f"linux-6.1+hyperv-sample/{host}.boot"]
        start = dt.datetime.fromisoformat(s.timestamp)
        spans[host] = (start, start + dt.timedelta(seconds=s.seconds))
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, spans
    # the same matrix in two shards, merged: the same cases
    shards = []
    for i in (1, 2):
        part = env.inv("run", "--plan", "two", "--shard", f"{i}/2", timeout=3600)
        assert part.returncode == 0, part.stderr[-2000:]
        shards.append(env.latest.resolve())
    merged = env.inv("report.merge", "--run", str(shards[0]), "--run", str(shards[1]))
    assert merged.returncode == 0, merged.stderr
    validate_junit(env.latest / "junit.xml")
    one = read_junit((whole / "junit.xml").read_text())
    two = read_junit((env.latest / "junit.xml").read_text())
    assert set(one) == set(two)
    assert {k: v.status for k, v in one.items()} == {k: v.status for k, v in two.items()}


def test_dry_run_is_quick_and_touches_nothing(matrix_env: Env) -> None:
    before = sorted(p.name for p in matrix_env.reports.iterdir()) \
        if matrix_env.reports.exists() else []
    t0 = time.monotonic()
    done = matrix_env.inv("run", "--plan", "two", "--dry-run", timeout=60)
    assert time.monotonic() - t0 < 5
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("linux-6.1+hyperv-sample@local-qemu: ")
    assert "build cached" in lines[0] and "build shared" in lines[1]
    after = sorted(p.name for p in matrix_env.reports.iterdir()) \
        if matrix_env.reports.exists() else []
    assert before == after


def test_sigterm_during_a_boot_leaves_a_report_and_no_qemu(real_env: Env,
                                                           validate_junit: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                             "run"], cwd=real_env.root, env={**os.environ, **real_env.vars},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def qemu() -> str:
        out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True,
                             text=True).stdout
        return "\n".join(x for x in out.splitlines() if str(real_env.root) in x)

    deadline = time.monotonic() + 600
    while not qemu():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3, err
    assert qemu() == ""
    validate_junit(real_env.latest / "junit.xml")
    suites = view.parse((real_env.latest / "junit.xml").read_text())
    boot = next(s for s in suites if s.name.endswith("local-qemu.boot"))
    assert boot.status == "error" and "interrupted by SIGTERM" in boot.cases[0].message
    health = next(s for s in suites if s.name.endswith("boot-health"))
    assert health.status == "skip"
    assert health.cases[0].message == "not run: stage 'boot' did not pass"


def test_baseline_plan_compares_with_the_unpatched_tree(matrix_env: Env) -> None:
    env = matrix_env
    env.write("plans/base.yaml", "kernels: [linux-6.1]\nseries: [hyperv-sample]\n"
              "hosts: [local-qemu]\nsuites: [boot-health]\nbaseline: true\n"
              "gate: regressions\n")
    done = env.inv("run", "--plan", "base", timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "against the unpatched baseline: 0 regressions" in done.stderr
    names = {s.name for s in view.parse((env.latest / "junit.xml").read_text())}
    assert {"linux-6.1+hyperv-sample/local-qemu.boot-health",
            "linux-6.1+none/local-qemu.boot-health"} <= names
    summary = (env.latest / "summary.md").read_text()
    assert "## Regressions (0)" in summary
    assert "<th>vs baseline</th>" in (env.latest / "report.html").read_text()
