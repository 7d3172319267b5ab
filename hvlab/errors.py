"""The two error families every user-facing failure belongs to.

``UserError`` is bad input (a config file, a patch, an argument): exit code 2.
``InfraError`` is the machinery failing (network, disk, a host, a missing
tool): exit code 3.  Test and kernel failures are *results*, never
exceptions; they travel in ``StageResult`` and give exit code 1.
"""

from __future__ import annotations


class HvlabError(Exception):
    """Base of every error hvlab reports to a user as one line."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class UserError(HvlabError):
    """Bad input: configuration, patch files, command-line arguments."""

    exit_code = 2


class InfraError(HvlabError):
    """Infrastructure broke: network, disk, tools, hosts, timeouts of the harness."""

    exit_code = 3


class Interrupted(InfraError):
    """SIGINT/SIGTERM reached a running stage."""
