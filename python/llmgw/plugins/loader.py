"""Loading plugins from config (`module:Class` or an `llmgw.plugins` entry-point name)."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from llmgw.config import PluginSpec
from llmgw.plugins.api import Plugin

__all__ = ["LoadedPlugin", "PluginLoadError", "load_plugins"]

ENTRY_POINT_GROUP = "llmgw.plugins"


class PluginLoadError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin instance with its hooks resolved once, so the hot path does no lookups."""

    name: str
    instance: Any
    pre: Callable[..., Any] | None
    pre_async: bool
    post: Callable[..., Any] | None
    post_async: bool
    chunk: Callable[..., Any] | None


def _overridden(obj: Any, hook: str) -> Callable[..., Any] | None:
    fn = getattr(obj, hook, None)
    if fn is None or not callable(fn):
        return None
    base = getattr(Plugin, hook)
    if getattr(fn, "__func__", None) is base:  # inherited no-op: skip it on the hot path
        return None
    return fn


def _resolve(target: str) -> type:
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginLoadError(f"plugin {target!r}: cannot import module {module_name!r}: {exc}") from None
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise PluginLoadError(f"plugin {target!r}: module {module_name!r} has no {attr!r}") from None
        return obj
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
    if not matches:
        raise PluginLoadError(
            f"plugin {target!r}: no installed package provides it in the {ENTRY_POINT_GROUP!r} entry-point group; "
            "write it as module:Class or install the package that provides it"
        )
    try:
        return matches[0].load()
    except Exception as exc:  # a broken third-party package: report, don't crash start-up obscurely
        raise PluginLoadError(f"plugin {target!r}: loading entry point failed: {exc}") from None


def instantiate(cls: Any, name: str, options: dict[str, Any]) -> LoadedPlugin:
    if not callable(cls):
        raise PluginLoadError(f"plugin {name!r} is not a class")
    try:
        inst = cls(**options)
    except TypeError as exc:
        raise PluginLoadError(f"plugin {name!r}: bad options {sorted(options)}: {exc}") from None
    pre, post, chunk = _overridden(inst, "pre_request"), _overridden(inst, "post_response"), _overridden(inst, "on_chunk")
    if chunk is not None and inspect.iscoroutinefunction(chunk):
        raise PluginLoadError(f"plugin {name!r}: on_chunk must be a plain function (it runs per chunk)")
    return LoadedPlugin(
        name=getattr(inst, "name", "") or type(inst).__name__,
        instance=inst,
        pre=pre,
        pre_async=pre is not None and inspect.iscoroutinefunction(pre),
        post=post,
        post_async=post is not None and inspect.iscoroutinefunction(post),
        chunk=chunk,
    )


def load_plugins(specs: tuple[PluginSpec, ...] | list[PluginSpec]) -> list[LoadedPlugin]:
    return [instantiate(_resolve(spec.target), spec.target, dict(spec.options)) for spec in specs]
