"""What each task does, as library calls on a Session (tasks.py stays thin)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab.build import diagnostics as buildlog
from hvlab.build import kselftest
from hvlab.build.builder import Builder, Configured, config_inputs
from hvlab.build.diagnostics import Diagnostic
from hvlab.build.stage import (
    BuildResult,
    build_case,
    build_commit,
    make_step,
    tree_sha,
    warning_cases,
)
from hvlab.config import loader
from hvlab.errors import UserError
from hvlab.fetch import source
from hvlab.fetch.source import checkout_commit
from hvlab.git import Git
from hvlab.model import KernelSpec
from hvlab.patch.apply import Patched, apply_series
from hvlab.patch.discover import load_series_or_raise
from hvlab.results import StageResult, Status, TestCase
from hvlab.tasks.session import Session


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
        print(issue)
    s.run.add(StageResult.from_cases("config", cases, 0.0), "-")
    counts = (f"{len(config.kernels)} kernels, {len(config.fragments)} fragments, "
              f"{len(config.series)} series, {len(config.hosts)} hosts, "
              f"{len(config.suites)} suites, {len(config.plans)} plans")
    if issues:
        s.progress.info(f"config: {len(issues)} error(s) in {s.ws.display(s.ws.configs)}")
        s.exit_code = 2  # bad input, not a kernel failure
        return
    s.progress.info(f"config: OK ({counts})")


def fetch(s: Session, kernel_name: str, offline: bool) -> source.Fetched:
    kernel = s.config.kernel(kernel_name)
    s.run.plan("fetch", kernel.name)
    log = s.begin("fetch", kernel.name)
    fetched, result = source.fetch(s.ws, kernel, offline, log, s.progress)
    s.run.properties.update({"kernel": kernel.name, "commit": fetched.commit})
    s.record(result, kernel.name)
    return fetched


@dataclass(frozen=True)
class PatchOutcome:
    tree: Path
    commit: str
    ok: bool
    patched: Patched | None


def patch(s: Session, kernel_name: str, series_arg: str, checkpatch: bool,
          offline: bool, materialize: bool = True) -> PatchOutcome:
    kernel = s.config.kernel(kernel_name)
    spec = s.config.resolve_series(series_arg)
    series = load_series_or_raise(spec.name, spec.path, s.ws.display(spec.path))
    s.run.plan("fetch", kernel.name)
    s.run.plan("patch", kernel.name)
    fetched = fetch(s, kernel_name, offline)
    s.run.properties["patchset_hash"] = series.patchset_hash
    s.run.properties["series"] = series.name
    with source.worktree_lock(s.ws, kernel.name, s.progress):
        log = s.begin("patch", kernel.name, detail=f"{kernel.name} + {series.name}")
        patched, result = apply_series(s.ws, kernel.name, fetched.commit, series, checkpatch,
                                       log, s.progress, materialize)
    s.record(result, kernel.name)
    s.run.properties["commit"] = patched.commit
    applied_all = patched.applied == len(series.patches)
    return PatchOutcome(patched.tree, patched.commit, applied_all, patched)


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    result: BuildResult | None


def fragment_files(s: Session, kernel: KernelSpec, extra: list[str]) -> list[tuple[str, Path]]:
    files = [(name, s.config.fragment(name).path) for name in kernel.config.fragments]
    for arg in extra:
        path = Path(arg).expanduser()
        if not path.is_file():
            raise UserError(f"--fragment {arg}: no such file")
        files.append((str(path), path.resolve()))
    return files


def _configure(s: Session, builder: Builder, tree: Path, commit: str) -> Configured:
    log = s.begin("configure", builder.kernel.name)
    t0 = time.monotonic()
    sha = tree_sha(s.ws, commit)
    configured = builder.configure_at(tree, commit, sha, log)
    cases = [TestCase(f"kconfig: CONFIG_{m.symbol}", Status.FAIL, m.describe(),
                      output=f"requested in fragment {m.fragment} line {m.line}", log_path=log)
             for m in configured.mismatches]
    if not cases:
        cases.append(TestCase(f"kconfig: {configured.requested} requested options verified",
                              Status.PASS, output="cached\n" if configured.cached else "",
                              log_path=log))
    s.record(StageResult.from_cases(
        "configure", cases, time.monotonic() - t0, log,
        properties={"config_key": builder.config_key,
                    "cached": str(configured.cached).lower()}), builder.kernel.name)
    return configured


def build(s: Session, kernel_name: str, series_arg: str, fragments: list[str], each_patch: bool,
          force: bool, jobs: int, warnings_baseline: str, use_ccache: bool,
          offline: bool = False,
          kselftests: Sequence[tuple[str, ...]] = ()) -> BuildOutcome:
    """Fetch, patch, configure and build; with ``kselftests`` (target lists) also
    the kselftest collections of the same tree, as cases of the build stage."""
    kernel = s.config.kernel(kernel_name)
    inputs = config_inputs(kernel, fragment_files(s, kernel, fragments))
    inputs.requested()  # a bad fragment line fails now (file:line), before fetch and patch
    if each_patch and not series_arg:
        raise UserError("--each-patch needs --series")
    baseline_diags: list[Diagnostic] | None = None
    if warnings_baseline:
        path = Path(warnings_baseline)
        if not path.is_file():
            raise UserError(f"--warnings-baseline {warnings_baseline}: no such file")
        with path.open(errors="replace") as fh:
            baseline_diags = buildlog.parse(fh)
    for stage in ("configure", "build"):
        s.run.plan(stage, kernel.name)
    base_commit: str | None = None
    if series_arg:
        outcome = patch(s, kernel_name, series_arg, True, offline, materialize=False)
        if not outcome.ok:
            return BuildOutcome(False, None)
        commit = outcome.commit
        assert outcome.patched is not None
        base_commit = outcome.patched.base
    else:
        commit = fetch(s, kernel_name, offline).commit
    builder = Builder(s.ws, kernel, inputs, jobs or os.cpu_count() or 1, use_ccache,
                      s.progress.log_line)
    with source.worktree_lock(s.ws, kernel.name, s.progress):
        tree = source.worktree_path(s.ws, kernel.name)
        if not (tree / ".git").exists():
            tree = source.checkout(s.ws, kernel.name, commit, s.progress)
        configured = _configure(s, builder, tree, commit)
        if configured.mismatches:
            names = ", ".join(f"CONFIG_{m.symbol}" for m in configured.mismatches)
            s.progress.info(f"configuration dropped requested options ({names}): "
                            "not building")
            return BuildOutcome(False, None)
        log = s.begin("build", kernel.name)
        t0 = time.monotonic()
        cases: list[TestCase] = []
        if baseline_diags is None and base_commit is not None:
            s.progress.stage("build", f"{kernel.name} baseline (without the series)")
            base_conf = builder.configure_at(tree, base_commit, tree_sha(s.ws, base_commit), log)
            base = build_commit(builder, tree, base_commit, base_conf, log, force)
            cases.append(build_case(f"build: {kernel.name} baseline (without the series)",
                                    base, []))
            baseline_diags = list(base.diagnostics) if base.ok else None
        if each_patch and base_commit is not None:
            cases += each_patch_cases(s, builder, tree, base_commit, commit, configured, log)
        s.progress.stage("build", kernel.name)
        result = build_commit(builder, tree, commit, configured, log, force)
        warnings = [d for d in result.diagnostics if d.kind == "warning"]
        base_keys = [d.key for d in baseline_diags or []]
        new = buildlog.new_diagnostics(warnings, base_keys) if baseline_diags is not None \
            else []
        known = [d for d in warnings if d not in new]
        cases.insert(0, build_case(f"build: {kernel.name}", result, known))
        cases += warning_cases(new, log)
        if result.ok and result.path is not None:
            for targets in kselftests:
                s.progress.stage("build", f"kselftest {' '.join(targets)}")
                cases.append(kselftest.build_collection(builder, tree, commit,
                                                        configured.config_text, result.path,
                                                        targets, log))
        props = {"build_id": result.build_id, "kernelrelease": result.kernelrelease,
                 "cached": str(result.cached).lower(), "warnings": str(len(warnings)),
                 "new_warnings": str(len(new))}
        if result.ccache:
            props.update({"ccache_hits": str(result.ccache.get("hits", 0)),
                          "ccache_misses": str(result.ccache.get("misses", 0))})
        s.record(StageResult.from_cases("build", cases, time.monotonic() - t0, log,
                                        properties=props,
                                        facts={"build_dir": str(result.path or "")}),
                 kernel.name)
        s.run.properties.update({"build_id": result.build_id,
                                 "config_key": builder.config_key})
        return BuildOutcome(result.ok, result)


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
        if not ok:
            cases.append(TestCase(name, Status.FAIL, f"build failed: {'; '.join(errors[:3])}",
                                  output="\n".join(errors), duration=time.monotonic() - t0,
                                  log_path=log))
        else:
            before = [d.key for d in previous if d.file in touched]
            now = [d for d in state if d.file in touched and d.kind == "warning"]
            new = buildlog.new_diagnostics(now, before)
            if new:
                cases.append(TestCase(name, Status.FAIL,
                                      f"new warning in a file it touches: {new[0].describe()}",
                                      output="\n".join(d.describe() for d in new),
                                      duration=time.monotonic() - t0, log_path=log))
            else:
                cases.append(TestCase(name, Status.PASS, duration=time.monotonic() - t0,
                                      log_path=log))
        previous = state
    return cases
