"""Walks over the models: the list of every key for `bascule validate --schema`, the model at a
place in a file (for error messages), and where the models hold paths (for the loader)."""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel

from bascule.config.base import READ_BY_LOADER
from bascule.config.environment import EnvironmentConfig
from bascule.yamlsource import Loc


def describe_schema() -> list[str]:
    """One line per configuration key: ``path (type, default): description``."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            inner = unwrap(info.annotation)
            below = path
            if typing.get_origin(inner) is list:
                inner = typing.get_args(inner)[0]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    path = below = f"{path}[]"
            elif typing.get_origin(inner) is dict:
                inner = typing.get_args(inner)[1]
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    below = f"{path}.<NAME>"
            is_model = isinstance(inner, type) and issubclass(inner, BaseModel)
            if info.is_required():
                shown = "required"
            elif info.default_factory is not None or is_model:
                shown = "optional"
            else:
                default = info.default
                shown = f"default {default if isinstance(default, Path) else repr(default)}"
            lines.append(f"{path} ({shown}): {info.description}")
            if is_model:
                walk(inner, f"{below}.")

    walk(EnvironmentConfig, "")
    return lines


@dataclass(frozen=True)
class PathField:
    """A Path field: where it is, its default, whether the loader reads the file's text, and
    whether it holds a list of paths."""

    loc: Loc
    default: Path | None
    read: bool
    many: bool = False


def path_fields(model: type[BaseModel] = EnvironmentConfig, prefix: Loc = ()) -> list[PathField]:
    """Where the models hold paths, which are taken relative to the file that writes them. A
    section that may be written as one path (``Section.SHORTHAND``) comes before its fields."""
    found: list[PathField] = []
    for name, info in model.model_fields.items():
        inner = unwrap(info.annotation)
        args = typing.get_args(inner)
        if inner is Path:
            default = info.default if isinstance(info.default, Path) else None
            read = READ_BY_LOADER in _metadata(info.annotation) + tuple(info.metadata)
            found.append(PathField((*prefix, name), default, read))
        elif typing.get_origin(inner) in (list, tuple) and args and args[0] is Path:
            found.append(PathField((*prefix, name), None, read=False, many=True))
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            shorthand = getattr(inner, "SHORTHAND", None)
            if shorthand is not None:
                default = inner.model_fields[shorthand].default
                found.append(PathField((*prefix, name), default, read=False))
            found.extend(path_fields(inner, (*prefix, name)))
    return found


def model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if that value is a model."""
    current: Any = EnvironmentConfig
    for part in loc:
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _metadata(annotation: Any) -> tuple[Any, ...]:
    """The ``Annotated`` metadata of ``annotation`` and of the members of a union."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = typing.get_args(annotation)
        return (*metadata, *_metadata(inner))
    if origin in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _metadata(arg))
    return ()
