"""Which kselftest collections a set of suites needs, and where they live."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.build import kselftest
from hvlab.model import SuiteSpec, SuiteTest

pytestmark = pytest.mark.unit


def suite(name: str, *tests: SuiteTest) -> SuiteSpec:
    return SuiteSpec(name, Path(f"{name}.yaml"), tests)


def test_targets_of_lists_each_distinct_target_list_once_in_order() -> None:
    a = suite("a", SuiteTest("k", "kselftest:size", kselftest=("size",)),
              SuiteTest("x", "true"))
    b = suite("b", SuiteTest("k2", "kselftest:timens size", kselftest=("timens", "size")),
              SuiteTest("k3", "kselftest:size", kselftest=("size",)))
    assert kselftest.targets_of([a, b]) == [("size",), ("timens", "size")]
    assert kselftest.targets_of([suite("c", SuiteTest("x", "true"))]) == []


def test_collection_folder_is_per_build_and_target_list() -> None:
    build = Path("/k/builds/abc")
    assert kselftest.collection_dir(build, ("size", "net/forwarding")) == \
        build / "kselftest" / "size+net_forwarding"
    many = tuple(f"target{i}" for i in range(20))
    name = kselftest.key(many)
    assert len(name) <= 60 and "/" not in name
    assert name != kselftest.key(many[:-1] + ("other",))
