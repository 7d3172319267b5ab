"""YAML -> a small node tree that keeps ``file:line:col`` for every value.

Values are *not* typed by YAML 1.1's resolver: a scalar keeps its source
text, so ``ref: 5.10`` stays "5.10" and ``user: no`` stays "no".  Typing is
the schema reader's job (``reader.py``).  Duplicate keys are refused, and so
are aliases (``*name``): a few nested ones expand to billions of nodes, and
configs/ is a repository that takes pull requests.  Files are bounded in size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Mark:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Scalar:
    text: str
    mark: Mark
    quoted: bool
    is_null: bool  # an empty or ~/null plain scalar


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]
    mark: Mark


@dataclass(frozen=True)
class Map:
    items: tuple[tuple[Scalar, Node], ...]
    mark: Mark

    def get(self, key: str) -> Node | None:
        for k, v in self.items:
            if k.text == key:
                return v
        return None


Node = Scalar | Seq | Map


@dataclass(frozen=True)
class YamlIssue:
    mark: Mark
    message: str

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}"


_NULL_TAG = "tag:yaml.org,2002:null"
MAX_BYTES = 1 << 20  # no hvlab config comes near 1 MiB


MAX_DEPTH = 64


def _alias(text: str, file: str) -> YamlIssue | None:
    """The first alias of the document, or nesting deeper than MAX_DEPTH (the
    composer recurses: a few KB of '[' exhaust Python's stack), found from the
    event stream, which neither expands nor recurses."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            return YamlIssue(_mark(file, event.start_mark),
                             f"YAML alias '*{event.anchor}' refused: hvlab configs "
                             "use no anchors or aliases (write the value out)")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return YamlIssue(_mark(file, event.start_mark),
                                 f"nesting deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _mark(file: str, m: Any) -> Mark:  # a yaml.Mark of the pure or the C parser
    if m is None:
        return Mark(file, 0, 0)
    return Mark(file, m.line + 1, m.column + 1)


def _convert(file: str, node: yaml.Node, issues: list[YamlIssue], depth: int = 0) -> Node:
    mark = _mark(file, node.start_mark)
    if depth > MAX_DEPTH:
        issues.append(YamlIssue(mark, f"nesting deeper than {MAX_DEPTH} levels"))
        return Scalar("", mark, False, True)
    if isinstance(node, yaml.ScalarNode):
        quoted = node.style in ("'", '"')
        is_null = not quoted and node.tag == _NULL_TAG
        return Scalar(str(node.value), mark, quoted or node.style in ("|", ">"), is_null)
    if isinstance(node, yaml.SequenceNode):
        return Seq(tuple(_convert(file, n, issues, depth + 1) for n in node.value), mark)
    if isinstance(node, yaml.MappingNode):
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, Mark] = {}
        for knode, vnode in node.value:
            key = _convert(file, knode, issues, depth + 1)
            if not isinstance(key, Scalar):
                issues.append(YamlIssue(key.mark, "mapping keys must be plain strings"))
                continue
            if key.text in seen:
                issues.append(
                    YamlIssue(key.mark, f"duplicate key '{key.text}' (first at line "
                              f"{seen[key.text].line})")
                )
                continue
            seen[key.text] = key.mark
            items.append((key, _convert(file, vnode, issues, depth + 1)))
        return Map(tuple(items), mark)
    raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover


def parse(text: str, file: str) -> tuple[Node | None, list[YamlIssue]]:
    """Parse one YAML document.  Returns (root or None, issues)."""
    issues: list[YamlIssue] = []
    try:
        alias = _alias(text, file)
        if alias:
            return None, [alias]
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = _mark(file, exc.problem_mark)
        issues.append(YamlIssue(mark, f"YAML syntax: {exc.problem or exc.context}"))
        return None, issues
    except yaml.YAMLError as exc:
        issues.append(YamlIssue(Mark(file, 1, 1), f"YAML: {exc}"))
        return None, issues
    if root is None:
        return None, issues
    return _convert(file, root, issues), issues


def load(path: Path, display: str | None = None) -> tuple[Node | None, list[YamlIssue]]:
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return None, [YamlIssue(Mark(name, 1, 1), f"{size} bytes: larger than any hvlab "
                                    f"config should be ({MAX_BYTES} bytes at most)")]
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [YamlIssue(Mark(name, 1, 1), f"not UTF-8 text ({exc.reason})")]
    return parse(text, name)
