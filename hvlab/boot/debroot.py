"""Debian's own binaries for a guest of another architecture (an arm64 guest
on an x86_64 machine): packages of that arch downloaded by apt with their
dependencies and unpacked with ``dpkg-deb -x`` into a folder under
``kernels/images/``, never built by hand.  Of what the packages' scripts
would do, only depmod runs (for a kernel package's modules).

apt runs with a private state (its own package lists, an empty dpkg status,
``APT::Architecture`` set to the guest's): the machine's sources and keys
are used, but nothing of its dpkg database or its architectures changes.
A folder once unpacked is reused as it is, offline too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hvlab.build.arches import Arch
from hvlab.errors import InfraError
from hvlab.locks import FileLock
from hvlab.proc import capture, require_tool
from hvlab.workspace import Workspace

ROOT_FORMAT = "hvlab-debroot-1"


def apt_config(state: Path, arch: Arch) -> str:
    """An apt configuration whose state lives in ``state`` and which resolves
    packages of ``arch`` as if the machine were one (an empty dpkg status:
    every dependency is downloaded).  Pure."""
    return "\n".join([
        f'APT::Architecture "{arch.debian_arch}";',
        f'APT::Architectures {{ "{arch.debian_arch}"; }};',
        'APT::Install-Recommends "false";',
        'APT::Install-Suggests "false";',
        f'Dir::State "{state}/state";',
        f'Dir::State::status "{state}/state/status";',
        f'Dir::Cache "{state}/cache";',
        f'Dir::Etc::Preferences "{state}/none";',
        f'Dir::Etc::PreferencesParts "{state}/none.d";',
        'Debug::NoLocking "true";',  # its own state: the machine's locks are not its
        "",
    ])


def _apt(conf: Path, *args: str, log: Path) -> None:
    argv = ["apt-get", "-q", "-y", *args]
    env = {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out:
        out.write(f"$ APT_CONFIG={conf} {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603
                              stderr=subprocess.STDOUT, env=env, check=False, timeout=1800)
    if done.returncode != 0:
        tail = log.read_text(errors="backslashreplace").strip().splitlines()[-3:]
        raise InfraError(f"apt-get {args[0]} for {conf.parent.name} failed (exit "
                         f"{done.returncode}): {' | '.join(tail)} (log {log})")


def _depmod(root: Path) -> None:
    """What a kernel package's postinst does: modules.dep for its modules."""
    modules = root / "lib" / "modules"
    for release in sorted(modules.iterdir()) if modules.is_dir() else []:
        done = capture([require_tool("depmod", "kmod"), "-b", str(root), release.name],
                       timeout=600)
        if done.returncode != 0:
            raise InfraError(f"depmod for {release.name} failed: "
                             f"{done.stderr.decode(errors='replace').strip()[-300:]}")


def unpacked(ws: Workspace, arch: Arch, packages: Sequence[str]) -> Path:
    """A folder holding ``packages`` of ``arch`` and everything they depend on,
    unpacked; made on first use, then reused."""
    key = hashlib.sha256(f"{ROOT_FORMAT}|{arch.debian_arch}|{' '.join(sorted(packages))}"
                         .encode()).hexdigest()[:12]
    base = ws.kernels / "images" / f"debian-{arch.debian_arch}"
    root = base / f"root-{key}"
    if (root / ".hvlab-packages").is_file():
        return root
    require_tool("apt-get")
    require_tool("dpkg-deb")
    with FileLock(ws.locks / f"debroot-{arch.debian_arch}.lock",
                  f"the {arch.debian_arch} guest binaries", timeout=1800, wait=True):
        if (root / ".hvlab-packages").is_file():
            return root
        return _unpack(base, root, arch, packages)


def _unpack(base: Path, root: Path, arch: Arch, packages: Sequence[str]) -> Path:
    state = base / "apt"
    for d in ("state/lists/partial", "cache/archives/partial", "none.d"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "state" / "status").touch()
    conf = state / "apt.conf"
    conf.write_text(apt_config(state, arch))
    log = base / "apt.log"
    _apt(conf, "update", log=log)
    archives = state / "cache" / "archives"
    for old in archives.glob("*.deb"):  # only what this set needs goes in
        old.unlink()
    _apt(conf, "install", "--download-only", *packages, log=log)
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise InfraError(f"apt-get downloaded nothing for {' '.join(packages)} "
                         f"({arch.debian_arch}); see {log}")
    tmp = Path(tempfile.mkdtemp(prefix=".root-", dir=base))
    try:
        for deb in debs:
            done = capture(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=600)
            if done.returncode != 0:
                raise InfraError(f"dpkg-deb -x {deb.name} failed: "
                                 f"{done.stderr.decode(errors='replace').strip()[-300:]}")
        _depmod(tmp)
        (tmp / ".hvlab-packages").write_text("".join(f"{d.name}\n" for d in debs))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs:  # the unpacked folder is the cache
        deb.unlink()
    return root
