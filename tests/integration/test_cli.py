"""The command line as a user types it (the real ``inv`` on the real tasks):
``-h`` is help on every task, a bad flag is one line with exit 2, a usage
error leaves reports/latest on the last results, and a CI matrix never
holds an empty shard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAKE_TREE, REPO, Env, format_series, git, make_repo, write_tree

pytestmark = pytest.mark.integration

KTAP = "KTAP version 1\n1..2\nok 1 first\nnot ok 2 second\n"


def shipped(env: Env) -> Env:
    shutil.rmtree(env.configs)
    shutil.copytree(REPO / "configs", env.configs)
    return env


@pytest.mark.parametrize("task", ["run", "test", "boot", "bisect", "hosts.check", "build"])
def test_dash_h_is_help_and_runs_nothing(env: Env, task: str) -> None:
    done = env.inv(task, "-h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: inv[oke] [--core-opts] {task} ")
    assert "\n  --, " not in done.stdout  # no phantom flag
    assert not env.reports.exists()  # nothing ran


@pytest.mark.parametrize("argv,line", [
    (["ci.matrix", "--shards", "x"], "inv ci.matrix --shards 'x': expected a whole number"),
    (["clean", "--days", "x"], "inv clean --days 'x': expected a number"),
    (["run", "--jobs=many"], "inv run --jobs 'many': expected a whole number"),
    (["run", "--hots", "a"], "inv run: unknown flag --hots; did you mean --host?"),
    (["buidl"], "unknown task 'buidl'; did you mean build?"),
])
def test_a_bad_flag_is_one_line_and_exit_2(env: Env, argv: list[str], line: str) -> None:
    done = env.inv(*argv)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0].startswith(f"hvlab: error: {line}"), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_usage_errors_and_config_check_leave_latest_on_the_last_results(env: Env,
                                                                        tmp_path: Path) -> None:
    log = tmp_path / "results.ktap"
    log.write_text(KTAP)
    assert env.inv("report.import", str(log)).returncode == 1
    results = os.path.realpath(env.latest)
    assert env.inv("build").returncode == 2  # --kernel is missing
    assert env.inv("run", "--plan", "nosuch").returncode == 2
    assert env.inv("config.check").returncode == 0
    assert os.path.realpath(env.latest) == results
    # each still wrote its own run folder, with the error in its junit.xml
    assert len([p for p in env.reports.iterdir() if p.name != "latest"]) == 4
    # a compare says which runs it compares
    done = env.inv("report.compare", "--baseline", results)
    assert f"comparing {results} (inv report.import, started " in done.stderr


def test_a_matrix_never_has_an_empty_shard_and_an_empty_shard_passes(env: Env) -> None:
    shipped(env)
    done = env.inv("ci.matrix", "--shards", "4")
    assert done.returncode == 0, done.stderr
    jobs = json.loads(done.stdout)
    assert [j["shard"] for j in jobs] == ["1/1"] and jobs[0]["cells"]
    done = env.inv("run", "--shard", "2/2")  # one cell: the second of two shards is empty
    assert done.returncode == 0, done.stderr
    assert "shard 2/2 of plan default holds no cells: nothing to run" in done.stderr
    assert "<testsuite " not in (env.latest / "junit.xml").read_text()


def test_defaults_come_from_invokes_configuration(env: Env, tmp_path: Path) -> None:
    shipped(env)
    conf = tmp_path / "invoke.yaml"
    conf.write_text("hvlab:\n  plan: nightly\n")
    done = env.inv("-f", str(conf), "ci.matrix")
    assert done.returncode == 2 and "nightly" in done.stderr, done.stderr
    shutil.copy(env.configs / "plans" / "default.yaml", env.configs / "plans" / "nightly.yaml")
    done = env.inv("-f", str(conf), "ci.matrix", "--format", "github")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["include"][0]["plan"] == "nightly"
    assert env.inv("-f", str(conf), "ci.matrix", "--plan", "default").returncode == 0
    conf.write_text("hvlab:\n  jobs: many\n")
    done = env.inv("-f", str(conf), "build", "--kernel", "x")
    assert done.returncode == 2
    assert done.stderr.strip() == ("hvlab: error: invoke configuration (invoke.yaml): "
                                   "hvlab.jobs: 'many' is not a whole number")


def test_json_outputs_for_scripts(env: Env) -> None:
    shipped(env)
    dry = json.loads(env.inv("run", "--dry-run", "--json").stdout)
    assert dry["plan"] == "default"
    assert dry["cells"] == [{"cell": "linux-6.1+hyperv-sample@local-qemu", "build": "would run",
                             "build_id": None, "suites": ["boot-health", "hyperv-drivers"],
                             "series": "hyperv-sample", "boots": True}]
    status = json.loads(env.inv("status", "--json").stdout)
    assert status["builds"] == [] and status["total_bytes"] >= 0
    done = env.inv("hosts.check", "--host", "local-qemu", "--json")
    checked = json.loads(done.stdout)
    assert checked["task"] == "hosts.check" and checked["exit_code"] == done.returncode
    assert [(c["name"], c["status"]) for c in checked["cases"]] == [
        ("host: local-qemu", "pass" if done.returncode == 0 else "error")]
    env.write("hosts/broken.yaml", "kind: qemu\nmemory: lots\n")
    done = env.inv("config.check", "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)  # stdout is the document alone
    [issue] = report["issues"]
    assert issue["file"].endswith("hosts/broken.yaml") and issue["line"] == 2
    assert issue["field"] == "memory" and report["exit_code"] == 2
    assert env.inv("run", "--json").returncode == 2  # --json only with --dry-run


def test_a_report_task_with_no_run_and_no_latest_does_not_read_itself(env: Env) -> None:
    done = env.inv("report.mail")
    assert done.returncode == 2, done.stderr
    assert "reports/latest does not exist" in done.stderr


def failing_plan(env: Env, tmp: Path) -> None:
    """Plan p: one cell whose series no longer applies, a failure (not an
    error) found in a second, with nothing built or booted."""
    upstream = tmp / "upstream"
    make_repo(upstream, FAKE_TREE)
    env.write("kernels/k.yaml", f"source:\n  git: {upstream}\n  ref: main\n")
    format_series(upstream, env.configs / "patches" / "s",
                  [("drivers/hv/vmbus_drv.c", "vmbus line 10 ", "vmbus line ten ")])
    write_tree(upstream, {"drivers/hv/vmbus_drv.c": "/* rewritten */\n" * 40})
    git(upstream, "commit", "-q", "-a", "-m", "the patch's context is gone")
    env.write("hosts/q.yaml", "kind: qemu\naccel: tcg\nmemory: 512\ncpus: 1\n")
    env.write("suites/v.yaml", "tests:\n  - name: v\n    run: 'true'\n")
    env.write("plans/p.yaml", "kernels: [k]\nseries: [s]\nhosts: [q]\nsuites: [v]\n")


def test_the_gate_default_comes_from_invokes_configuration(env: Env, tmp_path: Path) -> None:
    """hvlab.gate decides a run's exit code, and report.compare's, as --gate would;
    a --gate on the command line wins."""
    failing_plan(env, tmp_path)
    conf = tmp_path / "invoke.yaml"
    conf.write_text("hvlab:\n  gate: regressions\n")
    run = ["run", "--plan", "p", "--checks", "none"]
    done = env.inv(*run)
    assert done.returncode == 1, done.stderr  # the default gate: any failure fails
    first = os.path.realpath(env.latest)
    assert "does not apply" in done.stderr
    done = env.inv("-f", str(conf), *run)
    assert done.returncode == 0, done.stderr  # no baseline: no failure is a regression
    assert env.inv("-f", str(conf), *run, "--gate", "all").returncode == 1
    # the same failure as in the baseline is no regression: only the gate decides
    second = os.path.realpath(env.latest)
    compare = ["report.compare", "--baseline", first, "--run", second]
    assert env.inv(*compare).returncode == 1
    done = env.inv("-f", str(conf), *compare)
    assert done.returncode == 0, done.stderr
    assert env.inv("-f", str(conf), *compare, "--gate", "all").returncode == 1


@pytest.mark.parametrize("argv", [["run", "--plan", "p"], ["run", "--plan", "p", "--dry-run"],
                                  ["report.compare", "--baseline", "b"]])
def test_a_bad_gate_in_invokes_configuration_is_one_line_and_exit_2(
        env: Env, tmp_path: Path, argv: list[str]) -> None:
    failing_plan(env, tmp_path)
    conf = tmp_path / "invoke.yaml"
    for value, why in (("bogus", "'bogus' is not all or regressions"),
                       ("3", "3 is not a string")):
        conf.write_text(f"hvlab:\n  gate: {value}\n")
        done = env.inv("-f", str(conf), *argv)
        assert done.returncode == 2
        assert done.stderr.strip() == ("hvlab: error: invoke configuration (invoke.yaml): "
                                       f"hvlab.gate: {why}"), done.stderr
        assert not env.reports.exists()  # nothing ran: no run folder, latest untouched


@pytest.mark.parametrize("argv", [["--list"], ["run", "-h"]])
def test_output_to_a_reader_that_went_away_ends_without_a_traceback(
        env: Env, argv: list[str]) -> None:
    """``inv run -h | head -1``: once the reader has gone, hvlab stops as
    standard tools do (killed by SIGPIPE, 141 in a shell), saying nothing."""
    read, write = os.pipe()
    os.close(read)  # gone before the first write: the same every time
    try:
        done = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *argv],
                              cwd=env.root, env={**os.environ, **env.vars}, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write)
    assert done.returncode == -signal.SIGPIPE, done.stderr
    assert done.stderr == ""
