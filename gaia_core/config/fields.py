"""Walk pydantic config models by dotted key: which keys a table allows, whether a key exists.

Error messages list the allowed keys, and ``fingerprint_from`` entries are checked
against the models, so that a typo is a config error instead of a value hashed as null.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

from pydantic import BaseModel, RootModel

_CONTAINERS = (dict, list, tuple, collections.abc.Mapping, collections.abc.Sequence)


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def unwrap_optional(tp: Any) -> Any:
    """``Model | None`` -> ``Model``; other types unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _root_type(model: type[BaseModel]) -> Any:
    return model.model_fields["root"].annotation if issubclass(model, RootModel) else model


def type_at(model: type[BaseModel], parts: list[str]) -> tuple[Any, int]:
    """The type reached by following ``parts`` from ``model``, and how many parts it followed.

    Following stops early at a key that is not a field of a model, at a scalar, or after a
    container's item (``dict``/``list`` values take any key or index).
    """
    current: Any = _root_type(model)
    for depth, part in enumerate(parts):
        current = unwrap_optional(current)
        if is_model(current):
            field = current.model_fields.get(part)
            if field is None:
                return current, depth
            current = _root_type(field.annotation) if is_model(field.annotation) else field.annotation
        elif typing.get_origin(current) in _CONTAINERS:
            args = typing.get_args(current)
            current = args[-1] if args else Any  # dict value / list item type
        else:
            return current, depth
    return unwrap_optional(current), len(parts)


def allowed_keys(model: type[BaseModel], parts: list[str]) -> list[str]:
    """Field names of the (nested) model at ``parts``; empty when it cannot be told."""
    current, followed = type_at(model, parts)
    if followed < len(parts):
        return []
    return sorted(current.model_fields) if is_model(current) else []


def names_a_field(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether ``parts`` or a prefix of it names a field (``packages.nano`` is in ``packages``)."""
    if not parts:
        return True
    current, followed = type_at(model, parts)
    if followed == len(parts):
        return True
    if followed == 0:
        return False
    # stopped inside a container's values (any key is fine) or at a scalar (no deeper keys)
    return not is_model(current) and typing.get_origin(current) in _CONTAINERS or current is Any
