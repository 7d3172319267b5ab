"""The build half of a cell: fetch -> patch -> configure -> build.

Each function runs one stage of one ``Scope`` through ``Session.stage``,
records its result and returns a typed outcome that carries the stage's
facts (commit, base commit, patchset hash, config hash, build id, kernel
release); the cell attaches those facts by value, never through shared
state.  ``build`` chains them the way every task that builds does.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hvlab.build import diagnostics, kselftest
from hvlab.build.builder import OBJECTS, Builder, Configured, config_inputs
from hvlab.build.diagnostics import Diagnostic
from hvlab.build.stage import (
    BuildResult,
    build_case,
    build_commit,
    kconfig_sha,
    make_step,
    warning_cases,
)
from hvlab.build.touched import BUILD_FILES, touched_dirs
from hvlab.checks import profiles
from hvlab.checks.profiles import Profile
from hvlab.checks.runner import run_checks
from hvlab.config import loader
from hvlab.errors import UserError
from hvlab.fetch import source
from hvlab.fetch.source import checkout_commit
from hvlab.git import Git
from hvlab.model import GitSource, KernelSpec, SeriesOrigin, SeriesSpec
from hvlab.patch import elsewhere, intake
from hvlab.patch.apply import Patched, apply_series
from hvlab.patch.discover import LoadedSeries, load_series_or_raise
from hvlab.patch.series import cover_body, mail_headers
from hvlab.report import seriesrecord
from hvlab.results import StageResult, Status, TestCase
from hvlab.tasks.session import Scope, Session
from hvlab.workspace import Workspace


def config_check(s: Session) -> None:
    """Validate every configuration file; one case per file, issues listed."""
    config, issues = loader.load(s.ws)
    by_file: dict[str, list[str]] = {}
    for issue in issues:
        by_file.setdefault(issue.mark.file, []).append(str(issue))
    cases = []
    shown = {s.ws.display(p) for p in config.files}
    for name in sorted(shown | set(by_file)):
        problems = by_file.get(name, [])
        status = Status.FAIL if problems else Status.PASS
        cases.append(TestCase(f"config: {name}", status,
                              problems[0] if problems else "", output="\n".join(problems)))
    for issue in issues:
        print(issue, file=sys.stderr if s.json_out else sys.stdout)
    s.json_extra["issues"] = [{"file": i.mark.file, "line": i.mark.line, "column": i.mark.col,
                               "field": i.key, "message": i.message} for i in issues]
    s.record(StageResult.from_cases("config", cases, 0.0), Scope("-"))
    counts = (f"{len(config.kernels)} kernels, {len(config.fragments)} fragments, "
              f"{len(config.series)} series, {len(config.hosts)} hosts, "
              f"{len(config.suites)} suites, {len(config.plans)} plans")
    if issues:
        s.progress.info(f"config: {len(issues)} error(s) in {s.ws.display(s.ws.configs)}")
        s.bad_input = True  # exit 2, not a kernel failure
        return
    s.progress.info(f"config: OK ({counts})")


@dataclass(frozen=True)
class BuildRequest:
    """What to build (kunit_tool's KunitBuildRequest pattern): one kernel, an
    optional series, extra fragments, and how."""

    kernel: str
    series: str = ""  # a series name or path; "" = the plain tree
    fragments: tuple[str, ...] = ()  # extra fragment files
    each_patch: bool = False
    force: bool = False
    jobs: int = 0  # 0: the number of cores
    warnings_baseline: str = ""
    use_ccache: bool = True
    offline: bool = False
    checkpatch: bool = True
    kselftests: tuple[tuple[str, ...], ...] = ()  # kselftest TARGETS lists to build too
    checks: str = "auto"  # the check stage's profile (checks/profiles.py), or none
    # nothing boots it: compile only the directories the series touches
    # (hvlab.build.touched) after modules_prepare; the plain tree builds whole
    touched_only: bool = False


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    result: BuildResult | None
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path | None:
        return self.result.path if self.ok and self.result is not None else None


def fetch(s: Session, scope: Scope, kernel: KernelSpec, offline: bool) -> source.Fetched:
    s.plan("fetch", scope)
    with s.stage("fetch", scope) as log:
        fetched, result = source.fetch(s.ws, kernel, offline, log, s.progress)
    s.attach(scope, fetched.facts)
    s.record(result, scope)
    return fetched


@dataclass(frozen=True)
class PatchOutcome:
    tree: Path
    commit: str
    ok: bool
    patched: Patched
    profile: Profile | None = None  # the check stage's (--checks), None: no checks
    kinds: tuple[str, ...] = ()  # each patch: "mail" or "diff"
    origin: SeriesOrigin | None = None


def patch(s: Session, scope: Scope, kernel: KernelSpec, series_arg: str, checkpatch: bool,
          offline: bool, materialize: bool = True, checks: str = "auto") -> PatchOutcome:
    """``checks``: the profile of checkpatch and of the check stage that follows a
    build (auto: netdev for drivers/net/hyperv); none: neither."""
    spec = intake.resolve(s.ws, s.config, series_arg, offline)
    series = load_series_or_raise(spec.name, spec.path, s.ws.display(spec.path),
                                  spec.origin.cover if spec.origin else "")
    touched = [f for p in series.patches for f in p.files]
    profile = profiles.pick(checks, touched)
    checkpatch_profile = (profile or profiles.pick("auto", touched)) \
        if checkpatch and checks != "none" else None
    s.plan("fetch", scope)
    s.plan("patch", scope)
    s.attach(scope, {"series": series.name, "patchset_hash": series.patchset_hash}
             | ({"series_origin": spec.origin.arg} if spec.origin else {}))
    fetched = fetch(s, scope, kernel, offline)
    with source.worktree_lock(s.ws, kernel.name, s.progress), \
            s.stage("patch", scope, f"{kernel.name} + {series.name}") as log:
        base, said = series_base(s.ws, kernel.name, fetched.commit, series.base_commit)
        intake_lines = ([said] if said else []) + intake_notes(spec)
        for line in intake_lines:
            s.progress.info(line)
        with log.open("a") as fh:
            fh.writelines(line + "\n" for line in intake_lines)
        patched, result = apply_series(s.ws, kernel.name, base, series, checkpatch_profile,
                                       log, s.progress, materialize)
    if patched.applied < len(series.patches) and isinstance(kernel.source, GitSource) \
            and kernel.source.other_refs:
        result = _elsewhere(s, kernel, kernel.source, series, offline, result)
    s.attach(scope, patched.facts | ({"checks": profile.name} if profile else {}))
    s.record(result, scope)
    seriesrecord.write(s.run.path, series_record(s.ws, scope.label, kernel.name, series_arg,
                                                 spec, series, patched))
    return PatchOutcome(patched.tree, patched.commit, patched.applied == len(series.patches),
                        patched, profile, tuple(p.kind for p in series.patches), spec.origin)


def _elsewhere(s: Session, kernel: KernelSpec, src: GitSource, series: LoadedSeries,
               offline: bool, result: StageResult) -> StageResult:
    """The failing patch's case also says on which of the kernel's other refs the
    series would apply."""
    line = elsewhere.describe(kernel.name, src.ref,
                              elsewhere.try_refs(s.ws, kernel.name, src, series, offline))
    s.progress.info(line)
    cases = tuple(dataclasses.replace(c, message=f"{c.message} {line}",
                                      evidence="\n".join(filter(None, [c.evidence or c.message,
                                                                        line])))
                  if c.status is Status.FAIL and not c.name.startswith("checkpatch: ") else c
                  for c in result.cases)
    return dataclasses.replace(result, cases=cases)


def series_record(ws: Workspace, cell: str, kernel: str, arg: str, spec: SeriesSpec,
                  series: LoadedSeries, patched: Patched) -> seriesrecord.SeriesRecord:
    """What report.mail and report.patchwork need to answer the series."""
    commits = Git(ws.store).out("rev-list", "--reverse", f"{patched.base}..{patched.commit}"
                                ).split() if patched.commit != patched.base else []
    sent = spec.origin.recipients if spec.origin else ()
    patches = []
    for p in series.patches:
        h = mail_headers(p.data) if p.kind == "mail" else {}
        patches.append(seriesrecord.PatchRecord(
            p.index, p.subject, " ".join(h.get("subject", "").split()), h.get("from", ""),
            h.get("message-id", "").strip().strip("<>"),
            sent[p.index - 1] if p.index <= len(sent) else (),
            commits[p.index - 1] if p.index <= len(commits) else ""))
    cover = mail_headers(series.cover.encode()) if series.cover else {}
    return seriesrecord.SeriesRecord(cell, kernel, series.name, arg,
                                     spec.origin.url if spec.origin else "",
                                     " ".join(cover.get("subject", "").split()),
                                     cover.get("message-id", "").strip().strip("<>"),
                                     patched.base, patched.commit, tuple(patches),
                                     cover_body(series.cover) if series.cover else "")


def series_base(ws: Workspace, kernel: str, source_commit: str,
                named: str) -> tuple[str, str]:
    """The commit to apply on: the series' ``base-commit:`` when it is in the
    kernel source's history (the store holds other kernels' commits too), else
    the source's commit; and the line that says so."""
    if not named:
        return source_commit, ""
    g = Git(ws.store)
    found = g.rev(named)
    if found and g.run("merge-base", "--is-ancestor", found, source_commit,
                       check=False)[0] == 0:
        return found, f"base-commit {named[:12]} named by the series: applied on it"
    return source_commit, (f"base-commit {named[:12]} named by the series is not in "
                           f"{kernel}'s source; applied on {source_commit[:12]} (the kernel "
                           "source) instead")


def intake_notes(spec: SeriesSpec) -> list[str]:
    """What the archive and b4 said about a fetched series."""
    if spec.origin is None:
        return []
    o = spec.origin
    lines = [f"series {spec.name} from {o.arg} ({'cached, --offline' if o.cached else o.url})"]
    lines += [f"  trailer from the thread: {subject}: {trailer}" for subject, trailer in o.trailers]
    lines += [f"  b4: {note}" for note in o.notes]
    return lines


def fragment_files(s: Session, kernel: KernelSpec, extra: Sequence[str]
                   ) -> list[tuple[str, Path]]:
    files = [(name, s.config.fragment(name).path) for name in kernel.config.fragments]
    for arg in extra:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"--fragment {arg}: no such file")
        files.append((str(path), path.resolve()))
    return files


def _kconfig_cases(configured: Configured, log: Path) -> list[TestCase]:
    cases = [TestCase(f"kconfig: CONFIG_{m.symbol}", Status.FAIL, m.describe(),
                      output=f"requested in fragment {m.fragment} line {m.line}", log_path=log)
             for m in configured.mismatches]
    if not cases:
        cases.append(TestCase(f"kconfig: {configured.requested} requested options verified",
                              Status.PASS, output="cached\n" if configured.cached else "",
                              log_path=log))
    return cases


def _baseline_kconfig_cases(base: Configured, log: Path) -> list[TestCase]:
    """The baseline's configuration only serves the warnings gate: an option it
    dropped is reported (SKIP: it is not the tested tree), and its build skipped."""
    name = "kconfig (baseline without the series)"
    if not base.mismatches:
        return [TestCase(f"{name}: {base.requested} requested options verified", Status.PASS,
                         output="cached\n" if base.cached else "", log_path=log)]
    return [TestCase(f"{name}: CONFIG_{m.symbol}", Status.SKIP,
                     f"{m.describe()}: the baseline is not built, new warnings are not gated",
                     output=f"requested in fragment {m.fragment} line {m.line}", log_path=log)
            for m in base.mismatches]


def configure(s: Session, scope: Scope, builder: Builder, tree: Path, commit: str,
              base_commit: str | None) -> tuple[Configured, Configured | None]:
    """The configure stage: the tested commit and, when a baseline build follows,
    the commit without the series, each verified against the fragments."""
    with s.stage("configure", scope) as log:
        t0 = time.monotonic()
        configured = builder.configure_at(tree, commit, kconfig_sha(s.ws, commit), log)
        cases = _kconfig_cases(configured, log)
        base = None
        if base_commit is not None:
            base = builder.configure_at(tree, base_commit, kconfig_sha(s.ws, base_commit), log)
            cases += _baseline_kconfig_cases(base, log)
    s.attach(scope, configured.facts)
    s.record(StageResult.from_cases(
        "configure", cases, time.monotonic() - t0, log,
        properties={"config_key": builder.config_key}, cached=configured.cached), scope)
    return configured, base


def _baseline_diagnostics(path_arg: str) -> list[Diagnostic] | None:
    if not path_arg:
        return None
    path = Path(path_arg)
    if not path.is_file():
        raise UserError(f"--warnings-baseline {path_arg}: no such file")
    with path.open(errors="backslashreplace") as fh:
        return diagnostics.parse(fh)


def build(s: Session, scope: Scope, req: BuildRequest) -> BuildOutcome:
    """Fetch, patch, configure and build; with ``req.kselftests`` also the
    kselftest collections of the same tree, as cases of the build stage."""
    kernel = s.config.kernel(req.kernel)
    inputs = config_inputs(kernel, fragment_files(s, kernel, req.fragments))
    inputs.requested()  # a bad fragment line fails now (file:line), before fetch and patch
    if req.each_patch and not req.series:
        raise UserError("--each-patch needs --series")
    baseline_diags = _baseline_diagnostics(req.warnings_baseline)
    for name in ("configure", "build"):
        s.plan(name, scope)
    base_commit: str | None = None
    if req.series:
        outcome = patch(s, scope, kernel, req.series, req.checkpatch, req.offline,
                        materialize=False, checks=req.checks)
        if not outcome.ok:
            return BuildOutcome(False, None)
        commit, base_commit = outcome.commit, outcome.patched.base
        if outcome.profile is not None:
            s.plan("check", scope)
    else:
        commit = fetch(s, scope, kernel, req.offline).commit
    builder = Builder(s.ws, kernel, inputs, req.jobs or os.cpu_count() or 1, req.use_ccache,
                      s.progress.log_line)
    if req.touched_only and base_commit is not None:
        store = Git(s.ws.store)
        changed = store.out("diff", "--name-only", base_commit, commit).split()
        builder.touched = touched_dirs(
            changed, builder.info.srcarch,
            lambda d: any(store.ok("cat-file", "-e", f"{commit}:{d}/{f}") for f in BUILD_FILES))
    with source.worktree_lock(s.ws, kernel.name, s.progress):
        tree = source.worktree_path(s.ws, kernel.name)
        if not (tree / ".git").exists():
            tree = source.checkout(s.ws, kernel.name, commit, s.progress)
        want_base = base_commit if baseline_diags is None else None
        configured, base_conf = configure(s, scope, builder, tree, commit, want_base)
        if configured.mismatches:
            names = ", ".join(f"CONFIG_{m.symbol}" for m in configured.mismatches)
            s.progress.info(f"configuration dropped requested options ({names}): "
                            "not building")
            return BuildOutcome(False, None)
        with s.stage("build", scope) as log:
            result, stage = _build_stage(s, builder, tree, commit, configured, base_commit,
                                         base_conf, baseline_diags, req, log)
        s.attach(scope, result.facts)
        s.record(stage, scope)
        if result.ok and result.path is not None and (result.path / "config").is_file():
            # the report links the configuration it built with (report.html's environment)
            shutil.copyfile(result.path / "config", s.run.log(f"config-{scope.label}"))
        if req.series and result.ok and outcome.profile is not None and base_commit:
            objects = result.path / OBJECTS if result.path is not None else None
            linked = frozenset(objects.read_text().split()) \
                if objects is not None and objects.is_file() else None
            check(s, scope, builder, tree, base_commit, commit, outcome, linked)
        return BuildOutcome(result.ok, result, s.run.facts_of(scope.label))


def check(s: Session, scope: Scope, builder: Builder, tree: Path, base: str, commit: str,
          outcome: PatchOutcome, linked: frozenset[str] | None = None) -> None:
    """The check stage: the bots' checks per patch (hvlab/checks/)."""
    assert outcome.profile is not None
    with s.stage("check", scope, f"{builder.kernel.name}: profile {outcome.profile.name}") \
            as log:
        t0 = time.monotonic()
        cases = run_checks(builder, tree, Git(s.ws.store), base, commit, outcome.profile,
                           outcome.kinds, outcome.origin, log,
                           lambda m: s.progress.stage("check", m), linked)
    s.record(StageResult.from_cases("check", cases, time.monotonic() - t0, log,
                                    properties={"profile": outcome.profile.name}), scope)


def _build_stage(s: Session, builder: Builder, tree: Path, commit: str,
                 configured: Configured, base_commit: str | None,
                 base_conf: Configured | None, baseline_diags: list[Diagnostic] | None,
                 req: BuildRequest, log: Path) -> tuple[BuildResult, StageResult]:
    """The baseline build (when it gates warnings), each patch, the tree itself
    and its kselftest collections: the build stage's cases."""
    name = builder.kernel.name
    t0 = time.monotonic()
    cases: list[TestCase] = []
    if base_conf is not None and base_commit is not None:
        label = f"build: {name} baseline (without the series)"
        if base_conf.mismatches:
            dropped = ", ".join(f"CONFIG_{m.symbol}" for m in base_conf.mismatches)
            cases.append(TestCase(label, Status.SKIP, f"not built: its configuration dropped "
                                  f"{dropped} (see configure); new warnings are not gated",
                                  log_path=log))
        else:
            s.progress.stage("build", f"{name} baseline (without the series)")
            base = build_commit(builder, tree, base_commit, base_conf, log, req.force)
            cases.append(build_case(label, base, []))
            baseline_diags = list(base.diagnostics) if base.ok else None
    if req.each_patch and base_commit is not None:
        cases += each_patch_cases(s, builder, tree, base_commit, commit, configured, log)
    s.progress.stage("build", name)
    result = build_commit(builder, tree, commit, configured, log, req.force)
    warnings = [d for d in result.diagnostics if d.kind == "warning"]
    base_keys = [d.key for d in baseline_diags or []]
    new = diagnostics.new_diagnostics(warnings, base_keys) if baseline_diags is not None \
        else []
    known = [d for d in warnings if d not in new]
    cases.insert(0, build_case(f"build: {name}", result, known, builder.scope()))
    cases += warning_cases(new, log)
    if result.ok and result.path is not None:
        for targets in req.kselftests:
            s.progress.stage("build", f"kselftest {' '.join(targets)}")
            cases.append(kselftest.build_collection(builder, tree, commit,
                                                    configured.config_text, result.path,
                                                    targets, log))
    props = {"warnings": str(len(warnings)), "new_warnings": str(len(new)),
             "build_scope": builder.scope()}
    if result.ccache:
        props.update({"ccache_hits": str(result.ccache.get("hits", 0)),
                      "ccache_misses": str(result.ccache.get("misses", 0))})
    return result, StageResult.from_cases("build", cases, time.monotonic() - t0, log,
                                          properties=props, cached=result.cached)


def each_patch_cases(s: Session, builder: Builder, tree: Path, base: str, commit: str,
                     configured: Configured, log: Path) -> list[TestCase]:
    """ktest's patchcheck: build after each patch; a patch fails its own case."""
    g = Git(s.ws.store)
    commits = g.out("rev-list", "--reverse", f"{base}..{commit}").split()
    targets = builder.targets(configured.config_text)
    checkout_commit(tree, base)
    builder.write_config(configured.config_text)
    _, state, _ = make_step(builder, tree, targets, log)
    cases: list[TestCase] = []
    previous = state
    for i, c in enumerate(commits, start=1):
        subject = g.out("log", "-1", "--format=%s", c)
        touched = set(g.out("diff-tree", "--no-commit-id", "--name-only", "-r", c).split())
        s.progress.stage("build", f"after patch {i}/{len(commits)}: {subject}")
        t0 = time.monotonic()
        checkout_commit(tree, c)
        ok, state, errors = make_step(builder, tree, targets, log)
        name = f"build after patch {i}: {subject}"
        took = time.monotonic() - t0
        if not ok:
            said = "\n".join(errors)
            cases.append(TestCase(name, Status.FAIL, f"build failed: {'; '.join(errors[:3])}",
                                  output=said, duration=took, log_path=log, evidence=said))
        else:
            before = [d.key for d in previous if d.file in touched]
            now = [d for d in state if d.file in touched and d.kind == "warning"]
            new = diagnostics.new_diagnostics(now, before)
            if new:
                said = "\n".join(d.describe() for d in new)
                cases.append(TestCase(name, Status.FAIL,
                                      f"new warning in a file it touches: {new[0].describe()}",
                                      output=said, duration=took, log_path=log, evidence=said))
            else:
                cases.append(TestCase(name, Status.PASS, duration=took, log_path=log))
        previous = state
    return cases
