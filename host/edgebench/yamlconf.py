"""YAML config files with line-precise errors: every value knows the line it came from.

Used by the target inventory and benchmark plans, so "unknown key" and "wrong type" errors name the file,
the line and the key path.
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

MAX_CONFIG_BYTES = 4 * 2**20


@dataclass
class YamlDoc:
    path: Path
    data: Any
    lines: dict  # key path tuple -> 1-based line

    def where(self, *keys) -> str:
        """'configs/targets.yaml:12' for the deepest key path that has a line."""
        for end in range(len(keys), -1, -1):
            line = self.lines.get(tuple(keys[:end]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)

    def error(self, keys: tuple, message: str, hint: str | None = None) -> ConfigError:
        dotted = ".".join(str(k) for k in keys)
        return ConfigError(f"{self.where(*keys)}: {dotted + ': ' if dotted else ''}{message}", hint)


# A config is a few hundred values. Aliases can make a small file expand exponentially ("billion laughs"): the
# expanded size is counted before anything walks the data, and refused above this. A long string counts as one
# value per 100 characters, so one big string aliased many times is caught too.
MAX_VALUES = 100_000


def _expanded_size(node, sizes: dict) -> int:
    """Values the node stands for once aliases are expanded (each shared node counted once per use)."""
    import yaml

    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_VALUES + 1  # a node that contains itself (a recursive alias) is over any limit
    total = 1
    if isinstance(node, yaml.ScalarNode):
        total += len(node.value) // 100
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, sizes) + _expanded_size(value, sizes)
            if total > MAX_VALUES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for value in node.value:
            total += _expanded_size(value, sizes)
            if total > MAX_VALUES:
                break
    sizes[id(node)] = total
    return total


def _walk(path: Path, node, prefix: tuple, lines: dict) -> None:
    import yaml

    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in seen:
                    raise ConfigError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r} "
                                      f"(first at line {seen[key.value]})", "keep one of them")
                seen[key.value] = key.start_mark.line + 1
            key_path = prefix + (key.value,)
            lines[key_path] = key.start_mark.line + 1
            _walk(path, value, key_path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _walk(path, value, prefix + (index,), lines)


@functools.lru_cache(maxsize=None)
def _loader_class():
    """PyYAML's safe loader (libyaml's when present: several times faster) that also reads 1e-3 as a number, as
    YAML 1.2 and every command line do (YAML 1.1 wants 1.0e-3, and `min_seconds: 1e-3` would be a string)."""
    import re

    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return Loader


def load_yaml(path: Path) -> YamlDoc:
    import yaml

    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path} is not a regular file", "name a .yaml file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {len(text) / 2**20:.1f} MiB: too large for a config file "
                          f"(the limit is {MAX_CONFIG_BYTES // 2**20} MiB)")
    loader = _loader_class()(text)
    lines: dict = {}
    try:
        node = loader.get_single_node()  # parsed once: the node tree gives lines, then the values
        if node is not None:
            if _expanded_size(node, {}) > MAX_VALUES:
                raise ConfigError(f"{path}: expands to more than {MAX_VALUES:,} values through its anchors and "
                                  "aliases; refused (a config this large is a mistake or an attack)")
            _walk(path, node, (), lines)  # duplicate keys are refused before PyYAML keeps the last one silently
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    finally:
        loader.dispose()
    return YamlDoc(path, data, lines)


def check_type(doc: YamlDoc, keys: tuple, value, expected: str):
    """Validate a scalar/collection against a type name; returns the value (ints allowed as numbers)."""
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        # .nan and .inf are YAML numbers, but no timeout or count can be either
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "list of strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "mapping of strings": isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (str, int, float))
                                                               for k, v in value.items()),
        "mapping": isinstance(value, dict),
        "list": isinstance(value, list),
    }[expected]
    if not ok:
        article = "an" if expected[0] in "aeiou" else "a"
        raise doc.error(keys, f"must be {article} {expected}, got {value!r}")
    return value
