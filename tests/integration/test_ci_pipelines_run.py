"""The pipelines of ci/ run, as far as a tool here allows: gitlab-ci-local runs
the GitLab pipeline's jobs (shell executor) on a small plan, and the Jenkinsfile
passes npm-groovy-lint. Both tools come from ci/node (ci/setup.sh, npm ci)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hvlab.report import view
from tests.conftest import REPO, Env, fake_kernel_repo, format_series, git, node_tool
from tests.integration.test_bisect import setup_env

pytestmark = pytest.mark.integration

JENKINS = REPO / "ci" / "jenkins"
APT_CONF_D = Path("/etc/apt/apt.conf.d")


# --- Jenkins: npm-groovy-lint ------------------------------------------------


def groovy_lint(*files: Path) -> tuple[int, dict[str, Any]]:
    """npm-groovy-lint with ci/jenkins/.groovylintrc.json, failing on warnings.
    --noserver: no CodeNarc server left running; the timeout because the tool
    has been seen to hang on broken input."""
    done = subprocess.run(
        [str(node_tool("npm-groovy-lint")), "--noserver", "--failon", "warning",
         "--config", str(JENKINS / ".groovylintrc.json"), "--output", "json",
         *map(str, files)],
        capture_output=True, text=True, timeout=300, check=False)
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from npm-groovy-lint (exit {done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}") from None
    return done.returncode, result


def findings(result: dict[str, Any], file: Path) -> list[tuple[str, str]]:
    return [(e["severity"], e["rule"]) for e in result["files"][str(file)]["errors"]]


def test_jenkinsfile_passes_npm_groovy_lint() -> None:
    code, result = groovy_lint(JENKINS / "Jenkinsfile")
    found = findings(result, JENKINS / "Jenkinsfile")
    assert code == 0, found
    assert not [f for f in found if f[0] in ("error", "warning")], found
    assert result["summary"]["totalFilesLinted"] == 1


def test_npm_groovy_lint_fails_a_broken_jenkinsfile(tmp_path: Path) -> None:
    """The lint above can fail: a syntax error (a brace missing) is an error and
    an empty if block a warning, each in a copy of the Jenkinsfile."""
    text = (JENKINS / "Jenkinsfile").read_text()
    unbalanced = tmp_path / "Unbalanced.Jenkinsfile"
    unbalanced.write_text(text[:text.rindex("}")])
    anchor = "          def count = readJSON"
    assert anchor in text
    empty_if = tmp_path / "EmptyIf.Jenkinsfile"
    empty_if.write_text(text.replace(anchor, "          if (params.PLAN) { }\n" + anchor))
    code, result = groovy_lint(unbalanced, empty_if)
    assert code == 1
    assert ("error", "NglParseError") in findings(result, unbalanced)
    assert ("warning", "EmptyIfStatement") in findings(result, empty_if)


# --- GitLab: gitlab-ci-local -------------------------------------------------


def snapshot(root: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) as a git repository
    of one commit: what a pipeline of this checkout would get."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "snapshot")
    # a GitLab-like remote, so gitlab-ci-local has a project path to name
    git(root, "remote", "add", "origin", "https://gitlab.example.com/lab/hvlab.git")
    git(root, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(root, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    return root


def small_plan(tmp: Path) -> Path:
    """Two cells of the fake kernel tree (the unpatched tree and a harmless
    series), booted in QEMU (FAKE_BOOT, TCG) and judged by the value suite."""
    env = Env(tmp, tmp / "configs", tmp / "kernels", tmp / "reports")
    env.configs.mkdir(parents=True)
    repo = fake_kernel_repo(tmp / "upstream")
    format_series(repo, env.configs / "patches" / "s",
                  [("drivers/hv/connection.c", "negotiate the protocol",
                    "negotiate the protocol version")])
    setup_env(env, repo)
    env.write("plans/p.yaml", "kernels: [k]\nseries: [s, none]\nhosts: [q]\nsuites: [value]\n")
    return env.configs


def decoy_run(project: Path) -> str:
    """An earlier run a runner's reports/ may still hold, and reports/latest on
    it: the merge must not take it in."""
    run_id = "20000101-000000-run-dec0"
    folder = project / "reports" / run_id
    folder.mkdir(parents=True)
    (folder / "junit.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites>'
        '<testsuite name="decoy+none/local.build" tests="1" failures="1" errors="0" '
        'skipped="0" time="0"><testcase classname="decoy_none.local.build" '
        'name="build: decoy" time="0"><failure message="an earlier run"/></testcase>'
        "</testsuite></testsuites>\n")
    (project / "reports" / "latest").symlink_to(run_id)
    return run_id


APT_GET_SHIM = """#!/bin/sh
# apt-get for the test: the jobs' apt-get calls are recorded, not run (git and
# every package ci/setup.sh checks are installed on this machine).
printf '%s\\tAPT_CONFIG=%s\\n' "$*" "${APT_CONFIG:-}" >> "$APT_GET_LOG"
"""


def report_lines(output: str) -> dict[str, str]:
    """gitlab-ci-local's closing reports, the parent's and the child's: job -> PASS,
    WARN or FAIL (a child's job is "[hvlab-run] -> name" when it passed)."""
    out = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        m = re.match(r"\s*(PASS|WARN|FAIL)\s+(?:\[[^]]*\]\s+)?(?:\[\S+\] -> )?"
                     r"(\S+(?:: \[[^]]*\])?)\s*$", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def cells_of(junit: Path) -> set[str]:
    return {s.cell for s in view.parse(junit.read_text())}


def test_gitlab_pipeline_runs_with_gitlab_ci_local(tmp_path: Path,
                                                    validate_junit: Callable[[Path], None]) -> None:
    """The parent pipeline and the child hvlab-matrix generates, every job's own
    script, in a throwaway repository of this checkout: only apt-get is a shim."""
    gcl = node_tool("gitlab-ci-local")
    project = snapshot(tmp_path / "project")
    # the jobs run in this machine's shell, as root: none may change the machine
    for name in ("hvlab.gitlab-ci.yml", "child.yml"):
        for job in yaml.safe_load((project / "ci" / "gitlab" / name).read_text()).values():
            if isinstance(job, dict):
                lines = job.get("before_script", []) + job.get("script", [])
                assert not [x for x in lines if "/etc/" in x], (name, lines)
    configs = small_plan(tmp_path / "fixture")
    decoy = decoy_run(project)
    # HVLAB_CONFIGS as a project variable (every job, the child's too); PLAN as a
    # pipeline variable (given when the pipeline starts: hvlab-matrix only)
    (project / ".gitlab-ci-local-variables.yml").write_text(f"HVLAB_CONFIGS={configs}\n")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "apt-get").write_text(APT_GET_SHIM)
    (shim / "apt-get").chmod(0o755)
    apt_log = tmp_path / "apt-get.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVLAB_")}
    env.update(PATH=f"{shim}:{env['PATH']}", APT_GET_LOG=str(apt_log))
    apt_conf_before = sorted(p.name for p in APT_CONF_D.iterdir())

    done = subprocess.run(
        [str(gcl), "--file", "ci/gitlab/hvlab.gitlab-ci.yml", "--force-shell-executor",
         "--concurrency", "1", "--variable", "PLAN=p", "--no-color", "--timestamps"],
        cwd=project, env=env, capture_output=True, text=True, timeout=1200, check=False)
    output = done.stdout + done.stderr
    (tmp_path / "gitlab-ci-local.log").write_text(output)
    for heavy in (".venv", "ci/node/node_modules", "kernels"):  # what the jobs installed
        shutil.rmtree(project / heavy, ignore_errors=True)
    assert done.returncode == 0, output[-6000:]
    # the downstream pipeline's jobs do not reach gitlab-ci-local's exit code:
    # its report does, the parent's and the child's
    results = report_lines(output)
    assert results == {name: "PASS" for name in (
        "hvlab-matrix", "hvlab-run", "hvlab-shard: [p,1/2]", "hvlab-shard: [p,2/2]",
        "hvlab-report")}, (results, output[-6000:])
    assert "[hvlab-run] -> hvlab-report" in output  # the child pipeline ran them

    state = project / ".gitlab-ci-local"
    # the child pipeline is child.yml plus the plan's shards
    child = yaml.safe_load((state / "artifacts" / "hvlab-matrix" / "shards.yml").read_text())
    assert child["hvlab-shard"]["parallel"]["matrix"] == [{"PLAN": "p", "SHARD": ["1/2", "2/2"]}]

    # apt-get: each job's update and install; the shards' with their own APT_CONFIG,
    # pointing apt's downloads at the cached .apt/ (never the machine's /etc/apt)
    calls = apt_log.read_text().splitlines()
    assert [c.split("\t")[0] for c in calls] == ["update -q", "install -y -q git"] * 4
    shard_conf = project / ".apt.conf"
    assert [c for c in calls if c.endswith(f"APT_CONFIG={shard_conf}")] == calls[2:6]
    assert shard_conf.read_text() == f'Dir::Cache::archives "{project}/.apt/";\n'
    assert sorted(p.name for p in APT_CONF_D.iterdir()) == apt_conf_before

    # each shard kept its own run folder, resolved, under shards/<job id>/
    shard_runs = sorted(project.glob("shards/*/*/"))
    assert len(shard_runs) == 2 and len({r.parent for r in shard_runs}) == 2, shard_runs
    assert not any(r.is_symlink() for r in shard_runs)
    assert all(json.loads((r / "metadata.json").read_text())["task"] == "run"
               for r in shard_runs)
    shard_cells = [cells_of(r / "junit.xml") for r in shard_runs]
    assert sorted(map(sorted, shard_cells)) == [["k+none"], ["k+s"]]

    # the report job merged exactly those two and published the merge
    published = state / "artifacts" / "hvlab-report" / "published"
    junit = published / "junit.xml"
    validate_junit(junit)
    assert cells_of(junit) == {"k+s", "k+none"}
    assert "decoy" not in junit.read_text()
    meta = json.loads((published / "metadata.json").read_text())
    assert meta["task"] == "report.merge", meta
    assert sorted(meta["argv"][1:]) == sorted(
        ["--run"] * 2 + [f"shards/{r.parent.name}/{r.name}/" for r in shard_runs]), meta["argv"]
    assert {p.name for p in (published / "logs").iterdir() if p.name.startswith("2")} == \
        {r.name for r in shard_runs}
    assert decoy not in (published / "metadata.json").read_text()
    suites = {(s.cell, s.name.split("/", 1)[1]): s.status for s in view.parse(junit.read_text())}
    for cell in ("k+s", "k+none"):
        for stage in ("local.fetch", "local.build", "q.boot", "q.value"):
            assert suites.get((cell, stage)) == "pass", (cell, stage, suites)
