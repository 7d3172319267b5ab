"""Tests that ship with hvlab (``run: builtin:<name>`` in a suite file).

The read-only checks judge a capture (suites/capture.py): on a live guest one
is taken over SSH first (and kept in the run folder), on ``inv test
--capture`` it is the user's.  Tests that must act on the guest (load a
module, take a CPU offline, write the scratch disk) run only on a live
guest and are SKIPPED "needs a live guest" on a capture; what they change
they restore.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hvlab.boot import console
from hvlab.errors import InfraError, UserError
from hvlab.results import Status, TestCase
from hvlab.ssh import RemoteResult, SshSession
from hvlab.suites import checks, hvchecks, ktap, modules
from hvlab.suites.capture import Capture, capture_script, unpack
from hvlab.suites.hvtree import HvExpectations, for_build
from hvlab.suites.ktapcases import cases_from_document

NEEDS_LIVE = "needs a live guest (this is a capture)"


@dataclass
class GuestContext:
    """What a suite runs on: a live guest (an open session) or a capture, and facts."""

    session: SshSession | None
    host: str
    release: str  # the release the guest should run ("" when not known)
    workdir: Path  # the run's logs folder
    iperf_server: str | None = None
    dmesg_baseline: list[str] | None = None  # error lines of the baseline boot
    build: Path | None = None  # the booted build's folder (kernels/builds/<id>), when known
    scratch_disk: str | None = None  # a block device the storage test may overwrite
    spare_nic: str | None = None  # a synthetic NIC that does not carry the session
    given: Capture | None = None  # inv test --capture: judge this, no guest
    modules: tuple[str, ...] = ()  # for module-reload: the modules it may reload
    console: Callable[[], list[str]] = field(default=lambda: [], repr=False)  # the guest's
    boot_id: str = ""  # the guest's boot when the suites started (runner.same_boot)
    gone: str = ""  # why no further test can run on this guest ("" while it can)
    crashed: bool = False  # it is gone because its kernel crashed (a kernel failure)
    _snapshot: Capture | None = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return self.given is None and self.session is not None

    @property
    def guest(self) -> SshSession:
        assert self.session is not None, "a live test ran on a capture"
        return self.session

    def expectations(self) -> HvExpectations:
        return for_build(self.build)

    def capture(self, log: Path) -> Capture:
        """The capture to judge: the given one, or one taken from the live guest now
        (kept until a test changes the guest, see ``changed``)."""
        if self.given is not None:
            return self.given
        if self._snapshot is None:
            self._snapshot = take_capture(self.guest, self.workdir, self.host, log)
        return self._snapshot

    def changed(self) -> None:
        """A test changed the guest: the next check captures again."""
        self._snapshot = None


def take_capture(session: SshSession, workdir: Path, host: str, log: Path) -> Capture:
    """Capture a live guest: run the capture script there, download the archive
    into the run folder (``capture-<host>-N.tar.gz``) and unpack it beside."""
    remote = f"/tmp/hvlab-capture-{int(time.time() * 1000)}.tar.gz"
    r = session.run(["sh", "-c", capture_script(), "sh", remote], timeout=120, log=log)
    try:
        if not r.ok:
            why = "timed out" if r.timed_out else "connection dropped" if r.dropped \
                else f"exit {r.exit_status}"
            raise InfraError(f"host {host}: capturing the guest failed ({why}): "
                             f"{r.stderr.strip()[-300:]}")
        n = len(list(workdir.glob(f"capture-{host}-*.tar.gz"))) + 1
        archive = workdir / f"capture-{host}-{n}.tar.gz"
        session.get_file(remote, archive)
    finally:
        session.run(["rm", "-f", remote], timeout=30)
    try:
        return Capture(unpack(archive, workdir / f"capture-{host}-{n}"), live=True)
    except UserError as exc:  # the guest's own capture: the machinery, not the input
        raise InfraError(f"host {host}: {exc}") from None


BIG = 16 << 20  # what a collector may print (dmesg, KTAP) and still be judged whole


def _sh(ctx: GuestContext, script: str, log: Path, timeout: float = 120,
        *args: str) -> RemoteResult:
    return ctx.guest.run(["sh", "-c", script, "sh", *args], timeout=timeout, log=log,
                         tail_bytes=BIG)


def _error(name: str, result: RemoteResult, what: str) -> TestCase:
    why = ("timed out" if result.timed_out else "connection dropped" if result.dropped
           else f"exit {result.exit_status}")
    return TestCase(name, Status.ERROR, f"{what} failed on the guest ({why}): "
                    f"{result.stderr.strip()[-300:]}", output=result.output)


def _live_only(ctx: GuestContext, *names: str) -> list[TestCase] | None:
    return None if ctx.live else [TestCase(n, Status.SKIP, NEEDS_LIVE) for n in names]


def kernel_release(ctx: GuestContext, log: Path) -> list[TestCase]:
    got = ctx.capture(log).release
    if not got:
        return [hvchecks.not_captured("kernel release", "proc/sys/kernel/osrelease")]
    if not ctx.release:
        return [TestCase("kernel release", Status.SKIP, f"runs {got}; no expected release "
                         "for a capture")]
    if got != ctx.release:
        return [TestCase("kernel release", Status.FAIL, f"running {got}, expected {ctx.release}")]
    return [TestCase("kernel release", Status.PASS, output=got + "\n")]


def dmesg_errors(ctx: GuestContext, log: Path) -> list[TestCase]:
    text = ctx.capture(log).dmesg
    if text is None:
        return [hvchecks.not_captured("dmesg errors", "dmesg.txt")]
    return [checks.judge_dmesg(text, ctx.dmesg_baseline)]


def taint(ctx: GuestContext, log: Path) -> list[TestCase]:
    text = ctx.capture(log).read("proc/sys/kernel/tainted")
    if text is None:
        return [hvchecks.not_captured("taint", "proc/sys/kernel/tainted")]
    return [checks.judge_taint(text)]


def _dmesg_lines(ctx: GuestContext, log: Path) -> list[str]:
    r = ctx.guest.run(["dmesg"], timeout=60, log=log, tail_bytes=BIG)
    return r.stdout.splitlines() if r.ok else []


def _reports_since(ctx: GuestContext, log: Path, before: int) -> list[str]:
    """Kernel reports (panic, Oops, WARN, ...) in dmesg after its first ``before`` lines."""
    return [f"{f.kind}: {f.message}" for f in console.scan(_dmesg_lines(ctx, log)[before:])]


def hv_module_names(exp: HvExpectations) -> list[str]:
    """hv_vmbus and the module of every driver the tree has for a VMBus class."""
    names = {"hv_vmbus"} | {exp.modules.get(d, d) for c in exp.classes.values()
                             for d in c.drivers} | {exp.modules.get(d, d)
                                                    for d in exp.hvsock_drivers}
    return sorted(names)


def hyperv_modules(ctx: GuestContext, log: Path) -> list[TestCase]:
    """Each Hyper-V module's state (read-only), then a load/unload test of the
    ones that may be taken out safely (modules.refusal)."""
    names = hv_module_names(ctx.expectations())
    cap = ctx.capture(log)
    cases = modules.judge_states(cap, names)
    if not ctx.live:
        return [*cases, TestCase("modules: load/unload", Status.SKIP, NEEDS_LIVE)]
    return cases + _load_unload(ctx, log, cap, names, first_only=not cap.on_hyperv)


def module_reload(ctx: GuestContext, log: Path) -> list[TestCase]:
    """builtin:module-reload: the test's ``modules`` (default: the Hyper-V ones)
    unloaded and reloaded where that is safe, each refusal said."""
    names = list(ctx.modules) or hv_module_names(ctx.expectations())
    skipped = _live_only(ctx, *(f"module {n}: load/unload" for n in names))
    if skipped:
        return skipped
    return _load_unload(ctx, log, ctx.capture(log), names, first_only=False)


def _load_unload(ctx: GuestContext, log: Path, cap: Capture, names: list[str],
                 first_only: bool) -> list[TestCase]:
    carriers = _sh(ctx, modules.CARRIERS, log, 60)
    if not carriers.ok:
        return [_error("modules: load/unload", carriers, "finding the session's NIC")]
    who = modules.parse_carriers(carriers.stdout)
    cases: list[TestCase] = []
    tried = False
    for name in names:
        m = modules.from_capture(cap, name)
        case = f"module {name}: load/unload"
        if m is None or m.state == "absent":
            cases.append(TestCase(case, Status.SKIP, "not in this kernel"))
            continue
        why = modules.refusal(m, who)
        if why:
            cases.append(TestCase(case, Status.SKIP, f"not unloaded: {why}"))
            continue
        if first_only and tried:  # off Hyper-V the first refusal says it all
            cases.append(modules.off_hyperv_skip(name))
            continue
        tried = True
        before = len(_dmesg_lines(ctx, log))
        r = _sh(ctx, modules.RELOAD, log, 60 + modules.REBIND_SECONDS, name, m.state,
                str(modules.REBIND_SECONDS))
        ctx.changed()
        if not r.ok:
            cases.append(_error(case, r, f"reloading {name}"))
            continue
        cases.append(modules.judge_reload(m, modules.parse_reload(r.stdout), cap.on_hyperv,
                                          _reports_since(ctx, log, before)))
    return cases


def vmbus_devices(ctx: GuestContext, log: Path) -> list[TestCase]:
    cap, exp = ctx.capture(log), ctx.expectations()
    cases = hvchecks.judge_devices(cap, exp)
    if cap.on_hyperv:
        cases += [hvchecks.judge_heartbeat(cap, exp), *hvchecks.judge_channels(cap, exp)]
    return cases


def hv_utils(ctx: GuestContext, log: Path) -> list[TestCase]:
    cap, exp = ctx.capture(log), ctx.expectations()
    beat = hvchecks.judge_heartbeat(cap, exp)
    return [hvchecks.judge_clocksource(cap, exp), *hvchecks.judge_kvp(cap, exp),
            TestCase("hv_utils: heartbeat", beat.status, beat.message, beat.output)]


def hv_balloon(ctx: GuestContext, log: Path) -> list[TestCase]:
    skipped = _live_only(ctx, "hv_balloon: debugfs")
    if skipped:
        return skipped
    script = ('mounted=0; mountpoint -q /sys/kernel/debug || '
              '{ mount -t debugfs none /sys/kernel/debug && mounted=1; }; '
              '[ -r /sys/kernel/debug/hv-balloon ] && echo "balloon readable"; '
              '[ $mounted = 1 ] && umount /sys/kernel/debug; exit 0')  # left as found
    r = _sh(ctx, script, log, 60)
    if not r.ok:
        return [_error("hv_balloon", r, "the balloon check")]
    return [checks.judge_balloon(r.stdout)]


GATEWAY = r"""gw=$(ip route show default 2>/dev/null | awk '{print $3; exit}')
echo "gateway ${gw:--}"
[ -z "$gw" ] || { ping -c 3 -W 2 "$gw" >/dev/null 2>&1 && echo "ping ok" || echo "ping failed"; }
exit 0
"""


def hv_network(ctx: GuestContext, log: Path) -> list[TestCase]:
    cases = [hvchecks.judge_network(ctx.capture(log), ctx.expectations())]
    if not ctx.live:
        return [*cases, TestCase("network: gateway ping", Status.SKIP, NEEDS_LIVE)]
    r = _sh(ctx, GATEWAY, log, 60)
    if not r.ok:
        return [*cases, _error("network: gateway ping", r, "the gateway ping")]
    lines = r.stdout.splitlines()
    gw = next((line.split()[1] for line in lines if line.startswith("gateway ")), "-")
    cases.append(TestCase("network: gateway ping", Status.PASS) if "ping ok" in lines else
                 TestCase("network: gateway ping", Status.FAIL, "no default gateway"
                          if gw == "-" else f"gateway {gw} does not answer ping"))
    if ctx.iperf_server:
        perf = ctx.guest.run(["iperf3", "-c", ctx.iperf_server, "-t", "5", "-J"],
                             timeout=60, log=log)
        try:
            bps = float(json.loads(perf.stdout)["end"]["sum_received"]["bits_per_second"])
            cases.append(TestCase("network: iperf3", Status.PASS,
                                  output=f"{bps / 1e6:.1f} Mbit/s to {ctx.iperf_server}\n",
                                  properties={"throughput_mbps": f"{bps / 1e6:.1f}"}))
        except (ValueError, KeyError, TypeError):
            cases.append(_error("network: iperf3", perf, f"iperf3 -c {ctx.iperf_server}"))
    return cases


def hv_storage(ctx: GuestContext, log: Path) -> list[TestCase]:
    """A disk on hv_storvsc; with the host's ``scratch_disk``, 64 MiB written to it and
    read back (caches dropped) with the same checksum."""
    cases = [hvchecks.judge_storage(ctx.capture(log), ctx.expectations())]
    name = f"storage: {checks.SCRATCH_MIB} MiB read back"
    if not ctx.scratch_disk:
        cases.append(TestCase(name, Status.SKIP, f"host {ctx.host} has no scratch_disk"))
        return cases
    if not ctx.live:
        return [*cases, TestCase(name, Status.SKIP, NEEDS_LIVE)]
    io = _sh(ctx, checks.SCRATCH_IO, log, 600, ctx.scratch_disk, str(checks.SCRATCH_MIB))
    if not io.ok:
        cases.append(_error(f"{name} from {ctx.scratch_disk}", io, "the scratch disk check"))
    else:
        cases.append(checks.judge_scratch(io.stdout, ctx.scratch_disk))
    return cases


def hv_sock(ctx: GuestContext, log: Path) -> list[TestCase]:
    skipped = _live_only(ctx, "hv_sock")
    if skipped:
        return skipped
    before = len(_dmesg_lines(ctx, log))
    r = _sh(ctx, checks.COLLECT_HVSOCK, log, 60, "")
    ctx.changed()
    if not r.ok:
        return [_error("hv_sock", r, "the hv_sock check")]
    splats = _reports_since(ctx, log, before)
    return [checks.judge_hvsock(r.stdout, splats)]


# Unbind and bind one NIC's VMBus device from hv_netvsc, N rounds; the NIC must come
# back under its name.  Never the NIC of the SSH session (the caller checks).
NIC_REBIND = r"""nic="$1"; n="$2"
dev=$(basename "$(readlink -f "/sys/class/net/$nic/device")")
drv=/sys/bus/vmbus/drivers/hv_netvsc
[ -e "$drv/$dev" ] || { echo "error $nic is not bound to hv_netvsc"; exit 0; }
i=0
while [ $i -lt "$n" ]; do
  echo "$dev" > "$drv/unbind" || { echo "error unbind failed"; exit 0; }
  echo "$dev" > "$drv/bind" || { echo "error bind failed"; exit 0; }
  j=0; while [ ! -e "/sys/class/net/$nic" ] && [ $j -lt 30 ]; do sleep 1; j=$((j + 1)); done
  [ -e "/sys/class/net/$nic" ] || { echo "error $nic did not come back within 30 s"; exit 0; }
  i=$((i + 1))
done
echo "ok $n"
"""


def _spare_refused(ctx: GuestContext, log: Path, name: str) -> TestCase | None:
    """An error case unless the spare NIC is known not to carry the SSH session."""
    found = _sh(ctx, modules.CARRIERS, log, 60)
    carriers = modules.parse_carriers(found.stdout) if found.ok else modules.Carriers()
    if not carriers.session:
        return TestCase(name, Status.ERROR, "the NIC that carries the SSH session was not "
                        f"found: {ctx.spare_nic} is not touched")
    if carriers.session[0] == ctx.spare_nic:
        return TestCase(name, Status.ERROR, f"spare_nic {ctx.spare_nic} carries the SSH "
                        "session: it is not spare")
    return None


def netvsc_reload(ctx: GuestContext, log: Path, rounds: int = 3) -> list[TestCase]:
    """The spare synthetic NIC unbound from hv_netvsc and bound again, ``rounds``
    times, then no kernel report.  The session's NIC is never touched."""
    name = "hv_netvsc rebind"
    skipped = _live_only(ctx, name)
    if skipped:
        return skipped
    if not ctx.spare_nic:
        return [TestCase(name, Status.SKIP, "skipped: the synthetic NIC carries the SSH "
                         f"session; name a second one as spare_nic in host {ctx.host}")]
    refused = _spare_refused(ctx, log, name)
    if refused:
        return [refused]
    before = len(_dmesg_lines(ctx, log))
    r = _sh(ctx, NIC_REBIND, log, 60 + 40 * rounds, ctx.spare_nic, str(rounds))
    ctx.changed()
    if not r.ok:
        return [_error(name, r, f"rebinding {ctx.spare_nic}")]
    splats = _reports_since(ctx, log, before)
    if not r.stdout.strip().startswith("ok") or splats:
        why = r.stdout.strip().removeprefix("error ") or "no answer"
        return [TestCase(name, Status.FAIL, (splats[0] if splats else why),
                         output=r.output)]
    return [TestCase(name, Status.PASS, output=f"{ctx.spare_nic}: {rounds} rounds, "
                     "no report\n")]


ETHTOOL = r"""command -v ethtool >/dev/null 2>&1 || { echo "noethtool"; exit 0; }
for n in "$@"; do
  echo "nic $n"
  for o in l g k; do ethtool -$o "$n" 2>&1 | sed "s/^/$o /"; echo "$o exit $?"; done
done
"""

# The spare NIC's combined channel count changed by one and restored.
CHANNELS = r"""n="$1"
get() {
  ethtool -l "$n" 2>/dev/null | awk -v s="$1" '$0 ~ s {c=1} c && /^Combined:/ {print $2; exit}'
}
cur=$(get Current); max=$(get Pre-set)
echo "current $cur max $max"
if [ "${cur:-0}" -gt 1 ]; then want=$((cur - 1)); else want=$((cur + 1)); fi
[ "$want" -le "${max:-0}" ] || { echo "fixed only one channel count is possible"; exit 0; }
ethtool -L "$n" combined "$want" >/dev/null 2>&1; echo "set $? $want $(get Current)"
ethtool -L "$n" combined "$cur" >/dev/null 2>&1; echo "restore $? $cur $(get Current)"
"""


def netvsc_settings(ctx: GuestContext, log: Path) -> list[TestCase]:
    """ethtool -l/-g/-k read back on every synthetic NIC; on the spare NIC the
    channel count changed and restored (the session's NIC is only read)."""
    skipped = _live_only(ctx, "netvsc: ethtool")
    if skipped:
        return skipped
    cap = ctx.capture(log)
    nics = [n for n in cap.listdir("sys/class/net") or []
            if (cap.link(f"sys/class/net/{n}/device/driver") or "").endswith("/hv_netvsc")]
    if not nics:
        return [TestCase("netvsc: ethtool", Status.SKIP, "no hv_netvsc interface")]
    r = _sh(ctx, ETHTOOL, log, 60, *nics)
    if not r.ok:
        return [_error("netvsc: ethtool", r, "ethtool")]
    cases = checks.judge_ethtool(r.stdout, nics)
    if not ctx.spare_nic or "noethtool" in r.stdout:
        return cases
    refused = _spare_refused(ctx, log, f"netvsc: channels {ctx.spare_nic}")
    if refused:
        return [*cases, refused]
    changed = _sh(ctx, CHANNELS, log, 120, ctx.spare_nic)
    ctx.changed()
    if not changed.ok:
        return [*cases, _error(f"netvsc: channels {ctx.spare_nic}", changed, "ethtool -L")]
    return [*cases, checks.judge_channels_change(changed.stdout, ctx.spare_nic)]


# The highest CPU offline and online again.  On Hyper-V its VMBus channels are
# retargeted to CPU 0 first (6.1 refuses to offline a CPU that serves channels)
# and put back after; every change is undone however the test ends.
CPU_HOTPLUG = r"""cpu="$1"; c=/sys/devices/system/cpu/cpu$cpu
[ -w "$c/online" ] || { echo "error cpu$cpu cannot be taken offline here"; exit 0; }
moved=""
restore() {
  echo 1 > "$c/online" 2>/dev/null
  for m in $moved; do echo "${m##*=}" > "${m%=*}" 2>/dev/null; done
}
trap restore EXIT
for f in /sys/bus/vmbus/devices/*/channels/*/cpu; do
  [ -w "$f" ] || continue
  if [ "$(cat "$f")" = "$cpu" ]; then
    echo 0 > "$f" && moved="$moved $f=$cpu" && echo "retargeted $f"
  fi
done
echo 0 > "$c/online" 2>/dev/null; echo "offline $? $(cat "$c/online")"
echo 1 > "$c/online" 2>/dev/null; echo "online $? $(cat "$c/online")"
restore; trap - EXIT
for m in $moved; do echo "restored ${m%=*} $(cat "${m%=*}")"; done
exit 0
"""


def cpu_hotplug(ctx: GuestContext, log: Path) -> list[TestCase]:
    """CPU offline/online with the channels it served retargeted and restored."""
    name = "cpu hotplug"
    skipped = _live_only(ctx, name)
    if skipped:
        return skipped
    cpus = hvchecks.cpu_count(ctx.capture(log)) or 1
    if cpus < 2:
        return [TestCase(name, Status.SKIP, "a single vCPU: nothing to take offline")]
    before = len(_dmesg_lines(ctx, log))
    r = _sh(ctx, CPU_HOTPLUG, log, 120, str(cpus - 1))
    ctx.changed()
    if not r.ok:
        return [_error(name, r, "the CPU hotplug test")]
    return checks.judge_hotplug(r.stdout, cpus - 1, _reports_since(ctx, log, before))


# KTAP of every KUnit suite the kernel ran: debugfs has one results file per suite,
# each a KTAP document of its own (version, "1..1", the suite, "ok 1 <suite>"):
# joined under one plan with the suites numbered in turn.  Without debugfs results,
# the kernel log.  $1: the kunit debugfs folder (another one in tests).
KUNIT_COLLECT = r"""d="${1:-/sys/kernel/debug/kunit}"
[ -n "$1" ] || mountpoint -q /sys/kernel/debug 2>/dev/null || \
  mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -d "$d" ]; then
  echo "KTAP version 1"
  set -- "$d"/*/results
  [ -e "$1" ] || { echo "1..0"; exit 0; }
  echo "1..$#"
  n=0
  for f in "$@"; do
    n=$((n + 1))
    awk -v n="$n" '/^KTAP version/ || /^1\.\.[0-9]+$/ {next}
      /^ok [0-9]+ / {sub(/^ok [0-9]+ /, "ok " n " ")}
      /^not ok [0-9]+ / {sub(/^not ok [0-9]+ /, "not ok " n " ")} {print}' "$f"
  done
  exit 0
fi
echo "hvlab: no debugfs kunit" >&2
dmesg
"""


def kunit(ctx: GuestContext, log: Path) -> list[TestCase]:
    """KTAP of the KUnit tests built into the kernel: debugfs results, else dmesg."""
    skipped = _live_only(ctx, "kunit")
    if skipped:
        return skipped
    r = _sh(ctx, KUNIT_COLLECT, log, 120)
    if not r.ok:
        return [_error("kunit", r, "collecting KUnit results")]
    doc = ktap.parse(r.stdout.split("\n"))  # not splitlines(): a lone CR ends no line
    if not doc.tests:
        return [TestCase("kunit", Status.SKIP, "no KUnit results on the guest (kernel built "
                         "without CONFIG_KUNIT, or no KUnit test built in)")]
    return cases_from_document(doc, "kunit", mark_suites=True)  # a testsuite per KUnit suite


BUILTINS: dict[str, Callable[[GuestContext, Path], list[TestCase]]] = {
    "kernel-release": kernel_release,
    "dmesg-errors": dmesg_errors,
    "taint": taint,
    "hyperv-modules": hyperv_modules,
    "vmbus-devices": vmbus_devices,
    "hv-utils": hv_utils,
    "hv-balloon": hv_balloon,
    "hv-network": hv_network,
    "hv-storage": hv_storage,
    "hv-sock": hv_sock,
    "netvsc-reload": netvsc_reload,
    "module-reload": module_reload,
    "cpu-hotplug": cpu_hotplug,
    "netvsc-settings": netvsc_settings,
    "kunit": kunit,
}
