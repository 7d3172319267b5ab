"""The plan matrix, shards and CI matrix output: pure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hvlab.errors import UserError
from hvlab.model import PlanSpec, Variant
from hvlab.tasks.cimatrix import render
from hvlab.tasks.run import cells, shard

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
