"""Jarvis: bring local LLM engines up, test them fairly, and tear them down again.

The public interface for plugin authors is what this module exports; docs/plugins.md describes the contract.
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
