"""The QEMU guest initramfs, made from this machine's own binaries, or for
a guest of another architecture from Debian's packages of that arch
(``hvlab.boot.debroot``).

A base image (busybox-static, OpenSSH sshd and the libraries it links,
test tools the machine has, a generated guest host key that hvlab pins, a
generated client key) plus, at boot, a per-kernel archive of modules:
Linux unpacks concatenated cpio archives as one.  The guest's /init loads
modules with modprobe and modules.dep, brings up eth0 and starts sshd.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hvlab.boot import cpio, debroot
from hvlab.build.arches import Arch, runs_here
from hvlab.errors import InfraError
from hvlab.locks import FileLock
from hvlab.proc import capture, require_tool
from hvlab.workspace import Workspace

IMAGE_FORMAT = "hvlab-guest-4"
# What a guest of another arch is made of (Debian packages of that arch).
FOREIGN_PACKAGES = ("busybox-static", "openssh-server", "openssh-sftp-server")
READY = "hvlab-guest-ready"
# Tools copied when the machine has them (with their libraries).
OPTIONAL_TOOLS = ("kexec", "iperf3", "fio", "depmod", "ethtool")
# Modules the guest loads when they exist (QEMU devices; built-in is fine too).
GUEST_MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_console")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run/sshd /tmp /var/log
# what udev would add: kselftest's runner writes to /dev/stdout
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname hvlab-guest
echo "hvlab-guest: kernel $(uname -r)" > /dev/console
if [ -d "/lib/modules/$(uname -r)" ]; then
  for m in @MODULES@; do modprobe "$m" 2>/dev/null; done
fi
net=static:10.0.2.15/24:10.0.2.2
for word in $(cat /proc/cmdline); do
  case "$word" in hvlab.net=*) net="${word#hvlab.net=}" ;; esac
done
ip link set lo up
ip link set eth0 up
case "$net" in
  static:*)
    rest="${net#static:}"; addr="${rest%%:*}"; gw="${rest#*:}"
    ip addr add "$addr" dev eth0
    [ -n "$gw" ] && ip route add default via "$gw"
    ;;
  dhcp) udhcpc -i eth0 -q -n -t 10 -s /etc/udhcpc.script ;;
esac
/usr/sbin/sshd -E /var/log/sshd.log
echo "@READY@" > /dev/console
while true; do sleep 3600; done
"""

UDHCPC = r"""#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}"
    ;;
esac
"""

SSHD_CONFIG = """Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile /root/.ssh/authorized_keys
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
"""


@dataclass(frozen=True)
class GuestImage:
    path: Path  # base initramfs (gzip cpio)
    client_key: Path  # private key authorized for root in the guest
    host_key_fingerprint: str  # the guest's sshd key, pinned by hvlab


def _libraries(binary: str) -> list[str]:
    """The shared libraries ``binary`` loads, the dynamic loader included."""
    out = capture(["ldd", binary]).stdout.decode()
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def elf_needs(readelf: str) -> tuple[str | None, list[str]]:
    """(program interpreter, NEEDED sonames) from ``readelf -d -l -W``.  Pure."""
    interp = re.search(r"\[Requesting program interpreter: (\S+)\]", readelf)
    return (interp.group(1) if interp else None,
            re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf))


def _foreign_libraries(root: Path, arch: Arch, binary: str) -> dict[str, str]:
    """The libraries ``binary`` (a guest path under ``root``) loads, found the
    way its dynamic loader would in the guest: guest path -> file under root."""
    dirs = [f"/lib/{arch.multiarch}", f"/usr/lib/{arch.multiarch}", "/lib", "/usr/lib"]
    found: dict[str, str] = {}
    todo = [binary]
    while todo:
        guest = todo.pop()
        out = capture(["readelf", "-d", "-l", "-W", str(root / guest.lstrip("/"))])
        if out.returncode != 0:  # not there, or not an ELF file
            raise InfraError(f"readelf cannot read {guest} of the {arch.debian_arch} guest "
                             f"(under {root}): "
                             f"{out.stderr.decode(errors='replace').strip()[-300:]}")
        interp, sonames = elf_needs(out.stdout.decode(errors="replace"))
        wanted = ([interp] if interp else []) + [
            next((f"{d}/{so}" for d in dirs if (root / d.lstrip("/") / so).exists()), so)
            for so in sonames]
        for lib in wanted:
            if not lib.startswith("/"):
                raise InfraError(f"{binary} of the {arch.debian_arch} guest needs {lib}, which "
                                 f"no unpacked package has (under {root})")
            if lib not in found:
                if not (root / lib.lstrip("/")).exists():  # an interpreter no package has
                    raise InfraError(f"{binary} of the {arch.debian_arch} guest needs {lib}, "
                                     f"which no unpacked package has (under {root})")
                found[lib] = os.path.realpath(root / lib.lstrip("/"))
                if not Path(found[lib]).is_relative_to(root.resolve()):  # an absolute link
                    found[lib] = str(root / os.path.relpath(found[lib], "/"))
                todo.append(lib)
    return found


def _fingerprint(pub: Path) -> str:
    out = capture(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)]).stdout.decode()
    return out.split()[1]


def _inputs_digest(paths: Iterable[str]) -> str:
    h = hashlib.sha256(IMAGE_FORMAT.encode())
    h.update(INIT.encode() + SSHD_CONFIG.encode())
    for p in sorted(set(paths)):
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def base_entries(binaries: dict[str, str], host_key: Path, client_pub: Path) -> list[cpio.Entry]:
    """Everything in the base image; ``binaries`` maps guest path -> host path."""
    entries: dict[str, cpio.Entry] = {}

    def add(e: cpio.Entry) -> None:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            entries.setdefault(d, cpio.directory(d))
        entries[e.path] = e

    for d in ("proc", "sys", "dev", "run", "tmp", "root", "etc/ssh", "var/log", "var/empty",
              "lib/modules", "mnt", "usr/lib/openssh", "sbin", "usr/bin", "boot"):
        add(cpio.directory(d, 0o700 if d == "root" else 0o755))
    add(cpio.chardev("dev/console", 5, 1))
    add(cpio.symlink("bin/sh", "busybox"))  # before /init installs the rest (rdinit=/bin/sh)
    add(cpio.chardev("dev/null", 1, 3, 0o666))
    for guest, host in sorted(binaries.items()):
        add(cpio.file(guest.lstrip("/"), Path(host).read_bytes(), 0o755))
    init = INIT.replace("@MODULES@", " ".join(GUEST_MODULES)).replace("@READY@", READY)
    add(cpio.file("init", init.encode(), 0o755))
    add(cpio.file("etc/udhcpc.script", UDHCPC.encode(), 0o755))
    add(cpio.file("etc/ssh/sshd_config", SSHD_CONFIG.encode()))
    add(cpio.file("etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600))
    add(cpio.file("etc/ssh/ssh_host_ed25519_key.pub", Path(f"{host_key}.pub").read_bytes()))
    add(cpio.file("root/.ssh/authorized_keys", client_pub.read_bytes(), 0o600))
    add(cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                b"sshd:x:100:65534::/run/sshd:/bin/false\n"))
    add(cpio.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n"))
    add(cpio.file("etc/shadow", b"root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n",
                  0o600))
    add(cpio.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\n"))
    add(cpio.file("etc/hostname", b"hvlab-guest\n"))
    add(cpio.file("etc/hvlab-guest", f"{IMAGE_FORMAT}\n".encode()))  # hosts/oneshot.py checks it
    return [entries[k] for k in sorted(entries)]


def build_image(ws: Workspace, force: bool = False, arch: Arch | None = None) -> GuestImage:
    """The base image for guests of ``arch`` (this machine's by default), built on
    first use and cached under kernels/images/."""
    require_tool("ssh-keygen")
    if arch is None or runs_here(arch):
        binaries = _native_binaries()
        name = "base"
    else:
        binaries = _foreign_binaries(ws, arch)
        name = f"base-{arch.debian_arch}"
    folder = ws.kernels / "images" / f"{name}-{_inputs_digest(binaries.values())}"
    # hosts boot in parallel: one builds the image, the others then find it made
    with FileLock(ws.locks / "guest-image.lock", "the guest image", timeout=600, wait=True):
        return _build_locked(folder, binaries, force)


def _native_binaries() -> dict[str, str]:
    """This machine's busybox, sshd, optional tools and their libraries."""
    busybox = require_tool("busybox")
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        require_tool("sshd")
    ldd = capture(["ldd", busybox])
    if b"not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise InfraError(f"{busybox} is not static: install busybox-static")
    binaries = {"/bin/busybox": busybox, "/usr/sbin/sshd": sshd}
    sftp = "/usr/lib/openssh/sftp-server"
    if os.path.exists(sftp):
        binaries[sftp] = sftp
    for tool in OPTIONAL_TOOLS:
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        if found:
            binaries[f"/usr/sbin/{tool}"] = found
    for guest, host in list(binaries.items()):
        if guest == "/bin/busybox":
            continue
        for lib in _libraries(host):
            binaries[lib] = os.path.realpath(lib)
    return binaries


def _foreign_binaries(ws: Workspace, arch: Arch) -> dict[str, str]:
    """busybox, sshd and sftp-server from Debian's packages of ``arch``, with the
    libraries they link (no optional tools: the machine's would not run there)."""
    require_tool("readelf", "binutils")
    root = debroot.unpacked(ws, arch, FOREIGN_PACKAGES)
    binaries = {"/bin/busybox": str(root / "bin" / "busybox"),
                "/usr/sbin/sshd": str(root / "usr" / "sbin" / "sshd"),
                "/usr/lib/openssh/sftp-server": str(root / "usr/lib/openssh/sftp-server")}
    for guest, host in binaries.items():
        if not os.path.isfile(host):
            raise InfraError(f"the {arch.debian_arch} packages have no {guest} (under {root})")
    for guest in ("/usr/sbin/sshd", "/usr/lib/openssh/sftp-server"):
        binaries.update(_foreign_libraries(root, arch, guest))
    return binaries


def _build_locked(folder: Path, binaries: dict[str, str], force: bool) -> GuestImage:
    image = folder / "initramfs.cpio.gz"
    meta = folder / "image.json"
    if image.is_file() and meta.is_file() and not force:
        data = json.loads(meta.read_text())
        return GuestImage(image, folder / "client_key", data["host_key_fingerprint"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".image-", dir=folder.parent))
    try:
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",  # noqa: S603
                            f"hvlab-guest-{name}", "-f", str(tmp / name)], check=True)
        buf = io.BytesIO()
        cpio.write(buf, base_entries(binaries, tmp / "host_key", tmp / "client_key.pub"))
        (tmp / "initramfs.cpio.gz").write_bytes(gzip.compress(buf.getvalue(), 6, mtime=0))
        fp = _fingerprint(tmp / "host_key.pub")
        (tmp / "image.json").write_text(json.dumps({
            "format": IMAGE_FORMAT, "host_key_fingerprint": fp,
            "binaries": binaries}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GuestImage(image, folder / "client_key", fp)


def modules_from_tarball(tarball: Path) -> list[cpio.Entry]:
    """A build's modules.tar.gz (a modules_install tree) as cpio entries."""
    entries = []
    with tarfile.open(tarball) as tf:
        for m in tf:
            name = os.path.normpath(m.name).lstrip("./")
            if not name or name.startswith(".."):
                continue
            if m.isdir():
                entries.append(cpio.directory(name))
            elif m.issym():
                entries.append(cpio.symlink(name, m.linkname))
            elif m.isreg():
                fh = tf.extractfile(m)
                entries.append(cpio.file(name, fh.read() if fh else b"", 0o644))
    return entries


def modules_from_tree(root: Path, release: str, wanted: Iterable[str]) -> list[cpio.Entry]:
    """``wanted`` modules of an installed tree (/lib/modules/<release>) and their
    dependencies, resolved from modules.dep."""
    base = root / "lib" / "modules" / release
    dep_text = (base / "modules.dep").read_text()
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in dep_text.splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[Path(mod).name.split(".ko")[0].replace("-", "_")] = mod
    chosen: list[str] = []

    def visit(mod: str) -> None:
        if mod in chosen:
            return
        for d in deps.get(mod, []):
            visit(d)
        chosen.append(mod)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found:
            visit(found)
    prefix = f"lib/modules/{release}"
    entries = [cpio.directory("lib"), cpio.directory("lib/modules"), cpio.directory(prefix)]
    dirs: set[str] = set()
    for mod in chosen:
        parts = mod.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = f"{prefix}/{'/'.join(parts[:i])}"
            if d not in dirs:
                dirs.add(d)
                entries.append(cpio.directory(d))
        entries.append(cpio.file(f"{prefix}/{mod}", (base / mod).read_bytes()))
    for meta in ("modules.dep", "modules.alias", "modules.builtin", "modules.order",
                 "modules.builtin.modinfo", "modules.softdep", "modules.symbols"):
        if (base / meta).is_file():
            entries.append(cpio.file(f"{prefix}/{meta}", (base / meta).read_bytes()))
    return entries


def _tmp(target: Path) -> Path:
    """A temporary name beside ``target`` no other writer (process or thread) uses."""
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_modules_archive(entries: list[cpio.Entry], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(target)
    buf = io.BytesIO()
    cpio.write(buf, entries)
    tmp.write_bytes(gzip.compress(buf.getvalue(), 1, mtime=0))
    os.replace(tmp, target)
    return target


def write_modules_tarball(entries: list[cpio.Entry], target: Path) -> Path:
    """The same modules as a build's modules.tar.gz (for installing on a host)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(target)
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tf:
        for e in entries:
            if stat.S_ISDIR(e.mode) and e.path.strip("/") in ("lib", "lib/modules"):
                continue  # extracted at /, it would replace merged-/usr's /lib symlink
            info = tarfile.TarInfo(e.path)
            info.mode = e.mode & 0o7777
            if stat.S_ISDIR(e.mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif stat.S_ISLNK(e.mode):
                info.type, info.linkname = tarfile.SYMTYPE, e.data.decode()
                tf.addfile(info)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
    os.replace(tmp, target)
    return target


def combined_initrd(image: GuestImage, modules_archive: Path | None, target: Path) -> Path:
    """base + modules, concatenated: Linux unpacks them as one initramfs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        with image.path.open("rb") as base:
            shutil.copyfileobj(base, out)
        if modules_archive is not None:
            with modules_archive.open("rb") as mods:
                shutil.copyfileobj(mods, out)
    return target


