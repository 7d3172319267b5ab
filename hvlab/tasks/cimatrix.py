"""`inv ci.matrix`: a plan's cells as a CI matrix; each job runs one shard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hvlab.config import loader
from hvlab.config.pairing import arches_of
from hvlab.errors import HvlabError, UserError
from hvlab.tasks.run import cells
from hvlab.workspace import Workspace


def jobs(plan_name: str, ws: Workspace, shards: int) -> list[dict[str, str]]:
    config = loader.load_or_raise(ws)
    plan_cells = cells(config.plan(plan_name), arches=arches_of(config))
    if not plan_cells:
        raise UserError(f"plan '{plan_name}' has no cells")
    if shards < 0:
        raise UserError(f"--shards {shards}: expected a number of jobs, 1 or more")
    n = min(shards, len(plan_cells)) if shards else len(plan_cells)  # never an empty shard
    return [{"shard": f"{i}/{n}",
             "cells": " ".join(c.id for c in plan_cells[i - 1::n])} for i in range(1, n + 1)]


def render(fmt: str, plan: str, found: list[dict[str, str]]) -> str:
    if fmt == "json":
        return json.dumps(found, indent=1)
    if fmt == "github":  # for `strategy: matrix: ${{ fromJSON(...) }}`
        return json.dumps({"include": [{"plan": plan, **j} for j in found]})
    if fmt == "gitlab":  # for `parallel: matrix:`
        shards = ", ".join(json.dumps(j["shard"]) for j in found)
        return f"parallel:\n  matrix:\n    - PLAN: {json.dumps(plan)}\n      SHARD: [{shards}]\n"
    raise UserError(f"--format {fmt}: expected github, gitlab or json")


def main(root: Path, plan: str, fmt: str, shards: int) -> None:
    try:
        print(render(fmt, plan, jobs(plan, Workspace.from_env(root), shards)))
    except HvlabError as exc:
        print(f"hvlab: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
