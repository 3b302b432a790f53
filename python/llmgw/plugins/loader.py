"""Loading plugins from config (`module:Class` or an `llmgw.plugins` entry-point name)."""

from __future__ import annotations

import importlib
import inspect
import itertools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

from llmgw.config import PluginSpec
from llmgw.plugins.api import Plugin

__all__ = ["LoadedPlugin", "PluginLoadError", "instantiate", "load_plugin", "load_plugins"]

ENTRY_POINT_GROUP = "llmgw.plugins"


class PluginLoadError(ValueError):
    pass


_HOOKS = ("on_headers", "pre_request", "post_response", "on_chunk", "on_stream_end", "on_finish")
_PLAIN_ONLY = ("on_chunk", "on_stream_end")  # run per chunk: no awaiting there


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin instance with its hooks resolved once, so the hot path does no lookups. A hook
    the plugin does not override is None; `*_async` says whether to await it."""

    name: str
    instance: Any
    kinds: frozenset[str]
    read_only: bool
    headers: Callable[..., Any] | None
    headers_async: bool
    pre: Callable[..., Any] | None
    pre_async: bool
    post: Callable[..., Any] | None
    post_async: bool
    chunk: Callable[..., Any] | None
    stream_end: Callable[..., Any] | None
    finish: Callable[..., Any] | None
    finish_async: bool
    spec: PluginSpec | None = None  # the config entry it came from (None for built-ins)
    owner: str = ""  # unique within the worker: what its routes, tasks and queues are filed under
    fail_open: bool = False  # spec.on_error == "open": a crash is logged and counted, then ignored


_instances = itertools.count(1)


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


def instantiate(cls: Any, name: str, options: dict[str, Any], spec: PluginSpec | None = None) -> LoadedPlugin:
    if not callable(cls):
        raise PluginLoadError(f"plugin {name!r} is not a class")
    try:
        inst = cls(**options)
    except TypeError as exc:
        raise PluginLoadError(f"plugin {name!r}: bad options {sorted(options)}: {exc}") from None
    hooks = {hook: _overridden(inst, hook) for hook in _HOOKS}
    for hook in _PLAIN_ONLY:
        if hooks[hook] is not None and inspect.iscoroutinefunction(hooks[hook]):
            raise PluginLoadError(f"plugin {name!r}: {hook} must be a plain function (it runs per chunk)")
    kinds = getattr(inst, "kinds", None) or frozenset({"chat"})
    if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
        raise PluginLoadError(f"plugin {name!r}: kinds must be a set of request kinds such as {{'chat'}}")

    def is_async(hook: str) -> bool:
        return hooks[hook] is not None and inspect.iscoroutinefunction(hooks[hook])

    return LoadedPlugin(
        name=getattr(inst, "name", "") or type(inst).__name__,
        instance=inst,
        kinds=frozenset(kinds),
        read_only=bool(getattr(inst, "read_only", False)),
        headers=hooks["on_headers"],
        headers_async=is_async("on_headers"),
        pre=hooks["pre_request"],
        pre_async=is_async("pre_request"),
        post=hooks["post_response"],
        post_async=is_async("post_response"),
        chunk=hooks["on_chunk"],
        stream_end=hooks["on_stream_end"],
        finish=hooks["on_finish"],
        finish_async=is_async("on_finish"),
        spec=spec,
        fail_open=spec is not None and spec.on_error == "open",
        owner=f"{name}#{next(_instances)}",
    )


def load_plugin(spec: PluginSpec) -> LoadedPlugin:
    return instantiate(_resolve(spec.target), spec.target, dict(spec.options), spec)


def load_plugins(specs: tuple[PluginSpec, ...] | list[PluginSpec]) -> list[LoadedPlugin]:
    return [load_plugin(spec) for spec in specs]
