"""Kernel modules on a guest: their state read from a capture or a live probe,
and which of them a test may take out without harming the guest.

A load/unload test only touches a module that is loadable, not in use
(refcnt 0, no holders) and serves neither the NIC that carries the SSH
session, nor the root disk, nor an integration service a later test needs;
what it unloads it reloads, and the devices must rebind within a bound.
Built-in drivers (Ubuntu's azure kernels build hv_vmbus, hv_storvsc and
pci_hyperv in; WSL2 everything) are never "failed to unload".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hvlab.results import Status, TestCase
from hvlab.suites.capture import Capture
from hvlab.suites.vmbus import NOT_ON_HYPERV

# Integration services later tests (heartbeat, KVP, time sync) and the bus need.
KEEP = ("hv_vmbus", "hv_utils")
REBIND_SECONDS = 30


@dataclass(frozen=True)
class Module:
    name: str
    state: str  # builtin | loaded | loadable | absent
    refcnt: int = 0
    holders: tuple[str, ...] = ()
    initstate: str = ""  # live | coming | going ("" unknown)


def _pattern(name: str) -> re.Pattern[str]:
    spelled = re.escape(name).replace("_", "[-_]")
    return re.compile(rf"(^|/){spelled}\.ko(\.[a-z]+)?(:|$)", re.M)


def from_capture(cap: Capture, name: str) -> Module | None:
    """A module's state as the capture shows it; None when the capture has neither
    /proc/modules nor /sys/module to tell."""
    modules = cap.read("proc/modules")
    sysmod = cap.listdir("sys/module")
    if modules is None and sysmod is None:
        return None
    line = next((f for f in (ln.split() for ln in (modules or "").splitlines())
                 if f and f[0] == name), None)
    initstate = (cap.read(f"sys/module/{name}/initstate") or "").strip()
    if line is not None:
        holders = tuple(h for h in (line[3] if len(line) > 3 else "-").split(",") if h and
                        h != "-") or tuple(cap.listdir(f"sys/module/{name}/holders") or ())
        refcnt = int(line[2]) if len(line) > 2 and line[2].isdigit() else 0
        return Module(name, "loaded", refcnt, holders, initstate or
                      (line[4].lower() if len(line) > 4 else ""))
    rel = cap.release
    builtin = cap.read(f"lib/modules/{rel}/modules.builtin") or ""
    if _pattern(name).search(builtin) or (sysmod is not None and name in sysmod
                                          and cap.read(f"sys/module/{name}/refcnt") is None):
        return Module(name, "builtin")
    dep = cap.read(f"lib/modules/{rel}/modules.dep") or ""
    return Module(name, "loadable" if _pattern(name).search(dep) else "absent")


def judge_states(cap: Capture, names: list[str]) -> list[TestCase]:
    """Read-only: each module built in, loaded (with its users) or loadable; a
    loaded one stuck in init or exit fails."""
    cases = []
    for name in names:
        case = f"module {name}"
        m = from_capture(cap, name)
        if m is None:
            cases.append(TestCase(case, Status.SKIP, "not captured: proc/modules"))
        elif m.state == "absent":
            cases.append(TestCase(case, Status.SKIP, "not in this kernel"))
        elif m.state == "builtin":
            cases.append(TestCase(case, Status.PASS, output="built in\n"))
        elif m.state == "loadable":
            cases.append(TestCase(case, Status.PASS, output="loadable, not loaded\n"))
        elif m.initstate in ("coming", "going"):
            cases.append(TestCase(case, Status.FAIL, f"{name} is stuck '{m.initstate}' "
                                  "(its init or exit never finished)"))
        else:
            users = f"; used by {', '.join(m.holders)}" if m.holders else ""
            cases.append(TestCase(case, Status.PASS, output=f"loaded, refcnt {m.refcnt}"
                                  f"{users}\n"))
    return cases


# -- live: what carries the session and the root disk --------------------------------
# Prints the modules of every driver on the device path of the NIC the SSH session
# arrived on, and of the root filesystem's disk (a virtio NIC: virtio_net and
# virtio_pci; a Hyper-V NIC: hv_netvsc, and hv_vmbus is not a driver module).
CARRIERS = r"""mods() { d=$(readlink -f "$1" 2>/dev/null); out=""
  while [ -n "$d" ] && [ "$d" != / ]; do
    [ -L "$d/driver/module" ] && out="$out $(basename "$(readlink -f "$d/driver/module")")"
    d=${d%/*}
  done; echo "$out"; }
nicmods() {  # a NIC's driver modules, through bridge ports and bond/VLAN lower devices
  echo "$(mods "/sys/class/net/$1/device")"
  for l in /sys/class/net/$1/lower_* /sys/class/net/$1/brif/*; do
    [ -e "$l" ] && echo "$(mods "/sys/class/net/${l##*/lower_}/device")" \
      "$(mods "/sys/class/net/${l##*/}/device")"
  done; }
set -- $SSH_CONNECTION
if [ -n "$3" ]; then
  ip -o addr 2>/dev/null | while read -r _ ifc fam addr _; do
    [ "${addr%/*}" = "$3" ] && echo "session $ifc" $(nicmods "$ifc")
  done
fi
src=$(awk '$2 == "/" {print $1}' /proc/mounts | tail -n 1)
dev=$(readlink -f "$src" 2>/dev/null)
if [ -b "$dev" ]; then b=$(basename "$dev"); echo "root $b $(mods "/sys/class/block/$b")"
else echo "root ${src:-none}"; fi
exit 0
"""


@dataclass(frozen=True)
class Carriers:
    session: tuple[str, ...] = ()  # (iface, modules...)
    root: tuple[str, ...] = ()  # (device, modules...)

    @property
    def session_modules(self) -> set[str]:
        return set(self.session[1:])

    @property
    def root_modules(self) -> set[str]:
        return set(self.root[1:])


def parse_carriers(text: str) -> Carriers:
    session: tuple[str, ...] = ()
    root: tuple[str, ...] = ()
    for line in text.splitlines():
        f = line.split()
        if f[:1] == ["session"] and len(f) >= 2:
            session = tuple(f[1:])
        elif f[:1] == ["root"] and len(f) >= 2:
            root = tuple(f[1:])
    return Carriers(session, root)


def refusal(m: Module, carriers: Carriers, keep: tuple[str, ...] = KEEP) -> str:
    """Why ``m`` must not be unloaded here ("" when it may be).  When the NIC of
    the SSH session or its drivers cannot be found, nothing loaded is unloaded."""
    if m.state == "builtin":
        return "built in: it cannot be unloaded"
    if m.state != "loaded":
        return ""
    if not carriers.session:
        return "the NIC that carries the SSH session was not found: nothing is unloaded"
    if len(carriers.session) == 1:
        return (f"the drivers of {carriers.session[0]}, the NIC that carries the SSH "
                "session, were not found: nothing is unloaded")
    if m.name in carriers.session_modules:
        return (f"it serves {carriers.session[0]}, the NIC that carries the SSH session "
                "(name a second NIC in the host's config to reload it)")
    if m.name in carriers.root_modules:
        return f"it serves the root disk {carriers.root[0]}"
    if m.name in keep:
        return "it carries the integration services later tests need"
    if m.refcnt:
        return f"in use (refcnt {m.refcnt})"
    if m.holders:
        return f"in use by {', '.join(m.holders)}"
    return ""


# One module, after the decision: reload a loaded one (rmmod, modprobe, wait for its
# devices to rebind) or try to load a loadable one (and unload it again when nothing
# took it).  Prints one "step name rc text" line per step, "rebound ..." at the end.
RELOAD = r"""m="$1"; state="$2"; wait_s="$3"
drivers() { for d in /sys/module/$m/drivers/*; do [ -L "$d" ] && readlink -f "$d"; done; }
bound() {
  for d in $(drivers); do
    for x in "$d"/*; do [ -L "$x/driver" ] && echo "${x##*/}"; done
  done | sort
}
if [ "$state" = loaded ]; then
  before=$(bound | tr '\n' ' ')
  out=$(rmmod "$m" 2>&1); rc=$?; echo "step rmmod $rc $(echo "$out" | tr '\n' ' ')"
  [ $rc -eq 0 ] || exit 0
  out=$(modprobe "$m" 2>&1); rc=$?; echo "step modprobe $rc $(echo "$out" | tr '\n' ' ')"
  [ $rc -eq 0 ] || exit 0
  i=0; now=$(bound | tr '\n' ' ')
  while [ "$now" != "$before" ] && [ $i -lt "$wait_s" ]; do
    sleep 1; i=$((i + 1)); now=$(bound | tr '\n' ' ')
  done
  echo "rebound $i [$before] [$now]"
else
  out=$(modprobe "$m" 2>&1); rc=$?; echo "step modprobe $rc $(echo "$out" | tr '\n' ' ')"
  [ $rc -eq 0 ] || exit 0
  r=$(cat "/sys/module/$m/refcnt" 2>/dev/null || echo 1)
  if [ "$r" = 0 ] && [ -z "$(ls "/sys/module/$m/holders" 2>/dev/null)" ]; then
    out=$(rmmod "$m" 2>&1); echo "step rmmod $? $(echo "$out" | tr '\n' ' ')"
  else echo "step kept 0 in use after loading: left loaded"; fi
fi
exit 0
"""


@dataclass
class Reload:
    steps: dict[str, tuple[int, str]] = field(default_factory=dict)
    rebound: tuple[int, str, str] | None = None  # (seconds, before, after)


def parse_reload(text: str) -> Reload:
    out = Reload()
    for line in text.splitlines():
        f = line.split(" ", 3)
        if f[0] == "step" and len(f) >= 3 and f[2].lstrip("-").isdigit():
            out.steps[f[1]] = (int(f[2]), f[3].strip() if len(f) > 3 else "")
        m = re.match(r"rebound (\d+) \[(.*)\] \[(.*)\]$", line)
        if m:
            out.rebound = (int(m.group(1)), m.group(2).strip(), m.group(3).strip())
    return out


def judge_reload(m: Module, r: Reload, on_hyperv: bool, splats: list[str]) -> TestCase:
    name = f"module {m.name}: load/unload"
    steps = "; ".join(f"{k} exit {rc}" + (f" ({t})" if t else "") for k, (rc, t) in
                      r.steps.items())
    if m.state == "loadable" and not on_hyperv:
        rc, text = r.steps.get("modprobe", (0, ""))
        if rc != 0 and "No such device" in text:
            return TestCase(name, Status.PASS, output=f"refused with ENODEV off Hyper-V, as "
                            f"expected: {text}\n")
        if rc == 0:
            return TestCase(name, Status.FAIL, f"{m.name} loaded although there is no VMBus")
        return TestCase(name, Status.FAIL, f"modprobe {m.name} failed with something else "
                        f"than ENODEV: {text}")
    failed = next(((k, rc, t) for k, (rc, t) in r.steps.items() if rc != 0), None)
    if failed:
        return TestCase(name, Status.FAIL, f"{failed[0]} {m.name} failed: {failed[2]}",
                        output=steps + "\n")
    if r.rebound is not None and r.rebound[1] != r.rebound[2]:
        return TestCase(name, Status.FAIL, f"devices not rebound within {REBIND_SECONDS} s: "
                        f"before [{r.rebound[1]}], after [{r.rebound[2]}]", output=steps + "\n")
    if splats:
        return TestCase(name, Status.FAIL, f"left a kernel report: {splats[0]}",
                        output="\n".join(splats) + "\n")
    return TestCase(name, Status.PASS, output=steps + "\n")


def off_hyperv_skip(name: str) -> TestCase:
    return TestCase(f"module {name}: load/unload", Status.SKIP, NOT_ON_HYPERV)
