"""The command line's rules, on top of invoke's parser.

* ``task``: invoke's decorator without automatic short flags.  Invoke gives
  each flag the short form of its first free letter, so ``-h`` became
  ``--host`` on ``inv run`` (and started a full run) while it meant help
  elsewhere, and a flag whose letters were all taken got a phantom ``--``.
  hvlab has no short flags: ``-h`` is help on every task.
* ``install()``: a flag value that is not a number, an unknown flag or an
  unknown task is one line naming it (and the closest known name) with exit
  2, instead of invoke's traceback or "No idea what ... is!" with exit 1.
  Output to a reader that went away (``inv run -h | head -1``) ends the
  process as SIGPIPE ends standard tools, without a traceback.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, NoReturn

from invoke.exceptions import ParseError
from invoke.parser import Parser
from invoke.parser.context import ParserContext
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from hvlab.tasks.session import Gate


def task(**kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """``@task(help=...)`` with no short flags."""
    decorate: Callable[[Callable[..., Any]], Task[Any]] = invoke_task(auto_shortflags=False,
                                                                      **kwargs)
    return decorate


_NOT_A_NUMBER = re.compile(r"invalid literal for (int|float)\(\)(?: with base 10)?: '(.*)'$"
                           r"|could not convert string to float: '(.*)'$")
_UNKNOWN = re.compile(r"^No idea what '(.*)' is!$")


def _contexts(parser: Parser) -> dict[str, ParserContext]:
    """Task contexts by name and alias."""
    out: dict[str, ParserContext] = {}
    for name in list(parser.contexts.keys()) + list(parser.contexts.aliases.keys()):
        out[name] = parser.contexts[name]
    return out


def _task_before(argv: Sequence[str], index: int, names: dict[str, ParserContext]) -> str:
    """The task the token at ``index`` belongs to ("" for the core options)."""
    return next((argv[i] for i in range(index - 1, -1, -1) if argv[i] in names), "")


def _flags(context: ParserContext | None) -> list[str]:
    if context is None:
        return []
    return sorted({*context.flags.keys(), *context.inverse_flags.keys()})


def _closest(word: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def fail(message: str) -> NoReturn:
    print(f"hvlab: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def explain(parser: Parser, argv: Sequence[str], exc: Exception) -> str:
    """The one line a parse failure is reported as (pure: reads ``parser``)."""
    names = _contexts(parser)
    m = _NOT_A_NUMBER.search(str(exc))
    if m:
        value = m.group(2) if m.group(2) is not None else m.group(3)
        kind = "whole number" if m.group(1) == "int" else "number"
        for i, token in enumerate(argv):
            flag, eq, attached = token.partition("=")
            if eq and attached == value and flag.startswith("--"):
                break
            if token == value and i > 0 and argv[i - 1].startswith("--"):
                flag = argv[i - 1]
                break
        else:
            flag, i = "a flag", len(argv)
        task_name = _task_before(argv, i, names)
        where = f"inv {task_name} " if task_name else ""
        return f"{where}{flag} {value!r}: expected a {kind}"
    m = _UNKNOWN.match(str(exc))
    if m:
        word = m.group(1)
        index = list(argv).index(word) if word in argv else len(argv)
        if word.startswith("-"):
            task_name = _task_before(argv, index, names)
            known = _flags(names.get(task_name)) if task_name else _flags(parser.initial)
            where = f"inv {task_name}: " if task_name else ""
            return f"{where}unknown flag {word}{_closest(word.split('=')[0], known)} " \
                   f"(inv {task_name + ' ' if task_name else ''}--help lists them)"
        return f"unknown task '{word}'{_closest(word, sorted(names))} (inv --list lists them)"
    return str(exc)


def _end_on_broken_pipe(previous: Callable[[type[BaseException], BaseException,
                                             TracebackType | None], Any]
                        ) -> Callable[[type[BaseException], BaseException,
                                       TracebackType | None], None]:
    """An excepthook: a BrokenPipeError that reached the top (the reader of
    stdout went away; every ``finally`` has run) ends the process by SIGPIPE,
    as ``git log | head`` ends git; anything else goes to ``previous``."""
    def hook(kind: type[BaseException], exc: BaseException,
             tb: TracebackType | None) -> None:
        if not issubclass(kind, BrokenPipeError) or "--debug" in sys.argv:
            previous(kind, exc, tb)
            return
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # Python starts with it ignored
        os.kill(os.getpid(), signal.SIGPIPE)
    return hook


def install() -> None:
    """Route invoke's parse failures through ``explain`` and a broken stdout
    pipe to SIGPIPE (once per process)."""
    original = Parser.parse_argv
    if getattr(original, "hvlab", False):
        return
    sys.excepthook = _end_on_broken_pipe(sys.excepthook)

    @functools.wraps(original)
    def parse_argv(self: Parser, argv: list[str]) -> Any:
        try:
            return original(self, argv)
        except (ParseError, ValueError) as exc:
            if "--complete" in sys.argv:  # shell completion reads invoke's own ParseError
                raise
            fail(explain(self, argv, exc))

    parse_argv.hvlab = True  # type: ignore[attr-defined]
    Parser.parse_argv = parse_argv  # type: ignore[method-assign]


_SETTINGS: dict[str, type] = {"plan": str, "jobs": int, "gate": str}
# the values a setting may take, where its flag has a fixed set
_CHOICES: dict[str, tuple[str, ...]] = {"gate": tuple(Gate)}


def setting(c: Any, name: str, given: Any, unset: Any) -> Any:
    """A flag's value, or when it was not given, ``hvlab.<name>`` from invoke's
    configuration (``invoke.yaml`` beside tasks.py, ``~/.invoke.yaml``,
    ``/etc/invoke.yaml``), or ``unset`` (the task's own default)."""
    if given != unset:
        return given
    section = c.config.get("hvlab") or {}
    if name not in section:
        return unset
    value = section[name]
    kind = _SETTINGS[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        fail(f"invoke configuration (invoke.yaml): hvlab.{name}: {value!r} is not a "
             f"{'whole number' if kind is int else 'string'}")
    choices = _CHOICES.get(name)
    if choices and value not in choices:  # said here, not as a --gate the user never typed
        fail(f"invoke configuration (invoke.yaml): hvlab.{name}: {value!r} is not "
             f"{' or '.join(choices)}")
    return value
