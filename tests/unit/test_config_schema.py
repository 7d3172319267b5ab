"""The loader's shapes (the schema of configs/) agree with the loader: it reads
no key they do not declare, every declared key is read, and every defect the
shapes describe is one the loader reports; the shipped JSON Schema files are
what the shapes generate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hvlab.config import loader, schema, schema_json
from hvlab.config.reader import Issues, MapReader
from hvlab.config.shape import Field, SchemaDrift, Shape
from hvlab.config.yamlnode import parse
from hvlab.workspace import Workspace
from tests.conftest import REPO
from tests.schema_cases import KITCHEN_SINK, defects, files, paths_in, read

pytestmark = pytest.mark.unit


def load(root: Path) -> list[str]:
    _, issues = loader.load(Workspace(root, root, root / "kernels-dir", root / "reports"))
    return [str(i) for i in issues]


def test_the_kitchen_sink_loads_cleanly_and_uses_every_declared_key() -> None:
    assert load(KITCHEN_SINK) == []
    for kind, shape in schema.FILES.items():
        used: set[str] = set()
        for path in files(KITCHEN_SINK, kind):
            used |= paths_in(read(path), shape)
        declared = set(shape.every_field())
        assert declared - used == set(), f"{kind}: declared but not in {KITCHEN_SINK}"


def test_the_shipped_configs_use_declared_keys_only() -> None:
    assert load(REPO / "configs") == []
    for kind, shape in schema.FILES.items():
        for path in files(REPO / "configs", kind):
            paths_in(read(path), shape)  # asserts every key is declared


def test_the_loader_reports_every_defect_the_shapes_describe(tmp_path: Path) -> None:
    cases = defects()
    assert len(cases) > 200
    missed = []
    for case in cases:
        root = tmp_path / "configs"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(KITCHEN_SINK, root)
        case.write(root)
        found = [i for i in load(root) if case.file in i]
        # the issue names the key (a missing selector of alternatives, such as
        # source.git, is reported on the mapping that lacks it)
        parent = case.key.rpartition(".")[0]
        absent = case.what in ("missing", "null")
        if not any(f" {case.key}:" in i or (absent and f" {parent}" in i)
                   or (absent and not parent) for i in found):
            missed.append(f"{case.label}: {found}")
    assert missed == []


def test_reading_an_undeclared_key_or_another_type_is_drift() -> None:
    node = parse("port: 22\nname: x\n", "f.yaml")[0]
    assert node is not None
    shape = Shape({"port": Field("integer", "", minimum=1, maximum=65535),
                   "name": Field("string", "", required=True)})

    def reader() -> MapReader:
        r = MapReader(node, "", Issues(), shape)  # type: ignore[arg-type]
        return r

    assert reader().integer("port", 22, 1, 65535) == 22
    with pytest.raises(SchemaDrift, match="does not declare"):
        reader().string("user")
    with pytest.raises(SchemaDrift, match="1..100"):
        reader().integer("port", 22, 1, 100)
    with pytest.raises(SchemaDrift, match="as string; its shape says integer"):
        reader().string("port")
    with pytest.raises(SchemaDrift, match="optional; its shape says required"):
        reader().string("name")


def test_the_json_schema_files_are_current() -> None:
    shipped = REPO / "docs" / "schema"
    for name, text in schema_json.documents().items():
        assert (shipped / name).read_text() == text, f"run inv config.schema: {name}"
        doc = json.loads(text)
        assert doc["$schema"].endswith("2020-12/schema")
    assert sorted(p.name for p in shipped.glob("*.json")) == sorted(schema_json.documents())
