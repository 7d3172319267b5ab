#!/usr/bin/env python3
"""Kernel plus modules to a loopback sshd: hvlab (file + tar stream) vs scp -r.

Uses the newest build in kernels/builds (its image and unpacked modules
tree) or, without one, the Debian kernel and its modules.  Goal: hvlab / scp
<= 1.1 (median of 3 each).
"""

from __future__ import annotations

import glob
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hvlab.model import SshEndpoint
from hvlab.ssh import SshSession
from tests.sshd import sshd

REPO = Path(__file__).resolve().parent.parent

RUNS = 3
work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
builds = sorted(glob.glob(str(REPO / "kernels/builds/*/metadata.json")), key=lambda p:
                Path(p).stat().st_mtime)
payload = work / "payload"
(payload / "modules").mkdir(parents=True)
if builds:
    build = Path(builds[-1]).parent
    shutil.copy(build / "bzImage", payload / "vmlinuz")
    with tarfile.open(build / "modules.tar.gz") as tf:
        tf.extractall(payload / "modules", filter="data")
else:
    vmlinuz = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    shutil.copy(vmlinuz, payload / "vmlinuz")
    shutil.copytree(Path("/lib/modules") / Path(vmlinuz).name[8:], payload / "modules" / "m")
size = sum(p.stat().st_size for p in payload.rglob("*") if p.is_file())

with sshd(work / "sshd") as server:
    ep = SshEndpoint(server.address, server.port, "root", server.client_key,
                     host_key=server.fingerprint)
    known = work / "known_hosts"
    pub = Path(f"{server.host_key}.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    hv, raw = [], []
    for i in range(RUNS):
        dest = work / f"scp{i}"
        t0 = time.monotonic()
        subprocess.run(["scp", "-q", "-r", "-P", str(server.port), "-i", str(server.client_key),
                        "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                        str(payload), f"root@127.0.0.1:{dest}"], check=True)
        raw.append(time.monotonic() - t0)
        dest = work / f"hv{i}"
        t0 = time.monotonic()
        with SshSession("bench", ep) as ssh:
            ssh.put_tree(str(dest), [(payload / "vmlinuz", "vmlinuz"),
                                     (payload / "modules", "modules")])
        hv.append(time.monotonic() - t0)
shutil.rmtree(work, ignore_errors=True)
h, p = statistics.median(hv), statistics.median(raw)
print(f"upload of {size / 1e6:.1f} MB (median of {RUNS}): hvlab {h:.2f} s, scp -r {p:.2f} s")
print("goal: <= 1.1")
print(f"ratio: {h / p:.3f}")
