"""YAML config files with line-precise errors: every value knows the line it came from.

Used by the target inventory and benchmark plans, so "unknown key" and "wrong type" errors name the file,
the line and the key path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


@dataclass
class YamlDoc:
    path: Path
    data: object
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


def _walk(node, prefix: tuple, lines: dict) -> None:
    import yaml

    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            lines[path] = key.start_mark.line + 1
            _walk(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _walk(value, prefix + (index,), lines)


def load_yaml(path: Path) -> YamlDoc:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: several times faster
    loader = loader_class(text)
    try:
        node = loader.get_single_node()  # parsed once: the node tree gives lines, then the values
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    finally:
        loader.dispose()
    lines: dict = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlDoc(path, data, lines)


def check_type(doc: YamlDoc, keys: tuple, value, expected: str):
    """Validate a scalar/collection against a type name; returns the value (ints allowed as numbers)."""
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
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
