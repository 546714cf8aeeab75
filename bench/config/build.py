"""From raw trees to typed dataclasses, for any dataclass: merging layers, and a builder that checks every value
against its annotation and its field's range, with errors that name the key and the file."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from bench.errors import BenchError


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` laid over ``base``: mappings merge key by key, any other value replaces (the later layer wins)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses. Errors name key and file."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except BenchError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BenchError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise BenchError(f"{source}: {key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise BenchError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return {str(k): (v if val_tp is Any else _coerce(v, val_tp, f"{key}.{k}", source)) for k, v in value.items()}
    if tp is float:
        return _finite(value, key, source)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool or not isinstance(value, tp):
            raise BenchError(f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise BenchError(f"{source}: {key}: unsupported type {_type_name(tp)}")


def build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    """``raw`` as a ``cls``: an unknown key is refused, each value is checked against its annotation and range."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise BenchError(f"{source}: unknown key {where!r} (valid: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(value, hints[name], key, source)
        meta = fields[name].metadata
        if meta and value is not None:
            _check_range(value, meta, key, source)
        kwargs[name] = value
    return cls(**kwargs)


def _finite(value: Any, key: str, source: str) -> float:
    """A float from an int, a float or a numeric string (YAML 1.1 reads 1e-3 as a string), refusing NaN and
    infinities: NaN passes every range comparison and would silently drop a loss term or diverge training."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BenchError(f"{source}: {key}: expected float, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise BenchError(f"{source}: {key}: expected float, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(number):
        raise BenchError(f"{source}: {key}: expected a finite number, got {value!r}")
    return number


def check_finite_within(value: Any, key: str, source: str) -> None:
    """Free-form model options have no declared type: a NaN or infinity anywhere in them (a float, or a string that
    reads as one, as ``--set x=nan`` gives) is refused as in a typed float field."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite_within(v, f"{key}.{k}", source)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite_within(v, f"{key}[{i}]", source)
    elif isinstance(value, (float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return
        if not math.isfinite(number):
            raise BenchError(f"{source}: {key}: expected a finite number, got {value!r}")


def _check_range(value: Any, meta: dict, key: str, source: str) -> None:
    """The range of a list field applies to each item. Written as ``not lo <= value`` so that a value no
    comparison holds for (NaN) fails too."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_range(item, meta, f"{key}[{i}]", source)
        return
    if meta["choices"] and value not in meta["choices"]:
        raise BenchError(f"{source}: {key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta["lo"] is not None and not meta["lo"] <= value:
        raise BenchError(f"{source}: {key}: {value!r} is below the minimum {meta['lo']}")
    if meta["hi"] is not None and not value <= meta["hi"]:
        raise BenchError(f"{source}: {key}: {value!r} is above the maximum {meta['hi']}")

