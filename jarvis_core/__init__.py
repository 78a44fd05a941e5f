"""Jarvis: bring local LLM engines up, test them fairly, and tear them down again.

Plugin authors import from `jarvis_core.api` (the whole plugin interface) and test with `jarvis_core.testing`;
docs/plugins.md describes the contract. The names below are kept for scripts that used them before `api` existed.
"""

from .engine import (
    Availability,
    ChatRequest,
    Detection,
    EngineContext,
    EngineSpec,
    InferResult,
    Message,
    StartResult,
    StopResult,
    WarmupResult,
)
from .hookspecs import hookimpl
from .modelid import Flags, ModelRef

__version__ = "0.1.0"

__all__ = [
    "Availability",
    "ChatRequest",
    "Detection",
    "EngineContext",
    "EngineSpec",
    "Flags",
    "InferResult",
    "Message",
    "ModelRef",
    "StartResult",
    "StopResult",
    "WarmupResult",
    "__version__",
    "hookimpl",
]
