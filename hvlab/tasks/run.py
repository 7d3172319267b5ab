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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab import cancel
from hvlab.config.pairing import Arches, boot_hosts
from hvlab.config.tables import Config
from hvlab.errors import HvlabError, Interrupted, UserError
from hvlab.hosts.base import Host
from hvlab.model import NO_SERIES, PlanSpec, Variant
from hvlab.patch import intake
from hvlab.patch.discover import load_series_or_raise
from hvlab.report import compare, junit
from hvlab.results import StageResult, Status, TestCase
from hvlab.tasks.boot import boot_and_test, host_of, kselftest_targets, plan_cell
from hvlab.tasks.session import Gate, Scope, Session, describe_exception, recorded
from hvlab.tasks.stages import BuildOutcome, BuildRequest, build
from hvlab.workspace import Workspace


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


BUILD_ONLY = ""  # the host of a cell that is built, never booted


@dataclass(frozen=True)
class Cell:
    build: BuildKey
    host: str  # BUILD_ONLY for a build_only kernel
    suites: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.build.label

    @property
    def id(self) -> str:
        return f"{self.label}@{self.host}" if self.host else self.label


def cells(plan: PlanSpec, kernels: Sequence[str] = (), series: Sequence[str] = (),
          hosts: Sequence[str] = (), suites: Sequence[str] = (),
          arches: Arches | None = None) -> list[Cell]:
    """The matrix in a fixed order (overrides replace the plan's lists): each
    kernel on each host of its arch, or built only (``build_only``).  A kernel no
    host boots is a UserError.  Pure."""
    arches = arches or Arches()
    series_list = list(series or plan.series)
    if plan.baseline and NO_SERIES not in series_list:
        series_list.append(NO_SERIES)
    out = []
    for k in kernels or plan.kernels:
        if k in plan.build_only:
            on = [BUILD_ONLY]
        else:
            on, why = boot_hosts(k, arches.kernels.get(k, "x86_64"), list(hosts or plan.hosts),
                                 arches.hosts)
            if why:
                raise UserError(f"plan '{plan.name}': {why}")
        for sr in series_list:
            for v in plan.variants:
                for h in on:
                    out.append(Cell(BuildKey(k, sr, v), h,
                                    tuple(suites or plan.suites) if h else ()))
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


@dataclass(frozen=True)
class CellPlan:
    """What ``inv run`` would do for one cell (``--dry-run``)."""

    cell: str
    build: str  # cached | would run | shared | not fetched
    build_id: str  # the cached build, when there is one
    suites: tuple[str, ...]
    series: str = ""

    built_only: bool = False

    def line(self) -> str:
        state = {"cached": f"build cached ({self.build_id[:12]})", "shared": "build shared",
                 "not fetched": f"build would run (series {self.series} not fetched yet)"
                 }.get(self.build, "build would run")
        then = "built only, not booted" if self.built_only else \
            f"boot + {', '.join(self.suites) or 'no suites'}"
        return f"{self.cell}: {state}; {then}"

    def as_json(self) -> dict[str, object]:
        return {"cell": self.cell, "build": self.build, "build_id": self.build_id or None,
                "suites": list(self.suites), "series": self.series,
                "boots": not self.built_only}


def describe(ws: Workspace, config: Config, plan_cells: list[Cell]) -> list[CellPlan]:
    """--dry-run: each cell, with what is cached; reads only configs and metadata."""
    index = _read_index(ws)
    out = []
    seen: set[BuildKey] = set()
    for cell in plan_cells:
        b = cell.build
        phash = ""
        suites = tuple(cell.suites)
        if b.series != NO_SERIES:
            try:  # a lore: or git: series as last fetched: a dry run fetches nothing
                spec = intake.resolve(ws, config, b.series, offline=True)
            except UserError:
                out.append(CellPlan(cell.id, "not fetched", "", suites, b.series,
                                    cell.host == BUILD_ONLY))
                continue
            phash = load_series_or_raise(spec.name, spec.path,
                                         ws.display(spec.path)).patchset_hash
        build = index.get(_index_key(b, phash, cell.host == BUILD_ONLY), "")
        if build and not (ws.builds / build / "metadata.json").is_file():
            build = ""
        state = ("cached" if build else "would run") if b not in seen else "shared"
        seen.add(b)
        series = "" if b.series == NO_SERIES else b.series
        out.append(CellPlan(cell.id, state, build if state == "cached" else "", suites, series,
                            cell.host == BUILD_ONLY))
    return out


def _index_file(ws: Workspace) -> Path:
    return ws.cache / "run-builds.json"


def _index_key(b: BuildKey, patchset_hash: str, touched_only: bool) -> str:
    """A touched-only build (a record, no image) and a full one differ."""
    scope = "|touched" if touched_only else ""
    return f"{b.kernel}|{patchset_hash}|{','.join(b.variant.fragments)}{scope}"


def _read_index(ws: Workspace) -> dict[str, str]:
    """(kernel, patchset, variant) -> the build id `inv run` last got for them."""
    try:
        data = json.loads(_index_file(ws).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember(ws: Workspace, b: BuildKey, patchset_hash: str, touched_only: bool,
              build_id: str) -> None:
    index = _read_index(ws)
    index[_index_key(b, patchset_hash, touched_only)] = build_id
    path = _index_file(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(path)


@dataclass(frozen=True)
class RunOptions:
    """How `inv run` builds (the plan says what)."""

    force: bool = False
    jobs: int = 0
    use_ccache: bool = True
    offline: bool = False
    checks: str = "auto"  # the check stage's profile


@dataclass(frozen=True)
class Steps:
    """What a matrix does for a cell: build it, and find its host.  The real
    stages and host registry by default; the unit tier hands in fakes."""

    build: Callable[[Session, Scope, BuildRequest], BuildOutcome] = build
    host: Callable[[Session, str], Host] = host_of


class Matrix:
    """A plan's cells: builds first (one at a time: make uses every core), then
    every host works through its cells in a thread of its own."""

    def __init__(self, s: Session, opts: RunOptions, steps: Steps) -> None:
        self.s = s
        self.opts = opts
        self.steps = steps
        self.built: dict[BuildKey, Path | None] = {}
        self.hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def host(self, name: str) -> Host:
        with self._lock:
            if name not in self.hosts:
                self.hosts[name] = self.steps.host(self.s, name)
            return self.hosts[name]

    def plan(self, cell: Cell) -> None:
        """Everything a cell will run, so a stopped run reports what it skipped."""
        scope = Scope(cell.label)
        for stage in ("fetch", "configure", "build"):
            self.s.plan(stage, scope)
        if cell.host == BUILD_ONLY:
            return
        plan_cell(self.s, scope.on(cell.host), self.host(cell.host),
                  [self.s.config.suite(n) for n in cell.suites])

    def build(self, key: BuildKey, suites: Sequence[str], touched_only: bool = False) -> None:
        """Build ``key`` (and the kselftest collections ``suites`` need); a key
        nothing boots compiles only what its series touches (``touched_only``)."""
        s, scope = self.s, Scope(key.label)
        series = "" if key.series == NO_SERIES else key.series
        s.attach(scope, {"kernel": key.kernel, "series": key.series})
        req = BuildRequest(key.kernel, series,
                           tuple(str(s.config.fragment(f).path) for f in key.variant.fragments),
                           force=self.opts.force, jobs=self.opts.jobs,
                           use_ccache=self.opts.use_ccache, offline=self.opts.offline,
                           kselftests=kselftest_targets(s, suites), checks=self.opts.checks,
                           touched_only=touched_only)
        path = None
        try:
            outcome = self.steps.build(s, scope, req)
            path = outcome.path
            if path is not None:
                _remember(s.ws, key, outcome.facts.get("patchset_hash", ""), touched_only,
                          path.name)
        except HvlabError as exc:
            self._error(scope, "build", exc)
        self.built[key] = path

    def _error(self, scope: Scope, stage: str, exc: HvlabError) -> None:
        if isinstance(exc, Interrupted):
            raise exc
        if not recorded(exc):  # it happened outside a stage: filed under ``stage``
            self.s.record(StageResult.from_cases(stage, [TestCase(
                f"{stage}: {scope.host}", Status.ERROR, str(exc))], 0.0), scope)
        self.s.progress.info(f"{scope.label}@{scope.host}: {stage}: ERROR: {exc}")

    def host_cells(self, host: str, todo: list[Cell]) -> None:
        """One host's cells, one at a time (the host lease); then the host is closed."""
        try:
            self._host_cells(host, todo)
        finally:
            if host in self.hosts:
                self.hosts[host].close()

    def _host_cells(self, host: str, todo: list[Cell]) -> None:
        for cell in todo:
            cancel.check()
            path = self.built[cell.build]
            if path is None:
                continue  # planned stages are reported skipped: the build failed
            scope = Scope(cell.label)
            try:
                boot_and_test(self.s, scope, self.host(host),
                              path, [self.s.config.suite(n) for n in cell.suites],
                              cell.build.series, cell.build.kernel)
            except HvlabError as exc:
                self._error(scope.on(host), "boot", exc)


def run_plan(s: Session, plan: PlanSpec, plan_cells: list[Cell], opts: RunOptions,
             steps: Steps | None = None) -> None:
    if not plan_cells:
        raise UserError(f"plan '{plan.name}': no cells (no kernels or no hosts)")
    if s.gate is None:
        s.gate = Gate(plan.gate)
    matrix = Matrix(s, opts, steps or Steps())
    for cell in plan_cells:
        matrix.plan(cell)
    s.progress.info(f"plan {plan.name}: {len(plan_cells)} cells on "
                    f"{len({c.host for c in plan_cells} - {BUILD_ONLY})} hosts")
    suites_of: dict[BuildKey, dict[str, None]] = {}
    booted: set[BuildKey] = set()
    for cell in plan_cells:
        suites_of.setdefault(cell.build, {}).update(dict.fromkeys(cell.suites))
        if cell.host != BUILD_ONLY:
            booted.add(cell.build)
    for key, suites in suites_of.items():
        matrix.build(key, list(suites), touched_only=key not in booted)
    by_host: dict[str, list[Cell]] = {}
    for cell in plan_cells:
        if cell.host != BUILD_ONLY:
            by_host.setdefault(cell.host, []).append(cell)
    _in_parallel(s, matrix, by_host)
    if plan.baseline:
        _compare_with_baseline(s, plan_cells)


def _in_parallel(s: Session, matrix: Matrix, by_host: dict[str, list[Cell]]) -> None:
    """Each host's cells in a thread of its own; an interrupt stops them all."""
    failures: list[BaseException] = []
    finished = {h: threading.Event() for h in by_host}

    def work(host: str, todo: list[Cell]) -> None:
        try:
            matrix.host_cells(host, todo)
        except BaseException as exc:  # handed to the main thread
            failures.append(exc)
        finally:
            finished[host].set()

    # Wait on events, not Thread.join: a signal raised inside join() can leave
    # the thread marked finished while it still runs (CPython), and the process
    # would then exit under it, leaving its QEMU behind.  The threads start
    # inside the try: a signal while the second one starts must stop the first.
    threads: dict[str, threading.Thread] = {}
    try:
        for h, todo in by_host.items():
            threads[h] = threading.Thread(target=work, args=(h, todo), name=f"host-{h}",
                                          daemon=True)
            threads[h].start()
        for event in finished.values():
            while not event.wait(0.5):
                pass
    except BaseException as exc:
        # the signal reached this thread only: stop the hosts' threads, which stop
        # their QEMU processes, close their sessions and release their hosts
        cancel.request(describe_exception(exc))
        deadline = time.monotonic() + 8
        for h, thread in threads.items():
            if thread.ident is not None:  # it started (perhaps while the signal came)
                finished[h].wait(max(deadline - time.monotonic(), 0.1))
        raise
    finally:
        if all(not t.is_alive() for t in threads.values()):
            cancel.reset()  # else the stop request stands for the threads still running
    if failures:
        raise failures[0]


def _compare_with_baseline(s: Session, plan_cells: list[Cell]) -> None:
    """Every cell against the ``none`` cell of the same kernel, variant and host."""
    results = s.run.case_results()
    classes: dict[tuple[str, str], compare.Class] = {}
    for cell in plan_cells:
        if cell.build.series == NO_SERIES:
            continue
        base = dataclasses.replace(cell.build, series=NO_SERIES).label
        for where in (cell.host, "local"):  # its host's stages and its build's
            prefix = junit.classname(cell.label, where, "")[:-1]
            base_prefix = junit.classname(base, where, "")[:-1]
            for (cls, name), now in results.items():
                if not cls.startswith(prefix):
                    continue
                before = results.get((base_prefix + cls[len(prefix):], name))
                one = compare.classify({(cls, name): now},
                                       {(cls, name): before} if before else {})
                classes[(cls, name)] = one[(cls, name)]
    s.run.classes = classes
    regressions = sum(c == compare.REGRESSION for c in classes.values())
    s.progress.info(f"against the unpatched baseline: {regressions} regressions")


def reproduce(s: Session, argv: Sequence[str]) -> None:
    """reproduce.sh: the exact command, with the commits it resolved to."""
    labels = {r.kernel for r in s.run.recorded}
    commits = sorted(f"{label}: {s.run.facts_of(label)['commit']}" for label in labels
                     if s.run.facts_of(label).get("commit"))
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
