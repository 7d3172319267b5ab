"""Kconfig fragments: the pure parser (configure/verify live in later stages)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hvlab.model import FragmentOption

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


# -- .config files and verification (pure) --------------------------------------

_DOT_SET = re.compile(r"CONFIG_([A-Za-z0-9_]+)=(.*)")


def parse_dotconfig(text: str) -> dict[str, str]:
    """symbol -> value; ``# CONFIG_X is not set`` gives "n"."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = _DOT_SET.fullmatch(line.strip())
        if m:
            values[m.group(1)] = m.group(2)
            continue
        u = _UNSET.fullmatch(line.strip())
        if u:
            values[u.group(1)] = "n"
    return values


def merge(base: str, fragments: list[list[FragmentOption]]) -> str:
    """The base .config with every fragment's options applied in order (later wins).

    What ``scripts/kconfig/merge_config.sh -m`` does, without the shell.
    """
    lines = base.splitlines()
    index: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = _DOT_SET.fullmatch(line.strip()) or _UNSET.fullmatch(line.strip())
        if m:
            index[m.group(1)] = i
    for options in fragments:
        for opt in options:
            text = (f"# CONFIG_{opt.symbol} is not set" if opt.value == "n"
                    else f"CONFIG_{opt.symbol}={opt.value}")
            if opt.symbol in index:
                lines[index[opt.symbol]] = text
            else:
                index[opt.symbol] = len(lines)
                lines.append(text)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Mismatch:
    symbol: str
    requested: str
    got: str
    fragment: str
    line: int
    why: str = ""  # the symbol's dependencies, when found

    def describe(self) -> str:
        got = "not set" if self.got == "n" else self.got
        want = "not set" if self.requested == "n" else self.requested
        why = f" ({self.why})" if self.why else ""
        return f"{self.symbol}: requested {want}, got {got}{why}"


def _norm(value: str) -> str:
    return value.strip('"') if value.startswith('"') else value


def verify(requested: list[tuple[str, FragmentOption]], final: dict[str, str]) -> list[Mismatch]:
    """Every (fragment name, option) whose value did not survive olddefconfig."""
    out = []
    for fragment, opt in requested:
        got = final.get(opt.symbol, "n")
        if _norm(got) != _norm(opt.value):
            out.append(Mismatch(opt.symbol, opt.value, got, fragment, opt.line))
    return out


_CONFIG_LINE = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*(?:#.*)?$")
_IF = re.compile(r"^\s*if\s+(.+?)\s*(?:#.*)?$")
_ENDIF = re.compile(r"^\s*endif\b")
_HELP = re.compile(r"^\s*(?:help|---help---)\s*$")
_BLOCK_END = re.compile(r"^\s*(?:(?:menu)?config|choice|endchoice|menu|endmenu|if|endif|"
                        r"source|comment|mainmenu)\b")


def find_depends(kconfig_text: str, symbol: str) -> list[str]:
    """The ``depends on`` expressions of ``symbol`` in one Kconfig file, with
    the conditions of the ``if`` blocks around it (pure; the caller reads files)."""
    deps: list[str] = []
    ifs: list[str] = []
    inside = False
    help_indent: int | None = None  # inside a help text: its indentation (-1: not yet)
    for raw in kconfig_text.splitlines():
        if help_indent is not None:  # help text says "if ..." and "depends on ..." too
            if not raw.strip():
                continue
            indent = len(raw.expandtabs(8)) - len(raw.expandtabs(8).lstrip())
            if help_indent < 0:
                help_indent = indent
                continue
            if indent >= help_indent:
                continue
            help_indent = None
        if _HELP.match(raw):
            help_indent = -1
            continue
        m_if = _IF.match(raw)
        if _ENDIF.match(raw):
            inside = False
            if ifs:
                ifs.pop()
            continue
        if m_if:
            inside = False
            ifs.append(m_if.group(1))
            continue
        m = _CONFIG_LINE.match(raw)
        if m:
            inside = m.group(1) == symbol
            if inside:
                deps.extend(f"{cond}" for cond in ifs if cond not in deps)
            continue
        if inside:
            if _BLOCK_END.match(raw):
                inside = False
                continue
            d = _DEPENDS.match(raw)
            if d and d.group(1) not in deps:
                deps.append(d.group(1))
    return deps


_SELECT = re.compile(r"^\s*select\s+([A-Za-z0-9_]+)\s*(?:if\s+(.+?))?\s*(?:#.*)?$")


def find_selectors(kconfig_text: str, symbol: str) -> list[tuple[str, str]]:
    """(selecting symbol, its ``if`` condition or "") for every ``select
    symbol`` in one Kconfig file (pure): what forces an option on that a
    fragment asks to keep unset."""
    out: list[tuple[str, str]] = []
    current = ""
    in_help = False
    for raw in kconfig_text.splitlines():
        m = _CONFIG_LINE.match(raw)
        if m:
            current, in_help = m.group(1), False
            continue
        if _HELP.match(raw):
            in_help = True
            continue
        if in_help and raw[:1] in ("\t", " ", ""):
            continue  # a select inside help text is prose
        in_help = False
        if _BLOCK_END.match(raw):
            current = ""
            continue
        sel = _SELECT.match(raw)
        if sel and current and sel.group(1) == symbol:
            out.append((current, sel.group(2) or ""))
    return out


_SYMBOL = re.compile(r"\b[A-Z][A-Z0-9_]+\b")


def explain_selected(selectors: list[tuple[str, str]], final: dict[str, str]) -> str:
    """``selected by A, B``: the selectors that are on in the final .config
    (with their ``if`` condition when it holds there); "" when none is."""
    on = []
    for sym, cond in selectors:
        if final.get(sym, "n") in ("n", ""):
            continue
        if cond and any(final.get(c, "n") in ("n", "") for c in _SYMBOL.findall(cond)
                        if "!" not in cond and "||" not in cond):
            continue  # a plain conjunction that does not hold
        label = f"{sym} (if {cond})" if cond else sym
        if label not in on:
            on.append(label)
    return f"selected by {', '.join(on)}" if on else ""


def explain(deps: list[str], final: dict[str, str]) -> str:
    """``depends on A && B; not set: B``: the expression and its symbols that are off."""
    if not deps:
        return ""
    conjuncts: list[str] = []
    for d in deps:
        parts = [d] if ("||" in d or "(" in d) else [p.strip() for p in d.split("&&")]
        conjuncts += [p for p in parts if p not in conjuncts]
    expr = " && ".join(f"({c})" if "||" in c and len(conjuncts) > 1 else c for c in conjuncts)
    unmet = []
    for sym in dict.fromkeys(_SYMBOL.findall(expr)):
        if sym in ("y", "m", "n"):
            continue
        if final.get(sym, "n") in ("n", ""):
            unmet.append(sym)
    return f"depends on {expr}" + (f"; not set: {', '.join(unmet)}" if unmet else "")
