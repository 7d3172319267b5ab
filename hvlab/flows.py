"""What each task does, as library calls on a Session (tasks.py stays thin)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import source
from .config import loader
from .patches.apply import Patched, apply_series
from .patches.discover import load_series_or_raise
from .results import StageResult, Status, TestCase
from .session import Session


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
          offline: bool) -> PatchOutcome:
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
                                       log, s.progress)
    s.record(result, kernel.name)
    s.run.properties["commit"] = patched.commit
    applied_all = patched.applied == len(series.patches)
    return PatchOutcome(patched.tree, patched.commit, applied_all, patched)
