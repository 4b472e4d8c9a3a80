"""``BlockTypes``: a block's declared types for its parameters and its packet input.

A block may declare its parameters as a dataclass or a pydantic model, by a class
attribute ``Parameters = MyParams`` or by annotating ``on_update``'s argument, and its
packet input by ``Input = MyInput``. Then:

- the init parameters (``AIOS_BLOCK_INIT_PARAMETERS``) are validated at start-up, before
  the block's ``__init__`` (a ``ConfigurationError`` naming the field);
- ``SetParameters`` (and ``/setParameters``, the Redis updates) validates the current
  parameters with the update applied before ``on_update`` (INVALID_ARGUMENT naming the
  field path), and ``on_update`` receives the typed object;
- each packet's ``data`` (each member's, with a muxer) is validated before
  ``on_preprocess`` (INVALID_ARGUMENT naming the field path);
- GetInfo reports the JSON Schema of both (``parameters_schema``, ``input_schema``).

pydantic's ``TypeAdapter`` does the validating and the schemas (pydantic is already
a dependency, through the settings): one code path for dataclasses, models and
``TypedDict``.

>>> from dataclasses import dataclass
>>> @dataclass
... class P:
...     threshold: float = 0.5
>>> class B:
...     Parameters = P
>>> BlockTypes.of(B).parameters.validate({"threshold": "x"}, "parameters")
Traceback (most recent call last):
...
ValueError: parameters: threshold: Input should be a valid number, unable to parse string as a number
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


class Typed:
    """One declared type: validate a JSON value into it, dump it back, its JSON Schema."""

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.adapter: TypeAdapter[Any] = TypeAdapter(tp)

    def validate(self, value: Any, what: str) -> Any:
        """``value`` as the type; ``ValueError`` naming the first bad field's path."""
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError(f"{what}: {describe(exc)}") from None

    def dump(self, obj: Any) -> Any:
        """``obj`` (the type, or already plain) as a JSON value."""
        return self.adapter.dump_python(obj, mode="json")

    def schema(self) -> dict[str, Any]:
        """The type's JSON Schema."""
        return dict(self.adapter.json_schema())


def describe(exc: ValidationError) -> str:
    """``field.path: message`` of the first error, and how many more there are."""
    errors = exc.errors()
    first = errors[0]
    path = ".".join(str(p) for p in first["loc"]) or "(the value)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {first['msg']}{more}"


def _declared(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or issubclass(tp, BaseModel))


class BlockTypes:
    """The parameters and input types a block class declares (None when it declares none)."""

    def __init__(self, parameters: Any = None, input_type: Any = None) -> None:
        self.parameters = Typed(parameters) if parameters is not None else None
        self.input = Typed(input_type) if input_type is not None else None

    @classmethod
    def of(cls, block_class: type[Any]) -> BlockTypes:
        """Read ``Parameters``, ``on_update``'s annotation and ``Input`` from ``block_class``."""
        params = getattr(block_class, "Parameters", None)
        if params is None:
            on_update = getattr(block_class, "on_update", None)
            if on_update is not None:
                try:
                    hints = typing.get_type_hints(on_update)
                except Exception:  # an annotation that does not resolve is not a declaration
                    hints = {}
                hinted = [tp for name, tp in hints.items() if name != "return"]
                if hinted and _declared(hinted[0]):
                    params = hinted[0]
        return cls(params, getattr(block_class, "Input", None))

    def info(self) -> dict[str, Any]:
        """The JSON Schemas GetInfo reports."""
        out: dict[str, Any] = {}
        if self.parameters is not None:
            out["parameters_schema"] = self.parameters.schema()
        if self.input is not None:
            out["input_schema"] = self.input.schema()
        return out


__all__ = ["BlockTypes", "Typed", "describe"]
