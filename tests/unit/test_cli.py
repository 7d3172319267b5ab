"""The command line's rules (hvlab/tasks/cli.py) on the real task collection."""

from __future__ import annotations

import pytest
from invoke.parser import Parser

import tasks
from hvlab.tasks import cli

pytestmark = pytest.mark.unit


def parser() -> Parser:
    return Parser(contexts=tasks.ns.to_contexts())


def test_no_task_has_short_flags_so_h_is_help_everywhere() -> None:
    for name, context in ((c.name, c) for c in tasks.ns.to_contexts()):
        shorts = [f for f in context.flags if not f.startswith("--")]
        assert shorts == [], f"inv {name} has short flags {shorts}"
        assert "--" not in context.flags, f"inv {name} has a phantom -- flag"


def parse_failure(argv: list[str]) -> str:
    original = getattr(Parser.parse_argv, "__wrapped__", Parser.parse_argv)  # before install()
    with pytest.raises(Exception) as caught:
        original(parser(), argv)
    return cli.explain(parser(), argv, caught.value)


def test_a_bad_number_names_the_task_flag_and_value() -> None:
    assert parse_failure(["ci.matrix", "--shards", "x"]) == \
        "inv ci.matrix --shards 'x': expected a whole number"
    assert parse_failure(["clean", "--days=soon"]) == "inv clean --days 'soon': expected a number"


def test_an_unknown_flag_or_task_suggests_the_closest() -> None:
    assert parse_failure(["run", "--hots", "a"]).startswith(
        "inv run: unknown flag --hots; did you mean --host?")
    assert parse_failure(["rnu"]).startswith("unknown task 'rnu'; did you mean run?")
    assert parse_failure(["report.merg"]).startswith(
        "unknown task 'report.merg'; did you mean report.merge?")
    assert "did you mean" not in parse_failure(["run", "--zzzzzz"])
