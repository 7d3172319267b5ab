"""The one-shot boot plan, read from real boot configurations (sources in
tests/data/bootloaders/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.errors import InfraError
from hvlab.hosts import bootloader as bl

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "bootloaders"
UBUNTU_UUID = "e8328184-226c-4e5e-9635-8142cc114051"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_ubuntu_entries_are_named_by_their_ids_and_recovery_is_left_out() -> None:
    entries = bl.grub_entries(text("ubuntu-grub.cfg"))
    normal = [e for e in entries if not e.recovery]
    assert {e.release for e in entries} == {"5.15.0-100-generic"}
    assert [e.path(entries) for e in normal] == [
        f"gnulinux-simple-{UBUNTU_UUID}",
        f"gnulinux-advanced-{UBUNTU_UUID}>gnulinux-5.15.0-100-generic-advanced-{UBUNTU_UUID}"]
    recovery = [e for e in entries if e.recovery]
    assert recovery[0].ids[-1].startswith("gnulinux-5.15.0-100-generic-recovery")
    assert bl.grub_default(text("ubuntu-grub.cfg")) == "0"


DEBIAN_UUID = "4e8246a0-575d-4eea-8b4a-768e3e9d965d"


def test_debian_12_with_hvlab_s_newer_kernel_first_falls_back_to_the_distro_kernel() -> None:
    """Debian's own grub.cfg once hvlab's build is installed: the build sorts
    first, so the saved default is pinned to Debian's kernel by its submenu
    path, and the build is booted once by its own entry's path."""
    cfg = text("debian12-grub.cfg")
    entries = bl.grub_entries(cfg)
    normal = [e for e in entries if not e.recovery]
    advanced = f"gnulinux-advanced-{DEBIAN_UUID}"
    assert [e.path(entries) for e in normal] == [
        f"gnulinux-simple-{DEBIAN_UUID}",
        f"{advanced}>gnulinux-6.1.192+-advanced-{DEBIAN_UUID}",
        f"{advanced}>gnulinux-6.1.0-50-amd64-advanced-{DEBIAN_UUID}"]
    assert normal[0].release == "6.1.192+"  # the top entry boots the newest: hvlab's
    assert bl.grub_default(cfg) == "${saved_entry}"
    plan = bl.grub_oneshot(cfg, "6.1.192+", {"6.1.192+"}, "/boot/grub/grub.cfg")
    assert plan.arm == ("grub-reboot", f"{advanced}>gnulinux-6.1.192+-advanced-{DEBIAN_UUID}")
    assert plan.fallback == "6.1.0-50-amd64"
    # what the recorded run's grub-editenv list showed after hvlab pinned it
    assert plan.pin == ("grub-set-default",
                        f"{advanced}>gnulinux-6.1.0-50-amd64-advanced-{DEBIAN_UUID}")


def test_a_separate_boot_partition_names_the_kernel_without_boot() -> None:
    entries = bl.grub_entries(text("ubuntu-grub-separate-boot.cfg"))
    assert entries[0].kernel == "/vmlinuz-5.15.0-100-generic"
    assert entries[0].release == "5.15.0-100-generic"


def test_a_default_that_would_boot_the_tested_kernel_is_refused_with_the_fix() -> None:
    # GRUB_DEFAULT=0 and the tested kernel is the newest: after a hang and a hard
    # reset the machine would boot it again, so there would be no fallback
    with pytest.raises(InfraError, match="GRUB_DEFAULT=saved") as exc:
        bl.grub_oneshot(text("ubuntu-grub.cfg"), "5.15.0-100-generic", set(), "/boot/grub/grub.cfg")
    assert "boots 5.15.0-100-generic" in str(exc.value)


def test_a_release_without_an_entry_is_named() -> None:
    with pytest.raises(InfraError, match="no entry for 6.1.99"):
        bl.grub_oneshot(text("ubuntu-grub.cfg"), "6.1.99", set(), "/boot/grub/grub.cfg")


def test_centos7_shares_one_id_between_kernels_so_titles_are_used_and_saved_is_pinned() -> None:
    cfg = text("centos7-grub.cfg")
    assert bl.grub_default(cfg) == "${saved_entry}"
    tested = "3.10.0-514.26.2.el7.x86_64"  # as if hvlab had installed the newer one
    plan = bl.grub_oneshot(cfg, tested, {tested}, "/boot/grub2/grub.cfg",
                           "grub2-reboot", "grub2-set-default")
    assert plan.arm == ("grub2-reboot", f"CentOS Linux ({tested}) 7 (Core)")
    assert plan.fallback == "3.10.0-514.el7.x86_64"
    assert plan.pin == ("grub2-set-default", "CentOS Linux (3.10.0-514.el7.x86_64) 7 (Core)")


def test_azure_linux_ids_with_device_paths_are_kept_whole() -> None:
    entries = bl.grub_entries(text("azurelinux3-grub.cfg"))
    normal = [e for e in entries if not e.recovery]
    assert [e.path(entries) for e in normal] == ["gnulinux-6.6.85.1-2.azl3-advanced-/dev/sdb2"]
    assert bl.grub_entries(text("azurelinux3-esp-grub.cfg")) == []  # a stub: no kernels


def test_a_grub_cfg_without_next_entry_cannot_boot_once() -> None:
    with pytest.raises(InfraError, match="no next_entry logic"):
        bl.grub_oneshot(text("azurelinux3-esp-grub.cfg"), "6.6.85.1-2.azl3", set(), "esp.cfg")


def bls_entries() -> dict[str, str]:
    return {p.name: p.read_text() for p in (DATA / "fedora-bls").glob("*.conf")}


def test_rhel_bls_default_that_is_hvlab_s_kernel_is_pinned_back_to_the_distro() -> None:
    saved = bl.grubenv(text("fedora-bls/grubenv"))["saved_entry"]
    tested = "4.18.0-240.15.1.el8_3.x86_64"
    assert saved.endswith(tested)
    plan = bl.bls_oneshot(bls_entries(), tested, {tested}, "grub-bls", "/boot/loader/entries",
                          saved_entry=saved)
    assert plan.arm == ("grub2-reboot", f"b486fe3f109f430d995b1ee093897980-{tested}")
    assert plan.fallback == "4.18.0-240.1.1.el8_3.x86_64"  # never the rescue entry
    assert plan.pin == ("grub2-set-default",
                        "d8aff414dbe6429cbe36b52011441ef4-4.18.0-240.1.1.el8_3.x86_64")


def test_rhel_bls_saved_distro_default_is_left_alone() -> None:
    saved = bl.grubenv(text("fedora-bls/grubenv"))["saved_entry"]
    plan = bl.bls_oneshot(bls_entries(), "4.18.0-240.1.1.el8_3.x86_64", set(), "grub-bls",
                          "/boot/loader/entries", saved_entry=saved)
    assert plan.fallback == "4.18.0-240.15.1.el8_3.x86_64"
    assert plan.pin == ()


def test_systemd_boot_entries_name_the_release_by_version() -> None:
    entries = {p.name: p.read_text() for p in (DATA / "systemd-boot").glob("*.conf")}
    fields = bl.bls_fields(next(iter(entries.values())))
    assert fields["version"] == "6.14.9-300.fc42.x86_64"
    assert fields["linux"].endswith("/linux")
    # its only kernel is the tested one: nothing to fall back to
    with pytest.raises(InfraError, match="no kernel hvlab did not install"):
        bl.bls_oneshot(entries, "6.14.9-300.fc42.x86_64", set(), "systemd-boot", "/efi/loader")
    with pytest.raises(InfraError, match="no entry for 6.1.1"):
        bl.bls_oneshot(entries, "6.1.1", set(), "systemd-boot", "/efi/loader")


def test_broken_grub_cfg_text_does_not_crash_the_reader() -> None:
    assert bl.grub_entries("menuentry 'x' {\n linux /vmlinuz-1\n") == []
    assert bl.grub_entries("}\n}\nmenuentry 'unterminated {\n") == []
