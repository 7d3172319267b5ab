"""Shared fixtures: isolated workspaces, config writers, a task runner, git trees."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO.parent / "shared" / "schemas" / "junit-10.xsd"
if not SCHEMA.is_file():  # a checkout without shared/ beside it
    SCHEMA = REPO / "tests" / "data" / "junit-10.xsd"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def make_repo(root: Path, files: Mapping[str, str | bytes], message: str = "initial") -> str:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    write_tree(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
FAKE_KERNEL = REPO / "tests" / "data" / "fake-kernel"
# A stand-in for scripts/checkpatch.pl in the small fake trees (the kernel's real
# checkpatch.pl runs in the e2e tier); see tests/data/fake-kernel/README.
FAKE_CHECKPATCH = (FAKE_KERNEL / "scripts" / "checkpatch.pl").read_text()

FAKE_TREE = {
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\n",
    "scripts/checkpatch.pl": FAKE_CHECKPATCH,
    "drivers/hv/connection.c": "".join(f"/* connection line {i} */\n" for i in range(1, 41)),
    "drivers/hv/vmbus_drv.c": "".join(f"/* vmbus line {i} */\n" for i in range(1, 41)),
    "drivers/net/hyperv/netvsc.c": "".join(f"/* netvsc line {i} */\n" for i in range(1, 41)),
}


NODE_BIN = REPO / "ci" / "node" / "node_modules" / ".bin"


def node_tool(name: str) -> Path:
    """A Node tool of ci/node (ci/setup.sh installs them with npm ci)."""
    path = NODE_BIN / name
    assert path.is_file(), f"{name} is missing: run ci/setup.sh (it installs ci/node with npm ci)"
    return path


def fake_kernel_repo(root: Path, message: str = "start") -> Path:
    """tests/data/fake-kernel as a git repository at ``root``, one commit on main."""
    shutil.copytree(FAKE_KERNEL, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return root


def format_series(upstream: Path, out: Path, edits: list[tuple[str, str, str]]) -> Path:
    """One commit per (file, old, new) edit on a side branch, ``git format-patch``-ed
    into ``out``; the upstream's main branch is left as it was."""
    git(upstream, "checkout", "-q", "-b", f"series-{out.name}")
    for i, (file, old, new) in enumerate(edits, start=1):
        path = upstream / file
        text = path.read_text()
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1))
        git(upstream, "commit", "-q", "-a", "-s", "-m", f"hv: change {i} in {file}")
    out.mkdir(parents=True, exist_ok=True)
    git(upstream, "format-patch", "-q", "-o", str(out), f"-{len(edits)}")
    git(upstream, "checkout", "-q", "main")
    return out


def junit_suite(report: Path, name: str) -> dict[str, Any]:
    """The cases of testsuite ``name`` in a junit.xml, by case name."""
    import junitparser

    for ts in junitparser.JUnitXml.fromfile(str(report)):
        if ts.name == name:
            return {c.name: c for c in ts}
    raise AssertionError(f"no suite {name} in {report}")


def junit_suite_properties(report: Path, name: str) -> dict[str, str]:
    """The properties of testsuite ``name`` in a junit.xml."""
    import junitparser

    for ts in junitparser.JUnitXml.fromfile(str(report)):
        if ts.name == name:
            return {p.name: p.value for p in ts.properties()}
    raise AssertionError(f"no suite {name} in {report}")


def junit_suite_family(report: Path, name: str) -> dict[str, Any]:
    """The cases of testsuite ``name`` and of the testsuites its KTAP suites got
    (``name:<ktap suite>``), by case name."""
    import junitparser

    out: dict[str, Any] = {}
    for ts in junitparser.JUnitXml.fromfile(str(report)):
        if ts.name == name or str(ts.name).startswith(f"{name}:"):
            out.update({c.name: c for c in ts})
    if not out:
        raise AssertionError(f"no suite {name} in {report}")
    return out


def case_status(case: Any) -> str:
    """pass, failure, error or skipped."""
    return type(case.result[0]).__name__.lower() if case.result else "pass"


@dataclass
class Env:
    """An isolated hvlab workspace: own configs, kernels and reports."""

    root: Path
    configs: Path
    kernels: Path
    reports: Path

    @property
    def vars(self) -> dict[str, str]:
        return {"HVLAB_CONFIGS": str(self.configs), "HVLAB_KERNELS": str(self.kernels),
                "HVLAB_REPORTS": str(self.reports)}

    def write(self, rel: str, text: str) -> Path:
        path = self.configs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def inv(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.vars}
        env.pop("HVLAB_DEBUG", None)
        return subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout,
            check=False,
        )

    @property
    def latest(self) -> Path:
        return self.reports / "latest"

    def suite(self, name: str) -> dict[str, Any]:
        return junit_suite(self.latest / "junit.xml", name)

    def suite_family(self, name: str) -> dict[str, Any]:
        return junit_suite_family(self.latest / "junit.xml", name)

    def suite_properties(self, name: str) -> dict[str, str]:
        return junit_suite_properties(self.latest / "junit.xml", name)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path, tmp_path / "configs", tmp_path / "kernels", tmp_path / "reports")
    e.configs.mkdir()
    return e


@pytest.fixture
def validate_junit() -> Callable[[Path], None]:
    import xmlschema

    schema = xmlschema.XMLSchema(str(SCHEMA))

    def check(path: Path) -> None:
        schema.validate(str(path))

    return check


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast feedback first: unit, then integration, then e2e (collected in
    path order, e2e would run first); the e2e tier's cold work runs in the
    background meanwhile (tests/prebuild.py).  The tests that wait for the
    arches run, which starts only once the build has passed, come last, so the
    other e2e tests run while it does."""
    def tier(item: pytest.Item) -> tuple[int, bool]:
        return (next((i for i, t in enumerate(TIERS) if item.get_closest_marker(t)), 1),
                item.get_closest_marker("arches") is not None)
    items.sort(key=tier)


@pytest.fixture(scope="session", autouse=True)
def prebuild(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The e2e tier's workspace with its cold build (and the VM image when a
    selected test needs it) started in the background; None without e2e tests."""
    from tests.prebuild import Prebuild

    items = request.session.items
    if not any(item.get_closest_marker("e2e") for item in items) or not TARBALL.is_file():
        yield None  # without the tarball, real_env fails the e2e tests (not the others)
        return
    root = tmp_path_factory.mktemp("e2e")
    # A developer may point HVLAB_E2E_KERNELS at a warm kernels/ to iterate quickly;
    # CI does not set it, so CI always starts cold.
    kernels = Path(os.environ.get("HVLAB_E2E_KERNELS") or root / "kernels")
    env = Env(root, REPO / "configs", kernels, root / "reports")
    names = ["build"] + [job for job in ("image", "arches") if any(
        i.get_closest_marker("vm_image" if job == "image" else job) for i in items)]
    done = Prebuild.start(env, names)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"e2e: started in the background at nice 19: "
                            f"{', '.join(f'{n} (log {j.log})' for n, j in done.jobs.items())}"
                            + "".join(f"; {n} once it passed" for n in done.later))
    try:
        yield done
    finally:
        done.stop()
