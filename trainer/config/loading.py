"""Building a config in one fixed order: dataclass defaults -> YAML file -> `--set` overrides,
then each key checked alone (`values`), the defaults that depend on other keys filled in and
every cross-field rule checked (`rules`), and frozen: a typo fails here, before any data is read
or any epoch runs.

The YAML is read guarded: a key given twice, an alias bomb, a timestamp PyYAML cannot build, all
end as one `error:` line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Optional

import yaml

from trainer.config.rules import RULES, with_defaults
from trainer.config.schema import Config
from trainer.config.values import check_value, shown
from trainer.errors import UserError


def load(path: Optional[str] = None, overrides: typing.Sequence[str] = (),
         output_dir: Optional[str] = None) -> Config:
    """Build the run's config from an optional YAML file (any storage path) and `--set` overrides."""
    raw, source = load_raw(path, overrides)
    if output_dir:
        if raw.get("output") is None:
            raw["output"] = {}
        if not isinstance(raw["output"], dict):
            raise UserError(f"key 'output' is not a mapping, {source}, expected a section")
        raw["output"]["dir"] = output_dir
    return from_dict(raw, source)


def load_raw(path: Optional[str] = None, overrides: typing.Sequence[str] = ()
             ) -> tuple[dict, str]:
    """The keys as given (the YAML file with `--set` applied, no defaults) and their source:
    what a tool asks when a default must not count as asked (`trainer.convert`)."""
    raw: dict = {}
    source = "--set" if overrides else "the built-in demo config"
    if path:
        from trainer import storage  # here: a config without a file loads without numpy

        source = path
        raw = parse_yaml(storage.read_text(path, storage.CONFIG_LIMIT, "a config"), source)
    for item in overrides:
        apply_override(raw, item)
    return raw, source


# YAML errors that PyYAML does not wrap: `2001-13-45` (a timestamp), `!!int 1.5`, deep nesting.
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)
# Values a config may hold once YAML aliases are expanded; beyond it a document is an alias bomb.
MAX_VALUES = 10_000


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(f"duplicate key {shown(key)} on lines {first} and {second}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:  # the mapping's own keys, before merges (`<<`) join them
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class says so
                pass
        return super().construct_mapping(node, deep=deep)


def _safe_load(text: str, source: str, what: str) -> Any:
    """`yaml.safe_load`, with every way it fails, duplicate keys and alias bombs, as UserError."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise UserError(f"{exc}, {source}, expected each key once (YAML keeps only the last)"
                        ) from None
    except _YAML_ERRORS as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        reason = "" if isinstance(exc, yaml.YAMLError) else f" ({str(exc)[:100]})"
        raise UserError(f"invalid YAML{reason}, {source}{where}, expected {what}") from None
    count, stack = 0, [data]
    while stack:  # iterative: shared (aliased) nodes count each time they are reached
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise UserError(f"YAML expands to more than {MAX_VALUES} values (aliases?), {source}, "
                            f"expected {what}")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, set)):
            stack.extend(node)
    return data


def parse_yaml(text: str, source: str) -> dict:
    data = _safe_load(text, source, "a mapping of config keys")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config is a {type(data).__name__}, {source}, expected a mapping of config keys"
        )
    return data


def apply_override(raw: dict, item: str) -> None:
    """Apply one `key.sub=value` override; the value is parsed as a YAML scalar or list."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {shown(item)} is not key=value, --set, expected e.g. "
                        "train.epochs=3")
    value = (_safe_load(text, f"--set {shown(item)}", "a scalar or a [list]")
             if text.strip() else None)
    set_key(raw, key.strip(), value, f"--set {shown(item)}")


def set_key(raw: dict, key: str, value: Any, where: str) -> None:
    """Set a dotted key (`train.epochs`) in a plain config mapping, creating sections as needed;
    `where` names the source of the key in the error when a section is in the way."""
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"key '{'.'.join(parts[:depth + 1])}' is not a section, "
                            f"{where}, expected a section such as train or data")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict, source: str = "config") -> Config:
    """Validate a plain mapping into a frozen Config, naming the first bad key and what it expects.

    Every key is checked alone, the task's defaults are filled in, then every cross-field rule
    (`RULES`) is checked: a config that loads is one the run can use, decided before any data
    is read or any epoch runs.
    """
    cfg = with_defaults(_build(Config, raw, source, prefix=""))
    for rule in RULES:
        rule(cfg, source)
    return cfg


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"key '{prefix.rstrip('.')}' is a {type(raw).__name__}, {source}, "
                        "expected a mapping (a section of keys)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key)[:100], list(fields), n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{near[0]}'?" if near else (
                f"expected one of {', '.join(prefix + k for k in fields)}")
            raise UserError(f"unknown key '{prefix}{shown(key).strip(chr(39))}', {source}, {hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = check_value(value, kind, fields[key].metadata, f"{prefix}{key}", source)
    return cls(**kwargs)


def with_values(cfg: Config, values: typing.Mapping[str, Any]) -> Config:
    """`cfg` with some dotted keys set to other (already valid) values."""
    raw = cfg.to_dict()
    for key, value in values.items():
        set_key(raw, key, value, "with_values")
    return dataclasses.replace(
        cfg, **{k: type(getattr(cfg, k))(**v) if isinstance(v, dict) else v
                for k, v in raw.items()})
