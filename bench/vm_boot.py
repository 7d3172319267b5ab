#!/usr/bin/env python3
"""The installed Debian VM: image build time, and boot -> first command.

1. ``inv image.vm``: once forced (cold: mmdebstrap, disk, first boot) unless
   ``--cached-only``, then again (cached: the inputs' digest is found).
2. Boot to first command: hvlab's ``local_vm.Running.start`` (image from
   cache, overlay, firmware variables, QEMU, SSH with the pinned host key)
   then ``true``, against a plain script that makes the same overlay and
   variable store, starts the same QEMU command line and polls SSH with
   paramiko until ``true`` answers.  Alternating, median of 3 each.
   Goal: hvlab / plain <= 1.1.
"""

from __future__ import annotations

import base64
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import INV, timed
from hvlab.boot import vm_image
from hvlab.hosts import local_vm
from hvlab.hosts.disk_vm import DiskVm, firmware
from hvlab.hosts.qemu_guest import free_port
from hvlab.model import HostSpec, LocalVm, SshEndpoint, SshHost
from hvlab.workspace import Workspace

RUNS = 3
REPO = Path(__file__).resolve().parent.parent
ws = Workspace.from_env(REPO)

if "--cached-only" not in sys.argv:
    cold = timed([*INV, "image.vm", "--force", "--quiet"], cwd=REPO)
    print(f"image build, cold: {cold:.1f} s")
cached = timed([*INV, "image.vm", "--quiet"], cwd=REPO)
print(f"image build, cached: {cached:.2f} s")
image = vm_image.build_image(ws)
spec = HostSpec("bench-vm", Path("bench.yaml"), "ssh",
                SshHost(SshEndpoint("127.0.0.1"), vm=LocalVm()), boot_timeout=600)
work = Path(tempfile.mkdtemp(prefix="bench-vm-"))


def hvlab_boot() -> float:
    t0 = time.monotonic()
    running = local_vm.Running.start(ws, spec, LocalVm(), work / "hvlab", lambda _m: None)
    try:
        assert running.session.run(["true"], timeout=30).ok
        return time.monotonic() - t0
    finally:
        running.stop()


def plain_boot() -> float:
    """The same QEMU command line, started by hand; SSH polled with paramiko."""
    folder = work / "plain"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    code, template = firmware()
    t0 = time.monotonic()
    vm = DiskVm("plain", image.disk, folder)  # only for its command line
    vm.port = free_port()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image.disk.resolve()), str(vm.drive)], check=True)
    shutil.copyfile(template, folder / "vars.fd")
    proc = subprocess.Popen(vm.argv(code, folder / "vars.fd"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    key = paramiko.Ed25519Key.from_private_key_file(str(image.client_key))
    kind, blob = (image.disk.parent / "host_key.pub").read_text().split()[:2]
    host_key = paramiko.Ed25519Key(data=base64.b64decode(blob))
    try:
        while True:
            client = paramiko.SSHClient()
            client.get_host_keys().add(f"[127.0.0.1]:{vm.port}", kind, host_key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect("127.0.0.1", vm.port, "root", pkey=key, timeout=5,
                               banner_timeout=5, auth_timeout=5, look_for_keys=False,
                               allow_agent=False)
                _, out, _ = client.exec_command("true")
                if out.channel.recv_exit_status() == 0:
                    return time.monotonic() - t0
            except (OSError, paramiko.SSHException):
                time.sleep(1)
            finally:
                client.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(vm._sockdir, ignore_errors=True)


hv, raw = [], []
for _ in range(RUNS):
    raw.append(plain_boot())
    hv.append(hvlab_boot())
shutil.rmtree(work, ignore_errors=True)
ratio = statistics.median(hv) / statistics.median(raw)
print(f"boot to first command: hvlab {statistics.median(hv):.1f} s, plain "
      f"{statistics.median(raw):.1f} s (runs: hvlab {', '.join(f'{t:.1f}' for t in hv)}; "
      f"plain {', '.join(f'{t:.1f}' for t in raw)})")
print("goal: hvlab / plain <= 1.1")
print(f"ratio: {ratio:.3f}")
