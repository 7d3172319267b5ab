"""check-jsonschema with the shipped JSON Schema files accepts what the loader
accepts and rejects every defect the loader rejects (tests/schema_cases.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvlab.config import schema
from tests.conftest import REPO
from tests.schema_cases import KITCHEN_SINK, Defect, defects, files, read

pytestmark = pytest.mark.integration

SCHEMAS = REPO / "docs" / "schema"
TOOL = Path(sys.executable).parent / "check-jsonschema"


def check(kind: str, paths: list[Path]) -> dict[str, list[str]]:
    """check-jsonschema on ``paths``: file -> its error messages."""
    assert TOOL.is_file(), "check-jsonschema is missing: run ci/setup.sh (a test extra)"
    done = subprocess.run(
        [str(TOOL), "-o", "json", "--schemafile", str(SCHEMAS / f"{kind}.schema.json"),
         *map(str, paths)], capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert report.get("parse_errors", []) == [], report["parse_errors"]
    found: dict[str, list[str]] = {}
    for e in report.get("errors", []):
        found.setdefault(e["filename"], []).append(f"{e['path']}: {e['message']}")
    assert (done.returncode == 0) == (not found), done.stderr
    return found


def test_what_the_loader_accepts_validates() -> None:
    for root in (REPO / "configs", KITCHEN_SINK):
        for kind in schema.FILES:
            paths = files(root, kind)
            if paths:
                assert check(kind, paths) == {}, (root, kind)


def test_yaml_1_1_booleans_and_single_strings_validate(tmp_path: Path) -> None:
    # the loader reads yes/no/on/off as booleans and a lone string as a list of one
    path = tmp_path / "vm.yaml"
    path.write_text("kind: hyperv\nvm: guest\nhyperv_host: {address: hv}\n"
                    "guest: {via_host: yes}\nsecure_boot: off\nserial_log:\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("kernels: linux-6.1\nsuites: boot-health\n")
    assert check("hosts", [path]) == {}
    assert check("plans", [plan]) == {}


def test_every_defect_the_loader_rejects_is_rejected_there(tmp_path: Path) -> None:
    cases = defects()
    by_kind: dict[str, list[Path]] = {}
    made: dict[str, Defect] = {}
    for i, case in enumerate(cases):
        path = case.write(tmp_path / f"case{i:03d}")
        by_kind.setdefault(case.kind, []).append(path)
        made[str(path)] = case
    # the same files written without a defect pass: a rejection is the defect's
    for kind in schema.FILES:
        clean = [Defect(kind, p.name, "", "", read(p)).write(tmp_path / "clean")
                 for p in files(KITCHEN_SINK, kind)]
        assert check(kind, clean) == {}
    wrong = []
    for kind, paths in by_kind.items():
        found = check(kind, paths)
        for p in paths:
            case = made[str(p)]
            # the error is at the defect's key or at a mapping that holds it
            where = [e.partition(": ")[0] for e in found.get(str(p), [])]
            target = "$." + case.key
            if not any(target == w or target.startswith(w + ".") or target.startswith(w + "[")
                       for w in where):
                wrong.append(f"{case.label}: {found.get(str(p))}")
    assert wrong == []


def test_config_schema_writes_the_files_and_tells_when_they_are_stale(tmp_path: Path) -> None:
    inv = [str(Path(sys.executable).parent / "inv"), "-r", str(REPO)]
    done = subprocess.run([*inv, "config.schema", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in SCHEMAS.glob("*.json"))
    assert subprocess.run([*inv, "config.schema", "--check", "--out", str(tmp_path)],
                          timeout=120).returncode == 0
    (tmp_path / "hosts.schema.json").write_text("{}\n")
    stale = subprocess.run([*inv, "config.schema", "--check", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1
    assert "hosts.schema.json" in stale.stderr and "inv config.schema" in stale.stderr
