"""Tests that ship with hvlab (``run: builtin:<name>`` in a suite file): each
collects on the guest over SSH and judges here (suites/checks.py, vmbus.py)."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvlab import cancel
from hvlab.boot import console
from hvlab.results import Status, TestCase
from hvlab.ssh import RemoteResult, SshSession
from hvlab.suites import checks, ktap, vmbus
from hvlab.suites.ktapcases import cases_from_document


@dataclass
class GuestContext:
    """What a suite runs on: an open session to the booted guest and its facts."""

    session: SshSession
    host: str
    release: str  # the release the guest should run
    workdir: Path  # the run's logs folder
    iperf_server: str | None = None
    dmesg_baseline: list[str] | None = None  # error lines of the baseline boot
    build: Path | None = None  # the booted build's folder (kernels/builds/<id>), when known
    scratch_disk: str | None = None  # a block device the storage test may overwrite


BIG = 16 << 20  # what a collector may print (dmesg, KTAP) and still be judged whole


def _sh(ctx: GuestContext, script: str, log: Path, timeout: float = 120,
        *args: str) -> RemoteResult:
    return ctx.session.run(["sh", "-c", script, "sh", *args], timeout=timeout, log=log,
                           tail_bytes=BIG)


def _error(name: str, result: RemoteResult, what: str) -> TestCase:
    why = ("timed out" if result.timed_out else "connection dropped" if result.dropped
           else f"exit {result.exit_status}")
    return TestCase(name, Status.ERROR, f"{what} failed on the guest ({why}): "
                    f"{result.stderr.strip()[-300:]}", output=result.output)


def kernel_release(ctx: GuestContext, log: Path) -> list[TestCase]:
    r = ctx.session.run(["uname", "-r"], timeout=30, log=log)
    if not r.ok:
        return [_error("kernel release", r, "uname -r")]
    got = r.output.strip()
    if got != ctx.release:
        return [TestCase("kernel release", Status.FAIL, f"running {got}, expected {ctx.release}")]
    return [TestCase("kernel release", Status.PASS, output=got + "\n")]


def dmesg_errors(ctx: GuestContext, log: Path) -> list[TestCase]:
    r = ctx.session.run(["dmesg", "-r"], timeout=60, log=log, tail_bytes=BIG)
    if not r.ok:
        return [_error("dmesg errors", r, "dmesg -r")]
    return [checks.judge_dmesg(r.stdout, ctx.dmesg_baseline)]


def taint(ctx: GuestContext, log: Path) -> list[TestCase]:
    r = ctx.session.run(["cat", "/proc/sys/kernel/tainted"], timeout=30, log=log)
    if not r.ok:
        return [_error("taint", r, "reading /proc/sys/kernel/tainted")]
    return [checks.judge_taint(r.output)]


def _dmesg_lines(ctx: GuestContext, log: Path) -> list[str]:
    r = ctx.session.run(["dmesg"], timeout=60, log=log, tail_bytes=BIG)
    return r.stdout.splitlines() if r.ok else []


def _reports_since(ctx: GuestContext, log: Path, before: int) -> list[str]:
    """Kernel reports (panic, Oops, WARN, ...) in dmesg after its first ``before`` lines."""
    return [f"{f.kind}: {f.message}" for f in console.scan(_dmesg_lines(ctx, log)[before:])]


def hyperv_modules(ctx: GuestContext, log: Path) -> list[TestCase]:
    before = len(_dmesg_lines(ctx, log))
    r = _sh(ctx, checks.collect_modules_script(), log, 300, "")
    if not r.ok:
        return [_error("modules", r, "the module check")]
    splats = _reports_since(ctx, log, before)
    present, mods = checks.parse_modules(r.stdout)
    return checks.judge_modules(present, mods, splats)


def vmbus_devices(ctx: GuestContext, log: Path) -> list[TestCase]:
    r = _sh(ctx, vmbus.COLLECT, log, 60, "")
    if not r.ok:
        return [_error("vmbus", r, "listing VMBus devices")]
    return vmbus.judge(*vmbus.parse(r.stdout))


def hv_utils(ctx: GuestContext, log: Path) -> list[TestCase]:
    devices = _sh(ctx, vmbus.COLLECT, log, 60, "")
    r = _sh(ctx, checks.COLLECT_UTILS, log, 60, "")
    if not r.ok or not devices.ok:
        return [_error("hv_utils", r if not r.ok else devices, "the hv_utils check")]
    kinds = [vmbus.CLASSES.get(d.class_id, ("?", ()))[0]
             for d in vmbus.parse(devices.stdout)[1]]
    return checks.judge_utils(r.stdout, kinds)


def hv_balloon(ctx: GuestContext, log: Path) -> list[TestCase]:
    ctx.session.run(["sh", "-c", "mountpoint -q /sys/kernel/debug || "
                     "mount -t debugfs none /sys/kernel/debug"], timeout=30, log=log)
    r = _sh(ctx, checks.COLLECT_UTILS, log, 60, "")
    if not r.ok:
        return [_error("hv_balloon", r, "the balloon check")]
    return [checks.judge_balloon(r.stdout)]


def hv_network(ctx: GuestContext, log: Path) -> list[TestCase]:
    r = _sh(ctx, checks.COLLECT_NET, log, 60)
    if not r.ok:
        return [_error("network", r, "the network check")]
    cases = checks.judge_network(r.stdout)
    if ctx.iperf_server:
        perf = ctx.session.run(["iperf3", "-c", ctx.iperf_server, "-t", "5", "-J"],
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
    r = _sh(ctx, checks.COLLECT_STORAGE, log, 60, "")
    if not r.ok:
        return [_error("storage", r, "listing disks")]
    cases = [checks.judge_storvsc(r.stdout)]
    name = f"storage: {checks.SCRATCH_MIB} MiB read back"
    if not ctx.scratch_disk:
        cases.append(TestCase(name, Status.SKIP, f"host {ctx.host} has no scratch_disk"))
        return cases
    io = _sh(ctx, checks.SCRATCH_IO, log, 600, ctx.scratch_disk, str(checks.SCRATCH_MIB))
    if not io.ok:
        cases.append(_error(f"{name} from {ctx.scratch_disk}", io, "the scratch disk check"))
    else:
        cases.append(checks.judge_scratch(io.stdout, ctx.scratch_disk))
    return cases


def hv_sock(ctx: GuestContext, log: Path) -> list[TestCase]:
    before = len(_dmesg_lines(ctx, log))
    r = _sh(ctx, checks.COLLECT_HVSOCK, log, 60, "")
    if not r.ok:
        return [_error("hv_sock", r, "the hv_sock check")]
    splats = _reports_since(ctx, log, before)
    return [checks.judge_hvsock(r.stdout, splats)]


RELOAD = r"""n="$1"
i=0
while [ $i -lt "$n" ]; do
  rmmod hv_netvsc || exit 1
  modprobe hv_netvsc || exit 2
  i=$((i + 1)); sleep 2
done
"""


def netvsc_reload(ctx: GuestContext, log: Path, rounds: int = 3) -> list[TestCase]:
    """rmmod/modprobe hv_netvsc in a loop, detached (the SSH connection rides on
    that NIC), then reconnect and look for kernel reports."""
    before = len(_dmesg_lines(ctx, log))
    script = f"setsid sh -c {shlex.quote(RELOAD)} sh {rounds} >/tmp/hvlab-reload.log 2>&1 " \
             "</dev/null; echo $? >/tmp/hvlab-reload.rc"
    ctx.session.run(["sh", "-c", f"rm -f /tmp/hvlab-reload.rc; ({script}) &"], timeout=30,
                    log=log)
    deadline = time.monotonic() + 60 + 10 * rounds
    rc = ""
    while time.monotonic() < deadline and not rc:
        cancel.sleep(3)
        try:
            r = ctx.session.run(["cat", "/tmp/hvlab-reload.rc"], timeout=10, log=log)
            rc = r.output.strip() if r.ok else ""
        except Exception:
            ctx.session.close()
    if not rc:
        return [TestCase("hv_netvsc reload", Status.ERROR,
                         "the guest did not come back on the network after the reload loop")]
    splats = _reports_since(ctx, log, before)
    if rc != "0" or splats:
        return [TestCase("hv_netvsc reload", Status.FAIL,
                         f"reload loop exit {rc}" + (f"; {splats[0]}" if splats else ""),
                         output="\n".join(splats) + "\n")]
    return [TestCase("hv_netvsc reload", Status.PASS, output=f"{rounds} rounds, no report\n")]


KUNIT_COLLECT = r"""d=/sys/kernel/debug/kunit
mountpoint -q /sys/kernel/debug 2>/dev/null || mount -t debugfs none /sys/kernel/debug 2>/dev/null
if [ -d "$d" ]; then
  echo "KTAP version 1"
  set -- "$d"/*/results
  [ -e "$1" ] || { echo "1..0"; exit 0; }
  echo "1..$#"
  for f in "$@"; do sed 's/^/    /' "$f" | grep -v '^    KTAP version'; done
  exit 0
fi
echo "hvlab: no debugfs kunit" >&2
dmesg
"""


def kunit(ctx: GuestContext, log: Path) -> list[TestCase]:
    """KTAP of the KUnit tests built into the kernel: debugfs results, else dmesg."""
    r = _sh(ctx, KUNIT_COLLECT, log, 120)
    if not r.ok:
        return [_error("kunit", r, "collecting KUnit results")]
    doc = ktap.parse(r.stdout.splitlines())
    if not doc.tests:
        return [TestCase("kunit", Status.SKIP, "no KUnit results on the guest (kernel built "
                         "without CONFIG_KUNIT, or no KUnit test built in)")]
    return cases_from_document(doc, "kunit")


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
    "kunit": kunit,
}
