"""A small TOML writer: tables of scalars, lists and inline tables (Python reads TOML with
:mod:`tomllib` but has no writer). Used for a run's ``config.toml``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pixelwise._checks import message


def _toml_key(key: str) -> str:
    # Keys of digits are quoted, as mask values are in an encoding's value map ("255" = 1).
    bare = key and all(c.isalnum() or c in "_-" for c in key) and key.isascii()
    return key if bare and not key.isdigit() else json.dumps(key)


def toml_value(value: Any) -> str:
    """One TOML value: a number, string, bool, list, or a table as an inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = [
            f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None
        ]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(message("TOML value", "be a number, string, bool, list or table", repr(value)))


def dump_toml(table: Mapping[str, Mapping[str, Any]]) -> str:
    """Write ``{section: {key: value}}`` as TOML; None values are left out (TOML has no null)."""
    blocks = []
    for section, values in table.items():
        lines = [f"[{_toml_key(section)}]"]
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one ``{"section.key": value}`` dict, in order."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
