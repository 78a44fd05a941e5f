"""The plugin manager: finds installed plugins through the `jarvis` entry-point group, lazily, once.

`JARVIS_LOAD_PLUGINS` is an allow-list of entry-point or distribution names, comma-separated; set but empty loads
none. A plugin that fails to import, implements a hook that does not exist (a misspelling), or registers an engine
without implementing every lifecycle hook is reported with one warning and skipped: a broken third-party plugin never
takes the command line down with it.

Lifecycle hooks are not broadcast: `engine_hook(hook, plugin)` is the caller for one plugin's implementation (plus
any hook wrappers), so an engine's calls reach only the plugin that registered it. `JARVIS_TRACE_PLUGINS=1` prints
every hook call, its plugin, its duration and its result to stderr.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .console import safe
from .engine import EngineSpec
from .registry import EngineRegistry

log = logging.getLogger("jarvis")

ENTRY_POINT_GROUP = "jarvis"

#: The hooks every engine's plugin implements; the core calls them for that engine only.
LIFECYCLE_HOOKS = ("detect", "is_available", "pull", "start", "warmup", "infer", "stop")

pm = pluggy.PluginManager("jarvis")
pm.add_hookspecs(hookspecs)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None


_info: dict[str, PluginInfo] = {}
_loaded = False


def load_plugins() -> None:
    """Register the installed plugins (once). Under tests, installed entry points are never loaded."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    if os.environ.get("JARVIS_TRACE_PLUGINS", "") not in ("", "0"):
        trace_hook_calls()
    if getattr(sys, "_called_from_test", False):
        return
    allowed = _allow_list()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if allowed is not None and ep.name not in allowed and (dist or "") not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a third-party plugin may fail in any way while importing
            log.warning("plugin '%s' (%s) failed to load and is skipped: %s: %s",
                        ep.name, dist or "unknown distribution", type(exc).__name__, exc)
            continue
        register(module, ep.name, distribution=dist, version=ep.dist.version if ep.dist is not None else None)


def register(plugin: object, name: str, *, distribution: str | None = None, version: str | None = None) -> bool:
    """Register one plugin object, validating it; on a bad plugin warn, leave it out and return False."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        log.warning("plugin '%s' is invalid and is skipped: %s", name, exc)
        return False
    known = set(hook_names())
    unknown = sorted(_hook_names_of(name) - known)
    if unknown:
        pm.unregister(name=name)
        log.warning("plugin '%s' implements %s, which %s not a Jarvis hook (misspelled?); the plugin is skipped. "
                    "Known hooks: %s.", name, ", ".join(f"'{u}'" for u in unknown),
                    "is" if len(unknown) == 1 else "are", ", ".join(hook_names()))
        return False
    incomplete = _incomplete_engines(name)
    if incomplete:
        pm.unregister(name=name)
        log.warning("plugin '%s' is skipped: %s", name, incomplete)
        return False
    pm.check_pending()
    _info[name] = PluginInfo(name, distribution, version)
    _hook_callers.clear()
    return True


def unregister(name: str) -> None:
    pm.unregister(name=name)
    _info.pop(name, None)
    _hook_callers.clear()


def _engines_declared_by(name: str) -> list[EngineSpec]:
    """The engines one plugin declares through its `register_engines` hook."""
    specs: list[EngineSpec] = []
    for impl in pm.hook.register_engines.get_hookimpls():
        if impl.plugin_name == name:
            impl.function(register=specs.append)
    return specs


def _incomplete_engines(name: str) -> str | None:
    """Why a plugin that registers engines cannot serve them (lifecycle hooks it does not implement), else None."""
    try:
        engines = [spec.name for spec in _engines_declared_by(name)]
    except Exception as exc:  # a third-party plugin's bug in register_engines
        return f"its register_engines failed: {type(exc).__name__}: {exc}"
    if not engines:
        return None
    missing = [hook for hook in LIFECYCLE_HOOKS if not own_impls(hook, name)]
    if not missing:
        return None
    return (f"it registers engine{'s' if len(engines) > 1 else ''} {', '.join(repr(e) for e in engines)} but does not "
            f"implement {', '.join(repr(m) for m in missing)}; an engine plugin implements every lifecycle hook: "
            f"{', '.join(LIFECYCLE_HOOKS)}.")


def own_impls(hook: str, name: str) -> list[pluggy.HookImpl]:
    """The plugin's plain (non-wrapper) implementations of a hook."""
    return [impl for impl in getattr(pm.hook, hook).get_hookimpls()
            if impl.plugin_name == name and not (impl.hookwrapper or impl.wrapper)]


_hook_callers: dict[tuple[str, str], Any] = {}


def engine_hook(hook: str, plugin: str) -> Any:
    """The pluggy caller of `hook` that reaches only `plugin`'s implementation (hook wrappers of any plugin still
    wrap it, and call monitoring sees it). Every other plugin's plain implementation is left out."""
    key = (hook, plugin)
    if key not in _hook_callers:
        others = {impl.plugin for impl in getattr(pm.hook, hook).get_hookimpls()
                  if impl.plugin_name != plugin and not (impl.hookwrapper or impl.wrapper)}
        _hook_callers[key] = pm.subset_hook_caller(hook, remove_plugins=others)
    return _hook_callers[key]


# --- JARVIS_TRACE_PLUGINS ----------------------------------------------------------------------------------------

_trace_undo: Any = None
_trace_local = threading.local()


def trace_hook_calls(stream: Any = None) -> None:
    """Print every hook call to stderr (or `stream`): hook, engine, plugin(s), duration and a short result."""
    global _trace_undo
    if _trace_undo is not None:
        return

    def before(hook_name: str, hook_impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        stack = getattr(_trace_local, "starts", None)
        if stack is None:
            stack = _trace_local.starts = []
        stack.append(time.perf_counter())

    def after(outcome: Any, hook_name: str, hook_impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        elapsed_ms = (time.perf_counter() - _trace_local.starts.pop()) * 1000
        ctx = kwargs.get("ctx")
        engine = f"[{ctx.engine}]" if getattr(ctx, "engine", None) else ""
        names = ", ".join(impl.plugin_name for impl in hook_impls) or "no plugin"
        if outcome.exception is not None:
            shown = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
        else:
            shown = f"-> {_short(outcome.get_result())}"
        print(safe(f"jarvis trace: {hook_name}{engine} by {names} in {elapsed_ms:.1f} ms {shown}"),
              file=stream or sys.stderr, flush=True)

    _trace_undo = pm.add_hookcall_monitoring(before, after)


def stop_tracing() -> None:
    global _trace_undo
    if _trace_undo is not None:
        _trace_undo()
        _trace_undo = None


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def _hook_names_of(name: str) -> set[str]:
    """The names of every hook the plugin implements, including ones without a spec (misspellings)."""
    plugin = pm.get_plugin(name)
    found = set()
    for hook_name in dir(pm.hook):
        caller = getattr(pm.hook, hook_name)
        if isinstance(caller, pluggy.HookCaller) and any(i.plugin is plugin for i in caller.get_hookimpls()):
            found.add(hook_name)
    return found


def _allow_list() -> set[str] | None:
    raw = os.environ.get("JARVIS_LOAD_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def hook_names() -> list[str]:
    """Every hook a plugin may implement."""
    return sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, "jarvis_spec"))


def plugin_info() -> list[tuple[PluginInfo, list[str]]]:
    """Each registered plugin with the hooks it implements."""
    load_plugins()
    out = []
    for name, plugin in pm.list_name_plugin():
        info = _info.get(name, PluginInfo(name, None, None))
        hooks = sorted(_hook_names_of(name))
        out.append((info, hooks))
    return sorted(out, key=lambda item: item[0].name)


def get_registry() -> EngineRegistry:
    """The engines and prefixes of every registered plugin. Raises PluginError on conflicts."""
    load_plugins()
    registry = EngineRegistry()
    for impl in pm.hook.register_engines.get_hookimpls():
        impl.function(register=lambda spec, plugin=impl.plugin_name: registry.register(spec, plugin))
    return registry
