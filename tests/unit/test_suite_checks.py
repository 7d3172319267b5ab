"""The built-in checks' judges on recorded or fixture output, and the suite
collectors run for real against fixture sysfs trees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hvlab.results import Status
from hvlab.suites import checks

pytestmark = pytest.mark.unit


def test_taint_decoding() -> None:
    assert checks.judge_taint("0\n").status is Status.PASS
    benign = checks.judge_taint(str(1 << 12 | 1 << 13))  # O + E
    assert benign.status is Status.PASS and "O (bit 12)" in benign.output
    bad = checks.judge_taint(str(1 << 9 | 1 << 7))
    assert bad.status is Status.FAIL
    assert bad.message == "kernel tainted 640: D (kernel died recently (OOPS or BUG)), " \
        "W (kernel issued a warning)"
    assert checks.judge_taint("cat: no such file").status is Status.ERROR


def test_dmesg_errors_against_a_baseline() -> None:
    raw = ("<6>[    0.1] all fine\n<3>[    1.2] ata1: failed to resume link at 0xffff0012\n"
           "<4>[    1.3] just a warning\n<3>[    2.0] hv_vmbus: new problem 7\n")
    assert checks.error_lines(raw) == ["ata1: failed to resume link at 0xffff0012",
                                       "hv_vmbus: new problem 7"]
    base = ["ata1: failed to resume link at 0xffff0099"]  # same message, other address
    case = checks.judge_dmesg(raw, base)
    assert case.status is Status.FAIL
    assert case.message == "1 error message(s) not in the baseline boot: hv_vmbus: new problem 7"
    assert checks.judge_dmesg(raw, checks.error_lines(raw)).status is Status.PASS
    assert "no baseline" in checks.judge_dmesg(raw, None).message


def test_scratch_judge() -> None:
    same = checks.judge_scratch("wrote abc\nread abc\n", "/dev/sdb")
    assert same.status is Status.PASS and same.name == "storage: 64 MiB read back from /dev/sdb"
    differs = checks.judge_scratch("wrote abc\nread abd\n", "/dev/sdb")
    assert differs.status is Status.FAIL and "differs" in differs.message
    refused = checks.judge_scratch("error /dev/sda or a partition of it is mounted\n",
                                   "/dev/sda")
    assert refused.status is Status.ERROR
    assert refused.message == "scratch disk: /dev/sda or a partition of it is mounted"
    assert checks.judge_scratch("", "/dev/sdb").status is Status.ERROR


def run_collector(script: str, root: Path) -> str:
    return subprocess.run(["sh", "-c", script, "sh", str(root)], capture_output=True,
                          text=True, check=True).stdout


def test_hv_sock_on_fixture_trees(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    (root / "sys/module/hv_sock").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "dev/vsock").write_text("")
    assert checks.judge_hvsock(run_collector(checks.COLLECT_HVSOCK, root), []).status \
        is Status.PASS
    (root / "dev/vsock").unlink()
    missing = checks.judge_hvsock(run_collector(checks.COLLECT_HVSOCK, root), [])
    assert missing.status is Status.FAIL and missing.message.endswith("/dev/vsock missing")
    refused = checks.judge_hvsock("modprobe 2 FATAL: Module hv_sock not found\n"
                                  "hvlab-modprobe-exit 1\n", [])
    assert refused.message == "modprobe hv_sock failed (exit 1)"
    splat = checks.judge_hvsock("hvlab-modprobe-exit 0\nmodule hv_sock\ndev vsock\n",
                                ["WARNING: at net/vmw_vsock/hyperv_transport.c:1"])
    assert splat.status is Status.FAIL and "hyperv_transport.c" in splat.message


def test_cpu_hotplug_judge_wants_the_cpu_back_and_the_channels_restored() -> None:
    ok = ("retargeted /sys/bus/vmbus/devices/a/channels/14/cpu\noffline 0 0\nonline 0 1\n"
          "restored /sys/bus/vmbus/devices/a/channels/14/cpu 1\n")
    assert [c.status for c in checks.judge_hotplug(ok, 1, [])] == [Status.PASS, Status.PASS]
    stuck = checks.judge_hotplug("offline 1 1\nonline 0 1\n", 1, [])
    assert stuck[0].status is Status.FAIL and "offline gave 1 1" in stuck[0].message
    assert stuck[1].status is Status.SKIP  # no channel served by it
    lost = checks.judge_hotplug(ok.replace("cpu 1\n", "cpu 0\n"), 1, [])
    assert lost[1].status is Status.FAIL and "1 channels moved off cpu1, 0 put back" in \
        lost[1].message
    refused = checks.judge_hotplug("error cpu1 cannot be taken offline here\n", 1, [])
    assert refused[0].status is Status.SKIP


ETHTOOL_OK = """nic eth0
l Channel parameters for eth0:
l Pre-set maximums:
l Combined:	8
l exit 0
g Ring parameters for eth0:
g exit 0
k Features for eth0:
k rx-checksumming: on
k exit 0
"""


def test_ethtool_read_back_and_a_channel_change_that_is_restored() -> None:
    assert checks.judge_ethtool(ETHTOOL_OK, ["eth0"])[0].status is Status.PASS
    broken = ETHTOOL_OK.replace("g Ring parameters for eth0:",
                                "g netlink error: Operation not supported")
    case = checks.judge_ethtool(broken, ["eth0"])[0]
    assert case.status is Status.FAIL and case.message.startswith("ethtool -g gave no settings")
    assert checks.judge_ethtool("noethtool\n", ["eth0"])[0].status is Status.SKIP
    done = checks.judge_channels_change("current 4 max 8\nset 0 3 3\nrestore 0 4 4\n", "eth1")
    assert done.status is Status.PASS and done.output == "4 -> 3 -> 4\n"
    kept = checks.judge_channels_change("current 4 max 8\nset 0 3 3\nrestore 1 4 3\n", "eth1")
    assert kept.status is Status.FAIL and "not restored to 4 channels" in kept.message
