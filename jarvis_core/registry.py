"""The engine registry and its prefix table, owned by the core and filled by the `register_engines` hook."""

from __future__ import annotations

import re
from dataclasses import replace

from .engine import EngineSpec
from .errors import DuplicatePrefixError, PluginError

_PREFIX = re.compile(r"^[a-z][a-z0-9.-]*[_:]$")
_ENGINE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")

#: Prefixes of the engine plugins published with Jarvis, so that an ID for an engine whose plugin is not installed
#: gets "pip install ..." instead of silently falling through to the default engine.
WELL_KNOWN_PREFIXES: dict[str, str] = {
    "ol_": "jarvis-ollama",
    "vl_": "jarvis-vllm",
    "vllm:": "jarvis-vllm",
    "lc_": "jarvis-llamacpp",
    "llamacpp:": "jarvis-llamacpp",
}


class EngineRegistry:
    """Engines by name, and the table mapping each prefix (lower case) to its engine."""

    def __init__(self) -> None:
        self.engines: dict[str, EngineSpec] = {}
        self.prefixes: dict[str, str] = {}

    def register(self, spec: EngineSpec, plugin: str) -> None:
        if not isinstance(spec, EngineSpec):
            raise PluginError(f"Plugin '{plugin}' registered {spec!r}, which is not a jarvis_core.EngineSpec.")
        if not _ENGINE_NAME.match(spec.name):
            raise PluginError(
                f"Plugin '{plugin}' registered engine name '{spec.name}': use lower-case letters, digits, '-' and '_'."
            )
        if spec.name in self.engines:
            other = self.engines[spec.name].plugin
            raise PluginError(f"Engine '{spec.name}' is registered by both plugin '{other}' and plugin '{plugin}'.")
        if not spec.prefixes:
            raise PluginError(f"Plugin '{plugin}' registered engine '{spec.name}' without any prefix.")
        prefixes = tuple(p.lower() for p in spec.prefixes)
        for prefix in prefixes:
            if not _PREFIX.match(prefix):
                raise PluginError(
                    f"Plugin '{plugin}' claims prefix '{prefix}': a prefix is letters/digits ending in '_' or ':'."
                )
            if prefix in self.prefixes:
                owner = self.engines[self.prefixes[prefix]]
                raise DuplicatePrefixError(
                    f"Prefix '{prefix}' is claimed by plugin '{owner.plugin}' (engine '{owner.name}') and by plugin "
                    f"'{plugin}' (engine '{spec.name}'); uninstall one of them or switch it off with JARVIS_LOAD_PLUGINS."
                )
        self.engines[spec.name] = replace(spec, prefixes=prefixes, plugin=plugin)
        for prefix in prefixes:
            self.prefixes[prefix] = spec.name

    def match_prefix(self, model_id: str) -> tuple[str, str] | None:
        """The (prefix, engine) whose prefix starts `model_id`, longest prefix first, ignoring case."""
        lowered = model_id.lower()
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if lowered.startswith(prefix):
                return prefix, self.prefixes[prefix]
        return None

    def canonical_prefix(self, engine: str) -> str:
        return self.engines[engine].prefixes[0]

    def describe_prefixes(self) -> str:
        if not self.prefixes:
            return "none (no engine plugin is installed)"
        return ", ".join(f"{p} ({e})" for p, e in sorted(self.prefixes.items()))
