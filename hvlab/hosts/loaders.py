"""The machine side of a one-shot boot: find the boot loader a machine
uses, give it an entry for the installed kernel with the distro's own tool,
read its configuration back and plan from it (``hvlab.hosts.bootloader``),
keep the fallback on a distro kernel.  Only constant scripts and argument
lists reach the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from hvlab.errors import InfraError
from hvlab.hosts import bootloader
from hvlab.hosts.bootloader import OneShot
from hvlab.hosts.sessions import has_tool
from hvlab.ssh import SshSession

GRUB_CFGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
BLS_DIRS = ("/boot/loader/entries", "/efi/loader/entries", "/boot/efi/loader/entries")
# Prints every BLS entry as "==> path <==" and its text (tail's own headers).
_LIST_ENTRIES = ("for d in " + " ".join(BLS_DIRS) + "; do "
                 "for f in \"$d\"/*.conf; do [ -f \"$f\" ] && echo \"==> $f <==\" && cat \"$f\"; "
                 "done; done; true")


def _first(session: SshSession, *tools: str) -> str | None:
    return next((t for t in tools if has_tool(session, t)), None)


def _read(session: SshSession, path: str) -> str:
    return session.check(["cat", path], timeout=60)


def _entries(session: SshSession) -> dict[str, str]:
    out = session.run(["sh", "-c", _LIST_ENTRIES], timeout=60).output
    found: dict[str, str] = {}
    name = ""
    for line in out.splitlines():
        m = re.fullmatch(r"==> (.+) <==", line)
        if m:
            name = m.group(1).rsplit("/", 1)[-1]
            found[name] = ""
        elif name:
            found[name] += line + "\n"
    return found


def prepare(session: SshSession, host: str, release: str, initrd: str | None,
            hvlab_releases: set[str], log: Path) -> OneShot:
    """An entry for ``release`` on the machine's boot loader, and the plan to
    boot it once; the fallback is pinned when the loader would not keep it."""
    name = f"host {host}"
    image = f"/boot/vmlinuz-{release}"
    if has_tool(session, "bootctl") and session.run(["bootctl", "is-installed"], timeout=30).ok:
        argv = ["kernel-install", "add", release, image, *([initrd] if initrd else [])]
        session.check(argv, timeout=600, log=log)
        plan = bootloader.bls_oneshot(_entries(session), release, hvlab_releases,
                                      "systemd-boot", f"{name}: the systemd-boot entries")
    else:
        cfg_path = next((p for p in GRUB_CFGS
                         if session.run(["test", "-f", p], timeout=30).ok), None)
        if cfg_path is None:
            raise InfraError(f"{name}: no boot loader hvlab can boot a kernel once with "
                             f"(no {' or '.join(GRUB_CFGS)}, no systemd-boot)")
        reboot = _first(session, "grub-reboot", "grub2-reboot")
        set_default = _first(session, "grub-set-default", "grub2-set-default")
        if reboot is None or set_default is None:
            raise InfraError(f"{name}: {cfg_path} is there but grub-reboot/grub2-reboot is not")
        if "blscfg" in _read(session, cfg_path):
            plan = _bls(session, name, release, image, initrd, hvlab_releases, reboot,
                        set_default, log)
        else:
            mkconfig = _first(session, "update-grub", "grub2-mkconfig", "grub-mkconfig")
            if mkconfig is None:
                raise InfraError(f"{name}: nothing regenerates {cfg_path} (no update-grub or "
                                 "grub-mkconfig)")
            argv = [mkconfig] if mkconfig == "update-grub" else [mkconfig, "-o", cfg_path]
            session.check(argv, timeout=600, log=log)
            plan = bootloader.grub_oneshot(_read(session, cfg_path), release, hvlab_releases,
                                           f"{name}: {cfg_path}", reboot, set_default)
    if plan.pin:
        session.check(list(plan.pin), timeout=60, log=log)
    return plan


def _bls(session: SshSession, name: str, release: str, image: str, initrd: str | None,
         hvlab_releases: set[str], reboot: str, set_default: str, log: Path) -> OneShot:
    entries = _entries(session)
    if not any(bootloader.bls_release(bootloader.bls_fields(t)) == release
               for t in entries.values()):
        if not has_tool(session, "grubby"):
            raise InfraError(f"{name}: BLS entries but no grubby to add one for {release}")
        argv = ["grubby", f"--add-kernel={image}", f"--title=hvlab {release}",
                "--copy-default", *([f"--initrd={initrd}"] if initrd else [])]
        session.check(argv, timeout=120, log=log)
        entries = _entries(session)
    editenv = _first(session, "grub2-editenv", "grub-editenv")
    env = session.run([editenv, "list"], timeout=30).output if editenv else ""
    return bootloader.bls_oneshot(entries, release, hvlab_releases, "grub-bls",
                                  f"{name}: the BLS entries",
                                  bootloader.grubenv(env).get("saved_entry", ""),
                                  reboot, set_default)
