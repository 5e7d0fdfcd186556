"""YAML key paths (``objectives[0].params.alpha``): parsing, reading and writing, and rendering pydantic locations.

One syntax for ``--set`` overrides, sweep grids and error messages, so a path printed in
an error can be pasted back into ``--set``.
"""
from __future__ import annotations

import re
from typing import Any

from ..core.errors import ConfigError

_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def parse(path: str) -> list[str | int]:
    """``a.b[0].c`` -> ["a", "b", 0, "c"]."""
    parts: list[str | int] = []
    pos = 0
    for m in _TOKEN.finditer(path):
        gap = path[pos:m.start()]
        if gap not in ("", ".") or (gap == "." and m.group(2) is not None):
            raise ConfigError(f"malformed key path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(path) or path.startswith("."):
        raise ConfigError(f"malformed key path {path!r}; write it as section.key or list[0].key")
    return parts


def render(loc: tuple | list) -> str:
    """["objectives", 0, "params", "alpha"] -> ``objectives[0].params.alpha``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def get(data: Any, path: str) -> Any:
    """The value at ``path``; KeyError naming the first missing part."""
    cur = data
    for i, part in enumerate(parse(path)):
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            raise KeyError(render(parse(path)[:i + 1])) from None
    return cur


def set_(data: dict, path: str, value: Any) -> None:
    """Set ``path`` in nested dicts/lists; missing mapping keys are created (validation judges them)."""
    parts = parse(path)
    cur: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            if not isinstance(cur, list) or not -len(cur) <= part < len(cur):
                raise ConfigError(f"{render(parts[:i + 1])}: no such list item")
        elif not isinstance(cur, dict):
            raise ConfigError(f"{render(parts[:i])}: is not a mapping, cannot set {part!r} in it")
        elif part not in cur or cur[part] is None:
            cur[part] = [] if isinstance(nxt, int) else {}
        cur = cur[part]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(cur, list) or not -len(cur) <= last < len(cur):
            raise ConfigError(f"{render(parts)}: no such list item")
    elif not isinstance(cur, dict):
        raise ConfigError(f"{render(parts[:-1])}: is not a mapping, cannot set {last!r} in it")
    cur[last] = value
