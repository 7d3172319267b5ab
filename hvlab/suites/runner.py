"""Run a suite's tests, in order, on one booted guest.

Each test: its requirements are checked first (unmet: SKIPPED with the
reason); a ``builtin:`` test runs hvlab's own check; any other ``run`` is
shell text run with ``sh -c`` on the guest (in the uploaded script folder
when the suite has one), killed there after ``timeout``.  Its output
streams to ``logs/suite-<suite>-<test>.out`` (never held whole in memory)
and is judged by its parser: exit-code, tap, ktap or junit (a JUnit file the
command leaves at ``results``).  A bad result is retried up to ``retries``
times; a later pass is a pass marked flaky, never a hidden failure.  A test
that takes the connection with it is an error; the next test reconnects, unless
the guest rebooted or is gone (``continuity``): then the rest are errors too.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hvlab.boot.console import EVIDENCE_LINES
from hvlab.build import kselftest
from hvlab.errors import InfraError, Interrupted
from hvlab.model import SuiteSpec, SuiteTest
from hvlab.report.compare import read_junit
from hvlab.results import StageResult, Status, TestCase
from hvlab.ssh import RemoteResult
from hvlab.suites import continuity, ktap, modules
from hvlab.suites.builtin import BUILTINS, NEEDS_LIVE, GuestContext
from hvlab.suites.hvchecks import devices
from hvlab.suites.ktapcases import cases_from_document
from hvlab.suites.vmbus import NOT_ON_HYPERV

REMOTE_DIR = "/tmp/hvlab-suites"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def unmet(ctx: GuestContext, test: SuiteTest, log: Path) -> str:
    """The reason the first unmet requirement gives, or "", judged on the guest's
    capture (taken once); an InfraError when it cannot be checked (that is not a
    reason to skip)."""
    cap = ctx.capture(log) if test.requires else None
    for req in test.requires:
        assert cap is not None
        kind, _, arg = req.partition(":")
        if kind == "vmbus":
            why = "" if cap.on_hyperv else NOT_ON_HYPERV
        elif kind == "class":
            exp = ctx.expectations()
            why = NOT_ON_HYPERV if not cap.on_hyperv else "" if any(
                exp.kind(d.class_id) == arg for d in devices(cap)) else f"no VMBus {arg} device"
        elif kind == "module":
            name = arg.replace("-", "_")
            found = modules.from_capture(cap, name)
            why = "" if found is not None and found.state != "absent" else \
                f"module {name} is not in this kernel" if found is not None else \
                "not captured: proc/modules"
        elif ctx.live:
            r = ctx.guest.run(["test", "-e", arg], timeout=30, log=log)
            if r.timed_out or r.dropped:
                raise InfraError(f"requirement {req} of {test.name} could not be checked on "
                                 f"{ctx.host} ({'timed out' if r.timed_out else 'dropped'})")
            why = "" if r.ok else f"{arg} does not exist"
        else:
            why = "" if cap.exists(arg) else f"{arg} does not exist in the capture"
        if why:
            return f"requires {req}: {why}"
    return ""


def _verdict(test: SuiteTest, result: RemoteResult, stdout: Path) -> list[TestCase]:
    """Cases from one run of a shell test."""
    name = test.name
    if result.timed_out:
        return [TestCase(name, Status.ERROR, f"TIMEOUT: killed on the host after "
                         f"{test.timeout} s (timeout)", output=result.output)]
    if result.dropped:
        return [TestCase(name, Status.ERROR, "the connection dropped during the test",
                         output=result.output)]
    if result.exit_status == 127 and "not found" in result.stderr:
        return [TestCase(name, Status.ERROR, "command not found on the host: "
                         f"{result.stderr.strip()[-300:]}", output=result.output)]
    if test.parser in ("tap", "ktap"):
        with stdout.open("rb") as fh:
            doc = ktap.parse(ktap.text_lines(fh))
        cases = cases_from_document(doc, name, mark_suites=True)
        if not cases:
            return [TestCase(name, Status.ERROR, f"no {test.parser.upper()} results in the "
                             f"output (exit {result.exit_status})", output=result.output)]
        if result.exit_status not in (0, 1) and not any(
                c.status in (Status.FAIL, Status.ERROR) for c in cases):
            cases.append(TestCase(f"{name}: exit status", Status.ERROR,
                                  f"the test program exited {result.exit_status}",
                                  output=result.output))
        return cases
    if result.exit_status == 0:
        return [TestCase(name, Status.PASS, output=result.output)]
    if result.exit_status == 4:  # kselftest's "skip"
        return [TestCase(name, Status.SKIP, "exit 4 (skip)", output=result.output)]
    # the reason: the exit status and the last lines the test printed (stdout+stderr)
    said = [line for line in result.output.split("\n") if line.strip()][-EVIDENCE_LINES:]
    gist = f"exit {result.exit_status}" + (f": {said[-1].strip()}" if said else "")
    return [TestCase(name, Status.FAIL, gist, output=result.output,
                     evidence="\n".join([gist, *said]))]


def _junit_cases(ctx: GuestContext, test: SuiteTest, log: Path) -> list[TestCase]:
    assert test.results is not None
    local = log.with_suffix(".junit.xml")
    try:
        ctx.guest.get_file(test.results, local)
        found = read_junit(local.read_text(errors="backslashreplace"))
    except Exception as exc:
        return [TestCase(test.name, Status.ERROR, f"no readable JUnit file at {test.results}: "
                         f"{str(exc)[:300]}")]
    return [TestCase(f"{test.name}: {n}", r.status, r.message)
            for (_cls, n), r in found.items()]


def _kselftest(ctx: GuestContext, test: SuiteTest) -> tuple[SuiteTest, str] | TestCase:
    """The collection uploaded: (the test as a TAP shell test, its remote folder), or
    the error case when this build has no collection of those targets."""
    folder = kselftest.collection_dir(ctx.build, test.kselftest) if ctx.build else None
    if folder is None or not (folder / "run_kselftest.sh").is_file():
        where = f" in {folder.parent}" if folder else ""
        return TestCase(test.name, Status.ERROR, f"no kselftest collection of "
                        f"{' '.join(test.kselftest)} for this build{where}: it is built with "
                        "the kernel by inv test / inv run --kernel (a --prebuilt folder has "
                        "one only if such a run built it)")
    remote = f"{REMOTE_DIR}/kselftest-{kselftest.key(test.kselftest)}"
    try:
        ctx.guest.run(["rm", "-rf", remote], timeout=60)
        ctx.guest.put_dir(folder, remote)
    except Interrupted:
        raise
    except InfraError as exc:
        return TestCase(test.name, Status.ERROR, f"uploading the kselftest collection: {exc}")
    return replace(test, run="./run_kselftest.sh", parser="tap"), remote


def _attempt(ctx: GuestContext, suite: SuiteSpec, test: SuiteTest, log: Path,
             remote_dir: str | None) -> list[TestCase]:
    if test.run.startswith("builtin:"):
        ctx.modules = test.modules
        try:
            cases = BUILTINS[test.run.removeprefix("builtin:")](ctx, log)
        except Interrupted:
            raise
        except InfraError as exc:  # this test broke; the suite goes on
            return [TestCase(test.name, Status.ERROR, str(exc), log_path=log)]
        return [c if c.name.startswith(test.name) else replace(c, name=f"{test.name}: {c.name}")
                for c in cases]
    stdout = log.with_suffix(".out")
    stdout.write_text("")
    prefix = f"cd {shlex.quote(remote_dir)} && " if remote_dir else ""
    with stdout.open("a", encoding="utf-8", errors="replace") as out:

        def keep(line: str) -> None:
            out.write(line + "\n")

        try:
            result = ctx.guest.run(
                ["env", f"HVLAB_SUITE={suite.name}", f"HVLAB_TEST={test.name}", "sh", "-c",
                 prefix + test.run], timeout=test.timeout, log=log, on_line=keep)
        except Interrupted:
            raise
        except InfraError as exc:  # no connection to run it on
            return [TestCase(test.name, Status.ERROR, str(exc), log_path=log)]
    if test.parser == "junit" and not result.timed_out and not result.dropped:
        return _junit_cases(ctx, test, log)
    return _verdict(test, result, stdout)


def run_test(ctx: GuestContext, suite: SuiteSpec, test: SuiteTest, log: Path,
             remote_dir: str | None) -> list[TestCase]:
    t0 = time.monotonic()
    try:
        reason = unmet(ctx, test, log)
    except Interrupted:
        raise
    except InfraError as exc:
        return [TestCase(test.name, Status.ERROR, str(exc), log_path=log)]
    if reason:
        return [TestCase(test.name, Status.SKIP, reason, log_path=log)]
    if not ctx.live and not test.run.startswith("builtin:"):
        return [TestCase(test.name, Status.SKIP, NEEDS_LIVE, log_path=log)]
    if test.kselftest:  # uploaded once; a retry runs it again
        prepared = _kselftest(ctx, test)
        if isinstance(prepared, TestCase):
            return [prepared]
        test, remote_dir = prepared
    attempts = 0
    first_bad: list[TestCase] = []
    while True:
        attempts += 1
        cases = _attempt(ctx, suite, test, log, remote_dir)
        bad = [c for c in cases if c.status in (Status.FAIL, Status.ERROR)]
        if not bad or attempts > test.retries:
            break
        first_bad = first_bad or bad
    duration = time.monotonic() - t0
    flaky = attempts > 1 and not bad
    out = []
    for c in cases:
        output = c.output
        if flaky and first_bad:
            output = (f"flaky: passed on attempt {attempts}; attempt 1: "
                      f"{first_bad[0].message}\n" + output)
        out.append(replace(c, output=output,
                           duration=c.duration or duration / max(len(cases), 1),
                           log_path=c.log_path or log, flaky=flaky, attempts=attempts))
    return out


def _recast(found: list[TestCase], **verdict: Any) -> list[TestCase]:
    """A test's cases judged again after the guest went away under it: each but
    the skipped gets ``verdict``, keeping what it reported in its output."""
    return [replace(c, output=f"{c.message}\n{c.output}".strip(), **verdict)
            if c.status is not Status.SKIP else c for c in found]


def run_suite(ctx: GuestContext, suite: SuiteSpec, log_dir: Path,
              properties: dict[str, str]) -> StageResult:
    """All tests of ``suite`` in order; a failing test never stops the others."""
    t0 = time.monotonic()
    remote_dir = None
    cases: list[TestCase] = []
    continuity.start(ctx)
    if suite.scripts is not None and ctx.live and not ctx.gone:
        remote_dir = f"{REMOTE_DIR}/{_slug(suite.name)}"
        ctx.guest.put_dir(suite.scripts, remote_dir)
    for test in suite.tests:
        if ctx.gone:  # never a pass on a guest that is not the one booted
            cases.append(TestCase(test.name, Status.FAIL, f"never ran: {ctx.gone}",
                                  failure_type="crash") if ctx.crashed else
                         TestCase(test.name, Status.ERROR, f"not run: {ctx.gone}"))
            continue
        log = log_dir / f"suite-{_slug(suite.name)}-{_slug(test.name)}.log"
        console_before = len(ctx.console())
        connects = ctx.guest.connects if ctx.live else 0
        found = run_test(ctx, suite, test, log, remote_dir)
        # the session dropped, or came back quietly (a retry, a reboot the test
        # scheduled): is it still the boot that was verified?
        if ctx.live and (not ctx.guest.connected() or ctx.guest.connects != connects):
            crash = continuity.crash_since(ctx.console(), console_before)
            # a panicked guest never answers again: no reconnect to wait for
            why = "" if crash is not None and crash.kind == "panic" else \
                continuity.after_loss(ctx, console_before)
            if crash is not None:  # the kernel's failure, not the harness's
                if crash.kind == "panic" or why:  # the guest is gone with it
                    ctx.gone, ctx.crashed = (f"the kernel crashed in test {test.name}: "
                                             f"{crash.message}"), True
                # else the same boot answered again (an Oops it survived): this test
                # fails, the next ones run
                found = _recast(found, status=Status.FAIL, failure_type="crash",
                                message=f"the kernel crashed during the test: {crash.message}",
                                evidence=crash.excerpt)
            elif why:
                ctx.gone = f"{why} (in test {test.name})"
                found = _recast(found, status=Status.ERROR, message=why, evidence=why)
        cases += found
    return StageResult.from_cases(suite.name, cases, time.monotonic() - t0,
                                  properties={**properties, "suite": suite.name})
