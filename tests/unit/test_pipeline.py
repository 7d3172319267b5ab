"""The plan matrix, shards and CI matrix output: pure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from hvlab.config.pairing import Arches
from hvlab.errors import UserError
from hvlab.model import PlanSpec, Variant
from hvlab.tasks.cimatrix import render
from hvlab.tasks.run import BUILD_ONLY, cells, shard

pytestmark = pytest.mark.unit


PLAN = PlanSpec("p", Path("p.yaml"), ("k1", "k2"), ("s1", "none"), ("h1", "h2"), ("t",),
                (Variant("default"), Variant("debug", ("debug",))))


def test_cells_are_the_full_matrix_in_a_fixed_order() -> None:
    found = cells(PLAN)
    assert len(found) == 2 * 2 * 2 * 2
    assert found[0].id == "k1+s1@h1" and found[1].id == "k1+s1@h2"
    assert found[2].id == "k1+s1+debug@h1"
    assert [c.id for c in found] == [c.id for c in cells(PLAN)]
    only = cells(PLAN, kernels=["k2"], series=["s1"], hosts=["h2"], suites=["x"])
    assert [(c.id, c.suites) for c in only] == [("k2+s1@h2", ("x",)),
                                                ("k2+s1+debug@h2", ("x",))]


def test_baseline_adds_the_unpatched_series_once() -> None:
    plan = PlanSpec("p", Path("p.yaml"), ("k",), ("s1",), ("h",), (), baseline=True)
    assert [c.build.series for c in cells(plan)] == ["s1", "none"]
    both = PlanSpec("p", Path("p.yaml"), ("k",), ("s1", "none"), ("h",), (), baseline=True)
    assert [c.build.series for c in cells(both)] == ["s1", "none"]


def test_shards_partition_the_cells() -> None:
    found = cells(PLAN)
    parts = [shard(found, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in found)
    assert all(parts) and shard(found, "2/3") == parts[1]
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(UserError):
            shard(found, bad)


def test_ci_matrix_formats() -> None:
    jobs = [{"shard": "1/2", "cells": "a@h"}, {"shard": "2/2", "cells": "b@h"}]
    github = json.loads(render("github", "default", jobs))
    assert github["include"][1] == {"plan": "default", "shard": "2/2", "cells": "b@h"}
    gitlab = yaml.safe_load(render("gitlab", "default", jobs))
    assert gitlab == {"parallel": {"matrix": [{"PLAN": "default", "SHARD": ["1/2", "2/2"]}]}}
    assert json.loads(render("json", "default", jobs)) == jobs
    with pytest.raises(UserError):
        render("azure", "default", jobs)


def test_each_kernel_boots_on_the_hosts_of_its_arch_or_is_built_only() -> None:
    plan = PlanSpec("arches", Path("arches.yaml"), ("x", "clang", "arm", "i386"), ("s",),
                    ("q", "qa"), ("boot-health",), build_only=("clang", "i386"))
    arches = Arches({"x": "x86_64", "clang": "x86_64", "arm": "arm64", "i386": "i386"},
                    {"q": "x86_64", "qa": "arm64"})
    found = cells(plan, arches=arches)
    assert [(c.id, c.suites) for c in found] == [
        ("x+s@q", ("boot-health",)), ("clang+s", ()), ("arm+s@qa", ("boot-health",)),
        ("i386+s", ())]
    assert [c.host for c in found if not c.suites] == [BUILD_ONLY, BUILD_ONLY]
    # a kernel no host of the plan (or of --host) boots is refused, naming both arches
    with pytest.raises(UserError, match=r"kernel 'arm' is arm64 and no host boots it "
                       r"\(hosts: q \(x86_64\)\): add a qemu host with arch: arm64"):
        cells(plan, hosts=["q"], arches=arches)
    unpaired = dataclasses.replace(plan, build_only=())
    with pytest.raises(UserError, match="kernel 'i386' is i386"):
        cells(unpaired, arches=arches)
    # without hosts (none in the plan, no --host) only build_only kernels have cells
    hostless = dataclasses.replace(plan, hosts=())
    with pytest.raises(UserError, match="kernel 'x' is not built only and the plan has no "
                                        "hosts to boot it"):
        cells(hostless, arches=arches)
    assert [c.id for c in cells(dataclasses.replace(hostless, kernels=("clang", "i386")),
                                arches=arches)] == ["clang+s", "i386+s"]
