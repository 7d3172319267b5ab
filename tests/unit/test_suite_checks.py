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


def test_modules_off_hyperv_enodev_is_the_expected_result() -> None:
    out = ("vmbus no\nmodule hv_vmbus builtin\nmodule hv_utils module\n"
           "load hv_utils 1 modprobe: can't load module hv_utils: No such device\n"
           "module hv_netvsc module\nmodule hv_sock absent\n")
    present, mods = checks.parse_modules(out)
    cases = {c.name: c for c in checks.judge_modules(present, mods, [])}
    assert cases["module hv_utils"].status is Status.PASS
    assert "refused with ENODEV" in cases["module hv_utils"].output
    assert cases["module hv_netvsc"].status is Status.SKIP
    assert "not on Hyper-V" in cases["module hv_netvsc"].message
    assert cases["module hv_sock"].status is Status.SKIP
    loaded = "vmbus no\nmodule hv_utils module\nload hv_utils 0 \nunload hv_utils 0 \n"
    assert checks.judge_modules(*checks.parse_modules(loaded), [])[0].status is Status.FAIL


def test_modules_on_hyperv_load_unload_and_splats() -> None:
    out = ("vmbus yes\nmodule hv_utils module\nload hv_utils 0 \nunload hv_utils 0 \n"
           "module hv_balloon module\nload hv_balloon 0 \nunload hv_balloon 1 rmmod: busy\n")
    cases = checks.judge_modules(*checks.parse_modules(out), ["WARNING: at hv_balloon.c:1"])
    by = {c.name: c for c in cases}
    assert by["module hv_utils"].status is Status.PASS
    assert by["module hv_balloon"].message == "rmmod hv_balloon failed: rmmod: busy"
    assert by["modules: no kernel report"].status is Status.FAIL


def fixture_root(tmp: Path, clocksource: str, pools: int, daemon: bool) -> Path:
    root = tmp / "guest"
    cs = root / "sys/devices/system/clocksource/clocksource0"
    cs.mkdir(parents=True)
    (cs / "current_clocksource").write_text(clocksource + "\n")
    kvp = root / "var/lib/hyperv"
    kvp.mkdir(parents=True)
    for i in range(pools):
        (kvp / f".kvp_pool_{i}").write_text("")
    proc = root / "proc" / "4242"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("hv_kvp_daemon\n" if daemon else "bash\n")
    return root


def run_collector(script: str, root: Path) -> str:
    return subprocess.run(["sh", "-c", script, "sh", str(root)], capture_output=True,
                          text=True, check=True).stdout


def test_hv_utils_on_a_fixture_guest(tmp_path: Path) -> None:
    root = fixture_root(tmp_path, "hyperv_clocksource_tsc_page", 5, True)
    cases = checks.judge_utils(run_collector(checks.COLLECT_UTILS, root),
                               ["heartbeat", "kvp"])
    assert all(c.status is Status.PASS for c in cases), cases


def test_hv_utils_missing_daemon_pools_clock_and_heartbeat(tmp_path: Path) -> None:
    root = fixture_root(tmp_path, "tsc", 3, False)
    by = {c.name: c for c in checks.judge_utils(run_collector(checks.COLLECT_UTILS, root),
                                                ["kvp"])}
    assert "expected hyperv_clocksource_tsc_page" in by["hv_utils: clocksource"].message
    assert by["hv_utils: KVP pools"].message == "3 of 5 KVP pools in /var/lib/hyperv"
    assert "hv_kvp_daemon is not running" in by["hv_utils: KVP daemon"].message
    assert by["hv_utils: heartbeat"].status is Status.FAIL


def test_network_judge() -> None:
    good = ("iface lo - unknown\niface eth0 hv_netvsc up\naddr eth0 10.0.0.5/24\n"
            "gateway 10.0.0.1\nping ok\n")
    assert all(c.status is Status.PASS for c in checks.judge_network(good))
    down = "iface eth0 hv_netvsc down\ngateway -\n"
    by = {c.name: c for c in checks.judge_network(down)}
    assert by["network: synthetic NIC"].message == "eth0 is down, address none"
    assert by["network: gateway ping"].message == "no default gateway"
    assert checks.judge_network("iface eth0 virtio_net up\n")[0].status is Status.FAIL


def test_modules_collector_on_a_fixture_tree(tmp_path: Path) -> None:
    # the collector's module discovery (dash-named files, builtin, absent)
    import os

    release = os.uname().release
    mods = tmp_path / "lib/modules" / release
    (mods / "kernel/drivers/hid").mkdir(parents=True)
    (mods / "kernel/drivers/hid/hid-hyperv.ko").write_text("")
    (mods / "modules.dep").write_text("kernel/drivers/hid/hid-hyperv.ko:\n"
                                      "kernel/drivers/hv/hv_utils.ko:\n")  # file missing
    (mods / "modules.builtin").write_text("kernel/drivers/hv/hv_vmbus.ko\n")
    script = checks.collect_modules_script().replace("modprobe", "false").replace(
        "rmmod", "false")
    present, states = checks.parse_modules(run_collector(script, tmp_path))
    kinds = {m.name: m.kind for m in states}
    assert not present
    assert kinds["hid_hyperv"] == "module" and kinds["hv_vmbus"] == "builtin"
    assert kinds["hv_utils"] == "absent"


STORVSC = "f8b3781b-1e82-4818-a1c3-63d806ec15bb"
VMBUS_DEVICES = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00"


def storage_root(tmp: Path, disk_on_storvsc: bool, bound: bool) -> Path:
    """/sys as on a Hyper-V guest: sda below the storvsc VMBus device, vda on virtio."""
    root = tmp / "guest"
    dev = root / VMBUS_DEVICES / STORVSC
    sda = dev / "host0/target0:0:0/0:0:0:0/block/sda"
    vda = root / "sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"
    for d in (sda, vda, root / "sys/block", root / "sys/bus/vmbus/drivers/hv_storvsc"):
        d.mkdir(parents=True, exist_ok=True)
    if bound:
        (root / "sys/bus/vmbus/drivers/hv_storvsc" / STORVSC).symlink_to(
            f"../../../../devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/{STORVSC}")
    if disk_on_storvsc:
        (root / "sys/block/sda").symlink_to(
            f"../devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/{STORVSC}"
            "/host0/target0:0:0/0:0:0:0/block/sda")
    (root / "sys/block/vda").symlink_to("../devices/pci0000:00/0000:00:04.0/virtio1/block/vda")
    return root


def test_storvsc_disk_found_below_the_bound_vmbus_device(tmp_path: Path) -> None:
    case = checks.judge_storvsc(run_collector(checks.COLLECT_STORAGE,
                                              storage_root(tmp_path, True, True)))
    assert case.status is Status.PASS and case.output == "on hv_storvsc: sda\n"


def test_storvsc_without_a_disk_or_unbound_fails(tmp_path: Path) -> None:
    no_disk = checks.judge_storvsc(run_collector(checks.COLLECT_STORAGE,
                                                 storage_root(tmp_path / "a", False, True)))
    assert no_disk.status is Status.FAIL
    assert no_disk.message == f"no block device below the hv_storvsc devices {STORVSC}"
    assert "vda -> " in no_disk.output  # the disks that exist are listed
    unbound = checks.judge_storvsc(run_collector(checks.COLLECT_STORAGE,
                                                 storage_root(tmp_path / "b", True, False)))
    assert unbound.message == "no VMBus device is bound to hv_storvsc"


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
