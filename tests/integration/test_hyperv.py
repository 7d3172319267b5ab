"""The hyperv host kind against the Hyper-V host simulator (tests/hyperv_sim.py)
over a real sshd: the full flow with the prebuilt Debian kernel, and the faults."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvlab.workspace import Workspace
from tests.conftest import REPO, Env
from tests.conftest import case_status as status
from tests.hyperv_lab import Lab, hyperv_lab
from tests.hyperv_sim import GENERIC

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(env: Env, tmp_path: Path) -> Iterator[Lab]:
    ws = Workspace(env.root, env.configs, env.kernels, env.reports)
    with hyperv_lab(tmp_path / "lab", ws) as the_lab:
        yield the_lab


def qemu_left(lab: Lab) -> str:
    found = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True,
                           check=False).stdout
    return "\n".join(line for line in found.splitlines() if lab.kernel.name in line
                     and str(lab.state.parent) in line)


def prebuilt(lab: Lab) -> str:
    return str(lab.kernel)


def test_full_flow_on_the_simulator(env: Env, lab: Lab, validate_junit: Any) -> None:
    env.write("hosts/hv.yaml", lab.host_yaml(
        checkpoint="clean", secure_boot="off", release="revert",
        guest={"via_host": "true"}))
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    validate_junit(env.latest / "junit.xml")
    install = env.suite("hv.install")
    assert status(install["install: hv"]) == "pass"
    assert "restored checkpoint 'clean'" in install["install: hv"].system_out
    assert "Secure Boot turned off" in install["install: hv"].system_out
    boot = env.suite("hv.boot")
    assert status(boot["boot: hv"]) == "pass"
    assert boot["kernel release"].system_out.strip() == lab.release
    assert status(boot["integration: heartbeat"]) == "pass"
    props = env.suite_properties("hv.boot")
    assert props["windows_build"] == "20348"
    assert props["vm_generation"] == "2" and props["vm_version"] == "10.0"
    assert "Heartbeat=OK" in props["integration_services"]
    # the serial log came from the host's pipe reader, both boots in it
    serial = (env.latest / "logs" / "console-hv.log").read_text(errors="replace")
    assert serial.count("Linux version") == 2, serial[-2000:]
    vm = lab.vm_state()
    assert vm["state"] == "Off"
    assert vm["restored"] == 2  # before the run, and release: revert after it
    assert vm["secure_boot"] == "On"  # as the checkpoint has it
    assert {"cmdlet": "Set-VMFirmware",
            "params": {"enablesecureboot": "Off"}} in lab.data()["calls"]  # by -VM, its Id
    calls = lab.calls()
    assert calls.index("Set-VMComPort") < calls.index("Start-VM")
    # turned off, reverted, and the standard checkpoint's saved state removed
    acted = [c for c in calls if c != "Get-VM" and c.lower() not in GENERIC]
    # (the checkpoint is looked up once to make sure its name names exactly one)
    assert acted[-5:] == ["Stop-VM", "Get-VMCheckpoint", "Get-VMCheckpoint",
                          "Restore-VMCheckpoint", "Remove-VMSavedState"]
    assert not vm.get("resumed_saved")  # never resumed an old guest
    assert "hvlab: serial reader connected (1)" in serial
    assert qemu_left(lab) == ""
    # every script went through -EncodedCommand with the preferences set
    scripts = (lab.state / "scripts.log").read_text()
    assert scripts.count("$ProgressPreference = 'SilentlyContinue'") >= len(set(calls)) > 5


def test_no_ip_within_ip_timeout(env: Env, lab: Lab) -> None:
    lab.update(lambda d: d["vms"][lab.vm].update(kvp=False))
    env.write("hosts/hv.yaml", lab.host_yaml(ip_timeout=8))
    t0 = time.monotonic()
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=300)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - t0 < 60
    assert "reported no IPv4 address within ip_timeout (8 s)" in done.stderr
    assert "KVP daemon" in done.stderr
    assert "Traceback" not in done.stderr
    assert lab.vm_state()["state"] == "Off"
    assert qemu_left(lab) == ""
    assert status(env.suite("hv.install")["install: prebuilt"]) == "error"


def test_powershell_error_is_quoted(env: Env, lab: Lab) -> None:
    env.write("hosts/hv.yaml", lab.host_yaml(vm="no-such-vm"))
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=120)
    assert done.returncode == 3, done.stderr
    assert "no VM is named 'no-such-vm'" in done.stderr
    assert "Traceback" not in done.stderr
    # a cmdlet's own error record is quoted as PowerShell wrote it
    env.write("hosts/hv.yaml", lab.host_yaml(checkpoint="no-such-checkpoint"))
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=120)
    assert done.returncode == 3, done.stderr
    assert ("Get-VMCheckpoint: Hyper-V was unable to find a checkpoint named "
            "'no-such-checkpoint'." in done.stderr)
    assert "Traceback" not in done.stderr


def test_windows_host_wrong_key_or_unreachable(env: Env, lab: Lab) -> None:
    text = lab.host_yaml().replace(lab.server.fingerprint,
                                   "SHA256:" + "A" * 43)
    env.write("hosts/hv.yaml", text)
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=120)
    assert done.returncode == 3 and "host key mismatch" in done.stderr, done.stderr
    env.write("hosts/hv.yaml", lab.host_yaml().replace(f"port: {lab.server.port}", "port: 9"))
    t0 = time.monotonic()
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=120)
    assert done.returncode == 3 and "unreachable" in done.stderr, done.stderr
    assert time.monotonic() - t0 < 30
    assert "Start-VM" not in lab.calls()


def test_hung_guest_is_hard_reset_back_to_its_default_kernel(env: Env, lab: Lab) -> None:
    # A "build" without the virtio-net module: its network never comes up.
    broken = env.root / "broken-build"
    broken.mkdir()
    release = lab.release
    shutil.copyfile(lab.kernel, broken / "bzImage")
    for name in ("System.map", "config"):
        shutil.copyfile(lab.kernel.with_name(f"{name}-{release}"), broken / name)
    (broken / "kernelrelease").write_text(release + "\n")
    env.write("hosts/hv.yaml", lab.host_yaml(boot_timeout=45, secure_boot="off"))
    done = env.inv("boot", "--prebuilt", str(broken), "--host", "hv", timeout=600)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    case = env.suite("hv.boot")["boot: hv"]
    assert status(case) == "failure"
    message = case.result[0].message
    assert "hard reset (Stop-VM -TurnOff, Start-VM)" in message
    assert f"back on its default kernel {release}" in message
    # the tail is the new kernel's: the reason it never answered is there
    assert "--- console tail ---" in case.system_out
    assert "can't find device 'eth0'" in case.system_out
    calls = lab.calls()
    assert calls.count("Start-VM") == 2
    # the serial log follows the VM through the reset: the default kernel, the
    # kexec'd build, the default kernel again on the VM's new process
    serial = (env.latest / "logs" / "console-hv.log").read_text(errors="replace")
    assert serial.count("Linux version") == 3, serial[-2000:]
    assert lab.vm_state()["state"] == "Off"
    assert qemu_left(lab) == ""


def test_interrupted_run_stops_the_vm_and_releases_the_host(env: Env, lab: Lab,
                                                           validate_junit: Any) -> None:
    env.write("hosts/hv.yaml", lab.host_yaml())
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                             "boot", "--prebuilt", prebuilt(lab), "--host", "hv"],
                            cwd=env.root, env={**os.environ, **env.vars}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while lab.vm_state()["state"] != "Running":
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted" in err.lower()
    assert lab.vm_state()["state"] == "Off"
    assert qemu_left(lab) == ""
    validate_junit(env.latest / "junit.xml")
    # the lease is free: hosts.check takes it at once
    done = env.inv("hosts.check", "--host", "hv", timeout=60)
    assert done.returncode == 0, done.stderr


def test_hosts_check_reports_each_problem_in_one_line(env: Env, lab: Lab) -> None:
    env.write("hosts/hv.yaml", lab.host_yaml())
    env.write("hosts/gone.yaml", lab.host_yaml(vm="gone"))
    done = env.inv("hosts.check", timeout=60)
    assert done.returncode == 3, done.stderr
    out = done.stdout + done.stderr
    assert "hv: PASS: Microsoft Windows Server 2022 Datacenter (build 20348)" in out
    assert "VM 'linux-gen2-01' Off, generation 2" in out
    gone = [line for line in out.splitlines() if " gone: " in line]
    assert len(gone) == 1 and "no VM is named 'gone'" in gone[0]
    lab.update(lambda d: d["host"].update(hyperv=""))
    done = env.inv("hosts.check", "--host", "hv", timeout=60)
    assert "no Hyper-V PowerShell module" in done.stdout + done.stderr


def test_secure_boot_left_on_refuses_the_unsigned_kernel_clearly(env: Env, lab: Lab) -> None:
    env.write("hosts/hv.yaml", lab.host_yaml())  # no secure_boot key: the VM's On stays
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=600)
    assert done.returncode == 3, done.stderr
    assert "kexec failed: kexec_load failed: Operation not permitted" in done.stderr
    assert "secure_boot: off" in done.stderr
    assert lab.vm_state()["state"] == "Off"


def test_the_serial_log_follows_the_vm_across_a_restart(env: Env, lab: Lab) -> None:
    """Hyper-V closes COM1's pipe when the guest restarts and opens it again: the
    reader reconnects, so the log holds both boots (the simulator restarts its
    -no-reboot QEMU as Hyper-V restarts the VM)."""
    from hvlab.hosts.hyperv.client import MARKER

    guest = lab.guest()
    with lab.client() as client:
        try:
            client.clear_serial()
            client.attach_serial()
            client.start_serial_reader()
            client.start()
            client.wait_ipv4(120)
            lab.connect(guest, 120)
            guest.run(["reboot", "-f"], timeout=10)  # the connection drops with the guest
            guest.close()
            deadline = time.monotonic() + 180
            while client.read_serial().count(b"Linux version") < 2:
                assert time.monotonic() < deadline, client.read_serial()[-2000:]
                time.sleep(2)
            while MARKER.encode() + b" (2)" not in client.read_serial():
                assert time.monotonic() < deadline
                time.sleep(1)
            assert client.vm_info().state == "Running"  # restarted, not off
        finally:
            guest.close()
            client.turn_off()
    assert qemu_left(lab) == ""


def _when_install_uploads(env: Env, proc: subprocess.Popen[str]) -> None:
    """Until the install has asked the guest for /boot's free space (the upload
    comes next)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for log in env.reports.glob("*/logs/*.log"):
            if "$ df -Pk /boot" in log.read_text(errors="replace"):
                return
        time.sleep(0.05)
    raise AssertionError(f"the install never started: {proc.communicate()}")


def test_the_guest_link_cut_during_install(env: Env, lab: Lab) -> None:
    """Cut for a few seconds: the install goes on and the boot passes.  Cut for
    good: a bounded number of attempts, then exit 3 naming the host."""
    env.write("hosts/hv.yaml", lab.host_yaml(secure_boot="off", guest={"connect_timeout": 5}))
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "boot", "--prebuilt",
            prebuilt(lab), "--host", "hv"]
    run_env = {**os.environ, **env.vars}
    proc = subprocess.Popen(argv, cwd=env.root, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _when_install_uploads(env, proc)
    lab.link(up=False)
    time.sleep(6)
    lab.link(up=True)
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    for old in env.reports.iterdir():  # the next run's logs only
        if old.is_symlink():
            old.unlink()
        else:
            shutil.rmtree(old)
    proc = subprocess.Popen(argv, cwd=env.root, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _when_install_uploads(env, proc)
        lab.link(up=False)
        _out, err = proc.communicate(timeout=400)  # bounded: never a hang
    finally:
        lab.link(up=True)
    assert proc.returncode == 3, err[-3000:]
    assert "host hv" in err and "during install" in err, err[-3000:]
    assert "Traceback" not in err
    assert lab.vm_state()["state"] == "Off"
    assert qemu_left(lab) == ""


def test_a_vm_a_killed_run_left_running_is_taken_back_by_the_next_run(
        env: Env, lab: Lab) -> None:
    """SIGKILL gives hvlab no chance to turn the VM off; the next run that takes
    the lease finds it running, turns it off (and reverts it, as configured)
    before it starts it clean."""
    env.write("hosts/hv.yaml", lab.host_yaml(checkpoint="clean", secure_boot="off",
                                             release="revert"))
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "boot", "--prebuilt",
            prebuilt(lab), "--host", "hv"]
    proc = subprocess.Popen(argv, cwd=env.root, env={**os.environ, **env.vars},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while lab.vm_state()["state"] != "Running":
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lab.vm_state()["state"] == "Running"  # left behind, as on a real host
    done = env.inv("boot", "--prebuilt", prebuilt(lab), "--host", "hv", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "VM was Running: turned off" in done.stderr
    assert lab.vm_state()["state"] == "Off"
    assert qemu_left(lab) == ""
