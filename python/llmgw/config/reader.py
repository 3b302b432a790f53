"""Reading YAML with line numbers into plain values, and typed field readers that record located
problems (`file:line: key: problem. fix`) instead of raising, so one run reports every mistake."""

from __future__ import annotations

import re
from typing import Any, Callable

import yaml

__all__ = ["ConfigError", "Doc", "get", "positive", "take", "url"]


class ConfigError(ValueError):
    """A configuration problem, located: `file:line: key: problem. fix`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ------------------------------------------------------------------------------------------------
# YAML with line numbers: compose the node tree, then convert, remembering each path's line.

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Doc:
    def __init__(self, source: str, env: dict[str, str]) -> None:
        self.source = source
        self.env = env
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []

    def where(self, path: str) -> str:
        line = self.lines.get(path)
        while line is None and "." in path:
            path = path.rsplit(".", 1)[0]
            line = self.lines.get(path)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: str, problem: str, fix: str) -> None:
        self.problems.append(f"{self.where(path)}: {path or '(top level)'}: {problem}. {fix}")

    def to_python(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines[sub] = k.start_mark.line + 1
                    self.error(sub, "duplicate key", "Keep one of them")
                out[key] = self.to_python(v, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.to_python(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        value = yaml.SafeLoader(" ").construct_object(node) if node.tag != "tag:yaml.org,2002:str" else node.value
        if isinstance(value, str) and "${" in value:
            value = self.expand(value, path)
        return value

    def expand(self, value: str, path: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            self.error(path, f"environment variable {name} is not set",
                       f"Export {name} before starting, or write ${{{name}:-default}}")
            return ""

        return _ENV.sub(sub, value)


# ------------------------------------------------------------------------------------------------
# Typed field readers: each records a located problem instead of raising, so that one run reports
# every mistake in the file.

def take(doc: Doc, data: dict[str, Any], path: str, allowed: dict[str, str]) -> None:
    for key in data:
        if key not in allowed:
            sub = f"{path}.{key}" if path else key
            near = [k for k in allowed if k.startswith(key[:3])]
            hint = f"Did you mean {near[0]!r}?" if near else f"Known keys: {', '.join(sorted(allowed))}"
            doc.error(sub, "unknown key", hint)


def get(doc: Doc, data: dict[str, Any], path: str, key: str, kind: type | tuple[type, ...],
         default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    sub = f"{path}.{key}" if path else key
    if key not in data or data[key] is None:
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        doc.error(sub, f"expected {names}, got {type(value).__name__} {value!r}", f"Write a {names} here")
        return default
    if check is not None and (problem := check(value)):
        doc.error(sub, problem, "Fix the value")
        return default
    return value


def positive(v: Any) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def url(v: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", v) else f"must be an http(s):// URL, got {v!r}"
