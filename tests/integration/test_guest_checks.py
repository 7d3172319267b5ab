"""Guest checks on real QEMU guests (the Debian kernel, TCG): a live guest is
captured over SSH and judged; module reloads refuse what carries the session
or is in use; CPU hotplug is undone; hosts.capture copies a running guest and
inv test --capture judges it with no guest at all."""

from __future__ import annotations

import glob
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlab.boot import guest_image
from hvlab.hosts.qemu_guest import QemuGuest
from hvlab.model import HostSpec, QemuHost, SshEndpoint
from hvlab.ssh import SshSession
from hvlab.workspace import Workspace
from tests.conftest import Env
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration

VMLINUZ = sorted(glob.glob("/boot/vmlinuz-*"))[-1] if glob.glob("/boot/vmlinuz-*") else ""


def test_module_reload_refuses_the_session_nic_and_held_modules_and_cpu_hotplug_is_undone(
        env: Env) -> None:
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 768\ncpus: 2\n")
    env.write("suites/safety.yaml", "tests:\n"
              "  - name: reload\n    run: builtin:module-reload\n"
              "    modules: [virtio_net, net_failover, virtio_pci, virtio_blk, hv_vmbus]\n"
              "  - name: hotplug\n    run: builtin:cpu-hotplug\n"
              "  - name: afterwards\n"
              "    run: grep -q '^virtio_net ' /proc/modules && grep -q '^virtio_blk ' "
              "/proc/modules && test \"$(cat /sys/devices/system/cpu/cpu1/online)\" = 1\n")
    done = env.inv("test", "--prebuilt", VMLINUZ, "--host", "q", "--suite", "safety",
                   timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cases = env.suite("q.safety")
    net = cases["reload: module virtio_net: load/unload"]
    assert status(net) == "skipped" and "carries the SSH session" in net.result[0].message
    held = cases["reload: module net_failover: load/unload"]
    assert status(held) == "skipped" and "in use" in held.result[0].message
    pci = cases["reload: module virtio_pci: load/unload"]
    assert status(pci) == "skipped" and "SSH session" in pci.result[0].message
    blk = cases["reload: module virtio_blk: load/unload"]  # loaded, unused: reloaded
    assert status(blk) == "pass" and "rmmod exit 0; modprobe exit 0" in \
        blk.system_out
    vmbus = cases["reload: module hv_vmbus: load/unload"]
    assert status(vmbus) == "pass" and "refused with ENODEV off Hyper-V" in vmbus.system_out
    assert status(cases["hotplug: cpu hotplug"]) == "pass"
    assert "cpu1 offline and online" in cases["hotplug: cpu hotplug"].system_out
    assert status(cases["hotplug: cpu hotplug: channels retargeted"]) == "skipped"
    assert status(cases["afterwards"]) == "pass"  # the guest is as it was
    kept = sorted((env.latest / "logs").glob("capture-q-*.tar.gz"))
    assert kept, "the live capture is kept in the run folder"
    with tarfile.open(kept[0]) as tf:
        names = tf.getnames()
    assert "./dmesg.txt" in names and "./root/proc/modules" in names


@pytest.fixture
def running_guest(env: Env, tmp_path: Path) -> Iterator[SshEndpoint]:
    """A QEMU guest that runs while the test talks to it as an ssh host."""
    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    release = Path(VMLINUZ).name.removeprefix("vmlinuz-")
    image = guest_image.build_image(ws)
    mods = guest_image.write_modules_archive(
        guest_image.modules_from_tree(Path("/"), release, guest_image.GUEST_MODULES),
        tmp_path / "mods.cpio.gz")
    initrd = guest_image.combined_initrd(image, mods, tmp_path / "initrd")
    spec = HostSpec("machine", tmp_path / "m.yaml", "qemu",  # type: ignore[arg-type]
                    QemuHost(memory=768, cpus=2))
    guest = QemuGuest(spec, tmp_path, Path(VMLINUZ), initrd, "")
    guest.start()
    ep = SshEndpoint("127.0.0.1", guest.port, "root", image.client_key,
                     host_key=image.host_key_fingerprint, connect_timeout=5)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with SshSession("machine", ep) as s:
                    assert s.run(["true"]).ok
                break
            except Exception:
                assert time.monotonic() < deadline and guest.alive(), "guest never came up"
                time.sleep(1)
        yield ep
    finally:
        guest.stop()


def test_hosts_capture_copies_a_running_guest_and_test_capture_judges_it(
        env: Env, running_guest: SshEndpoint, tmp_path: Path, validate_junit) -> None:  # type: ignore[no-untyped-def]
    ep = running_guest
    env.write("hosts/machine.yaml", f"kind: ssh\naddress: 127.0.0.1\nport: {ep.port}\n"
              f"user: root\nkey: {ep.key}\nhost_key: '{ep.host_key}'\n")
    out = tmp_path / "cap"
    done = env.inv("hosts.capture", "--host", "machine", "--output", str(out), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    release = Path(VMLINUZ).name.removeprefix("vmlinuz-")
    assert (out / "root/proc/sys/kernel/osrelease").read_text().strip() == release
    assert os.readlink(out / "root/sys/class/net/eth0/device/driver").endswith("/virtio_net")
    assert "virtio_net" in (out / "root/proc/modules").read_text()
    assert (out / "dmesg.txt").read_text().strip()
    assert (out / "commands/uname-r.txt").read_text().strip() == release
    assert (tmp_path / "cap.tar.gz").is_file()
    with SshSession("machine", ep) as s:  # nothing left behind on the guest
        assert s.run(["sh", "-c", "ls /tmp/hvlab-capture*"]).exit_status != 0

    env.write("suites/hv.yaml", "tests:\n  - name: vmbus\n    run: builtin:vmbus-devices\n"
              "  - name: health\n    run: builtin:taint\n"
              "  - name: shell\n    run: 'true'\n")
    # not a Hyper-V guest: as it is, refused as a capture (exit 2), naming what is missing
    refused = env.inv("test", "--capture", str(out), "--suite", "hv")
    assert refused.returncode == 2, refused.stderr
    assert "root/sys/bus/vmbus is missing" in refused.stderr
    # a capture assembled or completed by hand is accepted: an empty VMBus
    (out / "root/sys/bus/vmbus/devices").mkdir(parents=True)
    judged = env.inv("test", "--capture", str(tmp_path / "cap"), "--suite", "hv")
    assert judged.returncode == 1, judged.stderr[-2000:]  # a VMBus without a heartbeat
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("capture.hv")
    assert "no heartbeat device" in cases["vmbus: heartbeat device"].result[0].message
    assert status(cases["health: taint"]) == "pass"
    assert cases["shell"].result[0].message == "needs a live guest (this is a capture)"
    qemu = env.inv("hosts.capture", "--host", "q-none", timeout=60)
    assert qemu.returncode == 2 and "unknown host 'q-none'" in qemu.stderr


HOSTILE = "x;touch /tmp/m1;$(touch /tmp/m2)`touch /tmp/m3` && touch /tmp/m4 'q' \"d\" *"


def test_config_values_with_shell_metacharacters_arrive_verbatim_on_the_guest(
        running_guest: SshEndpoint, tmp_path: Path) -> None:
    """scratch_disk, spare_nic, iperf_server and a test's modules (the config
    values the suites pass to guest commands) as shell text: they must reach the
    commands as one argument each, be named verbatim in the verdict, and never
    run."""
    from hvlab.suites import builtin

    with SshSession("machine", running_guest) as s:
        ctx = builtin.GuestContext(s, "machine", "", tmp_path, iperf_server=HOSTILE,
                                   scratch_disk=HOSTILE, spare_nic=HOSTILE,
                                   modules=(HOSTILE,))
        storage = builtin.hv_storage(ctx, tmp_path / "storage.log")
        network = builtin.hv_network(ctx, tmp_path / "network.log")
        reload = builtin.module_reload(ctx, tmp_path / "reload.log")
        rebind = builtin.netvsc_reload(ctx, tmp_path / "rebind.log", rounds=1)
        echoed = s.run(["printf", "%s", HOSTILE]).stdout
        left = s.run(["sh", "-c", "ls /tmp/m1 /tmp/m2 /tmp/m3 /tmp/m4 2>/dev/null"]).stdout
    assert echoed == HOSTILE
    assert left == "", "a config value ran as a command on the guest"
    scratch = [c for c in storage if c.name.startswith("storage: 64 MiB")]
    assert scratch and HOSTILE in scratch[0].message, storage
    assert rebind[0].status in ("error", "fail") and HOSTILE in rebind[0].message, rebind
    iperf = [c for c in network if "iperf3" in c.name]
    assert iperf and iperf[0].status != "pass", network
    assert [(c.name, c.status) for c in reload] == [(f"module {HOSTILE}: load/unload", "skip")]
