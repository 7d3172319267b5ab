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

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CCACHE_ENV,
    INV,
    REPO,
    EditedSeries,
    alternate,
    boot_until_release,
    built_from_latest,
    medians,
    raw_am_and_make,
    timed,
)
from hvlab.boot import guest_image
from hvlab.hosts.qemu_guest import QemuGuest, free_port
from hvlab.model import HostSpec, QemuHost
from hvlab.workspace import Workspace

RUNS = 3
SERIES = "hyperv-sample"
work = Path(tempfile.mkdtemp(prefix="bench-edit-"))
series = EditedSeries(work, SERIES)
DEFAULT = [*INV, "run", "--plan", "default", "--checks", "none"]


def hvlab() -> float:
    series.edit()
    return timed(DEFAULT, env=series.env)


timed(DEFAULT, env=series.env)  # warm everything
base, make, tree = built_from_latest()
out = Path(next(a for a in make if a.startswith("O="))[2:])
ws = Workspace.from_env(REPO)
image = guest_image.build_image(ws)
host = HostSpec("bench", Path("bench.yaml"), "qemu", QemuHost(memory=1024, cpus=2),
                boot_timeout=180)
key = paramiko.Ed25519Key.from_private_key_file(str(image.client_key))


def sh(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **CCACHE_ENV})


def raw() -> float:
    series.edit()
    t0 = time.monotonic()
    raw_am_and_make(tree, base, series.patches, make)
    mods = work / "mods"
    shutil.rmtree(mods, ignore_errors=True)
    sh([*[a for a in make if a not in ("bzImage", "modules") and not a.startswith("-j")],
        "modules_install", f"INSTALL_MOD_PATH={mods}"])
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


try:
    mine, theirs = alternate(hvlab, raw, RUNS)
finally:
    shutil.rmtree(work, ignore_errors=True)
medians("edit loop", mine, "raw steps", theirs, "<= 1.2")
