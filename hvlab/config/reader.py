"""A typed reader over ``yamlnode`` trees that collects every error.

Each error is ``path:line:col: key.path: message``.  A ``MapReader`` knows
which keys were read; ``done()`` reports the rest as unknown keys.  Given
the ``Shape`` of its mapping (``hvlab.config.schema``), it checks each key it
reads against that declaration, so the declaration (and the JSON Schema made
from it) cannot drift from the reading code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hvlab.config import shape as shapes
from hvlab.config.shape import FieldType, Shape
from hvlab.config.yamlnode import Map, Mark, Node, Scalar, Seq

T = TypeVar("T")

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


@dataclass(frozen=True)
class ConfigIssue:
    mark: Mark
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.key}: " if self.key else ""
        return f"{self.mark}: {where}{self.message}"


@dataclass
class Issues:
    items: list[ConfigIssue] = field(default_factory=list)

    def add(self, mark: Mark, key: str, message: str) -> None:
        self.items.append(ConfigIssue(mark, key, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def _kind(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    return "null" if node.is_null else f"'{node.text}'"


class MapReader:
    """Reads the keys of one mapping; ``done()`` flags keys nobody read.

    With a ``shape``, every key read must be declared there with the type and
    bounds it is read with (``shape.SchemaDrift`` otherwise), so the shape
    is the loader's own schema."""

    def __init__(self, node: Map, path: str, issues: Issues,
                 shape: Shape | None = None) -> None:
        self.node = node
        self.path = path
        self.issues = issues
        self.shape = shape
        self._read: set[str] = set()

    def select(self, value: str) -> None:
        """The keys of case ``value`` of the shape (a host's ``kind``) apply."""
        if self.shape is not None:
            self.shape = self.shape.case(value)

    def _declared(self, key: str, type_: FieldType | None, required: bool = False,
                  minimum: int | None = None, maximum: int | None = None,
                  choices: Sequence[str] | None = None) -> Shape | None:
        """Check ``key`` against the shape; the shape of its value (object keys)."""
        if self.shape is None:
            return None
        f = shapes.check(self.shape, key, self.path, type_, required, minimum, maximum,
                         tuple(choices) if choices is not None else None)
        return f.shape

    @property
    def mark(self) -> Mark:
        return self.node.mark

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        node = self.node.get(key)
        return node is not None and not (isinstance(node, Scalar) and node.is_null)

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.node.items]

    def raw(self, key: str, required: bool = False) -> Node | None:
        self._declared(key, None)
        return self._get(key, required)

    def _get(self, key: str, required: bool) -> Node | None:
        self._read.add(key)
        node = self.node.get(key)
        if node is None or (isinstance(node, Scalar) and node.is_null):
            if required:
                self.issues.add(self.node.mark, self._key(key), "required key is missing")
            return None
        return node

    def key_mark(self, key: str) -> Mark:
        for k, _ in self.node.items:
            if k.text == key:
                return k.mark
        return self.node.mark

    def _scalar(self, key: str, required: bool) -> Scalar | None:
        node = self._get(key, required)
        if node is None:
            return None
        if not isinstance(node, Scalar):
            self.issues.add(node.mark, self._key(key), f"expected a value, got {_kind(node)}")
            return None
        return node

    def string(self, key: str, required: bool = False, default: str | None = None) -> str | None:
        self._declared(key, "string", required)
        node = self._scalar(key, required)
        if node is None:
            return default
        if node.text == "" and required:
            self.issues.add(node.mark, self._key(key), "must not be empty")
        return node.text

    def req_str(self, key: str) -> str:
        return self.string(key, required=True) or ""

    def integer(
        self, key: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        self._declared(key, "integer", False, minimum, maximum)
        node = self._scalar(key, False)
        if node is None:
            return default
        if node.quoted or not _INT.fullmatch(node.text):
            self.issues.add(node.mark, self._key(key), f"expected an integer, got '{node.text}'")
            return default
        value = int(node.text, 10)  # '0755' is 755: no YAML 1.1 octal surprise
        if minimum is not None and value < minimum:
            self.issues.add(node.mark, self._key(key), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.issues.add(node.mark, self._key(key), f"must be at most {maximum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        self._declared(key, "boolean")
        node = self._scalar(key, False)
        if node is None:
            return default
        low = node.text.lower()
        if not node.quoted and low in _TRUE:
            return True
        if not node.quoted and low in _FALSE:
            return False
        self.issues.add(node.mark, self._key(key), f"expected true or false, got '{node.text}'")
        return default

    def enum(self, key: str, choices: Sequence[str], default: str | None = None,
             required: bool = False) -> str | None:
        self._declared(key, "enum", required, choices=choices)
        node = self._scalar(key, required)
        if node is None:
            return default
        if node.text not in choices:
            self.issues.add(node.mark, self._key(key),
                            f"'{node.text}' is not one of: {', '.join(choices)}")
            return default
        return node.text

    def str_list(self, key: str, required: bool = False) -> list[tuple[str, Mark]]:
        """A list of strings (a single string is accepted as a list of one)."""
        self._declared(key, "strings", required)
        node = self._get(key, required)
        if node is None:
            return []
        if isinstance(node, Scalar):
            return [(node.text, node.mark)]
        if isinstance(node, Map):
            self.issues.add(node.mark, self._key(key), "expected a list of strings, got a mapping")
            return []
        out = []
        for i, item in enumerate(node.items):
            if not isinstance(item, Scalar) or item.is_null:
                self.issues.add(item.mark, f"{self._key(key)}[{i}]",
                                f"expected a string, got {_kind(item)}")
                continue
            out.append((item.text, item.mark))
        return out

    def str_map(self, key: str) -> dict[str, str]:
        self._declared(key, "mapping")
        node = self._get(key, False)
        if node is None:
            return {}
        if not isinstance(node, Map):
            self.issues.add(node.mark, self._key(key), f"expected a mapping, got {_kind(node)}")
            return {}
        out = {}
        for k, v in node.items:
            if not isinstance(v, Scalar):
                self.issues.add(v.mark, f"{self._key(key)}.{k.text}",
                                f"expected a value, got {_kind(v)}")
                continue
            out[k.text] = v.text
        return out

    def map(self, key: str, required: bool = False) -> MapReader | None:
        sub = self._declared(key, "object", required)
        node = self._get(key, required)
        if node is None:
            return None
        if not isinstance(node, Map):
            self.issues.add(node.mark, self._key(key), f"expected a mapping, got {_kind(node)}")
            return None
        return MapReader(node, self._key(key), self.issues, sub)

    def maps(self, key: str, required: bool = False) -> list[MapReader]:
        sub = self._declared(key, "objects", required)
        node = self._get(key, required)
        if node is None:
            return []
        if not isinstance(node, Seq):
            self.issues.add(node.mark, self._key(key), f"expected a list, got {_kind(node)}")
            return []
        out = []
        for i, item in enumerate(node.items):
            if not isinstance(item, Map):
                self.issues.add(item.mark, f"{self._key(key)}[{i}]",
                                f"expected a mapping, got {_kind(item)}")
                continue
            out.append(MapReader(item, f"{self._key(key)}[{i}]", self.issues, sub))
        return out

    def error(self, key: str, message: str, mark: Mark | None = None) -> None:
        self.issues.add(mark or self.key_mark(key), self._key(key), message)

    def skip_rest(self) -> None:
        """Every key counts as read (a mapping too broken to check key by key)."""
        self._read.update(k.text for k, _ in self.node.items)

    def done(self) -> None:
        for k, _ in self.node.items:
            if k.text not in self._read:
                self.issues.add(k.mark, self._key(k.text), "unknown key")

    def nested(self, key: str, fn: Callable[[MapReader], T], required: bool = False) -> T | None:
        sub = self.map(key, required)
        if sub is None:
            return None
        result = fn(sub)
        sub.done()
        return result


def root_map(node: Node | None, file: str, issues: Issues,
             shape: Shape | None = None) -> MapReader | None:
    if node is None:
        issues.add(Mark(file, 1, 1), "", "file is empty")
        return None
    if not isinstance(node, Map):
        issues.add(node.mark, "", f"the top level must be a mapping, got {_kind(node)}")
        return None
    return MapReader(node, "", issues, shape)
