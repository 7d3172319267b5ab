"""kselftest collections built from the same tree and configuration as the kernel.

A suite test with ``kselftest: [TARGET, ...]`` runs those selftests of the
tested tree on the guest.  The collection is built with the kernel (the
worktree is at the build's commit then, and the build dir holds its .config):
``make kselftest-install TARGETS=... KSFT_INSTALL_PATH=...`` in the kernel's
build dir, installed into ``kernels/builds/<build-id>/kselftest/<key>/``,
where it appears atomically after a successful install and is reused by
every later run of that build.  The suite uploads it and runs
``run_kselftest.sh``, whose TAP output the KTAP parser reads.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from hvlab.build.builder import Builder
from hvlab.build.diagnostics import make_errors
from hvlab.errors import InfraError, Interrupted
from hvlab.fetch.source import checkout_commit
from hvlab.model import SuiteSpec
from hvlab.proc import require_tool
from hvlab.results import Status, TestCase


def targets_of(suites: Iterable[SuiteSpec]) -> list[tuple[str, ...]]:
    """The distinct target lists the suites' kselftest tests ask for, in order."""
    seen: dict[tuple[str, ...], None] = {}
    for suite in suites:
        for test in suite.tests:
            if test.kselftest:
                seen[test.kselftest] = None
    return list(seen)


def key(targets: Sequence[str]) -> str:
    """A folder name for a target list: readable when short, hashed when long."""
    joined = "+".join(t.replace("/", "_") for t in targets)
    if len(joined) <= 60:
        return joined
    return joined[:40] + "-" + hashlib.sha256("\n".join(targets).encode()).hexdigest()[:16]


def collection_dir(build_artifacts: Path, targets: Sequence[str]) -> Path:
    return build_artifacts / "kselftest" / key(targets)


def build_collection(builder: Builder, tree: Path, commit: str, config_text: str,
                     build_artifacts: Path, targets: Sequence[str], log: Path) -> TestCase:
    """The case ``kselftest build: <targets>``; the collection is in
    ``collection_dir`` when it passes.  The infrastructure failing (a missing
    tool, a full disk) is an error case: the kernel's build cases still count."""
    name = f"kselftest build: {' '.join(targets)}"
    t0 = time.monotonic()
    try:
        return _build(builder, tree, commit, config_text, build_artifacts, targets, log, name)
    except Interrupted:
        raise
    except InfraError as exc:
        return TestCase(name, Status.ERROR, str(exc), duration=time.monotonic() - t0,
                        log_path=log)


def _build(builder: Builder, tree: Path, commit: str, config_text: str,
           build_artifacts: Path, targets: Sequence[str], log: Path, name: str) -> TestCase:
    final = collection_dir(build_artifacts, targets)
    if (final / "run_kselftest.sh").is_file():
        return TestCase(name, Status.PASS, output=f"cached: {final}\n", log_path=log)
    t0 = time.monotonic()
    require_tool("rsync")  # kselftest's install rule copies with it
    checkout_commit(tree, commit)
    builder.write_config(config_text)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        step = builder.make(tree, ["kselftest-install", f"TARGETS={' '.join(targets)}",
                                   f"KSFT_INSTALL_PATH={staging}"], log)
        problem = step.machine_failure("kselftest build")
        if problem is not None:
            raise problem
        lines = step.output.splitlines()
        missing = [t for t in targets if not (staging / t).is_dir()]
        why = ""
        if not step.ok or not (staging / "run_kselftest.sh").is_file():
            errors = make_errors(lines)[:5] or lines[-5:]
            why = "the kselftest collection did not build: " + "; ".join(errors)[:1500]
        elif missing:
            why = f"no such kselftest target in this tree: {', '.join(missing)}"
        if why:
            return TestCase(name, Status.FAIL, why, output=step.output,
                            duration=time.monotonic() - t0, log_path=log)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    listed = (final / "kselftest-list.txt").read_text(errors="replace").split()
    return TestCase(name, Status.PASS, output=f"{len(listed)} tests: {' '.join(listed)}\n",
                    duration=time.monotonic() - t0, log_path=log)
