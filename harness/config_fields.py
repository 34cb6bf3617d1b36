"""Typed dataclasses from YAML mappings, with errors that name the field's path.

A config dataclass declares each plain field with ``field(default, type)``; ``build`` checks that a
mapping holds only known keys and type-checks each value (YAML's ``2e-4`` string is a float; a boolean is
never a number). The dataclass validates itself in ``__post_init__`` (so ``dataclasses.replace`` checks
too), naming its own field; ``build`` puts the section's path in front. Nested sections are built by the
callables passed as keyword arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from harness.errors import ConfigError


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice: plain YAML would keep the last one without a word."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                        "(YAML would silently keep only the last)")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream) -> Any:
    """``yaml.safe_load`` that refuses a key written twice in one mapping (DuplicateKeyError)."""
    return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 -- a SafeLoader subclass


def _mapping(cls, data: Any, path: str) -> dict:
    """Checks ``data`` is a mapping with only ``cls``'s fields; returns it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'sweep'}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    renamed = getattr(cls, "RENAMED", {})  # old key -> its new name: a sweep file of an earlier version
    for key in unknown:
        if key in renamed:
            raise ConfigError(f"{path + '.' if path else ''}{key}: renamed to {renamed[key]}")
    if unknown:
        raise ConfigError(f"{path + '.' if path else ''}{unknown[0]}: unknown key (allowed: {', '.join(sorted(known))})")
    return data


def _typed(value: Any, kind: type | tuple, path: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML reads 2e-4 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{path}: expected {getattr(kind, '__name__', kind)}, got a boolean")
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: expected {name}, got {type(value).__name__} {value!r}")
    return value


def build(cls, raw: Any, path: str, **nested):
    """Instantiates dataclass ``cls`` from a mapping, type-checking each plain field."""
    data = _mapping(cls, raw, path)
    kwargs = {}
    for f in dataclasses.fields(cls):
        p = f"{path}.{f.name}" if path else f.name
        if f.name in nested:
            kwargs[f.name] = nested[f.name](data.get(f.name), p)
        elif f.name in data:
            value = data[f.name]
            kind = f.metadata["type"]
            kwargs[f.name] = None if value is None and f.metadata.get("optional") else _typed(value, kind, p)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_under(path, cls, str(exc))) from exc


def _under(path: str, cls, message: str) -> str:
    """``message`` from ``cls.__post_init__`` ("field: why", or just "why") with the section's path added."""
    if not path:
        return message
    head = message.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]  # "start_points[0].lr_g: ..." names start_points
    if head in {f.name for f in dataclasses.fields(cls)}:
        return f"{path}.{message}"
    return f"{path}: {message}"


def field(default, kind, optional: bool = False, **kw):
    return dataclasses.field(default=default, metadata={"type": kind, "optional": optional}, **kw)


def replaced(obj, path: str, **changes):
    """``dataclasses.replace`` (which re-runs ``__post_init__``) with the section's path in an error."""
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as exc:
        raise ConfigError(_under(path, type(obj), str(exc))) from exc
