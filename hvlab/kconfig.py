"""Kconfig fragments: the pure parser (configure/verify live in later stages)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import FragmentOption

_SET = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")
_UNSET = re.compile(r"# CONFIG_([A-Za-z0-9_]+) is not set")


@dataclass(frozen=True)
class FragmentError:
    line: int
    message: str


def parse_fragment(text: str) -> tuple[list[FragmentOption], list[FragmentError]]:
    """Lines are ``CONFIG_X=value``, ``# CONFIG_X is not set``, comments or blank."""
    options: list[FragmentOption] = []
    errors: list[FragmentError] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        m = _SET.fullmatch(line)
        u = _UNSET.fullmatch(line)
        if m:
            symbol, value = m.group(1), m.group(2)
            if value == "":
                errors.append(FragmentError(number, f"CONFIG_{symbol} has no value"))
                continue
        elif u:
            symbol, value = u.group(1), "n"
        elif line.startswith("#"):
            continue
        else:
            errors.append(FragmentError(
                number, f"not 'CONFIG_X=value' nor '# CONFIG_X is not set': {line[:80]!r}"))
            continue
        if symbol in seen:
            errors.append(FragmentError(
                number, f"CONFIG_{symbol} set twice (first at line {seen[symbol]})"))
            continue
        seen[symbol] = number
        options.append(FragmentOption(symbol, value, number))
    return options, errors
