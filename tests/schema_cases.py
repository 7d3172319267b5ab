"""The config files of tests/data/config-schema and bad files derived from
them, one defect each, from the shapes the loader reads with; shared by the
unit test (the loader) and the integration test (check-jsonschema)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hvlab.config import schema
from hvlab.config.shape import Field, Shape
from tests.conftest import REPO

KITCHEN_SINK = REPO / "tests" / "data" / "config-schema"


def files(root: Path, kind: str) -> list[Path]:
    """The files of one kind (a folder of configs/, or known-failures.yaml)."""
    if kind == "known-failures":
        single = root / "known-failures.yaml"
        return [single] if single.is_file() else []
    return sorted((root / kind).glob("*.yaml"))


class _Yaml12Bools(yaml.SafeLoader):
    """PyYAML's safe loader, but only true/false are booleans: the key ``on``
    stays a string, as hvlab's own reader and YAML 1.2 tools read it."""


_BOOL = "tag:yaml.org,2002:bool"
_Yaml12Bools.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Bools.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def read(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_Yaml12Bools)  # a SafeLoader
    assert isinstance(data, dict), path
    return data


def _full(shape: Shape, data: dict[str, Any]) -> tuple[Shape, str]:
    if shape.by is None:
        return shape, ""
    value = str(data.get(shape.by))
    return shape.case(value), f"({shape.by}={value}) "


def paths_in(data: dict[str, Any], shape: Shape, prefix: str = "") -> set[str]:
    """The declared key paths (as ``Shape.every_field`` names them) ``data`` uses."""
    full, tag = _full(shape, data)
    out: set[str] = set()
    for key, value in data.items():
        f, _ = full.lookup(key)
        assert f is not None, f"{prefix}{key} is not declared"
        path = (prefix if key in shape.fields else tag + prefix) + key
        out.add(path)
        if f.shape is not None and value is not None:
            inner = path + ("[]." if f.type == "objects" else ".")
            for item in (value if f.type == "objects" else [value]):
                out |= paths_in(item, f.shape, inner)
    return out


@dataclass(frozen=True)
class Defect:
    kind: str  # the folder under configs/
    file: str  # its file name
    key: str  # the loader's key path of the defect
    what: str
    data: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.file} {self.key}: {self.what}"

    def write(self, root: Path) -> Path:
        path = root / self.file if self.kind == "known-failures" else root / self.kind / self.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.data, sort_keys=False))
        return path


def _bad_values(f: Field) -> Iterator[tuple[str, Any]]:
    if f.type == "integer":
        if f.minimum is not None:
            yield "below its minimum", f.minimum - 1
        if f.maximum is not None:
            yield "above its maximum", f.maximum + 1
        yield "not a number", "ten"
    elif f.type == "enum":
        yield "not one of its choices", "nonesuch"
    elif f.type == "boolean":
        yield "not a boolean", "maybe"
    elif f.type in ("string", "strings"):
        yield "a mapping", {"a": "b"}
        if f.type == "string":
            yield "a list", ["a"]
            if f.required:
                yield "empty", ""
    else:
        yield "a scalar", "text"
    if f.required:
        yield "null", None


def _defects_in(node: dict[str, Any], shape: Shape, loc: str,
                ) -> Iterator[tuple[str, str, Any]]:
    """(key path, what, edit) for each defect of this mapping; an edit is a
    function of the mapping (a copy) that plants the defect."""
    full, _ = _full(shape, node)
    yield f"{loc}nonesuch", "an unknown key", lambda m: m.__setitem__("nonesuch", 1)
    for key, value in node.items():
        f, _ = full.lookup(key)
        assert f is not None
        for what, bad in _bad_values(f):
            yield f"{loc}{key}", what, (lambda m, k=key, b=bad: m.__setitem__(k, b))
        if f.required:
            yield f"{loc}{key}", "missing", (lambda m, k=key: m.pop(k))
        if f.shape is not None and isinstance(value, dict | list):
            items = value if f.type == "objects" else [value]
            for i, item in enumerate(items):
                where = f"{loc}{key}[{i}]." if f.type == "objects" else f"{loc}{key}."
                for path, what, edit in _defects_in(item, f.shape, where):
                    yield path, what, _inside(key, i if f.type == "objects" else None, edit)


def _inside(key: str, index: int | None, edit: Any) -> Any:
    def apply(m: dict[str, Any]) -> None:
        edit(m[key] if index is None else m[key][index])
    return apply


def defects(root: Path = KITCHEN_SINK) -> list[Defect]:
    """Every defect of every kitchen-sink file, one bad copy each."""
    out = []
    for kind, shape in schema.FILES.items():
        for path in files(root, kind):
            good = read(path)
            for key, what, edit in _defects_in(good, shape, ""):
                bad = copy.deepcopy(good)
                edit(bad)
                out.append(Defect(kind, path.name, key, what, bad))
    return out
