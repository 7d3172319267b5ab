"""Report tasks for real: KTAP import checked against the kernel's own kunit.py,
compare with known failures and gating, merge, and report.html in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvlab.suites import ktap
from tests.conftest import Env
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
    assert done.returncode == 3, done.stderr  # a crash is an error
    validate_junit(env.latest / "junit.xml")
    cases = env.suite("import.test_kernel_panic_interrupt")
    passed = sum(status(c) == "pass" for c in cases.values())
    assert passed == kunit_counts(kunit_dir, log)[0] == 8
    crash = cases["string-stream-test.crashed after test 1"]
    assert status(crash) == "error" and "1 of 3 planned results" in crash.result[0].message
    assert "Kernel panic" in crash.system_out
    assert (env.latest / "summary.md").read_text().startswith("# hvlab report.import: exit 3")


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
    # the check can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert console_errors(render(broken, tmp_path / "broken.png"))
