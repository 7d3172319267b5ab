"""The sanitiser and the JUnit writer: hostile strings always give valid XML."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import junitparser
import pytest

from hvlab.report import junit
from hvlab.report.sanitize import clean, clean_line
from hvlab.results import StageResult, Status, TestCase, exit_code_for

pytestmark = pytest.mark.unit


def test_strips_ansi() -> None:
    assert clean("\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok") == "red ok"


def test_drops_nul_and_control_characters() -> None:
    assert clean("a\x00b\x07c\td\ne") == "abc\td\ne"


def test_lone_surrogates_and_nonchars_dropped() -> None:
    assert clean("x\ud800y\udfffz\ufffe\uffff!") == "xyz!"


def test_invalid_utf8_bytes_become_visible_escapes() -> None:
    assert clean(b"ok \xff\xfe bytes") == "ok \\xff\\xfe bytes"


def test_bytes_never_written_as_repr() -> None:
    assert clean(b"plain") == "plain"


def test_ten_megabytes_capped_with_pointer_to_log() -> None:
    big = "x" * (10 * 1024 * 1024)
    out = clean(big, limit=4096, full_log="/r/logs/build.log")
    assert len(out) < 4096 + 200
    assert "full log: /r/logs/build.log" in out
    assert out.startswith("xxx") and out.endswith("xxx")


def test_ten_megabytes_costs_little_memory() -> None:
    big = "y\x1b[0m" * (2 * 1024 * 1024)
    tracemalloc.start()
    clean(big, limit=64 * 1024)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_clean_line_is_one_line() -> None:
    assert clean_line("a\nb\x00\tc") == "a b c"


HOSTILE = [
    "nul\x00byte", "ansi \x1b[31mred\x1b[0m", "surrogate \ud800", "bad \ufffe",
    "utf8 \udcff", "<tag attr=\"q\">&amp;</tag>", "]]> cdata end", "\x0c form feed",
]


def test_hostile_strings_give_valid_junit(tmp_path: Path,
                                          validate_junit: Callable[[Path], None]) -> None:
    cases = []
    for i, s in enumerate(HOSTILE):
        status = [Status.PASS, Status.FAIL, Status.ERROR, Status.SKIP][i % 4]
        cases.append(TestCase(s, status, message=s, output=s.encode("utf-8", "surrogatepass")))
    cases.append(TestCase("bytes", Status.FAIL, message="", output=b"\xff\xfe\x00"))
    suite = junit.Suite("local.x\x00", "k.h.s", cases, {"prop\x1b[0m": "v\ud800"})
    path = junit.write(tmp_path / "junit.xml", [suite])
    validate_junit(path)
    xml = junitparser.JUnitXml.fromfile(str(path))
    (ts,) = list(xml)
    assert ts.tests == len(cases)
    assert ts.failures == 3 and ts.errors == 2 and ts.skipped == 2
    assert "b'" not in path.read_text()


def test_empty_failure_message_still_counts(tmp_path: Path) -> None:
    path = junit.write(tmp_path / "j.xml",
                       [junit.Suite("s", "c", [TestCase("t", Status.FAIL, "")])])
    ts = list(junitparser.JUnitXml.fromfile(str(path)))[0]
    assert ts.failures == 1


def test_duplicate_case_names_made_unique(tmp_path: Path) -> None:
    cases = [TestCase("same", Status.PASS), TestCase("same", Status.PASS)]
    path = junit.write(tmp_path / "j.xml", [junit.Suite("s", "c", cases)])
    names = [c.name for c in list(junitparser.JUnitXml.fromfile(str(path)))[0]]
    assert names == ["same", "same #2"]


def test_long_output_capped_in_xml(tmp_path: Path) -> None:
    case = TestCase("big", Status.FAIL, "boom", output="z" * 5_000_000,
                    log_path=Path("/logs/big.log"))
    path = junit.write(tmp_path / "j.xml", [junit.Suite("s", "c", [case])])
    text = path.read_text()
    assert len(text) < 100_000
    assert "full log: /logs/big.log" in text


def test_status_order_and_exit_codes() -> None:
    assert Status.worst([Status.SKIP, Status.PASS, Status.FAIL]) is Status.FAIL
    assert Status.worst([Status.FAIL, Status.ERROR]) is Status.ERROR
    assert exit_code_for([Status.PASS, Status.SKIP]) == 0
    assert exit_code_for([Status.PASS, Status.FAIL]) == 1
    assert exit_code_for([Status.FAIL, Status.ERROR]) == 3


def test_stage_of_only_skips_is_skipped() -> None:
    stage = StageResult.from_cases("s", [TestCase("a", Status.SKIP, "why")], 0.0)
    assert stage.status is Status.SKIP and stage.ok


def _shape(xml_text: str) -> list[tuple[object, ...]]:
    """What a JUnit consumer reads: suites, counts, properties, cases and outcomes."""
    import xml.etree.ElementTree as ET

    out: list[tuple[object, ...]] = []
    for ts in ET.fromstring(xml_text).iter("testsuite"):
        out.append(("suite", ts.get("name"), ts.get("tests"), ts.get("failures"),
                    ts.get("errors"), ts.get("skipped"),
                    tuple((p.get("name"), p.get("value")) for p in ts.iter("property"))))
        for tc in ts.iter("testcase"):
            out.append(("case", tc.get("name"), tc.get("classname"), float(tc.get("time") or 0),
                        tc.get("log"),
                        tuple((el.tag, el.get("type") if el.tag != "skipped" else None,
                               el.get("message"), el.text or None) for el in tc)))
    return out


def test_writer_reads_back_as_junit_xml_writes(tmp_path: Path,
                                               validate_junit: Callable[[Path], None]) -> None:
    """hvlab streams its own XML; a consumer must see what junit-xml 1.9 would write
    for the same (sanitised) cases."""
    import junit_xml

    cases = [
        TestCase("pass", Status.PASS, duration=1.25),
        TestCase("fail & <b>", Status.FAIL, 'expected "1" got 2', output="line 1\nline\t2",
                 log_path=Path("/r/logs/t.log")),
        TestCase("error", Status.ERROR, "timed out after 30 s", output="partial", duration=30),
        TestCase("skip", Status.SKIP, "not on Hyper-V"),
        TestCase("dup", Status.PASS), TestCase("dup", Status.PASS),
    ]
    ours = junit.write(tmp_path / "ours.xml", [junit.Suite(
        "local.boot", "k.local.boot", cases, {"kernel": "6.1 <rc>", "host": "local"})])
    validate_junit(ours)
    theirs = []
    for name, c in zip(["pass", "fail & <b>", "error", "skip", "dup", "dup #2"], cases,
                       strict=True):
        jc = junit_xml.TestCase(name, "k.local.boot", c.duration or None,
                                c.output or None, log=str(c.log_path) if c.log_path else None)
        # each outcome carries a body (the evidence, else the message)
        if c.status is Status.FAIL:
            jc.add_failure_info(message=c.message, output=c.message, failure_type="failure")
        elif c.status is Status.ERROR:
            jc.add_error_info(message=c.message, output=c.message, error_type="error")
        elif c.status is Status.SKIP:
            jc.add_skipped_info(message=c.message, output=c.message)
        theirs.append(jc)
    reference = junit_xml.to_xml_report_string([junit_xml.TestSuite(
        "local.boot", theirs, properties={"kernel": "6.1 <rc>", "host": "local"})])
    assert _shape(ours.read_text()) == _shape(reference)


def test_a_pass_keeps_its_warning_through_junit_xml(tmp_path: Path,
                                                   validate_junit: Callable[[Path], None]) -> None:
    """A pass has no outcome element: a ``warn`` check's ``warning:`` message is
    kept in a suite property of its own (``warned:<case>``), so report.mail,
    report.patchwork and report.merge, which read junit.xml back, still see it."""
    from hvlab.report import summary, view

    said = "warning: not addressed (To/Cc): decui@microsoft.com"
    stage = StageResult.from_cases("check", [
        TestCase("get_maintainer: hv: a", Status.PASS, said, output="findings\n"),
        TestCase("get_maintainer: hv: b", Status.PASS, "warning: " + "x" * 900),
        TestCase("sparse: hv: a", Status.PASS, "not a warning"),
        TestCase("W=1: hv: a", Status.FAIL, "warning: a failure stays a failure")], 1.0)
    path = junit.write(tmp_path / "j.xml", junit.suites_from_stage(stage, "k"))
    validate_junit(path)
    [suite] = view.parse(path.read_text())
    got = {c.name: (c.status, c.message) for c in suite.cases}
    assert got == {"get_maintainer: hv: a": (Status.PASS, said),
                   "get_maintainer: hv: b": (Status.PASS, "warning: " + "x" * 900),
                   "sparse: hv: a": (Status.PASS, ""),
                   "W=1: hv: a": (Status.FAIL, "warning: a failure stays a failure")}
    assert [c.name for _, c in view.warnings([suite])] == ["get_maintainer: hv: a",
                                                           "get_maintainer: hv: b"]
    assert "## Warnings (2, not failing)" in summary.render("read back", [suite], {})


def test_a_warning_stays_with_its_case_when_names_are_cleaned_or_repeated(
        tmp_path: Path) -> None:
    """The writer cleans a case's name, cuts it at 500 characters and numbers a
    repeated one (``dup #2``): the warning follows the name the case is written
    under."""
    from hvlab.report import view

    long = "n" * 600
    stage = StageResult.from_cases("check", [
        TestCase("dup", Status.PASS),
        TestCase("dup", Status.PASS, "warning: the second one"),
        TestCase(long, Status.PASS, "warning: a long name"),
        TestCase(" lead", Status.PASS, "warning: a leading space")], 1.0)
    path = junit.write(tmp_path / "j.xml", junit.suites_from_stage(stage, "k"))
    [suite] = view.parse(path.read_text())
    got = {c.name: c.message for c in suite.cases}
    assert got["dup"] == "" and got["dup #2"] == "warning: the second one"
    assert got["n" * 497 + "..."] == "warning: a long name"  # cut at 500
    assert [m for n, m in got.items() if n.strip() == "lead"] == ["warning: a leading space"]


def test_writer_streams_a_large_suite_in_flat_memory(tmp_path: Path) -> None:
    output = "a line of test output that the case printed\n" * 5
    cases = [TestCase(f"suite.case_{i}", Status.PASS if i % 7 else Status.FAIL, "not ok",
                      output=output) for i in range(50_000)]
    tracemalloc.start()
    path = junit.write(tmp_path / "big.xml", [junit.Suite("s", "c", cases)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert path.stat().st_size > 12_000_000
    assert peak < path.stat().st_size // 3  # never the whole document (or a tree of it)
    ts = list(junitparser.JUnitXml.fromfile(str(path)))[0]
    assert ts.tests == 50_000 and ts.failures == len(range(0, 50_000, 7))


def test_the_one_sanitiser_covers_every_file_of_a_run(tmp_path: Path) -> None:
    """A guest's hostile test name and output reach summary.md (a GitHub step
    summary), report.html and metadata.json as text: no NUL, ESC or BEL, no
    markup, invalid bytes as a visible escape."""
    from hvlab.report.runfolder import RunFolder
    from hvlab.workspace import Workspace

    ws = Workspace(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    run = RunFolder(ws, "test", ["test"])
    hostile = "<img src=x onerror=alert(1)> **x** | \x1b[31mred\x1b[0m\x07\x00"
    guest_bytes = clean(b"bad byte \xff here")  # as a guest's output is read
    run.add(StageResult.from_cases("suite", [
        TestCase(hostile, Status.FAIL, hostile, output=f"{hostile} {guest_bytes}")], 1.0),
        "k", "q")
    run.finish(1)
    files = {name: (run.path / name).read_bytes() for name in
             ("summary.md", "report.html", "metadata.json", "junit.xml")}
    for name, data in files.items():
        for byte in (b"\x00", b"\x1b", b"\x07"):
            assert byte not in data, (name, byte)
    summary_text = files["summary.md"].decode()
    assert "\\<img src=x onerror=alert(1)\\> \\*\\*x\\*\\* \\|" in summary_text
    assert "<img" not in summary_text.replace("\\<img", "")
    assert "<img" not in files["report.html"].decode() and "&lt;img" in files[
        "report.html"].decode()
    assert "bad byte \\xff here" in files["junit.xml"].decode()
