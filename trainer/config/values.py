"""One value of the config checked alone against its field: its type (with the coercions YAML
needs), its choices, range, length and pattern; and the wording every config error shares:
`invalid value V for 'key', SOURCE, expected WHAT`, the value cut short."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import types
import typing
from typing import Any, Optional, Union

import yaml

from trainer.errors import UserError


def shown(value: Any) -> str:
    """A value as error messages show it: its repr, cut short (a hostile value can be huge)."""
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def check_value(value: Any, kind: Any, meta: typing.Mapping, key: str, source: str) -> Any:
    """`value` as key `key` of type `kind` takes it, checked against its field's metadata
    (`choices`, `words`, `length`, `min`/`max`, `pattern`); the first problem is a UserError."""
    if kind is str and value is False and "off" in (meta.get("choices") or ()):
        value = "off"  # YAML 1.1 reads a bare `off` as false
    value = coerce(value, kind, key, source)
    if value is None:
        return None
    choices = meta.get("choices")
    for item in value if isinstance(value, list) and choices else [value]:
        check_choice(item, choices, key, source)
    if isinstance(value, str) and meta.get("words"):  # a number, or one of these words
        check_choice(value, meta["words"], key, source)
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise invalid(value, key, source, f"{length} values")
    for item in value if isinstance(value, list) else [value]:
        check_range(item, meta, key, source)
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise invalid(value, key, source, f"1 to 128 letters, digits, '.', '_' or '-', starting "
                      f"with a letter, digit or '_' (e.g. {meta['example']})")
    return value


def check_range(value: Any, meta: typing.Mapping, key: str, source: str) -> None:
    """A number is finite and within the field's `min` (or above, `exclusive_min`) and `max`."""
    low, high = meta.get("min"), meta.get("max")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(value, key, source, "a finite number")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if low is not None and (value < low or (meta.get("exclusive_min") and value == low)):
            op = ">" if meta.get("exclusive_min") else ">="
            raise invalid(value, key, source, f"{op} {low}")
        if high is not None and value > high:
            raise invalid(value, key, source, f"<= {high}")


def invalid(value: Any, key: str, source: str, expected: str) -> UserError:
    """The one wording of a bad value, for every check of the config."""
    return UserError(f"invalid value {shown(value)} for '{key}', {source}, expected {expected}")


def check_choice(value: Any, choices: Optional[tuple], key: str, source: str) -> None:
    """`value` is one of `choices` (when there are any); the error names the nearest."""
    # `True == 1`, so compare types too: `jit_compile: 1` is not `true`.
    if choices and not any(value == c and type(value) is type(c) for c in choices):
        names = [yaml.safe_dump(c).split("\n")[0] if isinstance(c, bool) else c for c in choices]
        near = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise invalid(value, key, source, f"one of {', '.join(names)}{hint}")


def type_name(kind: Any) -> str:
    """A field's type in words (`a list of a string`, `an integer or a string`)."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in typing.get_args(kind) if a is not type(None)]
        return " or ".join(names)
    if origin is list:
        return f"a list of {type_name(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(kind, str(kind))


def coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    """`value` as type `kind` (an Optional, a Union, a list of a type): exactly that type, never
    a silent conversion, but for the YAML quirks users do not mean (`1e-3` read as a string)."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source)
            except UserError:
                continue
        raise invalid(value, key, source, type_name(kind))
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise invalid(value, key, source, type_name(kind))
        return [coerce(v, item_kind, key, source) for v in value]
    if kind is float and isinstance(value, str):
        # PyYAML reads `1e-3` (no dot) as a string; users mean the number.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }.get(kind, False)
    if not ok:
        raise invalid(value, key, source, type_name(kind))
    return float(value) if kind is float else value


# `eval.threshold`: a number, or a rule chosen on validation (`trainer.evaluation.thresholds`).
THRESHOLD_RULE = re.compile(r"(f1)|(precision|recall)@(0?\.\d+|1(\.0*)?|0)")


def parse_threshold(value: Union[str, float]) -> tuple[str, Optional[float]]:
    """(rule, target): `("value", t)` for a number, `("f1", None)`, `("precision", 0.9)`;
    None where the text is no rule (config validation names the key)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "value", float(value)
    match = THRESHOLD_RULE.fullmatch(str(value).strip())
    if match is None:
        return None  # type: ignore[return-value]
    if match.group(1):
        return "f1", None
    return match.group(2), float(match.group(3))
