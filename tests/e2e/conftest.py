"""The e2e tier works on the real Debian 6.1 tree, imported once per test session.

Its cold build (and the VM image) started in the background when the
session did (tests/prebuild.py); ``real_env`` waits for the build and checks
it like any hvlab run."""

from __future__ import annotations

from pathlib import Path

import junitparser
import pytest

from tests.conftest import TARBALL, Env, case_status
from tests.prebuild import KERNEL, Prebuild


def _passed(junit_path: str) -> dict[str, str]:
    xml = junitparser.JUnitXml.fromfile(junit_path)
    return {c.name: case_status(c) for suite in xml for c in suite}


@pytest.fixture(scope="session")
def real_env(prebuild: Prebuild | None) -> Env:
    """The repository's own configs with a private kernels/ and reports/, the
    default kernel and series built."""
    if prebuild is None:
        pytest.fail(f"{TARBALL} is missing: run ci/setup.sh (apt-get install linux-source-6.1)")
    out = prebuild.wait("build")
    cases = _passed(str(prebuild.jobs["build"].junit))
    assert cases.get(f"build: {KERNEL}") == "pass", (cases, out[-3000:])
    assert cases.get(f"build: {KERNEL} baseline (without the series)") == "pass", cases
    return prebuild.env


@pytest.fixture(scope="session")
def vm_image_built(prebuild: Prebuild, real_env: Env) -> Env:
    """real_env with the installed VM's image built (tests marked vm_image)."""
    out = prebuild.wait("image")
    cases = _passed(str(prebuild.jobs["image"].junit))
    assert cases.get("vm image") == "pass", (cases, out[-3000:])
    return real_env


@pytest.fixture(scope="session")
def arches_run(prebuild: Prebuild, real_env: Env) -> Path:
    """The run folder of `inv run --plan arches` on the real tree (tests marked
    arches), run in the background once the default build had passed."""
    prebuild.wait("arches")
    return prebuild.jobs["arches"].junit.parent.resolve()
