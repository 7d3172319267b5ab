"""Where a machine's boot loader boots a kernel once: pure readers of the
machine's own boot configuration, no I/O.

- GRUB with a generated ``grub.cfg`` (Debian, Ubuntu, older RHEL): the entry
  is found by the kernel its ``linux`` line loads, and named by its
  menuentry ids (``submenu-id>entry-id``), which ``grub-reboot`` takes and
  which do not change with the language of the titles; titles when the
  entries carry no id.  A one-shot entry needs grub.cfg's ``next_entry``
  logic (Debian's ``00_header`` writes it whatever ``GRUB_DEFAULT`` is).
- GRUB with Boot Loader Specification entries (Fedora, RHEL 8+, Azure
  Linux): ``/boot/loader/entries/<id>.conf``; ``grub2-reboot <id>``.
- systemd-boot: the same entry files; ``bootctl set-oneshot <id>.conf``.

The fallback matters as much as the one-shot: after a hang and a hard reset
the machine must come back on a kernel hvlab did not install.  A generated
grub.cfg lists the newest kernel first, so a test kernel that sorts above
the distro's becomes the default; with ``GRUB_DEFAULT=saved`` hvlab pins the
saved entry to the distro kernel, otherwise it refuses, saying so.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from hvlab.errors import InfraError


@dataclass(frozen=True)
class GrubEntry:
    ids: tuple[str, ...]  # menuentry ids from the top level down ("" where none)
    titles: tuple[str, ...]
    kernel: str  # the path its linux line loads
    release: str  # from vmlinuz-<release> ("" when the image is named otherwise)
    recovery: bool

    def path(self, others: Collection[GrubEntry] = ()) -> str:
        """What grub-reboot and grub-set-default take: ids when every level has
        one and no other entry shares them (CentOS 7's grub.cfg gives every
        kernel the same id), else titles."""
        ids = ">".join(self.ids)
        if all(self.ids) and not any(o.ids == self.ids and o.kernel != self.kernel
                                     for o in others):
            return ids
        return ">".join(self.titles)


@dataclass(frozen=True)
class OneShot:
    """How to boot ``release`` once on a machine, and keep its fallback."""

    loader: str  # grub | grub-bls | systemd-boot
    entry: str  # the one-shot entry (id path, BLS id or entry file)
    arm: tuple[str, ...]  # the command that arms the one-shot boot
    fallback: str  # the kernel a hard reset comes back on
    pin: tuple[str, ...] = ()  # a command that keeps that fallback the default


def _block_opener(line: str) -> tuple[str, list[str]] | None:
    stripped = line.strip()
    if not stripped.endswith("{"):
        return None
    try:
        words = shlex.split(stripped[:-1], comments=False, posix=True)
    except ValueError:
        return None
    if not words:
        return None
    return words[0], words[1:]


def _entry_id(args: list[str]) -> str:
    for i, word in enumerate(args):
        if word in ("$menuentry_id_option", "--id") and i + 1 < len(args):
            return args[i + 1]
        if word.startswith("--id="):
            return word.removeprefix("--id=")
    return ""


KERNEL_LINE = re.compile(r"^\s*(linux|linux16|linuxefi)\s+(\S+)(.*)$")


def grub_entries(cfg: str) -> list[GrubEntry]:
    """Every menuentry of a generated grub.cfg that boots a Linux kernel, in order."""
    stack: list[tuple[str, str, str]] = []  # (kind, id, title) of the open blocks
    current: dict[str, str] = {}
    found: list[GrubEntry] = []
    for line in cfg.splitlines():
        opened = _block_opener(line)
        if opened is not None:
            kind, args = opened
            title = args[0] if kind in ("menuentry", "submenu") and args else ""
            stack.append((kind, _entry_id(args) if title else "", title))
            if kind == "menuentry":
                current = {}
            continue
        if line.strip() == "}":
            if stack:
                kind, _, _ = stack.pop()
                if kind == "menuentry" and current.get("kernel"):
                    menus = [s for s in [*stack, (kind, current["id"], current["title"])]
                             if s[0] in ("menuentry", "submenu")]
                    image = current["kernel"].rsplit("/", 1)[-1]
                    found.append(GrubEntry(
                        tuple(s[1] for s in menus), tuple(s[2] for s in menus),
                        current["kernel"],
                        image.removeprefix("vmlinuz-") if image.startswith("vmlinuz-") else "",
                        "recovery mode" in current["title"]
                        or any(w in current["args"].split() for w in ("single", "recovery"))))
                current = {}
            continue
        m = KERNEL_LINE.match(line)
        if m and stack and stack[-1][0] == "menuentry" and "kernel" not in current:
            kind, ident, title = stack[-1]
            current = {"kernel": m.group(2), "args": m.group(3), "id": ident, "title": title}
    return found


def grub_default(cfg: str) -> str:
    """What grub.cfg sets ``default`` to outside the one-shot branch: a literal
    (index, id or title path) or ``${saved_entry}``."""
    values = re.findall(r'^\s*set default="([^"]*)"', cfg, re.M)
    plain = [v for v in values if v not in ("${next_entry}", "${GRUB_DEFAULT_BUTTON}")]
    return plain[-1] if plain else "0"


def _resolve(default: str, entries: list[GrubEntry], cfg: str) -> GrubEntry | None:
    """The entry a literal default names (index path, id path or title path)."""
    if default.isdigit():
        top = _top_level(cfg)
        index = int(default)
        if index < len(top) and top[index][0] == "menuentry":
            title = top[index][1]
            return next((e for e in entries if len(e.titles) == 1 and e.titles[0] == title),
                        None)
        return None
    return next((e for e in entries if default in (">".join(e.titles), ">".join(e.ids))),
                None)


def _top_level(cfg: str) -> list[tuple[str, str]]:
    depth = 0
    top: list[tuple[str, str]] = []
    for line in cfg.splitlines():
        opened = _block_opener(line)
        if opened is not None:
            kind, args = opened
            if depth == 0 and kind in ("menuentry", "submenu"):
                top.append((kind, args[0] if args else ""))
            depth += 1
        elif line.strip() == "}":
            depth = max(0, depth - 1)
    return top


def grub_oneshot(cfg: str, release: str, hvlab_releases: Collection[str], cfg_path: str,
                 reboot_tool: str = "grub-reboot",
                 set_default_tool: str = "grub-set-default") -> OneShot:
    """The one-shot plan for a generated grub.cfg (``cfg_path`` names it in errors)."""
    if "next_entry" not in cfg:
        raise InfraError(f"{cfg_path} has no next_entry logic: {reboot_tool} cannot boot a "
                         "kernel once there (regenerate it with the distro's grub-mkconfig)")
    entries = [e for e in grub_entries(cfg) if not e.recovery]
    mine = [e for e in entries if e.release == release]
    if not mine:
        raise InfraError(f"{cfg_path} has no entry for {release} after regenerating it "
                         "(is /boot on the partition grub reads?)")
    # the entry naming its release explicitly (in a submenu), not the top-level alias
    target = next((e for e in mine if len(e.ids) > 1), mine[0])
    distro = [e for e in entries if e.release and e.release != release
              and e.release not in hvlab_releases]
    default = grub_default(cfg)
    if default == "${saved_entry}":
        if not distro:
            raise InfraError(f"{cfg_path}: no kernel hvlab did not install to fall back to")
        back = next((e for e in distro if len(e.ids) > 1), distro[0])
        return OneShot("grub", target.path(entries), (reboot_tool, target.path(entries)),
                       back.release, (set_default_tool, back.path(entries)))
    chosen = _resolve(default, entries, cfg)
    if chosen is None or chosen.release == release or chosen.release in hvlab_releases:
        boots = chosen.release if chosen else "an entry hvlab cannot read"
        raise InfraError(
            f"{cfg_path}: the default entry ({default!r}) boots {boots}, so a hang would not "
            "fall back to a known-good kernel: set GRUB_DEFAULT=saved in /etc/default/grub "
            "(hvlab then keeps the saved entry on the distro kernel)")
    return OneShot("grub", target.path(entries), (reboot_tool, target.path(entries)),
                   chosen.release)


def bls_fields(text: str) -> dict[str, str]:
    """One Boot Loader Specification entry file: ``key value`` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        out.setdefault(key, value.strip())
    return out


def bls_release(fields: Mapping[str, str]) -> str:
    image = fields.get("linux", "").rsplit("/", 1)[-1]
    if image.startswith("vmlinuz-"):
        return image.removeprefix("vmlinuz-")
    return fields.get("version", "")


def grubenv(text: str) -> dict[str, str]:
    """grub's environment block (``grub-editenv list`` or the file itself)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key] = value
    return out


def bls_oneshot(entries: Mapping[str, str], release: str, hvlab_releases: Collection[str],
                loader: str, where: str, saved_entry: str = "",
                reboot_tool: str = "grub2-reboot",
                set_default_tool: str = "grub2-set-default") -> OneShot:
    """The one-shot plan for BLS entries (``entries``: file name -> text), for grub
    (``loader`` "grub-bls", whose default is grubenv's ``saved_entry``) or
    systemd-boot ("systemd-boot")."""
    parsed = {name.removesuffix(".conf"): bls_fields(text) for name, text in entries.items()
              if name.endswith(".conf")}
    mine = sorted(n for n, f in parsed.items() if bls_release(f) == release)
    if not mine:
        raise InfraError(f"{where} has no entry for {release} (kernel-install or grubby "
                         "did not add one)")
    ours = {release, *hvlab_releases}
    usable = {n: bls_release(f) for n, f in parsed.items()
              if bls_release(f) and bls_release(f) not in ours
              and "rescue" not in bls_release(f)}
    if not usable:
        raise InfraError(f"{where}: no kernel hvlab did not install to fall back to")
    ident = mine[0]
    if loader == "systemd-boot":
        return OneShot(loader, f"{ident}.conf", ("bootctl", "set-oneshot", f"{ident}.conf"),
                       usable[max(usable)])
    if saved_entry in usable:
        return OneShot(loader, ident, (reboot_tool, ident), usable[saved_entry])
    # the default is ours (grubby's UPDATEDEFAULT) or unknown: pin a distro kernel
    back = max(usable)
    return OneShot(loader, ident, (reboot_tool, ident), usable[back], (set_default_tool, back))
