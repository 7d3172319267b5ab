"""VMBus device checks: collected by a small shell script on the guest,
judged here by pure code (so the judging is tested on fixture sysfs trees).

Every device under /sys/bus/vmbus/devices must have a known class GUID
(include/linux/hyperv.h) and be bound to the driver that serves it.  Off
Hyper-V there is no VMBus: every check is SKIPPED "not on Hyper-V".
"""

from __future__ import annotations

from dataclasses import dataclass

from hvlab.results import Status, TestCase

# class GUID -> (what it is, drivers that may serve it)
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "f8615163-df3e-46c5-913f-f2d2f965ed0e": ("network", ("hv_netvsc",)),
    "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f": ("scsi", ("hv_storvsc",)),
    "32412632-86cb-44a2-9b5c-50d1417354f5": ("ide", ("hv_storvsc",)),
    "0e0b6031-5213-4934-818b-38d90ced39db": ("shutdown", ("hv_utils",)),
    "9527e630-d0ae-497b-adce-e80ab0175caf": ("timesync", ("hv_utils",)),
    "57164f39-9115-4e78-ab55-382f3bd5422d": ("heartbeat", ("hv_utils",)),
    "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6": ("kvp", ("hv_utils",)),
    "35fa2e29-ea23-4236-96ae-3a6ebacba440": ("vss", ("hv_utils",)),
    "34d14be3-dee4-41c8-9ae7-6b174977c192": ("fcopy", ("hv_utils",)),
    "525074dc-8985-46e2-8057-a307dc18a502": ("dynamic-memory", ("hv_balloon",)),
    "f912ad6d-2b17-48ea-bd65-f927a61c7684": ("keyboard", ("hyperv_keyboard",)),
    "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a": ("mouse", ("hid_hyperv",)),
    "da0a7802-e377-4aac-8e77-0558eb1073f8": ("video", ("hyperv_drm", "hyperv_fb")),
    "44c4f61d-4444-4400-9d52-802e27ede19f": ("pci-passthrough", ("hv_pci",)),
}

# POSIX sh (busybox too).  $1 is the sysfs root ("" on a real guest).
COLLECT = r"""root="${1:-}"
d="$root/sys/bus/vmbus/devices"
if [ ! -d "$d" ]; then echo "novmbus"; exit 0; fi
echo "vmbus"
for dev in "$d"/*; do
  [ -e "$dev" ] || continue
  cls=$(cat "$dev/class_id" 2>/dev/null)
  drv=-
  if [ -L "$dev/driver" ]; then drv=$(basename "$(readlink "$dev/driver")"); fi
  echo "device $(basename "$dev") ${cls:--} $drv"
done
"""

NOT_ON_HYPERV = "not on Hyper-V: no /sys/bus/vmbus (hv_vmbus refuses to load elsewhere)"


@dataclass(frozen=True)
class Device:
    id: str
    class_id: str  # without braces, lower case
    driver: str  # "-" when unbound


def parse(output: str) -> tuple[bool, list[Device]]:
    """(VMBus present, devices) from COLLECT's output."""
    present = False
    devices = []
    for line in output.splitlines():
        parts = line.split()
        if parts == ["vmbus"]:
            present = True
        elif len(parts) == 4 and parts[0] == "device":
            devices.append(Device(parts[1], parts[2].strip("{}").lower(), parts[3]))
    return present, devices


def judge(present: bool, devices: list[Device]) -> list[TestCase]:
    if not present:
        return [TestCase("vmbus: present", Status.SKIP, NOT_ON_HYPERV),
                TestCase("vmbus: devices bound to their drivers", Status.SKIP, NOT_ON_HYPERV),
                TestCase("vmbus: heartbeat device", Status.SKIP, NOT_ON_HYPERV)]
    cases = [TestCase("vmbus: present", Status.PASS, output=f"{len(devices)} devices")]
    kinds = []
    for dev in devices:
        known = CLASSES.get(dev.class_id)
        if known is None:
            cases.append(TestCase(f"vmbus: device {dev.id}", Status.FAIL,
                                  f"unknown class GUID {{{dev.class_id}}} (driver {dev.driver})"))
            continue
        kind, drivers = known
        kinds.append(kind)
        name = f"vmbus: {kind} {dev.id}"
        if dev.driver in drivers:
            cases.append(TestCase(name, Status.PASS, output=f"bound to {dev.driver}"))
        elif dev.driver == "-":
            cases.append(TestCase(name, Status.FAIL,
                                  f"{kind} device is not bound; expected {' or '.join(drivers)}"))
        else:
            cases.append(TestCase(name, Status.FAIL, f"{kind} device bound to {dev.driver}, "
                                  f"expected {' or '.join(drivers)}"))
    if "heartbeat" in kinds:
        cases.append(TestCase("vmbus: heartbeat device", Status.PASS))
    else:
        cases.append(TestCase("vmbus: heartbeat device", Status.FAIL,
                              "no heartbeat device on VMBus (integration service off, or "
                              "hv_utils missing)"))
    return cases
