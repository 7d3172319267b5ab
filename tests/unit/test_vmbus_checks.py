"""VMBus checks on fixture sysfs trees laid out as on a Hyper-V guest: the real
collector script runs on them, the pure judge reads its output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hvlab.results import Status
from hvlab.suites import vmbus

pytestmark = pytest.mark.unit

GEN2 = {  # a Gen2 VM: synthetic NIC and SCSI, the util services, balloon, keyboard, mouse
    "f8615163-df3e-46c5-913f-f2d2f965ed0e": "hv_netvsc",
    "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f": "hv_storvsc",
    "0e0b6031-5213-4934-818b-38d90ced39db": "hv_utils",
    "9527e630-d0ae-497b-adce-e80ab0175caf": "hv_utils",
    "57164f39-9115-4e78-ab55-382f3bd5422d": "hv_utils",
    "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6": "hv_utils",
    "525074dc-8985-46e2-8057-a307dc18a502": "hv_balloon",
    "f912ad6d-2b17-48ea-bd65-f927a61c7684": "hyperv_keyboard",
    "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a": "hid_hyperv",
}


def sysfs(root: Path, devices: dict[str, str | None]) -> Path:
    base = root / "sys" / "bus" / "vmbus"
    for n, (cls, driver) in enumerate(devices.items()):
        dev = base / "devices" / f"0000{n:04d}-0000-0000-0000-{n:012d}"
        dev.mkdir(parents=True)
        (dev / "class_id").write_text(f"{{{cls}}}\n")
        (dev / "device_id").write_text("{00000000-0000-0000-0000-000000000000}\n")
        if driver:
            target = base / "drivers" / driver
            target.mkdir(parents=True, exist_ok=True)
            (dev / "driver").symlink_to(target)
    return root


def collect(root: Path) -> str:
    return subprocess.run(["sh", "-c", vmbus.COLLECT, "sh", str(root)], capture_output=True,
                          text=True, check=True).stdout


def statuses(root: Path) -> dict[str, Status]:
    return {c.name: c.status for c in vmbus.judge(*vmbus.parse(collect(root)))}


def test_healthy_gen2_guest_passes(tmp_path: Path) -> None:
    result = statuses(sysfs(tmp_path, dict(GEN2)))
    assert result.pop("vmbus: present") is Status.PASS
    assert result.pop("vmbus: heartbeat device") is Status.PASS
    assert len(result) == len(GEN2) and set(result.values()) == {Status.PASS}


def test_device_bound_to_the_wrong_driver_fails(tmp_path: Path) -> None:
    devices = dict(GEN2)
    devices["f8615163-df3e-46c5-913f-f2d2f965ed0e"] = "hv_storvsc"
    cases = vmbus.judge(*vmbus.parse(collect(sysfs(tmp_path, devices))))
    bad = [c for c in cases if c.status is Status.FAIL]
    assert len(bad) == 1
    assert bad[0].message == "network device bound to hv_storvsc, expected hv_netvsc"


def test_unbound_and_unknown_devices_fail(tmp_path: Path) -> None:
    devices: dict[str, str | None] = dict(GEN2)
    devices["ba6163d9-04a1-4d29-b605-72e2ffb1dc7f"] = None
    devices["12345678-1234-1234-1234-123456789abc"] = "mystery"
    cases = {c.name: c for c in vmbus.judge(*vmbus.parse(collect(sysfs(tmp_path, devices))))}
    failed = sorted(c.message for c in cases.values() if c.status is Status.FAIL)
    assert failed == ["scsi device is not bound; expected hv_storvsc",
                      "unknown class GUID {12345678-1234-1234-1234-123456789abc} "
                      "(driver mystery)"]


def test_missing_heartbeat_fails(tmp_path: Path) -> None:
    devices = {k: v for k, v in GEN2.items() if k != "57164f39-9115-4e78-ab55-382f3bd5422d"}
    result = statuses(sysfs(tmp_path, devices))
    assert result["vmbus: heartbeat device"] is Status.FAIL


def test_off_hyperv_everything_is_skipped_naming_hyperv(tmp_path: Path) -> None:
    cases = vmbus.judge(*vmbus.parse(collect(tmp_path)))
    assert {c.status for c in cases} == {Status.SKIP}
    assert all("not on Hyper-V" in c.message for c in cases)
