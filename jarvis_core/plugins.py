"""The plugin manager: finds installed plugins through the `jarvis` entry-point group, lazily, once.

`JARVIS_LOAD_PLUGINS` is an allow-list of entry-point or distribution names, comma-separated; set but empty loads
none. A plugin that fails to import, or implements a hook that does not exist (a misspelling), is reported with one
warning and skipped: a broken third-party plugin never takes the command line down with it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .engine import EngineSpec
from .registry import EngineRegistry

log = logging.getLogger("jarvis")

ENTRY_POINT_GROUP = "jarvis"

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
    pm.check_pending()
    _info[name] = PluginInfo(name, distribution, version)
    return True


def unregister(name: str) -> None:
    pm.unregister(name=name)
    _info.pop(name, None)


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
        def register_one(spec: EngineSpec, _plugin: str = impl.plugin_name) -> None:
            registry.register(spec, _plugin)
        impl.function(*[{"register": register_one}[arg] for arg in impl.argnames])
    return registry
