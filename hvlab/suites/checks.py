"""Built-in checks: a POSIX sh collector run on the guest (busybox is enough;
``$1`` is a root prefix, "" on a real guest, a fixture tree in tests) and a
pure judge here that turns its output into test cases."""

from __future__ import annotations

import re

from hvlab.boot import console
from hvlab.results import Status, TestCase

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


# Lines healthy Hyper-V guests log at error level or that scanners trip on, each
# from the 6.1 tree: hv_util.c (no PTP clock support), channel_mgmt.c (a device
# Linux leaves alone), tsc.c (its reason "running on Hyper-V"), netvsc_drv.c (an
# accelerated-networking VF coming and going).
BENIGN = (
    re.compile(r"hv_utils: cannot register PTP clock"),
    re.compile(r"hv_vmbus: Unknown GUID"),
    re.compile(r"Marking TSC unstable due to running on Hyper-V"),
    re.compile(r"Data path switched (from|to) VF"),
)


def _benign(message: str) -> bool:
    return any(p.search(message) for p in BENIGN)


def error_lines(raw_dmesg: str) -> list[str]:
    """Messages at err, crit, alert or emerg from ``dmesg -r`` output, and kernel
    reports (Oops, BUG, WARNING, ...) at any level; a plain ``dmesg`` (no levels,
    as a hand-made capture may have) gives the kernel reports alone."""
    out = []
    lines = raw_dmesg.splitlines()
    for line in lines:
        m = _RAW.match(line.strip())
        if m and int(m.group(1)) & 7 <= 3 and not _benign(m.group(2)):
            out.append(m.group(2).strip())
    plain = [_RAW.sub(r"\2", line.strip()) for line in lines]
    for finding in console.scan(plain):
        if not _benign(finding.message) and finding.message.strip() not in out:
            out.append(finding.message.strip())
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


def judge_balloon(output: str) -> TestCase:
    if "balloon readable" in output.splitlines():
        return TestCase("hv_balloon: debugfs", Status.PASS)
    return TestCase("hv_balloon: debugfs", Status.FAIL,
                    "/sys/kernel/debug/hv-balloon is not readable (debugfs mounted? "
                    "hv_balloon loaded?)")


# -- storage ------------------------------------------------------------------------
SCRATCH_MIB = 64
# 64 MiB of random data onto the scratch disk, caches dropped, read back: both
# checksums are printed for the judge.  Refuses a disk that is mounted, or one of
# whose partitions is.
SCRATCH_IO = r"""dev=$(readlink -f "$1"); mib="$2"
[ -b "$dev" ] || { echo "error $1 is not a block device"; exit 0; }
if grep -q "^$dev" /proc/mounts; then echo "error $dev or a partition of it is mounted"; exit 0; fi
b=$(basename "$dev"); s=/sys/class/block/$b
for p in "$s" "$s"/"$b"*; do  # the disk and its partitions
  [ -e "$p/dev" ] || continue
  if [ -n "$(ls "$p/holders" 2>/dev/null)" ]; then
    echo "error $dev is in use by $(ls "$p/holders" | tr '\n' ' ')(LVM, RAID or dm)"; exit 0
  fi
  if grep -q "^/dev/$(basename "$p")[[:space:]]" /proc/swaps 2>/dev/null; then
    echo "error $dev holds active swap"; exit 0
  fi
  if [ "$(mountpoint -d / 2>/dev/null)" = "$(cat "$p/dev")" ]; then
    echo "error $dev holds the root filesystem"; exit 0
  fi
done
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


# -- netvsc settings -------------------------------------------------------------------
ETHTOOL_HEADERS = {"l": "Channel parameters for", "g": "Ring parameters for",
                   "k": "Features for"}


def judge_ethtool(output: str, nics: list[str]) -> list[TestCase]:
    if "noethtool" in output.splitlines():
        return [TestCase("netvsc: ethtool", Status.SKIP, "ethtool is not installed on the "
                         "guest (Debian package ethtool)")]
    cases = []
    blocks = output.split("nic ")[1:]
    for nic, block in zip(nics, blocks, strict=False):
        lines = block.splitlines()
        missing = [f"ethtool -{o}" for o, head in ETHTOOL_HEADERS.items()
                   if not any(line.startswith(f"{o} {head}") for line in lines)]
        if missing:
            why = next((line[2:] for line in lines if line[:2] in ("l ", "g ", "k ")
                        and "exit" not in line and "Operation not supported" in line), "")
            cases.append(TestCase(f"netvsc: ethtool {nic}", Status.FAIL,
                                  f"{', '.join(missing)} gave no settings" +
                                  (f": {why}" if why else ""), output=block))
        else:
            cases.append(TestCase(f"netvsc: ethtool {nic}", Status.PASS,
                                  output="channels, rings and features read back\n"))
    return cases


def judge_channels_change(output: str, nic: str) -> TestCase:
    name = f"netvsc: channels {nic} changed and restored"
    fields = {f[0]: f[1:] for f in (line.split() for line in output.splitlines()) if f}
    if "fixed" in fields:
        return TestCase(name, Status.SKIP, "only one channel count is possible on it")
    cur = fields.get("current", ["?"])[0]
    got, back = fields.get("set", []), fields.get("restore", [])
    if len(got) < 3 or got[0] != "0" or got[1] != got[2]:
        return TestCase(name, Status.FAIL, f"ethtool -L {nic} combined "
                        f"{got[1] if len(got) > 1 else '?'} did not take: {' '.join(got)}",
                        output=output)
    if len(back) < 3 or back[0] != "0" or back[2] != cur:
        return TestCase(name, Status.FAIL, f"{nic} not restored to {cur} channels: "
                        f"{' '.join(back)}", output=output)
    return TestCase(name, Status.PASS, output=f"{cur} -> {got[1]} -> {back[2]}\n")


# -- CPU hotplug -----------------------------------------------------------------------
def judge_hotplug(output: str, cpu: int, splats: list[str]) -> list[TestCase]:
    lines = output.splitlines()
    fields = {f[0]: f[1:] for f in (line.split() for line in lines) if f}
    name = "cpu hotplug"
    if "error" in fields:
        return [TestCase(name, Status.SKIP, " ".join(fields["error"]))]
    off, on = fields.get("offline", []), fields.get("online", [])
    cases = []
    if off[:2] != ["0", "0"] or on[:2] != ["0", "1"]:
        cases.append(TestCase(name, Status.FAIL, f"cpu{cpu}: offline gave {' '.join(off)}, "
                              f"online gave {' '.join(on)} (exit, then the online file)",
                              output=output))
    elif splats:
        cases.append(TestCase(name, Status.FAIL, f"cpu{cpu} offline/online: {splats[0]}",
                              output="\n".join(splats) + "\n"))
    else:
        cases.append(TestCase(name, Status.PASS, output=f"cpu{cpu} offline and online\n"))
    moved = [line for line in lines if line.startswith("retargeted ")]
    restored = [line for line in lines if line.startswith("restored ")]
    wrong = [line for line in restored if not line.endswith(f" {cpu}")]
    if not moved:
        cases.append(TestCase("cpu hotplug: channels retargeted", Status.SKIP,
                              f"no VMBus channel on cpu{cpu}"))
    elif wrong or len(restored) != len(moved):
        cases.append(TestCase("cpu hotplug: channels retargeted", Status.FAIL,
                              f"{len(moved)} channels moved off cpu{cpu}, "
                              f"{len(restored) - len(wrong)} put back", output=output))
    else:
        cases.append(TestCase("cpu hotplug: channels retargeted", Status.PASS,
                              output=f"{len(moved)} channels moved to cpu0 and back\n"))
    return cases
