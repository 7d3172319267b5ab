"""What a build-only cell compiles of a series: the directories of the files
it touches, for ``make <dir>/`` after ``modules_prepare`` (kbuild's
single-directory build, which compiles that directory's built-in and module
objects).  Pure.

Files another arch's ``arch/<dir>/`` holds are not compiled on this one;
documentation and tools are not kernel code.  A header with no C file of the
series beside it has users everywhere, and a change to scripts/ or the top
Makefile changes every build: both ask for the whole build (None).
"""

from __future__ import annotations

from collections.abc import Iterable

NOT_COMPILED = ("Documentation/", "tools/", "LICENSES/", "samples/", "usr/include/")
NOT_COMPILED_FILES = ("MAINTAINERS", "CREDITS", "README", "COPYING", ".mailmap", ".gitignore")
BUILD_FILES = ("Makefile", "Kbuild")


def touched_dirs(files: Iterable[str], srcarch: str) -> tuple[str, ...] | None:
    """The ``make`` goals (``dir/``) that compile what ``files`` change on an arch
    whose source directory is ``arch/<srcarch>``; None: build everything."""
    dirs: set[str] = set()
    headers = False
    for path in files:
        parts = path.split("/")
        name = parts[-1]
        if path.startswith("arch/") and len(parts) > 2 and parts[1] != srcarch:
            continue  # another arch's code
        top_level_text = len(parts) == 1 and not name.startswith(("Makefile", "Kbuild", "Kconfig"))
        if path.startswith(NOT_COMPILED) or name in NOT_COMPILED_FILES or top_level_text:
            continue
        if path.startswith("scripts/") or len(parts) == 1:
            return None  # kbuild itself, or the top Makefile/Kconfig
        if name.endswith(".h"):
            headers = True
        elif name.endswith((".c", ".S")) or name in BUILD_FILES or name.startswith("Kconfig"):
            dirs.add("/".join(parts[:-1]) + "/")
        elif name.endswith((".rst", ".txt", ".yaml", ".json", ".py", ".sh")):
            continue
        else:
            return None  # something kbuild may read anywhere (a linker script, a .dts)
    if headers and not dirs:
        return None
    return tuple(sorted(dirs))
