"""What a build-only cell compiles of a series: the directories of the files
it touches, for ``make <dir>/`` after ``modules_prepare`` (kbuild's
single-directory build, which compiles that directory's built-in and module
objects).  Pure: the caller says which directories kbuild can descend into.

Files another arch's ``arch/<dir>/`` holds are not compiled on this one;
documentation and tools are not kernel code.  A header outside the
directories the series' C files are in (``include/``, ``arch/x86/include/``,
another driver's) has users the series does not show, and a change to
scripts/, the top Makefile or Kconfig, ``arch/Kconfig`` or this arch's own
Makefile changes every build: all of them ask for the whole build (None).  A
Kconfig in a directory without a Makefile is built from the nearest parent
that has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

NOT_COMPILED = ("Documentation/", "tools/", "LICENSES/", "samples/", "usr/include/")
NOT_COMPILED_FILES = ("MAINTAINERS", "CREDITS", "README", "COPYING", ".mailmap", ".gitignore")
BUILD_FILES = ("Makefile", "Kbuild")


def _goal(directory: str, kbuild_dir: Callable[[str], bool]) -> str | None:
    """``directory`` or its nearest parent with a Makefile or Kbuild, as ``dir/``;
    None when only the top one has."""
    parts = directory.split("/")
    while parts:
        d = "/".join(parts)
        if kbuild_dir(d):
            return d + "/"
        parts.pop()
    return None


def touched_dirs(files: Iterable[str], srcarch: str,
                 kbuild_dir: Callable[[str], bool] = lambda d: True
                 ) -> tuple[str, ...] | None:
    """The ``make`` goals (``dir/``) that compile what ``files`` change on an arch
    whose source directory is ``arch/<srcarch>``; None: build everything.
    ``kbuild_dir(d)``: directory ``d`` has a Makefile or Kbuild."""
    dirs: set[str] = set()
    headers: set[str] = set()
    for path in files:
        parts = path.split("/")
        name = parts[-1]
        if path.startswith("arch/") and len(parts) > 2 and parts[1] != srcarch:
            continue  # another arch's code
        top_level_text = len(parts) == 1 and not name.startswith(("Makefile", "Kbuild", "Kconfig"))
        if path.startswith(NOT_COMPILED) or name in NOT_COMPILED_FILES or top_level_text:
            continue
        if path.startswith("scripts/") or len(parts) == 1 or path == "arch/Kconfig" or (
                len(parts) == 3 and parts[0] == "arch" and name.startswith("Makefile")):
            return None  # kbuild itself, the top Makefile/Kconfig, the arch's flags
        directory = "/".join(parts[:-1])
        if name.endswith(".h"):
            headers.add(directory + "/")
        elif name.endswith((".c", ".S")) or name in BUILD_FILES or name.startswith("Kconfig"):
            goal = _goal(directory, kbuild_dir)
            if goal is None:
                return None
            dirs.add(goal)
        elif name.endswith((".rst", ".txt", ".yaml", ".json", ".py", ".sh")):
            continue
        else:
            return None  # something kbuild may read anywhere (a linker script, a .dts)
    if any(h not in dirs for h in headers):
        return None  # a header with users outside what the series compiles
    return tuple(sorted(dirs))
