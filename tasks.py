"""hvlab's invoke tasks: parse flags, call the library, map errors to exit codes.

Exit codes: 0 passed, 1 test/kernel failures, 2 bad input, 3 infrastructure.
Every task writes reports/<run-id>/ and points reports/latest at it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.collection import Collection
from invoke.context import Context

from hvlab.errors import UserError
from hvlab.tasks import cli
from hvlab.tasks.cli import task
from hvlab.tasks.session import session

if TYPE_CHECKING:
    from hvlab.tasks.boot import BootRequest

# The flows are imported inside each task: a cached build must not pay for
# paramiko and the host code at start-up.

ROOT = Path(__file__).resolve().parent
JOBS_HELP = "make -j (default: hvlab.jobs in invoke.yaml, else the number of cores)"
cli.install()  # one-line errors, exit 2, for bad flags and unknown tasks


def _argv() -> list[str]:
    """The command as typed (for metadata.json and reproduce.sh)."""
    return sys.argv[1:]


JSON_HELP = "print the outcome as one JSON document on stdout"


@task(help={"debug": "print tracebacks", "quiet": "only errors", "json": JSON_HELP})
def config_check(c: Context, debug: bool = False, quiet: bool = False,
                 json: bool = False) -> None:
    """Load and validate every file under configs/ (HVLAB_CONFIGS); list all errors."""
    from hvlab.tasks import stages

    with session("config.check", _argv(), debug, quiet, ROOT,
                 moves_latest=False, json_out=json) as s:
        stages.config_check(s)


@task(help={
    "kernel": "kernel name from configs/kernels/",
    "offline": "use only what is cached; fail clearly when something is missing",
    "debug": "print tracebacks", "quiet": "only errors",
})
def fetch(c: Context, kernel: str = "", offline: bool = False, debug: bool = False,
          quiet: bool = False) -> None:
    """Fetch a kernel source into the shared git store and record its commit."""
    from hvlab.tasks import stages
    from hvlab.tasks.session import Scope

    with session("fetch", _argv(), debug, quiet, ROOT) as s:
        spec = s.config.kernel(_required("kernel", kernel))
        stages.fetch(s, Scope(spec.name), spec, offline)


@task(help={
    "kernel": "kernel name from configs/kernels/",
    "series": "series name from configs/patches/, or a directory or mbox/patch file",
    "no_checkpatch": "skip scripts/checkpatch.pl",
    "offline": "use only what is cached",
    "debug": "print tracebacks", "quiet": "only errors",
})
def patch(c: Context, kernel: str = "", series: str = "", no_checkpatch: bool = False,
          offline: bool = False, debug: bool = False, quiet: bool = False) -> None:
    """Apply a patch series with git am -3 on a fresh branch; one case per patch."""
    from hvlab.tasks import stages
    from hvlab.tasks.session import Scope

    with session("patch", _argv(), debug, quiet, ROOT) as s:
        spec = s.config.kernel(_required("kernel", kernel))
        stages.patch(s, Scope(spec.name), spec, _required("series", series),
                     not no_checkpatch, offline)


@task(iterable=["fragment"], help={
    "kernel": "kernel name from configs/kernels/",
    "series": "series name or path; without it the plain tree is built",
    "fragment": "an extra Kconfig fragment file (repeatable)",
    "each_patch": "also build after each patch of the series (bisectability)",
    "force": "rebuild even when the build id is cached",
    "jobs": JOBS_HELP,
    "warnings_baseline": "a log or list of warnings counted as known",
    "no_ccache": "do not use ccache",
    "offline": "use only what is cached",
    "checks": "per-patch checks after the build: auto (netdev for drivers/net/hyperv), "
              "default, netdev or none (none: no checkpatch either)",
    "debug": "print tracebacks", "quiet": "only errors",
})
def build(c: Context, kernel: str = "", series: str = "", fragment: list[str] | None = None,
          each_patch: bool = False, force: bool = False, jobs: int = 0,
          warnings_baseline: str = "", no_ccache: bool = False, offline: bool = False,
          checks: str = "auto", debug: bool = False, quiet: bool = False) -> None:
    """Configure (verified fragments) and build a kernel, optionally patched; gate warnings."""
    from hvlab.tasks import stages
    from hvlab.tasks.session import Scope

    jobs = cli.setting(c, "jobs", jobs, 0)

    with session("build", _argv(), debug, quiet, ROOT) as s:
        req = stages.BuildRequest(_required("kernel", kernel), series, tuple(fragment or ()),
                                  each_patch, force, jobs, warnings_baseline, not no_ccache,
                                  offline, checks=checks)
        stages.build(s, Scope(s.config.kernel(req.kernel).name), req)


BOOT_HELP = {
    "kernel": "kernel name from configs/kernels/",
    "series": "series name or path (optional)",
    "host": "host name from configs/hosts/",
    "fragment": "an extra Kconfig fragment file (repeatable)",
    "prebuilt": "boot this distro kernel (<root>/boot/vmlinuz-<release>) or build folder",
    "force": "rebuild even when cached", "jobs": JOBS_HELP,
    "no_ccache": "do not use ccache", "offline": "use only what is cached",
    "checks": "per-patch checks after the build: auto (netdev for drivers/net/hyperv), "
              "default, netdev or none (none: no checkpatch either)",
    "debug": "print tracebacks", "quiet": "only errors",
}


@task(iterable=["fragment"], help=BOOT_HELP)
def boot(c: Context, kernel: str = "", series: str = "", host: str = "",
         fragment: list[str] | None = None, prebuilt: str = "", force: bool = False,
         jobs: int = 0, no_ccache: bool = False, offline: bool = False, checks: str = "auto",
         debug: bool = False, quiet: bool = False) -> None:
    """Build as needed, boot on a host, verify the release, scan console and dmesg."""
    from hvlab.tasks import boot as booting

    jobs = cli.setting(c, "jobs", jobs, 0)

    with session("boot", _argv(), debug, quiet, ROOT) as s:
        booting.boot(s, _boot_request(kernel, series, host, fragment, prebuilt, force, jobs,
                                      no_ccache, offline, (), checks))


@task(iterable=["fragment", "suite"], help={
    **BOOT_HELP, "suite": "suite name from configs/suites/ (repeatable; run in the order given)",
    "capture": "judge this guest capture (a directory or .tar.gz) instead of a live guest"})
def test(c: Context, kernel: str = "", series: str = "", host: str = "",
         suite: list[str] | None = None, fragment: list[str] | None = None,
         prebuilt: str = "", force: bool = False, jobs: int = 0, no_ccache: bool = False,
         offline: bool = False, capture: str = "", checks: str = "auto", debug: bool = False,
         quiet: bool = False) -> None:
    """Build and boot as needed, then run the suites on the booted guest (or on a capture)."""
    from hvlab.tasks import boot as booting

    jobs = cli.setting(c, "jobs", jobs, 0)

    with session("test", _argv(), debug, quiet, ROOT) as s:
        if not suite:
            raise UserError("--suite is required (a name from configs/suites/; repeatable)")
        if capture:
            if kernel or host or prebuilt or series:
                raise UserError("--capture judges a capture: it takes no --kernel, --series, "
                                "--host or --prebuilt")
            booting.judge_capture(s, capture, suite)
            return
        req = _boot_request(kernel, series, host, fragment, prebuilt, force, jobs, no_ccache,
                            offline, booting.kselftest_targets(s, suite), checks)
        booting.boot(s, dataclasses.replace(req, suites=tuple(suite)))


@task(help={"force": "rebuild the image", "debug": "print tracebacks", "quiet": "only errors"})
def image_build(c: Context, force: bool = False, debug: bool = False,
                quiet: bool = False) -> None:
    """Build the QEMU guest initramfs (busybox, sshd, keys) from this machine's binaries."""
    from hvlab.tasks import boot as booting

    with session("image.build", _argv(), debug, quiet, ROOT) as s:
        booting.image_build(s, force)


@task(help={"force": "rebuild the image", "mirror": "Debian mirror (default: deb.debian.org)",
            "debug": "print tracebacks", "quiet": "only errors"})
def image_vm(c: Context, force: bool = False, mirror: str = "", debug: bool = False,
             quiet: bool = False) -> None:
    """Build the Debian 12 disk image (UEFI, grub, systemd, sshd) that local VMs boot from."""
    from hvlab.tasks import boot as booting

    with session("image.vm", _argv(), debug, quiet, ROOT) as s:
        booting.image_vm(s, force, mirror)


@task(help={"host": "check only this host", "debug": "print tracebacks",
            "quiet": "only errors", "json": JSON_HELP})
def hosts_check(c: Context, host: str = "", debug: bool = False, quiet: bool = False,
                json: bool = False) -> None:
    """Check each host: reachability, auth, host key, OS, kernel, free disk (exit 3 if unusable)."""
    from hvlab.tasks import boot as booting

    with session("hosts.check", _argv(), debug, quiet, ROOT, json_out=json) as s:
        booting.hosts_check(s, host)


def _boot_request(kernel: str, series: str, host: str, fragment: list[str] | None,
                  prebuilt: str, force: bool, jobs: int, no_ccache: bool, offline: bool,
                  kselftests: tuple[tuple[str, ...], ...], checks: str = "auto") -> BootRequest:
    from hvlab.tasks.boot import BootRequest
    from hvlab.tasks.stages import BuildRequest

    build = BuildRequest(kernel if prebuilt else _required("kernel", kernel), series,
                         tuple(fragment or ()), force=force, jobs=jobs,
                         use_ccache=not no_ccache, offline=offline, kselftests=kselftests,
                         checks=checks)
    return BootRequest(build, _required("host", host), prebuilt=prebuilt)


@task(help={"host": "an ssh or hyperv host whose guest is running",
            "output": "the capture folder to write (also written as OUTPUT.tar.gz)",
            "debug": "print tracebacks", "quiet": "only errors"})
def hosts_capture(c: Context, host: str = "", output: str = "", debug: bool = False,
                  quiet: bool = False) -> None:
    """Copy what the guest-side checks read from a running guest into a capture."""
    from hvlab.tasks import boot as booting

    with session("hosts.capture", _argv(), debug, quiet, ROOT) as s:
        booting.hosts_capture(s, _required("host", host), output)


def _required(flag: str, value: str) -> str:
    if not value:
        raise UserError(f"--{flag} is required")
    return value


@task(help={"format": "ktap, tap or junit", "debug": "print tracebacks",
            "quiet": "only errors"})
def report_import(c: Context, file: str, format: str = "ktap", debug: bool = False,
                  quiet: bool = False) -> None:
    """Turn a KTAP/TAP/JUnit file into a run folder (junit.xml, summary.md, report.html)."""
    from hvlab.tasks import report as reportflows

    with session("report.import", _argv(), debug, quiet, ROOT) as s:
        reportflows.import_file(s, format, Path(file))


@task(iterable=["run"], help={"run": "a run folder, CI shard output or junit.xml (repeatable)",
                              "debug": "print tracebacks", "quiet": "only errors"})
def report_merge(c: Context, run: list[str] | None = None, debug: bool = False,
                 quiet: bool = False) -> None:
    """Merge run folders or CI shard outputs into one junit.xml and summaries."""
    from hvlab.tasks import report as reportflows

    with session("report.merge", _argv(), debug, quiet, ROOT) as s:
        reportflows.merge(s, [Path(p) for p in run or []])


@task(help={"baseline": "the baseline run folder (or its junit.xml)",
            "run": "the run to judge (default: reports/latest)",
            "gate": "regressions (only regressions and errors fail) or all; "
                    "default: hvlab.gate in invoke.yaml, else all",
            "debug": "print tracebacks", "quiet": "only errors"})
def report_compare(c: Context, baseline: str = "", run: str = "", gate: str = "",
                   debug: bool = False, quiet: bool = False) -> None:
    """Classify every case against a baseline run; known failures do not gate."""
    from hvlab.tasks import report as reportflows

    gate = cli.setting(c, "gate", gate, "") or "all"
    with session("report.compare", _argv(), debug, quiet, ROOT) as s:
        reportflows.compare_runs(s, Path(_required("baseline", baseline)),
                                 Path(run) if run else None, gate)


@task(help={"run": "the run folder whose series to answer (default: reports/latest)",
            "send": "send the mails through SMTP (HVLAB_SMTP_HOST, ...); else only write them",
            "sender": "From: of the mails (default: HVLAB_MAIL_FROM)",
            "report_url": "where reports/ is published, for the link in each mail",
            "debug": "print tracebacks", "quiet": "only errors"})
def report_mail(c: Context, run: str = "", send: bool = False, sender: str = "",
                report_url: str = "", debug: bool = False, quiet: bool = False) -> None:
    """Write (and --send) a run's findings as replies to the patches, as the 0-day robot does."""
    from hvlab.tasks import report as reportflows

    with session("report.mail", _argv(), debug, quiet, ROOT,
                 moves_latest=False) as s:
        reportflows.report_mail(s, Path(run) if run else None, send, sender, report_url)


@task(help={"run": "the run folder whose series to report (default: reports/latest)",
            "url": "patchwork's web address, e.g. https://patchwork.kernel.org/",
            "report_url": "where reports/ is published: each check's target URL",
            "debug": "print tracebacks", "quiet": "only errors"})
def report_patchwork(c: Context, run: str = "", url: str = "", report_url: str = "",
                     debug: bool = False, quiet: bool = False) -> None:
    """Post a run's results to patchwork: one check per patch and check (HVLAB_PATCHWORK_TOKEN)."""
    from hvlab.tasks import report as reportflows

    with session("report.patchwork", _argv(), debug, quiet, ROOT,
                 moves_latest=False) as s:
        reportflows.report_patchwork(s, Path(run) if run else None, url, report_url)


@task(iterable=["kernel", "series", "host", "suite"], help={
    "plan": "plan name from configs/plans/ (default: hvlab.plan in invoke.yaml, else default)",
    "kernel": "only these kernels (repeatable)", "series": "only these series (repeatable)",
    "host": "only these hosts (repeatable)", "suite": "only these suites (repeatable)",
    "shard": "I/N: run the I-th of N deterministic slices of the cells",
    "gate": "all (any failure fails) or regressions (only regressions and errors); "
            "default: hvlab.gate in invoke.yaml, else the plan's",
    "dry_run": "print the cells and what is cached; run nothing",
    "force": "rebuild even when cached", "jobs": JOBS_HELP,
    "no_ccache": "do not use ccache",
    "offline": "use only what is cached", "debug": "print tracebacks", "quiet": "only errors",
    "no_wait": "fail at once when a host, worktree or build is locked by another run",
    "checks": "per-patch checks after the build: auto (netdev for drivers/net/hyperv), "
              "default, netdev or none (none: no checkpatch either)",
    "json": "with --dry-run: the cells as one JSON document on stdout",
})
def run(c: Context, plan: str = "", kernel: list[str] | None = None,
        series: list[str] | None = None, host: list[str] | None = None,
        suite: list[str] | None = None, shard: str = "", gate: str = "", dry_run: bool = False,
        force: bool = False, jobs: int = 0, no_ccache: bool = False, offline: bool = False,
        debug: bool = False, quiet: bool = False, no_wait: bool = False,
        checks: str = "auto", json: bool = False) -> None:
    """Fetch, patch, build, boot, test and report every cell of a plan's matrix."""
    from hvlab import locks
    from hvlab.config.pairing import arches_of
    from hvlab.tasks import run as running

    locks.WAIT_BY_DEFAULT = not no_wait
    plan = cli.setting(c, "plan", plan, "") or "default"
    jobs = cli.setting(c, "jobs", jobs, 0)
    gate = cli.setting(c, "gate", gate, "")

    if json and not dry_run:
        cli.fail("inv run: --json goes with --dry-run (a run's outcome is its junit.xml)")
    if dry_run:
        _dry_run(plan, kernel, series, host, suite, shard, gate, json)
        return
    with session("run", _argv(), debug, quiet, ROOT, gate=gate) as s:
        spec = s.config.plan(plan)
        cells = running.cells(spec, kernel or [], series or [], host or [], suite or [],
                              arches_of(s.config))
        if shard:
            cells = running.shard(cells, shard)
            if not cells:  # more shards than cells: this one has nothing to do
                s.progress.info(f"shard {shard} of plan {spec.name} holds no cells: "
                                "nothing to run")
                return
        try:
            running.run_plan(s, spec, cells, running.RunOptions(force, jobs, not no_ccache,
                                                                offline, checks))
        finally:
            running.reproduce(s, _argv())


def _dry_run(plan: str, kernel: list[str] | None, series: list[str] | None,
             host: list[str] | None, suite: list[str] | None, shard: str, gate: str,
             as_json: bool) -> None:
    """Print the cells; no run folder, nothing touched."""
    import json

    from hvlab.config import loader
    from hvlab.config.pairing import arches_of
    from hvlab.errors import HvlabError
    from hvlab.tasks import run as pipeline
    from hvlab.tasks.session import Gate
    from hvlab.workspace import Workspace

    ws = Workspace.from_env(ROOT)
    try:
        if gate:
            Gate.parse(gate)
        config = loader.load_or_raise(ws)
        cells = pipeline.cells(config.plan(plan), kernel or [], series or [], host or [],
                               suite or [], arches_of(config))
        if shard:
            cells = pipeline.shard(cells, shard)
        plans = pipeline.describe(ws, config, cells)
        if as_json:
            print(json.dumps({"plan": plan, "shard": shard or None,
                              "cells": [p.as_json() for p in plans]}, indent=1))
        for p in plans if not as_json else ():
            print(p.line())
    except HvlabError as exc:
        print(f"hvlab: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


@task(help={"plan": "plan name from configs/plans/ (default: hvlab.plan, else default)",
            "format": "github, gitlab or json",
            "shards": "how many jobs (default: one per cell)"})
def ci_matrix(c: Context, plan: str = "", format: str = "json", shards: int = 0) -> None:
    """Print the plan's cells as a CI matrix: each job runs `inv run --shard I/N`."""
    from hvlab.tasks import cimatrix

    plan = cli.setting(c, "plan", plan, "") or "default"

    cimatrix.main(ROOT, plan, format, shards)


@task(iterable=["suite"], help={
    "kernel": "kernel name (its source must be a git repository with the history)",
    "good": "a commit or ref that passes", "bad": "a later commit or ref that fails",
    "host": "host to boot on (--step boot or test)",
    "suite": "suite to run (--step test; repeatable)", "test": "judge only this test",
    "step": "build, boot or test (default)",
    "no_skip_build_failures": "a commit that does not build counts as bad",
    "jobs": JOBS_HELP,
    "no_ccache": "do not use ccache",
    "debug": "print tracebacks", "quiet": "only errors"})
def bisect(c: Context, kernel: str = "", good: str = "", bad: str = "", host: str = "",
           suite: list[str] | None = None, test: str = "", step: str = "test",
           no_skip_build_failures: bool = False, jobs: int = 0, no_ccache: bool = False,
           debug: bool = False, quiet: bool = False) -> None:
    """Find the first bad commit between --good and --bad by build, boot or test."""
    from hvlab.tasks import bisect as bisecting

    jobs = cli.setting(c, "jobs", jobs, 0)

    with session("bisect", _argv(), debug, quiet, ROOT) as s:
        bisecting.bisect(s, _required("kernel", kernel), _required("good", good),
                         _required("bad", bad), host, list(suite or []), test, step,
                         not no_skip_build_failures, jobs or (os.cpu_count() or 1),
                         not no_ccache)


@task(help={"days": "remove builds older than this many days (default 30)",
            "budget_gb": "then remove the oldest builds until they fit in this many GiB",
            "worktrees": "also remove worktrees no run is using",
            "dry_run": "only say what would be removed",
            "debug": "print tracebacks", "quiet": "only errors"})
def clean(c: Context, days: float = 30.0, budget_gb: float = 0.0, worktrees: bool = False,
          dry_run: bool = False, debug: bool = False, quiet: bool = False) -> None:
    """Remove old builds (and idle worktrees); the object store is kept."""
    from hvlab.tasks import housekeeping

    with session("clean", _argv(), debug, quiet, ROOT) as s:
        housekeeping.clean(s, days, budget_gb, worktrees, dry_run)


@task(help={"json": "print it as one JSON document"})
def status(c: Context, json: bool = False) -> None:
    """What kernels/ holds, how much space it takes, and runs that never finished."""
    import json as json_module

    from hvlab.tasks import housekeeping
    from hvlab.workspace import Workspace

    found = housekeeping.status(Workspace.from_env(ROOT))
    if json:
        print(json_module.dumps(found.as_json(), indent=1))
        return
    for line in found.lines():
        print(line)


@task(help={"out": "directory to write them to (default: docs/schema in this checkout)",
            "check": "write nothing; exit 1 when a file there differs from what it would be"})
def config_schema(c: Context, out: str = "", check: bool = False) -> None:
    """Write the JSON Schema of each kind of file under configs/ (for editors and
    check-jsonschema), generated from the shapes the loader reads with."""
    from hvlab.config import schema_json

    folder = Path(out).expanduser() if out else ROOT / "docs" / "schema"
    stale = []
    for name, text in schema_json.documents().items():
        path = folder / name
        try:
            if check:
                if not path.is_file() or path.read_text("utf-8") != text:
                    stale.append(str(path))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
        except OSError as e:
            print(f"hvlab: error: {path}: {e.strerror}", file=sys.stderr)
            raise SystemExit(3) from None
        print(path)
    if stale:
        print("hvlab: out of date (run inv config.schema): " + ", ".join(stale),
              file=sys.stderr)
        raise SystemExit(1)


config = Collection("config")
config.add_task(config_check, name="check", default=True)
config.add_task(config_schema, name="schema")

image = Collection("image")
image.add_task(image_build, name="build", default=True)
image.add_task(image_vm, name="vm")
ci = Collection("ci")
ci.add_task(ci_matrix, name="matrix", default=True)
report = Collection("report")
report.add_task(report_import, name="import")
report.add_task(report_merge, name="merge")
report.add_task(report_compare, name="compare")
report.add_task(report_mail, name="mail")
report.add_task(report_patchwork, name="patchwork")
hosts = Collection("hosts")
hosts.add_task(hosts_check, name="check", default=True)
hosts.add_task(hosts_capture, name="capture")

ns = Collection()
ns.add_collection(config)
ns.add_collection(image)
ns.add_collection(hosts)
ns.add_collection(report)
ns.add_collection(ci)
ns.add_task(run)
ns.add_task(clean)
ns.add_task(status)
ns.add_task(bisect)
ns.add_task(fetch)
ns.add_task(patch)
ns.add_task(build)
ns.add_task(boot)
ns.add_task(test)
