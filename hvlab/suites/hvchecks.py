"""The read-only Hyper-V guest checks, judged on a capture (suites/capture.py)
against what the tested tree expects (suites/hvtree.py).  Pure: the same
judgement serves a live guest (captured first) and a capture from elsewhere.

Facts about real guests these rules follow (public recorded outputs, see
tests/data/captures/README.md): class_id reads ``{guid}`` with braces; hosts
offer devices Linux leaves alone (AVMA, RDV, IMC) and one hv_sock channel
per service, each with its own class GUID; drivers may be built in (no
refcnt, no /proc/modules line; WSL2 has no /lib/modules at all); vmbus
driver names differ from module names (hv_pci is pci_hyperv); the 6.1
hyperv_timer.c lowers the TSC page clocksource's rating when the host offers
an invariant TSC, so such guests run on ``tsc``; arm64 guests use
``arch_sys_counter``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hvlab.results import Status, TestCase
from hvlab.suites.capture import Capture
from hvlab.suites.hvtree import HvExpectations
from hvlab.suites.vmbus import NOT_ON_HYPERV

DEVICES = "sys/bus/vmbus/devices"
CRITICAL = ("network", "scsi", "ide")  # without their driver the guest has no NIC or disk


def not_captured(name: str, path: str) -> TestCase:
    return TestCase(name, Status.SKIP, f"not captured: {path}")


@dataclass(frozen=True)
class Device:
    id: str
    class_id: str  # lower case, no braces
    driver: str  # "" when unbound
    channels: tuple[tuple[int, int], ...]  # (relid, cpu) from channel_vp_mapping


def devices(cap: Capture) -> list[Device]:
    out = []
    for dev in cap.listdir(DEVICES) or []:
        cls = (cap.read(f"{DEVICES}/{dev}/class_id") or "").strip().strip("{}").lower()
        link = cap.link(f"{DEVICES}/{dev}/driver")
        mapping = cap.read(f"{DEVICES}/{dev}/channel_vp_mapping") or ""
        channels = tuple((int(a), int(b)) for a, b in re.findall(r"(\d+):(\d+)", mapping))
        out.append(Device(dev, cls, link.rsplit("/", 1)[-1] if link else "", channels))
    return out


def _skip_off_hyperv(cap: Capture, *names: str) -> list[TestCase] | None:
    if cap.on_hyperv:
        return None
    return [TestCase(n, Status.SKIP, NOT_ON_HYPERV) for n in names]


def judge_devices(cap: Capture, exp: HvExpectations) -> list[TestCase]:
    """Every device whose class the tree knows is bound to a driver that serves it;
    an unbound NIC or disk controller fails; devices Linux leaves alone, hv_sock
    channels and classes this tree does not know are listed, not failed."""
    skipped = _skip_off_hyperv(cap, "vmbus: present")
    if skipped:
        return skipped
    devs = devices(cap)
    gen = ("generation 2 (UEFI)" if cap.exists("sys/firmware/efi") else
           "generation 1 (BIOS)") if cap.listdir("sys/firmware") is not None else ""
    cases = [TestCase("vmbus: present", Status.PASS,
                      output=f"{len(devs)} devices" + (f"; {gen}" if gen else "") + "\n")]
    info = []
    for dev in devs:
        known = exp.classes.get(dev.class_id)
        if dev.driver in exp.hvsock_drivers:
            info.append(f"{dev.id}: hv_sock channel {{{dev.class_id}}} ({dev.driver})")
            continue
        if known is None or not known.drivers:
            why = ("left alone by Linux on purpose" if dev.class_id in exp.no_driver else
                   f"{known.kind}: no driver in this tree" if known else
                   "class unknown to this tree")
            info.append(f"{dev.id}: {{{dev.class_id}}} {why}"
                        + (f", bound to {dev.driver}" if dev.driver else ""))
            continue
        name = f"vmbus: {known.kind} {dev.id}"
        want = " or ".join(known.drivers)
        if dev.driver in known.drivers:
            cases.append(TestCase(name, Status.PASS, output=f"bound to {dev.driver}\n"))
        elif dev.driver in exp.generic_drivers:
            cases.append(TestCase(name, Status.PASS, output=f"bound to {dev.driver} (by an "
                                  f"administrator, in place of {want})\n"))
        elif dev.driver:
            cases.append(TestCase(name, Status.FAIL, f"{known.kind} device {dev.id} bound to "
                                  f"{dev.driver}, expected {want}"))
        elif known.kind in CRITICAL:
            cases.append(TestCase(name, Status.FAIL, f"{known.kind} device {dev.id} has no "
                                  f"driver bound; expected {want}"))
        else:
            cases.append(TestCase(name, Status.SKIP, f"not bound: {want} not loaded"))
    cases.append(TestCase("vmbus: devices without a Linux driver", Status.PASS,
                          output="\n".join(info) + "\n" if info else "none\n"))
    return cases


def judge_heartbeat(cap: Capture, exp: HvExpectations) -> TestCase:
    name = "vmbus: heartbeat device"
    if not cap.on_hyperv:
        return TestCase(name, Status.SKIP, NOT_ON_HYPERV)
    beats = [d for d in devices(cap) if exp.kind(d.class_id) == "heartbeat"]
    if not beats:
        if "WSL2" in cap.release:
            return TestCase(name, Status.SKIP, "WSL2 offers no heartbeat service")
        return TestCase(name, Status.FAIL, "no heartbeat device on VMBus (the integration "
                        "service is off on the host)")
    drivers = exp.classes[beats[0].class_id].drivers
    if beats[0].driver not in drivers:
        return TestCase(name, Status.FAIL, f"heartbeat device {beats[0].id} is not bound to "
                        f"{' or '.join(drivers)} (is hv_utils in this kernel?)")
    return TestCase(name, Status.PASS, output=f"bound to {beats[0].driver}\n")


def cpu_count(cap: Capture) -> int | None:
    info = cap.read("proc/cpuinfo")
    if info is None:
        return None
    return len(re.findall(r"^processor\s*:", info, re.M)) or None


def judge_channels(cap: Capture, exp: HvExpectations) -> list[TestCase]:
    """channel_vp_mapping: every channel's CPU exists, and a NIC or disk
    controller has no more channels than vCPUs (one per CPU at most)."""
    skipped = _skip_off_hyperv(cap, "vmbus: channels")
    if skipped:
        return skipped
    cpus = cpu_count(cap)
    if cpus is None:
        return [not_captured("vmbus: channels", "proc/cpuinfo")]
    mapped = [d for d in devices(cap) if d.channels]
    if not mapped:
        return [not_captured("vmbus: channels", f"{DEVICES}/*/channel_vp_mapping")]
    cases = []
    for dev in mapped:
        kind = exp.kind(dev.class_id) or dev.class_id
        bad = sorted({cpu for _, cpu in dev.channels if cpu >= cpus})
        name = f"vmbus: channels {kind} {dev.id}"
        if bad:
            cases.append(TestCase(name, Status.FAIL, f"channels served by CPU {bad} of a "
                                  f"{cpus}-vCPU guest"))
        elif kind in ("network", "scsi") and len(dev.channels) > cpus:
            cases.append(TestCase(name, Status.FAIL, f"{len(dev.channels)} channels for "
                                  f"{cpus} vCPUs"))
        else:
            cases.append(TestCase(name, Status.PASS, output=f"{len(dev.channels)} channels "
                                  f"on CPUs {sorted({c for _, c in dev.channels})}\n"))
    return cases


def arch(cap: Capture) -> str:
    machine = (cap.command("uname-m") or "").strip()
    if machine:
        return machine
    info = cap.read("proc/cpuinfo") or ""
    return "aarch64" if "CPU implementer" in info else "x86_64" if "vendor_id" in info else ""


def judge_clocksource(cap: Capture, exp: HvExpectations) -> TestCase:
    """hyperv_timer.c's rules: a Hyper-V clocksource; ``tsc`` when the tree
    prefers it with an invariant TSC (cpuinfo: constant_tsc and nonstop_tsc);
    arch_sys_counter on arm64.  hpet, acpi_pm or jiffies mean a fallback."""
    name = "hv_utils: clocksource"
    path = "sys/devices/system/clocksource/clocksource0/current_clocksource"
    if not cap.on_hyperv:
        return TestCase(name, Status.SKIP, NOT_ON_HYPERV)
    current = (cap.read(path) or "").strip()
    if not current:
        return not_captured(name, path)
    where = arch(cap)
    if where in ("aarch64", "arm64"):
        ok, want = current == "arch_sys_counter", "arch_sys_counter (arm64)"
    elif current in exp.clocksources:
        ok, want = True, ""
    elif current == "tsc":
        info = cap.read("proc/cpuinfo")
        if info is None:
            return not_captured(name, "proc/cpuinfo")
        flags = set(re.findall(r"^flags\s*:(.*)$", info, re.M)[0].split()) \
            if re.search(r"^flags\s*:", info, re.M) else set()
        invariant = {"constant_tsc", "nonstop_tsc"} <= flags
        ok = exp.tsc_invariant and invariant
        want = (" or ".join(exp.clocksources) + " (tsc only with an invariant TSC: "
                + ("this tree does not prefer it" if not exp.tsc_invariant else
                   "cpuinfo lacks constant_tsc/nonstop_tsc") + ")")
    else:
        ok, want = False, " or ".join((*exp.clocksources, "tsc with an invariant TSC"))
    if ok:
        return TestCase(name, Status.PASS, output=f"{current}\n")
    return TestCase(name, Status.FAIL, f"clocksource is {current}, expected {want}")


def running(cap: Capture, program: str) -> bool | None:
    ps = cap.command("ps")
    if ps is None:
        return None
    return any(line.split()[-1:] == [program] or line.rstrip().endswith(f"/{program}")
               for line in ps.splitlines())


def judge_kvp(cap: Capture, exp: HvExpectations) -> list[TestCase]:
    """With a KVP device: the daemon runs (else the host gets no IP) and keeps
    its five pools in /var/lib/hyperv."""
    names = ("hv_utils: KVP daemon", "hv_utils: KVP pools")
    if not cap.on_hyperv:
        return [TestCase(n, Status.SKIP, NOT_ON_HYPERV) for n in names]
    if not any(exp.kind(d.class_id) == "kvp" for d in devices(cap)):
        return [TestCase(n, Status.SKIP, "no KVP device on this VM") for n in names]
    daemon = running(cap, "hv_kvp_daemon")
    if daemon is None:
        return [not_captured(n, "commands/ps.txt") for n in names]
    if not daemon:
        return [TestCase(names[0], Status.FAIL, "hv_kvp_daemon is not running (the host then "
                         "reports no IP address)"),
                TestCase(names[1], Status.SKIP, "no KVP daemon")]
    pools = sorted(p for p in cap.listdir("var/lib/hyperv") or [] if p.startswith(".kvp_pool_"))
    if len(pools) != 5:
        return [TestCase(names[0], Status.PASS),
                TestCase(names[1], Status.FAIL, f"{len(pools)} of 5 KVP pools in "
                         "/var/lib/hyperv")]
    return [TestCase(names[0], Status.PASS), judge_pools(cap, pools, names[1])]


KVP_KEY, KVP_VALUE = 512, 2048  # tools/hv/hv_kvp_daemon.c: HV_KVP_EXCHANGE_MAX_*_SIZE


def judge_pools(cap: Capture, pools: list[str], name: str) -> TestCase:
    """Each pool is whole records of a 512-byte key and a 2048-byte value (the
    daemon's format); the keys are listed."""
    lines, bad = [], []
    for pool in pools:
        data = cap.read_bytes(f"var/lib/hyperv/{pool}") or b""
        if len(data) % (KVP_KEY + KVP_VALUE):
            bad.append(f"{pool}: {len(data)} bytes, not whole records")
            continue
        keys = [data[i:i + KVP_KEY].split(b"\0", 1)[0].decode("utf-8", "replace")
                for i in range(0, len(data), KVP_KEY + KVP_VALUE)]
        lines.append(f"{pool}: {len(keys)} records" + (f" ({', '.join(keys[:8])})"
                                                       if keys else ""))
    if bad:
        return TestCase(name, Status.FAIL, "; ".join(bad), output="\n".join(lines) + "\n")
    return TestCase(name, Status.PASS, output="\n".join(lines) + "\n")


def _addresses(cap: Capture) -> dict[str, list[str]] | None:
    text = cap.command("ip-addr", undecodable="replace")  # JSON: an escape would break it
    out: dict[str, list[str]] = {}
    if text and text.strip().startswith("["):
        try:
            for link in json.loads(text):
                out[str(link.get("ifname"))] = [f"{a.get('local')}/{a.get('prefixlen')}"
                                                for a in link.get("addr_info", [])
                                                if a.get("family") == "inet"]
            return out
        except (ValueError, AttributeError, TypeError):
            pass
    text = cap.command("ip-o-addr")
    if text is None:
        return None
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet":
            out.setdefault(f[1], []).append(f[3])
    return out


def judge_network(cap: Capture, exp: HvExpectations) -> TestCase:
    """A synthetic NIC (hv_netvsc) that is up with an IPv4 address; an
    accelerated-networking VF enslaved to it is information, not a failure."""
    name = "network: synthetic NIC"
    if not cap.on_hyperv:
        return TestCase(name, Status.SKIP, NOT_ON_HYPERV)
    nics = cap.listdir("sys/class/net")
    if nics is None:
        return not_captured(name, "sys/class/net")
    drivers = tuple(d for g in exp.guids_of("network") for d in exp.classes[g].drivers) \
        or ("hv_netvsc",)
    synthetic = [n for n in nics if (cap.link(f"sys/class/net/{n}/device/driver") or "")
                 .rsplit("/", 1)[-1] in drivers]
    if not synthetic:
        return TestCase(name, Status.FAIL, f"no interface driven by {' or '.join(drivers)} "
                        f"(interfaces: {', '.join(nics) or 'none'})")
    addrs = _addresses(cap)
    if addrs is None:
        return not_captured(name, "commands/ip-addr.txt")
    vfs = [n for n in nics if (cap.link(f"sys/class/net/{n}/master") or "")
           .rsplit("/", 1)[-1] in synthetic]
    up = [n for n in synthetic if (cap.read(f"sys/class/net/{n}/operstate") or "").strip()
          == "up" and addrs.get(n)]
    if not up:
        states = ", ".join(f"{n} {(cap.read(f'sys/class/net/{n}/operstate') or '?').strip()} "
                           f"address {','.join(addrs.get(n, [])) or 'none'}" for n in synthetic)
        return TestCase(name, Status.FAIL, f"no synthetic NIC up with an address: {states}")
    vf = f"; VF {', '.join(vfs)} enslaved" if vfs else ""
    return TestCase(name, Status.PASS, output=f"{up[0]} up, {', '.join(addrs[up[0]])}{vf}\n")


def judge_storage(cap: Capture, exp: HvExpectations) -> TestCase:
    """A block device below a VMBus device bound to hv_storvsc."""
    name = "storage: storvsc disk"
    if not cap.on_hyperv:
        return TestCase(name, Status.SKIP, NOT_ON_HYPERV)
    drivers = {d for g in (*exp.guids_of("scsi"), *exp.guids_of("ide"))
               for d in exp.classes[g].drivers} or {"hv_storvsc"}
    bound = {d.id for d in devices(cap) if d.driver in drivers}
    blocks = cap.listdir("sys/block")
    if blocks is None:
        return not_captured(name, "sys/block")
    on = sorted(b for b in blocks if any(f"/{dev}/" in (cap.link(f"sys/block/{b}") or "")
                                         for dev in bound))
    if on:
        return TestCase(name, Status.PASS, output=f"on {'/'.join(sorted(drivers))}: "
                        f"{', '.join(on)}\n")
    why = (f"no VMBus device is bound to {' or '.join(sorted(drivers))}" if not bound else
           f"no block device below the storage devices {', '.join(sorted(bound))}")
    return TestCase(name, Status.FAIL, why)
