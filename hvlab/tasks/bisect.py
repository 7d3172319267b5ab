"""`inv bisect`: git bisect driven by build, boot or test outcomes.

Each step builds the commit git bisect checked out (the kernel's config,
cached builds reused); with ``--step boot`` or ``test`` it boots the build
on the host (any kind, through the host interface) and runs the suites.  A
commit that does not build is skipped (``git bisect skip``) unless the step is ``build`` or
``skip_build_failures`` is off.  Every step is a JUnit case; the last one
names the first bad commit and its subject.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hvlab.build.builder import Builder, config_inputs
from hvlab.build.stage import build_commit, kconfig_sha
from hvlab.errors import HvlabError, InfraError, UserError
from hvlab.fetch import source
from hvlab.git import Git
from hvlab.hosts.base import Host
from hvlab.model import SuiteSpec
from hvlab.results import StageResult, Status, TestCase
from hvlab.suites.builtin import GuestContext
from hvlab.suites.runner import run_suite
from hvlab.tasks.boot import host_of
from hvlab.tasks.session import Scope, Session
from hvlab.tasks.stages import fetch, fragment_files

MAX_STEPS = 64


class _Step:
    def __init__(self, s: Session, builder: Builder, tree: Path, step: str,
                 host: Host | None, suites: list[SuiteSpec], test: str,
                 skip_build_failures: bool, log: Path) -> None:
        self.s, self.builder, self.tree, self.step = s, builder, tree, step
        self.host, self.suites, self.test = host, suites, test
        self.skip_build_failures = skip_build_failures
        self.log = log

    def verdict(self, commit: str) -> tuple[str, str]:
        """(good | bad | skip, why) for one commit."""
        ws = self.s.ws
        try:
            configured = self.builder.configure_at(self.tree, commit, kconfig_sha(ws, commit),
                                                   self.log)
            result = build_commit(self.builder, self.tree, commit, configured, self.log, False)
            ok, why = result.ok, "; ".join(result.errors[:1]) or "make failed"
        except HvlabError as exc:
            if isinstance(exc, InfraError):
                raise
            ok, why = False, str(exc)
        if not ok:
            if self.step == "build" or not self.skip_build_failures:
                return "bad", f"does not build: {why}"
            return "skip", f"does not build (skipped: not what is bisected): {why}"
        if self.step == "build":
            return "good", "builds"
        assert result.path is not None and self.host is not None
        return self._boot_and_test(result.path)

    def _boot_and_test(self, build_dir: Path) -> tuple[str, str]:
        host = self.host
        assert host is not None
        workdir = self.s.run.logs / f"bisect-{build_dir.name[:12]}"
        workdir.mkdir(parents=True, exist_ok=True)
        with host.boot(build_dir, _StepLog(self.s, workdir)) as guest:
            if not guest.ok or guest.session is None:
                bad = next((c for c in guest.stage.cases if c.status is not Status.PASS),
                           None)
                return "bad", f"boot failed: {bad.message if bad else 'no SSH'}"
            if self.step == "boot":
                return "good", "boots"
            spec = host.spec
            ctx = GuestContext(guest.session, spec.name, guest.expected, workdir,
                               spec.iperf_server, None, build_dir, spec.scratch_disk,
                               spec.spare_nic, console=guest.console)
            failed: list[TestCase] = []
            judged = 0
            for suite in self.suites:
                stage = run_suite(ctx, suite, workdir, {})
                cases = [c for c in stage.cases if not self.test or c.name == self.test
                         or c.name.startswith(f"{self.test}:")]
                if self.test and not cases:
                    continue
                errors = [c for c in cases if c.status is Status.ERROR]
                if errors:
                    raise InfraError(f"bisect: the test could not be judged on "
                                     f"{build_dir.name[:12]}: {errors[0].name}: "
                                     f"{errors[0].message}")
                failed += [c for c in cases if c.status is Status.FAIL]
                judged += len(cases)
            if failed:
                return "bad", f"{failed[0].name}: {failed[0].message}"
            if self.test and not judged:
                raise UserError(f"--test {self.test}: no case of that name in the suites "
                                f"{', '.join(s.name for s in self.suites)}")
            return "good", "tests pass"


@dataclass
class _StepLog:
    """A bisect step's boot: its stages are the step's evidence (logs in the step's
    folder), not stages of the run; the step's verdict is the run's case."""

    s: Session
    logs: Path
    results: list[StageResult] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[Path]:
        self.s.progress.stage(name, detail)
        yield self.logs / f"{name}.log"

    def record(self, result: StageResult) -> StageResult:
        self.results.append(result)
        self.s.progress.done(result.name, result.status, result.duration)
        return result

    def info(self, message: str) -> None:
        self.s.progress.info(message)


def bisect(s: Session, kernel_name: str, good: str, bad: str, host_name: str,
           suite_names: list[str], test: str, step: str, skip_build_failures: bool,
           jobs: int, use_ccache: bool) -> None:
    if step not in ("build", "boot", "test"):
        raise UserError(f"--step {step}: expected build, boot or test")
    host: Host | None = None
    if step != "build":
        if not host_name:
            raise UserError(f"--step {step} needs --host")
        host = host_of(s, host_name)
    suites = [s.config.suite(n) for n in suite_names]
    if step == "test" and not suites:
        raise UserError("--step test needs --suite")
    kernel = s.config.kernel(kernel_name)
    scope = Scope(kernel.name)
    fetch(s, scope, kernel, offline=False)
    store = Git(s.ws.store)
    commits = {}
    for label, ref in (("good", good), ("bad", bad)):
        found = store.rev(ref)
        if found is None:
            raise UserError(f"--{label} {ref}: no such commit in the store of kernel "
                            f"'{kernel.name}' (fetch its source first, or give a sha)")
        commits[label] = found
    if not store.ok("merge-base", "--is-ancestor", commits["good"], commits["bad"]):
        raise UserError(f"--good {good} is not an ancestor of --bad {bad}")
    inputs = config_inputs(kernel, fragment_files(s, kernel, []))
    builder = Builder(s.ws, kernel, inputs, jobs, use_ccache, s.progress.log_line)
    t0 = time.monotonic()
    with s.stage("bisect", scope, f"{good}..{bad} by {step}") as log, \
            source.worktree_lock(s.ws, kernel.name, s.progress):
        tree = source.worktree_path(s.ws, kernel.name)
        if not (tree / ".git").exists():
            tree = source.checkout(s.ws, kernel.name, commits["bad"], s.progress)
        source.restore_clean(tree)
        stepper = _Step(s, builder, tree, step, host, suites, test, skip_build_failures, log)
        try:
            cases, first = _bisect_steps(s, store, Git(work_tree=tree), tree, stepper, commits)
        finally:
            if host is not None:
                host.close()
    if first:
        subject = store.out("log", "-1", "--format=%s", first)
        s.run.info["first_bad_commit"] = f"{first} {subject}"
        s.progress.info(f"first bad commit: {first[:12]} {subject}")
        cases.append(TestCase("bisect: first bad commit", Status.PASS,
                              output=f"{first} {subject}\n"))
    elif not any(c.name == "bisect: first bad commit" for c in cases):
        cases.append(TestCase("bisect: first bad commit", Status.FAIL,
                              f"no answer after {MAX_STEPS} steps"))
    s.record(StageResult.from_cases("bisect", cases, time.monotonic() - t0, log,
                                    properties={"good": commits["good"],
                                                "bad": commits["bad"], "step": step}), scope)


def _bisect_steps(s: Session, store: Git, wt: Git, tree: Path, stepper: _Step,
                  commits: dict[str, str]) -> tuple[list[TestCase], str]:
    """git bisect driven by the stepper's verdicts: (one case per step, first bad)."""
    cases: list[TestCase] = []
    first = ""
    try:
        _, started, _ = wt.run("bisect", "start", commits["bad"], commits["good"])
        if "is the first bad commit" in started:  # --bad's parent is --good: nothing to test
            return cases, started.split()[0]
        for n in range(1, MAX_STEPS + 1):
            commit = wt.out("rev-parse", "HEAD")
            subject = store.out("log", "-1", "--format=%s", commit)
            s.progress.stage("bisect", f"step {n}: {commit[:12]} {subject}")
            verdict, why = stepper.verdict(commit)
            s.progress.info(f"{commit[:12]}: {verdict} ({why})")
            cases.append(TestCase(f"bisect step {n}: {commit[:12]} {subject}", Status.PASS,
                                  output=f"{verdict}: {why}\n"))
            wt.run("checkout", "-q", "--detach", commit)  # bisect's HEAD again
            code, text, err = wt.run("bisect", verdict, check=False)
            if "is the first bad commit" in text:
                first = text.split()[0]
                break
            if "only 'skip'ped commits left" in text:
                cases.append(TestCase("bisect: first bad commit", Status.FAIL,
                                      "only skipped commits left: the first bad commit "
                                      "is one of them", output=text))
                break
            if code != 0:
                raise InfraError(f"git bisect {verdict} failed: {err.strip()}")
    finally:
        wt.run("bisect", "reset", check=False)
        source.restore_clean(tree)
    return cases, first
