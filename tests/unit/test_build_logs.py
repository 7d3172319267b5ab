"""The compiler-diagnostics parser on real kernel build logs, one test per log.

Each log in ``tests/data/buildlogs`` is the recorded, unedited output of make
building the Debian linux-source-6.1 tree (6.1.192) with gcc 12.2 for one
failure scenario; that folder's README gives the command and the edit.  As
kunit_tool and tuxmake do, each test is named by the scenario it replays.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvlab.build import diagnostics as buildlog

pytestmark = pytest.mark.unit

LOGS = Path(__file__).resolve().parents[1] / "data" / "buildlogs"
TREE = "/tmp/linux-rec/linux-source-6.1"  # where the logs were recorded
BUILD = "/tmp/linux-rec/build"
# what stage.make_step strips: the tree, the build dir, the tree seen from the build dir
PREFIXES = [TREE, BUILD, os.path.relpath(TREE, BUILD)]


def read_log(name: str) -> list[str]:
    """The log's lines as hvlab's build stage gets them: UTF-8, errors replaced."""
    return (LOGS / name).read_bytes().decode("utf-8", "replace").splitlines()


def reported_errors(lines: list[str]) -> list[str]:
    """The first errors stage.make_step reports for a failed make: each compiler
    error once, or else make's own error lines."""
    diags = buildlog.parse(lines, PREFIXES)
    errors = [d.describe() for d in buildlog.unique(diags) if d.kind == "error"]
    return errors or buildlog.make_errors(lines)[:5]


UNDECLARED = ("drivers/hv/hv_util.c", 788, "error",
              "'hvlab_undeclared' undeclared (first use in this function)", "",
              "init_hyperv_utils")
NO_RETURN = ("drivers/hv/hv_util.c", 789, "error", "control reaches end of non-void function",
             "-Werror=return-type", "init_hyperv_utils")
NO_MEMBER = ("drivers/hv/hv_balloon.c", 2115, "error",
             "'struct hv_driver' has no member named 'hvlab_no_such_member'", "",
             "init_balloon_drv")


def fields(d: buildlog.Diagnostic) -> tuple[str, int, str, str, str, str]:
    return (d.file, d.line, d.kind, d.message, d.flag, d.function)


def test_compile_error_names_file_line_and_message() -> None:
    lines = read_log("compile-error.log")
    diags = buildlog.parse(lines, PREFIXES)
    # gcc's note and "cc1: some warnings being treated as errors" are not diagnostics
    assert [fields(d) for d in diags] == [UNDECLARED, NO_RETURN]
    assert reported_errors(lines) == [
        "drivers/hv/hv_util.c:788: 'hvlab_undeclared' undeclared (first use in this function)"
        " (in init_hyperv_utils)",
        "drivers/hv/hv_util.c:789: control reaches end of non-void function"
        " [-Werror=return-type] (in init_hyperv_utils)",
    ]
    assert buildlog.compiled_units(lines) == {"drivers/hv/hv_util.c"}


def test_modpost_undefined_symbol_is_an_error_naming_symbol_and_module() -> None:
    lines = read_log("modpost-undefined.log")
    assert ('ERROR: modpost: "hvlab_no_such_symbol" [drivers/hv/hv_utils.ko] undefined!'
            in lines)
    errors = reported_errors(lines)
    assert errors == ["drivers/hv/hv_utils.ko: undefined symbol 'hvlab_no_such_symbol' "
                      "(modpost)"], errors


def test_link_error_names_the_undefined_symbol() -> None:
    lines = read_log("link-error.log")
    assert ("vmbus_drv.c:(.init.text+0x15): undefined reference to `hvlab_no_such_symbol'"
            in lines)
    errors = reported_errors(lines)
    assert errors == ["drivers/hv/vmbus_drv.c: undefined reference to 'hvlab_no_such_symbol' "
                      "(link) (in hv_acpi_init)"], errors


def test_make_cascade_reports_each_real_error_once() -> None:
    lines = read_log("make-cascade.log")
    diags = buildlog.parse(lines, PREFIXES)
    # the compiler's errors only: make's "Error 1"/"Error 2" lines and -k's
    # "Target ... not remade" lines are not diagnostics
    assert [fields(d) for d in diags] == [UNDECLARED, NO_RETURN, NO_MEMBER]
    assert reported_errors(lines) == [d.describe() for d in diags]
    # make's own lines stay apart, for a build that fails without a compiler error
    make_lines = buildlog.make_errors(lines)
    assert [m for m in make_lines if m.endswith("Error 1")] == [
        f"[{TREE}/scripts/Makefile.build:255: drivers/hv/hv_util.o] Error 1",
        f"[{TREE}/scripts/Makefile.build:255: drivers/hv/hv_balloon.o] Error 1",
    ]
    assert make_lines[-1] == "[Makefile:250: __sub-make] Error 2"
    # the build dir's state: both units compiled, their errors under their files
    compiled = buildlog.compiled_units(lines)
    assert compiled == {"drivers/hv/vmbus_drv.c", "drivers/hv/hv_util.c",
                        "drivers/hv/hv_balloon.c"}
    state = buildlog.update_state({}, compiled, diags)
    assert [fields(d) for d in buildlog.flatten(state)] == [NO_MEMBER, UNDECLARED, NO_RETURN]


def test_non_utf8_output_is_parsed_and_the_warning_found() -> None:
    path = LOGS / "non-utf8.log"
    raw = path.read_bytes()
    assert b'#warning "hvlab caf\xe9 latin-1 byte"' in raw  # recorded byte for byte
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    diags = buildlog.parse(read_log("non-utf8.log"), PREFIXES)
    assert [fields(d) for d in diags] == [
        ("drivers/hv/hv_util.c", 24, "warning", '#warning "hvlab caf\ufffd latin-1 byte"',
         "-Wcpp", ""),
    ]
    # and read the way stage.make_step opens the log (text mode, locale encoding)
    with path.open(errors="replace") as fh:
        (d,) = buildlog.parse(fh.read().splitlines(), PREFIXES)
    assert (d.file, d.line, d.kind, d.flag) == ("drivers/hv/hv_util.c", 24, "warning", "-Wcpp")
    assert buildlog.make_errors(read_log("non-utf8.log")) == []


def test_clean_build_has_no_errors() -> None:
    lines = read_log("clean-build.log")
    # a complete, successful build: modules and the bzImage
    assert "  MODPOST Module.symvers" in lines
    assert "Kernel: arch/x86/boot/bzImage is ready  (#1)" in lines
    diags = buildlog.parse(lines, PREFIXES)
    assert [d for d in diags if d.kind == "error"] == []
    assert diags == []  # this config builds without a single warning, too
    assert buildlog.make_errors(lines) == []
    assert {"drivers/hv/vmbus_drv.c", "drivers/hv/hv_util.c",
            "drivers/hv/hv_balloon.c"} <= buildlog.compiled_units(lines)
