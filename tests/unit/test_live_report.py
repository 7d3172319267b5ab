"""The run folder is a valid report at every moment: from the first stage, and
rewritten as each stage begins and ends, saying what was running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvlab.report import junit, unfinished, view
from hvlab.report.runfolder import RunFolder
from hvlab.results import StageResult, Status, TestCase, exit_code_for
from hvlab.workspace import Workspace

pytestmark = pytest.mark.unit


def cases(run: RunFolder) -> dict[str, Status]:
    suites = view.parse((run.path / "junit.xml").read_text())
    return {c.name: c.status for s in suites for c in s.cases}


def test_a_run_that_stops_anywhere_leaves_a_report_of_what_it_did(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "boot", ["boot"])
    run.checkpoint()
    assert cases(run) == {"run did not finish (between stages)": Status.ERROR}
    assert not (ws.reports / "latest").exists()  # no results yet: latest waits for them
    token = run.begin("build (k)")
    assert (ws.reports / "latest").resolve() == run.path  # a stage began
    assert cases(run) == {"run did not finish (stage build (k) was running)": Status.ERROR}
    run.add(StageResult.from_cases("build", [TestCase("build: k", Status.PASS)], 1.0), "k")
    run.end(token)
    run.begin("boot (k on q)")
    run.begin("boot (k on r)")
    assert cases(run) == {"build: k": Status.PASS,
                          "run did not finish (stages boot (k on q), boot (k on r) were "
                          "running)": Status.ERROR}
    meta = json.loads((run.path / "metadata.json").read_text())
    assert meta["finished"] is False and meta["running"] == ["boot (k on q)", "boot (k on r)"]
    assert "not finished" in (run.path / "summary.md").read_text()
    [left] = unfinished.find(ws.reports)
    assert left.alive and left.line().endswith("boot still running (boot (k on q), "
                                               "boot (k on r))")
    run.finish(0)
    assert cases(run) == {"build: k": Status.PASS}
    assert json.loads((run.path / "metadata.json").read_text())["finished"] is True
    assert unfinished.find(ws.reports) == []


def test_a_dead_runs_folder_is_listed_as_never_finished(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "run", ["run"])
    run.begin("boot (k on q)")
    meta = json.loads((run.path / "metadata.json").read_text())
    meta["pid_started"] -= 1  # the pid now names another process: that run is dead
    (run.path / "metadata.json").write_text(json.dumps(meta, indent=2))
    [left] = unfinished.find(ws.reports)
    assert not left.alive
    assert left.line() == (f"{run.id}: run started {meta['started']} never finished "
                           "(boot (k on q))")


def test_every_file_of_a_run_folder_is_readable_by_others(tmp_path: Path) -> None:
    """A Jenkins agent or a web server serving reports/ reads junit.xml as it
    reads summary.md: all are 0666 less the umask (0644 under the usual 022)."""
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "boot", ["boot"])
    run.add(StageResult.from_cases("build", [TestCase("build: k", Status.PASS)], 1.0), "k")
    run.finish(0)
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.path.iterdir() if p.is_file()}
    assert set(modes) >= {"junit.xml", "summary.md", "report.html", "metadata.json"}
    assert set(modes.values()) == {0o666 & ~junit._UMASK}, modes


def test_cases_are_keyed_by_the_classname_junit_xml_gives_them(tmp_path: Path) -> None:
    """compare and known failures key a case by (classname, name): for a case
    in a KTAP suite's own testsuite that is that testsuite's classname."""
    from hvlab.report.junit import KTAP_SUITE

    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "test", ["test"])
    run.add(StageResult.from_cases("drivers", [
        TestCase("kunit: hv.a", Status.FAIL, "x", properties={KTAP_SUITE: "hv"}),
        TestCase("plain", Status.PASS)], 3.0), "k", "q")
    run.finish(1)
    in_xml = {(c.classname, c.name) for s in view.parse((run.path / "junit.xml").read_text())
              for c in s.cases}
    assert set(run.case_results()) == in_xml == {("k.q.drivers:hv", "kunit: hv.a"),
                                                 ("k.q.drivers", "plain")}


def test_a_warn_checks_finding_shows_in_both_summaries_and_fails_nothing(
        tmp_path: Path) -> None:
    """A ``warn`` check passes its case with a ``warning:`` message: summary.md
    and report.html list it under Warnings (after the failures, before the
    environment and stages), linked to its row and its log; the verdict stays PASS."""
    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "build", ["build"])
    log = run.path / "logs" / "check.log"
    subject = "hv: a comment"
    stage = StageResult.from_cases("check", [
        TestCase(f"sparse: {subject}", Status.PASS, log_path=log),
        TestCase(f"get_maintainer: {subject}", Status.PASS,
                 "warning: not addressed (To/Cc): decui@microsoft.com",
                 output="get_maintainer.pl: kys@microsoft.com, decui@microsoft.com\n",
                 log_path=log)], 1.0)
    run.add(stage, "k")
    assert exit_code_for(c.status for c in stage.cases) == 0
    run.finish(0)
    summary = (run.path / "summary.md").read_text()
    assert summary.splitlines()[2].startswith("**PASS**: 2 passed, 0 failed")
    assert "## Warnings (1, not failing)" in summary
    assert "- ⚠️ get\\_maintainer: hv: a comment — k.local.check: not addressed (To/Cc): " \
        "decui@microsoft.com" in summary
    assert "sparse: hv: a comment —" not in summary  # a plain pass is no warning
    assert "## Failures" not in summary
    assert summary.index("## Warnings") < summary.index("## Stages")
    page = (run.path / "report.html").read_text()
    assert "id='verdict'>PASS: 2 passed" in page
    assert "id='failures'" not in page
    assert "<h2 id='warnings'>Warnings (1, not failing)</h2>" in page
    [item] = [line for line in page.splitlines() if line.startswith("<li id='w-1'>")]
    assert f"<a href='#c-0-1'>get_maintainer: {subject}</a>" in item
    assert "k.local.check</span>: not addressed (To/Cc): decui@microsoft.com" in item
    assert '<a href="logs/check.log">log</a>' in item
    # the row the warning links to, kept when "only problems" hides the passes
    assert "<tr class='r-warn' id='c-0-1'>" in page
    assert page.index("id='warnings'") < page.index("id='environment'")


def test_the_warnings_are_listed_after_the_failures_escaped_and_capped() -> None:
    """With failures too, summary.md lists the warnings after them; a warning's
    text goes through the same Markdown escaping as a failure's, and past the
    limit the rest are counted."""
    from hvlab.report import html, summary

    hostile = "warning: <img src=x onerror=alert(1)> **x** | y"
    many = tuple(view.CaseView(f"checkpatch: patch {n}", "k+s.local.patch", Status.PASS,
                               "warning: 0 errors, 1 warnings, 0 checks (profile default)")
                 for n in range(summary.LIMIT + 2))
    suites = [view.SuiteView("k+s/local.check", (
        view.CaseView("W=1: p", "k+s.local.check", Status.FAIL, "x.c:3: no prototype"),
        view.CaseView("get_maintainer: p", "k+s.local.check", Status.PASS, hostile))),
        view.SuiteView("k+s/local.patch", many)]
    warned = summary.LIMIT + 3
    text = summary.render("hvlab run", suites, {"kernel": "k"})
    assert text.index("## Failures and errors (1)") < text.index(
        f"## Warnings ({warned}, not failing)")
    assert text.index("## Warnings") < text.index("## Environment") < text.index("## Stages")
    assert "- ⚠️ get\\_maintainer: p — k+s.local.check: \\<img src=x onerror=alert(1)\\> " \
        "\\*\\*x\\*\\* \\| y" in text
    assert f"- … and {warned - summary.LIMIT} more (see junit.xml)" in text
    assert f"**FAIL**: {warned} passed, 1 failed" in text  # a warning counts as a pass
    page = html.render("hvlab run", suites, {"kernel": "k"})
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt; **x** | y" in page
    assert page.index("id='failures'") < page.index("id='warnings'")


def test_a_huge_suites_table_keeps_its_failures_before_its_warnings() -> None:
    """Past the row limit a suite lists its problems only: every failure the
    Failures list links to keeps its row, warnings fill what is left, and a
    warning's row stays visible under "only problems"."""
    from hvlab.report import html

    limit = html.ROW_LIMIT
    cases = tuple(view.CaseView(f"warned {n}", "k.local.check", Status.PASS,
                                "warning: noted") for n in range(10))
    cases += tuple(view.CaseView(f"failed {n}", "k.local.check", Status.FAIL, "broken")
                   for n in range(limit - 2))
    cases += tuple(view.CaseView(f"passed {n}", "k.local.check", Status.PASS, "")
                   for n in range(5))
    page = html.render("hvlab run", [view.SuiteView("k/local.check", cases)], {})
    rows = [line for line in page.splitlines() if line.startswith("<tr class='r-")]
    assert sum("<td>failed " in r for r in rows) == limit - 2  # every failure has its row
    assert sum("<td>warned " in r for r in rows) == 2  # then the warnings, as room allows
    assert not any("<td>passed " in r for r in rows)
    assert all(r.startswith("<tr class='r-warn'") for r in rows if "<td>warned " in r)
