"""Built-in checks: a POSIX sh collector run on the guest (busybox is enough;
``$1`` is a root prefix, "" on a real guest, a fixture tree in tests) and a
pure judge here that turns its output into test cases."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hvlab.results import Status, TestCase
from hvlab.suites.vmbus import NOT_ON_HYPERV

# -- taint ------------------------------------------------------------------------
# Documentation/admin-guide/tainted-kernels.rst: bit -> (letter, meaning, bad?)
TAINT: dict[int, tuple[str, str, bool]] = {
    0: ("P", "proprietary module loaded", False),
    1: ("F", "module force-loaded", True),
    2: ("S", "kernel running on an out of specification system", True),
    3: ("R", "module force-unloaded", True),
    4: ("M", "machine check exception", True),
    5: ("B", "bad page referenced or unexpected page flags", True),
    6: ("U", "taint requested by userspace", True),
    7: ("D", "kernel died recently (OOPS or BUG)", True),
    8: ("A", "ACPI table overridden", True),
    9: ("W", "kernel issued a warning", True),
    10: ("C", "staging driver loaded", False),
    11: ("I", "firmware bug workaround", False),
    12: ("O", "externally-built module loaded", False),
    13: ("E", "unsigned module loaded", False),
    14: ("L", "soft lockup occurred", True),
    15: ("K", "kernel live patched", False),
    16: ("X", "auxiliary taint", False),
    17: ("T", "built with struct randomization", False),
    18: ("N", "an in-kernel test has been run", False),
}


def judge_taint(text: str) -> TestCase:
    value = text.strip()
    if not value.isdigit():
        return TestCase("taint", Status.ERROR, f"cannot read /proc/sys/kernel/tainted: "
                        f"{value[:200]!r}")
    mask = int(value)
    flags = [(bit, *TAINT.get(bit, ("?", f"unknown taint bit {bit}", True)))
             for bit in range(32) if mask >> bit & 1]
    decoded = "\n".join(f"{letter} (bit {bit}): {what}" for bit, letter, what, _ in flags)
    bad = [f"{letter} ({what})" for _bit, letter, what, is_bad in flags if is_bad]
    if bad:
        return TestCase("taint", Status.FAIL, f"kernel tainted {mask}: " + ", ".join(bad),
                        output=decoded + "\n")
    return TestCase("taint", Status.PASS,
                    output=(decoded + "\n") if flags else "not tainted (0)\n")


# -- dmesg errors -----------------------------------------------------------------------
_RAW = re.compile(r"^<(\d+)>(?:\[\s*\d+\.\d+\]\s?)?(.*)$")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-f]{8,}\b")
_NUM = re.compile(r"\d+")


def error_lines(raw_dmesg: str) -> list[str]:
    """Messages at err, crit, alert or emerg from ``dmesg -r`` output."""
    out = []
    for line in raw_dmesg.splitlines():
        m = _RAW.match(line.strip())
        if m and int(m.group(1)) & 7 <= 3:
            out.append(m.group(2).strip())
    return out


def normalise(message: str) -> str:
    """Addresses and numbers vary from boot to boot: compare without them."""
    return _NUM.sub("N", _HEX.sub("X", message))


def judge_dmesg(raw_dmesg: str, baseline: list[str] | None) -> TestCase:
    errors = error_lines(raw_dmesg)
    known = {normalise(b) for b in baseline or []}
    new = [e for e in errors if normalise(e) not in known]
    where = ("not in the baseline boot" if baseline is not None
             else "no baseline recorded: every error counts")
    if new:
        return TestCase("dmesg errors", Status.FAIL,
                        f"{len(new)} error message(s) {where}: {new[0][:300]}",
                        output="\n".join(new[:200]) + "\n")
    return TestCase("dmesg errors", Status.PASS,
                    output=f"{len(errors)} error message(s), none new\n")


# -- Hyper-V modules --------------------------------------------------------------------
HV_MODULES = ("hv_vmbus", "hv_utils", "hv_balloon", "hv_netvsc", "hv_storvsc",
              "hyperv_keyboard", "hid_hyperv", "pci_hyperv", "hv_sock")

# For each module: its state, then (when it is a module) modprobe and rmmod.
COLLECT_MODULES = r"""root="${1:-}"
rel=$(uname -r)
vmbus=no; [ -d "$root/sys/bus/vmbus" ] && vmbus=yes
echo "vmbus $vmbus"
for m in @MODULES@; do
  dir="$root/lib/modules/$rel"
  p=$(echo "$m" | sed 's/_/[-_]/g')  # hid_hyperv is hid-hyperv.ko
  f=$(grep -E "(^|/)$p\.ko(\.[a-z]+)?:" "$dir/modules.dep" 2>/dev/null | head -n1)
  if [ -n "$f" ] && [ -e "$dir/${f%%:*}" ]; then kind=module
  elif grep -qE "(^|/)$p\.ko" "$dir/modules.builtin" 2>/dev/null; then kind=builtin
  else kind=absent; fi
  echo "module $m $kind"
  [ "$kind" = module ] || continue
  if [ "$vmbus" = no ] && [ -n "$tried" ]; then continue; fi
  tried=1
  out=$(modprobe "$m" 2>&1); rc=$?
  echo "load $m $rc $(echo "$out" | tr '\n' ' ')"
  [ $rc -eq 0 ] || continue
  out=$(rmmod "$m" 2>&1); echo "unload $m $? $(echo "$out" | tr '\n' ' ')"
done
"""


def collect_modules_script() -> str:
    return COLLECT_MODULES.replace("@MODULES@", " ".join(HV_MODULES))


@dataclass(frozen=True)
class ModuleState:
    name: str
    kind: str  # module | builtin | absent
    load: tuple[int, str] | None = None
    unload: tuple[int, str] | None = None


def parse_modules(output: str) -> tuple[bool, list[ModuleState]]:
    vmbus = False
    mods: dict[str, ModuleState] = {}
    for line in output.splitlines():
        parts = line.split(" ", 3)
        if parts[:1] == ["vmbus"] and len(parts) > 1:
            vmbus = parts[1] == "yes"
        elif parts[:1] == ["module"] and len(parts) >= 3:
            mods[parts[1]] = ModuleState(parts[1], parts[2])
        elif parts[:1] in (["load"], ["unload"]) and len(parts) >= 3 and parts[2].isdigit():
            m = mods.get(parts[1])
            if m is None:
                continue
            step = (int(parts[2]), parts[3].strip() if len(parts) > 3 else "")
            mods[m.name] = ModuleState(m.name, m.kind, step if parts[0] == "load" else m.load,
                                       step if parts[0] == "unload" else m.unload)
    return vmbus, list(mods.values())


def judge_modules(vmbus: bool, mods: list[ModuleState], splats: list[str]) -> list[TestCase]:
    """Off Hyper-V the first Hyper-V module must refuse with ENODEV (the
    expected result), the rest are skipped; on Hyper-V each loads and unloads."""
    cases = []
    refused = False
    for m in mods:
        name = f"module {m.name}"
        if m.kind == "absent":
            cases.append(TestCase(name, Status.SKIP, "not built in this configuration"))
        elif m.kind == "builtin":
            cases.append(TestCase(name, Status.PASS, output="built in\n"))
        elif m.load is None:
            cases.append(TestCase(name, Status.SKIP, NOT_ON_HYPERV if not vmbus
                                  else "not tried"))
        elif not vmbus:
            rc, text = m.load
            if rc != 0 and "No such device" in text:
                refused = True
                cases.append(TestCase(name, Status.PASS,
                                      output=f"refused with ENODEV off Hyper-V, as expected: "
                                      f"{text}\n"))
            elif rc == 0:
                cases.append(TestCase(name, Status.FAIL,
                                      f"{m.name} loaded although there is no VMBus: {text}"))
            else:
                cases.append(TestCase(name, Status.FAIL,
                                      f"modprobe {m.name} failed with something else than "
                                      f"ENODEV: {text}"))
        else:
            rc, text = m.load
            if rc != 0:
                cases.append(TestCase(name, Status.FAIL, f"modprobe {m.name} failed: {text}"))
            elif m.unload is not None and m.unload[0] != 0:
                cases.append(TestCase(name, Status.FAIL,
                                      f"rmmod {m.name} failed: {m.unload[1]}"))
            else:
                cases.append(TestCase(name, Status.PASS, output="loaded and unloaded\n"))
    if splats:
        cases.append(TestCase("modules: no kernel report", Status.FAIL,
                              f"loading/unloading left a kernel report: {splats[0]}",
                              output="\n".join(splats) + "\n"))
    elif vmbus or refused:
        cases.append(TestCase("modules: no kernel report", Status.PASS))
    return cases


# -- hv_utils, clocksource, KVP ------------------------------------------------------------
COLLECT_UTILS = r"""root="${1:-}"
cs="$root/sys/devices/system/clocksource/clocksource0/current_clocksource"
echo "clocksource $(cat "$cs" 2>/dev/null)"
for i in 0 1 2 3 4; do [ -e "$root/var/lib/hyperv/.kvp_pool_$i" ] && echo "pool $i"; done
for p in "$root"/proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = hv_kvp_daemon ] && { echo "kvp_daemon running"; break; }
done
[ -r "$root/sys/kernel/debug/hv-balloon" ] && echo "balloon readable"
exit 0
"""


def judge_utils(output: str, devices_kinds: list[str]) -> list[TestCase]:
    lines = output.splitlines()
    clock = next((line.split(" ", 1)[1] for line in lines if line.startswith("clocksource ")
                  and " " in line), "")
    pools = [line for line in lines if line.startswith("pool ")]
    cases = []
    if clock.strip() == "hyperv_clocksource_tsc_page":
        cases.append(TestCase("hv_utils: clocksource", Status.PASS, output=clock + "\n"))
    else:
        cases.append(TestCase("hv_utils: clocksource", Status.FAIL,
                              f"clocksource is '{clock.strip() or 'unknown'}', expected "
                              "hyperv_clocksource_tsc_page"))
    if len(pools) == 5:
        cases.append(TestCase("hv_utils: KVP pools", Status.PASS, output="5 pools\n"))
    else:
        cases.append(TestCase("hv_utils: KVP pools", Status.FAIL,
                              f"{len(pools)} of 5 KVP pools in /var/lib/hyperv"))
    if "kvp_daemon running" in lines:
        cases.append(TestCase("hv_utils: KVP daemon", Status.PASS))
    else:
        cases.append(TestCase("hv_utils: KVP daemon", Status.FAIL,
                              "hv_kvp_daemon is not running (the host then reports no IP)"))
    if "heartbeat" in devices_kinds:
        cases.append(TestCase("hv_utils: heartbeat", Status.PASS))
    else:
        cases.append(TestCase("hv_utils: heartbeat", Status.FAIL, "no heartbeat device"))
    return cases


def judge_balloon(output: str) -> TestCase:
    if "balloon readable" in output.splitlines():
        return TestCase("hv_balloon: debugfs", Status.PASS)
    return TestCase("hv_balloon: debugfs", Status.FAIL,
                    "/sys/kernel/debug/hv-balloon is not readable (debugfs mounted? "
                    "hv_balloon loaded?)")


# -- network --------------------------------------------------------------------------
COLLECT_NET = r"""for d in /sys/class/net/*; do
  n=$(basename "$d")
  drv=$(basename "$(readlink "$d/device/driver" 2>/dev/null)" 2>/dev/null)
  echo "iface $n ${drv:--} $(cat "$d/operstate" 2>/dev/null)"
done
ip -o -4 addr show 2>/dev/null | while read -r _ n _ a _; do echo "addr $n $a"; done
gw=$(ip route show default 2>/dev/null | awk '{print $3; exit}')
echo "gateway ${gw:--}"
[ -z "$gw" ] || { ping -c 3 -W 2 "$gw" >/dev/null 2>&1 && echo "ping ok" || echo "ping failed"; }
exit 0
"""


def judge_network(output: str) -> list[TestCase]:
    lines = output.splitlines()
    nics = [line.split() for line in lines if line.startswith("iface ")]
    synthetic = [n for n in nics if len(n) >= 4 and n[2] == "hv_netvsc"]
    addrs = {line.split()[1]: line.split()[2] for line in lines
             if line.startswith("addr ") and len(line.split()) >= 3}
    cases = []
    if not synthetic:
        cases.append(TestCase("network: synthetic NIC", Status.FAIL,
                              "no interface driven by hv_netvsc"))
        return cases
    name = synthetic[0][1]
    if synthetic[0][3] != "up" or name not in addrs:
        cases.append(TestCase("network: synthetic NIC", Status.FAIL,
                              f"{name} is {synthetic[0][3]}, address "
                              f"{addrs.get(name, 'none')}"))
    else:
        cases.append(TestCase("network: synthetic NIC", Status.PASS,
                              output=f"{name} up, {addrs[name]}\n"))
    if "ping ok" in lines:
        cases.append(TestCase("network: gateway ping", Status.PASS))
    else:
        gw = next((line.split()[1] for line in lines if line.startswith("gateway ")), "-")
        cases.append(TestCase("network: gateway ping", Status.FAIL,
                              "no default gateway" if gw == "-" else
                              f"gateway {gw} does not answer ping"))
    return cases


# -- storage ------------------------------------------------------------------------
# Disks and where their sysfs device lives: a storvsc disk sits below the VMBus
# device that hv_storvsc is bound to (.../VMBUS:00/<device id>/host0/.../block/sda).
COLLECT_STORAGE = r"""root="${1:-}"
for d in "$root"/sys/bus/vmbus/drivers/hv_storvsc/*; do
  [ -L "$d" ] && echo "storvsc $(basename "$d")"
done
for b in "$root"/sys/block/*; do
  [ -e "$b" ] || continue
  echo "disk $(basename "$b") $(readlink -f "$b")"
done
exit 0
"""

SCRATCH_MIB = 64
# 64 MiB of random data onto the scratch disk, caches dropped, read back: both
# checksums are printed for the judge.  Refuses a disk that is mounted, or one of
# whose partitions is.
SCRATCH_IO = r"""dev=$(readlink -f "$1"); mib="$2"
[ -b "$dev" ] || { echo "error $1 is not a block device"; exit 0; }
if grep -q "^$dev" /proc/mounts; then echo "error $dev or a partition of it is mounted"; exit 0; fi
sectors=$(cat "/sys/class/block/$(basename "$dev")/size" 2>/dev/null || echo 0)
if [ "$sectors" -lt $((mib * 2048)) ]; then
  echo "error $dev has $((sectors / 2048)) MiB, fewer than $mib"; exit 0
fi
tmp=/tmp/hvlab-scratch.$$
trap 'rm -f "$tmp"' EXIT
if ! dd if=/dev/urandom of="$tmp" bs=1048576 count="$mib" 2>/dev/null; then
  echo "error no room for $mib MiB in /tmp"; exit 0
fi
set -- $(sha256sum < "$tmp"); echo "wrote $1"
if ! dd if="$tmp" of="$dev" bs=1048576 count="$mib" conv=fsync 2>/dev/null; then
  echo "error writing $dev failed"; exit 0
fi
sync; echo 3 > /proc/sys/vm/drop_caches
set -- $(dd if="$dev" bs=1048576 count="$mib" 2>/dev/null | sha256sum); echo "read $1"
"""


def judge_storvsc(output: str) -> TestCase:
    lines = [line.split(maxsplit=2) for line in output.splitlines()]
    devices = {f[1] for f in lines if len(f) == 2 and f[0] == "storvsc"}
    disks = [(f[1], f[2]) for f in lines if len(f) == 3 and f[0] == "disk"]
    on = sorted(name for name, path in disks if any(f"/{d}/" in path for d in devices))
    if on:
        return TestCase("storage: storvsc disk", Status.PASS,
                        output=f"on hv_storvsc: {', '.join(on)}\n")
    why = ("no VMBus device is bound to hv_storvsc" if not devices else
           f"no block device below the hv_storvsc devices {', '.join(sorted(devices))}")
    return TestCase("storage: storvsc disk", Status.FAIL, why,
                    output="\n".join(f"{n} -> {p}" for n, p in disks) + "\n")


def judge_scratch(output: str, device: str) -> TestCase:
    name = f"storage: {SCRATCH_MIB} MiB read back from {device}"
    fields = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
    if "error" in fields:
        return TestCase(name, Status.ERROR, f"scratch disk: {fields['error']}")
    wrote, read = fields.get("wrote", ""), fields.get("read", "")
    if not wrote or not read:
        return TestCase(name, Status.ERROR, "the scratch disk check printed no checksums",
                        output=output)
    if wrote != read:
        return TestCase(name, Status.FAIL, f"read back sha256 {read[:16]}... differs from "
                        f"the {wrote[:16]}... written", output=output)
    return TestCase(name, Status.PASS, output=f"sha256 {wrote}\n")


# -- hv_sock ------------------------------------------------------------------------
COLLECT_HVSOCK = r"""root="${1:-}"
if [ -z "$root" ]; then modprobe hv_sock 2>&1; echo "hvlab-modprobe-exit $?"; fi
[ -d "$root/sys/module/hv_sock" ] && echo "module hv_sock"
[ -e "$root/dev/vsock" ] && echo "dev vsock"
exit 0
"""


def judge_hvsock(output: str, splats: list[str]) -> TestCase:
    lines = output.splitlines()
    rc = next((line.split()[1] for line in lines
               if line.startswith("hvlab-modprobe-exit ")), "0")
    if rc != "0":
        return TestCase("hv_sock", Status.FAIL, f"modprobe hv_sock failed (exit {rc})",
                        output=output)
    missing = [what for what, line in (("/sys/module/hv_sock", "module hv_sock"),
                                       ("/dev/vsock", "dev vsock")) if line not in lines]
    if missing:
        return TestCase("hv_sock", Status.FAIL, f"hv_sock loaded but {', '.join(missing)} "
                        "missing", output=output)
    if splats:
        return TestCase("hv_sock", Status.FAIL, f"loading hv_sock: {splats[0]}",
                        output="\n".join(splats) + "\n")
    return TestCase("hv_sock", Status.PASS, output="hv_sock transport registered, /dev/vsock\n")
