"""Shared fixtures: isolated workspaces, config writers, a task runner, git trees."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

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


# A stand-in for scripts/checkpatch.pl in the small fake trees (the kernel's
# real checkpatch.pl runs in the e2e tier): flags trailing whitespace as an
# error and long lines as a warning, and prints checkpatch's total line.
FAKE_CHECKPATCH = r"""#!/usr/bin/perl
use strict; use warnings;
my ($err, $warn, $lines) = (0, 0, 0);
open(my $fh, '<', $ARGV[-1]) or die "cannot open $ARGV[-1]";
while (my $l = <$fh>) {
    next unless $l =~ /^\+/ && $l !~ /^\+\+\+/;
    $lines++;
    if ($l =~ /[ \t]+\n$/) { print "ERROR:TRAILING_WHITESPACE: trailing whitespace\n"; $err++; }
    if (length($l) > 102) { print "WARNING:LONG_LINE: line length exceeds 100 columns\n"; $warn++; }
}
print "total: $err errors, $warn warnings, $lines lines checked\n";
"""

FAKE_TREE = {
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\n",
    "scripts/checkpatch.pl": FAKE_CHECKPATCH,
    "drivers/hv/connection.c": "".join(f"/* connection line {i} */\n" for i in range(1, 41)),
    "drivers/hv/vmbus_drv.c": "".join(f"/* vmbus line {i} */\n" for i in range(1, 41)),
    "drivers/net/hyperv/netvsc.c": "".join(f"/* netvsc line {i} */\n" for i in range(1, 41)),
}


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
