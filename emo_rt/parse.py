"""Plain JSON/YAML data -> frozen dataclasses, strictly: the one parser of model configs and recipes.

Unknown keys, missing keys (with `require_all`, or a field without a default), wrong types and values
the dataclass refuses are one `ParseError` line naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing


class ParseError(ValueError):
    """Data that does not match its dataclass; the message names the key."""


def parse(cls, data, where: str = "", require_all: bool = False):
    """Build the frozen dataclass `cls` from `data`, checking keys and types on the way.

    `require_all`: every field must be present (a model directory's config.json, which is written
    whole), else fields with defaults may be left out (a recipe)."""
    if not isinstance(data, dict):
        raise ParseError(f"{where or 'the data'}: expected a mapping, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ParseError(f"unknown key {_key(where, str(unknown[0]))!r} (known: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if name not in data and (require_all or (
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))]
    if missing:
        raise ParseError(f"missing key {_key(where, missing[0])!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _value(hints[name], value, _key(where, name), require_all) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ParseError(f"{where + ': ' if where else ''}{err}") from None


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(hint, value, where: str, require_all: bool):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(options[0], value, where, require_all)
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where, require_all)
    if origin is tuple:
        return _tuple(typing.get_args(hint), value, where, require_all)
    if hint is dict:
        if not isinstance(value, dict):
            raise ParseError(f"{where}: expected a mapping, got {describe(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParseError(f"{where}: expected true or false, got {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParseError(f"{where}: expected an integer, got {describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParseError(f"{where}: expected a number, got {describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParseError(f"{where}: expected a string, got {describe(value)}")
        return value
    raise TypeError(f"field {where} has an unsupported type {hint}")  # a bug in the dataclass


def _tuple(args: tuple, value, where: str, require_all: bool) -> tuple:
    """tuple[X, ...] (any length) or tuple[X, Y] (that many)."""
    if not isinstance(value, (list, tuple)):
        raise ParseError(f"{where}: expected a list, got {describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(value) != len(args):
        raise ParseError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
    return tuple(_value(a, v, f"{where}[{i}]", require_all) for i, (a, v) in enumerate(zip(args, value)))


def describe(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{type(value).__name__} {value!r}"
