"""The e2e tier works on the real Debian 6.1 tree, imported once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, Env

TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")


@pytest.fixture(scope="session")
def real_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The repository's own configs with a private kernels/ and reports/."""
    if not TARBALL.is_file():
        pytest.fail(f"{TARBALL} is missing: run ci/setup.sh (apt-get install linux-source-6.1)")
    root = tmp_path_factory.mktemp("e2e")
    # A developer may point HVLAB_E2E_KERNELS at a warm kernels/ to iterate quickly;
    # CI does not set it, so CI always starts cold.
    kernels = Path(os.environ.get("HVLAB_E2E_KERNELS") or root / "kernels")
    return Env(root, REPO / "configs", kernels, root / "reports")
