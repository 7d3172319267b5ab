"""The machine side of a one-shot boot, on a fake machine that answers with
recorded real boot configurations (tests/data/bootloaders/SOURCES.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hvlab.errors import InfraError
from hvlab.hosts import loaders
from hvlab.ssh import RemoteResult

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "bootloaders"


class Machine:
    """Answers commands from ``files`` (cat), ``tools`` (command -v) and
    ``answers`` (argv prefix -> output); records what ran."""

    name = "m"

    def __init__(self, files: dict[str, str], tools: set[str],
                 answers: dict[tuple[str, ...], str | Callable[[], str]] | None = None) -> None:
        self.files, self.tools, self.answers = files, tools, answers or {}
        self.ran: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], timeout: float | None = None, log: Path | None = None,
            **_: object) -> RemoteResult:
        argv = tuple(argv)
        self.ran.append(argv)
        ok, out = True, ""
        if argv[:2] == ("sh", "-c") and argv[2].startswith('command -v'):
            ok = argv[4] in self.tools
        elif argv[:2] == ("sh", "-c"):
            out = self._answer(("sh", "-c"))
        elif argv[0] == "test":
            ok = argv[2] in self.files
        elif argv[0] == "cat":
            ok, out = argv[1] in self.files, self.files.get(argv[1], "")
        else:
            found = next((k for k in self.answers if argv[:len(k)] == k), None)
            ok = found is not None
            out = self._answer(found) if found else "not found"
        return RemoteResult(argv, 0 if ok else 1, 0.0, out, "")

    def _answer(self, key: tuple[str, ...]) -> str:
        value = self.answers.get(key, "")
        return value() if callable(value) else value

    def check(self, argv: Sequence[str], timeout: float | None = 300,
              log: Path | None = None) -> str:
        result = self.run(argv, timeout, log)
        if not result.ok:
            raise InfraError(f"host m: '{' '.join(argv)}' failed")
        return result.output


def bls_listing(folder: Path) -> str:
    return "".join(f"==> /boot/loader/entries/{p.name} <==\n{p.read_text()}"
                   for p in sorted(folder.glob("*.conf")))


def test_centos7_regenerates_with_grub2_mkconfig_and_pins_the_distro_kernel(tmp_path: Path) -> None:
    cfg = (DATA / "centos7-grub.cfg").read_text()
    tested = "3.10.0-514.26.2.el7.x86_64"
    machine = Machine({"/boot/grub2/grub.cfg": cfg},
                      {"grub2-reboot", "grub2-set-default", "grub2-mkconfig"},
                      {("grub2-mkconfig",): "", ("grub2-set-default",): ""})
    plan = loaders.prepare(machine, "m", tested, None, {tested}, tmp_path / "log")  # type: ignore[arg-type]
    assert ("grub2-mkconfig", "-o", "/boot/grub2/grub.cfg") in machine.ran
    assert machine.ran[-1] == ("grub2-set-default", "CentOS Linux (3.10.0-514.el7.x86_64) 7 (Core)")
    assert plan.arm == ("grub2-reboot", f"CentOS Linux ({tested}) 7 (Core)")


def test_rhel_bls_arms_the_entry_and_reads_the_default_from_grubenv(tmp_path: Path) -> None:
    machine = Machine({"/boot/grub2/grub.cfg": (DATA / "fedora-bls/grub.cfg").read_text()},
                      {"grub2-reboot", "grub2-set-default", "grub2-editenv", "grubby"},
                      {("sh", "-c"): bls_listing(DATA / "fedora-bls"),
                       ("grub2-editenv", "list"): (DATA / "fedora-bls/grubenv").read_text()})
    plan = loaders.prepare(machine, "m", "4.18.0-240.1.1.el8_3.x86_64", None, set(),  # type: ignore[arg-type]
                           tmp_path / "log")
    assert plan.loader == "grub-bls" and plan.pin == ()
    assert plan.arm == ("grub2-reboot",
                        "d8aff414dbe6429cbe36b52011441ef4-4.18.0-240.1.1.el8_3.x86_64")
    assert not [a for a in machine.ran if a[0] in ("grubby", "grub2-mkconfig")]  # entry there


def test_bls_without_an_entry_for_the_build_adds_one_with_grubby(tmp_path: Path) -> None:
    entries = {"listing": bls_listing(DATA / "fedora-bls")}
    release = "6.1.192+"

    def add(argv: object = None) -> str:
        entries["listing"] += (f"==> /boot/loader/entries/x-{release}.conf <==\n"
                               f"title hvlab {release}\nversion {release}\n"
                               f"linux /boot/vmlinuz-{release}\n")
        return ""

    machine = Machine({"/boot/grub2/grub.cfg": (DATA / "fedora-bls/grub.cfg").read_text()},
                      {"grub2-reboot", "grub2-set-default", "grub2-editenv", "grubby"},
                      {("sh", "-c"): lambda: entries["listing"], ("grubby",): add,
                       ("grub2-editenv", "list"): (DATA / "fedora-bls/grubenv").read_text()})
    plan = loaders.prepare(machine, "m", release, "/boot/initramfs-6.1.192+.img",  # type: ignore[arg-type]
                           set(), tmp_path / "log")
    grubby = next(a for a in machine.ran if a[0] == "grubby")
    assert "--add-kernel=/boot/vmlinuz-6.1.192+" in grubby
    assert "--initrd=/boot/initramfs-6.1.192+.img" in grubby
    assert plan.arm == ("grub2-reboot", f"x-{release}")


def test_a_machine_without_a_known_boot_loader_is_an_infrastructure_error(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="no boot loader hvlab can boot a kernel once with"):
        loaders.prepare(Machine({}, set()), "m", "6.1.1", None, set(), tmp_path / "log")  # type: ignore[arg-type]


def test_systemd_boot_gets_an_entry_from_kernel_install_and_a_oneshot(tmp_path: Path) -> None:
    folder = DATA / "systemd-boot"
    entries = {"listing": bls_listing(folder)}
    release = "6.1.192+"

    def kernel_install() -> str:  # what 90-loaderentry.install adds
        entries["listing"] += (f"==> /efi/loader/entries/87ceb4a1-{release}.conf <==\n"
                               f"title Fedora Linux 42\nversion {release}\n"
                               f"linux /87ceb4a1/{release}/linux\n")
        return ""

    machine = Machine({}, {"bootctl", "kernel-install"},
                      {("bootctl", "is-installed"): "yes", ("kernel-install",): kernel_install,
                       ("sh", "-c"): lambda: entries["listing"]})
    plan = loaders.prepare(machine, "m", release, "/boot/initrd.img-6.1.192+", set(),  # type: ignore[arg-type]
                           tmp_path / "log")
    assert ("kernel-install", "add", release, f"/boot/vmlinuz-{release}",
            "/boot/initrd.img-6.1.192+") in machine.ran
    assert plan.loader == "systemd-boot"
    assert plan.arm == ("bootctl", "set-oneshot", f"87ceb4a1-{release}.conf")
    assert plan.fallback == "6.14.9-300.fc42.x86_64"
