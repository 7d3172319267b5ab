"""What report.html and summary.md show of a run folder built in process: the
verdict and failures first, the environment (compiler, QEMU and hvlab
versions, links to the run's .config, console and dmesg), and a timeline a
dominating stage does not hide (bars labelled with durations, a table of
stages by time and share)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hvlab import __version__ as hvlab_version
from hvlab.report.runfolder import RunFolder
from hvlab.results import StageResult, Status, TestCase
from hvlab.workspace import Workspace

pytestmark = pytest.mark.unit

GCC = "gcc (Debian 12.2.0-14) 12.2.0"
QEMU = "QEMU emulator version 7.2.11 (Debian 1:7.2+dfsg-7+deb12u12)"
EVIDENCE = {"config": "logs/config-k.log", "console": "logs/console-k-q.log",
            "dmesg": "logs/dmesg-k-q.log"}


def finished_run(tmp: Path, evidence: bool = True) -> Path:
    """A run of kernel k on host q: a 600 s build, a 30 s boot and a 10 s test
    stage with one failure (its log beside it) and one untimed pass."""
    ws = Workspace(tmp, tmp / "configs", tmp / "kernels", tmp / "reports")
    run = RunFolder(ws, "run", ["run"])
    run.attach("k", "local", {"kernel": "k", "compiler": GCC})
    run.attach("k", "q", {"qemu": QEMU})
    if evidence:
        for path in EVIDENCE.values():
            (run.path / path).write_text("evidence\n")
    log = run.log("drivers-k-q")
    log.write_text("EXPECTATION FAILED at drivers/hv/vmbus_drv.c:42\n")
    run.add(StageResult.from_cases("build", [TestCase("build: k", Status.PASS)], 600.0), "k")
    run.add(StageResult.from_cases("boot", [TestCase("boot: q", Status.PASS)], 30.0), "k", "q")
    run.add(StageResult.from_cases("drivers", [
        TestCase("vmbus_probe", Status.FAIL, "EXPECTATION FAILED at drivers/hv/vmbus_drv.c:42",
                 duration=4.0, log_path=log),
        TestCase("untimed", Status.PASS)], 10.0), "k", "q")
    run.finish(1)
    return run.path


def section(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end)]


def test_report_html_shows_verdict_failures_then_environment_then_timeline(
        tmp_path: Path) -> None:
    page = (finished_run(tmp_path) / "report.html").read_text()
    order = [page.index(mark) for mark in ("id='verdict'", "id='failures'",
                                           "id='environment'", "id='timeline'", "<h2>q.boot")]
    assert order == sorted(order), order
    [failure] = re.findall(r"<li id='f-1'>.*?</li>", section(page, "id='failures'",
                                                             "id='environment'"))
    assert "EXPECTATION FAILED at drivers/hv/vmbus_drv.c:42" in failure  # the reason inline
    assert '<a href="logs/drivers-k-q.log">log</a>' in failure
    environment = section(page, "id='environment'", "id='timeline'")
    for value in (GCC, QEMU, hvlab_version):
        assert f"<code>{value}</code>" in environment, value
    links = dict((label.split()[0], href) for href, label in
                 re.findall(r"<a href='([^']*)'>([^<]*)</a>", environment))
    assert links == EVIDENCE
    untimed = re.search(r"<tr class='r-pass'><td>untimed</td><td>.*?</td><td>([^<]*)</td>",
                        page)
    assert untimed is not None and untimed.group(1) == ""  # no "0.0" for an untimed case


def test_report_html_without_evidence_links_none(tmp_path: Path) -> None:
    page = (finished_run(tmp_path, evidence=False) / "report.html").read_text()
    environment = section(page, "id='environment'", "id='timeline'")
    assert f"<code>{GCC}</code>" in environment and "<th>logs</th>" not in environment


def test_the_timeline_labels_its_bars_and_tables_stages_by_time_and_share(
        tmp_path: Path) -> None:
    """The build takes 94% of the run: the boot and test bars are slivers, so
    each bar says its duration and a table lists the stages, longest first."""
    timeline = section((finished_run(tmp_path) / "report.html").read_text(),
                       "id='timeline'", "id='problems'")
    bars = re.findall(r"<div class='s-(\w+)' style='left:[\d.]+%;width:[\d.]+%'[^>]*>([^<]*)"
                      r"</div>", timeline)
    assert bars == [("pass", "build 600.0 s"), ("pass", "boot 30.0 s"),
                    ("fail", "drivers 10.0 s")]
    table = timeline[timeline.index("<table class='times'>"):]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                      r"</tr>", table)
    assert rows == [("build", "local", "600.0", "94%"), ("boot", "q", "30.0", "5%"),
                    ("drivers", "q", "10.0", "2%")]


def test_summary_md_lists_failures_before_the_environment_and_the_stages(
        tmp_path: Path) -> None:
    text = (finished_run(tmp_path) / "summary.md").read_text()
    lines = text.splitlines()
    assert lines[0] == "# hvlab run: exit 1"
    assert lines[2] == "**FAIL**: 3 passed, 1 failed, 0 errors, 0 skipped"
    order = [text.index(h) for h in ("## Failures and errors (1)", "## Environment",
                                     "## Stages")]
    assert order == sorted(order), order
    failures = section(text, "## Failures and errors", "## Environment")
    assert ("**q.drivers** › vmbus\\_probe: EXPECTATION FAILED at "
            "drivers/hv/vmbus\\_drv.c:42 ([log](logs/drivers-k-q.log))") in failures
    environment = section(text, "## Environment", "## Stages")
    for value in (GCC, QEMU, hvlab_version):
        assert f"`{value}`" in environment, value
    assert dict(re.findall(r"\[(\w+) [^\]]*\]\(([^)]*)\)", environment)) == EVIDENCE
    stages = text[text.index("## Stages"):]
    assert "| local | build | ✅ pass | 1/1 | 600.0 s |" in stages
    assert "| q | drivers | ❌ fail | 1/2 | 10.0 s |" in stages
