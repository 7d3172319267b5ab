"""`inv run`: a plan's matrix, cell by cell, into one run folder.

Cells are kernels x series (``none`` = the unpatched tree) x variants x
hosts; each cell boots its build on its host and runs the plan's suites.
Builds are shared between cells (one per kernel x series x variant) and run
first, one at a time (make uses every core); then every host works through
its cells in a thread of its own, one cell at a time (the host lease).  A
stage whose input failed is skipped with the reason.  ``baseline: true``
adds the ``none`` series and compares every cell with its baseline cell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab import cancel
from hvlab.build import kselftest
from hvlab.config.loader import Config
from hvlab.errors import HvlabError, UserError
from hvlab.model import NO_SERIES, PlanSpec, Variant
from hvlab.patch.discover import load_series_or_raise
from hvlab.report import compare
from hvlab.results import StageResult, Status, TestCase
from hvlab.tasks import boot as hostflows
from hvlab.tasks import stages as flows
from hvlab.tasks.session import Session
from hvlab.workspace import Workspace

CELL_PROPS = ("series", "patchset_hash", "commit", "build_id", "config_key", "kernel_release")


@dataclass(frozen=True)
class BuildKey:
    kernel: str
    series: str  # a series name or "none"
    variant: Variant

    @property
    def label(self) -> str:
        parts = [self.kernel, self.series]
        if self.variant.name != "default":
            parts.append(self.variant.name)
        return "+".join(parts)


@dataclass(frozen=True)
class Cell:
    build: BuildKey
    host: str
    suites: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.build.label

    @property
    def id(self) -> str:
        return f"{self.label}@{self.host}"


def cells(plan: PlanSpec, kernels: Sequence[str] = (), series: Sequence[str] = (),
          hosts: Sequence[str] = (), suites: Sequence[str] = ()) -> list[Cell]:
    """The matrix in a fixed order (overrides replace the plan's lists).  Pure."""
    series_list = list(series or plan.series)
    if plan.baseline and NO_SERIES not in series_list:
        series_list.append(NO_SERIES)
    out = []
    for k in kernels or plan.kernels:
        for sr in series_list:
            for v in plan.variants:
                for h in hosts or plan.hosts:
                    out.append(Cell(BuildKey(k, sr, v), h, tuple(suites or plan.suites)))
    return out


def shard(all_cells: list[Cell], spec: str) -> list[Cell]:
    """``I/N``: every N-th cell from the I-th (1-based), a deterministic subset."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec}: expected I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise UserError(f"--shard {spec}: I must be between 1 and N")
    return all_cells[i - 1::n]


def describe(ws: Workspace, config: Config, plan_cells: list[Cell]) -> list[str]:
    """--dry-run: each cell, with what is cached; reads only configs and metadata."""
    index = _read_index(ws)
    lines = []
    seen: set[BuildKey] = set()
    for cell in plan_cells:
        b = cell.build
        phash = ""
        if b.series != NO_SERIES:
            spec = config.resolve_series(b.series)
            phash = load_series_or_raise(spec.name, spec.path,
                                         ws.display(spec.path)).patchset_hash
        build = index.get(_index_key(b, phash), "")
        if build and not (ws.builds / build / "metadata.json").is_file():
            build = ""
        state = (f"build cached ({build[:12]})" if build else "build would run") \
            if b not in seen else "build shared"
        seen.add(b)
        lines.append(f"{cell.id}: {state}; boot + {', '.join(cell.suites) or 'no suites'}")
    return lines


def _index_file(ws: Workspace) -> Path:
    return ws.cache / "run-builds.json"


def _index_key(b: BuildKey, patchset_hash: str) -> str:
    return f"{b.kernel}|{patchset_hash}|{','.join(b.variant.fragments)}"


def _read_index(ws: Workspace) -> dict[str, str]:
    """(kernel, patchset, variant) -> the build id `inv run` last got for them."""
    try:
        data = json.loads(_index_file(ws).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember(ws: Workspace, b: BuildKey, patchset_hash: str, build_id: str) -> None:
    index = _read_index(ws)
    index[_index_key(b, patchset_hash)] = build_id
    path = _index_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(path)


class _Runner:
    def __init__(self, s: Session, force: bool, jobs: int, use_ccache: bool,
                 offline: bool) -> None:
        self.s = s
        self.force = force
        self.jobs = jobs
        self.use_ccache = use_ccache
        self.offline = offline
        self.built: dict[BuildKey, tuple[Path | None, dict[str, str]]] = {}

    def build(self, key: BuildKey, suites: Sequence[str]) -> None:
        """Build ``key`` (and the kselftest collections ``suites`` need)."""
        s = self.s
        props: dict[str, str] = {"series": key.series}
        fragments = [str(s.config.fragment(f).path) for f in key.variant.fragments]
        with s.run.cell(key.kernel, key.label, props):
            try:
                built = flows.build(s, key.kernel, "" if key.series == NO_SERIES else key.series,
                                    fragments, False, self.force, self.jobs, "",
                                    self.use_ccache, self.offline,
                                    kselftest.targets_of(s.config.suite(n) for n in suites))
                path = built.result.path if built.ok and built.result is not None else None
            except HvlabError as exc:
                self._error(key.kernel, "build", "local", exc)
                path = None
        for k in CELL_PROPS:  # the run's properties are per cell here
            if k in s.run.properties:
                props[k] = s.run.properties.pop(k)
        if path is not None:
            _remember(s.ws, key, props.get("patchset_hash", ""), path.name)
        self.built[key] = (path, props)

    def _error(self, kernel: str, stage: str, host: str, exc: HvlabError) -> None:
        self.s.run.add(StageResult.from_cases(stage, [TestCase(
            f"{stage}: {host}", Status.ERROR, str(exc))], 0.0), kernel, host)
        self.s.progress.info(f"{host}: {stage}: ERROR: {exc}")

    def host_cells(self, host: str, todo: list[Cell]) -> None:
        """One host's cells, one at a time."""
        s = self.s
        spec = s.config.host(host)
        for cell in todo:
            cancel.check()
            path, props = self.built[cell.build]
            with s.run.cell(cell.build.kernel, cell.label, props):
                suites = [s.config.suite(n) for n in cell.suites]
                if path is None:
                    continue  # planned stages are reported skipped: the build failed
                try:
                    hostflows.boot_build(s, spec, path, cell.build.kernel, suites,
                                         cell.build.series)
                except HvlabError as exc:
                    self._error(cell.build.kernel, s.current[0] if s.current else "boot",
                                host, exc)


def run_plan(s: Session, plan: PlanSpec, plan_cells: list[Cell], force: bool, jobs: int,
             use_ccache: bool, offline: bool, gate: str) -> None:
    if not plan_cells:
        raise UserError(f"plan '{plan.name}': no cells (no kernels or no hosts)")
    runner = _Runner(s, force, jobs, use_ccache, offline)
    for cell in plan_cells:  # everything planned, so a stopped run reports what it skipped
        with s.run.cell(cell.build.kernel, cell.label, {}):
            for stage in ("fetch", "configure", "build"):
                s.run.plan(stage, cell.build.kernel)
            hostflows.plan_cell(s, cell.build.kernel, s.config.host(cell.host),
                                [s.config.suite(n) for n in cell.suites])
    s.progress.info(f"plan {plan.name}: {len(plan_cells)} cells on "
                    f"{len({c.host for c in plan_cells})} hosts")
    suites_of: dict[BuildKey, dict[str, None]] = {}
    for cell in plan_cells:
        suites_of.setdefault(cell.build, {}).update(dict.fromkeys(cell.suites))
    for key, suites in suites_of.items():
        runner.build(key, list(suites))
    by_host: dict[str, list[Cell]] = {}
    for cell in plan_cells:
        by_host.setdefault(cell.host, []).append(cell)
    failures: list[BaseException] = []
    finished = {h: threading.Event() for h in by_host}

    def work(host: str, todo: list[Cell]) -> None:
        try:
            runner.host_cells(host, todo)
        except BaseException as exc:  # handed to the main thread
            failures.append(exc)
        finally:
            finished[host].set()

    for h, todo in by_host.items():
        threading.Thread(target=work, args=(h, todo), name=f"host-{h}", daemon=True).start()
    # Wait on events, not Thread.join: a signal raised inside join() can leave
    # the thread marked finished while it still runs (CPython), and the process
    # would then exit under it, leaving its QEMU behind.
    try:
        for event in finished.values():
            while not event.wait(0.5):
                pass
    except BaseException as exc:
        # the signal reached this thread only: stop the hosts' threads, which stop
        # their QEMU processes, close their sessions and release their hosts
        cancel.request(str(exc) or "interrupted by SIGINT")
        deadline = time.monotonic() + 8
        for event in finished.values():
            event.wait(max(deadline - time.monotonic(), 0.1))
        s.current = ("run", "-", "local")  # the hosts recorded their own stages
        raise
    finally:
        cancel.reset()
    if failures:
        raise failures[0]
    if plan.baseline:
        _compare_with_baseline(s, plan_cells)
    if gate == "regressions" or (gate == "" and plan.gate == "regressions"):
        s.exit_code = _gate_regressions(s)


def _results(s: Session) -> dict[tuple[str, str], compare.CaseResult]:
    from hvlab.report import junit

    out = {}
    for r in s.run.recorded:
        cls = junit.classname(r.kernel, r.host, r.stage.name)
        for c in r.stage.cases:
            out[(cls, c.name)] = compare.CaseResult(c.status.value,
                                                    c.properties.get("flaky") == "true",
                                                    c.message)
    return out


def _compare_with_baseline(s: Session, plan_cells: list[Cell]) -> None:
    """Every cell against the ``none`` cell of the same kernel, variant and host."""
    from hvlab.report import junit

    results = _results(s)
    classes: dict[tuple[str, str], str] = {}
    for cell in plan_cells:
        if cell.build.series == NO_SERIES:
            continue
        base = dataclasses.replace(cell.build, series=NO_SERIES).label
        for (cls, name), now in results.items():
            prefix = junit.classname(cell.label, cell.host, "")
            if not cls.startswith(prefix[:-1]):
                continue
            stage = cls[len(prefix) - 1:]
            before = results.get((junit.classname(base, cell.host, "")[:-1] + stage, name))
            one = compare.classify({(cls, name): now},
                                   {(cls, name): before} if before else {})
            classes[(cls, name)] = one[(cls, name)]
    s.run.classes = classes
    regressions = sum(c == compare.REGRESSION for c in classes.values())
    s.progress.info(f"against the unpatched baseline: {regressions} regressions")


def _gate_regressions(s: Session) -> int:
    results = _results(s)
    classes = s.run.classes or {}
    known = {k: compare.KnownFailure(k[1], v) for k, v in s.run.known.items()}
    return compare.gate(results, classes, known, "regressions")


def reproduce(s: Session, argv: Sequence[str]) -> None:
    """reproduce.sh: the exact command, with the commits it resolved to."""
    commits = sorted({f"{r.kernel}: {r.extra.get('commit') or ''}" for r in s.run.recorded
                      if r.extra.get("commit")})
    env = [f"export {k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
           if k in ("HVLAB_CONFIGS", "HVLAB_KERNELS", "HVLAB_REPORTS")]
    text = ["#!/bin/sh", "# Re-run this hvlab run: the same plan and overrides; the tree",
            "# commits it resolved to (after the series) were:",
            *[f"#   {c}" for c in commits],
            f"cd {shlex.quote(str(s.ws.root))} || exit 2", *env,
            shlex.join([".venv/bin/inv", *argv])]
    path = s.run.path / "reproduce.sh"
    path.write_text("\n".join(text) + "\n")
    path.chmod(0o755)
