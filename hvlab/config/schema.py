"""What each YAML file under ``configs/`` holds: one ``Shape`` per folder,
the one the loader reads it with.  A host's keys beyond the common ones come
from its kind's class (``SHAPE`` beside its ``read_config``)."""

from __future__ import annotations

from hvlab.build.arches import ARCHES, TOOLCHAINS
from hvlab.config.shape import Field, Shape
from hvlab.hosts.registry import kind_class
from hvlab.model import HOST_KINDS, PARSERS, HostKind

NAME = Field("string", "must equal the file name without .yaml")
DESCRIPTION = Field("string", "one line for listings and reports")

KERNEL = Shape({
    "name": NAME,
    "description": DESCRIPTION,
    "source": Field("object", "where the tree comes from: exactly one of git, tarball, path",
                    required=True, shape=Shape({}, alternatives=(
                        Shape({
                            "git": Field("string", "repository URL", required=True),
                            "ref": Field("string", "branch, tag or commit", required=True),
                            "other_refs": Field("strings", "refs a series that does not "
                                                "apply is also tried on"),
                        }, "a git repository"),
                        Shape({
                            "tarball": Field("string", "a .tar.* file or URL", required=True),
                            "sha256": Field("string", "its expected SHA-256 (64 hex digits)"),
                        }, "a source tarball"),
                        Shape({"path": Field("string", "a local tree, used as it is",
                                             required=True)}, "a local tree"),
                    ))),
    "arch": Field("enum", "ARCH to build (default x86_64)", choices=ARCHES),
    "toolchain": Field("enum", "gcc (default) or clang (make LLVM=1)", choices=TOOLCHAINS),
    "config": Field("object", "how .config is made", shape=Shape({
        "base": Field("string", "defconfig (default), tinyconfig, allnoconfig or a config "
                      "file"),
        "fragments": Field("strings", "fragments from configs/fragments/ merged on top"),
    })),
    "make_vars": Field("mapping", "extra make variables (NAME: value)"),
}, "a kernel: configs/kernels/<name>.yaml")

HOST = Shape({
    "name": NAME,
    "description": DESCRIPTION,
    "kind": Field("enum", "which kind of host this is", required=True, choices=HOST_KINDS),
    "arch": Field("enum", "the architecture of the kernels it boots (default x86_64); a "
                  "qemu host's QEMU, machine and console follow it", choices=ARCHES),
    "boot_timeout": Field("integer", "seconds a boot may take (default 120)",
                          minimum=1, maximum=86400),
    "iperf_server": Field("string", "an iperf3 server the network suites measure against"),
    "scratch_disk": Field("string", "a disk the storage suites may overwrite (/dev/...)"),
    "spare_nic": Field("string", "an interface the network suites may take down"),
}, "a test host: configs/hosts/<name>.yaml", by="kind",
    cases={kind: kind_class(HostKind(kind)).SHAPE for kind in HOST_KINDS})

_TEST_COMMON = {
    "name": Field("string", "the test's name, unique in the suite", required=True),
    "requires": Field("strings", "vmbus, module:<name>, class:<vmbus class> or "
                      "path:<absolute path>; the test skips without it"),
    "timeout": Field("integer", "seconds (default 300)", minimum=1, maximum=86400),
    "retries": Field("integer", "reruns of a failing test (default 0)", minimum=0,
                     maximum=10),
    "modules": Field("strings", "modules a builtin:module-reload test may reload"),
}
SUITE = Shape({
    "name": NAME,
    "description": DESCRIPTION,
    "scripts": Field("string", "a directory of scripts copied to the guest"),
    "tests": Field("objects", "the tests, in order", required=True, shape=Shape(
        {}, alternatives=(
            Shape({
                **_TEST_COMMON,
                "run": Field("string", "command run in the guest, or builtin:<test>",
                             required=True),
                "parser": Field("enum", "how its output is read (default exit-code)",
                                choices=PARSERS),
                "results": Field("string", "the JUnit file the command leaves (parser: "
                                 "junit)"),
            }, "a command"),
            Shape({
                **_TEST_COMMON,
                "kselftest": Field("strings", "kselftest targets built and run",
                                   required=True),
            }, "kselftest targets"),
        ))),
}, "a suite: configs/suites/<name>.yaml")

PLAN = Shape({
    "name": NAME,
    "description": DESCRIPTION,
    "kernels": Field("strings", "kernels from configs/kernels/", required=True),
    "series": Field("strings", "series from configs/patches/, or none (default)"),
    "hosts": Field("strings", "hosts from configs/hosts/; each kernel boots on those of "
                   "its arch"),
    "build_only": Field("strings", "kernels of the plan that are built, never booted"),
    "suites": Field("strings", "suites from configs/suites/"),
    "variants": Field("objects", "named fragment sets, each its own cell", shape=Shape({
        "name": Field("string", "the variant's name", required=True),
        "fragments": Field("strings", "fragments added for this variant"),
    })),
    "baseline": Field("boolean", "also run each kernel without the series"),
    "gate": Field("enum", "what fails the run: all (default) or regressions",
                  choices=("all", "regressions")),
}, "a plan: configs/plans/<name>.yaml")

KNOWN_FAILURES = Shape({
    "known_failures": Field("objects", "failures that do not gate", required=True,
                            shape=Shape({
                                "test": Field("string", "test name or glob", required=True),
                                "reason": Field("string", "why, for the report",
                                                required=True),
                                "expires": Field("string", "YYYY-MM-DD after which it gates "
                                                 "again"),
                            })),
}, "configs/known-failures.yaml")

# The folder (or file) under configs/ -> its shape.
FILES: dict[str, Shape] = {
    "kernels": KERNEL,
    "hosts": HOST,
    "suites": SUITE,
    "plans": PLAN,
    "known-failures": KNOWN_FAILURES,
}
