"""The run folder is a valid report at every moment: from the first stage, and
rewritten as each stage begins and ends, saying what was running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hvlab.report import junit, unfinished, view
from hvlab.report.runfolder import RunFolder
from hvlab.results import StageResult, Status, TestCase
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
