"""Console/dmesg scanning on real console logs recorded from QEMU boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.boot import console

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "console"


def lines(name: str) -> list[str]:
    return (DATA / name).read_text(errors="replace").splitlines()


def test_clean_debian_boot_has_no_findings() -> None:
    log = lines("debian-6.1-clean.log")
    assert console.scan(log) == []
    assert console.banners(log) == ["6.1.0-56-amd64"]
    assert any("hvlab-guest-ready" in line for line in log)


def test_panic_without_init_is_one_finding_with_its_trace() -> None:
    log = lines("debian-6.1-panic-no-init.log")
    findings = console.scan(log)
    assert [f.kind for f in findings] == ["panic"]
    panic = findings[0]
    assert panic.message == ("Kernel panic - not syncing: VFS: Unable to mount root fs on "
                             "unknown-block(0,0)")
    assert "Call Trace:" in panic.excerpt and "ret_from_fork" in panic.excerpt
    assert console.first_panic(log) == panic


SYNTHETIC_WARN = """\
[    1.000000] ------------[ cut here ]------------
[    1.000000] hvlab: test warning during boot
[    1.000001] WARNING: CPU: 0 PID: 1 at drivers/hv/vmbus_drv.c:2590 hv_acpi_init+0x10/0x20
[    1.000002] Modules linked in:
[    1.000003] CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.192+ #1
[    1.000004] RIP: 0010:hv_acpi_init+0x10/0x20
[    1.000005] Call Trace:
[    1.000006]  <TASK>
[    1.000007]  do_one_initcall+0x41/0x200
[    1.000008]  </TASK>
[    1.000009] ---[ end trace 0000000000000000 ]---
[    1.000010] clocksource: Switched to clocksource tsc
[    2.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    2.000001] Oops: 0000 [#1] PREEMPT SMP NOPTI
"""


def test_warning_and_bug_are_separate_findings() -> None:
    findings = console.scan(SYNTHETIC_WARN.splitlines())
    assert [f.kind for f in findings] == ["warning", "bug", "oops"]
    warn = findings[0]
    assert warn.message.startswith("WARNING: CPU: 0 PID: 1 at drivers/hv/vmbus_drv.c:2590")
    assert "do_one_initcall" in warn.excerpt
    assert "hvlab: test warning during boot" in warn.excerpt  # printed before WARNING:
    assert "clocksource" not in warn.excerpt
    assert findings[1].line == 13


@pytest.mark.parametrize("line,kind", [
    ("[ 5.1] BUG: KASAN: use-after-free in hv_ringbuffer_read+0x1/0x2", "kasan"),
    ("[ 5.1] UBSAN: array-index-out-of-bounds in drivers/hv/channel.c:10:5", "ubsan"),
    ("[ 5.1] WARNING: possible circular locking dependency detected", "lockdep"),
    ("[ 9.9] INFO: task kworker/0:1:23 blocked for more than 120 seconds.", "hung-task"),
])
def test_other_report_kinds(line: str, kind: str) -> None:
    (f,) = console.scan([line])
    assert f.kind == kind


def test_a_second_banner_means_another_kernel_booted() -> None:
    log = ["[0.0] Linux version 6.1.192+ (hvlab@hvlab) #1", "...",
           "[0.0] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)"]
    assert console.banners(log) == ["6.1.192+", "6.1.0-56-amd64"]


def test_recorded_warn_from_an_hvlab_build() -> None:
    """A real WARN() at boot from a 6.1 build (the e2e WARN series), as QEMU logged it."""
    log = lines("hvlab-6.1-warn-at-boot.log")
    findings = console.scan(log)
    assert [f.kind for f in findings] == ["warning"]
    warn = findings[0]
    assert warn.message.startswith("WARNING: CPU: 0 PID: 1 at ")
    assert "drivers/hv/vmbus_drv.c" in warn.message
    assert warn.excerpt.startswith("------------[ cut here ]------------")
    assert "hvlab: test warning during boot" in warn.excerpt
    assert "Call Trace:" in warn.excerpt
    assert console.banners(log) == ["6.1.192+"]


def test_a_boot_that_stopped_is_seen_with_its_cause() -> None:
    assert console.boot_stopped(lines("debian-6.1-clean.log")) is None
    panic = console.boot_stopped(lines("debian-6.1-panic-no-init.log"))
    assert panic is not None and panic.kind == "panic"
    assert panic.cause() == ("the kernel panicked: Kernel panic - not syncing: VFS: Unable to "
                             "mount root fs on unknown-block(0,0)")


def test_a_root_file_system_that_would_not_mount_names_the_kernel_s_reason() -> None:
    stop = console.boot_stopped(lines("debian12-root-fs-module-missing.txt"))
    assert stop is not None and stop.kind == "root-mount"
    assert stop.root_device == "/dev/vda2"
    assert stop.kernel_said == "EXT4-fs (vda2): Cannot load crc32c driver."
    assert "could not be mounted" in stop.cause() and "crc32c" in stop.cause()


def test_a_root_disk_without_a_driver_names_the_missing_device() -> None:
    stop = console.boot_stopped(lines("debian12-root-disk-driver-missing.txt"))
    assert stop is not None and stop.kind == "root-missing"
    assert stop.root_device == "UUID=6fa4094c-94d8-4eaf-867a-85bde181a727"
    assert "no driver for the root disk" in stop.cause()
