"""Guest captures (hvlab/suites/capture.py's format) modelled on real Hyper-V and
Azure guests, for the unit tier: ``write(MODEL, folder)`` lays one out.

Hyper-V cannot run here, so every fact below comes from a public recorded
output of a real guest or from the 6.1 tree; the source of each is noted
where it is used:

[A] github.com/Azure/WALinuxAgent/issues/2498: dmesg of an Ubuntu Azure VM:
    "hv_vmbus: Unknown GUID: c376c1c3-d276-48d2-90a9-c04748072c60" (IMC) and
    "clocksource: Switched to clocksource hyperv_clocksource_tsc_page".
[B] learn.microsoft.com/azure/virtual-network/accelerated-networking-how-it-works:
    with Accelerated Networking a Mellanox (mlx4/mlx5) VF appears as a PCI device
    (through hv_pci) next to the synthetic netvsc interface, which it is enslaved to.
[C] github.com/systemd/systemd/pull/8692: driverctl list of a Hyper-V guest's
    VMBus devices: hv_balloon, "hv_util" (the older name of hv_utils), hv_netvsc,
    hyperv_fb, hid_hyperv, and "(none)" for Virtual Machine Activation.
[D] github.com/microsoft/WSL/issues/7734, /7435 and /5481: WSL2 dmesg: "Unknown
    GUID" lines for c376c1c3-... (IMC), 6e382d18-3336-4f4b-acc4-2b7703d4df4a and
    dde9cbc0-5060-4436-9448-ea1254a5d177, then the TSC page clocksource;
    github.com/microsoft/WSL/issues/7223: "hv_utils: cannot register PTP clock: 0",
    "hv_balloon: Using Dynamic Memory protocol version 2.0" on WSL2.
[E] github.com/microsoft/WSL/issues/11790: WSL2 kernel 6.18.33.2-microsoft-standard-
    WSL2 with cpu flags "constant_tsc nonstop_tsc tsc_reliable tsc_known_freq".
[F] github.com/trailofbits/algo/issues/1007: a Gen1 Azure VM: "ata_piix ...: Hyper-V
    Virtual Machine detected, ATA device ignore set", storvsc hosts for the disks.
[G] the 6.1 tree: class GUIDs in include/linux/hyperv.h; driver names in the
    drivers (hv_pci in pci-hyperv.c, built as pci_hyperv); hv_sock channels carry
    a class GUID per service (net/vmw_vsock/hyperv_transport.c).
[H] the facts the project collected (shared/facts.md, "Real Hyper-V guests"):
    Ubuntu's azure kernels build hv_vmbus, hv_storvsc and pci_hyperv in; RHEL builds
    every driver as a module; WSL2 builds everything in and has no /lib/modules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

NIC = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
SCSI = "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f"
IDE = "32412632-86cb-44a2-9b5c-50d1417354f5"
SHUTDOWN = "0e0b6031-5213-4934-818b-38d90ced39db"
TIMESYNC = "9527e630-d0ae-497b-adce-e80ab0175caf"
HEARTBEAT = "57164f39-9115-4e78-ab55-382f3bd5422d"
KVP = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
VSS = "35fa2e29-ea23-4236-96ae-3a6ebacba440"
DM = "525074dc-8985-46e2-8057-a307dc18a502"
MOUSE = "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a"
KBD = "f912ad6d-2b17-48ea-bd65-f927a61c7684"
VIDEO = "da0a7802-e377-4aac-8e77-0558eb1073f8"
PCI = "44c4f61d-4444-4400-9d52-802e27ede19f"
IMC = "c376c1c3-d276-48d2-90a9-c04748072c60"  # [A][D]
AVMA1 = "f8e65716-3cb3-4a06-9a60-1889c5cccab5"  # [G]
WSL_A = "6e382d18-3336-4f4b-acc4-2b7703d4df4a"  # [D]
WSL_B = "dde9cbc0-5060-4436-9448-ea1254a5d177"  # [D]
HVSOCK_SERVICE = "0e1f6a37-8ea4-4a52-9c3f-14b09de3a6c1"  # any: one GUID per service [G]

VMBUS = "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00"


@dataclass(frozen=True)
class Dev:
    id: str
    cls: str
    driver: str | None  # None: unbound
    channels: tuple[int, ...] = ()  # the CPU of each channel


@dataclass(frozen=True)
class Model:
    release: str
    devices: tuple[Dev, ...]
    builtin: tuple[str, ...]  # module names built in
    loaded: tuple[str, ...]  # modules in /proc/modules
    cpus: int = 2
    flags: str = "fpu tsc msr pae cx8 apic constant_tsc nonstop_tsc hypervisor"
    clocksource: str = "hyperv_clocksource_tsc_page"
    efi: bool = True  # Gen2 boots through UEFI
    lib_modules: bool = True
    ko: str = ".ko"
    nics: tuple[tuple[str, str, str, str], ...] = ()  # (name, driver, address, master)
    disk_on: str = ""  # the device id the root disk sits below
    kvp_daemon: bool = True
    tainted: int = 0
    dmesg: tuple[str, ...] = ()
    extra_modules: tuple[str, ...] = ()  # modules.dep entries not loaded


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


MODULE_PATH = {"hv_vmbus": "drivers/hv", "hv_utils": "drivers/hv", "hv_balloon": "drivers/hv",
               "hv_netvsc": "drivers/net/hyperv", "hv_storvsc": "drivers/scsi",
               "hyperv_keyboard": "drivers/input/serio", "hid_hyperv": "drivers/hid",
               "pci_hyperv": "drivers/pci/controller", "hyperv_fb": "drivers/video/fbdev",
               "hyperv_drm": "drivers/gpu/drm/hyperv", "hv_sock": "net/vmw_vsock",
               "mlx5_core": "drivers/net/ethernet/mellanox/mlx5/core"}
FILE_NAME = {"hyperv_keyboard": "hyperv-keyboard", "hid_hyperv": "hid-hyperv",
             "pci_hyperv": "pci-hyperv"}


def write(model: Model, folder: Path) -> Path:
    """``model`` as a capture folder (root/, dmesg.txt, commands/)."""
    root = folder / "root"
    root.mkdir(parents=True)
    _w(root / "proc/sys/kernel/osrelease", model.release + "\n")
    _w(root / "proc/sys/kernel/tainted", f"{model.tainted}\n")
    _w(root / "proc/cpuinfo", "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: {model.flags}\n\n"
        for i in range(model.cpus)))
    cs = root / "sys/devices/system/clocksource/clocksource0"
    _w(cs / "current_clocksource", model.clocksource + "\n")
    _w(cs / "available_clocksource", f"{model.clocksource} acpi_pm\n")
    _w(root / "sys/devices/system/cpu/online", f"0-{model.cpus - 1}\n")
    if model.efi:
        (root / "sys/firmware/efi").mkdir(parents=True)
    relid = 14
    for dev in model.devices:
        d = root / "sys/bus/vmbus/devices" / dev.id
        _w(d / "class_id", f"{{{dev.cls}}}\n")  # braces, as real guests read [G]
        _w(d / "device_id", f"{{{dev.id}}}\n")
        if dev.channels:
            _w(d / "channel_vp_mapping", "".join(f"{relid + i}:{cpu}\n"
                                                 for i, cpu in enumerate(dev.channels)))
            relid += len(dev.channels)
        if dev.driver:
            _link(d / "driver", f"../../../../../bus/vmbus/drivers/{dev.driver}")
            _link(root / "sys/bus/vmbus/drivers" / dev.driver / dev.id,
                  f"../../../../{VMBUS}/{dev.id}")
    modules_lines = []
    for m in model.loaded:
        _w(root / "sys/module" / m / "refcnt", "0\n")
        (root / "sys/module" / m / "holders").mkdir(parents=True, exist_ok=True)
        _w(root / "sys/module" / m / "initstate", "live\n")
        modules_lines.append(f"{m} 98304 0 - Live 0x0000000000000000\n")
    for m in model.builtin:
        (root / "sys/module" / m).mkdir(parents=True, exist_ok=True)  # no refcnt: built in
    _w(root / "proc/modules", "".join(modules_lines))
    if model.lib_modules:
        base = root / "lib/modules" / model.release
        path = {m: f"kernel/{MODULE_PATH.get(m, 'drivers')}/{FILE_NAME.get(m, m)}"
                for m in (*model.builtin, *model.loaded, *model.extra_modules)}
        _w(base / "modules.builtin", "".join(f"{path[m]}.ko\n" for m in model.builtin))
        _w(base / "modules.dep", "".join(f"{path[m]}{model.ko}:\n"
                                         for m in (*model.loaded, *model.extra_modules)))
    addrs = []
    for name, driver, address, master in model.nics:
        n = root / "sys/class/net" / name
        _w(n / "operstate", "up\n")
        bus = "vmbus" if driver.startswith("hv") else "pci"
        _link(n / "device/driver", f"../../../../bus/{bus}/drivers/{driver}")
        if master:
            _link(n / "master", f"../{master}")
        addrs.append({"ifname": name, "operstate": "UP", "addr_info": [
            {"family": "inet", "local": address.split("/")[0],
             "prefixlen": int(address.split("/")[1])}] if address else []})
    (root / "sys/class/net").mkdir(parents=True, exist_ok=True)
    (root / "sys/block").mkdir(parents=True, exist_ok=True)
    if model.disk_on:
        _link(root / "sys/block/sda", f"../{VMBUS}/{model.disk_on}/host0/target0:0:0/"
              "0:0:0:0/block/sda")
    if model.kvp_daemon:
        for i in range(5):
            _w(root / f"var/lib/hyperv/.kvp_pool_{i}", "")
    _w(folder / "dmesg.txt", "".join(line + "\n" for line in model.dmesg))
    ps = "  PID COMMAND\n    1 systemd\n  412 sshd\n" + \
        ("  530 hv_kvp_daemon\n" if model.kvp_daemon else "")
    _w(folder / "commands/ps.txt", ps)
    _w(folder / "commands/ip-addr.txt", json.dumps(addrs))
    _w(folder / "commands/uname-m.txt", "x86_64\n")
    return folder


def _id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


# An Azure Gen2 VM on an Ubuntu azure kernel: hv_vmbus, hv_storvsc and pci_hyperv
# built in [H], Accelerated Networking VF through hv_pci [B], the IMC device Linux
# leaves alone [A], an hv_sock channel [G], no dynamic memory device on Azure [H],
# an out-of-tree (unsigned) GPU module tainting O and E.
AZURE_GEN2 = Model(
    release="6.5.0-1025-azure",
    devices=(
        Dev(_id(1), NIC, "hv_netvsc", (0, 1)), Dev(_id(2), SCSI, "hv_storvsc", (0, 1)),
        Dev(_id(3), SHUTDOWN, "hv_utils"), Dev(_id(4), TIMESYNC, "hv_utils"),
        Dev(_id(5), HEARTBEAT, "hv_utils"), Dev(_id(6), KVP, "hv_utils"),
        Dev(_id(7), VSS, "hv_utils"), Dev(_id(8), KBD, "hyperv_keyboard"),
        Dev(_id(9), MOUSE, "hid_hyperv"), Dev(_id(10), VIDEO, "hyperv_drm"),
        Dev(_id(11), PCI, "hv_pci"), Dev(_id(12), IMC, None),
        Dev(_id(13), HVSOCK_SERVICE, "hv_sock"),
    ),
    builtin=("hv_vmbus", "hv_storvsc", "pci_hyperv"),
    loaded=("hv_netvsc", "hv_utils", "hyperv_keyboard", "hid_hyperv", "hyperv_drm",
            "hv_sock", "mlx5_core"),
    nics=(("eth0", "hv_netvsc", "10.0.0.4/24", ""),
          ("enP12345s1", "mlx5_core", "", "eth0")),
    disk_on=_id(2),
    tainted=4096 | 8192,  # O and E: an out-of-tree, unsigned module
    dmesg=(
        "<6>[    0.000000] Linux version 6.5.0-1025-azure (buildd@lcy02-amd64-047)",
        f"<6>[    1.536401] hv_vmbus: Unknown GUID: {IMC}",  # [A]
        "<6>[    1.559385] clocksource: Switched to clocksource hyperv_clocksource_tsc_page",
        "<3>[    2.226842] hv_utils: cannot register PTP clock: 0",  # [D]
        "<6>[    9.120001] hv_netvsc 000d3a31-b538-000d-3a31-b538000d3a31 eth0: "
        "Data path switched to VF: enP12345s1",  # [B]
        "<6>[   31.410112] hv_netvsc 000d3a31-b538-000d-3a31-b538000d3a31 eth0: "
        "Data path switched from VF: enP12345s1",
        "<6>[   32.977410] hv_netvsc 000d3a31-b538-000d-3a31-b538000d3a31 eth0: "
        "Data path switched to VF: enP12345s1",
    ),
)

# A Gen1 VM on a RHEL-like kernel: every driver a module (.ko.xz) [H], IDE and
# synthetic video as Gen1 has them [F][C], BIOS (no EFI), dynamic memory, a host
# with invariant TSC so the guest runs on tsc (the 6.1 hyperv_timer.c rule) [E][G],
# the AVMA device Linux leaves alone [C][G].
GEN1_MODULES = Model(
    release="5.14.0-362.8.1.el9_3.x86_64",
    devices=(
        Dev(_id(1), NIC, "hv_netvsc", (0, 1, 2, 3)), Dev(_id(2), IDE, "hv_storvsc", (0,)),
        Dev(_id(3), SCSI, "hv_storvsc", (0, 1, 2, 3)), Dev(_id(4), SHUTDOWN, "hv_utils"),
        Dev(_id(5), TIMESYNC, "hv_utils"), Dev(_id(6), HEARTBEAT, "hv_utils"),
        Dev(_id(7), KVP, "hv_utils"), Dev(_id(8), VSS, "hv_utils"),
        Dev(_id(9), DM, "hv_balloon"), Dev(_id(10), KBD, "hyperv_keyboard"),
        Dev(_id(11), MOUSE, "hid_hyperv"), Dev(_id(12), VIDEO, "hyperv_fb"),
        Dev(_id(13), AVMA1, None),
    ),
    builtin=(),
    loaded=("hv_vmbus", "hv_netvsc", "hv_storvsc", "hv_utils", "hv_balloon",
            "hyperv_keyboard", "hid_hyperv", "hyperv_fb"),
    extra_modules=("pci_hyperv", "hv_sock"),
    cpus=4, clocksource="tsc", efi=False, ko=".ko.xz",
    nics=(("eth0", "hv_netvsc", "192.168.10.21/24", ""),),
    disk_on=_id(2),
    dmesg=(
        "<6>[    0.000000] Linux version 5.14.0-362.8.1.el9_3.x86_64",
        "<6>[    0.800000] hv_vmbus: Vmbus version:5.3",
        f"<6>[    0.812001] hv_vmbus: Unknown GUID: {AVMA1}",
        "<6>[    3.153828] ata_piix 0000:00:07.1: Hyper-V Virtual Machine detected, ATA "
        "device ignore set",  # [F]
        "<6>[    4.000000] clocksource: Switched to clocksource tsc",
    ),
)

# WSL2: everything built in, no /lib/modules [H]; time sync, a NIC, a SCSI disk,
# dynamic memory [D], the WSL devices Linux does not know [D], no heartbeat or KVP.
WSL2 = Model(
    release="5.15.153.1-microsoft-standard-WSL2",
    devices=(
        Dev(_id(1), TIMESYNC, "hv_utils"), Dev(_id(2), SHUTDOWN, "hv_utils"),
        Dev(_id(3), NIC, "hv_netvsc", (0, 1)), Dev(_id(4), SCSI, "hv_storvsc", (0, 1)),
        Dev(_id(5), DM, "hv_balloon"), Dev(_id(6), IMC, None), Dev(_id(7), WSL_A, None),
        Dev(_id(8), WSL_B, None), Dev(_id(9), HVSOCK_SERVICE, "hv_sock"),
    ),
    builtin=("hv_vmbus", "hv_utils", "hv_balloon", "hv_netvsc", "hv_storvsc", "hv_sock",
             "hyperv_keyboard", "pci_hyperv"),
    loaded=(), lib_modules=False, kvp_daemon=False, cpus=8,
    flags="fpu tsc constant_tsc nonstop_tsc tsc_reliable tsc_known_freq hypervisor",  # [E]
    nics=(("eth0", "hv_netvsc", "172.28.112.5/20", ""),), disk_on=_id(4),
    dmesg=(
        "<6>[    0.000000] Linux version 5.15.153.1-microsoft-standard-WSL2",
        f"<6>[    0.306536] hv_vmbus: Unknown GUID: {IMC}",  # [D]
        f"<6>[    0.316526] hv_vmbus: Unknown GUID: {WSL_A}",
        f"<6>[    0.320554] hv_vmbus: Unknown GUID: {WSL_B}",
        "<6>[    0.319184] clocksource: Switched to clocksource hyperv_clocksource_tsc_page",
        "<3>[    2.225842] hv_utils: cannot register PTP clock: 0",  # [D]
        "<6>[    2.226694] hv_balloon: Using Dynamic Memory protocol version 2.0",
    ),
)

HEALTHY = {"azure-gen2": AZURE_GEN2, "gen1-modules": GEN1_MODULES, "wsl2": WSL2}


def _set_driver(model: Model, cls: str, driver: str | None) -> Model:
    return replace(model, devices=tuple(replace(d, driver=driver) if d.cls == cls else d
                                        for d in model.devices))


# Broken variants of the Azure Gen2 VM, each with the check that must fail.
BROKEN: dict[str, tuple[Model, Callable[[str], bool]]] = {
    "storage-unbound": (_set_driver(AZURE_GEN2, SCSI, None),
                        lambda msg: f"scsi device {_id(2)} has no driver bound" in msg),
    "nic-wrong-driver": (_set_driver(AZURE_GEN2, NIC, "hv_storvsc"),
                         lambda msg: f"network device {_id(1)} bound to hv_storvsc" in msg),
    "no-heartbeat": (replace(AZURE_GEN2, devices=tuple(
        d for d in AZURE_GEN2.devices if d.cls != HEARTBEAT)),
        lambda msg: "no heartbeat device" in msg),
    "clocksource-hpet": (replace(AZURE_GEN2, clocksource="hpet"),
                         lambda msg: "clocksource is hpet" in msg),
    "clocksource-jiffies": (replace(AZURE_GEN2, clocksource="jiffies"),
                            lambda msg: "clocksource is jiffies" in msg),
}
