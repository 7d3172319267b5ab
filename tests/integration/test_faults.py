"""Faults where they happen: a full disk under reports/ (a tmpfs the test
mounts and fills)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env

pytestmark = pytest.mark.integration

KERNEL = ("source:\n  git: https://example.invalid/linux.git\n  ref: v6.1\n"
          "config:\n  base: tinyconfig\n")


@pytest.fixture
def small_reports(env: Env) -> Iterator[Path]:
    env.reports.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "hvlab-test", str(env.reports)],
                   check=True)
    try:
        yield env.reports
    finally:
        subprocess.run(["umount", "-l", str(env.reports)], check=False)


def fill(folder: Path) -> None:
    with (folder / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass


def test_a_full_disk_under_reports_is_one_line_and_keeps_the_good_report(
        env: Env, small_reports: Path, validate_junit: Any) -> None:
    env.write("kernels/k.yaml", KERNEL)
    first = env.inv("config.check", timeout=60)
    assert first.returncode == 0, first.stderr
    good = env.latest.resolve()
    before = (good / "junit.xml").read_bytes()
    fill(small_reports)
    done = env.inv("config.check", timeout=60)
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if line.startswith("hvlab: error:")]
    assert len(errors) == 1 and "disk full (no space left on device)" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    # the good report stays as it was, the link too, and no temporary is left
    assert env.latest.resolve() == good and (good / "junit.xml").read_bytes() == before
    validate_junit(good / "junit.xml")
    for folder in small_reports.iterdir():
        if folder.is_dir() and not folder.is_symlink():
            assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], folder
            if (folder / "junit.xml").exists():
                validate_junit(folder / "junit.xml")
