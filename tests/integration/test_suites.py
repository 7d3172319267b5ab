"""Suites on a real QEMU guest (the prebuilt Debian kernel): parsers, timeouts,
hostile and huge output, retries, requirements, script folders, built-ins."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Env
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration

HOSTILE = r"printf 'nul:\000 ansi:\033[31mred\033[0m bad:\377\376 nonchar:\357\277\276 end\n'"

SUITE = r"""description: everything a suite can do
scripts: scripts
tests:
  - name: passes
    run: "true"
  - name: fails
    run: "echo about to fail; exit 3"
  - name: not-found
    run: "no-such-command --flag"
  - name: too-slow
    run: "echo started; sleep 300"
    timeout: 3
  - name: after-timeout
    run: "pgrep -x 'sleep' && exit 1 || exit 0"
  - name: hostile
    run: "@HOSTILE@"
  - name: tap
    parser: tap
    run: "printf 'TAP version 13\n1..3\nok 1 - one\nnot ok 2 - two\nok 3 - three # SKIP no disk\n'"
  - name: ktap-crash
    parser: ktap
    run: "printf 'KTAP version 1\n1..4\nok 1 first\nok 2 second\n'"
  - name: flaky
    run: "if [ -e /tmp/flaky-once ]; then exit 0; fi; touch /tmp/flaky-once; exit 1"
    retries: 2
  - name: always-fails
    run: "exit 1"
    retries: 2
  - name: needs-a-disk
    run: "true"
    requires: [path:/dev/hvlab-scratch]
  - name: needs-vmbus
    run: "true"
    requires: [vmbus]
  - name: junit
    parser: junit
    results: /tmp/out.xml
    run: "cp out.xml /tmp/out.xml"
  - name: script-folder
    run: "sh ./check.sh"
  - name: selftests
    kselftest: [size]
"""


@pytest.fixture(scope="module")
def vmlinuz() -> str:
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        pytest.fail("no /boot/vmlinuz-*: run ci/setup.sh (linux-image-amd64)")
    return kernels[-1]


def setup_env(env: Env) -> None:
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/all.yaml", SUITE.replace("@HOSTILE@", HOSTILE.replace("\\", "\\\\")))
    env.write("suites/scripts/check.sh", 'echo "in $PWD for $HVLAB_SUITE/$HVLAB_TEST"\n')
    env.write("suites/scripts/out.xml",
              '<testsuite name="x" tests="2"><testcase classname="x" name="a"/>'
              '<testcase classname="x" name="b"><failure message="b broke"/></testcase>'
              "</testsuite>")
    env.write("suites/boot-health.yaml",
              (REPO / "configs" / "suites" / "boot-health.yaml").read_text())


def message(case: Any) -> str:
    return str(case.result[0].message) if case.result else ""


def test_every_kind_of_test_on_a_real_guest(env: Env, vmlinuz: str,
                                            validate_junit: Any) -> None:
    setup_env(env)
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "q", "--suite", "all",
                   "--suite", "boot-health", timeout=600)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]  # errors: exit 3
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("q.all")
    assert status(cases["passes"]) == "pass"
    assert status(cases["fails"]) == "failure"
    assert message(cases["fails"]) == "exit 3: about to fail"  # the reason, not just 'exit 3'
    assert cases["fails"].result[0].text.split("\n") == ["exit 3: about to fail", "about to fail"]
    assert "about to fail" in cases["fails"].system_out
    assert status(cases["not-found"]) == "error"
    assert "command not found on the host" in message(cases["not-found"])
    assert "no-such-command" in message(cases["not-found"])
    assert status(cases["too-slow"]) == "error"
    assert message(cases["too-slow"]).startswith("TIMEOUT: killed on the host after 3 s")
    assert status(cases["after-timeout"]) == "pass"  # killed there, and the suite went on
    assert status(cases["hostile"]) == "pass"
    assert "ansi:red" in cases["hostile"].system_out
    assert status(cases["tap: two"]) == "failure"
    assert status(cases["tap: one"]) == "pass" and status(cases["tap: three"]) == "skipped"
    crash = cases["ktap-crash: test 3 (never reported: crashed)"]
    assert status(crash) == "failure" and crash.result[0].type == "crash"
    assert "2 of 4 planned" in message(crash)
    assert status(cases["ktap-crash: test 4 (never reported: crashed)"]) == "failure"
    assert status(cases["flaky"]) == "pass"
    assert "flaky: passed on attempt 2" in cases["flaky"].system_out
    props = env.suite_properties("q.all")
    assert json.loads(props["flaky"]) == ["flaky"]
    assert status(cases["always-fails"]) == "failure"
    assert status(cases["needs-a-disk"]) == "skipped"
    assert "requires path:/dev/hvlab-scratch" in message(cases["needs-a-disk"])
    assert "not on Hyper-V" in message(cases["needs-vmbus"])
    assert status(cases["junit: a"]) == "pass" and status(cases["junit: b"]) == "failure"
    assert message(cases["junit: b"]) == "b broke"
    assert "in /tmp/hvlab-suites/all for all/script-folder" in \
        cases["script-folder"].system_out
    # a prebuilt distro kernel has no tree, so no kselftest collection: an error, not a pass
    assert status(cases["selftests"]) == "error"
    assert "no kselftest collection of size for this build" in message(cases["selftests"])
    health = env.suite("q.boot-health")
    assert status(health["taint"]) == "pass"
    assert props["kernel_release"] == Path(vmlinuz).name.removeprefix("vmlinuz-")


def test_100_mb_of_output_is_capped_with_flat_memory(env: Env, vmlinuz: str,
                                                      validate_junit: Any) -> None:
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/flood.yaml", "tests:\n  - name: flood\n"
              "    run: \"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 100000000\"\n"
              "    timeout: 600\n  - name: next\n    run: \"echo still here\"\n")
    # the high-water mark of hvlab's own process (QEMU, a child, is not counted)
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "test", "--prebuilt",
         vmlinuz, "--host", "q", "--suite", "flood"], cwd=env.root,
        env={**os.environ, **env.vars}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    peak_kib = 0
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            status_text = Path(f"/proc/{proc.pid}/status").read_text()
            peak_kib = max(peak_kib, int(status_text.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.2)
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("q.flood")
    assert status(cases["flood"]) == "pass" and status(cases["next"]) == "pass"
    assert len(cases["flood"].system_out) < 100_000  # capped, with the log's path
    log = env.latest / cases["flood"].system_out.split("full log: ")[-1].split()[0] \
        if "full log: " in cases["flood"].system_out else None  # relative to the run folder
    assert (env.latest / "logs" / "suite-flood-flood.out").stat().st_size >= 100_000_000
    assert log is None or log.exists()


def test_sigterm_during_a_test_stops_everything_and_reports(env: Env, vmlinuz: str,
                                                            validate_junit: Any) -> None:
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/slow.yaml", "tests:\n  - name: slow\n    run: \"sleep 300\"\n"
              "    timeout: 600\n")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                             "test", "--prebuilt", vmlinuz, "--host", "q", "--suite", "slow"],
                            cwd=env.root, env={**os.environ, **env.vars},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(env.reports.glob("*/logs/suite-slow-slow.log")):
        assert time.monotonic() < deadline and proc.poll() is None, "the test never started"
        time.sleep(0.2)
    time.sleep(1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 3, err
    left = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    assert str(env.root) not in left.stdout
    validate_junit(env.latest / "junit.xml")
    case = env.suite("q.slow")["slow: prebuilt"]
    assert status(case) == "error" and "interrupted by SIGTERM" in message(case)


def test_storage_check_writes_and_reads_back_a_scratch_disk(env: Env, vmlinuz: str,
                                                            tmp_path: Path,
                                                            validate_junit: Any) -> None:
    disks = {}
    for name, mib in (("big", 96), ("small", 16)):
        disks[name] = tmp_path / f"{name}.img"
        with disks[name].open("wb") as fh:
            fh.truncate(mib << 20)
        env.write(f"hosts/{name}.yaml",
                  "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\nscratch_disk: /dev/vda\n"
                  f"qemu_args: [-drive, 'file={disks[name]},if=virtio,format=raw']\n")
    # no requirements: the storvsc part is skipped off Hyper-V, the disk I/O is real
    env.write("suites/storage.yaml", "tests:\n  - name: storage\n    run: builtin:hv-storage\n")
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "big", "--suite", "storage",
                   timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("big.storage")
    assert status(cases["storage: storvsc disk"]) == "skipped"
    assert "not on Hyper-V" in message(cases["storage: storvsc disk"])
    scratch = cases["storage: 64 MiB read back from /dev/vda"]
    assert status(scratch) == "pass", message(scratch)
    written = disks["big"].read_bytes()[: 64 << 20]
    assert scratch.system_out.strip() == f"sha256 {hashlib.sha256(written).hexdigest()}"
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "small", "--suite", "storage",
                   timeout=600)
    assert done.returncode == 3  # the check could not run: an error, never a pass
    small = env.suite("small.storage")["storage: 64 MiB read back from /dev/vda"]
    assert status(small) == "error"
    assert message(small) == "scratch disk: /dev/vda has 16 MiB, fewer than 64"


LOSSES = r"""tests:
  - name: before
    run: 'true'
  - name: sshd killed
    run: >-
      p=$$; while [ "$(cat /proc/$p/comm)" != sshd ]; do p=$(cut -d" " -f4 /proc/$p/stat);
      done; kill -9 $p; sleep 30
  - name: reconnected
    run: 'test -d /proc/self'
  - name: reboots itself
    run: 'echo restarting; reboot -f; sleep 60'
  - name: after the reboot
    run: 'true'
"""


def test_a_test_that_takes_the_connection_or_the_guest_with_it(env: Env,
                                                               vmlinuz: str) -> None:
    """sshd killed in the middle of a test: that test is an error and the next one
    reconnects; the guest rebooting itself: an error saying so, and no later test
    can pass on a guest that is not the one booted."""
    setup_env(env)
    env.write("suites/losses.yaml", LOSSES)
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "q", "--suite", "losses",
                   timeout=600)
    assert done.returncode == 3, done.stderr[-3000:]
    cases = env.suite("q.losses")
    got = {name: (status(c), message(c)) for name, c in cases.items()}
    assert got["before"] == ("pass", "")
    assert got["sshd killed"] == ("error", "the connection dropped during the test")
    assert got["reconnected"] == ("pass", "")
    state, why = got["reboots itself"]
    assert state == "error" and why.startswith("guest rebooted during the test"), why
    state, why = got["after the reboot"]
    assert state == "error" and why.startswith("not run: guest rebooted"), why


CRASH_SUITE = """description: the kernel crashes in the middle
tests:
  - name: before
    run: "true"
  - name: crash
    run: "echo c > /proc/sysrq-trigger"
    timeout: 60
  - name: after
    run: "true"
"""


def test_a_kernel_crash_in_a_suite_is_a_kernel_failure(env: Env, vmlinuz: str) -> None:
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/crash.yaml", CRASH_SUITE)
    done = env.inv("test", "--prebuilt", vmlinuz, "--host", "q", "--suite", "crash",
                   timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]  # the kernel's failure: never 3
    cases = env.suite("q.crash")
    assert status(cases["before"]) == "pass"
    crash, after = cases["crash"].result[0], cases["after"].result[0]
    assert (type(crash).__name__, crash.type) == ("Failure", "crash")
    assert crash.message.startswith("the kernel crashed during the test: Kernel panic - not "
                                    "syncing: sysrq triggered crash")
    assert "sysrq" in crash.text
    assert (type(after).__name__, after.type) == ("Failure", "crash")
    assert after.message.startswith("never ran: the kernel crashed in test crash")
