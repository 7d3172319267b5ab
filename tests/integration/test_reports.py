"""Report tasks for real: KTAP import checked against the kernel's own kunit.py,
compare with known failures and gating, merge, and report.html in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvlab.suites import ktap
from tests.conftest import Env, node_tool
from tests.conftest import case_status as status

pytestmark = pytest.mark.integration

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


@pytest.fixture(scope="session")
def kunit_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tools/testing/kunit of the real 6.1 tree (kunit.py and its recorded logs)."""
    if not TARBALL.is_file():
        pytest.fail(f"{TARBALL} is missing: run ci/setup.sh (linux-source-6.1)")
    root = tmp_path_factory.mktemp("kunit")
    subprocess.run(["tar", "-xJf", str(TARBALL), "-C", str(root),
                    "linux-source-6.1/tools/testing/kunit"], check=True)
    yield root / "linux-source-6.1" / "tools" / "testing" / "kunit"


def kunit_counts(kunit: Path, log: Path) -> tuple[int, int, int]:
    """(passed, failed + crashed, skipped) as `kunit.py parse` reports them."""
    out = subprocess.run([sys.executable, str(kunit / "kunit.py"), "parse", str(log)],
                         capture_output=True, text=True, check=False).stdout
    line = [x for x in out.splitlines() if "Testing complete" in x][-1]
    got = {k: int(v) for k, v in re.findall(r"(passed|failed|crashed|skipped): (\d+)", line)}
    return got.get("passed", 0), got.get("failed", 0) + got.get("crashed", 0), \
        got.get("skipped", 0)


def test_parser_agrees_with_kunit_py_on_the_kernels_own_logs(kunit_dir: Path) -> None:
    logs = sorted((kunit_dir / "test_data").glob("*.log"))
    assert len(logs) >= 20
    for log in logs:
        with log.open(errors="backslashreplace") as fh:
            doc = ktap.parse(fh)
        if log.name == "test_is_test_passed-kselftest.log":
            # kunit.py reads kselftest's "# "-nested TAP as diagnostics; hvlab parses
            # it as subtests, so only the top level can agree
            nodes = doc.tests
            c = {s: sum(n.status == s for n in nodes) for s in ("pass", "fail", "skip", "error")}
            assert [len(n.children) for n in nodes] == [2, 2]
        else:
            c = doc.counts()
        ours = (c["pass"], c["fail"] + c["error"], c["skip"])
        assert ours == kunit_counts(kunit_dir, log), log.name


def test_report_import_of_a_real_kunit_log(env: Env, kunit_dir: Path,
                                           validate_junit: Any) -> None:
    log = kunit_dir / "test_data" / "test_kernel_panic_interrupt.log"
    done = env.inv("report.import", "--format", "ktap", str(log))
    assert done.returncode == 1, done.stderr  # a crash is the kernel's failure
    validate_junit(env.latest / "junit.xml")
    cases = {name: case for suite in ("kunit-resource-test", "kunit-try-catch-test",
                                      "string-stream-test")
             for name, case in env.suite(f"import.test_kernel_panic_interrupt:{suite}").items()}
    passed = sum(status(c) == "pass" for c in cases.values())
    assert passed == kunit_counts(kunit_dir, log)[0] == 8
    crash = cases["test 2 (never reported: crashed)"]
    assert status(crash) == "failure" and "1 of 3 planned results" in crash.result[0].message
    assert "Kernel panic" in crash.system_out
    assert (env.latest / "summary.md").read_text().startswith("# hvlab report.import: exit 1")


def ktap_file(tmp: Path, name: str, results: dict[str, str]) -> Path:
    lines = ["KTAP version 1", f"1..{len(results)}"]
    for i, (case, st) in enumerate(results.items(), 1):
        lines.append(f"{'ok' if st == 'pass' else 'not ok'} {i} {case}")
    path = tmp / f"{name}.ktap"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_of(env: Env, tmp: Path, name: str, results: dict[str, str]) -> Path:
    done = env.inv("report.import", "--format", "ktap", str(ktap_file(tmp, name, results)))
    assert done.returncode in (0, 1), done.stderr
    return (env.reports / "latest").resolve()


def test_compare_known_failures_and_gates(env: Env, tmp_path: Path,
                                          validate_junit: Any) -> None:
    base = run_of(env, tmp_path, "suite", {"a": "pass", "b": "fail", "c": "pass", "e": "pass"})
    now = run_of(env, tmp_path, "suite", {"a": "fail", "b": "pass", "c": "fail", "d": "pass"})
    done = env.inv("report.compare", "--baseline", str(base), "--run", str(now))
    assert done.returncode == 1, done.stderr
    validate_junit(env.latest / "junit.xml")
    result = json.loads((env.latest / "compare.json").read_text())
    classes = {c["name"]: c["class"] for c in result["cases"]}
    assert classes == {"a": "regression", "b": "fixed", "c": "regression", "d": "new",
                       "e": "removed"}
    summary = (env.latest / "summary.md").read_text()
    assert summary.index("## Regressions (2)") < summary.index("## Failures and errors")
    # a known failure covers c; only-regressions gating still fails on a
    env.write("known-failures.yaml",
              "known_failures:\n  - test: '*::c'\n    reason: flaky firmware, bug 123\n"
              "  - test: '*::zzz'\n    reason: old\n    expires: 2020-01-01\n")
    done = env.inv("report.compare", "--baseline", str(base), "--run", str(now),
                   "--gate", "regressions")
    assert done.returncode == 1
    assert "known failure '*::zzz' expired on 2020-01-01" in done.stderr
    assert "## Known failures (1, not gating)" in (env.latest / "summary.md").read_text()
    env.write("known-failures.yaml",
              "known_failures:\n  - test: '*::c'\n    reason: firmware\n"
              "  - test: '*::a'\n    reason: tracked upstream\n")
    done = env.inv("report.compare", "--baseline", str(base), "--run", str(now),
                   "--gate", "regressions")
    assert done.returncode == 0, done.stderr
    # gating on all: a plain failure with no regression still fails
    env.write("known-failures.yaml", "known_failures: []\n")
    only_fail = run_of(env, tmp_path, "suite", {"a": "pass", "b": "fail", "c": "pass"})
    assert env.inv("report.compare", "--baseline", str(base), "--run", str(only_fail),
                   "--gate", "regressions").returncode == 0
    assert env.inv("report.compare", "--baseline", str(base), "--run", str(only_fail),
                   "--gate", "all").returncode == 1


def test_known_failure_entry_that_now_passes_is_reported(env: Env, tmp_path: Path) -> None:
    env.write("known-failures.yaml",
              "known_failures:\n  - test: '*::a'\n    reason: was broken\n")
    base = run_of(env, tmp_path, "suite", {"a": "pass"})
    done = env.inv("report.compare", "--baseline", str(base), "--run", str(base))
    assert done.returncode == 0
    assert "known failure '*::a' ran and passed: remove it?" in done.stderr


def test_bad_known_failures_file_names_file_and_line(env: Env, tmp_path: Path) -> None:
    env.write("known-failures.yaml",
              "known_failures:\n  - test: x\n    reason: y\n    expires: soon\n")
    base = run_of(env, tmp_path, "suite", {"a": "pass"})
    done = env.inv("report.compare", "--baseline", str(base))
    assert done.returncode == 2
    assert re.search(r"known-failures.yaml:4:\d+: known_failures\[0\].expires: 'soon' is not "
                     r"a date", done.stderr), done.stderr


def test_merge_shards_into_one_report(env: Env, tmp_path: Path, validate_junit: Any) -> None:
    one = run_of(env, tmp_path, "shard1", {"a": "pass", "b": "fail"})
    two = run_of(env, tmp_path, "shard2", {"c": "pass"})
    done = env.inv("report.merge", "--run", str(one), "--run", str(two / "junit.xml"))
    assert done.returncode == 1, done.stderr
    validate_junit(env.latest / "junit.xml")
    assert set(env.suite("import.shard1")) == {"a", "b"}
    assert set(env.suite("import.shard2")) == {"c"}
    assert "2 passed, 1 failed" in (env.latest / "summary.md").read_text()
    bad = env.inv("report.merge", "--run", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no junit.xml" in bad.stderr


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def render(html: Path, png: Path) -> str:
    """Headless Chromium: screenshot ``html`` into ``png``; returns its stderr log
    (console messages appear there as CONSOLE lines)."""
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", f"--screenshot={png}", "--window-size=1280,1600",
         html.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def dump_dom(html: Path) -> str:
    """The page as Chromium built it (after its script ran)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--dump-dom", html.as_uri()], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def test_report_html_renders_in_chromium(env: Env, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: run ci/setup.sh")
    nasty = {"a <script>alert(1)</script>": "fail", "b & 'quotes'": "pass", "c": "pass"}
    run = run_of(env, tmp_path, "suite", nasty)
    html = (run / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    png = tmp_path / "report.png"
    log = render(run / "report.html", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert console_errors(log) == [], log[-2000:]
    # verdict first: the red FAIL banner is at the top of the screenshot, and the
    # page reads verdict, failures (each linking its row), environment, timeline
    from PIL import Image

    with Image.open(png) as shot:
        top = shot.convert("RGB").crop((0, 0, 1280, 160))
        pixels = top.tobytes()
        red = sum(1 for i in range(0, len(pixels), 3)
                  if pixels[i] > 180 and pixels[i + 1] < 70 and pixels[i + 2] < 80)
    assert red > 5000, red  # the banner: #cf222e
    dom = dump_dom(run / "report.html")
    order = [dom.index(mark) for mark in ("id=\"verdict\"", "id=\"failures\"",
                                           "id=\"environment\"", "id=\"timeline\"")]
    assert order == sorted(order), order
    assert 'href="#c-0-0"' in dom and 'id="c-0-0"' in dom
    assert ">0.0<" not in html  # untimed cases show no time
    # the check can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert console_errors(render(broken, tmp_path / "broken.png"))


def consumer_counts(junit_xml: Path) -> dict[str, tuple[int, int, int, int]]:
    """(passed, failed, errors, skipped) as six real JUnit consumers read the
    file: junitparser, xunitparser (one <testsuite> at a time: it folds every
    suite of a document into one and asserts property names unique across
    them), Codecov's test-results-parser (which reads <failure/> with no
    body as a pass), junit2html (which counts an error as a failure), and
    the Node tools junit2json and xunit-viewer (its console summary; ci/node)."""
    import xml.etree.ElementTree as ET

    import junitparser
    import test_results_parser
    import xunitparser
    from junit2htmlreport import parser as junit2html

    out: dict[str, tuple[int, int, int, int]] = {}
    n = {"pass": 0, "fail": 0, "error": 0, "skip": 0}
    for suite in junitparser.JUnitXml.fromfile(str(junit_xml)):
        for case in suite:
            n[{"Failure": "fail", "Error": "error", "Skipped": "skip"}.get(
                type(case.result[0]).__name__, "pass") if case.result else "pass"] += 1
    out["junitparser"] = (n["pass"], n["fail"], n["error"], n["skip"])
    totals = [0, 0, 0, 0]
    for element in ET.parse(junit_xml).getroot():
        _, result = xunitparser.Parser().parse_root(element)
        bad = len(result.failures) + len(result.errors) + len(result.skipped)
        totals = [totals[0] + result.testsRun - bad, totals[1] + len(result.failures),
                  totals[2] + len(result.errors), totals[3] + len(result.skipped)]
    out["xunitparser"] = (totals[0], totals[1], totals[2], totals[3])
    runs = test_results_parser.parse_junit_xml(junit_xml.read_bytes()).testruns
    outcome = test_results_parser.Outcome
    out["test-results-parser"] = tuple(sum(r.outcome == o for r in runs) for o in (
        outcome.Pass, outcome.Failure, outcome.Error, outcome.Skip))  # type: ignore[assignment]
    seen = [c.outcome() for suite in junit2html.Junit(str(junit_xml)).suites
            for c in suite.all()]
    result = junit2html.CaseResult
    out["junit2html"] = (seen.count(result.PASSED), seen.count(result.FAILED), 0,
                         seen.count(result.SKIPPED))
    out["junit2json"] = _junit2json_counts(junit_xml)
    out["xunit-viewer"] = xunit_viewer_counts(junit_xml)
    return out


def _node_tool(name: str, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run([str(node_tool(name)), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _junit2json_counts(junit_xml: Path) -> tuple[int, int, int, int]:
    doc = json.loads(_node_tool("junit2json", str(junit_xml)))
    n = [0, 0, 0, 0]

    def walk(suite: dict[str, Any]) -> None:
        for case in suite.get("testcase", []):
            n[1 if "failure" in case else 2 if "error" in case else
              3 if "skipped" in case else 0] += 1
        for inner in suite.get("testsuite", []):
            walk(inner)
    walk(doc)
    return (n[0], n[1], n[2], n[3])


def xunit_viewer_counts(junit_xml: Path) -> tuple[int, int, int, int]:
    """xunit-viewer's console summary line ("1 passed, 2 skipped, 1 failure")."""
    with tempfile.TemporaryDirectory() as tmp:  # it writes index.html beside it too
        text = _node_tool("xunit-viewer", "-r", str(junit_xml), "-c", "-n", "-C", "false",
                          cwd=Path(tmp))
    found = dict.fromkeys(("passed", "failure", "error", "skipped"), 0)
    summary = [line for line in text.splitlines()
               if re.fullmatch(r"\s*\d+ [a-z]+(, \d+ [a-z]+)*\s*", line)]
    assert summary, text[-500:]
    for number, word in re.findall(r"(\d+) (passed|failures?|errors?|skipped)", summary[-1]):
        found[word.rstrip("s") if word.startswith(("failure", "error")) else word] = \
            int(number)
    return (found["passed"], found["failure"], found["error"], found["skipped"])


def test_every_consumer_reads_the_kernels_own_logs_as_kunit_py_does(env: Env,
                                                                     kunit_dir: Path) -> None:
    logs = sorted((kunit_dir / "test_data").glob("*.log"))
    for log in logs:
        if log.name == "test_is_test_passed-kselftest.log":
            continue  # kunit.py reads kselftest's nesting differently (above)
        done = env.inv("report.import", "--format", "ktap", str(log))
        passed, failed, skipped = kunit_counts(kunit_dir, log)
        assert done.returncode == (1 if failed else 0) or not (passed + failed + skipped), \
            (log.name, done.stderr)  # a crash is the kernel's failure: exit 1, never 3
        if not passed + failed + skipped:
            continue
        counts = consumer_counts(env.latest / "junit.xml")
        assert set(counts.values()) == {(passed, failed, 0, skipped)}, (log.name, counts)
        summary = (env.latest / "summary.md").read_text()
        assert f"{passed} passed, {failed} failed, 0 errors, {skipped} skipped" in summary
        text = (env.latest / "junit.xml").read_text()
        assert "<failure/>" not in text and 'message="not ok"' not in text


def test_a_ktap_failure_says_why_and_a_crash_is_a_failure(env: Env, kunit_dir: Path) -> None:
    log = kunit_dir / "test_data" / "test_is_test_passed-failure.log"
    assert env.inv("report.import", str(log)).returncode == 1
    case = env.suite("import.test_is_test_passed-failure:example")["example_simple_test"]
    failure = case.result[0]
    assert failure.message == "EXPECTATION FAILED at lib/kunit/example-test.c:30"
    assert failure.text.splitlines() == ["EXPECTATION FAILED at lib/kunit/example-test.c:30",
                                         "Expected 1 + 1 == 3, but", "1 + 1 == 2", "3 == 3"]
    # junit2html's page shows the reason too
    from junit2htmlreport import parser as junit2html

    page = junit2html.Junit(str(env.latest / "junit.xml")).html()
    assert "EXPECTATION FAILED at lib/kunit/example-test.c:30" in page
    # one testsuite per KUnit suite, its classname keeping the path
    assert case.classname == "-.import.test_is_test_passed-failure:example"
    log = kunit_dir / "test_data" / "test_kernel_panic_interrupt.log"
    assert env.inv("report.import", str(log)).returncode == 1
    cases = env.suite("import.test_kernel_panic_interrupt:string-stream-test")
    first, second = (cases[f"test {n} (never reported: crashed)"] for n in (2, 3))
    assert first.result[0].type == second.result[0].type == "crash"
    assert first.result[0].message.startswith(
        "the kernel crashed after test 1: Kernel panic - not syncing: VFS")
    assert "Stack:" in first.result[0].text and "Stack:" not in second.result[0].text
    props = env.suite_properties("import.test_kernel_panic_interrupt:string-stream-test")
    assert (props["pass"], props["fail"], props["error"]) == ("1", "2", "0")


def test_every_consumer_counts_an_error_as_an_error(env: Env, tmp_path: Path) -> None:
    """A KTAP TIMEOUT is the harness's error, not the kernel's failure: every
    consumer counts it among the errors (junit2html has no error column and
    folds it into its failures), with its reason as the error's body."""
    log = tmp_path / "timeout.ktap"
    log.write_text("KTAP version 1\n1..3\nok 1 quick\nnot ok 2 wrong\n"
                   "not ok 3 slow # TIMEOUT 30s\n")
    done = env.inv("report.import", str(log))
    assert done.returncode == 3, done.stderr  # an error is infrastructure's: exit 3
    counts = consumer_counts(env.latest / "junit.xml")
    folded = counts.pop("junit2html")
    assert set(counts.values()) == {(1, 1, 1, 0)}, counts
    assert folded == (1, 2, 0, 0)
    error = env.suite("import.timeout")["slow"].result[0]
    assert type(error).__name__ == "Error" and error.message == "TIMEOUT: 30s"
    assert error.text  # never a self-closing <error/>


def test_xfail_passes_with_its_reason_and_a_lone_cr_ends_no_line(env: Env,
                                                                 tmp_path: Path) -> None:
    log = tmp_path / "odd.ktap"
    log.write_bytes(b"KTAP version 1\n1..3\nok 1 known # XFAIL bug 4711\n"
                    b"ok 2 progress 50%\r100%\nnot ok 3 bytes \xff\n")
    assert env.inv("report.import", str(log)).returncode == 1
    cases = env.suite("import.odd")
    assert sorted(cases) == ["bytes \\xff", "known", "progress 50% 100%"]
    assert status(cases["known"]) == "pass"
    assert json.loads(env.suite_properties("import.odd")["xfail"]) == {"known": "bug 4711"}
    # every consumer reads the escaped byte as text (xunit-viewer guesses the
    # encoding from the bytes: a raw 0xff would mislead it)
    assert set(consumer_counts(env.latest / "junit.xml").values()) == {(2, 1, 0, 0)}


FOREIGN = """<?xml version="1.0"?>
<testsuites>
 <testsuite name="outer" tests="2" timestamp="2026-11-30T10:00:00" hostname="ci-7">
  <testsuite name="pytest" tests="2" failures="1" timestamp="2026-11-30T10:00:01"
             hostname="ci-7">
   <testcase classname="pkg.mod.TestIt" name="a" time="0.5"><failure message="boom"
     type="AssertionError">Traceback line 1
line 2</failure></testcase>
   <testcase classname="pkg.mod.TestIt" name="b" time="0.25"/>
  </testsuite>
 </testsuite>
</testsuites>
"""
BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>
<testsuites><testsuite name="x"><testcase name="&lol2;"/></testsuite></testsuites>
"""


def foreign_kept(out: Path) -> None:
    """``out`` (hvlab's junit.xml of FOREIGN) says what FOREIGN said."""
    assert set(consumer_counts(out).values()) == {(1, 1, 0, 0)}  # nested: counted once
    import junitparser

    [suite] = list(junitparser.JUnitXml.fromfile(str(out)))
    assert suite.timestamp == "2026-11-30T10:00:01"
    assert {p.name: p.value for p in suite.properties()}["hostname"] == "ci-7"
    a, b = list(suite)
    assert (a.classname, b.classname) == ("pkg.mod.TestIt", "pkg.mod.TestIt")
    failure = a.result[0]
    assert (failure.message, failure.type, failure.text) == ("boom", "AssertionError",
                                                             "Traceback line 1\nline 2")
    assert (a.time, b.time) == (0.5, 0.25)


@pytest.mark.parametrize("task", [["report.merge", "--run"],
                                  ["report.import", "--format", "junit"]],
                         ids=["merge", "import"])
def test_merge_and_import_keep_what_another_tools_junit_says(env: Env, tmp_path: Path,
                                                             task: list[str]) -> None:
    (tmp_path / "foreign.xml").write_text(FOREIGN)
    done = env.inv(*task, str(tmp_path / "foreign.xml"))
    assert done.returncode == 1, done.stderr
    foreign_kept(env.latest / "junit.xml")
    (tmp_path / "bomb.xml").write_text(BOMB)  # defusedxml refuses the entities
    done = env.inv(*task, str(tmp_path / "bomb.xml"))
    assert done.returncode == 2
    assert "bomb.xml: refused" in done.stderr and "Traceback" not in done.stderr


def test_merge_takes_the_logs_along_and_paths_stay_relative(env: Env, tmp_path: Path) -> None:
    shard = tmp_path / "shard-1" / "20261201-000000-run-abcd"
    (shard / "logs").mkdir(parents=True)
    (shard / "logs" / "boot-k-q.log").write_text("the console\n")
    (shard / "junit.xml").write_text(
        '<testsuites><testsuite name="q.boot" tests="1" failures="1">'
        '<testcase name="boot: q" classname="k.q.boot" log="logs/boot-k-q.log">'
        '<failure message="panic">Kernel panic</failure></testcase></testsuite></testsuites>')
    done = env.inv("report.merge", "--run", str(shard))
    assert done.returncode == 1, done.stderr
    merged = env.latest.resolve()
    import junitparser

    [case] = list(next(iter(junitparser.JUnitXml.fromfile(str(merged / "junit.xml")))))
    log = case._elem.get("log")
    assert log == "logs/20261201-000000-run-abcd/boot-k-q.log"
    assert (merged / log).read_text() == "the console\n"  # published with the folder
    assert f'href="{log}"' in (merged / "report.html").read_text()
    shutil.rmtree(tmp_path / "shard-1")  # the shard's artifact is gone; the evidence is not
    assert (merged / log).is_file()
