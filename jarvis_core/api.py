"""Everything an engine plugin may use from Jarvis, in one module: `from jarvis_core.api import ...`.

A plugin imports nothing else from `jarvis_core` (a test enforces it for the plugins shipped here), so the core can
change behind this module without breaking plugins. docs/plugins.md describes the contract; docs/writing-a-plugin.md
builds the smallest complete plugin. Test helpers for plugin authors are in `jarvis_core.testing`.

Each name is imported from its home module on first use (PEP 562 `__getattr__`): every plugin imports this module
when it loads, and so does `jarvis --help`, which should not pay for the parts of the core a plugin only needs once
it runs (launching servers, the state file, the Hub, the GPU). The imports under TYPE_CHECKING are the same names
for type checkers and editors; tests/core/test_api.py checks that both lists and `__all__` agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    # the hook marker and what the hooks take and return
    "hookimpl", "EngineSpec", "EngineContext", "ModelRef", "Flags", "Detection", "Availability", "StartResult",
    "Parallelism",
    "WarmupResult", "StopResult", "Message", "ChatRequest", "InferResult", "TokenSource",
    # errors a hook raises (one line each, shown to the user)
    "JarvisError", "ConfigError", "EngineError", "EngineUnavailableError", "ModelMissingError", "EngineTimeoutError",
    # settings and services
    "Config", "build_settings", "bounded", "Bounds", "redact", "redact_argv", "StateStore", "Record", "LOADOUT_RUN_PREFIX",
    # the one progress display: plugins report bytes, files and phases (Task.update, .files, .phase); the core draws
    "Progress", "Task", "human_bytes", "human_duration",
    # starting and ending servers
    "launch", "Launched", "await_ready", "start_failure", "end", "exit_reason", "running",
    # processes, by (pid, create_time)
    "IS_WINDOWS", "spawn", "create_time", "is_running", "end_tree", "tail", "port_open", "listener_pid",
    "process_name", "free_port", "wait_port_closed", "wait_until_ready",
    # HTTP and the OpenAI-compatible API
    "make_client", "shared_client", "close_shared", "http_answer", "stamped_lines", "read_stamped", "error_message",
    "openai_chat", "openai_models", "openai_serves",
    # the same from an event loop, for `infer_async` (load levels)
    "openai_chat_async", "post_chat", "StreamFeed", "session_for", "timeout_after", "until_due",
    # warmup
    "warm", "warmup_request", "WARMUP_PROMPT",
    # the Hugging Face Hub: a repo's files, and resumable downloads into the hub cache (`pip install 'jarvis-core[hub]'`)
    "HubFiles", "hub_files", "hub_download",
    # the GPU
    "GpuMemory", "gpu_memory", "wait_for_release", "engine_gpus", "used_mib", "engine_visible_devices",
]

#: Names exported under another name than in their home module.
_RENAMED = {"openai_chat": "chat", "openai_models": "list_models", "openai_serves": "serves"}
#: Each exported name's home module.
_HOMES = {name: module for module, names in {
    "hookspecs": ["hookimpl"],
    "engine": ["EngineSpec", "EngineContext", "Detection", "Availability", "StartResult", "Parallelism",
               "WarmupResult", "StopResult", "Message", "ChatRequest", "InferResult", "TokenSource"],
    "modelid": ["ModelRef", "Flags"],
    "errors": ["JarvisError", "ConfigError", "EngineError", "EngineUnavailableError", "ModelMissingError",
               "EngineTimeoutError"],
    "config": ["Config", "build_settings", "bounded", "Bounds"],
    "redact": ["redact", "redact_argv"],
    "state": ["StateStore", "Record", "LOADOUT_RUN_PREFIX"],
    "progress": ["Progress", "Task", "human_bytes", "human_duration"],
    "launch": ["launch", "Launched", "await_ready", "start_failure", "end", "exit_reason", "running"],
    "processes": ["IS_WINDOWS", "spawn", "create_time", "is_running", "end_tree", "tail", "port_open",
                  "listener_pid", "process_name", "free_port", "wait_port_closed", "wait_until_ready"],
    "http": ["make_client", "shared_client", "close_shared", "http_answer", "stamped_lines", "read_stamped",
             "error_message"],
    "openai_api": ["openai_chat", "openai_models", "openai_serves"],
    "aio": ["openai_chat_async", "post_chat", "StreamFeed", "session_for", "timeout_after", "until_due"],
    "warmup": ["warm", "warmup_request", "WARMUP_PROMPT"],
    "hub": ["HubFiles", "hub_files", "hub_download"],
    "gpu": ["GpuMemory", "gpu_memory", "wait_for_release", "engine_gpus", "used_mib", "engine_visible_devices"],
}.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__package__}.{module}"), _RENAMED.get(name, name))
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .config import Bounds, Config, bounded, build_settings
    from .engine import (
        Availability,
        ChatRequest,
        Detection,
        EngineContext,
        EngineSpec,
        InferResult,
        Message,
        Parallelism,
        StartResult,
        StopResult,
        TokenSource,
        WarmupResult,
    )
    from .aio import StreamFeed, openai_chat_async, post_chat, session_for, timeout_after, until_due
    from .errors import (
        ConfigError,
        EngineError,
        EngineTimeoutError,
        EngineUnavailableError,
        JarvisError,
        ModelMissingError,
    )
    from .gpu import GpuMemory, engine_gpus, engine_visible_devices, gpu_memory, used_mib, wait_for_release
    from .hookspecs import hookimpl
    from .hub import HubFiles, hub_download, hub_files
    from .http import close_shared, error_message, http_answer, make_client, read_stamped, shared_client, stamped_lines
    from .launch import Launched, await_ready, end, exit_reason, launch, running, start_failure
    from .modelid import Flags, ModelRef
    from .openai_api import chat as openai_chat
    from .openai_api import list_models as openai_models
    from .openai_api import serves as openai_serves
    from .processes import (
        IS_WINDOWS,
        create_time,
        end_tree,
        free_port,
        is_running,
        listener_pid,
        port_open,
        process_name,
        spawn,
        tail,
        wait_port_closed,
        wait_until_ready,
    )
    from .progress import Progress, Task, human_bytes, human_duration
    from .redact import redact, redact_argv
    from .state import LOADOUT_RUN_PREFIX, Record, StateStore
    from .warmup import WARMUP_PROMPT, warm, warmup_request
