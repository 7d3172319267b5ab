"""The shipped boot-health and hyperv-drivers suites judged on guest captures
(tests/captures.py: models of real Hyper-V, Azure and WSL2 guests, sources
noted there), through the real suite runner with no guest at all."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from hvlab.config import loader
from hvlab.errors import UserError
from hvlab.results import Status, TestCase
from hvlab.suites import hvtree, modules
from hvlab.suites.builtin import GuestContext
from hvlab.suites.capture import Capture, open_capture, pack
from hvlab.suites.runner import run_suite
from hvlab.workspace import Workspace
from tests import captures as C

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SUITES = loader.load_or_raise(Workspace.from_env(REPO)).suites


def judge(folder: Path, *suites: str) -> dict[str, TestCase]:
    ctx = GuestContext(None, "captured", "", folder, given=Capture(folder))
    out = {}
    for name in suites:
        for case in run_suite(ctx, SUITES[name], folder / "logs", {}).cases:
            out[f"{name}/{case.name}"] = case
    return out


@pytest.mark.parametrize("model", sorted(C.HEALTHY))
def test_real_guest_models_are_healthy(model: str, tmp_path: Path) -> None:
    cases = judge(C.write(C.HEALTHY[model], tmp_path / model), "boot-health",
                  "hyperv-drivers")
    bad = {n: c.message for n, c in cases.items() if c.status in (Status.FAIL, Status.ERROR)}
    assert bad == {}
    passed = [n for n, c in cases.items() if c.status is Status.PASS]
    assert len(passed) >= 8, cases  # judged, not skipped wholesale
    live = [c for c in cases.values() if c.message.startswith("needs a live guest")]
    assert live  # the tests that act on a guest say why they did not run


def test_azure_details_are_information_not_failures(tmp_path: Path) -> None:
    cases = judge(C.write(C.AZURE_GEN2, tmp_path / "a"), "hyperv-drivers")
    listed = cases["hyperv-drivers/vmbus: devices without a Linux driver"].output
    assert f"{C.IMC}}} left alone by Linux on purpose" in listed
    assert "hv_sock channel" in listed
    assert "VF enP12345s1 enslaved" in cases["hyperv-drivers/network: synthetic NIC"].output
    builtin = judge(tmp_path / "a", "boot-health")
    assert builtin["boot-health/hyperv-modules: module hv_storvsc"].output == "built in\n"
    assert builtin["boot-health/hyperv-modules: module pci_hyperv"].output == "built in\n"
    assert builtin["boot-health/taint"].status is Status.PASS  # O and E only


def test_gen1_runs_on_tsc_with_an_invariant_tsc_and_every_driver_a_module(
        tmp_path: Path) -> None:
    cases = judge(C.write(C.GEN1_MODULES, tmp_path / "g"), "hyperv-drivers", "boot-health")
    assert cases["hyperv-drivers/hv_utils: clocksource"].output == "tsc\n"
    assert "loaded, refcnt 0" in cases["boot-health/hyperv-modules: module hv_vmbus"].output
    assert cases["hyperv-drivers/vmbus: ide " + C._id(2)].status is Status.PASS
    # without the invariant-TSC flags, tsc is a fallback
    no_flags = C.write(C.replace(C.GEN1_MODULES, flags="fpu tsc hypervisor"), tmp_path / "n")
    clock = judge(no_flags, "hyperv-drivers")["hyperv-drivers/hv_utils: clocksource"]
    assert clock.status is Status.FAIL and "cpuinfo lacks constant_tsc" in clock.message


def test_wsl2_has_no_heartbeat_kvp_or_lib_modules_and_that_is_fine(tmp_path: Path) -> None:
    cases = judge(C.write(C.WSL2, tmp_path / "w"), "hyperv-drivers", "boot-health")
    assert cases["hyperv-drivers/vmbus: heartbeat device"].message == \
        "WSL2 offers no heartbeat service"
    assert cases["hyperv-drivers/hv_utils"].status is Status.SKIP  # requires class:heartbeat
    assert cases["boot-health/hyperv-modules: module hv_netvsc"].output == "built in\n"


@pytest.mark.parametrize("variant", sorted(C.BROKEN))
def test_broken_variants_fail_naming_the_device_or_check(variant: str,
                                                         tmp_path: Path) -> None:
    model, expected = C.BROKEN[variant]
    cases = judge(C.write(model, tmp_path / variant), "boot-health", "hyperv-drivers")
    failed = [c.message for c in cases.values() if c.status is Status.FAIL]
    assert any(expected(m) for m in failed), failed
    assert not [c for c in cases.values() if c.status is Status.ERROR]


def test_a_missing_input_is_skipped_naming_the_path(tmp_path: Path) -> None:
    folder = C.write(C.AZURE_GEN2, tmp_path / "a")
    (folder / "root/proc/cpuinfo").unlink()
    shutil.rmtree(folder / "commands")
    cases = judge(folder, "hyperv-drivers")
    assert cases["hyperv-drivers/vmbus: channels"].message == "not captured: proc/cpuinfo"
    assert cases["hyperv-drivers/network: synthetic NIC"].message == \
        "not captured: commands/ip-addr.txt"
    assert cases["hyperv-drivers/hv_utils: KVP daemon"].message == \
        "not captured: commands/ps.txt"


def test_off_hyperv_everything_is_skipped_naming_hyperv(tmp_path: Path) -> None:
    folder = C.write(C.AZURE_GEN2, tmp_path / "a")
    shutil.rmtree(folder / "root/sys/bus")
    cases = judge(folder, "hyperv-drivers")
    assert all(c.status is Status.SKIP and "not on Hyper-V" in c.message
               for c in cases.values()), cases


def test_open_capture_takes_a_folder_or_a_tarball_and_refuses_others(tmp_path: Path) -> None:
    folder = C.write(C.WSL2, tmp_path / "w")
    pack(folder, tmp_path / "w.tar.gz")
    unpacked = open_capture(tmp_path / "w.tar.gz", tmp_path)
    assert unpacked.release == C.WSL2.release and unpacked.on_hyperv
    assert open_capture(folder, tmp_path).folder == folder
    (folder / "dmesg.txt").unlink()
    with pytest.raises(UserError, match="dmesg.txt is missing"):
        open_capture(folder, tmp_path)
    with pytest.raises(UserError, match="no such directory"):
        open_capture(tmp_path / "nope", tmp_path)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../escape")
        tf.addfile(info)
    with pytest.raises(UserError, match="not a readable capture archive"):
        open_capture(evil, tmp_path)
    assert not (tmp_path.parent / "escape").exists()


def test_the_tree_is_where_the_expectations_come_from(tmp_path: Path) -> None:
    """A few lines in the 6.1 tree's own form: a new class the shipped table does not
    know becomes known once the tree has it."""
    tree = tmp_path / "tree"
    (tree / "include/linux").mkdir(parents=True)
    (tree / "include/linux/hyperv.h").write_text(
        "#define HV_NIC_GUID \\\n\t.guid = GUID_INIT(0xf8615163, 0xdf3e, 0x46c5, 0x91, "
        "0x3f, \\\n\t\t\t  0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e)\n"
        "#define HV_NEWDEV_GUID \\\n\t.guid = GUID_INIT(0x12345678, 0x9abc, 0xdef0, 0x12, "
        "0x34, \\\n\t\t\t  0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0)\n")
    drv = tree / "drivers/net/newdev"
    drv.mkdir(parents=True)
    (drv / "Makefile").write_text("obj-$(CONFIG_NEWDEV) += hv_newdev.o\n"
                                  "hv_newdev-y := newdev_main.o\n")
    (drv / "newdev_main.c").write_text(
        "static const struct hv_vmbus_device_id id_table[] = {\n\t{ HV_NEWDEV_GUID, },\n"
        "\t{ },\n};\n\nstatic struct hv_driver newdev_drv = {\n\t.name = KBUILD_MODNAME,\n"
        "\t.id_table = id_table,\n};\n")
    exp = hvtree.extract(tree)
    new = exp.classes["12345678-9abc-def0-1234-56789abcdef0"]
    assert (new.kind, new.drivers) == ("newdev", ("hv_newdev",))
    assert exp.modules == {"hv_newdev": "hv_newdev"}
    assert exp.classes["f8615163-df3e-46c5-913f-f2d2f965ed0e"].kind == "network"
    assert hvtree.HvExpectations.from_json(exp.to_json()) == exp
    shipped = hvtree.shipped()
    assert "Debian linux-source-6.1" in shipped.source
    assert shipped.modules["hv_pci"] == "pci_hyperv"  # driver and module names differ
    assert shipped.tsc_invariant and "hyperv_clocksource_tsc_page" in shipped.clocksources


def test_unload_is_refused_for_what_the_guest_needs() -> None:
    carriers = modules.parse_carriers("session eth0 hv_netvsc\nroot sda1 hv_storvsc\n")
    loaded = modules.Module("x", "loaded")
    assert modules.refusal(modules.Module("hv_vmbus", "builtin"), carriers).startswith(
        "built in")
    assert "carries the SSH session" in modules.refusal(
        modules.Module("hv_netvsc", "loaded"), carriers)
    assert modules.refusal(modules.Module("hv_storvsc", "loaded"), carriers) == \
        "it serves the root disk sda1"
    assert "integration services" in modules.refusal(modules.Module("hv_utils", "loaded"),
                                                     carriers)
    assert modules.refusal(modules.Module("x", "loaded", 2), carriers) == "in use (refcnt 2)"
    assert modules.refusal(modules.Module("x", "loaded", 0, ("y",)), carriers) == \
        "in use by y"
    assert modules.refusal(loaded, carriers) == ""
    assert modules.refusal(modules.Module("x", "loadable"), carriers) == ""


def test_reload_verdicts() -> None:
    m = modules.Module("hv_balloon", "loaded")
    ok = modules.parse_reload("step rmmod 0 \nstep modprobe 0 \nrebound 1 [a b] [a b]\n")
    assert modules.judge_reload(m, ok, True, []).status is Status.PASS
    lost = modules.parse_reload("step rmmod 0 \nstep modprobe 0 \nrebound 30 [a b] [a]\n")
    case = modules.judge_reload(m, lost, True, [])
    assert case.status is Status.FAIL and "not rebound within 30 s" in case.message
    busy = modules.parse_reload("step rmmod 1 rmmod: ERROR: Module is in use\n")
    assert modules.judge_reload(m, busy, True, []).message.startswith("rmmod hv_balloon failed")
    enodev = modules.parse_reload("step modprobe 1 modprobe: ERROR: No such device\n")
    assert modules.judge_reload(modules.Module("hv_utils", "loadable"), enodev, False,
                                []).status is Status.PASS


def test_sysfs_links_that_point_out_of_the_capture_are_kept_and_never_followed(
        tmp_path: Path) -> None:
    """A real guest's driver links are relative to the deep /sys/devices path: in a
    capture they point out of root/.  They unpack as they are, are read with
    readlink, and a path through a link reads as missing (never the host's)."""
    folder = C.write(C.AZURE_GEN2, tmp_path / "a")
    dev = folder / "root/sys/bus/vmbus/devices" / C._id(1) / "driver"
    dev.unlink()
    dev.symlink_to("../../../../../../../bus/vmbus/drivers/hv_netvsc")  # as on a guest
    (folder / "root/proc/self").symlink_to("/proc/self")  # a hostile one
    pack(folder, tmp_path / "a.tar.gz")
    cap = open_capture(tmp_path / "a.tar.gz", tmp_path)
    assert cap.link(f"sys/bus/vmbus/devices/{C._id(1)}/driver").endswith("/hv_netvsc")
    assert cap.read("proc/self/status") is None and cap.listdir("proc/self") is None
    cases = judge(cap.folder, "hyperv-drivers")
    assert cases[f"hyperv-drivers/vmbus: network {C._id(1)}"].status is Status.PASS


def test_nothing_is_unloaded_when_the_session_nic_or_its_drivers_are_unknown() -> None:
    loaded = modules.Module("virtio_blk", "loaded")
    assert "was not found" in modules.refusal(loaded, modules.parse_carriers(""))
    bridge = modules.parse_carriers("session br0\n")  # a bridge, its ports not found
    assert "drivers of br0" in modules.refusal(loaded, bridge)
    ports = modules.parse_carriers("session br0 hv_netvsc\nroot none\n")
    assert modules.refusal(loaded, ports) == ""
    assert "SSH session" in modules.refusal(modules.Module("hv_netvsc", "loaded"), ports)


def test_ip_addresses_parse_when_the_guest_wrote_a_byte_that_is_not_utf8(tmp_path: Path) -> None:
    """`ip -j addr` prints an interface's alias as the bytes it holds; the JSON
    still parses (the byte becomes U+FFFD there, not a \\xff escape)."""
    from hvlab.suites import hvchecks
    from hvlab.suites.capture import Capture

    (tmp_path / "commands").mkdir()
    (tmp_path / "commands" / "ip-addr.txt").write_bytes(
        b'[{"ifname":"eth0","ifalias":"lab \xff","addr_info":'
        b'[{"family":"inet","local":"10.0.0.5","prefixlen":24}]}]')
    assert hvchecks._addresses(Capture(tmp_path)) == {"eth0": ["10.0.0.5/24"]}
