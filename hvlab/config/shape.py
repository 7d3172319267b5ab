"""The declared shape of the YAML files under ``configs/``: which keys each
mapping takes, of which type and range, and which are required.

The loader reads through ``MapReader``, which checks every key it reads
against the shape it was given (``SchemaDrift`` when the reading code and the
declaration disagree), so this declaration is the loader's own schema;
``hvlab.config.jsonschema`` turns it into JSON Schema for editors and
``check-jsonschema``.  What a shape cannot say (a name equal to the file's,
references between files, paths that must exist) stays with the loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

FieldType = Literal["string", "integer", "boolean", "enum", "strings", "mapping",
                    "object", "objects"]


class SchemaDrift(AssertionError):
    """The loader read a key its shape does not declare, or as another type:
    a bug in hvlab, never a user error."""


@dataclass(frozen=True)
class Field:
    type: FieldType
    doc: str
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    shape: Shape | None = None  # object, objects


@dataclass(frozen=True)
class Shape:
    """A mapping's keys.  ``alternatives``: the mapping is exactly one of these
    (each adds its own keys); ``by``/``cases``: the value of key ``by`` picks
    the keys added (a host's ``kind``)."""

    fields: Mapping[str, Field]
    doc: str = ""
    alternatives: tuple[Shape, ...] = ()
    by: str | None = None
    cases: Mapping[str, Shape] = field(default_factory=dict)

    def case(self, value: str) -> Shape:
        """This shape with the keys ``by: value`` adds (itself for an unknown value)."""
        extra = self.cases.get(value)
        if extra is None:
            return self
        return Shape({**self.fields, **extra.fields}, self.doc, extra.alternatives)

    def lookup(self, key: str) -> tuple[Field | None, bool]:
        """The declaration of ``key`` here or in any alternative (a shape with
        cases is read after ``case()`` picked one); True when found in an
        alternative."""
        found = self.fields.get(key)
        if found is not None:
            return found, False
        for alt in self.alternatives:
            inner, _ = alt.lookup(key)
            if inner is not None:
                return inner, True
        return None, False

    def every_field(self, prefix: str = "") -> dict[str, Field]:
        """Every declared key by its path: ``a.b``, ``a[].b`` inside lists,
        ``(kind=ssh) vm`` for a case's keys."""
        out: dict[str, Field] = {}
        for key, f in self.fields.items():
            path = prefix + key
            out.setdefault(path, f)
            if f.shape is not None:
                inner = path + ("[]." if f.type == "objects" else ".")
                out.update(f.shape.every_field(inner))
        for alt in self.alternatives:
            for path, f in alt.every_field(prefix).items():
                out.setdefault(path, f)
        for value, case in self.cases.items():
            out.update(case.every_field(f"({self.by}={value}) {prefix}"))
        return out


def check(shape: Shape, key: str, where: str, type_: FieldType | None,
          required: bool = False, minimum: int | None = None, maximum: int | None = None,
          choices: tuple[str, ...] | None = None) -> Field:
    """``key`` is read as ``type_`` (None: as it is), required or not, with
    these bounds: ``shape`` must say so.  A key an alternative requires may
    be read as optional: the loader looks for it to tell which alternative
    the mapping is."""
    f, in_alternative = shape.lookup(key)
    name = f"{where}.{key}" if where else key
    if f is None:
        raise SchemaDrift(f"the loader reads '{name}', which its shape does not declare")
    if type_ is None:
        return f
    if f.type != type_:
        raise SchemaDrift(f"the loader reads '{name}' as {type_}; its shape says {f.type}")
    if f.required != required and not (in_alternative and f.required):
        raise SchemaDrift(f"the loader reads '{name}' as {'required' if required else 'optional'}"
                          f"; its shape says {'required' if f.required else 'optional'}")
    if type_ == "integer" and (f.minimum, f.maximum) != (minimum, maximum):
        raise SchemaDrift(f"the loader reads '{name}' in {minimum}..{maximum}; its shape "
                          f"says {f.minimum}..{f.maximum}")
    if choices is not None and tuple(choices) != f.choices:
        raise SchemaDrift(f"the loader reads '{name}' as one of {choices}; its shape says "
                          f"{f.choices}")
    return f
