"""The KTAP/TAP parser on KUnit- and kselftest-shaped output."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvlab.results import Status
from hvlab.suites import ktap

pytestmark = pytest.mark.unit

KUNIT = """\
[    0.500000] Run /init as init process
[    1.000000] KTAP version 1
[    1.000001] 1..2
[    1.000002]     KTAP version 1
[    1.000003]     # Subtest: example
[    1.000004]     1..3
[    1.000005]     ok 1 example_simple_test
[    1.000006]     ok 2 example_skip_test # SKIP this test should be skipped
[    1.000007]     # example_fail: EXPECTATION FAILED at lib/kunit/kunit-example-test.c:40
[    1.000008]     not ok 3 example_fail
[    1.000009] # example: pass:1 fail:1 skip:1 total:3
[    1.000010] not ok 1 example
[    1.000011]     KTAP version 1
[    1.000012]     # Subtest: crashy
[    1.000013]     1..3
[    1.000014]     ok 1 first
[    1.000015] BUG: kernel NULL pointer dereference, address: 0000000000000000
"""


def test_kunit_nesting_directives_and_a_crash() -> None:
    doc = ktap.parse(KUNIT.splitlines())
    assert doc.version == "KTAP 1"
    assert [(p, n.status) for p, n in doc.leaves()] == [
        ("example.example_simple_test", "pass"),
        ("example.example_skip_test", "skip"),
        ("example.example_fail", "fail"),
        ("crashy.first", "pass"),
        ("crashy.test 2 (never reported: crashed)", "fail"),
        ("crashy.test 3 (never reported: crashed)", "fail"),
    ]
    fail = dict(doc.leaves())["example.example_fail"]
    assert any("EXPECTATION FAILED" in line for line in fail.output)
    # as kunit.py counts: each of the 2 missing planned tests of "crashy" crashed
    assert doc.counts() == {"pass": 2, "fail": 3, "skip": 1, "error": 0}
    crashy = doc.tests[1]
    assert crashy.status == "fail" and crashy.directive == ktap.CRASH


KSELFTEST = """\
TAP version 13
1..3
# selftests: net: foo
# TAP version 13
# 1..3
# ok 1 a
# not ok 2 b # TIMEOUT 30 seconds
# ok 3 c # XFAIL known
ok 1 selftests: net: foo
not ok 2 selftests: net: bar # exit=1
ok 3 selftests: net: baz # SKIP no hardware
"""


def test_kselftest_hash_prefixed_nesting() -> None:
    doc = ktap.parse(KSELFTEST.splitlines())
    assert doc.version == "TAP 13"
    leaves = {p: (n.status, n.directive, n.reason) for p, n in doc.leaves()}
    assert leaves == {
        "selftests: net: foo.a": ("pass", "", ""),
        "selftests: net: foo.b": ("error", "TIMEOUT", "30 seconds"),
        "selftests: net: foo.c": ("pass", "XFAIL", "known"),
        "selftests: net: bar": ("fail", "", "exit=1"),
        "selftests: net: baz": ("skip", "SKIP", "no hardware"),
    }


def test_todo_directive() -> None:
    doc = ktap.parse(["TAP version 14", "1..2", "not ok 1 later # TODO not done",
                      "ok 2 surprise # TODO"])
    assert [n.status for _, n in doc.leaves()] == ["skip", "pass"]


def test_missing_plan_and_unknown_lines_kept() -> None:
    doc = ktap.parse(["KTAP version 1", "random noise", "ok 1 one", "ok 2 - two"])
    assert doc.plan is None
    assert [(p, n.number) for p, n in doc.leaves()] == [("one", 1), ("two", 2)]
    assert doc.tests[0].output == ["random noise"]


def test_fewer_results_than_planned_are_crashed_tests_the_first_with_the_tail() -> None:
    doc = ktap.parse(["KTAP version 1", "1..3", "ok 1 a", "Kernel panic - not syncing: x"])
    first, second = doc.tests[1:]
    assert [first.name, second.name] == ["test 2 (never reported: crashed)",
                                         "test 3 (never reported: crashed)"]
    assert {first.status, second.status} == {"fail"}
    assert first.reason == ("the kernel crashed after test 1: Kernel panic - not syncing: x "
                            "(1 of 3 planned results; the output stopped)")
    assert first.output == ["Kernel panic - not syncing: x"] and second.output == []


def test_duplicate_names_made_unique() -> None:
    doc = ktap.parse(["KTAP version 1", "1..3", "ok 1 same", "ok 2 same", "ok 3 same"])
    assert [p for p, _ in doc.leaves()] == ["same", "same #2", "same #3"]


def test_tap14_four_space_subtests() -> None:
    doc = ktap.parse(["TAP version 14", "1..1", "    # Subtest: grp", "    1..1",
                      "    ok 1 inner", "ok 1 - grp"])
    assert [(p, n.status) for p, n in doc.leaves()] == [("grp.inner", "pass")]


def test_nothing_before_the_version_line_is_a_test() -> None:
    doc = ktap.parse(["ok 1 not-tap", "[ 0.1] KTAP version 1", "[ 0.1] 1..1", "[ 0.1] ok 1 x"])
    assert [p for p, _ in doc.leaves()] == ["x"]


def test_parse_leaves_the_collector_as_it_found_it() -> None:
    import gc

    from hvlab.bulk import gc_paused

    assert gc.isenabled()
    ktap.parse(["KTAP version 1", "1..1", "ok 1 a"])
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block found it off: leaves it off
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("a parse error")
    assert gc.isenabled()


def test_result_names_keep_inner_spaces_and_lose_trailing_ones() -> None:
    doc = ktap.parse(["TAP version 13", "1..2", "ok 1 - a  name \t ", "not ok 2 b # a note  "])
    assert [(n.name, n.status, n.reason) for n in doc.tests] == [
        ("a  name", ktap.PASS, ""), ("b", ktap.FAIL, "a note")]


class LocalGuest:
    """Runs the guest's command here, with the recorded debugfs folder as its $1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def run(self, argv: list[str], timeout: float = 0, log: Path | None = None,
            tail_bytes: int = 0) -> object:
        import subprocess
        import time

        from hvlab.ssh import RemoteResult

        t0 = time.monotonic()
        done = subprocess.run([*argv, str(self.folder)], capture_output=True, text=True,
                              check=False)
        return RemoteResult(tuple(argv), done.returncode, time.monotonic() - t0,
                            done.stdout + done.stderr, done.stderr, stdout=done.stdout)


def test_kunit_debugfs_results_of_a_real_61_kernel_are_judged_whole(tmp_path: Path) -> None:
    """The results files a real 6.1 KUnit kernel left in debugfs (tests/data/ktap),
    collected by the kunit built-in, are one document of three suites, and each
    KUnit suite is a testsuite of its own in junit.xml."""
    from hvlab.report import junit
    from hvlab.results import StageResult
    from hvlab.suites import builtin

    folder = Path(__file__).resolve().parents[1] / "data" / "ktap" / "kunit-6.1-debugfs"
    ctx = builtin.GuestContext(LocalGuest(folder), "q", "", tmp_path)  # type: ignore[arg-type]
    cases = builtin.kunit(ctx, tmp_path / "kunit.log")
    by_name = {c.name: c for c in cases}
    assert by_name["kunit: example.example_skip_test"].status is Status.SKIP
    assert by_name["kunit: example.example_skip_test"].message == "this test should be skipped"
    counts = {st: sum(c.status is st for c in cases) for st in Status}
    assert counts[Status.SKIP] == 2 and counts[Status.FAIL] == 0 and counts[Status.ERROR] == 0
    lists = sum(n.startswith("kunit: list-kunit-test.") for n in by_name)
    assert counts[Status.PASS] == 2 + 18 + lists and lists > 0
    stage = StageResult.from_cases("kunit", cases, 1.0)
    suites = junit.suites_from_stage(stage, "linux-6.1", "q")
    assert [(s.name, len(s.cases)) for s in suites] == [
        ("q.kunit:example", 4), ("q.kunit:hlist", 18), ("q.kunit:list-kunit-test", lists)]


def test_kselftest_output_recorded_from_an_e2e_run() -> None:
    """run_kselftest.sh's output from hvlab's own e2e run on the real 6.1 build:
    two TAP documents (one per target) with the programs' TAP nested behind '# '."""
    from hvlab.suites.ktapcases import cases_from_document

    path = Path(__file__).resolve().parents[1] / "data" / "ktap" / "kselftest-size-vdso-6.1.tap"
    with path.open(errors="replace") as fh:
        doc = ktap.parse(fh)
    cases = {c.name: c for c in cases_from_document(doc, "kselftest")}
    size = cases["kselftest: selftests: size: get_size.get runtime memory use"]
    assert size.status is Status.PASS
    vdso = [n for n in cases if n.startswith("kselftest: selftests: vDSO: vdso_test_")]
    assert len(vdso) >= 5, sorted(cases)
    assert all(cases[n].status in (Status.PASS, Status.SKIP) for n in vdso)
    assert not [c for c in cases.values() if c.status in (Status.FAIL, Status.ERROR)]


def test_a_suites_ktap_suites_get_testsuites_of_their_own() -> None:
    from hvlab.report import junit
    from hvlab.results import StageResult
    from hvlab.suites.ktapcases import cases_from_document

    doc = ktap.parse(KUNIT.splitlines())
    cases = cases_from_document(doc, "kunit", mark_suites=True)
    stage = StageResult.from_cases("hyperv-drivers", [*cases], 2.0)
    suites = junit.suites_from_stage(stage, "k", "q")
    assert [(s.name, s.classname, len(s.cases)) for s in suites] == [
        ("q.hyperv-drivers:example", "k.q.hyperv-drivers:example", 3),
        ("q.hyperv-drivers:crashy", "k.q.hyperv-drivers:crashy", 3)]
    # without KTAP suites a stage stays one testsuite
    plain = StageResult.from_cases("boot", [*cases_from_document(doc, "x")], 1.0)
    assert [s.name for s in junit.suites_from_stage(plain, "k", "q")] == ["q.boot"]
