"""hvlab's invoke tasks: parse flags, call the library, map errors to exit codes.

Exit codes: 0 passed, 1 test/kernel failures, 2 bad input, 3 infrastructure.
Every task writes reports/<run-id>/ and points reports/latest at it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from hvlab import flows
from hvlab.errors import UserError
from hvlab.session import session

ROOT = Path(__file__).resolve().parent


def _argv() -> list[str]:
    """The command as typed (for metadata.json and reproduce.sh)."""
    return sys.argv[1:]


@task(help={"debug": "print tracebacks", "quiet": "only errors"})
def config_check(c: Context, debug: bool = False, quiet: bool = False) -> None:
    """Load and validate every file under configs/ (HVLAB_CONFIGS); list all errors."""
    with session("config.check", _argv(), debug, quiet, ROOT) as s:
        flows.config_check(s)


@task(help={
    "kernel": "kernel name from configs/kernels/",
    "offline": "use only what is cached; fail clearly when something is missing",
    "debug": "print tracebacks", "quiet": "only errors",
})
def fetch(c: Context, kernel: str = "", offline: bool = False, debug: bool = False,
          quiet: bool = False) -> None:
    """Fetch a kernel source into the shared git store and record its commit."""
    with session("fetch", _argv(), debug, quiet, ROOT) as s:
        flows.fetch(s, _required("kernel", kernel), offline)


@task(help={
    "kernel": "kernel name from configs/kernels/",
    "series": "series name from configs/patches/, or a directory or mbox/patch file",
    "no_checkpatch": "skip scripts/checkpatch.pl",
    "offline": "use only what is cached",
    "debug": "print tracebacks", "quiet": "only errors",
})
def patch(c: Context, kernel: str = "", series: str = "", no_checkpatch: bool = False,
          offline: bool = False, debug: bool = False, quiet: bool = False) -> None:
    """Apply a patch series with git am -3 on a fresh branch; one case per patch."""
    with session("patch", _argv(), debug, quiet, ROOT) as s:
        flows.patch(s, _required("kernel", kernel), _required("series", series),
                    not no_checkpatch, offline)


def _required(flag: str, value: str) -> str:
    if not value:
        raise UserError(f"--{flag} is required")
    return value


config = Collection("config")
config.add_task(config_check, name="check", default=True)

ns = Collection()
ns.add_collection(config)
ns.add_task(fetch)
ns.add_task(patch)
