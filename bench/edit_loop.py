#!/usr/bin/env python3
"""The edit loop: one patch of the series changes, then the whole default plan
again, hvlab vs the raw steps.

Each run first rewrites one line that patch 1 of the series adds (a string
printed at boot, a fresh one every run, so neither side finds a build cached).
hvlab: ``inv run --plan default --checks none`` on a copy of the shipped
configs holding that series: re-apply, incremental build (hvlab's artifacts,
modules tarball), boot in local-qemu, boot-health and hyperv-drivers.
Raw: in the same worktree and build directory, ``git am`` of the series on
the base commit, incremental ``make`` with hvlab's own command line,
``modules_install``, the guest initramfs with the modules, the same QEMU
command line, one SSH command (``uname -r``).  Alternating, median of 3.
Goal: hvlab / raw <= 1.2.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import INV, KERNELS, REPO, REPORTS, boot_until_release, timed
from hvlab.boot import guest_image
from hvlab.git import IDENTITY
from hvlab.hosts.qemu_guest import QemuGuest, free_port
from hvlab.model import HostSpec, QemuHost
from hvlab.workspace import Workspace

RUNS = 3
SERIES = "hyperv-sample"
LINE = '+\tpr_info("VMBus protocol version %u.%u negotiated\\n",'
work = Path(tempfile.mkdtemp(prefix="bench-edit-"))
configs = work / "configs"
shutil.copytree(REPO / "configs", configs)
patch1 = sorted((configs / "patches" / SERIES).glob("0001-*.patch"))[0]
original = patch1.read_text()
assert LINE in original, "the sample series changed: pick another line"
env = {"HVLAB_CONFIGS": str(configs)}
counter = 0


def edit() -> None:
    global counter
    counter += 1
    patch1.write_text(original.replace(LINE, LINE.replace("negotiated", f"negotiated "
                                                          f"(edit {os.getpid()}.{counter})")))


def hvlab() -> float:
    edit()
    return timed([*INV, "run", "--plan", "default", "--checks", "none"], env=env)


timed([*INV, "run", "--plan", "default", "--checks", "none"], env=env)  # warm everything
meta = json.loads((REPORTS / "latest" / "metadata.json").read_text())
facts = next(c["facts"] for c in meta["cells"] if c["facts"].get("build_id"))
base = facts["base_commit"]
built = json.loads((KERNELS / "builds" / facts["build_id"] / "metadata.json").read_text())
make = shlex.split(built["make_command"])
tree = Path(make[make.index("-C") + 1])
out = Path(next(a for a in make if a.startswith("O="))[2:])
ws = Workspace.from_env(REPO)
image = guest_image.build_image(ws)
host = HostSpec("bench", Path("bench.yaml"), "qemu", QemuHost(memory=1024, cpus=2),
                boot_timeout=180)
key = paramiko.Ed25519Key.from_private_key_file(str(image.client_key))
ccache = {"CCACHE_DIR": os.environ.get("CCACHE_DIR", str(KERNELS / "ccache")),
          "CCACHE_BASEDIR": str(KERNELS), "LC_ALL": "C", "KBUILD_BUILD_USER": "hvlab",
          "KBUILD_BUILD_HOST": "hvlab", "KBUILD_BUILD_TIMESTAMP": "@0"}


def sh(argv: list[str], **kw: object) -> None:
    subprocess.run(argv, check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def raw() -> float:
    edit()
    t0 = time.monotonic()
    sh(["git", "checkout", "-q", "--detach", "--force", base], cwd=tree)
    sh(["git", "am", "-q", "-3", *sorted(str(p) for p in patch1.parent.glob("0*.patch"))],
       cwd=tree, env={**os.environ, **IDENTITY})
    sh(make, env={**os.environ, **ccache})
    mods = work / "mods"
    shutil.rmtree(mods, ignore_errors=True)
    sh([*[a for a in make if a not in ("bzImage", "modules") and not a.startswith("-j")],
        "modules_install", f"INSTALL_MOD_PATH={mods}"], env={**os.environ, **ccache})
    release = (out / "include" / "config" / "kernel.release").read_text().strip()
    tar = work / "mods.tar.gz"
    sh(["tar", "-czf", str(tar), "-C", str(mods), "lib"])
    archive = guest_image.write_modules_archive(guest_image.modules_from_tarball(tar),
                                                work / "mods.cpio.gz")
    initrd = guest_image.combined_initrd(image, archive, work / "initrd")
    guest = QemuGuest(host, work, out / "arch" / "x86" / "boot" / "bzImage", initrd, "")
    guest.port = free_port()
    elapsed = time.monotonic() - t0
    return elapsed + boot_until_release(guest.argv("tcg"), guest.port, key, release)


mine, theirs = [], []
try:
    for i in range(RUNS):
        for fn, into in ((hvlab, mine), (raw, theirs))[:: 1 if i % 2 == 0 else -1]:
            into.append(fn())
finally:
    shutil.rmtree(work, ignore_errors=True)
h, r = statistics.median(mine), statistics.median(theirs)
print(f"hvlab runs: {', '.join(f'{x:.1f}' for x in mine)} s; "
      f"raw: {', '.join(f'{x:.1f}' for x in theirs)} s")
print(f"edit loop: hvlab {h:.2f} s, raw steps {r:.2f} s (medians of {RUNS})")
print(f"ratio: {h / r:.3f}")
