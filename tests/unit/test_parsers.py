"""Pure parsers: tarball member checks, checkpatch output, git am conflicts, fragments."""

from __future__ import annotations

import re
import tarfile

import pytest

from hvlab.build.kconfig import parse_fragment
from hvlab.fetch.tarimport import check_member, common_prefix, safe_member
from hvlab.patch.apply import conflicting_files
from hvlab.patch.checkpatch import parse

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name,kind,link", [
    ("/etc/passwd", "file", ""),
    ("linux/../../escape", "file", ""),
    ("linux/dev/sda", "other", ""),
    ("linux/link", "symlink", "/etc/shadow"),
    ("linux/a/link", "symlink", "../../../outside"),
    ("linux/hard", "hardlink", "../x"),
])
def test_unsafe_members_refused(name: str, kind: str, link: str) -> None:
    with pytest.raises(ValueError):
        check_member(name, kind, link)


TYPES = {"file": tarfile.REGTYPE, "other": tarfile.CHRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE}


@pytest.mark.parametrize("name,kind,link,why,without_filter", [
    ("/etc/passwd", "file", "", "absolute path", "absolute path"),  # the filter strips "/"
    ("linux/../../escape", "file", "", "path leading outside the tree", "path with '..'"),
    ("linux/dev/sda", "other", "", "device, fifo or other special file", "device, fifo"),
    ("linux/link", "symlink", "/etc/shadow", "link to an absolute path", "absolute path"),
    ("linux/a/link", "symlink", "../../../outside", "link escaping the tree",
     "escapes the tree"),
    ("linux/a/../b", "file", "", "path with '..'", "path with '..'"),  # the filter lets it by
])
def test_tarfile_data_filter_judges_members_first(name: str, kind: str, link: str, why: str,
                                                  without_filter: str) -> None:
    """tarfile.data_filter's verdict where this Python has it (3.11.4+), hvlab's
    own check alone on an older one (Debian 12's 3.11.2)."""
    member = tarfile.TarInfo(name)
    member.type, member.linkname = TYPES[kind], link
    expected = why if hasattr(tarfile, "data_filter") else without_filter
    with pytest.raises(ValueError, match=re.escape(expected)):
        safe_member(member)


def test_safe_members_normalised() -> None:
    assert check_member("./linux/Makefile", "file") == "linux/Makefile"
    assert check_member("linux/a/link", "symlink", "../b/c") == "linux/a/link"


def test_common_prefix() -> None:
    assert common_prefix(["linux-6.1/a", "linux-6.1/b/c"]) == "linux-6.1/"
    assert common_prefix(["linux-6.1/a", "other/b"]) == ""
    assert common_prefix(["Makefile", "linux/a"]) == ""


CHECKPATCH = """\
WARNING:LONG_LINE: line length of 120 exceeds 100 columns
#20: FILE: drivers/hv/vmbus_drv.c:10:
+...
ERROR:TRAILING_WHITESPACE: trailing whitespace
#21: FILE: drivers/hv/vmbus_drv.c:11:
+x   $

total: 1 errors, 1 warnings, 12 lines checked
"""


def test_checkpatch_parse() -> None:
    report = parse(CHECKPATCH)
    assert (report.errors, report.warnings, report.checks, report.parsed) == (1, 1, 0, True)
    assert report.findings == ("WARNING: line length of 120 exceeds 100 columns",
                               "ERROR: trailing whitespace")


def test_checkpatch_without_total_is_unparsed() -> None:
    assert parse("Can't locate Foo.pm\n").parsed is False


def test_conflicting_files_from_git_am_output() -> None:
    out = """Applying: second
Using index info to reconstruct a base tree...
M\tdrivers/hv/vmbus_drv.c
Falling back to patching base and 3-way merge...
Auto-merging drivers/hv/vmbus_drv.c
CONFLICT (content): Merge conflict in drivers/hv/vmbus_drv.c
error: Failed to merge in the changes.
error: patch failed: drivers/hv/hv.c:12
Patch failed at 0001 second
"""
    assert conflicting_files(out) == ["drivers/hv/vmbus_drv.c", "drivers/hv/hv.c"]


def test_fragment_parser() -> None:
    options, errors = parse_fragment(
        "CONFIG_HYPERV=y\n# CONFIG_CONNECTOR is not set\nCONFIG_X=\nCONFIG_HYPERV=m\n")
    assert [(o.symbol, o.value, o.line) for o in options] == [
        ("HYPERV", "y", 1), ("CONNECTOR", "n", 2)]
    assert [e.line for e in errors] == [3, 4]
