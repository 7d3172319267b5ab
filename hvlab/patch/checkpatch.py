"""checkpatch.pl output parsing (pure) and invocation (the tree's own script)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlab.errors import InfraError
from hvlab.proc import run

_TOTAL = re.compile(r"^total: (\d+) errors?, (\d+) warnings?(?:, (\d+) checks?)?", re.M)
_FINDING = re.compile(r"^(ERROR|WARNING|CHECK):(?:([A-Z_]+):)? ?(.*)$", re.M)


@dataclass(frozen=True)
class CheckpatchReport:
    errors: int
    warnings: int
    checks: int
    findings: tuple[str, ...]  # "ERROR: message" lines, in order
    parsed: bool  # False when the total line was missing (checkpatch crashed)


def parse(output: str) -> CheckpatchReport:
    findings = tuple(f"{m.group(1)}: {m.group(3).strip()}" for m in _FINDING.finditer(output))
    m = _TOTAL.search(output)
    if not m:
        errors = sum(1 for f in findings if f.startswith("ERROR"))
        return CheckpatchReport(errors, len(findings) - errors, 0, findings, False)
    return CheckpatchReport(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), findings,
                            True)


def check(tree: Path, patch_file: Path, plain_diff: bool, log: Path,
          profile_args: Sequence[str] = ("--max-line-length=100",)
          ) -> tuple[CheckpatchReport, str]:
    script = tree / "scripts" / "checkpatch.pl"
    for arg in profile_args:
        if arg.startswith("--codespellfile=") and not Path(arg.split("=", 1)[1]).is_file():
            raise InfraError(f"checkpatch --codespell: {arg.split('=', 1)[1]} is missing "
                             "(Debian package: codespell; run ci/setup.sh)")
    argv = ["perl", str(script), "--no-color", "--show-types", *profile_args]
    if plain_diff:
        argv += ["--no-signoff", "--ignore", "COMMIT_MESSAGE,FILE_PATH_CHANGES"]
    argv.append(str(patch_file))
    done = run(argv, cwd=tree, log=log, timeout=300)
    return parse(done.output), done.output
