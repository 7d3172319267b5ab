"""Build logic without make: log parsing, Kconfig verification, cache keys, ccache stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.build import diagnostics as buildlog
from hvlab.build import kconfig
from hvlab.build.builder import ConfigInputs, ccache_stats
from hvlab.model import FragmentOption

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data"


def test_parse_recorded_gcc12_output() -> None:
    lines = (DATA / "gcc12-demo.log").read_text().splitlines()
    diags = buildlog.parse(lines)
    assert [(d.file, d.line, d.kind) for d in diags] == [
        ("drivers/hv/demo.c", 5, "warning"),
        ("drivers/hv/demo.c", 4, "warning"),
        ("drivers/hv/demo.c", 11, "warning"),
        ("drivers/hv/demo.c", 12, "error"),
    ]
    # quotes unified, flag split off, function context kept, notes ignored
    assert diags[0].message == "unused variable 'p'"
    assert diags[0].flag == "-Wunused-variable"
    assert diags[0].function == "helper"
    assert diags[2].function == "main"
    assert diags[2].message.startswith("format '%d' expects argument of type 'int'")
    assert diags[3].message == "'missing_symbol' undeclared (first use in this function)"
    assert diags[3].describe() == ("drivers/hv/demo.c:12: 'missing_symbol' undeclared "
                                   "(first use in this function) (in main)")


def test_paths_made_relative_to_the_tree() -> None:
    line = "/work/kernels/worktrees/k/drivers/hv/hv.c:10:3: warning: unused variable 'x' " \
           "[-Wunused-variable]"
    (d,) = buildlog.parse([line], ["/work/kernels/worktrees/k"])
    assert d.file == "drivers/hv/hv.c" and d.line == 10


def test_new_diagnostics_ignore_line_shifts_but_count_repeats() -> None:
    base = [buildlog.Diagnostic("a.c", 10, "warning", "unused variable 'x'", "-Wunused")]
    shifted = [buildlog.Diagnostic("a.c", 13, "warning", "unused variable 'x'", "-Wunused")]
    assert buildlog.new_diagnostics(shifted, [d.key for d in base]) == []
    twice = shifted + [buildlog.Diagnostic("a.c", 20, "warning", "unused variable 'x'",
                                           "-Wunused")]
    assert [d.line for d in buildlog.new_diagnostics(twice, [d.key for d in base])] == [20]


def test_compiled_units_and_state_update() -> None:
    log = ["  CC      drivers/hv/vmbus_drv.o", "  CC [M]  drivers/hv/hv_util.o",
           "  LD      vmlinux"]
    assert buildlog.compiled_units(log) == {"drivers/hv/vmbus_drv.c", "drivers/hv/hv_util.c"}
    old = buildlog.Diagnostic("drivers/hv/vmbus_drv.c", 3, "warning", "old")
    keep = buildlog.Diagnostic("drivers/hv/channel.c", 9, "warning", "kept")
    state = {old.file: [old], keep.file: [keep]}
    new = buildlog.update_state(state, buildlog.compiled_units(log), [])
    assert buildlog.flatten(new) == [keep]  # recompiled without warnings: cleared


def test_make_errors() -> None:
    assert buildlog.make_errors(["make[2]: *** [scripts/Makefile.build:250: x.o] Error 1"]) == [
        "[scripts/Makefile.build:250: x.o] Error 1"]


HV_KCONFIG = (DATA / "kconfig-drivers-hv-6.1").read_text()


def test_find_depends_on_the_real_6_1_kconfig() -> None:
    assert kconfig.find_depends(HV_KCONFIG, "HYPERV_UTILS") == [
        "HYPERV && CONNECTOR && NLS", "PTP_1588_CLOCK_OPTIONAL"]
    assert "HYPERV" in kconfig.find_depends(HV_KCONFIG, "HYPERV_BALLOON")[0]


def test_dropped_option_with_its_dependency_explanation() -> None:
    requested = [("hyperv", FragmentOption("HYPERV_UTILS", "y", 3)),
                 ("hyperv", FragmentOption("HYPERV", "y", 1)),
                 ("hyperv", FragmentOption("CONNECTOR", "n", 2))]
    final = kconfig.parse_dotconfig("CONFIG_HYPERV=y\n# CONFIG_CONNECTOR is not set\n"
                                    "CONFIG_NLS=y\nCONFIG_PTP_1588_CLOCK_OPTIONAL=y\n")
    (m,) = kconfig.verify(requested, final)
    why = kconfig.explain(kconfig.find_depends(HV_KCONFIG, m.symbol), final)
    m = kconfig.Mismatch(m.symbol, m.requested, m.got, m.fragment, m.line, why)
    assert m.describe() == ("HYPERV_UTILS: requested y, got not set (depends on HYPERV && "
                            "CONNECTOR && NLS && PTP_1588_CLOCK_OPTIONAL; not set: CONNECTOR)")


def test_an_option_kept_unset_that_got_set_names_what_selects_it() -> None:
    """A variant's ``# CONFIG_X is not set`` fails when another option on in
    the final .config selects X, and says which (the real 6.1 drivers/hv)."""
    assert kconfig.find_selectors(HV_KCONFIG, "PAGE_REPORTING") == [("HYPERV_BALLOON", "")]
    assert kconfig.find_selectors(HV_KCONFIG, "X86_HV_CALLBACK_VECTOR") == [("HYPERV", "X86")]
    requested = [("hyperv-no-reporting", FragmentOption("PAGE_REPORTING", "n", 4))]
    final = kconfig.parse_dotconfig("CONFIG_HYPERV=y\nCONFIG_HYPERV_BALLOON=m\n"
                                    "CONFIG_PAGE_REPORTING=y\n")
    (m,) = kconfig.verify(requested, final)
    m = kconfig.Mismatch(m.symbol, m.requested, m.got, m.fragment, m.line,
                         kconfig.explain_selected(kconfig.find_selectors(
                             HV_KCONFIG, m.symbol), final))
    assert m.describe() == ("PAGE_REPORTING: requested not set, got y "
                            "(selected by HYPERV_BALLOON)")
    # a select whose condition does not hold there does not count
    assert kconfig.explain_selected([("HYPERV", "X86")], {"HYPERV": "y"}) == ""
    assert kconfig.explain_selected([("HYPERV", "X86")], {"HYPERV": "y", "X86": "y"}) == \
        "selected by HYPERV (if X86)"


def test_select_in_help_text_is_prose() -> None:
    text = ("config FOO\n\ttristate \"foo\"\n\thelp\n\t  Drivers may select NET\n"
            "\t  select NET here is prose.\n\nconfig BAR\n\tbool\n\tselect NET\n")
    assert kconfig.find_selectors(text, "NET") == [("BAR", "")]


def test_verify_accepts_quoted_strings_and_m() -> None:
    requested = [("f", FragmentOption("CMDLINE", '"console=ttyS0"', 1)),
                 ("f", FragmentOption("HYPERV_NET", "m", 2))]
    final = kconfig.parse_dotconfig('CONFIG_CMDLINE="console=ttyS0"\nCONFIG_HYPERV_NET=y\n')
    (m,) = kconfig.verify(requested, final)
    assert m.describe() == "HYPERV_NET: requested m, got y"


def test_merge_later_fragment_wins_and_keeps_other_lines() -> None:
    base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
    merged = kconfig.merge(base, [[FragmentOption("B", "y", 1)],
                                  [FragmentOption("A", "n", 1), FragmentOption("D", "m", 2)]])
    assert kconfig.parse_dotconfig(merged) == {"A": "n", "B": "y", "C": "m", "D": "m"}


def inputs(frag: str = "CONFIG_HYPERV=y\n") -> ConfigInputs:
    return ConfigInputs("tinyconfig", "", (("hyperv", frag),), "x86_64", (("KCFLAGS", "-O2"),))


def test_config_key_is_stable_and_sensitive() -> None:
    gcc = "gcc (Debian 12.2.0-14) 12.2.0"
    assert inputs().key(gcc) == inputs().key(gcc)
    assert len(inputs().key(gcc)) == 64
    assert inputs("CONFIG_HYPERV=m\n").key(gcc) != inputs().key(gcc)
    assert inputs().key("gcc 13") != inputs().key(gcc)


def test_ccache_stats_log(tmp_path: Path) -> None:
    log = tmp_path / "stats"
    log.write_text("# a.c\ndirect_cache_hit\n# b.c\ncache_miss\ndirect_cache_miss\n"
                   "# c.c\npreprocessed_cache_hit\n")
    assert ccache_stats(log) == {"hits": 2, "misses": 1}
    assert ccache_stats(tmp_path / "none") == {"hits": 0, "misses": 0}


def test_later_fragment_request_overrides_earlier() -> None:
    two = ConfigInputs("tinyconfig", "", (("hyperv", "CONFIG_HYPERV_UTILS=m\nCONFIG_NLS=y\n"),
                                          ("extra", "CONFIG_HYPERV_UTILS=y\n")),
                       "x86_64", ())
    assert [(n, o.symbol, o.value) for n, o in two.requested()] == [
        ("hyperv", "NLS", "y"), ("extra", "HYPERV_UTILS", "y")]


def test_help_text_is_not_kconfig_syntax() -> None:
    """The 6.1 lib/Kconfig.debug's help texts have lines that start with "if" and
    say "depends on": the explanation must not take them for conditions."""
    text = ("menu \"Kernel hacking\"\n\nconfig DEBUG_INFO\n\tbool \"info\"\n\thelp\n"
            "\t  if you say Y here the kernel gets larger,\n\t  and this depends on gdb.\n"
            "\nif RUNTIME_TESTING_MENU\n\nconfig LIST_KUNIT_TEST\n\ttristate \"list\"\n"
            "\tdepends on KUNIT\n\thelp\n\t  if unsure, say N.\n\nendif\nendmenu\n")
    assert kconfig.find_depends(text, "LIST_KUNIT_TEST") == ["RUNTIME_TESTING_MENU", "KUNIT"]
    assert kconfig.find_depends(text, "DEBUG_INFO") == []
