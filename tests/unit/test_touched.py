"""Which directories a build-only cell compiles for a series: pure."""

from __future__ import annotations

import pytest

from hvlab.build.touched import touched_dirs

pytestmark = pytest.mark.unit


def test_the_directories_of_the_series_c_files_on_this_arch() -> None:
    files = ["drivers/hv/vmbus_drv.c", "drivers/hv/hyperv_vmbus.h",
             "drivers/net/hyperv/netvsc.c", "drivers/net/hyperv/Makefile",
             "arch/x86/hyperv/hv_init.c", "Documentation/virt/hyperv/vmbus.rst",
             "MAINTAINERS", "tools/hv/hv_kvp_daemon.c"]
    assert touched_dirs(files, "x86") == ("arch/x86/hyperv/", "drivers/hv/",
                                          "drivers/net/hyperv/")
    # arch/x86 is not compiled on arm64
    assert touched_dirs(files, "arm64") == ("drivers/hv/", "drivers/net/hyperv/")


def test_what_every_build_reads_asks_for_the_whole_build() -> None:
    assert touched_dirs(["include/linux/hyperv.h"], "x86") is None  # users everywhere
    assert touched_dirs(["scripts/Makefile.build", "drivers/hv/vmbus_drv.c"], "x86") is None
    assert touched_dirs(["Makefile"], "x86") is None
    assert touched_dirs(["arch/arm64/boot/dts/x.dts"], "arm64") is None
    # a shared header has users the series does not touch (netvsc, storvsc, ...)
    assert touched_dirs(["include/linux/hyperv.h", "drivers/hv/channel.c"], "x86") is None
    assert touched_dirs(["arch/x86/include/asm/mshyperv.h", "arch/x86/hyperv/hv_init.c"],
                        "x86") is None
    # the arch's own Makefile sets flags for every object; arch/Kconfig has no Makefile
    assert touched_dirs(["arch/x86/Makefile"], "x86") is None
    assert touched_dirs(["arch/Kconfig"], "x86") is None
    assert touched_dirs(["arch/arm64/Makefile"], "x86") == ()  # not this arch's


def test_a_header_beside_the_c_files_of_the_series_is_compiled_through_them() -> None:
    assert touched_dirs(["drivers/hv/hyperv_vmbus.h", "drivers/hv/channel.c"], "x86") == \
        ("drivers/hv/",)
    assert touched_dirs(["drivers/hv/hyperv_vmbus.h"], "x86") is None


def test_a_directory_kbuild_cannot_enter_is_built_from_its_parent() -> None:
    kbuild = {"drivers", "drivers/hv"}.__contains__
    assert touched_dirs(["drivers/hv/Kconfig.extra"], "x86", kbuild) == ("drivers/hv/",)
    assert touched_dirs(["drivers/hv/sub/x.c"], "x86", kbuild) == ("drivers/hv/",)
    assert touched_dirs(["virt/Kconfig"], "x86", kbuild) is None  # only the top has one


def test_a_series_of_nothing_compiled_builds_no_directory() -> None:
    assert touched_dirs(["Documentation/ABI/stable/sysfs-bus-vmbus", "MAINTAINERS"],
                        "x86") == ()
    assert touched_dirs(["arch/x86/hyperv/hv_init.c"], "arm64") == ()
