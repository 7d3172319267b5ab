"""`inv run`'s orchestration in process: the real Matrix, Session, gate and run
folder, with a fake build and a fake host behind the same interfaces
(``Steps``, ``hosts.base.Host``).  No git, make, QEMU or SSH: milliseconds."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hvlab import cancel
from hvlab.build.stage import BuildResult
from hvlab.config.tables import Config
from hvlab.errors import InfraError
from hvlab.hosts.base import BootedGuest, CellLog
from hvlab.model import (
    NO_SERIES,
    HostKind,
    HostSpec,
    KernelSpec,
    PathSource,
    PlanSpec,
    QemuHost,
    SeriesSpec,
    SuiteSpec,
    SuiteTest,
)
from hvlab.report import view
from hvlab.report.compare import KnownFailure
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import RemoteResult
from hvlab.tasks.run import RunOptions, Steps, cells, run_plan
from hvlab.tasks.session import Scope, Session, session
from hvlab.tasks.stages import BuildOutcome, BuildRequest

pytestmark = pytest.mark.unit


def sha(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def expected_facts(kernel: str, series: str) -> dict[str, str]:
    """What the fake build returns for a cell: what its testsuites must carry."""
    base = sha(kernel)
    facts = {"kernel": kernel, "series": series, "commit": base,
             "build_id": sha(kernel, series, "build"), "kernel_release": f"6.1-{kernel}-{series}"}
    if series != NO_SERIES:
        facts.update(commit=sha(kernel, series), base_commit=base,
                     patchset_hash=sha(series, "patches"))
    return facts


@dataclass
class FakeBuild:
    """``Steps.build``: records fetch, patch, configure and build like the real
    chain and returns their facts; ``failing`` kernels fail to compile."""

    root: Path
    failing: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def __call__(self, s: Session, scope: Scope, req: BuildRequest) -> BuildOutcome:
        series = req.series or NO_SERIES
        self.calls.append(scope.label)
        want = expected_facts(req.kernel, series)

        def stage(name: str, facts: dict[str, str], status: Status = Status.PASS) -> None:
            with s.stage(name, scope):
                result = StageResult.from_cases(name, [TestCase(
                    f"{name}: {req.kernel}", status, "" if status is Status.PASS else
                    "drivers/hv/hv.c:12: error: 'x' undeclared")], 0.01)
            s.attach(scope, facts)  # by value, as the real stages do
            s.record(result, scope)

        stage("fetch", {"kernel": req.kernel, "commit": sha(req.kernel)})
        if req.series:
            s.plan("patch", scope)
            stage("patch", {k: want[k] for k in ("commit", "base_commit", "patchset_hash")})
        stage("configure", {"config_hash": sha(req.kernel, "config")})
        if req.kernel in self.failing:
            stage("build", {}, Status.FAIL)
            return BuildOutcome(False, None)
        out = self.root / want["build_id"]
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernelrelease").write_text(want["kernel_release"] + "\n")
        stage("build", {"build_id": want["build_id"], "kernel_release": want["kernel_release"]})
        result = BuildResult(want["commit"], want["build_id"], True, False, out,
                             want["kernel_release"], (), (), 0.01, out / "log", {})
        return BuildOutcome(True, result, s.run.facts_of(scope.label))


@dataclass
class FakeGuest:
    """An SshSession stand-in: a suite test's verdict is ``verdict(release, test)``."""

    release: str
    verdict: Callable[[str, str], int]

    def run(self, argv: Sequence[str], timeout: float | None = None, log: Path | None = None,
            on_line: Callable[[str], None] | None = None, stdin: bytes | None = None,
            tail_bytes: int = 0) -> RemoteResult:
        argv = tuple(argv)
        test = next((a.split("=", 1)[1] for a in argv if a.startswith("HVLAB_TEST=")), "")
        code = self.verdict(self.release, test) if test else 0
        return RemoteResult(argv, code, 0.0, "", "")

    connects = 1

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass


@dataclass
class FakeHost:
    """``hosts.base.Host`` in process: boots instantly; ``boot_hook`` runs in
    the boot stage (to raise, or to interrupt the run)."""

    spec: HostSpec
    verdict: Callable[[str, str], int]
    boot_hook: Callable[[str, str], None] = lambda host, release: None
    booted: list[str] = field(default_factory=list)
    closed: int = 0

    def close(self) -> None:
        self.closed += 1

    def stages(self) -> tuple[str, ...]:
        return ("boot",)

    @contextmanager
    def boot(self, build: Path, cell: CellLog) -> Iterator[BootedGuest]:
        release = (build / "kernelrelease").read_text().strip()
        with cell.stage("boot"):
            self.booted.append(release)
            self.boot_hook(self.spec.name, release)
            stage = StageResult.from_cases("boot", [TestCase(
                f"boot: {self.spec.name}", Status.PASS)], 0.01,
                properties={"kernel_release": release})
        cell.record(stage)
        yield BootedGuest(stage, FakeGuest(release, self.verdict), release,  # type: ignore[arg-type]
                          release)

    def check(self) -> TestCase:
        return TestCase(f"host: {self.spec.name}", Status.PASS)


def config(tmp: Path, known: Sequence[KnownFailure] = (), baseline: bool = False,
           gate: str = "all") -> Config:
    cfg = Config(tmp / "configs")
    for k in ("k1", "k2"):
        cfg.kernels[k] = KernelSpec(k, tmp / f"{k}.yaml", PathSource(tmp))
    cfg.series["s1"] = SeriesSpec("s1", tmp / "s1")
    for h in ("h1", "h2"):
        cfg.hosts[h] = HostSpec(h, tmp / f"{h}.yaml", HostKind.QEMU, QemuHost())
    cfg.suites["t"] = SuiteSpec("t", tmp / "t.yaml", (
        SuiteTest("always", "true"), SuiteTest("regress", "true")))
    cfg.plans["p"] = PlanSpec("p", tmp / "p.yaml", ("k1", "k2"), ("s1", NO_SERIES), ("h1", "h2"),
                              ("t",), baseline=baseline, gate=gate)
    cfg.known_failures.extend(known)
    return cfg


def regress_with_series(release: str, test: str) -> int:
    """'regress' fails on every patched kernel and passes on the unpatched ones."""
    return 1 if test == "regress" and not release.endswith(f"-{NO_SERIES}") else 0


@dataclass
class Run:
    code: int
    suites: list[view.SuiteView]
    folder: Path

    def suite(self, cell: str, stage: str, host: str = "local") -> view.SuiteView:
        found = [s for s in self.suites if (s.cell, s.host, s.stage) == (cell, host, stage)]
        assert len(found) == 1, [(s.name, s.host) for s in self.suites]
        return found[0]

    def case(self, cell: str, stage: str, host: str = "local") -> view.CaseView:
        suite = self.suite(cell, stage, host)
        assert len(suite.cases) == 1
        return suite.cases[0]


def run_matrix(tmp: Path, monkeypatch: pytest.MonkeyPatch, cfg: Config, build: FakeBuild,
               hosts: dict[str, FakeHost], gate: str = "") -> Run:
    for var in ("HVLAB_CONFIGS", "HVLAB_KERNELS", "HVLAB_REPORTS"):
        monkeypatch.delenv(var, raising=False)
    plan = cfg.plans["p"]
    steps = Steps(build, lambda s, name: hosts[name])
    with pytest.raises(SystemExit) as exit_:
        with session("run", ["run"], quiet=True, root=tmp, gate=gate, config=cfg) as s:
            run_plan(s, plan, cells(plan), RunOptions(), steps)
    folder = (tmp / "reports" / "latest").resolve()
    suites = view.parse((folder / "junit.xml").read_text())
    return Run(int(str(exit_.value.code)), suites, folder)


def make_hosts(cfg: Config, **kw: Any) -> dict[str, FakeHost]:
    return {h: FakeHost(cfg.hosts[h], kw.get("verdict", regress_with_series),
                        kw.get("boot_hook", lambda host, release: None)) for h in cfg.hosts}


CELLS = [(k, sr) for k in ("k1", "k2") for sr in ("s1", NO_SERIES)]


def test_every_testsuite_of_a_cell_carries_that_cells_own_facts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path)
    build = FakeBuild(tmp_path / "builds")
    run = run_matrix(tmp_path, monkeypatch, cfg, build, make_hosts(cfg))
    assert sorted(build.calls) == sorted(f"{k}+{sr}" for k, sr in CELLS)  # one build a cell
    for kernel, series in CELLS:
        cell = f"{kernel}+{series}"
        want = expected_facts(kernel, series)
        stages = ["fetch", "configure", "build"] + (["patch"] if series != NO_SERIES else [])
        places = [(st, "local") for st in stages] + [(st, h) for h in ("h1", "h2")
                                                     for st in ("boot", "t")]
        for stage, host in places:
            props = run.suite(cell, stage, host).properties
            for key, value in want.items():
                assert props.get(key) == value, (cell, stage, host, key)
            if series == NO_SERIES:
                assert "patchset_hash" not in props, (cell, stage, host)
            assert props.get("config_hash") == sha(kernel, "config")


def test_a_failed_build_skips_its_boots_and_suites_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path)
    hosts = make_hosts(cfg)
    run = run_matrix(tmp_path, monkeypatch, cfg, FakeBuild(tmp_path / "b", failing={"k2"}),
                     hosts)
    assert run.code == 1
    for series in ("s1", NO_SERIES):
        for host in ("h1", "h2"):
            for stage in ("boot", "t"):
                case = run.case(f"k2+{series}", stage, host)
                assert case.status == "skip"
                assert case.message == "not run: stage 'build' did not pass"
        assert run.case(f"k2+{series}", "build").status == "fail"
    assert all("k2" not in r for h in hosts.values() for r in h.booted)
    assert run.case("k1+s1", "boot", "h1").status == "pass"


def test_known_regression_gates_green_under_both_gates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    known = [KnownFailure("*.t::regress", "tracked upstream")]
    for gate in ("all", "regressions"):
        cfg = config(tmp_path / gate, known, baseline=True)
        run = run_matrix(tmp_path / gate, monkeypatch, cfg, FakeBuild(tmp_path / gate / "b"),
                         make_hosts(cfg), gate=gate)
        assert run.code == 0, gate
        failing = [c for s in run.suites for c in s.cases if c.status == "fail"]
        assert {c.name for c in failing} == {"regress"} and len(failing) == 4


def test_unknown_regression_fails_only_under_its_gate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path / "a", baseline=True)
    assert run_matrix(tmp_path / "a", monkeypatch, cfg, FakeBuild(tmp_path / "a" / "b"),
                      make_hosts(cfg), gate="regressions").code == 1
    # a failure that is no regression (it fails on the baseline too) passes that gate
    cfg = config(tmp_path / "b", baseline=True, gate="regressions")
    hosts = make_hosts(cfg, verdict=lambda release, test: int(test == "regress"))
    assert run_matrix(tmp_path / "b", monkeypatch, cfg, FakeBuild(tmp_path / "b" / "b"),
                      hosts).code == 0


def test_errors_are_filed_under_their_own_host_and_cell_while_hosts_run_in_parallel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path)
    both_booting = threading.Barrier(2, timeout=5)

    def hook(host: str, release: str) -> None:
        if release.endswith("k1-s1"):
            both_booting.wait()  # h1 and h2 are both inside a boot stage now
            if host == "h2":
                raise InfraError("host h2: connection refused")

    run = run_matrix(tmp_path, monkeypatch, cfg, FakeBuild(tmp_path / "b"),
                     make_hosts(cfg, boot_hook=hook))
    assert run.code == 3
    bad = run.case("k1+s1", "boot", "h2")
    assert bad.status == "error" and bad.message == "host h2: connection refused"
    assert run.case("k1+s1", "t", "h2").status == "skip"
    assert run.case("k1+s1", "boot", "h1").status == "pass"
    errors = [(s.cell, s.stage, s.host) for s in run.suites for c in s.cases
              if c.status == "error"]
    assert errors == [("k1+s1", "boot", "h2")]
    assert run.case("k2+s1", "boot", "h2").status == "pass"  # the host goes on


def test_every_host_is_closed_once_its_cells_are_done_also_after_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a host that keeps something between cells (a local VM) stops it then
    cfg = config(tmp_path)

    def hook(host: str, release: str) -> None:
        if host == "h2":
            raise InfraError("host h2: connection refused")

    hosts = make_hosts(cfg, boot_hook=hook)
    run_matrix(tmp_path, monkeypatch, cfg, FakeBuild(tmp_path / "b"), hosts)
    assert {h: fake.closed for h, fake in hosts.items()} == {"h1": 1, "h2": 1}


def test_an_interrupt_mid_matrix_reports_what_ran_and_what_did_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path)
    started = threading.Event()

    def hook(host: str, release: str) -> None:
        if host == "h1" and release.endswith("k1-none"):
            started.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # a boot that waits, as a real one does
                cancel.sleep(0.05)

    def interrupt() -> None:
        if started.wait(10):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    run = run_matrix(tmp_path, monkeypatch, cfg, FakeBuild(tmp_path / "b"),
                     make_hosts(cfg, boot_hook=hook))
    assert run.code == 3
    assert run.case("k1+s1", "boot", "h1").status == "pass"
    stopped = run.case("k1+none", "boot", "h1")
    not_passed = [(s.name, c.name, c.status.value, c.message) for s in run.suites
                  for c in s.cases if c.status != "pass"]
    assert stopped.status == "error" and stopped.message == "interrupted by SIGINT", not_passed
    later = run.case("k2+none", "boot", "h1")
    assert later.status == "skip" and later.message == "not run: the run stopped before it"
    top = [c for s in run.suites if s.stage == "run" for c in s.cases]
    assert [(c.status, c.message) for c in top] == [("error", "interrupted by SIGINT")]
