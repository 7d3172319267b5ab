"""Check profiles: which checks run per patch, their settings and severities (pure).

``default`` is what a Hyper-V maintainer runs before applying; ``netdev`` is
checkpatch as netdev's NIPA runs it (``--strict --max-line-length=80
--codespell``), for patches that go through netdev (drivers/net/hyperv).
A ``warn`` finding shows in the summary and the case output without failing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hvlab.errors import UserError

# Debian 12 codespell 2.2 keeps it in its Python package (not /usr/share/codespell/)
CODESPELL_DICTIONARY = "/usr/lib/python3/dist-packages/codespell_lib/data/dictionary.txt"
CHECKS = ("sparse", "W=1", "kernel-doc", "fixes", "signoff", "get_maintainer")
NETDEV_PATHS = ("drivers/net/hyperv/",)


@dataclass(frozen=True)
class Profile:
    name: str
    checkpatch_args: tuple[str, ...]
    checkpatch_fails_on: tuple[str, ...]  # ERROR, WARNING, CHECK: what fails the patch
    severity: dict[str, str]  # check -> "fail" | "warn"

    def fails(self, check: str) -> bool:
        return self.severity.get(check, "fail") == "fail"


_COMMON = {"sparse": "fail", "W=1": "fail", "kernel-doc": "fail", "fixes": "fail",
           "signoff": "fail", "get_maintainer": "warn"}

PROFILES = {
    "default": Profile("default", ("--max-line-length=100",), ("ERROR",), dict(_COMMON)),
    "netdev": Profile("netdev", ("--strict", "--max-line-length=80", "--codespell",
                                 f"--codespellfile={CODESPELL_DICTIONARY}"),
                      ("ERROR", "WARNING"), dict(_COMMON)),
}
CHOICES = ("auto", *PROFILES, "none")


def pick(requested: str, touched: Iterable[str]) -> Profile | None:
    """The profile ``--checks`` names; ``auto``: netdev when the series touches
    drivers/net/hyperv, else default; ``none``: no checks (None)."""
    if requested not in CHOICES:
        raise UserError(f"--checks {requested}: expected one of {', '.join(CHOICES)}")
    if requested == "none":
        return None
    if requested == "auto":
        netdev = any(f.startswith(NETDEV_PATHS) for f in touched)
        return PROFILES["netdev" if netdev else "default"]
    return PROFILES[requested]
